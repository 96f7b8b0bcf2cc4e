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

/// `--workers`, for the subcommands that run several.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct WorkerOptions {
    /// Worker threads, each with its own engine, applications and the
    /// AF_XDP sockets of its receive queues (queue q goes to worker q % N;
    /// every interface needs at least N queues). Every subflow of a
    /// connection is served by the worker that owns it (the one whose
    /// queue got its first SYN, or that opened it): frames arriving on
    /// another worker's queue are handed over (counted as `handoffs` in
    /// `stats`). Default: one per receive queue, at most one per core
    /// (`serve --mode forward`: one).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

impl WorkerOptions {
    /// The number of workers for these interfaces.
    pub fn resolve(&self, ifaces: &[String]) -> Result<usize> {
        let queues = ifaces
            .iter()
            .map(|i| mptcp_datapath::route::rx_queue_count(i) as usize)
            .min()
            .unwrap_or(1);
        match self.workers {
            Some(0) => anyhow::bail!("--workers must be at least 1"),
            Some(n) if n > queues => anyhow::bail!(
                "--workers {n}: the interfaces have {queues} receive queue(s) (the fewest of \
                 {}); every worker needs a queue on every interface: give --workers {queues} \
                 or fewer, or more queues (`ethtool -L IFACE combined {n}`)",
                ifaces.join(", ")
            ),
            Some(n) => Ok(n),
            None => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                Ok(queues.min(cores).max(1))
            }
        }
    }
}
