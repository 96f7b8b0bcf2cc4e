//! `cargo xtask bench --workers 1,2`: the engine's server with 1, 2, ...
//! workers side by side, on the two-path lab with multi-queue veths, next
//! to the kernel's MPTCP (k1: kernel -> kernel, 2 subflows, offloads off):
//!
//! - (bW) kernel MPTCP clients (4 connections, 2 subflows each) -> `serve
//!   --workers W --mode discard`;
//! - (aW) the engine's client (`connect`, one connection) -> the same server.
//!
//! Alternated rounds, medians. Besides Gbit/s: the server's CPU time per
//! packet it received (utime + stime of the `serve` process over the frames
//! its interfaces received, MTU frames of 1514 bytes), which sizes a server
//! (cores = packets per second x ns per packet), and the share of frames
//! handed from one worker to another (from `stats --json`).
use std::{path::Path, thread, time::Duration, time::Instant};

use anyhow::{anyhow, bail, Context, Result};
use mptcp_tests::{mptcp_connect, unique_name, Lab, LabConfig, Netns};

use crate::bench::{cpu_ticks, kernel_send, kernel_to_kernel, offloads, ticks_per_second};
use crate::datapath_bench::{engine_client, listen_addr, serve_with};

/// Bytes of an MTU-1500 Ethernet frame as the interface counters count it.
const FRAME_BYTES: f64 = 1514.0;
/// Kernel client connections of the (b) runs: enough for every worker to own some.
const KERNEL_CONNECTIONS: usize = 4;

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Run {
    gbps: f64,
    /// Server process CPU nanoseconds per received frame.
    ns_per_packet: Option<f64>,
    /// Frames handed between workers over frames received.
    handoff_share: Option<f64>,
}

/// Received bytes of `iface` in `ns`.
fn rx_bytes(ns: &Netns, iface: &str) -> Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -s -j link")?;
    v[0]["stats64"]["rx"]["bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("no rx byte counter for {iface}"))
}

fn server_rx(lab: &Lab) -> Result<u64> {
    lab.paths
        .iter()
        .map(|p| rx_bytes(&lab.server, &p.server_if))
        .sum()
}

/// `stats --json` of the server: (handed-off frames, received frames).
fn handoffs(binary: &Path, lab: &Lab, pid: u32) -> Option<(u64, u64)> {
    let out = lab
        .server
        .command(&binary.to_string_lossy())
        .args(["stats", "--json"])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["pid"] == pid)?;
    Some((
        v["worker"]["handoffs"].as_u64()?,
        v["worker"]["rx_frames"].as_u64()?,
    ))
}

/// `serve --workers W` (W = 0: a binary without the flag, one worker),
/// fed by `feed`; the server's figures around it.
fn server_run(
    binary: &Path,
    lab: &Lab,
    workers: usize,
    feed: impl FnOnce(u32) -> Result<f64>,
) -> Result<Run> {
    let w = workers.to_string();
    let args: &[&str] = if workers == 0 {
        &[]
    } else {
        &["--workers", &w]
    };
    let server = serve_with(binary, lab, args)?;
    let pid = server.pid();
    let (cpu0, rx0) = (cpu_ticks(pid), server_rx(lab)?);
    let gbps = feed(pid);
    let (cpu1, rx1) = (cpu_ticks(pid), server_rx(lab)?);
    let handed = handoffs(binary, lab, pid);
    server.stop();
    let frames = rx1.saturating_sub(rx0) as f64 / FRAME_BYTES;
    let cpu_ns = cpu1.saturating_sub(cpu0) as f64 / ticks_per_second() * 1e9;
    Ok(Run {
        gbps: gbps?,
        ns_per_packet: (frames > 0.0).then(|| cpu_ns / frames),
        handoff_share: handed.and_then(|(h, r)| (r > 0).then(|| h as f64 / r as f64)),
    })
}

/// (bW): kernel MPTCP clients, several connections at once.
fn kernel_clients(binary: &Path, lab: &Lab, workers: usize, seconds: u64) -> Result<Run> {
    server_run(binary, lab, workers, |_| {
        let addr = listen_addr(lab);
        let sent = lab.client.enter(|| -> Result<f64> {
            // Threads made here share this thread's network namespace.
            let senders: Vec<_> = (0..KERNEL_CONNECTIONS)
                .map(|_| {
                    thread::spawn(move || -> Result<f64> {
                        let stream = mptcp_connect(addr, Duration::from_secs(10))?;
                        Ok(kernel_send(stream, seconds)?.gbps)
                    })
                })
                .collect();
            let mut total = 0.0;
            for s in senders {
                total += s.join().map_err(|_| anyhow!("sender panicked"))??;
            }
            Ok(total)
        })??;
        Ok(sent)
    })
}

/// (aW): the engine's client, one connection over both paths.
fn engine_clients(binary: &Path, lab: &Lab, workers: usize, seconds: u64) -> Result<Run> {
    let all: Vec<&str> = lab.paths.iter().map(|p| p.client_if.as_str()).collect();
    server_run(binary, lab, workers, |pid| {
        let fig = engine_client(
            binary,
            lab,
            listen_addr(lab),
            seconds,
            "mptcp",
            &all,
            Some(pid),
        )?;
        Ok(fig.gbps)
    })
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

pub fn run(binary: &Path, seconds: u64, runs: usize, workers: &[usize]) -> Result<()> {
    crate::require_root("cargo xtask bench --workers")?;
    if workers.is_empty() || workers.contains(&0) {
        bail!("--workers takes a list of worker counts, like 1,2");
    }
    let queues = workers.iter().copied().max().unwrap_or(1).max(2);
    let load_start = crate::bench::loadavg();
    let lab = Lab::up(&LabConfig {
        prefix: unique_name("mptcp-wbench"),
        queues,
        ..LabConfig::unique(2)
    })?;
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench --workers: 2 veth paths of {queues} queues, MTU 1500, {seconds} s per run, {runs} alternated runs, discarding server, {cores} cores"
    );
    let mut keys: Vec<(String, String)> = vec![(
        "k1".into(),
        "kernel -> kernel MPTCP 2 subflows, offloads off".into(),
    )];
    // MPTCP_BENCH_BASELINE=PATH: another build's single worker on the same
    // lab (keys b0, a0), to compare the single-worker path before and after.
    let baseline = std::env::var_os("MPTCP_BENCH_BASELINE").map(std::path::PathBuf::from);
    if let Some(b) = &baseline {
        keys.push((
            "b0".into(),
            format!("{KERNEL_CONNECTIONS} kernel clients -> baseline serve"),
        ));
        keys.push(("a0".into(), "engine client -> baseline serve".into()));
        println!("  baseline: {}", b.display());
    }
    for w in workers {
        keys.push((
            format!("b{w}"),
            format!("{KERNEL_CONNECTIONS} kernel MPTCP clients -> serve --workers {w}"),
        ));
        keys.push((
            format!("a{w}"),
            format!("engine client (1 connection) -> serve --workers {w}"),
        ));
    }
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); keys.len()];
    let mut failures: Vec<Vec<String>> = vec![Vec::new(); keys.len()];
    for round in 1..=runs {
        println!("  round {round} of {runs}");
        for (i, (key, _)) in keys.iter().enumerate() {
            let started = Instant::now();
            let r = if key == "k1" {
                offloads(&lab, false)?;
                let f = kernel_to_kernel(&lab, true, seconds).map(|f| Run {
                    gbps: f.gbps,
                    ..Run::default()
                });
                offloads(&lab, true)?;
                f
            } else {
                let w: usize = key[1..].parse().unwrap_or(1);
                let bin = match (&baseline, w) {
                    (Some(b), 0) => b.as_path(),
                    _ => binary,
                };
                if key.starts_with('b') {
                    kernel_clients(bin, &lab, w, seconds)
                } else {
                    engine_clients(bin, &lab, w, seconds)
                }
            };
            match r {
                Ok(r) => {
                    println!(
                        "    {key:<3} {:>6.2} Gbit/s, {} ns/packet (server), {:.1} s",
                        r.gbps,
                        r.ns_per_packet.map_or("-".into(), |n| format!("{n:.0}")),
                        started.elapsed().as_secs_f64()
                    );
                    results[i].push(r);
                }
                Err(e) => {
                    println!("    {key:<3} could not run: {e:#}");
                    failures[i].push(format!("{e:#}"));
                }
            }
        }
    }
    println!();
    println!(
        "  {:<4}{:<52} {:>7} {:>13} {:>9} {:>8}",
        "", "run (medians)", "Gbit/s", "ns/packet", "hand-off", "x k1"
    );
    let k1 = median(&results[0].iter().map(|r| r.gbps).collect::<Vec<_>>());
    let mut sizing = Vec::new();
    for (i, (key, label)) in keys.iter().enumerate() {
        let runs = &results[i];
        let Some(gbps) = median(&runs.iter().map(|r| r.gbps).collect::<Vec<_>>()) else {
            println!("  {key:<4}{label:<52} failed: {}", failures[i].join("; "));
            continue;
        };
        let ns = median(
            &runs
                .iter()
                .filter_map(|r| r.ns_per_packet)
                .collect::<Vec<_>>(),
        );
        let share = median(
            &runs
                .iter()
                .filter_map(|r| r.handoff_share)
                .collect::<Vec<_>>(),
        );
        println!(
            "  {key:<4}{label:<52} {gbps:>7.2} {:>13} {:>9} {:>8}",
            ns.map_or("-".into(), |n| format!("{n:.0}")),
            share.map_or("-".into(), |s| format!("{:.1}%", s * 100.0)),
            k1.map_or("-".into(), |k| format!("{:.2}", gbps / k)),
        );
        if let Some(ns) = ns {
            sizing.push((key.clone(), ns));
        }
    }
    // MTU-1500 frames: 1538 bytes on the wire with preamble and gap.
    let pps = |gbit: f64| gbit * 1e9 / (1538.0 * 8.0);
    println!();
    println!(
        "  cores for line rate at MTU 1500 (packets/s x ns/packet; receive side, one direction):"
    );
    for (key, ns) in &sizing {
        println!(
            "    ({key}) {ns:.0} ns/packet: 2x10G ({:.2} Mpps) {:.1} cores, 4x25G ({:.2} Mpps) {:.1} cores",
            pps(20.0) / 1e6,
            pps(20.0) * ns / 1e9,
            pps(100.0) / 1e6,
            pps(100.0) * ns / 1e9
        );
    }
    println!(
        "  load average: start {load_start}, end {} ({cores} cores shared with whatever else runs)",
        crate::bench::loadavg()
    );
    let list: Vec<String> = workers.iter().map(ToString::to_string).collect();
    println!(
        "  re-run: cargo xtask bench --workers {} --time {seconds} --runs {runs}",
        list.join(",")
    );
    Ok(())
}
