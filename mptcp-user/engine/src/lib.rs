//! The sans-IO Multipath TCP engine (RFC 8684), as quinn-proto is to quinn:
//! drivers hand it `(now, packet)` and ask it for packets to send, the next
//! deadline and application bytes. It never reads a clock, does a syscall on
//! the packet path or knows which driver runs it (AF_XDP, the simulator, a
//! benchmark). See ARCHITECTURE.md for the map.
//!
//! Data flows one way: [`wire`] (codecs) -> [`tcp`] (one subflow) ->
//! [`mptcp`] (the connection; [`sched`], [`cc`], [`pm`] decide) -> [`io`]
//! (the seam drivers and applications use).
pub mod app;
pub mod cc;
pub mod crypto;
pub mod io;
pub mod mptcp;
pub mod pcap;
pub mod pm;
pub mod sched;
pub mod secret;
pub mod tcp;
pub mod time;
pub mod wire;
