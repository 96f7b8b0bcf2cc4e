//! The operators' control plane against a running `serve` (or `connect`)
//! and the kernel's MPTCP as the peer: `ctl` lists, closes, re-prioritises
//! and opens subflows and the kernel sees it; `ctl monitor` reports events
//! in order; `/metrics` parses as Prometheus text and agrees with
//! `ctl stats --json`.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mptcp_engine::app::Pattern;
use mptcp_tests::cli::{
    binary, ctl, ctl_json, mptcp_user, on_both_paths, output_text, start_serve,
};
use mptcp_tests::{require_root, wait_until, Lab, LabConfig};

const CHUNK: usize = 256 << 10;

/// A kernel MPTCP client echoing the test pattern through `addr` in chunks
/// until `stop`, then at least `min` bytes; checks every byte and returns
/// the total.
fn echo_until(lab: &Lab, addr: SocketAddr, stop: &AtomicBool, min: usize) -> usize {
    lab.client
        .enter(|| {
            let mut s = mptcp_tests::mptcp_connect(addr, Duration::from_secs(30)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut back = vec![0u8; CHUNK];
            let mut off = 0usize;
            while !stop.load(Ordering::Relaxed) || off < min {
                s.write_all(&Pattern::STREAM.bytes(off as u64, CHUNK))
                    .expect("write");
                s.read_exact(&mut back).expect("read");
                let bad = back
                    .iter()
                    .enumerate()
                    .position(|(i, b)| *b != Pattern::STREAM.byte((off + i) as u64));
                assert_eq!(bad, None, "echo differs in the chunk at {off}");
                off += CHUNK;
            }
            s.shutdown(Shutdown::Write).expect("shutdown");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).expect("read to end");
            assert!(rest.is_empty(), "{} bytes more than sent", rest.len());
            off
        })
        .expect("client ns")
}

/// Sets the flag when dropped: a failing assertion stops the client too
/// (else the scope would wait for it forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Kernel MPTCP subflows of the connection to `port`, as `ss` lists them.
fn kernel_subflows(lab: &Lab, port: u16) -> Vec<String> {
    lab.client
        .exec("ss", &["-tinH", "dport", "=", &port.to_string()])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("tcp-ulp-mptcp"))
        .map(str::to_string)
        .collect()
}

/// `ctl monitor --json` running; its events arrive on the channel.
struct Monitor {
    child: Child,
    events: mpsc::Receiver<serde_json::Value>,
}

impl Monitor {
    fn start(ns: &str, pid: u32) -> Monitor {
        let mut child = mptcp_user(ns)
            .args(["ctl", "--instance", &pid.to_string(), "--json", "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctl monitor");
        // Events count from the subscription on.
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        err.read_line(&mut line).expect("monitor stderr");
        assert!(line.starts_with("monitoring"), "ctl monitor: {line}");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&l) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Monitor { child, events }
    }

    /// Events until one matches `want`, or the deadline.
    fn until(
        &self,
        seen: &mut Vec<serde_json::Value>,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    let hit = want(&e);
                    seen.push(e);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_event(e: &serde_json::Value, name: &str, id: u64) -> bool {
    e["event"] == name && e["id"].as_u64() == Some(id)
}

/// GET /metrics from inside the server namespace (HTTP/1.0: the body ends
/// with the connection).
fn scrape(lab: &Lab, addr: SocketAddr) -> String {
    lab.server
        .enter(|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("metrics");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
                .expect("GET");
            let mut text = String::new();
            s.read_to_string(&mut text).expect("response");
            text
        })
        .expect("server ns")
}

/// The exposition text parses line by line as Prometheus text (the
/// OpenMetrics `# EOF` is a comment there), every sample has a declared
/// type, and the samples come out as numbers.
fn parse_metrics(text: &str) -> Vec<prometheus_parse::Sample> {
    use prometheus_parse::LineInfo;
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Type { metric_name, .. } => {
                typed.insert(metric_name);
            }
            LineInfo::Sample { metric_name, .. } => {
                let family = metric_name.strip_suffix("_total").unwrap_or(metric_name);
                assert!(typed.contains(family), "no TYPE for {metric_name}");
            }
            LineInfo::Doc { .. } | LineInfo::Empty => {}
            LineInfo::Ignored => assert_eq!(line, "# EOF", "unparsable line"),
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    assert!(
        scrape.samples.len() > 40,
        "{} samples",
        scrape.samples.len()
    );
    scrape.samples
}

fn metric(samples: &[prometheus_parse::Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no metric {name} {label:?}"))
}

/// `ctl subflows` shows both subflows with figures; `ctl prio backup` makes
/// the kernel count an MP_PRIO; `ctl close` makes the kernel see the subflow
/// gone while the echo goes on byte-exact; `ctl announce` brings a new join;
/// `ctl monitor` reports SF_PRIO, SF_CLOSED then SF_ESTABLISHED in order;
/// `/metrics` parses and matches `ctl stats --json`.
#[test]
fn ctl_steers_a_kernel_clients_subflows() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&LabConfig::unique(2)).expect("lab");
    // Full checksums from the kernel (veth leaves them partial otherwise).
    for p in &lab.paths {
        lab.client
            .exec("ethtool", &["-K", &p.client_if, "tx", "off"])
            .expect("ethtool");
    }
    let port = 5340;
    // Every address of both interfaces is ours, so either may be announced.
    let listen = format!("0.0.0.0:{port}");
    let metrics: SocketAddr = "127.0.0.1:9109".parse().unwrap();
    let server = start_serve(
        &lab,
        &on_both_paths(&listen, &["--metrics", &metrics.to_string()]),
    );
    let pid = server.0.id();
    let ns = lab.server.name();
    let addr = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let _stop_client = StopOnDrop(&stop);
        let client = scope.spawn(|| echo_until(&lab, addr, &stop, 4 << 20));

        // List: one connection; the kernel's endpoint on path 1 joins.
        let mut conns = serde_json::Value::Null;
        assert!(
            wait_until(Duration::from_secs(15), || {
                conns = ctl_json(ns, pid, &["connections"]);
                conns[0]["subflows"] == 2
            }),
            "never two subflows: {conns}"
        );
        let token = conns[0]["token"].as_str().expect("token").to_string();
        assert_eq!(conns[0]["fallback"], false, "{conns}");
        let mut rows = serde_json::Value::Null;
        assert!(
            wait_until(Duration::from_secs(15), || {
                rows = ctl_json(ns, pid, &["subflows", &token]);
                rows.as_array().is_some_and(|r| {
                    r.len() == 2
                        && r.iter().all(|s| {
                            s["state"] == "established"
                                && s["cwnd"].as_u64() > Some(0)
                                && s["srtt_us"].as_u64() > Some(0)
                                && s["rto_us"].as_u64() > Some(0)
                                && s["bytes_received"].as_u64() > Some(0)
                                && s["bytes_acked"].as_u64() > Some(0)
                        })
                })
            }),
            "subflows without figures: {rows}"
        );
        let table = ctl(ns, pid, &["subflows", &token]);
        let text = String::from_utf8_lossy(&table.stdout);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.starts_with("ID ") && text.contains("srv0") && text.contains("srv1"),
            "{text}"
        );
        // The joined subflow (on srv1) is the one we steer.
        let joined = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["interface"] == "srv1")
            .expect("a subflow on srv1");
        let id = joined["id"].as_u64().unwrap();
        let id_s = id.to_string();
        let monitor = Monitor::start(ns, pid);
        let mut seen = Vec::new();

        // Priority: the kernel counts the MP_PRIO.
        let prio_rx = lab.client.nstat("MPTcpExtMPPrioRx").expect("nstat");
        let out = ctl(ns, pid, &["prio", &token, &id_s, "backup"]);
        assert!(out.status.success(), "{}", output_text(&out));
        assert!(
            wait_until(Duration::from_secs(10), || lab
                .client
                .nstat("MPTcpExtMPPrioRx")
                .is_ok_and(|n| n > prio_rx)),
            "the kernel never counted MPTcpExtMPPrioRx"
        );
        assert!(monitor.until(&mut seen, |e| is_event(e, "SF_PRIO", id)
            && e["backup"] == true));

        // Close: the kernel sees the subflow gone.
        assert_eq!(kernel_subflows(&lab, port).len(), 2);
        let out = ctl(ns, pid, &["close", &token, &id_s]);
        assert!(out.status.success(), "{}", output_text(&out));
        assert!(
            wait_until(Duration::from_secs(10), || kernel_subflows(&lab, port)
                .len()
                == 1),
            "the kernel still lists {:?}",
            kernel_subflows(&lab, port)
        );
        let after = ctl_json(ns, pid, &["subflows", &token]);
        assert!(
            after
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == id && s["state"] != "established"),
            "{after}"
        );
        // A second close of the same subflow is refused, clearly.
        let again = ctl(ns, pid, &["close", &token, &id_s]);
        assert!(!again.status.success());
        assert!(
            output_text(&again).contains("already closing"),
            "{}",
            output_text(&again)
        );

        // Announce our second address: the kernel joins it.
        let out = ctl(
            ns,
            pid,
            &["announce", &token, &lab.paths[1].server_v4.to_string()],
        );
        assert!(out.status.success(), "{}", output_text(&out));
        assert!(
            monitor.until(&mut seen, |e| e["event"] == "SF_ESTABLISHED"
                && e["id"].as_u64() > Some(id)),
            "no new subflow after ADD_ADDR: {seen:?}"
        );
        let names: Vec<String> = seen
            .iter()
            .map(|e| format!("{} {}", e["event"].as_str().unwrap_or("?"), e["id"]))
            .collect();
        let closed = seen.iter().position(|e| is_event(e, "SF_CLOSED", id));
        let established = seen.iter().position(|e| e["event"] == "SF_ESTABLISHED");
        assert!(
            closed.is_some() && closed < established,
            "SF_CLOSED then SF_ESTABLISHED expected: {names:?}"
        );
        let e = &seen[closed.unwrap()];
        assert_eq!(e["token"], token.as_str());
        assert!(
            e["sport"].as_u64() == Some(port.into()) && e["dport"].as_u64() > Some(0),
            "{e}"
        );
        assert_eq!(e["error"], "local");
        assert!(wait_until(Duration::from_secs(10), || kernel_subflows(
            &lab, port
        )
        .len()
            == 2));

        // The transfer finishes byte-exact (checked chunk by chunk).
        stop.store(true, Ordering::Relaxed);
        let echoed = client.join().expect("client");
        assert!(echoed >= 4 << 20);
        drop(monitor);
    });

    // The connection is over; its counts stay in the monitor's counters.
    assert!(wait_until(Duration::from_secs(20), || ctl_json(
        ns,
        pid,
        &["connections"]
    )
    .as_array()
    .is_some_and(Vec::is_empty)));
    // /metrics against `ctl stats --json`, read before and after: every
    // counter lies between the two (the worker keeps counting its passes).
    let before = ctl_json(ns, pid, &["stats"]);
    let text = scrape(&lab, metrics);
    let after = ctl_json(ns, pid, &["stats"]);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let samples = parse_metrics(body);
    let check = |name: &str, label: Option<(&str, &str)>, path: &[&str]| {
        let pointer = format!("/{}", path.join("/"));
        let get = |v: &serde_json::Value| {
            v.pointer(&pointer)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_else(|| panic!("{pointer} not a number in {v}"))
        };
        let m = metric(&samples, name, label);
        let (lo, hi) = (get(&before), get(&after));
        assert!(
            lo as f64 <= m && m <= hi as f64,
            "{name}: {m} outside ctl's {lo}..={hi}"
        );
    };
    for c in [
        "seen",
        "redirected",
        "passed",
        "owned",
        "mp_capable_syn",
        "mp_join_syn",
        "dss",
    ] {
        check(
            &format!("mptcp_user_classifier_{c}_total"),
            None,
            &["classifier", c],
        );
    }
    for c in ["rx_frames", "tx_frames", "passes"] {
        check(
            &format!("mptcp_user_worker_{c}_total"),
            None,
            &["worker", c],
        );
    }
    for c in [
        "partial_checksum",
        "bad_checksum",
        "unmatched",
        "join_refused",
    ] {
        check(
            &format!("mptcp_user_engine_counters_{c}_total"),
            None,
            &["engine", "counters", c],
        );
    }
    for ev in [
        "CREATED",
        "ESTABLISHED",
        "SF_ESTABLISHED",
        "SF_CLOSED",
        "SF_PRIO",
        "CLOSED",
    ] {
        check(
            "mptcp_user_engine_events_total",
            Some(("event", ev)),
            &["engine", "events", ev],
        );
    }
    check(
        "mptcp_user_engine_connections",
        None,
        &["engine", "connections"],
    );
    check(
        "mptcp_user_engine_closed_total",
        None,
        &["engine", "closed"],
    );
    check(
        "mptcp_user_interface_rx_frames_total",
        Some(("interface", "srv1")),
        &["interfaces", "1", "rx_frames"],
    );
    // Figures the test itself caused.
    assert!(
        after["engine"]["events"]["SF_PRIO"].as_u64() >= Some(1),
        "{after}"
    );
    assert!(
        after["engine"]["events"]["SF_ESTABLISHED"].as_u64() >= Some(3),
        "{after}"
    );
    assert_eq!(after["engine"]["closed"], 1);
    assert!(
        after["classifier"]["mp_join_syn"].as_u64() >= Some(2),
        "{after}"
    );
    // `stats` reads the same source as `ctl stats`.
    let out = mptcp_user(ns)
        .args(["stats", "--json"])
        .output()
        .expect("stats");
    let ours = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["pid"] == pid)
        .expect("stats lists this instance");
    assert_eq!(ours["engine"]["events"], after["engine"]["events"]);
    assert_eq!(
        ours["classifier"]["mp_join_syn"],
        after["classifier"]["mp_join_syn"]
    );
}

/// The engine as client (`connect --pm manual`, one subflow) to a kernel
/// MPTCP server: `ctl open` by tuple makes the kernel accept a join, and
/// the new subflow carries data.
#[test]
fn ctl_open_makes_a_kernel_server_see_a_join() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&LabConfig {
        subflow_endpoints: false,
        ..LabConfig::unique(2)
    })
    .expect("lab");
    for p in &lab.paths {
        lab.server
            .exec("ethtool", &["-K", &p.server_if, "tx", "off"])
            .expect("ethtool");
    }
    let port = 5341;
    let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(any).expect("MPTCP listen"))
        .expect("server ns");
    // A kernel echo server: `connect` checks the echo byte-exact.
    let served = thread::spawn(move || {
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
    });
    let joins = lab.server.nstat("MPTcpExtMPJoinSynRx").expect("nstat");
    let remote = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let mut connect = Command::new("ip")
        .args(["netns", "exec", lab.client.name()])
        .arg(binary())
        .args([
            "connect",
            &remote.to_string(),
            "--iface",
            "cli0",
            "--iface",
            "cli1",
        ])
        .args(["--pm", "manual", "--time", "6", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connect");
    let pid = connect.id();
    let ns = lab.client.name();
    let socket = format!("/run/mptcp-user/{pid}.sock");
    let mut conns = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(15), || {
            std::path::Path::new(&socket).exists() && {
                let out = ctl(ns, pid, &["--json", "connections"]);
                conns = serde_json::from_slice(&out.stdout).unwrap_or_default();
                conns[0]["state"] == "established"
            }
        }),
        "connect never established: {conns}"
    );
    let token = conns[0]["token"].as_str().expect("token").to_string();
    // The manual path manager opened nothing more.
    assert_eq!(conns[0]["subflows"], 1, "{conns}");
    // The kernel server learns our key with the first data: the join's
    // token lookup needs it, so wait for acknowledged data.
    assert!(wait_until(Duration::from_secs(10), || {
        ctl_json(ns, pid, &["connections"])[0]["bytes_acked"].as_u64() > Some(0)
    }));
    let local = SocketAddr::new(lab.paths[1].client_v4.into(), 0);
    let opened = ctl_json(
        ns,
        pid,
        &["open", &token, &local.to_string(), &remote.to_string()],
    );
    let id = opened["id"].as_u64().expect("subflow id");
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .server
            .nstat("MPTcpExtMPJoinSynRx")
            .is_ok_and(|n| n > joins)),
        "the kernel never saw the MP_JOIN"
    );
    let mut row = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            row = ctl_json(ns, pid, &["stats", &token, &id.to_string()]);
            row["state"] == "established" && row["bytes_acked"].as_u64() > Some(0)
        }),
        "the opened subflow carried nothing: {row}"
    );
    assert_eq!(row["interface"], "cli1");
    assert!(lab.server.nstat("MPTcpExtMPJoinAckRx").expect("nstat") >= 1);
    let status = connect.wait().expect("connect");
    let mut out = String::new();
    connect.stdout.take().unwrap().read_to_string(&mut out).ok();
    assert!(status.success(), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["end"]["byte_exact"], true, "{report}");
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().expect("bytes");
    assert_eq!(served.join().expect("server"), sent);
    // The control socket went away with the process.
    assert!(!std::path::Path::new(&socket).exists());
}

/// `serve --mode forward` on the stream API: tokio relays each connection
/// to its backend off the packet path. A refused backend closes the
/// client's connection; with the backend up, a kernel MPTCP client's two
/// subflows are relayed byte-exact, and `ctl` sees the connection.
#[test]
fn forward_mode_relays_through_the_stream_api() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&LabConfig::unique(2)).expect("lab");
    for p in &lab.paths {
        lab.client
            .exec("ethtool", &["-K", &p.client_if, "tx", "off"])
            .expect("ethtool");
    }
    let backend: SocketAddr = "127.0.0.1:7011".parse().unwrap();
    let addr = SocketAddr::new(lab.paths[0].server_v4.into(), 5342);
    let server = start_serve(
        &lab,
        &on_both_paths(
            &addr.to_string(),
            &["--mode", "forward", "--to", &backend.to_string()],
        ),
    );
    let pid = server.0.id();
    // Nobody listens at the backend yet: the connection ends, promptly.
    let refused = lab
        .client
        .enter(|| {
            let mut s = mptcp_tests::mptcp_connect(addr, Duration::from_secs(10)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let _ = s.write_all(b"hello");
            let mut buf = [0u8; 16];
            s.read(&mut buf)
        })
        .expect("client ns");
    assert!(matches!(refused, Ok(0) | Err(_)), "{refused:?}");
    // Backend up: a kernel TCP echo server.
    let listener = lab
        .server
        .enter(|| std::net::TcpListener::bind(backend).expect("backend"))
        .expect("server ns");
    let echo = thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = c.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            c.write_all(&buf[..n]).expect("write");
            total += n as u64;
        }
        c.shutdown(Shutdown::Write).expect("shutdown");
        total
    });
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let _stop_client = StopOnDrop(&stop);
        let client = scope.spawn(|| echo_until(&lab, addr, &stop, 8 << 20));
        let mut conns = serde_json::Value::Null;
        assert!(
            wait_until(Duration::from_secs(15), || {
                conns = ctl_json(lab.server.name(), pid, &["connections"]);
                conns
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["subflows"] == 2))
            }),
            "{conns}"
        );
        stop.store(true, Ordering::Relaxed);
        let n = client.join().expect("client");
        assert_eq!(echo.join().expect("backend"), n as u64);
    });
}
