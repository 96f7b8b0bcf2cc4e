//! The engine options every subcommand that runs the engine shares
//! (`serve`, `connect`, `sim`): the same names, values and help everywhere.

use mptcp_engine::cc::CcAlgorithm;
use mptcp_engine::mptcp::MptcpConfig;
use mptcp_engine::pm::PmKind;
use mptcp_engine::sched::SchedulerKind;

/// Which subflow sends next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// Lowest RTT among the subflows with room, as Linux's default.
    #[value(alias = "lowest-rtt", alias = "minrtt")]
    Default,
    /// Each subflow in turn, within its window.
    #[value(alias = "roundrobin", alias = "rr")]
    RoundRobin,
    /// Every byte on every subflow.
    Redundant,
}

/// Congestion control of each subflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Cc {
    /// CUBIC (RFC 9438), uncoupled, with HyStart++.
    Cubic,
    /// NewReno, uncoupled.
    #[value(alias = "reno")]
    Newreno,
    /// Linked Increases (RFC 6356), coupled over the connection's subflows.
    Lia,
    /// Opportunistic LIA, coupled.
    Olia,
}

/// Which subflows the engine opens (client) or accepts and announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pm {
    /// A subflow between every pair of local and remote addresses.
    Fullmesh,
    /// --subflows subflows over the first path, each from its own port.
    Ndiffports,
    /// Only what the application opens.
    Manual,
}

#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Engine")]
pub struct EngineOptions {
    /// Packet scheduler [default: default].
    #[arg(long, value_enum, value_name = "NAME")]
    pub scheduler: Option<Scheduler>,
    /// Congestion control per subflow [default: cubic].
    #[arg(long, value_enum, value_name = "NAME")]
    pub cc: Option<Cc>,
    /// Path manager [default: fullmesh].
    #[arg(long, value_enum, value_name = "NAME")]
    pub pm: Option<Pm>,
    /// Subflows per connection, the first included (and ndiffports' count) [default: 8; ndiffports: 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub subflows: Option<u16>,
    /// Ask for DSS checksums (either side asking turns them on).
    #[arg(long)]
    pub checksum: bool,
}

impl EngineOptions {
    /// Whether any option was given (then even one simulated path runs MPTCP).
    pub fn requested(&self) -> bool {
        self.scheduler.is_some()
            || self.cc.is_some()
            || self.pm.is_some()
            || self.checksum
            || self.subflows.is_some()
    }

    /// Sets these options on `cfg`.
    pub fn apply(&self, cfg: &mut MptcpConfig) {
        if let Some(s) = self.scheduler {
            cfg.scheduler = match s {
                Scheduler::Default => SchedulerKind::LowestRtt,
                Scheduler::RoundRobin => SchedulerKind::RoundRobin,
                Scheduler::Redundant => SchedulerKind::Redundant,
            };
        }
        if let Some(c) = self.cc {
            cfg.tcp.congestion_control = match c {
                Cc::Cubic => CcAlgorithm::Cubic,
                Cc::Newreno => CcAlgorithm::NewReno,
                Cc::Lia => CcAlgorithm::Lia,
                Cc::Olia => CcAlgorithm::Olia,
            };
        }
        if let Some(n) = self.subflows {
            cfg.max_subflows = n as usize;
        }
        if let Some(p) = self.pm {
            cfg.path_manager = match p {
                Pm::Fullmesh => PmKind::FullMesh,
                Pm::Ndiffports => PmKind::NDiffPorts(self.subflows.map_or(2, |n| n as usize)),
                Pm::Manual => PmKind::Manual,
            };
        }
        cfg.checksum |= self.checksum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineOptions,
    }

    #[test]
    fn names_and_aliases_map_to_the_engine() {
        let cli = Cli::try_parse_from([
            "x",
            "--scheduler",
            "roundrobin",
            "--cc",
            "olia",
            "--pm",
            "ndiffports",
            "--subflows",
            "3",
        ])
        .expect("parses");
        let mut cfg = MptcpConfig::default();
        cli.engine.apply(&mut cfg);
        assert_eq!(cfg.scheduler, SchedulerKind::RoundRobin);
        assert_eq!(cfg.tcp.congestion_control, CcAlgorithm::Olia);
        assert_eq!(cfg.path_manager, PmKind::NDiffPorts(3));
        assert_eq!(cfg.max_subflows, 3);
        assert!(!cfg.checksum);
    }

    #[test]
    fn a_bad_name_lists_the_valid_ones() {
        let err = Cli::try_parse_from(["x", "--scheduler", "fastest"])
            .err()
            .expect("rejected")
            .to_string();
        assert!(
            err.contains("default") && err.contains("round-robin"),
            "{err}"
        );
        assert!(Cli::try_parse_from(["x", "--subflows", "0"]).is_err());
    }
}
