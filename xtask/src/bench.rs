//! `cargo xtask bench`: the engine against the kernel on the two-path veth
//! lab (MTU 1500, no shaping), client -> discarding server, same pattern,
//! same duration.
//!
//! - Kernel baselines, like for like: (k1) MPTCP over 2 subflows and (k2)
//!   single TCP with GSO, TSO and GRO off on all four veths and no XDP (the
//!   kernel then moves MTU-sized frames, as the datapath does); (k3) MPTCP
//!   and (k4) TCP with an XDP pass-through program on every veth (offloads
//!   as the kernel leaves them with XDP attached) as a second figure.
//! - (r) the raw ceiling: `mptcp-user raw-ceiling`, the worker loop sending
//!   MTU-sized frames AF_XDP to AF_XDP with no protocol.
//! - The engine: (a) engine to engine, (b) kernel MPTCP client to engine
//!   server, (e) engine client to kernel MPTCP server.
//!
//! Every configuration runs `--runs` times (default 3), alternated round by
//! round; each figure is the median. The receiver's bytes are sampled every
//! 100 ms (the server interfaces' receive counters): a run in which nothing
//! moved for 500 ms or more is flagged and repeated (twice at most; a run
//! that keeps stalling is kept, flagged). CPU seconds per Gbit: user +
//! system time of the processes that send and receive (`mptcp-user`, or
//! this process's threads for the kernel's sockets; softirq work the kernel
//! charges to them included, work done in ksoftirqd not) per Gbit of frames
//! the server's interfaces received, over the steady part of the run.
//! Figures, never asserts: the bench fails only when a run cannot run.
use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use mptcp_tests::{mptcp_connect, mptcp_listen, unique_name, Lab, LabConfig, Netns};

use crate::datapath_bench;
use crate::demo::Classify;

/// Owned by the classifier so it parses every segment, but carries no
/// traffic: every frame takes the full parse and is passed to the kernel.
const UNUSED_PORT: u16 = 9;
const KERNEL_PORT: u16 = 5320;

/// Bytes written per write(); the servers discard, so the sender cycles over
/// one buffer of the test pattern and never refills.
const WRITE_CHUNK: usize = 64 << 10;
const PATTERN_PERIOD: usize = 1 << 20;

/// No progress for this long flags a run.
const STALL: Duration = Duration::from_millis(500);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Less than this many bytes received in a sample interval is no progress.
const PROGRESS_BYTES: u64 = 64 << 10;
/// Attempts of one run while it stalls.
const ATTEMPTS: usize = 3;

/// The test pattern's first `PATTERN_PERIOD + WRITE_CHUNK` bytes.
pub fn pattern_buffer() -> Vec<u8> {
    mptcp_engine::app::Pattern::STREAM.bytes(0, PATTERN_PERIOD + WRITE_CHUNK)
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Figure {
    pub gbps: f64,
    /// CPU seconds (user + system) of the sender and the receiver per Gbit
    /// received, over the steady part of the run.
    pub cpu_per_gbit: Option<f64>,
    /// Raw ceiling only.
    pub frames_per_second: Option<f64>,
    /// Bytes sent per client interface during the run (the kernel's veth
    /// counters, headers included): how the paths shared the load.
    pub split: Vec<u64>,
    /// Per-subflow payload where the sender reports it.
    pub subflows: Vec<(String, u64)>,
    /// The longest time the receiver's bytes did not move, when >= STALL.
    pub stall: Option<Duration>,
    pub notes: Vec<String>,
}

impl Figure {
    pub fn cpu_text(&self) -> String {
        self.cpu_per_gbit.map_or("-".into(), |c| format!("{c:.3}"))
    }
}

/// Transmitted bytes of `iface` in `ns`.
pub fn tx_bytes(ns: &Netns, iface: &str) -> Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -s -j link")?;
    v[0]["stats64"]["tx"]["bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("no tx byte counter for {iface}"))
}

/// Client-side transmit counters of every path.
pub fn client_tx(lab: &Lab) -> Result<Vec<u64>> {
    lab.paths
        .iter()
        .map(|p| tx_bytes(&lab.client, &p.client_if))
        .collect()
}

pub fn split_since(lab: &Lab, before: &[u64]) -> Result<Vec<u64>> {
    Ok(client_tx(lab)?
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect())
}

/// Samples, every 100 ms, the bytes the server's interfaces received (from
/// a thread inside the server's namespace: `/proc/thread-self/net/dev` is
/// per namespace) and the CPU time of the watched processes
/// (`/proc/PID/stat` utime + stime); finds the longest stretch without
/// progress and the CPU spent per Gbit over the steady part of the run
/// (between the first and the last sample that saw progress, so start-up
/// such as loading XDP is not counted).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    pids: Arc<Mutex<Vec<u32>>>,
    handle: thread::JoinHandle<Vec<(u64, u64)>>,
}

/// What a sampler saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sampled {
    pub stall: Option<Duration>,
    /// CPU seconds of the watched processes per Gbit received (Ethernet
    /// frames on the server's interfaces) over the steady part of the run.
    pub cpu_per_gbit: Option<f64>,
}

fn rx_bytes(dev: &str, ifaces: &[String]) -> u64 {
    dev.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            ifaces
                .iter()
                .any(|i| i == name.trim())
                .then(|| rest.split_whitespace().next()?.parse::<u64>().ok())?
        })
        .sum()
}

/// utime + stime of a process in clock ticks (0 once it is gone).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3: utime (14) and stime (15) are rest[11] and rest[12].
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    num(11) + num(12)
}

pub(crate) fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

impl Sampler {
    /// Starts sampling; `pids` are watched for CPU (more with [`Sampler::watch`]).
    pub fn start(lab: &Lab, pids: &[u32]) -> Result<Sampler> {
        let file = File::open(format!("/run/netns/{}", lab.server.name()))
            .with_context(|| format!("open netns {}", lab.server.name()))?;
        let ifaces: Vec<String> = lab.paths.iter().map(|p| p.server_if.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let pids = Arc::new(Mutex::new(pids.to_vec()));
        let (flag, watched) = (stop.clone(), pids.clone());
        let handle = thread::spawn(move || {
            // SAFETY: setns on this thread only; the fd is a valid netns file.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Vec::new();
            }
            let mut samples = Vec::new();
            let mut text = String::new();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                text.clear();
                if File::open("/proc/thread-self/net/dev")
                    .and_then(|mut f| f.read_to_string(&mut text))
                    .is_err()
                {
                    return Vec::new();
                }
                let ticks = watched
                    .lock()
                    .map(|p| p.iter().map(|&pid| cpu_ticks(pid)).sum())
                    .unwrap_or(0);
                samples.push((rx_bytes(&text, &ifaces), ticks));
                next += SAMPLE_EVERY;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        });
        Ok(Sampler { stop, pids, handle })
    }

    /// Watches one more process's CPU from the next sample on.
    pub fn watch(&self, pid: u32) {
        if let Ok(mut p) = self.pids.lock() {
            p.push(pid);
        }
    }

    pub fn finish(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.handle.join().unwrap_or_default();
        analyse(&samples, ticks_per_second())
    }
}

fn analyse(samples: &[(u64, u64)], hz: f64) -> Sampled {
    let moving: Vec<bool> = samples
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0) >= PROGRESS_BYTES)
        .collect();
    let (Some(first), Some(last)) = (
        moving.iter().position(|m| *m),
        moving.iter().rposition(|m| *m),
    ) else {
        return Sampled::default();
    };
    let mut longest = 0u32;
    let mut run = 0u32;
    for m in &moving[first..=last] {
        run = if *m { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    let stall = Some(SAMPLE_EVERY * longest).filter(|d| *d >= STALL);
    // Interval i runs from sample i to i + 1.
    let (b0, c0) = samples[first];
    let (b1, c1) = samples[last + 1];
    let gbit = b1.saturating_sub(b0) as f64 * 8.0 / 1e9;
    let cpu = c1.saturating_sub(c0) as f64 / hz;
    Sampled {
        stall,
        cpu_per_gbit: (gbit > 0.0 && c1 >= c0).then(|| cpu / gbit),
    }
}

/// What a kernel sender saw.
pub struct Sent {
    pub bytes: u64,
    pub gbps: f64,
}

/// Writes the pattern to `stream` for `seconds`, half-closes, and waits for
/// the server to close: Gbit/s delivered (bytes over the time until the
/// server had read them all).
pub fn kernel_send(mut stream: TcpStream, seconds: u64) -> Result<Sent> {
    // A stall is a figure, not a failure; only a dead connection is.
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let pattern = pattern_buffer();
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut sent = 0u64;
    while Instant::now() < until {
        let at = (sent % PATTERN_PERIOD as u64) as usize;
        stream
            .write_all(&pattern[at..at + WRITE_CHUNK])
            .context("writing")?;
        sent += WRITE_CHUNK as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut rest = [0u8; 256];
    while stream
        .read(&mut rest)
        .context("waiting for the server to close")?
        != 0
    {}
    let elapsed = start.elapsed();
    Ok(Sent {
        bytes: sent,
        gbps: sent as f64 * 8.0 / elapsed.as_secs_f64() / 1e9,
    })
}

/// Accepts one connection, reads it to the end: the bytes read.
pub fn discard_server(listener: TcpListener) -> thread::JoinHandle<Result<u64>> {
    thread::spawn(move || -> Result<u64> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    })
}

/// Kernel to kernel (offloads and XDP set by the caller).
pub(crate) fn kernel_to_kernel(lab: &Lab, mptcp: bool, seconds: u64) -> Result<Figure> {
    // A port per run: a failed run's listener may linger until its timeout.
    let port = KERNEL_PORT + u16::from(!mptcp);
    let addr = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let listener = lab.server.enter(|| -> Result<TcpListener> {
        if mptcp {
            mptcp_listen(addr)
        } else {
            let l = TcpListener::bind(addr)?;
            Ok(l)
        }
    })??;
    let server = discard_server(listener);
    let before = client_tx(lab)?;
    // The kernel's sender and receiver are threads of this process.
    let sampler = Sampler::start(lab, &[std::process::id()])?;
    let sent = lab.client.enter(|| -> Result<Sent> {
        let stream = if mptcp {
            mptcp_connect(addr, Duration::from_secs(10))?
        } else {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))?
        };
        kernel_send(stream, seconds)
    })??;
    let sampled = sampler.finish();
    let received = server
        .join()
        .map_err(|_| anyhow!("server thread panicked"))??;
    if received != sent.bytes {
        bail!("the server read {received} bytes of {}", sent.bytes);
    }
    Ok(Figure {
        gbps: sent.gbps,
        cpu_per_gbit: sampled.cpu_per_gbit,
        split: split_since(lab, &before)?,
        stall: sampled.stall,
        ..Figure::default()
    })
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn percent_split(split: &[u64]) -> String {
    let total: u64 = split.iter().sum();
    if total == 0 {
        return "-".into();
    }
    split
        .iter()
        .map(|b| format!("{:.0}%", *b as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// GSO, TSO and GRO on or off on all four veths.
pub(crate) fn offloads(lab: &Lab, on: bool) -> Result<()> {
    let state = if on { "on" } else { "off" };
    for p in &lab.paths {
        for (ns, iface) in [(&lab.client, &p.client_if), (&lab.server, &p.server_if)] {
            ns.exec(
                "ethtool",
                &["-K", iface, "gso", state, "tso", state, "gro", state],
            )?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    OffloadsOff,
    XdpPass,
    Plain,
}

struct Config {
    key: &'static str,
    label: &'static str,
    setting: Setting,
    run: fn(&Path, &Lab, u64) -> Result<Figure>,
}

const CONFIGS: &[Config] = &[
    Config {
        key: "k1",
        label: "kernel -> kernel MPTCP 2 subflows, offloads off, no XDP",
        setting: Setting::OffloadsOff,
        run: |_, lab, s| kernel_to_kernel(lab, true, s),
    },
    Config {
        key: "k2",
        label: "kernel -> kernel TCP 1 flow, offloads off, no XDP",
        setting: Setting::OffloadsOff,
        run: |_, lab, s| kernel_to_kernel(lab, false, s),
    },
    Config {
        key: "k3",
        label: "kernel -> kernel MPTCP 2 subflows, XDP pass-through",
        setting: Setting::XdpPass,
        run: |_, lab, s| kernel_to_kernel(lab, true, s),
    },
    Config {
        key: "k4",
        label: "kernel -> kernel TCP 1 flow, XDP pass-through",
        setting: Setting::XdpPass,
        run: |_, lab, s| kernel_to_kernel(lab, false, s),
    },
    Config {
        key: "r",
        label: "raw ceiling: AF_XDP -> AF_XDP, MTU frames, no protocol",
        setting: Setting::Plain,
        run: datapath_bench::raw_ceiling,
    },
    Config {
        key: "a",
        label: "engine -> engine, MPTCP 2 subflows",
        setting: Setting::Plain,
        run: datapath_bench::engine_to_engine,
    },
    Config {
        key: "b",
        label: "kernel MPTCP client -> engine server",
        setting: Setting::Plain,
        run: datapath_bench::kernel_to_engine,
    },
    Config {
        key: "e",
        label: "engine MPTCP client -> kernel MPTCP server",
        setting: Setting::Plain,
        run: datapath_bench::engine_to_kernel,
    },
];

/// One run of `config`, repeated while it stalls.
fn one_run(binary: &Path, lab: &Lab, config: &Config, seconds: u64) -> (Result<Figure>, usize) {
    let mut repeats = 0;
    loop {
        let started = Instant::now();
        let fig = (config.run)(binary, lab, seconds);
        match &fig {
            Ok(f) => println!(
                "    {:<3} {:>6.2} Gbit/s, {} CPU s/Gbit ({:.1} s wall){}",
                config.key,
                f.gbps,
                f.cpu_text(),
                started.elapsed().as_secs_f64(),
                f.stall.map_or(String::new(), |d| format!(
                    "  STALLED {:.1} s",
                    d.as_secs_f64()
                ))
            ),
            Err(e) => println!("    {:<3} could not run: {e:#}", config.key),
        }
        match fig {
            Ok(f) if f.stall.is_some() && repeats + 1 < ATTEMPTS => repeats += 1,
            other => return (other, repeats),
        }
    }
}

struct Summary {
    runs: Vec<Figure>,
    failures: Vec<String>,
    stalled_repeats: usize,
}

impl Summary {
    /// The run with the median rate.
    fn median(&self) -> Option<&Figure> {
        let mut v: Vec<&Figure> = self.runs.iter().collect();
        v.sort_by(|a, b| a.gbps.total_cmp(&b.gbps));
        v.get(v.len() / 2).copied()
    }
    fn range(&self) -> String {
        let lo = self
            .runs
            .iter()
            .map(|f| f.gbps)
            .fold(f64::INFINITY, f64::min);
        let hi = self.runs.iter().map(|f| f.gbps).fold(0.0, f64::max);
        if self.runs.len() > 1 {
            format!("{lo:.2}-{hi:.2}")
        } else {
            String::new()
        }
    }
}

pub fn run(binary: &Path, seconds: u64, runs: usize) -> Result<()> {
    crate::require_root("cargo xtask bench")?;
    let load_start = loadavg();
    let lab = Lab::up(&LabConfig {
        prefix: unique_name("mptcp-bench"),
        paths: 2,
        qdisc: Vec::new(),
        subflow_endpoints: true,
        emulate: Vec::new(),
        emulator_binary: None,
        emulator_args: Vec::new(),
        queues: 0,
    })?;
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench: {} veth paths, MTU 1500, no shaping, {seconds} s per run, {runs} alternated runs per figure, client -> discarding server, {cores} cores, release build",
        lab.paths.len()
    );
    println!("  load average at start: {load_start}");
    let client_ifs: Vec<&str> = lab.paths.iter().map(|p| p.client_if.as_str()).collect();
    let server_ifs: Vec<&str> = lab.paths.iter().map(|p| p.server_if.as_str()).collect();
    let mut summaries: Vec<Summary> = CONFIGS
        .iter()
        .map(|_| Summary {
            runs: Vec::new(),
            failures: Vec::new(),
            stalled_repeats: 0,
        })
        .collect();
    for round in 1..=runs {
        println!("  round {round} of {runs}");
        for (config, summary) in CONFIGS.iter().zip(&mut summaries) {
            // Set the stage; XDP pass-through lives as long as its guard.
            let mut xdp = None;
            match config.setting {
                Setting::OffloadsOff => offloads(&lab, false)?,
                Setting::XdpPass => {
                    xdp = Some((
                        Classify::start(binary, &lab.client, &client_ifs, UNUSED_PORT, false)?,
                        Classify::start(binary, &lab.server, &server_ifs, UNUSED_PORT, false)?,
                    ))
                }
                Setting::Plain => {}
            }
            let (fig, repeats) = one_run(binary, &lab, config, seconds);
            summary.stalled_repeats += repeats;
            match fig {
                Ok(f) => summary.runs.push(f),
                Err(e) => summary.failures.push(format!("{e:#}")),
            }
            if let Some((c, s)) = xdp {
                c.stop()?;
                s.stop()?;
            }
            if config.setting == Setting::OffloadsOff {
                offloads(&lab, true)?;
            }
        }
    }
    let load_end = loadavg();
    print_table(&summaries, seconds, runs, cores, &load_start, &load_end);
    let failed: Vec<&str> = CONFIGS
        .iter()
        .zip(&summaries)
        .filter(|(_, s)| s.runs.is_empty())
        .map(|(c, _)| c.key)
        .collect();
    if !failed.is_empty() {
        bail!("could not run: {}", failed.join(", "));
    }
    Ok(())
}

fn print_table(
    summaries: &[Summary],
    seconds: u64,
    runs: usize,
    cores: usize,
    load_start: &str,
    load_end: &str,
) {
    let median = |key: &str| -> Option<f64> {
        CONFIGS
            .iter()
            .position(|c| c.key == key)
            .and_then(|i| summaries[i].median())
            .map(|f| f.gbps)
    };
    println!();
    println!(
        "  {:<4}{:<58} {:>7} {:>11} {:>8}  notes",
        "", "run (median of alternated runs)", "Gbit/s", "range", "CPU s/Gb"
    );
    for (config, s) in CONFIGS.iter().zip(summaries) {
        let Some(f) = s.median() else {
            println!(
                "  {:<4}{:<58} {:>7}  {}",
                config.key,
                config.label,
                "failed",
                s.failures.join("; ")
            );
            continue;
        };
        let mut notes: Vec<String> = f.notes.clone();
        if let Some(fps) = f.frames_per_second {
            notes.insert(0, format!("{:.0} kframes/s", fps / 1e3));
        }
        let stalled = s.runs.iter().filter(|f| f.stall.is_some()).count();
        if s.stalled_repeats > 0 || stalled > 0 {
            notes.push(format!(
                "{} stalled run(s) repeated, {stalled} kept stalled",
                s.stalled_repeats
            ));
        }
        if !s.failures.is_empty() {
            notes.push(format!("{} run(s) failed", s.failures.len()));
        }
        notes.push(format!("client tx {}", percent_split(&f.split)));
        if !f.subflows.is_empty() {
            let parts: Vec<String> = f
                .subflows
                .iter()
                .map(|(name, bytes)| format!("{name} {:.0} MB", *bytes as f64 / 1e6))
                .collect();
            notes.push(format!("subflows {}", parts.join(", ")));
        }
        println!(
            "  {:<4}{:<58} {:>7.2} {:>11} {:>8}  {}",
            config.key,
            config.label,
            f.gbps,
            s.range(),
            f.cpu_text(),
            notes.join("; ")
        );
    }
    let ratio = |a: &str, b: &str| -> String {
        match (median(a), median(b)) {
            (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
            _ => "-".into(),
        }
    };
    println!();
    println!(
        "  {:<44} {:>7} {:>7} {:>7} {:>7} {:>10}",
        "engine ratios", "x k1", "x k2", "x k3", "x k4", "efficiency"
    );
    for key in ["a", "b", "e"] {
        let label = CONFIGS
            .iter()
            .find(|c| c.key == key)
            .map_or("", |c| c.label);
        println!(
            "  {:<44} {:>7} {:>7} {:>7} {:>7} {:>10}",
            format!("({key}) {label}"),
            ratio(key, "k1"),
            ratio(key, "k2"),
            ratio(key, "k3"),
            ratio(key, "k4"),
            ratio(key, "r"),
        );
    }
    let target = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "-",
    };
    let cmp =
        |a: &str, b: &str, factor: f64| -> Option<bool> { Some(median(a)? >= factor * median(b)?) };
    println!("  targets (issue 11):");
    println!(
        "    (a) >= 2 x k1: {}; (a) >= k2: {}; (b) >= 1.5 x k1: {}; (e) >= k1: {}; (a) >= 0.8 x r: {}",
        target(cmp("a", "k1", 2.0)),
        target(cmp("a", "k2", 1.0)),
        target(cmp("b", "k1", 1.5)),
        target(cmp("e", "k1", 1.0)),
        target(cmp("a", "r", 0.8)),
    );
    println!("  load average: start {load_start}, end {load_end} (1, 5, 15 min; {cores} cores shared with whatever else runs)");
    println!(
        "  re-run: cargo xtask bench --time {seconds} --runs {runs}   (engine core without veth: cargo run --release -p mptcp-bench)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (bytes, ticks) samples 100 ms apart, 1 MB per moving interval, 1 tick each.
    fn samples(moving: &[bool]) -> Vec<(u64, u64)> {
        let mut v = vec![(0, 0)];
        for (i, m) in moving.iter().enumerate() {
            let (b, _) = v[i];
            v.push((b + if *m { 1_000_000 } else { 0 }, i as u64 + 1));
        }
        v
    }

    #[test]
    fn a_gap_of_five_samples_inside_the_run_is_a_stall() {
        let mut m = vec![false, false, true, true];
        m.extend([false; 5]);
        m.extend([true, true, false, false, false, false, false, false]);
        let s = analyse(&samples(&m), 10.0);
        assert_eq!(s.stall, Some(Duration::from_millis(500)));
        // Intervals 2..=10 are the steady part: 9 ticks at 10 Hz for 4 MB.
        let cpu = s.cpu_per_gbit.unwrap();
        assert!((cpu - 0.9 / 0.032).abs() < 1e-9, "{cpu}");
    }

    #[test]
    fn start_up_tear_down_and_short_gaps_are_not_stalls() {
        let mut m = vec![false; 10];
        m.extend([true, false, false, false, false, true]);
        m.extend([false; 10]);
        assert_eq!(analyse(&samples(&m), 100.0).stall, None);
        assert_eq!(analyse(&samples(&[false; 8]), 100.0).cpu_per_gbit, None);
    }
}
