//! The AF_XDP datapath's part of `cargo xtask bench`: the engine behind
//! XDP + AF_XDP on the server side, against the engine (`mptcp-user
//! connect`) and against a kernel TCP sender, on path 1 of the same lab.
//! Figures and ratios to kernel-to-kernel; never asserts.
use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mptcp_tests::{wait_until, Lab};

const PORT: u16 = 5310;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; SIGTERM detaches XDP cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn serve(binary: &Path, lab: &Lab, listen: SocketAddr) -> Result<Serve> {
    let iface = &lab.paths[0].server_if;
    let child = lab
        .server
        .command(&binary.to_string_lossy())
        .args(["serve", "--iface", iface, "--listen", &listen.to_string()])
        .args(["--mode", "discard"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mptcp-user serve")?;
    let serve = Serve(child);
    if !wait_until(Duration::from_secs(15), || {
        lab.server
            .ip(&["link", "show", iface])
            .is_ok_and(|s| s.contains("xdp"))
    }) {
        bail!("mptcp-user serve did not attach");
    }
    Ok(serve)
}

/// Engine client (`connect --time`) to the engine server: Gbit/s sent.
fn engine_to_engine(binary: &Path, lab: &Lab, listen: SocketAddr, seconds: u64) -> Result<f64> {
    let _serve = serve(binary, lab, listen)?;
    let out = lab
        .client
        .command(&binary.to_string_lossy())
        .args([
            "connect",
            &listen.to_string(),
            "--iface",
            &lab.paths[0].client_if,
        ])
        .args(["--time", &seconds.to_string(), "--json"])
        .output()
        .context("mptcp-user connect")?;
    if !out.status.success() {
        bail!("connect failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("connect JSON")?;
    report["end"]["sum_sent"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("no end.sum_sent.bits_per_second")
}

/// A kernel TCP sender to the engine server: Gbit/s written.
fn kernel_to_engine(binary: &Path, lab: &Lab, listen: SocketAddr, seconds: u64) -> Result<f64> {
    let client_if = &lab.paths[0].client_if;
    // The engine wants full checksums; veth would hand it partial ones.
    lab.client
        .exec("ethtool", &["-K", client_if, "tx", "off"])?;
    let _serve = serve(binary, lab, listen)?;
    let result = lab.client.enter(|| -> Result<f64> {
        let mut s = TcpStream::connect_timeout(&listen, Duration::from_secs(5))?;
        let chunk = vec![0x5au8; 1 << 20];
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(seconds) {
            s.write_all(&chunk)?;
            sent += chunk.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9)
    })?;
    lab.client.exec("ethtool", &["-K", client_if, "tx", "on"])?;
    result
}

/// Prints the engine's figures next to kernel-to-kernel single TCP (with the
/// pass-through classifier on every veth).
pub fn run(binary: &Path, lab: &Lab, seconds: u64, kernel_tcp_xdp: f64) -> Result<()> {
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), PORT);
    println!(
        "engine (XDP driver mode + AF_XDP copy mode on veth), plain TCP, 1 path, {seconds} s:"
    );
    let e2e = engine_to_engine(binary, lab, listen, seconds)?;
    let k2e = kernel_to_engine(binary, lab, listen, seconds)?;
    println!("  engine client -> engine server   {e2e:8.2} Gbit/s   {:5.2} x kernel-to-kernel TCP with XDP", e2e / kernel_tcp_xdp);
    println!("  kernel client -> engine server   {k2e:8.2} Gbit/s   {:5.2} x kernel-to-kernel TCP with XDP", k2e / kernel_tcp_xdp);
    println!("  (kernel client: TX checksum offload off on its veth, so it checksums in software)");
    Ok(())
}
