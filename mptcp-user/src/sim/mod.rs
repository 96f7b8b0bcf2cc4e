//! The deterministic network simulator and the `mptcp-user sim` driver.
//!
//! - [`spec`]: `--path` specs (`rate=100mbit,delay=10ms,loss=1%;at=3s,down`).
//! - [`net`]: links and the discrete-event scheduler; packets in, packets out.
//! - [`runner`]: a client and a server engine over the network, one transfer, checked byte by byte.
//! - [`tcp`]: the plain TCP engine as a simulated client and server.
//! - [`report`], [`cli`]: what `mptcp-user sim` prints.
//! - [`trace`]: `--trace DIR`, sequence/goodput/unacked CSV and SVG plots.
//! - [`emulator`]: the same links between real interfaces (`mptcp-user emulate`).

pub mod cli;
pub mod emulator;
pub mod net;
pub mod pattern;
pub mod report;
pub mod rng;
pub mod runner;
pub mod spec;
pub mod tcp;
pub mod trace;

pub use net::{Delivery, DropReason, LinkStats, Network, SendOutcome, Side};
pub use runner::{
    run, run_with, EndpointFactory, Hooks, Observer, Outcome, PathAddrs, PathReport, Progress,
    SimConfig, SimEndpoint, SimReport, Simulation, SubflowStats, Topology,
};
pub use spec::{parse_path_spec, LinkProfile, PathSpec, ProfileChange, ProfilePatch, QueueLimit};

/// Entry point of `mptcp-user sim`.
pub fn main(args: &cli::SimArgs) -> anyhow::Result<()> {
    cli::main_with(args, |cfg, hooks| {
        if cfg.paths.len() > 1 || args.mptcp.requested() {
            return Ok(run_with(cfg, &mut args.mptcp.factory()?, hooks));
        }
        if cfg.paths.len() > 1 {
            anyhow::bail!(
                "plain TCP runs over one path; several --path options need the MPTCP engine"
            );
        }
        Ok(run_with(cfg, &mut tcp::TcpFactory::default(), hooks))
    })
}
