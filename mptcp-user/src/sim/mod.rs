//! The deterministic network simulator and the `mptcp-user sim` driver.
//!
//! - [`spec`]: `--path` specs (`rate=100mbit,delay=10ms,loss=1%;at=3s,down`).
//! - [`net`]: links and the discrete-event scheduler; packets in, packets out.
//! - [`runner`]: a client and a server engine over the network, one transfer, checked byte by byte.
//! - [`report`], [`cli`]: what `mptcp-user sim` prints.

pub mod cli;
pub mod net;
pub mod pattern;
pub mod report;
pub mod rng;
pub mod runner;
pub mod spec;

pub use net::{Delivery, DropReason, LinkStats, Network, SendOutcome, Side};
pub use runner::{
    run, run_with, EndpointFactory, Hooks, Observer, Outcome, PathAddrs, PathReport, Progress,
    SimConfig, SimEndpoint, SimReport, SubflowStats, Topology,
};
pub use spec::{parse_path_spec, LinkProfile, PathSpec, ProfileChange, ProfilePatch, QueueLimit};

/// Entry point of `mptcp-user sim`.
pub fn main(args: &cli::SimArgs) -> anyhow::Result<()> {
    cli::main_with(args, |_cfg, _hooks| {
        anyhow::bail!(
            "no engine is wired to the simulator yet (the TCP endpoint lands with the tcp module)"
        )
    })
}
