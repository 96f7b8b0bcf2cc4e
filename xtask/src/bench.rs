//! `cargo xtask bench`: one run of each, side by side, on the two-path lab
//! (MTU 1500, no shaping):
//!
//! - (a) engine to engine, MPTCP over two subflows (`serve` on both server
//!   interfaces, `connect --engine mptcp` on both client interfaces);
//! - (b) the kernel's MPTCP client (two subflows: `ip mptcp endpoint ...
//!   subflow`) to the engine's server;
//! - (c) kernel to kernel MPTCP, two subflows, with an XDP pass-through
//!   program on every veth (the reference: the kernel under the same
//!   MTU-sized-frame constraint our datapath has);
//! - (d) kernel to kernel single TCP, same XDP pass-through.
//!
//! Every run sends the same byte pattern client to server for the same time
//! into a discarding server. Figures, never asserts: the bench fails only
//! when a run cannot run at all.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
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

/// The test pattern's first `PATTERN_PERIOD + WRITE_CHUNK` bytes.
pub fn pattern_buffer() -> Vec<u8> {
    mptcp_engine::app::Pattern::STREAM.bytes(0, PATTERN_PERIOD + WRITE_CHUNK)
}

/// What one run measured.
pub struct Figure {
    pub gbps: f64,
    /// Bytes sent per client interface during the run (the kernel's veth
    /// counters, headers included): how the paths shared the load.
    pub split: Vec<u64>,
    /// Per-subflow payload where the sender reports it.
    pub subflows: Vec<(String, u64)>,
    pub note: Option<String>,
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

/// What a kernel sender saw.
pub struct Sent {
    pub bytes: u64,
    pub gbps: f64,
    /// The longest a single write blocked: the kernel's MPTCP sometimes
    /// stalls for seconds here (receive window shared by out-of-order subflows).
    pub longest_write: Duration,
    pub elapsed: Duration,
}

impl Sent {
    /// A note when a write blocked for long enough to matter.
    pub fn stall_note(&self) -> Option<String> {
        (self.longest_write > Duration::from_millis(500)).then(|| {
            // The rate over the rest of the run: what the flow did when it moved.
            let moving = self.elapsed.saturating_sub(self.longest_write);
            format!(
                "the sender stalled: one write blocked {:.1} s ({:.2} Gbit/s over the other {:.1} s)",
                self.longest_write.as_secs_f64(),
                self.bytes as f64 * 8.0 / moving.as_secs_f64().max(1e-3) / 1e9,
                moving.as_secs_f64()
            )
        })
    }
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
    let mut longest_write = Duration::ZERO;
    let mut now = start;
    while now < until {
        let at = (sent % PATTERN_PERIOD as u64) as usize;
        stream
            .write_all(&pattern[at..at + WRITE_CHUNK])
            .context("writing")?;
        sent += WRITE_CHUNK as u64;
        let after = Instant::now();
        longest_write = longest_write.max(after - now);
        now = after;
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
        longest_write,
        elapsed,
    })
}

/// Kernel to kernel, XDP pass-through on every veth (attached by the caller).
fn kernel_to_kernel(lab: &Lab, mptcp: bool, seconds: u64) -> Result<Figure> {
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
    let server = thread::spawn(move || -> Result<u64> {
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
    });
    let before = client_tx(lab)?;
    let stream = lab.client.enter(|| -> Result<TcpStream> {
        if mptcp {
            mptcp_connect(addr, Duration::from_secs(10))
        } else {
            Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(10))?)
        }
    })??;
    let sent = kernel_send(stream, seconds)?;
    let received = server
        .join()
        .map_err(|_| anyhow!("server thread panicked"))??;
    if received != sent.bytes {
        bail!("the server read {received} bytes of {}", sent.bytes);
    }
    Ok(Figure {
        gbps: sent.gbps,
        split: split_since(lab, &before)?,
        subflows: Vec::new(),
        note: sent.stall_note(),
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

/// Runs `f`, printing a progress line before and the figure after.
fn step(label: &str, f: impl FnOnce() -> Result<Figure>) -> Result<Figure, String> {
    println!("  running {label} ...");
    let started = Instant::now();
    match f() {
        Ok(fig) => {
            println!(
                "    {:.2} Gbit/s ({:.1} s wall)",
                fig.gbps,
                started.elapsed().as_secs_f64()
            );
            Ok(fig)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            println!("    could not run: {msg}");
            Err(msg)
        }
    }
}

pub fn run(binary: &Path, seconds: u64) -> Result<()> {
    crate::require_root("cargo xtask bench")?;
    let load_start = loadavg();
    let lab = Lab::up(&LabConfig {
        prefix: unique_name("mptcp-bench"),
        paths: 2,
        qdisc: Vec::new(),
        subflow_endpoints: true,
    })?;
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench: {} veth paths, MTU 1500, no shaping, {seconds} s per run, client -> discarding server, {cores} cores, release build",
        lab.paths.len()
    );
    println!("  load average at start: {load_start}");

    let client_ifs: Vec<&str> = lab.paths.iter().map(|p| p.client_if.as_str()).collect();
    let server_ifs: Vec<&str> = lab.paths.iter().map(|p| p.server_if.as_str()).collect();
    let client_xdp = Classify::start(binary, &lab.client, &client_ifs, UNUSED_PORT, false)?;
    let server_xdp = Classify::start(binary, &lab.server, &server_ifs, UNUSED_PORT, false)?;
    let c = step(
        "(c) kernel -> kernel, MPTCP 2 subflows, XDP pass-through",
        || kernel_to_kernel(&lab, true, seconds),
    );
    let d = step("(d) kernel -> kernel, TCP 1 flow, XDP pass-through", || {
        kernel_to_kernel(&lab, false, seconds)
    });
    // serve and connect attach their own programs.
    client_xdp.stop()?;
    server_xdp.stop()?;
    let a = step("(a) engine -> engine, MPTCP 2 subflows", || {
        datapath_bench::engine_to_engine(binary, &lab, seconds)
    });
    let b = step(
        "(b) kernel MPTCP client (2 subflows) -> engine server",
        || datapath_bench::kernel_to_engine(binary, &lab, seconds),
    );
    let load_end = loadavg();

    let reference = c.as_ref().ok().map(|f| f.gbps);
    println!();
    println!(
        "  {:<58} {:>10} {:>9}   client tx split cli0 / cli1",
        "run", "Gbit/s", "x (c)"
    );
    let rows = [
        ("(a) engine -> engine, MPTCP", &a),
        ("(b) kernel MPTCP client -> engine server", &b),
        ("(c) kernel -> kernel MPTCP, XDP pass-through", &c),
        ("(d) kernel -> kernel TCP 1 flow, XDP pass-through", &d),
    ];
    for (label, fig) in rows {
        match fig {
            Ok(f) => {
                let ratio = reference
                    .filter(|r| *r > 0.0)
                    .map_or("-".into(), |r| format!("{:.2}", f.gbps / r));
                println!(
                    "  {label:<58} {:>10.2} {ratio:>9}   {}",
                    f.gbps,
                    percent_split(&f.split)
                );
                if !f.subflows.is_empty() {
                    let parts: Vec<String> = f
                        .subflows
                        .iter()
                        .map(|(name, bytes)| format!("{name} {:.0} MB", *bytes as f64 / 1e6))
                        .collect();
                    println!("      subflows (sender's count): {}", parts.join(", "));
                }
                if let Some(note) = &f.note {
                    println!("      note: {note}");
                }
            }
            Err(e) => println!("  {label:<58} {:>10} {:>9}   {e}", "failed", "-"),
        }
    }
    println!("  load average: start {load_start}, end {load_end} (1, 5, 15 min; {cores} cores shared with whatever else runs)");
    println!("  (b): TX checksum offload off on the client's veths (the engine wants full checksums), so the kernel client checksums in software; (c), (d) keep the offload.");
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, f)| f.is_err())
        .map(|(l, _)| *l)
        .collect();
    if !failed.is_empty() {
        bail!("could not run: {}", failed.join("; "));
    }
    Ok(())
}
