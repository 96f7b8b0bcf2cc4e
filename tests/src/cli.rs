//! The `mptcp-user` binary as a process in a lab namespace: built once per
//! test run, started, and stopped by a guard.
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{wait_until, Lab, LabConfig, Netns};
use serde_json::Value;

/// The `mptcp-user` binary, built once for this test run (the tests crate
/// is not the binary's package, so Cargo does not build it for us) under
/// the test binary's own profile: `cargo test --release` runs a release
/// binary built now, never a stale or missing one of another profile.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        // target/PROFILE_DIR/deps/THIS -> target/PROFILE_DIR/mptcp-user
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "mptcp-user", "--bin", "mptcp-user"])
            .args(["--profile", &profile_name(&profile_dir)])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building mptcp-user failed");
        let bin = profile_dir.join("mptcp-user");
        assert!(bin.exists(), "cargo built no {}", bin.display());
        bin
    })
    .clone()
}

/// The Cargo profile whose output directory is `dir` (`debug` holds `dev`).
fn profile_name(dir: &std::path::Path) -> String {
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(name) => name.to_string(),
    }
}

/// The `mptcp-user` binary built with `--release`, once per test run: scale
/// tests measure a server, and a debug build is many times slower there
/// (hashing, crypto), so it would drop under loads a release build carries.
pub fn release_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "mptcp-user",
                "--bin",
                "mptcp-user",
            ])
            .status()
            .expect("cargo build --release");
        assert!(status.success(), "building mptcp-user --release failed");
        let exe = std::env::current_exe().expect("test exe");
        // target/debug/deps/THIS -> target/release/mptcp-user
        exe.parent()
            .and_then(|d| d.parent())
            .and_then(|d| d.parent())
            .expect("target dir")
            .join("release")
            .join("mptcp-user")
    })
    .clone()
}

/// `mptcp-user` run inside namespace `ns` (`ip netns exec` execs it, so the
/// child's pid is mptcp-user's).
pub fn mptcp_user(ns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(binary());
    cmd
}

/// A running `mptcp-user serve`; SIGTERM and wait on drop.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// stdout then stderr, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// True when an XDP program is attached to `iface` in the lab's server namespace.
pub fn xdp_attached(lab: &Lab, iface: &str) -> bool {
    xdp_attached_in(&lab.server, iface)
}

/// True when an XDP program is attached to `iface` in namespace `ns`.
pub fn xdp_attached_in(ns: &Netns, iface: &str) -> bool {
    ns.ip(&["link", "show", iface])
        .is_ok_and(|s| s.contains("xdp"))
}

/// Starts `mptcp-user serve ARGS` in the lab's server namespace and waits
/// until XDP is attached to every `--iface` it names.
pub fn start_serve(lab: &Lab, args: &[&str]) -> Server {
    start_serve_with(&lab.server, args, mptcp_user(lab.server.name()))
}

/// Like [`start_serve`], with the release build.
pub fn start_serve_release(lab: &Lab, args: &[&str]) -> Server {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab.server.name()])
        .arg(release_binary());
    start_serve_with(&lab.server, args, cmd)
}

/// The release build's `serve ARGS` in namespace `ns` (a topology of the
/// test's own), once XDP is attached to every `--iface`.
pub fn start_serve_release_in(ns: &Netns, args: &[&str]) -> Server {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()]).arg(release_binary());
    start_serve_with(ns, args, cmd)
}

/// `serve` arguments for both server interfaces of the two-path lab,
/// listening on `listen`, then `more`.
pub fn on_both_paths<'a>(listen: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--iface", "srv0", "--iface", "srv1", "--listen", listen];
    args.extend_from_slice(more);
    args
}

/// `serve ARGS` in `ns` run by `cmd` (its binary, environment), once XDP
/// is attached to every `--iface`.
pub fn start_serve_with(ns: &Netns, args: &[&str], mut cmd: Command) -> Server {
    cmd.arg("serve").args(args).stdout(Stdio::null());
    let server = Server(cmd.spawn().expect("spawn serve"));
    let ifs: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--iface")
        .map(|w| w[1])
        .collect();
    assert!(
        wait_until(Duration::from_secs(15), || ifs
            .iter()
            .all(|i| xdp_attached_in(ns, i))),
        "serve never attached XDP"
    );
    server
}

/// A one-path lab without MPTCP subflow endpoints.
pub fn one_path_lab() -> Lab {
    Lab::up(&LabConfig {
        subflow_endpoints: false,
        ..LabConfig::unique(1)
    })
    .expect("lab")
}

/// `mptcp-user ctl --instance PID ARGS` in namespace `ns`.
pub fn ctl(ns: &str, pid: u32, args: &[&str]) -> Output {
    mptcp_user(ns)
        .args(["ctl", "--instance", &pid.to_string()])
        .args(args)
        .output()
        .expect("ctl")
}

/// `ctl --json ARGS`, parsed; panics with ctl's message when it fails.
pub fn ctl_json(ns: &str, pid: u32, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(ns, pid, &all);
    assert!(out.status.success(), "ctl {args:?}: {}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("ctl JSON")
}

/// The `stats --json` line of instance `pid` running in `ns`.
pub fn instance_stats(ns: &Netns, pid: u32) -> Option<Value> {
    let out = mptcp_user(ns.name())
        .args(["stats", "--json"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["pid"] == pid)
}

/// Waits for stats of instance `pid` satisfying `f`; panics with the last
/// ones after `secs`.
pub fn wait_stats(ns: &Netns, pid: u32, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(secs), || {
        if let Some(v) = instance_stats(ns, pid) {
            last = v;
            f(&last)
        } else {
            false
        }
    });
    assert!(ok, "stats never matched: {last}");
    last
}

/// The kernel's MPTCP echo clients (`scripts/echo_clients.py`) in a
/// namespace, pipes attached; killed on drop.
pub struct EchoClients {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl EchoClients {
    /// `n` clients echoing `size` bytes to `to`; with `hold` they stay
    /// open after the echo until [`EchoClients::release`].
    pub fn start(
        ns: &Netns,
        to: std::net::SocketAddr,
        n: usize,
        size: usize,
        hold: bool,
    ) -> EchoClients {
        EchoClients::start_with(
            ns,
            to,
            n,
            size,
            if hold { "--hold" } else { "--concurrent" },
        )
    }

    pub fn start_with(
        ns: &Netns,
        to: std::net::SocketAddr,
        n: usize,
        size: usize,
        mode: &str,
    ) -> EchoClients {
        let mut cmd = ns.command("python3");
        cmd.args(["-c", include_str!("../scripts/echo_clients.py")])
            .arg(to.ip().to_string())
            .arg(to.port().to_string())
            .arg(n.to_string())
            .arg(size.to_string())
            .arg("120")
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("python3");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        EchoClients { child, out }
    }

    /// The next JSON line the clients report.
    pub fn line(&mut self) -> Value {
        crate::json_line(&mut self.out)
    }

    /// Lets held clients close.
    pub fn release(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"close\n").expect("write");
        stdin.flush().expect("flush");
    }
}

impl Drop for EchoClients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mptcp-user load` (release) in the client namespace over `cli0` and
/// `cli1`, with its JSON report.
pub fn run_load(lab: &Lab, to: std::net::SocketAddr, args: &[&str]) -> Value {
    let out = lab
        .client
        .command(release_binary().to_str().expect("path"))
        .arg("load")
        .arg(to.to_string())
        .args(["--iface", "cli0", "--iface", "cli1", "--json"])
        .args(args)
        .output()
        .expect("load");
    let text = output_text(&out);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {text}"))
}
