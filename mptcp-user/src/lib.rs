//! The userspace MPTCP engine. See ARCHITECTURE.md for the map.
pub mod wire;
