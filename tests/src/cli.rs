//! The `mptcp-user` binary as a process in a lab namespace: built once per
//! test run, started, and stopped by a guard.
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{wait_until, Lab, LabConfig};

/// The `mptcp-user` binary, built once for this test run (the tests crate
/// is not the binary's package, so Cargo does not build it for us).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "mptcp-user", "--bin", "mptcp-user"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building mptcp-user failed");
        let exe = std::env::current_exe().expect("test exe");
        // target/debug/deps/THIS -> target/debug/mptcp-user
        exe.parent()
            .and_then(|d| d.parent())
            .expect("target dir")
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
    lab.server
        .ip(&["link", "show", iface])
        .is_ok_and(|s| s.contains("xdp"))
}

/// Starts `mptcp-user serve ARGS` in the lab's server namespace and waits
/// until XDP is attached to every `--iface` it names.
pub fn start_serve(lab: &Lab, args: &[&str]) -> Server {
    let mut cmd = mptcp_user(lab.server.name());
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
            .all(|i| xdp_attached(lab, i))),
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
