//! The datapath part of `cargo xtask run`: `mptcp-user serve` (echo) on
//! every server interface of the lab, a kernel MPTCP client (a socket with
//! protocol 262) sending a pattern through it, the throughput per subflow
//! as the kernel sees it (`ss -Mi`/`ss -ti`), the total, and a byte-exact check.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr},
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mptcp_tests::{mptcp_connect, wait_until, Lab};

const PORT: u16 = 5320;
const BYTES: usize = 64 << 20;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; SIGTERM detaches XDP cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn pattern(offset: usize) -> u8 {
    mptcp_engine::app::Pattern::STREAM.byte(offset as u64)
}

pub fn run(binary: &Path, lab: &Lab) -> Result<()> {
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), PORT);
    let mut cmd = lab.server.command(&binary.to_string_lossy());
    cmd.args(["serve", "--listen", &listen.to_string(), "--mode", "echo"]);
    for p in &lab.paths {
        cmd.args(["--iface", &p.server_if]);
        // The engine checks full TCP checksums; veth would pass partial ones.
        lab.client
            .exec("ethtool", &["-K", &p.client_if, "tx", "off"])?;
    }
    println!("\n== the datapath: mptcp-user serve --mode echo on every server interface ==");
    let _serve = Serve(
        cmd.stdout(Stdio::null())
            .spawn()
            .context("mptcp-user serve")?,
    );
    let attached = || {
        lab.paths.iter().all(|p| {
            lab.server
                .ip(&["link", "show", &p.server_if])
                .is_ok_and(|s| s.contains("xdp"))
        })
    };
    if !wait_until(Duration::from_secs(15), attached) {
        bail!("mptcp-user serve did not attach");
    }
    // Generated before the clock starts (xtask is a debug build).
    let data: Vec<u8> = (0..BYTES).map(pattern).collect();
    let mut started = Instant::now();
    let (back, subflows) = lab.client.enter(|| -> Result<(Vec<u8>, String)> {
        let stream = mptcp_connect(listen, Duration::from_secs(30))?;
        let mut writer = stream.try_clone()?;
        started = Instant::now();
        let sender = thread::spawn(move || -> std::io::Result<()> {
            writer.write_all(&data)?;
            writer.shutdown(Shutdown::Write)
        });
        let mut reader = stream;
        let mut back = Vec::with_capacity(BYTES);
        let mut buf = vec![0u8; 1 << 20];
        let mut subflows = String::new();
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            back.extend_from_slice(&buf[..n]);
            if subflows.is_empty() && back.len() > BYTES / 2 {
                subflows = lab
                    .client
                    .exec("ss", &["-tinH", "dport", "=", &PORT.to_string()])
                    .unwrap_or_default();
            }
        }
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        Ok((back, subflows))
    })??;
    let secs = started.elapsed().as_secs_f64();
    let data_ok = |i: usize, b: &u8| *b == pattern(i);
    println!("kernel's view of the connection mid-transfer (ss -ti):");
    for line in subflows.lines() {
        println!("  | {}", line.trim());
    }
    let exact = back.len() == BYTES && back.iter().enumerate().all(|(i, b)| data_ok(i, b));
    println!(
        "echoed {} of {BYTES} bytes in {secs:.2} s: {:.2} Gbit/s each way; byte-exact: {}",
        back.len(),
        BYTES as f64 * 8.0 / secs / 1e9,
        if exact { "yes" } else { "NO" }
    );
    let stats = lab
        .server
        .exec(&binary.to_string_lossy(), &["stats", "--json"])
        .unwrap_or_default();
    if let Some(line) = stats.lines().next() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        println!(
            "classifier: {} redirected to AF_XDP, {} passed to the kernel; worker: {} frames in, {} out",
            v["classifier"]["redirected"], v["classifier"]["passed"], v["worker"]["rx_frames"],
            v["worker"]["tx_frames"]
        );
    }
    for p in &lab.paths {
        lab.client
            .exec("ethtool", &["-K", &p.client_if, "tx", "on"])?;
    }
    if !exact {
        bail!("the echo differs from what was sent");
    }
    Ok(())
}
