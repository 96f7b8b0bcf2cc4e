//! `cargo xtask run` without arguments: the classifier on the server side of
//! a two-path lab, with kernel MPTCP traffic to an owned and a non-owned port.
use std::{
    io::{BufRead, BufReader, Write},
    net::IpAddr,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Stdio},
};

use anyhow::{bail, Context, Result};
use mptcp_tests::{lab_transfer, unique_name, Lab, LabConfig, Netns};

const OWNED_PORT: u16 = 8080;
const OTHER_PORT: u16 = 9090;
const BYTES: usize = 4 << 20;

/// A running `mptcp-user classify --stdin-reports`.
pub struct Classify {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    echo: bool,
}

impl Classify {
    /// Attaches to `ifaces` inside `ns`, owning `port` on their addresses.
    pub fn start(
        binary: &Path,
        ns: &Netns,
        ifaces: &[&str],
        port: u16,
        echo: bool,
    ) -> Result<Classify> {
        let mut cmd = ns.command(&binary.to_string_lossy());
        cmd.arg("classify");
        for iface in ifaces {
            cmd.args(["--iface", iface]);
        }
        cmd.args(["--port", &port.to_string(), "--stdin-reports"]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting mptcp-user classify")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("no pipes to mptcp-user");
        };
        let mut classify = Classify {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            echo,
        };
        // Attached once it has said what it owns.
        classify.echo_until(|l| l.starts_with("owned:"))?;
        Ok(classify)
    }

    fn echo_until(&mut self, last: impl Fn(&str) -> bool) -> Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("mptcp-user classify ended early ({:?})", self.child.wait()?);
            }
            if self.echo {
                print!("  | {line}");
            }
            if last(line.trim_end()) {
                return Ok(());
            }
        }
    }

    /// Prints the counters since the previous report under `title`.
    pub fn report(&mut self, title: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("classify already stopped")?;
        writeln!(stdin, "{title}")?;
        stdin.flush()?;
        self.echo_until(str::is_empty)
    }

    pub fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        self.echo_until(|l| l == "detached")?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("mptcp-user classify exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Classify {
    fn drop(&mut self) {
        // Only if stop() was not reached: closing stdin ends it; make sure.
        if self.stdin.take().is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn run(binary: &Path) -> Result<()> {
    crate::require_root("cargo xtask run (the demo)")?;
    let lab = Lab::up(&LabConfig {
        prefix: unique_name("mptcp-run"),
        paths: 2,
        qdisc: Vec::new(),
        subflow_endpoints: true,
        emulate: Vec::new(),
        emulator_binary: None,
        emulator_args: Vec::new(),
        queues: 0,
    })?;
    println!(
        "lab: {} <-> {} over {} veth paths; client endpoints open a subflow per extra path",
        lab.client.name(),
        lab.server.name(),
        lab.paths.len()
    );
    let server_ifs: Vec<&str> = lab.paths.iter().map(|p| p.server_if.as_str()).collect();
    let mut classify = Classify::start(binary, &lab.server, &server_ifs, OWNED_PORT, true)?;
    let v4 = IpAddr::V4(lab.paths[0].server_v4);
    let v6 = IpAddr::V6(lab.paths[0].server_v6);
    let phases = [
        (
            v4,
            OTHER_PORT,
            false,
            "kernel MPTCP to a non-owned port (IPv4): all passed",
        ),
        (
            v4,
            OWNED_PORT,
            true,
            "kernel MPTCP to the owned port (IPv4, 2 subflows): steered",
        ),
        (
            v6,
            OWNED_PORT,
            false,
            "kernel MPTCP to the owned port (IPv6): steered",
        ),
    ];
    for (addr, port, join, title) in phases {
        let n = lab_transfer(&lab, addr, port, BYTES, join)?;
        println!("transfer to {addr} port {port}: {n} bytes delivered");
        classify.report(title)?;
    }
    println!(
        "In this classifier-only phase no AF_XDP socket is bound, so steered segments \
         fall back to the kernel (\"owned, no sock\"); next, the datapath binds them."
    );
    classify.stop()?;
    crate::datapath_demo::run(binary, &lab)?;
    Ok(())
}
