//! The userspace MPTCP engine. See ARCHITECTURE.md for the map.
pub mod io;
pub mod sim;
pub mod time;
pub mod wire;
