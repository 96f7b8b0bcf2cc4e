//! `mptcp-user sim`: one transfer over simulated paths.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::bail;

use super::report::{human_bytes, human_duration};
use super::runner::{Hooks, Progress, SimConfig, SimReport};
use super::spec::{parse_duration, parse_path_spec, parse_size, PathSpec};

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
    /// Write every packet the links deliver (both directions, all paths) to
    /// this pcap file, as raw IP: for `decode --verify`, tshark, Wireshark.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub mptcp: crate::mptcp::sim::MptcpArgs,
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
            human_duration(p.now - crate::time::Instant::ZERO),
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
        Some(dir) => {
            Some(super::trace::Trace::create(dir).map_err(|e| anyhow::anyhow!("--trace: {e}"))?)
        }
        None => None,
    };
    let mut pcap = match &args.pcap {
        Some(path) => Some(PcapObserver::create(path)?),
        None => None,
    };
    let mut tee = Tee {
        trace: trace.as_mut(),
        pcap: pcap.as_mut(),
    };
    let hooks = Hooks {
        observer: Some(&mut tee),
        progress: if std::io::stderr().is_terminal() {
            Some(&mut show)
        } else {
            None
        },
    };
    let report = run(&cfg, hooks)?;
    if let Some(p) = pcap {
        p.finish()?;
    }
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

/// Delivered packets into a pcap file (`--pcap`).
pub struct PcapObserver {
    w: crate::pcap::PcapWriter<std::io::BufWriter<std::fs::File>>,
    path: std::path::PathBuf,
    error: Option<std::io::Error>,
}

impl PcapObserver {
    pub fn create(path: &std::path::Path) -> anyhow::Result<PcapObserver> {
        let f = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("--pcap {}: {e}", path.display()))?;
        let w = crate::pcap::PcapWriter::new(std::io::BufWriter::new(f), crate::pcap::LINKTYPE_RAW)
            .map_err(|e| anyhow::anyhow!("--pcap {}: {e}", path.display()))?;
        Ok(PcapObserver {
            w,
            path: path.to_path_buf(),
            error: None,
        })
    }

    /// Flushes; reports the first write error.
    pub fn finish(self) -> anyhow::Result<()> {
        let path = self.path.display().to_string();
        if let Some(e) = self.error {
            bail!("--pcap {path}: {e}");
        }
        self.w
            .into_inner()
            .into_inner()
            .map_err(|e| anyhow::anyhow!("--pcap {path}: {e}"))?;
        Ok(())
    }
}

impl super::runner::Observer for PcapObserver {
    fn on_deliver(&mut self, d: &super::net::Delivery<'_>) {
        if self.error.is_none() {
            let t = d.at - crate::time::Instant::ZERO;
            if let Err(e) = self.w.write(t.as_nanos() as u64, d.packet) {
                self.error = Some(e);
            }
        }
    }
}

/// Hands every event to the trace and the pcap writer, when present.
struct Tee<'a> {
    trace: Option<&'a mut super::trace::Trace>,
    pcap: Option<&'a mut PcapObserver>,
}

impl super::runner::Observer for Tee<'_> {
    fn on_send(
        &mut self,
        now: crate::time::Instant,
        from: super::net::Side,
        path: crate::io::PathId,
        packet: &[u8],
        outcome: super::net::SendOutcome,
    ) {
        if let Some(t) = self.trace.as_mut() {
            t.on_send(now, from, path, packet, outcome);
        }
    }
    fn on_deliver(&mut self, d: &super::net::Delivery<'_>) {
        if let Some(t) = self.trace.as_mut() {
            t.on_deliver(d);
        }
        if let Some(p) = self.pcap.as_mut() {
            p.on_deliver(d);
        }
    }
}
