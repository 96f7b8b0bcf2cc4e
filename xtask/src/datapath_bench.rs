//! The engine's runs of `cargo xtask bench`: `mptcp-user serve --mode
//! discard` on both server interfaces, fed by the engine's client (a) or by
//! the kernel's MPTCP client (b).
use std::{
    path::Path,
    process::{Child, Output, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use mptcp_tests::{mptcp_connect, wait_until, Lab};

use crate::bench::{client_tx, kernel_send, split_since, Figure};

const PORT: u16 = 5310;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; SIGTERM detaches XDP cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn listen_addr(lab: &Lab) -> std::net::SocketAddr {
    std::net::SocketAddr::new(lab.paths[0].server_v4.into(), PORT)
}

/// `serve --mode discard` on every server interface, attached.
fn serve(binary: &Path, lab: &Lab) -> Result<Serve> {
    let mut cmd = lab.server.command(&binary.to_string_lossy());
    cmd.arg("serve");
    for p in &lab.paths {
        cmd.args(["--iface", &p.server_if]);
    }
    let child = cmd
        .args([
            "--listen",
            &listen_addr(lab).to_string(),
            "--mode",
            "discard",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mptcp-user serve")?;
    let serve = Serve(child);
    if !wait_until(Duration::from_secs(15), || {
        lab.paths.iter().all(|p| {
            lab.server
                .ip(&["link", "show", &p.server_if])
                .is_ok_and(|s| s.contains("xdp"))
        })
    }) {
        bail!("mptcp-user serve did not attach to the server's interfaces");
    }
    Ok(serve)
}

/// Runs `connect` to completion, or stops it (SIGTERM, then SIGKILL) after `limit`.
fn connect_output(binary: &Path, lab: &Lab, args: &[String], limit: Duration) -> Result<Output> {
    let child = lab
        .client
        .command(&binary.to_string_lossy())
        .arg("connect")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting mptcp-user connect")?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    if let Ok(out) = rx.recv_timeout(limit) {
        return Ok(out?);
    }
    // SAFETY: signalling our own child (`ip netns exec` execs mptcp-user).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if rx.recv_timeout(Duration::from_secs(5)).is_err() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }
    bail!("connect did not finish within {limit:?} (stopped)")
}

/// One `connect --time` run with the given engine on the given client
/// interfaces: the figure, from its JSON report.
fn engine_client(
    binary: &Path,
    lab: &Lab,
    seconds: u64,
    engine: &str,
    ifaces: &[&str],
) -> Result<Figure> {
    let mut args = vec![
        listen_addr(lab).to_string(),
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
    let out = connect_output(binary, lab, &args, Duration::from_secs(seconds + 30))?;
    if !out.status.success() {
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
        split: split_since(lab, &before)?,
        subflows,
        note: None,
    })
}

/// (a): the engine's MPTCP client on both client interfaces; if that cannot
/// run, the best that can (the TCP engine on one path), said in the note.
pub fn engine_to_engine(binary: &Path, lab: &Lab, seconds: u64) -> Result<Figure> {
    let all: Vec<&str> = lab.paths.iter().map(|p| p.client_if.as_str()).collect();
    let mptcp = {
        let _serve = serve(binary, lab)?;
        engine_client(binary, lab, seconds, "mptcp", &all)
    };
    match mptcp {
        Ok(mut fig) => {
            let carrying = fig.subflows.iter().filter(|s| s.1 > 0).count();
            if carrying < all.len() {
                fig.note = Some(format!(
                    "only {carrying} of {} subflows carried data",
                    all.len()
                ));
            }
            Ok(fig)
        }
        Err(e) => {
            println!("    engine MPTCP client failed ({e:#}); falling back to the TCP engine on one path");
            let _serve = serve(binary, lab)?;
            let mut fig = engine_client(binary, lab, seconds, "tcp", &all[..1])?;
            fig.note = Some(format!(
                "NOT MPTCP: the engine's MPTCP client failed ({e:#}); this is the TCP engine, 1 path"
            ));
            Ok(fig)
        }
    }
}

/// (b): the kernel's MPTCP client (the lab's `subflow` endpoint opens the
/// second subflow over path 2) writing to the engine's server.
pub fn kernel_to_engine(binary: &Path, lab: &Lab, seconds: u64) -> Result<Figure> {
    // veth hands the peer CHECKSUM_PARTIAL segments; the engine verifies
    // full checksums as it must on a wire, so the kernel computes them.
    let set_tx = |state: &str| -> Result<()> {
        for p in &lab.paths {
            lab.client
                .exec("ethtool", &["-K", &p.client_if, "tx", state])?;
        }
        Ok(())
    };
    set_tx("off")?;
    let result = (|| -> Result<Figure> {
        let _serve = serve(binary, lab)?;
        let joins_before = lab.client.nstat("MPTcpExtMPJoinSynAckRx").unwrap_or(0);
        let before = client_tx(lab)?;
        let addr = listen_addr(lab);
        let stream = lab
            .client
            .enter(|| mptcp_connect(addr, Duration::from_secs(10)))??;
        let sent = kernel_send(stream, seconds)?;
        let joins = lab
            .client
            .nstat("MPTcpExtMPJoinSynAckRx")
            .unwrap_or(0)
            .saturating_sub(joins_before);
        let mut notes: Vec<String> = sent.stall_note().into_iter().collect();
        if joins == 0 {
            notes.push("the kernel client's MP_JOIN was not answered: one subflow".into());
        }
        Ok(Figure {
            gbps: sent.gbps,
            split: split_since(lab, &before)?,
            subflows: Vec::new(),
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    })();
    set_tx("on")?;
    result
}
