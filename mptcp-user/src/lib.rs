//! The userspace MPTCP engine. See ARCHITECTURE.md for the map.
pub mod cc;
pub mod crypto;
pub mod decode;
pub mod io;
pub mod pcap;
pub mod tcp;
pub mod time;
pub mod wire;
pub mod xdp;
