//! The userspace MPTCP engine. See ARCHITECTURE.md for the map.
pub mod afxdp;
pub mod cc;
pub mod cli;
pub mod crypto;
pub mod decode;
pub mod io;
pub mod mptcp;
pub mod pcap;
pub mod pm;
pub mod route;
pub mod sched;
pub mod sim;
pub mod tcp;
pub mod time;
pub mod wire;
pub mod worker;
pub mod xdp;
