//! The front ends people deploy, against stock clients in the lab's
//! namespaces: `serve --mode iperf3` measured by a stock `iperf3 -c` under
//! `mptcpize run`; `serve --mode socks5` used by curl; `serve --mode
//! convert` used by a kernel MPTCP client sending RFC 8803 messages in its
//! SYN; and the client sides (`connect --iperf3`, `connect --via-convert`).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use mptcp_tests::cli::{mptcp_user, output_text, xdp_attached, Server};
use mptcp_tests::{require_root, unique_name, wait_until, Lab, LabConfig};

/// `serve ARGS` in the server namespace with its stderr kept in a file.
struct Logged {
    _server: Server,
    log: PathBuf,
}

impl Logged {
    fn start(lab: &Lab, args: &[&str]) -> Logged {
        let log = std::env::temp_dir().join(unique_name("serve-log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = mptcp_user(lab.server.name());
        cmd.arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(file);
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
        Logged {
            _server: server,
            log,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `needle` and returns it.
    fn line(&self, needle: &str) -> String {
        let mut found = None;
        wait_until(Duration::from_secs(10), || {
            found = self
                .text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no log line with {needle:?}:\n{}", self.text()))
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The number after `word` in `line` ("received 123 bytes" -> 123).
fn number_after(line: &str, word: &str) -> u64 {
    let rest = line
        .split(word)
        .nth(1)
        .unwrap_or_else(|| panic!("{word:?} not in {line:?}"));
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
}

fn two_path_lab() -> Lab {
    Lab::up(&LabConfig::unique(2)).expect("lab")
}

/// A stock iperf3 client under `mptcpize run` in the client namespace.
fn iperf3_client(lab: &Lab, server: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.client.name(),
            "mptcpize",
            "run",
            "iperf3",
        ])
        .args([
            "-c",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .args(["--json", "--get-server-output"])
        .args(args)
        .output()
        .expect("iperf3");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}\n{}", output_text(&out)));
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(report.get("error").is_none(), "{report}");
    report
}

fn serve_iperf3(lab: &Lab, port: u16) -> (Logged, SocketAddr) {
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let l = listen.to_string();
    let server = Logged::start(
        lab,
        &[
            "--iface", "srv0", "--iface", "srv1", "--listen", &l, "--mode", "iperf3",
        ],
    );
    (server, listen)
}

/// Per-subflow figures of the server's results, as the client shows them.
fn server_subflows(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["server_output_json"]["end"]["subflows"]
        .as_array()
        .unwrap_or_else(|| panic!("no server subflows in {report}"))
        .clone()
}

#[test]
fn iperf3_client_forward_byte_bounded_matches_the_engine() {
    if !require_root() {
        return;
    }
    let lab = two_path_lab();
    let (server, listen) = serve_iperf3(&lab, 5401);
    let bytes: u64 = 64 << 20;
    let report = iperf3_client(&lab, listen, &["-n", &bytes.to_string()]);
    // iperf3 sends whole 128 KiB blocks until it has sent at least -n.
    let sent = bytes.div_ceil(128 << 10) * (128 << 10);
    let end = &report["end"];
    assert_eq!(end["sum_sent"]["bytes"], sent, "{end}");
    assert_eq!(end["sum_received"]["bytes"], sent, "{end}");
    let line = server.line("iperf3 test 1 done");
    assert_eq!(number_after(&line, "received"), sent, "{line}");
    // The engine's own count: subflow payload = the data and the cookie.
    assert_eq!(
        number_after(&line, "subflows received"),
        sent + 37,
        "{line}"
    );
    let subflows = server_subflows(&report);
    let with_data = subflows
        .iter()
        .filter(|s| s["bytes_received"].as_u64() > Some(1 << 20))
        .count();
    assert!(with_data >= 2, "both paths carry data: {subflows:?}");
    let sum: u64 = subflows
        .iter()
        .map(|s| s["bytes_received"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, sent + 37);
}

#[test]
fn iperf3_client_reverse_and_parallel() {
    if !require_root() {
        return;
    }
    let lab = two_path_lab();
    let (server, listen) = serve_iperf3(&lab, 5402);
    // -R, byte-bounded: the engine sends exactly the budget.
    let bytes: u64 = 32 << 20;
    let report = iperf3_client(&lab, listen, &["-R", "-n", &bytes.to_string()]);
    assert_eq!(report["start"]["test_start"]["reverse"], 1);
    let end = &report["end"];
    assert_eq!(end["sum_sent"]["bytes"], bytes, "{end}");
    assert_eq!(end["sum_received"]["bytes"], bytes, "{end}");
    let line = server.line("iperf3 test 1 done");
    assert_eq!(number_after(&line, "sent"), bytes, "{line}");
    // -P 4, by time.
    let report = iperf3_client(&lab, listen, &["-P", "4", "-t", "2"]);
    let streams = report["end"]["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 4, "{report}");
    let line = server.line("iperf3 test 2 done");
    let received = number_after(&line, "received");
    assert_eq!(report["end"]["sum_received"]["bytes"], received, "{line}");
    assert!(received > 1 << 20, "{line}");
    for s in streams {
        assert!(s["receiver"]["bytes"].as_u64() > Some(0), "{s}");
    }
    // -R -P 4 by time: each stream sends.
    let report = iperf3_client(&lab, listen, &["-R", "-P", "4", "-t", "2"]);
    let line = server.line("iperf3 test 3 done");
    assert_eq!(
        report["end"]["sum_sent"]["bytes"],
        number_after(&line, "sent"),
        "{line}"
    );
    assert!(report["end"]["sum_received"]["bytes"].as_u64() > Some(1 << 20));
    // --bidir: both directions at once.
    let report = iperf3_client(&lab, listen, &["--bidir", "-t", "2"]);
    let line = server.line("iperf3 test 4 done");
    let end = &report["end"];
    assert_eq!(
        end["sum_received"]["bytes"],
        number_after(&line, "received"),
        "{line}"
    );
    assert_eq!(
        end["sum_sent_bidir_reverse"]["bytes"],
        number_after(&line, "sent"),
        "{line}"
    );
    assert!(
        end["sum_received_bidir_reverse"]["bytes"].as_u64() > Some(1 << 20),
        "{end}"
    );
}
