//! The `mptcp-user` binary as a process in a lab namespace: built once per
//! test run, started, and stopped by a guard.
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::OnceLock;

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
