//! `cargo xtask experiment-five`: the seed blog's "experiment five"
//! (mptcptrace demo) with real peers. Two 4 Mbit/s paths through
//! `mptcp-user emulate`, 10 ms and 40 ms round trip; from 5 s to 15 s the
//! first has 100 ms and 10% loss. The engine (`serve --mode source
//! --scheduler round-robin`) sends to a kernel MPTCP client; the capture is
//! taken in the emulator's namespace on the server-side ports (the
//! sender's view, as mptcptrace wants it) and traced with `mptcp-user trace`.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mptcp_tests::{mptcp_connect, unique_name, wait_until, Lab, LabConfig};

pub const PATHS: [&str; 2] = [
    "rate=4mbit,delay=10ms;at=5s,delay=100ms,loss=10%;at=15s,delay=10ms,loss=0%",
    "rate=4mbit,delay=40ms",
];

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (tcpdump flushes on SIGTERM).
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

pub fn run(binary: &Path, out: &Path, bytes: u64) -> Result<()> {
    crate::require_root("cargo xtask experiment-five")?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let lab = Lab::up(&LabConfig {
        prefix: unique_name("mptcp-exp5"),
        paths: 2,
        qdisc: Vec::new(),
        subflow_endpoints: true,
        emulate: PATHS.iter().map(|s| Some(s.to_string())).collect(),
        emulator_binary: Some(binary.to_path_buf()),
        // Time 0 is the connection's SYN, as in the blog's runs.
        emulator_args: vec!["--clock-from-syn".into()],
        queues: 0,
    })?;
    let emu = lab.emu.as_ref().context("emulator namespace")?;
    println!("experiment five: paths {PATHS:?}, {bytes} bytes, engine -> kernel");
    let mut captures = Vec::new();
    let mut parts = Vec::new();
    for port in ["s0", "s1"] {
        let file = out.join(format!("capture-{port}.pcap"));
        let child = emu
            .command("tcpdump")
            .args(["-i", port, "-s", "200", "-B", "16384", "-U", "-w"])
            .arg(&file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("tcpdump")?;
        captures.push(Stop(child));
        parts.push(file);
    }
    if !wait_until(Duration::from_secs(5), || {
        parts
            .iter()
            .all(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    }) {
        bail!("tcpdump did not start");
    }
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5201);
    let serve = lab
        .server
        .command(&binary.to_string_lossy())
        .args(["serve", "--iface", "srv0", "--iface", "srv1", "--listen"])
        .arg(listen.to_string())
        .args(["--mode", "source", "--scheduler", "round-robin"])
        .stdout(Stdio::null())
        .spawn()
        .context("serve")?;
    let serve = Stop(serve);
    if !wait_until(Duration::from_secs(15), || {
        ["srv0", "srv1"].iter().all(|i| {
            lab.server
                .ip(&["link", "show", i])
                .is_ok_and(|s| s.contains("xdp"))
        })
    }) {
        bail!("serve never attached XDP");
    }
    let started = Instant::now();
    let received = lab.client.enter(|| -> Result<u64> {
        let mut s = mptcp_connect(listen, Duration::from_secs(60))?;
        s.write_all(&bytes.to_be_bytes())?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        Ok(n)
    })??;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "kernel client received {received} bytes in {secs:.1} s ({:.2} Mbit/s)",
        received as f64 * 8.0 / secs / 1e6
    );
    if received != bytes {
        bail!("received {received} of {bytes} bytes");
    }
    drop(serve);
    drop(captures);
    let merged = out.join("capture.pcap");
    crate::run_cmd(
        Command::new("mergecap")
            .arg("-F")
            .arg("pcap")
            .arg("-w")
            .arg(&merged)
            .args(&parts),
    )?;
    for p in &parts {
        let _ = std::fs::remove_file(p);
    }
    crate::run_cmd(
        Command::new(binary)
            .arg("trace")
            .arg(&merged)
            .arg("--out")
            .arg(out),
    )?;
    for svg in ["sequence", "goodput", "unacked"] {
        let src = out.join(format!("{svg}.svg"));
        let png = out.join(format!("{svg}.png"));
        // librsvg renders plotters' SVG faithfully; ImageMagick's own
        // renderer fills polylines, so it is the fallback (Debian's binary
        // after PATH's, which a stand-in may shadow).
        let _ = std::fs::remove_file(&png);
        let rsvg = Command::new("rsvg-convert")
            .arg("-b")
            .arg("white")
            .arg("-o")
            .arg(&png)
            .arg(&src)
            .output()
            .is_ok_and(|o| o.status.success());
        let made = (rsvg && png.exists())
            || ["convert", "/usr/bin/convert"].iter().any(|c| {
                let _ = std::fs::remove_file(&png);
                Command::new(c)
                    .arg(&src)
                    .arg(&png)
                    .output()
                    .is_ok_and(|o| o.status.success())
                    && std::fs::metadata(&png).is_ok_and(|m| m.len() > 0)
            });
        if made {
            println!("wrote {}", png.display());
        } else {
            println!("no PNG for {svg}.svg (neither rsvg-convert nor ImageMagick's convert is installed)");
        }
    }
    Ok(())
}
