//! Datapath options shared by `serve`, `connect` and `raw-ceiling`.

use anyhow::{Context, Result};
use mptcp_datapath::worker::Worker;
use mptcp_engine::io::Engine;

#[derive(clap::Args, Debug, Default, Clone)]
pub struct DatapathOptions {
    /// Busy-poll instead of sleeping, for a dedicated core: the worker spins
    /// at 100% CPU and runs the interfaces' NAPI itself (SO_PREFER_BUSY_POLL,
    /// SO_BUSY_POLL=USECS) instead of leaving it to softirq on whichever core
    /// sent the frames. Pair with the interfaces' napi_defer_hard_irqs and
    /// gro_flush_timeout on NICs. Costs a whole core even when idle.
    #[arg(long, value_name = "USECS")]
    pub busy_poll: Option<u32>,
    /// Packets per busy-poll call (SO_BUSY_POLL_BUDGET).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub busy_poll_budget: u32,
}

impl DatapathOptions {
    pub fn apply<E: Engine>(&self, worker: &mut Worker<E>) -> Result<()> {
        if let Some(usecs) = self.busy_poll {
            worker
                .set_busy_poll(usecs, self.busy_poll_budget)
                .context("busy polling (SO_PREFER_BUSY_POLL needs Linux 5.11+)")?;
        }
        Ok(())
    }
}
