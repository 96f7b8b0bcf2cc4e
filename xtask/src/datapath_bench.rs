//! The runs of `cargo xtask bench` that involve `mptcp-user` processes:
//! `serve --mode discard` on both server interfaces fed by the engine's
//! client (a) or by the kernel's MPTCP client (b); the engine's client
//! against a kernel MPTCP server (e); and the raw ceiling (`raw-ceiling`,
//! AF_XDP to AF_XDP with no protocol). The sampler watches the CPU time of
//! every `mptcp-user` process of a run.
use std::{
    io::Read,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use mptcp_tests::{mptcp_connect, mptcp_listen, wait_until, Lab};

use crate::bench::{client_tx, discard_server, kernel_send, split_since, Figure, Sampler};

const PORT: u16 = 5310;
const KERNEL_SERVER_PORT: u16 = 5312;
const RAW_PORT: u16 = 5330;

/// A child `mptcp-user` that runs until told to stop (SIGTERM).
pub(crate) struct Running {
    child: Option<Child>,
}

impl Running {
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM (it detaches XDP cleanly), reap: its stdout.
    pub(crate) fn stop(mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return String::new();
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let _ = child.wait();
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

pub(crate) fn listen_addr(lab: &Lab) -> SocketAddr {
    SocketAddr::new(lab.paths[0].server_v4.into(), PORT)
}

/// Starts `mptcp-user ARGS` in the server namespace and waits until XDP is
/// on every server interface.
fn start_server(binary: &Path, lab: &Lab, args: &[String]) -> Result<Running> {
    let child = lab
        .server
        .command(&binary.to_string_lossy())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting mptcp-user {}", args[0]))?;
    let running = Running { child: Some(child) };
    if !wait_until(Duration::from_secs(15), || {
        lab.paths.iter().all(|p| {
            lab.server
                .ip(&["link", "show", &p.server_if])
                .is_ok_and(|s| s.contains("xdp"))
        })
    }) {
        bail!(
            "mptcp-user {} did not attach to the server's interfaces",
            args[0]
        );
    }
    Ok(running)
}

/// `serve --mode discard` on every server interface, attached.
fn serve(binary: &Path, lab: &Lab) -> Result<Running> {
    serve_with(binary, lab, &[])
}

/// [`serve`] with more arguments (e.g. `--workers 2`).
pub(crate) fn serve_with(binary: &Path, lab: &Lab, extra: &[&str]) -> Result<Running> {
    let mut args = vec!["serve".to_string()];
    for p in &lab.paths {
        args.extend(["--iface".into(), p.server_if.clone()]);
    }
    args.extend([
        "--listen".into(),
        listen_addr(lab).to_string(),
        "--mode".into(),
        "discard".into(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    start_server(binary, lab, &args)
}

/// What a finished client process said.
struct ClientOutput {
    success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `mptcp-user ARGS` in the client namespace to completion, or stops
/// it (SIGTERM, then SIGKILL) after `limit`.
fn run_client(
    binary: &Path,
    lab: &Lab,
    args: &[String],
    limit: Duration,
    sampler: &Sampler,
) -> Result<ClientOutput> {
    let mut child = lab
        .client
        .command(&binary.to_string_lossy())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting mptcp-user {}", args[0]))?;
    let pid = child.id() as i32;
    sampler.watch(child.id());
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        bail!("no pipes to mptcp-user");
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let err = thread::spawn(move || {
            let mut e = Vec::new();
            let _ = stderr.read_to_end(&mut e);
            e
        });
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let stderr = err.join().unwrap_or_default();
        let success = child.wait().is_ok_and(|s| s.success());
        let _ = tx.send(ClientOutput {
            success,
            stdout: out,
            stderr,
        });
    });
    if let Ok(out) = rx.recv_timeout(limit) {
        return Ok(out);
    }
    // SAFETY: signalling our own child (`ip netns exec` execs mptcp-user).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if rx.recv_timeout(Duration::from_secs(5)).is_err() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }
    bail!(
        "mptcp-user {} did not finish within {limit:?} (stopped)",
        args[0]
    )
}

/// One `connect --time` run with the given engine on the given client
/// interfaces to `to`: the figure, from its JSON report.
pub(crate) fn engine_client(
    binary: &Path,
    lab: &Lab,
    to: SocketAddr,
    seconds: u64,
    engine: &str,
    ifaces: &[&str],
    server_pid: Option<u32>,
) -> Result<Figure> {
    let mut args = vec![
        "connect".to_string(),
        to.to_string(),
        "--engine".into(),
        engine.into(),
        "--time".into(),
        seconds.to_string(),
        "--json".into(),
    ];
    for i in ifaces {
        args.extend(["--iface".to_string(), i.to_string()]);
    }
    let before = client_tx(lab)?;
    let pids: Vec<u32> = server_pid.into_iter().collect();
    let sampler = Sampler::start(lab, &pids)?;
    let out = run_client(
        binary,
        lab,
        &args,
        Duration::from_secs(seconds + 30),
        &sampler,
    );
    let sampled = sampler.finish();
    let out = out?;
    if !out.success {
        bail!(
            "connect --engine {engine} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("connect's JSON report")?;
    let gbps = report["end"]["sum_sent"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("no end.sum_sent.bits_per_second in {report}"))?
        / 1e9;
    let subflows = report["end"]["subflows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        format!("#{} {}", s["id"], s["interface"].as_str().unwrap_or("?")),
                        s["bytes_sent"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Figure {
        gbps,
        cpu_per_gbit: sampled.cpu_per_gbit,
        split: split_since(lab, &before)?,
        subflows,
        stall: sampled.stall,
        ..Figure::default()
    })
}

fn subflow_note(fig: &mut Figure, paths: usize) {
    let carrying = fig.subflows.iter().filter(|s| s.1 > 0).count();
    if carrying < paths {
        fig.notes
            .push(format!("only {carrying} of {paths} subflows carried data"));
    }
}

/// (a): the engine's MPTCP client on both client interfaces to `serve`.
pub fn engine_to_engine(binary: &Path, lab: &Lab, seconds: u64) -> Result<Figure> {
    let all: Vec<&str> = lab.paths.iter().map(|p| p.client_if.as_str()).collect();
    let server = serve(binary, lab)?;
    let fig = engine_client(
        binary,
        lab,
        listen_addr(lab),
        seconds,
        "mptcp",
        &all,
        Some(server.pid()),
    );
    server.stop();
    let mut fig = fig?;
    subflow_note(&mut fig, all.len());
    Ok(fig)
}

/// (b): the kernel's MPTCP client (the lab's `subflow` endpoint opens the
/// second subflow over path 2) writing to the engine's server.
pub fn kernel_to_engine(binary: &Path, lab: &Lab, seconds: u64) -> Result<Figure> {
    let server = serve(binary, lab)?;
    let joins_before = lab.client.nstat("MPTcpExtMPJoinSynAckRx").unwrap_or(0);
    let before = client_tx(lab)?;
    let addr = listen_addr(lab);
    // The kernel's sender is a thread of this process.
    let sampler = Sampler::start(lab, &[server.pid(), std::process::id()])?;
    let sent = lab.client.enter(|| -> Result<_> {
        let stream = mptcp_connect(addr, Duration::from_secs(10))?;
        kernel_send(stream, seconds)
    })??;
    let sampled = sampler.finish();
    server.stop();
    let joins = lab
        .client
        .nstat("MPTcpExtMPJoinSynAckRx")
        .unwrap_or(0)
        .saturating_sub(joins_before);
    let mut notes = Vec::new();
    if joins == 0 {
        notes.push("the kernel client's MP_JOIN was not answered: one subflow".into());
    }
    Ok(Figure {
        gbps: sent.gbps,
        cpu_per_gbit: sampled.cpu_per_gbit,
        split: split_since(lab, &before)?,
        stall: sampled.stall,
        notes,
        ..Figure::default()
    })
}

/// (e): the engine's MPTCP client on both client interfaces to a kernel
/// MPTCP server (listening on its first address; the engine's join arrives
/// over path 2 for that address, as a kernel client's would).
pub fn engine_to_kernel(binary: &Path, lab: &Lab, seconds: u64) -> Result<Figure> {
    let all: Vec<&str> = lab.paths.iter().map(|p| p.client_if.as_str()).collect();
    let addr = SocketAddr::new(lab.paths[0].server_v4.into(), KERNEL_SERVER_PORT);
    let listener = lab
        .server
        .enter(|| -> Result<TcpListener> { mptcp_listen(addr) })??;
    let server = discard_server(listener);
    // The kernel's receiver is a thread of this process.
    let fig = engine_client(
        binary,
        lab,
        addr,
        seconds,
        "mptcp",
        &all,
        Some(std::process::id()),
    );
    let received = server.join().map_err(|_| anyhow!("server thread panicked"));
    let mut fig = fig?;
    let bytes = received??;
    if bytes == 0 {
        bail!("the kernel server read nothing");
    }
    subflow_note(&mut fig, all.len());
    Ok(fig)
}

/// The raw ceiling: `raw-ceiling` sending MTU-sized frames from the client's
/// AF_XDP sockets to the server's, round the paths, no protocol. The rate is
/// what the receiver counted.
pub fn raw_ceiling(binary: &Path, lab: &Lab, seconds: u64) -> Result<Figure> {
    let mut args = vec!["raw-ceiling".to_string()];
    for p in &lab.paths {
        args.extend(["--iface".into(), p.server_if.clone()]);
    }
    args.extend(["--port".into(), RAW_PORT.to_string()]);
    let receiver = start_server(binary, lab, &args)?;
    let mut args = vec!["raw-ceiling".to_string()];
    for p in &lab.paths {
        args.extend(["--iface".into(), p.client_if.clone()]);
    }
    for p in &lab.paths {
        args.extend([
            "--to".into(),
            SocketAddr::new(p.server_v4.into(), RAW_PORT).to_string(),
        ]);
    }
    args.extend(["--time".into(), seconds.to_string()]);
    let before = client_tx(lab)?;
    let sampler = Sampler::start(lab, &[receiver.pid()])?;
    let sender = run_client(
        binary,
        lab,
        &args,
        Duration::from_secs(seconds + 30),
        &sampler,
    );
    let sampled = sampler.finish();
    // Frames still in flight land within microseconds.
    thread::sleep(Duration::from_millis(200));
    let out = receiver.stop();
    let sender = sender?;
    if !sender.success {
        bail!(
            "raw-ceiling sender failed: {}",
            String::from_utf8_lossy(&sender.stderr).trim()
        );
    }
    let report: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("raw-ceiling receiver's JSON report: {out:?}"))?;
    let number = |k: &str| {
        report[k]
            .as_f64()
            .ok_or_else(|| anyhow!("no {k} in the receiver's report {report}"))
    };
    let mut notes = Vec::new();
    let dropped = number("rx_dropped")?;
    if dropped > 0.0 {
        notes.push(format!("{dropped} frames dropped at the receiver's rings"));
    }
    Ok(Figure {
        gbps: number("payload_bits_per_second")? / 1e9,
        frames_per_second: Some(number("frames_per_second")?),
        cpu_per_gbit: sampled.cpu_per_gbit,
        split: split_since(lab, &before)?,
        stall: sampled.stall,
        notes,
        ..Figure::default()
    })
}
