//! `cargo xtask bench --scale`: the engine's server and the kernel's MPTCP
//! server side by side on the two-path lab, with the kernel's MPTCP clients
//! (Python IPPROTO_MPTCP sockets, a `subflow` endpoint on path 2) as load:
//!
//! - (first, on a fresh server) memory per idle connection: 10,000
//!   connections opened, one 5-byte echo each, then held (engine: the
//!   server's RSS delta; kernel: the machine's slab delta, both ends, and
//!   the Python server's RSS delta), and the CPU of the idle server
//!   holding them (5 s of utime + stime);
//! - time for N concurrent connections each echoing 64 KiB (N = 100, 1000,
//!   10,000), with the latency spread;
//! - connections per second (5000 concurrent 100-byte echoes);
//! - frames dropped at the engine's AF_XDP rings (XDP_STATISTICS) and at
//!   the server's veths.
//!
//! Figures, never asserts: it fails only when a run cannot run at all.
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mptcp_tests::{unique_name, Lab, LabConfig, Netns};
use serde_json::Value;

const ECHO_CLIENTS: &str = include_str!("../../tests/scripts/echo_clients.py");
const ECHO_SERVER: &str = include_str!("../../tests/scripts/echo_server.py");
const PORT: u16 = 5600;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn slab_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Slab:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn veth_drops(ns: &Netns, ifs: &[&str]) -> u64 {
    ifs.iter()
        .filter_map(|i| {
            ns.exec(
                "cat",
                &[&format!("/sys/class/net/{i}/statistics/rx_dropped")],
            )
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
        })
        .sum()
}

/// The echo clients, pipes attached (see tests/scripts/echo_clients.py).
struct Clients {
    _proc: Proc,
    out: BufReader<std::process::ChildStdout>,
    stdin: std::process::ChildStdin,
}

impl Clients {
    fn start(ns: &Netns, to: SocketAddr, n: usize, size: usize, mode: &str) -> Result<Clients> {
        let mut child = ns
            .command("python3")
            .args(["-c", ECHO_CLIENTS])
            .args([to.ip().to_string(), to.port().to_string()])
            .args([n.to_string(), size.to_string(), "300".into(), mode.into()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("python3")?;
        let out = BufReader::new(child.stdout.take().context("stdout")?);
        let stdin = child.stdin.take().context("stdin")?;
        Ok(Clients {
            _proc: Proc(child),
            out,
            stdin,
        })
    }

    fn line(&mut self) -> Result<Value> {
        let mut l = String::new();
        self.out.read_line(&mut l)?;
        serde_json::from_str(&l).map_err(|e| anyhow!("clients said {l:?}: {e}"))
    }

    fn release(&mut self) -> Result<()> {
        self.stdin.write_all(b"close\n")?;
        Ok(self.stdin.flush()?)
    }
}

#[derive(Default)]
struct Figures {
    /// (N, seconds, p50, p99, exact)
    echoes: Vec<(usize, f64, f64, f64, u64)>,
    conns_per_second: Option<f64>,
    idle_rss_kib: Option<f64>,
    idle_slab_kib: Option<f64>,
    idle_cpu_percent: Option<f64>,
    ring_drops: Option<u64>,
    veth_drops: u64,
}

fn measure(
    lab: &Lab,
    server_pid: u32,
    to: SocketAddr,
    sizes: &[usize],
    idle: usize,
) -> Result<Figures> {
    let mut f = Figures::default();
    // Idle connections first, on a fresh server (RSS never shrinks, so
    // earlier runs would hide the growth): open, one 5-byte echo, held.
    let rss0 = proc_status(server_pid, "VmRSS:");
    let slab0 = slab_kib();
    let mut c = Clients::start(&lab.client, to, idle, 5, "--hold")?;
    let v = c.line()?;
    println!("    {idle} idle connections opened: {v}");
    thread::sleep(Duration::from_secs(3));
    let rss1 = proc_status(server_pid, "VmRSS:");
    let slab1 = slab_kib();
    let t0 = cpu_ticks(server_pid);
    let window = Duration::from_secs(5);
    thread::sleep(window);
    let t1 = cpu_ticks(server_pid);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    if v["exact"].as_u64() == Some(idle as u64) {
        f.idle_rss_kib = Some(rss1.saturating_sub(rss0) as f64 / idle as f64);
        f.idle_slab_kib = Some(slab1.saturating_sub(slab0) as f64 / idle as f64);
        f.idle_cpu_percent = Some((t1 - t0) as f64 / hz / window.as_secs_f64() * 100.0);
    }
    c.release()?;
    let _ = c.line();
    thread::sleep(Duration::from_secs(2));
    for &n in sizes {
        let mut c = Clients::start(&lab.client, to, n, 64 << 10, "--concurrent")?;
        let v = c.line()?;
        let _ = c.line();
        println!("    {n} x 64 KiB echo: {v}");
        f.echoes.push((
            n,
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            v["p50"].as_f64().unwrap_or(f64::NAN),
            v["p99"].as_f64().unwrap_or(f64::NAN),
            v["exact"].as_u64().unwrap_or(0),
        ));
        thread::sleep(Duration::from_secs(2));
    }
    let mut c = Clients::start(&lab.client, to, 5000, 100, "--concurrent")?;
    let v = c.line()?;
    let _ = c.line();
    println!("    5000 x 100 B echo: {v}");
    if v["exact"] == 5000 {
        f.conns_per_second = v["seconds"].as_f64().map(|s| 5000.0 / s);
    }
    thread::sleep(Duration::from_secs(2));
    let ifs: Vec<&str> = lab.paths.iter().map(|p| p.server_if.as_str()).collect();
    f.veth_drops = veth_drops(&lab.server, &ifs);
    Ok(f)
}

fn engine_stats(binary: &Path, lab: &Lab, pid: u32) -> Option<Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", lab.server.name()])
        .arg(binary)
        .args(["stats", "--json"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["pid"] == pid)
}

/// The two-path lab; veths with `queues` queues when above one.
fn lab(queues: usize) -> Result<Lab> {
    let lab = Lab::up(&LabConfig {
        prefix: unique_name("mptcp-scale"),
        paths: 2,
        qdisc: Vec::new(),
        subflow_endpoints: true,
        emulate: Vec::new(),
        emulator_binary: None,
        emulator_args: Vec::new(),
        queues: if queues > 1 { queues } else { 0 },
    })?;
    for ns in [&lab.client, &lab.server] {
        for (k, v) in [
            ("net.core.somaxconn", "16384"),
            ("net.ipv4.tcp_max_syn_backlog", "16384"),
            ("net.ipv4.ip_local_port_range", "10000 65000"),
        ] {
            ns.exec("sysctl", &["-qw", &format!("{k}={v}")])?;
        }
    }
    Ok(lab)
}

pub fn run(binary: &Path, max: usize, workers: usize) -> Result<()> {
    crate::require_root("cargo xtask bench --scale")?;
    let sizes: Vec<usize> = [100, 1000, 10_000]
        .into_iter()
        .filter(|n| *n <= max)
        .collect();
    let idle = 10_000.min(max);
    let load_start = crate::bench::loadavg();
    println!("bench --scale: two veth paths, kernel MPTCP clients (Python, subflow endpoint on path 2), echo servers; release build");
    println!("  load average at start: {load_start}");

    // The kernel's MPTCP server.
    println!("  kernel MPTCP server (Python IPPROTO_MPTCP, one selector):");
    let lab_k = lab(workers)?;
    let to = SocketAddr::new(lab_k.paths[0].server_v4.into(), PORT);
    let mut server = lab_k
        .server
        .command("python3")
        .args(["-c", ECHO_SERVER, &to.ip().to_string(), &PORT.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("python3 echo server")?;
    let mut ready = String::new();
    BufReader::new(server.stdout.take().context("stdout")?).read_line(&mut ready)?;
    let kpid = server.id();
    let server = Proc(server);
    let kernel = measure(&lab_k, kpid, to, &sizes, idle);
    drop(server);
    drop(lab_k);

    // The engine.
    println!(
        "  engine (mptcp-user serve --mode echo on both interfaces, {workers} worker(s), {workers} queue(s) per veth):"
    );
    let lab_e = lab(workers)?;
    let to = SocketAddr::new(lab_e.paths[0].server_v4.into(), PORT);
    let child = Command::new("ip")
        .args(["netns", "exec", lab_e.server.name()])
        .arg(binary)
        .args([
            "serve",
            "--iface",
            "srv0",
            "--iface",
            "srv1",
            "--listen",
            &to.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("serve")?;
    let epid = child.id();
    let serve = Proc(child);
    let up = (0..150).any(|_| {
        thread::sleep(Duration::from_millis(100));
        engine_stats(binary, &lab_e, epid).is_some()
    });
    if !up {
        bail!("serve did not start");
    }
    let mut engine = measure(&lab_e, epid, to, &sizes, idle);
    if let (Ok(f), Some(v)) = (engine.as_mut(), engine_stats(binary, &lab_e, epid)) {
        f.ring_drops = v["interfaces"].as_array().map(|a| {
            a.iter()
                .map(|i| {
                    ["rx_dropped", "rx_ring_full", "rx_fill_ring_empty"]
                        .iter()
                        .map(|k| i[*k].as_u64().unwrap_or(0))
                        .sum::<u64>()
                })
                .sum()
        });
        println!("    engine: {}", v["engine"]);
    }
    drop(serve);
    drop(lab_e);
    let load_end = crate::bench::loadavg();

    println!();
    println!(
        "  {:<46} {:>16} {:>16} {:>8}",
        "figure", "kernel", "engine", "ratio"
    );
    let row = |label: &str, k: Option<f64>, e: Option<f64>, unit: &str| {
        let show = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}{unit}"));
        let ratio = match (k, e) {
            (Some(k), Some(e)) if k > 0.0 => format!("{:.2}", e / k),
            _ => "-".into(),
        };
        println!("  {label:<46} {:>16} {:>16} {ratio:>8}", show(k), show(e));
    };
    let k = kernel.as_ref().ok();
    let e = engine.as_ref().ok();
    for (i, n) in sizes.iter().enumerate() {
        let get = |f: Option<&Figures>| {
            f.and_then(|f| f.echoes.get(i).copied())
                .filter(|x| x.4 == *n as u64)
        };
        row(
            &format!("{n} concurrent 64 KiB echoes (s)"),
            get(k).map(|x| x.1),
            get(e).map(|x| x.1),
            "",
        );
        row(
            "  per-connection p99 (s)",
            get(k).map(|x| x.3),
            get(e).map(|x| x.3),
            "",
        );
    }
    row(
        "connections per second (5000 x 100 B)",
        k.and_then(|f| f.conns_per_second),
        e.and_then(|f| f.conns_per_second),
        "",
    );
    row(
        &format!("server RSS per idle connection (KiB, {idle})"),
        k.and_then(|f| f.idle_rss_kib),
        e.and_then(|f| f.idle_rss_kib),
        "",
    );
    row(
        "machine slab per idle connection (KiB, both ends)",
        k.and_then(|f| f.idle_slab_kib),
        e.and_then(|f| f.idle_slab_kib),
        "",
    );
    row(
        &format!("idle server CPU holding {idle} (% of a core)"),
        k.and_then(|f| f.idle_cpu_percent),
        e.and_then(|f| f.idle_cpu_percent),
        "",
    );
    println!(
        "  {:<46} {:>16} {:>16}",
        "frames dropped: AF_XDP rings / server veths",
        format!("- / {}", k.map_or(0, |f| f.veth_drops)),
        format!(
            "{} / {}",
            e.and_then(|f| f.ring_drops)
                .map_or("-".into(), |d| d.to_string()),
            e.map_or(0, |f| f.veth_drops)
        )
    );
    println!("  load average: start {load_start}, end {load_end}; the Python clients share the machine's cores with the server");
    println!("  kernel memory is in the slab (machine-wide: noisy when other work runs); its server process is Python, whose RSS is the userspace part");
    if let Err(e) = &kernel {
        println!("  kernel run failed: {e:#}");
    }
    if let Err(e) = &engine {
        println!("  engine run failed: {e:#}");
    }
    if kernel.is_err() || engine.is_err() {
        bail!("a run could not run");
    }
    Ok(())
}
