//! The deterministic network simulator: the real engine (`mptcp-engine`)
//! over modelled paths, driven by `mptcp-user sim` and by the engine's tests.
//!
//! - [`spec`]: `--path` specs (`rate=100mbit,delay=10ms,loss=1%;at=3s,down`).
//! - [`net`]: links and the discrete-event scheduler; packets in, packets out.
//! - [`runner`]: a client and a server engine over the network, one transfer, checked byte by byte.
//! - [`tcp`]: the plain TCP engine as a simulated client and server.
//! - [`mptcp`]: the MPTCP engine as a simulated client and server.
//! - [`report`]: what `mptcp-user sim` prints.
//! - [`trace`]: `--trace DIR`, sequence/goodput/unacked CSV and SVG plots.

pub mod mptcp;
pub mod net;
pub mod report;
pub mod rng;
pub mod runner;
pub mod spec;
pub mod tcp;
pub mod trace;

pub use mptcp::MptcpFactory;
pub use mptcp_engine::app::Pattern;
pub use net::{Delivery, DropReason, LinkStats, Network, SendOutcome, Side};
pub use runner::{
    run, run_with, EndpointFactory, Hooks, Observer, Outcome, PathAddrs, PathReport, Progress,
    SimConfig, SimEndpoint, SimReport, Simulation, SubflowReport, Topology,
};
pub use spec::{parse_path_spec, LinkProfile, PathSpec, ProfileChange, ProfilePatch, QueueLimit};
