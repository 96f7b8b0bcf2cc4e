//! `cargo xtask bench`: kernel-to-kernel throughput over the lab, without and
//! with the XDP classifier on every veth (the constraint our datapath has:
//! XDP on a veth turns off GSO/TSO on its peer). Figures, never asserts.
//! The engine's datapath benchmark arrives with the AF_XDP driver.
use std::{
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use mptcp_tests::{unique_name, wait_until, Lab, LabConfig, Netns};

use crate::demo::Classify;

const IPERF_PORT: u16 = 5201;
/// Owned by the classifier so it parses every segment, but carries no traffic:
/// every frame takes the full parse and is passed.
const UNUSED_PORT: u16 = 9;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // iperf3 -1 exits after one test; kill covers a failed run.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listening(ns: &Netns, port: u16) -> bool {
    ns.exec("ss", &["-Hltn", &format!("sport = :{port}")])
        .is_ok_and(|out| !out.trim().is_empty())
}

/// One iperf3 run; returns Gbit/s received.
fn iperf(lab: &Lab, mptcp: bool, seconds: u64) -> Result<f64> {
    let wrap = |ns: &Netns| {
        let mut cmd = ns.command(if mptcp { "mptcpize" } else { "iperf3" });
        if mptcp {
            cmd.args(["run", "iperf3"]);
        }
        cmd
    };
    let server = wrap(&lab.server)
        .args(["-s", "-1", "-p", &IPERF_PORT.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    let _server = Server(server);
    if !wait_until(Duration::from_secs(10), || {
        listening(&lab.server, IPERF_PORT)
    }) {
        bail!("iperf3 server did not listen");
    }
    let out = wrap(&lab.client)
        .args(["-c", &lab.paths[0].server_v4.to_string()])
        .args([
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .output()
        .context("running iperf3 -c")?;
    if !out.status.success() {
        bail!("iperf3 -c failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .context("iperf3 JSON without end.sum_received.bits_per_second")
}

pub fn run(binary: &Path, seconds: u64) -> Result<()> {
    crate::require_root("cargo xtask bench")?;
    let lab = Lab::up(&LabConfig {
        prefix: unique_name("mptcp-bench"),
        paths: 2,
        qdisc: Vec::new(),
        subflow_endpoints: true,
    })?;
    println!(
        "bench: kernel to kernel over {} veth paths, MTU 1500, iperf3 {seconds} s each",
        lab.paths.len()
    );
    let plain_mptcp = iperf(&lab, true, seconds)?;
    let plain_tcp = iperf(&lab, false, seconds)?;
    let client_ifs: Vec<&str> = lab.paths.iter().map(|p| p.client_if.as_str()).collect();
    let server_ifs: Vec<&str> = lab.paths.iter().map(|p| p.server_if.as_str()).collect();
    let client_xdp = Classify::start(binary, &lab.client, &client_ifs, UNUSED_PORT, false)?;
    let server_xdp = Classify::start(binary, &lab.server, &server_ifs, UNUSED_PORT, false)?;
    let xdp_mptcp = iperf(&lab, true, seconds)?;
    let xdp_tcp = iperf(&lab, false, seconds)?;
    client_xdp.stop()?;
    server_xdp.stop()?;
    println!("                          no XDP      classifier on every veth");
    println!("  MPTCP, 2 subflows   {plain_mptcp:8.2} Gbit/s   {xdp_mptcp:8.2} Gbit/s");
    println!("  TCP, 1 flow         {plain_tcp:8.2} Gbit/s   {xdp_tcp:8.2} Gbit/s");
    println!(
        "  MPTCP / TCP         {:8.2}          {:8.2}",
        plain_mptcp / plain_tcp,
        xdp_mptcp / xdp_tcp
    );
    crate::datapath_bench::run(binary, &lab, seconds, xdp_tcp)?;
    Ok(())
}
