//! Types shared by the XDP programs (`mptcp-ebpf`) and the userspace engine.
//! `no_std` and tiny on purpose: everything here is part of the map ABI.
#![no_std]
