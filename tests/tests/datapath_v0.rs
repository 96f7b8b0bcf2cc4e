//! MPTCP v0 (RFC 6824) through the real datapath (XDP + AF_XDP on veth):
//! - engine v0 client to engine v0 server over two paths, 64 MiB echoed
//!   byte-exact with a join and a path learnt from ADD_ADDR; tcpdump in a
//!   middle namespace (the engines' own veths hide AF_XDP traffic from
//!   taps) captures both paths, and every segment passes `decode --verify`;
//!   tshark's own v0 derivations agree with the engines' keys;
//! - `connect --mptcp-version auto`: v1 with the kernel's MPTCP server
//!   (v1 only), v0 after a v1 attempt with `serve --mptcp-versions 0`,
//!   and straight v0 the next time from `--version-cache`.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use mptcp_engine::crypto::Version;
use mptcp_tests::cli::{binary, mptcp_user, one_path_lab, output_text, xdp_attached, Server};
use mptcp_tests::{require_root, unique_name, wait_until, Netns};

/// Client and server namespaces joined per path through a bridge in a
/// middle namespace, where tcpdump sees every frame of both directions.
struct BridgedLab {
    client: Netns,
    server: Netns,
    middle: Netns,
}

fn bridged_lab(paths: u8) -> BridgedLab {
    let prefix = unique_name("v0");
    let client = Netns::create(&format!("{prefix}-c")).expect("netns");
    let server = Netns::create(&format!("{prefix}-s")).expect("netns");
    let middle = Netns::create(&format!("{prefix}-m")).expect("netns");
    for i in 0..paths {
        let (mc, ms, br) = (format!("mc{i}"), format!("ms{i}"), format!("br{i}"));
        let (cli, srv) = (format!("cli{i}"), format!("srv{i}"));
        client
            .ip(&["link", "add", &cli, "type", "veth", "peer", "name", &mc])
            .expect("veth");
        client
            .ip(&["link", "set", &mc, "netns", middle.name()])
            .expect("move");
        server
            .ip(&["link", "add", &srv, "type", "veth", "peer", "name", &ms])
            .expect("veth");
        server
            .ip(&["link", "set", &ms, "netns", middle.name()])
            .expect("move");
        middle
            .ip(&["link", "add", &br, "type", "bridge"])
            .expect("bridge");
        for port in [&mc, &ms] {
            middle
                .ip(&["link", "set", port, "master", &br])
                .expect("enslave");
        }
        for dev in [&mc, &ms, &br] {
            middle.ip(&["link", "set", dev, "up"]).expect("up");
        }
        client
            .ip(&["addr", "add", &format!("10.110.{i}.1/24"), "dev", &cli])
            .expect("addr");
        server
            .ip(&["addr", "add", &format!("10.110.{i}.2/24"), "dev", &srv])
            .expect("addr");
        client.ip(&["link", "set", &cli, "up"]).expect("up");
        server.ip(&["link", "set", &srv, "up"]).expect("up");
    }
    BridgedLab {
        client,
        server,
        middle,
    }
}

/// `mptcp-user serve ARGS` in `ns`, once XDP is on every `--iface`.
fn serve_in(ns: &Netns, args: &[&str]) -> Server {
    let mut cmd = mptcp_user(ns.name());
    cmd.arg("serve").args(args).stdout(Stdio::null());
    let server = Server(cmd.spawn().expect("spawn serve"));
    let ifs: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--iface")
        .map(|w| w[1])
        .collect();
    let attached = |i: &str| ns.ip(&["link", "show", i]).is_ok_and(|s| s.contains("xdp"));
    assert!(
        wait_until(Duration::from_secs(15), || ifs.iter().all(|i| attached(i))),
        "serve never attached XDP"
    );
    server
}

/// tcpdump on `iface` of `ns` into `file`, stopped (SIGINT, by pid) and
/// awaited on `stop`, which returns its closing report (with the count of
/// packets the kernel dropped before tcpdump saw them).
struct Tcpdump(Child, Option<thread::JoinHandle<String>>);

impl Tcpdump {
    fn start(ns: &Netns, iface: &str, file: &std::path::Path) -> Tcpdump {
        let child = Command::new("ip")
            // A large buffer: the capture must keep up with 64 MiB each way.
            .args([
                "netns",
                "exec",
                ns.name(),
                "tcpdump",
                "-B",
                "131072",
                "-U",
                "-i",
                iface,
            ])
            .args(["-w", file.to_str().unwrap(), "tcp"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // It is listening once it says so on stderr.
        let mut t = Tcpdump(child, None);
        let mut err = t.0.stderr.take().unwrap();
        let mut seen = Vec::new();
        let mut b = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("listening") {
            let n = err.read(&mut b).expect("tcpdump stderr");
            assert!(n > 0, "tcpdump ended: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&b[..n]);
        }
        // Keep draining stderr so tcpdump never blocks on it.
        t.1 = Some(thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            rest
        }));
        t
    }

    /// Stops it; returns how many packets the kernel dropped.
    fn stop(mut self) -> u64 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
        let report = self
            .1
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        report
            .lines()
            .find_map(|l| {
                l.strip_suffix(" packets dropped by kernel")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("tcpdump's report lacks its drop count: {report}"))
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        // SAFETY: our own child; no effect once it was reaped by stop().
        if self.0.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

fn connect_json(ns: &Netns, remote: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "timeout", "300"])
        .arg(binary())
        .args(["connect", &remote.to_string(), "--json"])
        .args(args)
        .output()
        .expect("connect");
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn assert_byte_exact(report: &serde_json::Value, bytes: u64) {
    let end = &report["end"];
    assert_eq!(end["sum_sent"]["bytes"], bytes, "{report}");
    assert_eq!(end["sum_received"]["bytes"], bytes, "{report}");
    assert_eq!(end["byte_exact"], true, "{report}");
}

#[test]
fn v0_engine_to_engine_over_two_paths_every_segment_verified() {
    if !require_root() {
        return;
    }
    let lab = bridged_lab(2);
    let listen = "10.110.0.2:5410";
    let _server = serve_in(
        &lab.server,
        &[
            "--iface",
            "srv0",
            "--iface",
            "srv1",
            "--listen",
            listen,
            "--announce",
            "10.110.1.2",
            "--mptcp-versions",
            "0",
            "--checksum",
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let caps: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("br{i}.pcap")))
        .collect();
    let dumps: Vec<Tcpdump> = caps
        .iter()
        .enumerate()
        .map(|(i, f)| Tcpdump::start(&lab.middle, &format!("br{i}"), f))
        .collect();
    let bytes: u64 = 64 << 20;
    let report = connect_json(
        &lab.client,
        listen.parse().unwrap(),
        &[
            "--iface",
            "cli0",
            "--iface",
            "cli1",
            "--mptcp-version",
            "0",
            "--checksum",
            "--bytes",
            &bytes.to_string(),
        ],
    );
    // tcpdump may still be reading its buffer (SIGINT would end it there):
    // wait until the files (written per packet, -U) stop growing.
    let size = || {
        caps.iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    let mut last = (size(), std::time::Instant::now());
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = size();
            if now != last.0 {
                last = (now, std::time::Instant::now());
            }
            // Longer than libpcap's 1 s block timeout: the ring's last,
            // partly filled block reaches the file only when it expires.
            last.1.elapsed() >= Duration::from_millis(1500)
        }),
        "the capture never settled"
    );
    let kernel_drops: u64 = dumps.into_iter().map(Tcpdump::stop).sum();
    assert_byte_exact(&report, bytes);
    assert_eq!(report["start"]["mptcp_version"], 0, "{report}");
    // The announced address (path 1's server side) carried data.
    let learnt = report["end"]["subflows"]
        .as_array()
        .expect("subflows")
        .iter()
        .filter(|s| {
            s["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("10.110.1.2:"))
        })
        .map(|s| s["bytes_sent"].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(
        learnt > 0,
        "nothing went to the ADD_ADDR-learnt address: {report}"
    );

    let merged = dir.path().join("both.pcap");
    let st = Command::new("mergecap")
        .arg("-w")
        .arg(&merged)
        .args(&caps)
        .status()
        .expect("mergecap (wireshark-common, with tshark)");
    assert!(st.success());
    let out = Command::new(binary())
        .args(["decode", "--verify", "--json"])
        .arg(&merged)
        .output()
        .expect("decode");
    assert!(out.status.success(), "decode --verify failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(
        lines.iter().all(|l| l.get("error").is_none()),
        "malformed frames in the capture"
    );
    let segments = lines
        .iter()
        .filter(|l| l.get("frame").is_some() && l.get("check").is_none())
        .count();
    let summary = &lines.last().expect("summary")["summary"];
    eprintln!("{segments} segments, tcpdump kernel drops {kernel_drops}; {summary}");
    assert_eq!(summary["mismatch"], 0, "{summary}");
    // Every mapping's data was in the capture: nothing left unchecked
    // (unless the capture itself lost packets, which tcpdump reports).
    assert_eq!(kernel_drops, 0, "tcpdump could not keep up; {summary}");
    assert_eq!(summary["skipped"], serde_json::json!({}), "{summary}");
    assert_eq!(
        summary["versions"],
        serde_json::json!({"0": 1}),
        "{summary}"
    );
    let ok = |k: &str| summary["checks"][k]["ok"].as_u64().unwrap_or(0);
    assert!(
        ok("dss_checksum") as f64 >= 0.9 * (bytes as f64 * 2.0 / 65535.0),
        "{summary}"
    );
    for k in [
        "token",
        "join_synack_hmac",
        "join_ack_hmac",
        "idsn",
        "mp_capable_keys",
    ] {
        assert!(ok(k) >= 1, "no {k} check: {summary}");
    }
    let add_addr = lines.iter().find_map(|l| {
        l["mptcp"]
            .as_array()?
            .iter()
            .find(|o| o["subtype"] == "add_addr")
            .cloned()
    });
    let add_addr = add_addr.expect("an ADD_ADDR in the capture");
    assert_eq!(add_addr["ipver"], 4, "{add_addr}");
    assert_eq!(add_addr["addr"], "10.110.1.2", "{add_addr}");

    // Wireshark's v0 token and IDSN of each key (both roles) are the engine's.
    let conn = lines
        .iter()
        .find_map(|l| l.get("connection"))
        .expect("connection line")
        .clone();
    let key = |k: &str| u64::from_str_radix(&conn[k].as_str().expect(k)[2..], 16).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&merged)
        .args(["-o", "mptcp.analyze_mptcp:TRUE"])
        .args(["-Y", "tcp.flags.syn == 1 && mptcp.expected_token"])
        .args(["-T", "fields", "-E", "occurrence=f"])
        .args(["-e", "mptcp.expected_token", "-e", "mptcp.expected_idsn"])
        .output()
        .expect("tshark");
    assert!(out.status.success(), "{}", output_text(&out));
    let got: std::collections::BTreeSet<(u32, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (t, i) = l.split_once('\t')?;
            let t = match t.strip_prefix("0x") {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => t.parse().ok()?,
            };
            Some((t, i.parse().ok()?))
        })
        .collect();
    let want: std::collections::BTreeSet<(u32, u64)> = [key("client_key"), key("server_key")]
        .into_iter()
        .map(|k| (Version::V0.token(k), Version::V0.idsn(k)))
        .collect();
    assert_eq!(
        got,
        want,
        "tshark: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A kernel MPTCP echo server for one connection.
fn kernel_mptcp_echo_once(listener: TcpListener) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = conn.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n]).expect("write");
            total += n as u64;
        }
        conn.shutdown(Shutdown::Write).expect("shutdown");
        total
    })
}

#[test]
fn auto_version_v1_with_the_kernel_v0_with_a_v0_only_server_and_remembered() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    // The kernel server's TCP checksums full on veth (as datapath_cli's
    // kernel tests do).
    lab.server
        .exec("ethtool", &["-K", "srv0", "tx", "off"])
        .expect("ethtool");
    let bytes: u64 = 4 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("versions");
    let cache_s = cache.to_str().unwrap();
    let common = |extra: &[&str]| {
        let mut v = vec!["--iface", "cli0", "--mptcp-version", "auto"];
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };

    // The kernel (v1 only): v1 at the first try.
    let kernel: SocketAddr = SocketAddr::new(lab.paths[0].server_v4.into(), 5411);
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(kernel).expect("MPTCP listen"))
        .expect("server ns");
    let served = kernel_mptcp_echo_once(listener);
    let syn_rx = lab.server.nstat("MPTcpExtMPCapableSYNRX").expect("nstat");
    let args = common(&["--bytes", &bytes.to_string(), "--version-cache", cache_s]);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let report = connect_json(&lab.client, kernel, &args);
    assert_byte_exact(&report, bytes);
    assert_eq!(served.join().expect("kernel server"), bytes);
    assert_eq!(report["start"]["mptcp_version"], 1, "{report}");
    assert_eq!(
        report["start"]["mptcp_versions_tried"],
        serde_json::json!([1])
    );
    assert!(lab.server.nstat("MPTcpExtMPCapableSYNRX").expect("nstat") > syn_rx);
    assert_eq!(
        lab.server
            .nstat("MPTcpExtMPCapableFallbackACK")
            .expect("nstat"),
        0
    );

    // serve --mptcp-versions 0: the v1 SYN gets plain TCP, then v0 works.
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5412);
    let _server = serve_in(
        &lab.server,
        &[
            "--iface",
            "srv0",
            "--listen",
            &listen.to_string(),
            "--mptcp-versions",
            "0",
        ],
    );
    assert!(xdp_attached(&lab, "srv0"));
    let report = connect_json(&lab.client, listen, &args);
    assert_byte_exact(&report, bytes);
    assert_eq!(report["start"]["mptcp_version"], 0, "{report}");
    assert_eq!(
        report["start"]["mptcp_versions_tried"],
        serde_json::json!([1, 0])
    );
    let remembered = std::fs::read_to_string(&cache).expect("cache file");
    assert!(
        remembered.contains(&format!("{} 0", listen.ip())),
        "{remembered}"
    );
    // Next time, straight to v0.
    let report = connect_json(&lab.client, listen, &args);
    assert_byte_exact(&report, bytes);
    assert_eq!(
        report["start"]["mptcp_versions_tried"],
        serde_json::json!([0])
    );
    assert_eq!(report["start"]["mptcp_version"], 0, "{report}");
    // Without --mptcp-version auto a v1 client gets plain TCP from it.
    let report = connect_json(
        &lab.client,
        listen,
        &["--iface", "cli0", "--bytes", &bytes.to_string()],
    );
    assert_byte_exact(&report, bytes);
    assert!(report["start"]["mptcp_version"].is_null(), "{report}");
}
