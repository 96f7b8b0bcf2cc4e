//! `mptcp-user sim`: one transfer over simulated paths.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::bail;

use mptcp_sim::report::{human_bytes, human_duration};
use mptcp_sim::runner::{run_with, Hooks, Progress, SimConfig, SimReport};
use mptcp_sim::spec::{parse_duration, parse_path_spec, parse_size, PathSpec};
use mptcp_sim::MptcpFactory;

use super::engine_opts::EngineOptions;

/// Path used when no `--path` is given.
pub const DEFAULT_PATH: &str = "rate=100mbit,delay=10ms";

/// Arguments of `mptcp-user sim`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
PATH SPEC: comma-separated key=value items, then optional ;at=TIME,... changes
  rate=100mbit     link rate per direction (bit, kbit, mbit, gbit or k, m, g; unlimited)
  delay=10ms       round-trip propagation delay, half each way (ns, us, ms, s)
  jitter=1ms       one-way delay varies within +-jitter/2 (never reorders by itself)
  loss=0.5%        random loss per packet, each direction
  reorder=0.1%     packets held back by up to reorder_delay (default max(1ms, 4 packets))
  dup=0.1%         packets duplicated
  mtu=1500         larger packets are dropped and counted
  queue=1bdp       drop-tail queue: 1bdp (default, at least 32 packets), 100pkt or 256KiB
  down / up        the path's state
Example: --path 'rate=100mbit,delay=10ms,loss=1%;at=3s,down;at=5s,up'")]
pub struct SimArgs {
    /// A simulated path (repeat for several paths); see PATH SPEC below.
    #[arg(long = "path", value_name = "SPEC", value_parser = parse_path_arg)]
    pub paths: Vec<PathSpec>,
    /// Bytes the client sends (16MiB, 64M, 1000000).
    #[arg(long, value_name = "N", default_value = "16MiB", value_parser = parse_size_arg)]
    pub bytes: u64,
    /// Seed of every random choice; the same seed gives the same run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Simulated time after which an unfinished run stops.
    #[arg(long, value_name = "TIME", default_value = "600s", value_parser = parse_duration_arg)]
    pub time_limit: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write a trace of the data sender (CSV and SVG plots) into this directory.
    #[arg(long, value_name = "DIR")]
    pub trace: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub engine_opts: EngineOptions,
}

fn parse_path_arg(s: &str) -> Result<PathSpec, String> {
    parse_path_spec(s).map_err(|e| e.0)
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

impl SimArgs {
    pub fn config(&self) -> SimConfig {
        let paths = if self.paths.is_empty() {
            vec![parse_path_spec(DEFAULT_PATH).unwrap_or_default()]
        } else {
            self.paths.clone()
        };
        SimConfig {
            paths,
            bytes: self.bytes,
            seed: self.seed,
            time_limit: self.time_limit,
        }
    }
}

/// Shows progress on stderr at most four times a second (only on a terminal).
struct ProgressLine {
    last: std::time::Instant,
    shown: bool,
}

impl ProgressLine {
    fn show(&mut self, p: &Progress) {
        if self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = std::time::Instant::now();
        self.shown = true;
        let pct = if p.bytes == 0 {
            100.0
        } else {
            p.received as f64 * 100.0 / p.bytes as f64
        };
        eprint!(
            "\r\x1b[Ksim {}: {} of {} ({pct:.0}%)",
            human_duration(p.now - mptcp_engine::time::Instant::ZERO),
            human_bytes(p.received),
            human_bytes(p.bytes)
        );
        let _ = std::io::stderr().flush();
    }
}

/// Runs `run` with a progress line when stderr is a terminal, prints the
/// report, and fails when the transfer was not byte-exact.
pub fn main_with(
    args: &SimArgs,
    run: impl FnOnce(&SimConfig, Hooks<'_>) -> anyhow::Result<SimReport>,
) -> anyhow::Result<()> {
    let cfg = args.config();
    let mut line = ProgressLine {
        last: std::time::Instant::now(),
        shown: false,
    };
    let mut show = |p: &Progress| line.show(p);
    let mut trace = match &args.trace {
        Some(dir) => Some(
            mptcp_sim::trace::Trace::create(dir).map_err(|e| anyhow::anyhow!("--trace: {e}"))?,
        ),
        None => None,
    };
    let hooks = Hooks {
        observer: trace
            .as_mut()
            .map(|t| t as &mut dyn mptcp_sim::runner::Observer),
        progress: if std::io::stderr().is_terminal() {
            Some(&mut show)
        } else {
            None
        },
    };
    let report = run(&cfg, hooks)?;
    if line.shown {
        eprint!("\r\x1b[K");
    }
    let text = if args.json {
        report.to_json().to_string()
    } else {
        report.to_string()
    };
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        // A reader that stopped early (`| head`) is not a failure of the run.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    if let Some(trace) = trace {
        let summary = trace
            .finish()
            .map_err(|e| anyhow::anyhow!("--trace: {e}"))?;
        // stderr, so that --json output stays one object.
        eprintln!("{summary}");
    }
    if !report.byte_exact {
        bail!("transfer {}: not byte-exact", report.outcome.as_str());
    }
    Ok(())
}

/// Entry point of `mptcp-user sim`: MPTCP over several paths or when any
/// engine option is given, plain TCP over one path otherwise.
pub fn main(args: &SimArgs) -> anyhow::Result<()> {
    main_with(args, |cfg, hooks| {
        if cfg.paths.len() > 1 || args.engine_opts.requested() {
            let mut factory = MptcpFactory::default();
            args.engine_opts.apply(&mut factory.config);
            return Ok(run_with(cfg, &mut factory, hooks));
        }
        Ok(run_with(
            cfg,
            &mut mptcp_sim::tcp::TcpFactory::default(),
            hooks,
        ))
    })
}
