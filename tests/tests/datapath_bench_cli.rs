//! `connect --reverse` against `serve --mode source` (iperf3 -R: the server
//! generates the data), as processes in the lab's namespaces: count-based and
//! time-based from the engine client, and the source served to a kernel
//! client that speaks the 8-byte request itself.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use mptcp_engine::app::Pattern;
use mptcp_tests::cli::{mptcp_user, one_path_lab, output_text, start_serve, Server};
use mptcp_tests::{require_root, Lab};

fn start_source(lab: &Lab, listen: SocketAddr, ifaces: &[&str]) -> Server {
    let listen = listen.to_string();
    let mut args: Vec<&str> = ifaces.iter().flat_map(|i| ["--iface", i]).collect();
    args.extend(["--listen", &listen, "--mode", "source"]);
    start_serve(lab, &args)
}

fn connect_reverse(lab: &Lab, remote: SocketAddr, amount: &[&str]) -> serde_json::Value {
    let out = mptcp_user(lab.client.name())
        .args([
            "connect",
            &remote.to_string(),
            "--iface",
            "cli0",
            "--reverse",
        ])
        .args(amount)
        .arg("--json")
        .output()
        .expect("connect");
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

#[test]
fn connect_reverse_receives_the_requested_bytes() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5340);
    let _server = start_source(&lab, listen, &["srv0"]);
    // Not a multiple of the segment size or of the pattern's period.
    let bytes: u64 = (24 << 20) + 12_345;
    let report = connect_reverse(&lab, listen, &["--bytes", &bytes.to_string()]);
    let end = &report["end"];
    assert_eq!(end["sum_received"]["bytes"], bytes, "{report}");
    assert_eq!(end["sum_sent"]["bytes"], bytes, "{report}");
    assert_eq!(end["byte_exact"], true, "{report}");
    assert_eq!(report["start"]["test_start"]["reverse"], 1, "{report}");
    assert!(end["sum_received"]["bits_per_second"].as_f64() > Some(0.0));
    let received_by_subflows: u64 = end["subflows"]
        .as_array()
        .expect("subflows")
        .iter()
        .filter_map(|s| s["bytes_received"].as_u64())
        .sum();
    assert!(received_by_subflows >= bytes, "{report}");

    // The same server, again: a second connection gets its own source.
    let again = connect_reverse(&lab, listen, &["--bytes", "1000"]);
    assert_eq!(again["end"]["sum_received"]["bytes"], 1000, "{again}");
}

#[test]
fn connect_reverse_for_a_time_stops_the_server() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5341);
    let _server = start_source(&lab, listen, &["srv0"]);
    let report = connect_reverse(&lab, listen, &["--time", "1"]);
    let end = &report["end"];
    let received = end["sum_received"]["bytes"].as_u64().expect("bytes");
    // Conditions, not a rate: data came, byte-exact, and the run lasted the
    // second it was asked for (it stopped by time, not by running dry).
    assert!(received > 0, "{report}");
    assert_eq!(end["byte_exact"], true, "{report}");
    let seconds = end["sum_received"]["seconds"].as_f64().expect("seconds");
    assert!(seconds >= 1.0, "stopped after {seconds} s: {report}");
    assert!(!report["intervals"]
        .as_array()
        .expect("intervals")
        .is_empty());
}

#[test]
fn source_mode_serves_a_kernel_client() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    // The engine checks full checksums; veth would hand it partial ones.
    lab.client
        .exec("ethtool", &["-K", "cli0", "tx", "off"])
        .expect("ethtool");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5342);
    let _server = start_source(&lab, listen, &["srv0"]);
    let bytes: u64 = 3 << 20;
    let received = lab
        .client
        .enter(|| {
            let mut s =
                TcpStream::connect_timeout(&listen, Duration::from_secs(5)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            s.write_all(&bytes.to_be_bytes()).expect("request");
            let mut back = Vec::new();
            s.read_to_end(&mut back)
                .expect("read until the server closes");
            let _ = s.shutdown(Shutdown::Write);
            back
        })
        .expect("client ns");
    assert_eq!(received.len() as u64, bytes);
    let bad = received
        .iter()
        .enumerate()
        .position(|(i, b)| *b != Pattern::STREAM.byte(i as u64));
    assert_eq!(bad, None, "first byte off the pattern");
}
