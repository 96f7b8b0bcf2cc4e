//! The userspace MPTCP engine. See ARCHITECTURE.md for the map.
pub mod cc;
pub mod io;
pub mod tcp;
pub mod time;
pub mod wire;
