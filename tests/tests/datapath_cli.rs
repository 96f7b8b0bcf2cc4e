//! `mptcp-user serve` / `connect` / `stats` as processes in the lab's
//! namespaces: echo, forward to a kernel backend, the engine as client of a
//! kernel server, engine to engine, clean detach on SIGTERM, and the usual
//! mistakes refused with a clear message.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use mptcp_engine::app::Pattern;
use mptcp_tests::cli::{
    binary, mptcp_user, on_both_paths, one_path_lab, output_text, start_serve, xdp_attached, Server,
};
use mptcp_tests::{require_root, wait_until, Lab, LabConfig};

fn checksums_in_software(lab: &Lab, client_side: bool) {
    // veth passes the sender's CHECKSUM_PARTIAL segments on unfinished; the
    // engine insists on full checksums, as on a real wire.
    for p in &lab.paths {
        if client_side {
            lab.client
                .exec("ethtool", &["-K", &p.client_if, "tx", "off"])
                .expect("ethtool");
        } else {
            lab.server
                .exec("ethtool", &["-K", &p.server_if, "tx", "off"])
                .expect("ethtool");
        }
    }
}

/// Sends `len` pattern bytes to `addr` from the client namespace and returns what came back.
fn kernel_client_echo(lab: &Lab, addr: SocketAddr, len: usize) -> Vec<u8> {
    lab.client
        .enter(|| {
            let stream =
                TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            let mut writer = stream.try_clone().expect("clone");
            let sender = thread::spawn(move || {
                let data: Vec<u8> = Pattern::STREAM.bytes(0, len);
                writer.write_all(&data).expect("write");
                writer.shutdown(Shutdown::Write).expect("shutdown");
            });
            let mut reader = stream;
            reader
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut back = Vec::with_capacity(len);
            reader.read_to_end(&mut back).expect("read");
            sender.join().expect("sender");
            back
        })
        .expect("client ns")
}

fn assert_pattern(back: &[u8], len: usize) {
    assert_eq!(back.len(), len);
    let bad = back
        .iter()
        .enumerate()
        .position(|(i, b)| *b != Pattern::STREAM.byte(i as u64));
    assert_eq!(bad, None, "first differing byte");
}

/// A kernel TCP echo server for one connection. It checks every byte it
/// receives against the test pattern itself (a judge outside the binary,
/// whose own `byte_exact` only compares the echo with what it sent).
fn kernel_echo_once(listener: TcpListener) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = vec![0u8; 64 << 10];
        let mut want = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = conn.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            Pattern::STREAM.fill(total, &mut want[..n]);
            if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
                panic!(
                    "the kernel server received a wrong byte at offset {}",
                    total + i as u64
                );
            }
            conn.write_all(&buf[..n]).expect("write");
            total += n as u64;
        }
        conn.shutdown(Shutdown::Write).expect("shutdown");
        total
    })
}

#[test]
fn serve_echoes_and_detaches_on_sigterm() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&LabConfig {
        subflow_endpoints: false,
        ..LabConfig::unique(2)
    })
    .expect("lab");
    checksums_in_software(&lab, true);
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5301);
    let mut server = start_serve(&lab, &on_both_paths(&listen.to_string(), &[]));
    let len = 8 << 20;
    assert_pattern(&kernel_client_echo(&lab, listen, len), len);

    // stats sees this instance and its redirected segments.
    let pid = server.0.id();
    let ok = wait_until(Duration::from_secs(5), || {
        let out = mptcp_user(lab.server.name())
            .args(["stats", "--json"])
            .output()
            .expect("stats");
        // The child is `ip netns exec`, which execs mptcp-user: same pid.
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                v["pid"] == pid
                    && v["classifier"]["redirected"].as_u64() >= Some((len / 1500) as u64)
            })
        })
    });
    assert!(ok, "stats never showed the transfer");

    // SIGTERM: the process exits cleanly and takes XDP off both interfaces.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = server.0.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(!xdp_attached(&lab, "srv0"));
    assert!(!xdp_attached(&lab, "srv1"));
}

#[test]
fn kernel_mptcp_client_is_served_by_fallback() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    checksums_in_software(&lab, true);
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5309);
    let _server = start_serve(
        &lab,
        &[
            "--iface",
            "srv0",
            "--listen",
            &listen.to_string(),
            "--engine",
            "tcp",
        ],
    );
    let fallbacks = lab
        .client
        .nstat("MPTcpExtMPCapableFallbackSYNACK")
        .expect("nstat");
    let len = 4 << 20;
    let back = lab
        .client
        .enter(|| {
            let mut s =
                mptcp_tests::mptcp_connect(listen, Duration::from_secs(10)).expect("connect");
            let mut w = s.try_clone().expect("clone");
            let sender = thread::spawn(move || {
                let data: Vec<u8> = Pattern::STREAM.bytes(0, len);
                w.write_all(&data).expect("write");
                w.shutdown(Shutdown::Write).expect("shutdown");
            });
            let mut back = Vec::new();
            s.read_to_end(&mut back).expect("read");
            sender.join().expect("sender");
            back
        })
        .expect("client ns");
    assert_pattern(&back, len);
    // The kernel asked for MPTCP, got a plain SYN/ACK, and fell back to TCP.
    assert_eq!(
        lab.client
            .nstat("MPTcpExtMPCapableFallbackSYNACK")
            .expect("nstat"),
        fallbacks + 1
    );
}

#[test]
fn forward_mode_relays_to_a_kernel_backend() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    checksums_in_software(&lab, true);
    let backend: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let listener = lab
        .server
        .enter(|| TcpListener::bind(backend).expect("backend"))
        .expect("server ns");
    let echoed = kernel_echo_once(listener);
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5302);
    let _server = start_serve(
        &lab,
        &[
            "--iface",
            "srv0",
            "--listen",
            &listen.to_string(),
            "--mode",
            "forward",
            "--to",
            &backend.to_string(),
        ],
    );
    let len = 8 << 20;
    assert_pattern(&kernel_client_echo(&lab, listen, len), len);
    assert_eq!(echoed.join().expect("backend"), len as u64);
}

fn connect_json(lab: &Lab, remote: SocketAddr, bytes: u64) -> serde_json::Value {
    connect_json_with(lab, remote, bytes, &[])
}

fn connect_json_with(
    lab: &Lab,
    remote: SocketAddr,
    bytes: u64,
    extra: &[&str],
) -> serde_json::Value {
    // A hung transfer fails the test instead of hanging it.
    let out = Command::new("ip")
        .args(["netns", "exec", lab.client.name(), "timeout", "120"])
        .arg(binary())
        .args(["connect", &remote.to_string(), "--iface", "cli0"])
        .args(["--bytes", &bytes.to_string(), "--json"])
        .args(extra)
        .output()
        .expect("connect");
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn assert_report(report: &serde_json::Value, bytes: u64) {
    let end = &report["end"];
    assert_eq!(end["sum_sent"]["bytes"], bytes, "{report}");
    assert_eq!(end["sum_received"]["bytes"], bytes, "{report}");
    assert_eq!(end["byte_exact"], true, "{report}");
    assert!(end["sum_sent"]["bits_per_second"].as_f64() > Some(0.0));
    assert!(!report["intervals"]
        .as_array()
        .expect("intervals")
        .is_empty());
    let subflow_bytes: u64 = end["subflows"]
        .as_array()
        .expect("subflows")
        .iter()
        .filter_map(|s| s["bytes_sent"].as_u64())
        .sum();
    assert!(subflow_bytes >= bytes, "{report}");
}

#[test]
fn connect_to_a_kernel_echo_server() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    checksums_in_software(&lab, false);
    for remote in [
        SocketAddr::new(lab.paths[0].server_v4.into(), 5303),
        SocketAddr::new(lab.paths[0].server_v6.into(), 5303),
    ] {
        let listener = lab
            .server
            .enter(|| TcpListener::bind(remote).expect("listen"))
            .expect("server ns");
        let served = kernel_echo_once(listener);
        let bytes = 8 << 20;
        assert_report(&connect_json(&lab, remote, bytes), bytes);
        assert_eq!(served.join().expect("server"), bytes);
    }
    assert!(!lab
        .client
        .ip(&["link", "show", "cli0"])
        .expect("ip")
        .contains("xdp"));
}

#[test]
fn connect_to_a_kernel_mptcp_listener_falls_back() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    checksums_in_software(&lab, false);
    let remote = SocketAddr::new(lab.paths[0].server_v4.into(), 5312);
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(remote).expect("MPTCP listen"))
        .expect("server ns");
    let served = kernel_echo_once(listener);
    let before = lab.server.nstat("MPTcpExtMPCapableSYNRX").expect("nstat");
    let bytes = 4 << 20;
    let report = connect_json_with(&lab, remote, bytes, &["--engine", "tcp"]);
    assert_report(&report, bytes);
    assert_eq!(served.join().expect("server"), bytes);
    // The plain TCP engine's SYN has no MP_CAPABLE: the kernel's MPTCP listener served it as plain TCP.
    let after = lab.server.nstat("MPTcpExtMPCapableSYNRX").expect("nstat");
    assert_eq!(after, before);
}

#[test]
fn engine_to_engine() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5304);
    let _server = start_serve(&lab, &["--iface", "srv0", "--listen", &listen.to_string()]);
    let bytes = 16 << 20;
    assert_report(&connect_json(&lab, listen, bytes), bytes);
}

#[test]
fn usual_mistakes_are_refused_clearly() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let run = |args: &[&str]| {
        let out = mptcp_user(lab.server.name())
            .arg("serve")
            .args(args)
            .output()
            .expect("serve");
        assert!(!out.status.success(), "{args:?} succeeded");
        output_text(&out)
    };
    let text = run(&["--iface", "nosuch0", "--listen", "10.100.0.2:5305"]);
    assert!(text.contains("unknown interface nosuch0"), "{text}");
    let text = run(&["--iface", "srv0", "--listen", "10.9.9.9:5305"]);
    assert!(text.contains("10.9.9.9 is not on srv0"), "{text}");
    let text = run(&[
        "--iface",
        "srv0",
        "--listen",
        "10.100.0.2:5305",
        "--mode",
        "forward",
    ]);
    assert!(text.contains("--to"), "{text}");
    let addr: SocketAddr = "10.100.0.2:5306".parse().unwrap();
    let _kernel = lab
        .server
        .enter(|| TcpListener::bind(addr).expect("listen"))
        .expect("server ns");
    let text = run(&["--iface", "srv0", "--listen", "10.100.0.2:5306"]);
    assert!(text.contains("already owned"), "{text}");
    // The refusals so far left srv0 as they found it.
    assert_eq!(xdp_prog_id(&lab, "srv0"), None);
    // XDP attach refused: another program already holds the interface.
    let holder = start_serve(&lab, &["--iface", "srv0", "--listen", "10.100.0.2:5307"]);
    let holder_prog = xdp_prog_id(&lab, "srv0").expect("the holder's XDP program");
    let text = run(&["--iface", "srv0", "--listen", "10.100.0.2:5308"]);
    assert!(text.contains("XDP attach refused"), "{text}");
    // The refused instance took nothing from the holder: same program, and
    // it still serves.
    assert_eq!(xdp_prog_id(&lab, "srv0"), Some(holder_prog));
    checksums_in_software(&lab, true);
    let len = 64 << 10;
    let addr: SocketAddr = "10.100.0.2:5307".parse().unwrap();
    assert_pattern(&kernel_client_echo(&lab, addr, len), len);
    drop(holder);
}

/// The id of the XDP program on `iface` in the lab's server namespace
/// (`prog/xdp id N` in `ip -d link show`).
fn xdp_prog_id(lab: &Lab, iface: &str) -> Option<u64> {
    let text = lab
        .server
        .ip(&["-d", "link", "show", iface])
        .expect("ip link");
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w.starts_with("prog/xdp") && words.next() == Some("id") {
            return words.next().and_then(|id| id.parse().ok());
        }
    }
    None
}

#[test]
fn even_sigkill_leaves_no_xdp_program() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let mut server = start_serve(&lab, &["--iface", "srv0", "--listen", "10.100.0.2:5310"]);
    // The attachment is a bpf_link owned by the process's descriptor: the
    // kernel removes it with the process, whatever ends it.
    server.0.kill().expect("SIGKILL");
    server.0.wait().expect("wait");
    assert!(
        wait_until(Duration::from_secs(5), || !xdp_attached(&lab, "srv0")),
        "XDP left on srv0 after SIGKILL"
    );
}

#[test]
fn every_receive_queue_has_a_socket() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    // A second, 4-queue veth pair: each flow lands on the queue its hash picks.
    lab.client
        .ip(&[
            "link",
            "add",
            "mq0",
            "numtxqueues",
            "4",
            "numrxqueues",
            "4",
            "type",
            "veth",
            "peer",
            "name",
            "mq0s",
            "numtxqueues",
            "4",
            "numrxqueues",
            "4",
            "netns",
            lab.server.name(),
        ])
        .expect("veth");
    lab.client
        .ip(&["addr", "add", "10.200.0.1/24", "dev", "mq0"])
        .expect("addr");
    lab.server
        .ip(&["addr", "add", "10.200.0.2/24", "dev", "mq0s"])
        .expect("addr");
    lab.client.ip(&["link", "set", "mq0", "up"]).expect("up");
    lab.server.ip(&["link", "set", "mq0s", "up"]).expect("up");
    lab.client
        .exec("ethtool", &["-K", "mq0", "tx", "off"])
        .expect("ethtool");
    let listen: SocketAddr = "10.200.0.2:5311".parse().unwrap();
    let server = start_serve(&lab, &["--iface", "mq0s", "--listen", &listen.to_string()]);
    // Each connection lands on the queue its (random) flow hash picks:
    // batches of eight connections until every queue has carried frames.
    // After 64, a queue left out by chance has probability 4 * (3/4)^64 < 1e-7.
    let mut per_queue = Vec::new();
    let mut frames = 0u64;
    for batch in 1..=8u64 {
        for _ in 0..8 {
            let len = 256 << 10;
            assert_pattern(&kernel_client_echo(&lab, listen, len), len);
        }
        // Stats are written every second: wait for one after this batch.
        frames += 8 * 180;
        let stats = serve_stats(&lab, &server, frames);
        let mq = &stats["interfaces"][0];
        assert_eq!(mq["name"], "mq0s", "{stats}");
        assert_eq!(stats["classifier"]["owned_no_socket"], 0, "{stats}");
        per_queue = mq["rx_frames_per_queue"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        assert_eq!(per_queue.len(), 4, "{stats}");
        eprintln!(
            "after {} connections, frames per receive queue: {per_queue:?}",
            batch * 8
        );
        if per_queue.iter().all(|n| *n > 0) {
            break;
        }
    }
    assert!(
        per_queue.iter().all(|n| *n > 0),
        "a queue never received: {per_queue:?}"
    );
}

/// Stats of the running `serve` in the server namespace, once they show at
/// least `frames` received in total.
/// The stats of `server` (`stats` lists every instance on the machine, and
/// tests run in parallel: pick ours by pid).
fn serve_stats(lab: &Lab, server: &Server, frames: u64) -> serde_json::Value {
    let pid = u64::from(server.0.id());
    let mut found = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(5), || {
        let out = mptcp_user(lab.server.name())
            .args(["stats", "--json"])
            .output()
            .expect("stats");
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                return false;
            };
            let ok =
                v["pid"].as_u64() == Some(pid) && v["worker"]["rx_frames"].as_u64() >= Some(frames);
            if ok {
                found = v;
            }
            ok
        })
    });
    assert!(ok, "no stats with {frames} frames");
    found
}

/// A kernel MPTCP client echoes `len` bytes through the engine over two
/// paths; `mid` runs once half the echo is back. Returns the echo and the
/// kernel's `ss -ti` lines for the connection taken at that moment.
fn kernel_mptcp_echo(
    lab: &Lab,
    addr: SocketAddr,
    len: usize,
    mid: impl Fn() + Send + Sync,
) -> (Vec<u8>, String) {
    let (back, mut ss) = kernel_mptcp_echo_marks(lab, addr, len, &[(len / 2, &mid)]);
    (back, ss.remove(0))
}

/// [`kernel_mptcp_echo`] with several marks: once more than `at` bytes of
/// the echo are back, takes the kernel's `ss -ti` lines for the connection,
/// then runs the mark's action. Returns the echo and one `ss` per mark.
fn kernel_mptcp_echo_marks(
    lab: &Lab,
    addr: SocketAddr,
    len: usize,
    marks: &[(usize, &(dyn Fn() + Send + Sync))],
) -> (Vec<u8>, Vec<String>) {
    lab.client
        .enter(|| {
            let stream =
                mptcp_tests::mptcp_connect(addr, Duration::from_secs(30)).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            stream
                .set_write_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            let mut w = stream.try_clone().expect("clone");
            let sender = thread::spawn(move || {
                let data: Vec<u8> = Pattern::STREAM.bytes(0, len);
                w.write_all(&data).expect("write");
                w.shutdown(Shutdown::Write).expect("shutdown");
            });
            let mut r = stream;
            let mut back = Vec::with_capacity(len);
            let mut buf = vec![0u8; 1 << 20];
            let mut ss = Vec::new();
            loop {
                let n = r.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                back.extend_from_slice(&buf[..n]);
                while let Some((at, action)) = marks.get(ss.len()) {
                    if back.len() <= *at {
                        break;
                    }
                    ss.push(
                        lab.client
                            .exec("ss", &["-tinH", "dport", "=", &addr.port().to_string()])
                            .unwrap_or_default(),
                    );
                    action();
                }
            }
            sender.join().expect("sender");
            assert_eq!(ss.len(), marks.len(), "the echo stopped before every mark");
            (back, ss)
        })
        .expect("client ns")
}

fn two_path_lab(subflow_endpoints: bool) -> Lab {
    let lab = two_path_lab_partial_checksums(subflow_endpoints);
    checksums_in_software(&lab, true);
    lab
}

/// The kernel client leaves its TCP checksums partial, as veth does by
/// default: `serve` accepts them on veth (`--partial-checksum auto`).
fn two_path_lab_partial_checksums(subflow_endpoints: bool) -> Lab {
    let lab = Lab::up(&LabConfig {
        subflow_endpoints,
        ..LabConfig::unique(2)
    })
    .expect("lab");
    // Kernel DSS checksums on, as the issue asks of every kernel client.
    lab.client
        .exec("sysctl", &["-qw", "net.mptcp.checksum_enabled=1"])
        .expect("sysctl");
    lab
}

/// One kernel subflow's byte counts from its `ss -ti` lines.
#[derive(Debug)]
struct SubflowBytes {
    /// Local address and port, as `ss` prints it (`10.100.1.1%cli1:42475`).
    local: String,
    acked: u64,
    received: u64,
    /// Sent and not yet acknowledged.
    unacked: u64,
}

/// The subflows (`tcp-ulp-mptcp` info lines) in `ss -tinH` output, with
/// the kernel's own `bytes_acked` (data it sent that the peer
/// acknowledged), `bytes_received` and `unacked`.
fn kernel_subflows(ss: &str) -> Vec<SubflowBytes> {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
            .unwrap_or(0)
    };
    let lines: Vec<&str> = ss.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[1].contains("tcp-ulp-mptcp"))
        .map(|w| SubflowBytes {
            // STATE RECV-Q SEND-Q LOCAL PEER
            local: w[0].split_whitespace().nth(3).unwrap_or("").to_string(),
            acked: field(w[1], "bytes_acked:"),
            received: field(w[1], "bytes_received:"),
            unacked: field(w[1], "unacked:"),
        })
        .collect()
}

/// From the kernel client's side: at least two subflows, each of which
/// carried data both ways (`ss -ti` taken halfway through the echo), an
/// MPTCP connection all along, no checksum error.
fn assert_two_subflows_carried_data(lab: &Lab, ss: &str) {
    let subflows = kernel_subflows(ss);
    eprintln!("kernel subflows halfway: {subflows:?}");
    assert!(subflows.len() >= 2, "kernel shows {subflows:?}:\n{ss}");
    // More than handshakes and a stray segment: 64 KiB each way per subflow.
    let busy = subflows
        .iter()
        .filter(|s| s.acked >= 64 << 10 && s.received >= 64 << 10)
        .count();
    assert!(busy >= 2, "subflows that carried data: {subflows:?}\n{ss}");
    assert!(lab.client.nstat("MPTcpExtMPJoinSynAckRx").expect("nstat") >= 1);
    assert!(
        lab.client
            .nstat("MPTcpExtMPCapableSYNACKRX")
            .expect("nstat")
            >= 1
    );
    assert_eq!(
        lab.client
            .nstat("MPTcpExtMPCapableFallbackSYNACK")
            .expect("nstat"),
        0
    );
    assert_eq!(lab.client.nstat("MPTcpExtDataCsumErr").expect("nstat"), 0);
}

fn kernel_client_two_subflows(v6: bool) {
    // IPv4: the client's endpoint on path 2 joins the initial address (Linux
    // answers ARP for it on either interface). IPv6 neighbour discovery only
    // answers for the interface's own addresses, so there the second path
    // comes from our ADD_ADDR.
    let lab = two_path_lab(!v6);
    let (ip, announce): (std::net::IpAddr, std::net::IpAddr) = if v6 {
        (lab.paths[0].server_v6.into(), lab.paths[1].server_v6.into())
    } else {
        (lab.paths[0].server_v4.into(), lab.paths[1].server_v4.into())
    };
    let listen = SocketAddr::new(ip, 5320);
    let mut args = vec!["--iface", "srv0", "--iface", "srv1"];
    let listen_s = listen.to_string();
    let announce_s = announce.to_string();
    args.extend(["--listen", &listen_s]);
    if v6 {
        args.extend(["--announce", &announce_s]);
    }
    let _server = start_serve(&lab, &args);
    let len = 64 << 20;
    let (back, ss) = kernel_mptcp_echo(&lab, listen, len, || {});
    assert_pattern(&back, len);
    assert_two_subflows_carried_data(&lab, &ss);
}

#[test]
fn kernel_mptcp_client_two_subflows_ipv4() {
    if !require_root() {
        return;
    }
    kernel_client_two_subflows(false);
}

#[test]
fn kernel_mptcp_client_two_subflows_ipv6() {
    if !require_root() {
        return;
    }
    kernel_client_two_subflows(true);
}

#[test]
fn kernel_mptcp_client_joins_the_announced_address() {
    if !require_root() {
        return;
    }
    let lab = two_path_lab(false);
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5321);
    let announce = lab.paths[1].server_v4.to_string();
    let _server = start_serve(
        &lab,
        &on_both_paths(&listen.to_string(), &["--announce", &announce]),
    );
    let len = 64 << 20;
    let (back, ss) = kernel_mptcp_echo(&lab, listen, len, || {});
    assert_pattern(&back, len);
    assert!(lab.client.nstat("MPTcpExtAddAddr").expect("nstat") >= 1);
    assert_two_subflows_carried_data(&lab, &ss);
}

#[test]
fn a_path_taken_down_mid_transfer_loses_nothing() {
    if !require_root() {
        return;
    }
    let lab = two_path_lab(true);
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5322);
    let _server = start_serve(&lab, &on_both_paths(&listen.to_string(), &[]));
    let len = 64 << 20;
    let path2 = format!("{}%", lab.paths[1].client_v4);
    let on_path2 = |ss: &str| {
        kernel_subflows(ss)
            .into_iter()
            .find(|s| s.local.starts_with(&path2))
    };
    // The cut comes after halfway, at a moment path 2's subflow has data in
    // flight (the kernel's scheduler may leave it idle for a while): a
    // thread watches `ss` while the echo goes on, and keeps the `ss` of
    // that moment.
    let half = std::sync::atomic::AtomicBool::new(false);
    let at_cut = std::sync::Mutex::new(String::new());
    let back = thread::scope(|scope| {
        scope.spawn(|| {
            wait_until(Duration::from_secs(60), || half.load(Ordering::Relaxed));
            let mut last = String::new();
            wait_until(Duration::from_secs(5), || {
                last = lab
                    .client
                    .exec("ss", &["-tinH", "dport", "=", &listen.port().to_string()])
                    .unwrap_or_default();
                on_path2(&last).is_some_and(|s| s.unacked > 0)
            });
            lab.client
                .ip(&["link", "set", &lab.paths[1].client_if, "down"])
                .expect("link down");
            *at_cut.lock().expect("lock") = last;
        });
        kernel_mptcp_echo(&lab, listen, len, || half.store(true, Ordering::Relaxed)).0
    });
    assert_pattern(&back, len);
    // The kernel's view just before the cut: path 2's subflow had carried
    // data and had some in flight, so the cut cost it data to recover.
    let ss = at_cut.into_inner().expect("lock");
    eprintln!("kernel subflows at the cut: {:?}", kernel_subflows(&ss));
    let cut = on_path2(&ss).unwrap_or_else(|| panic!("no subflow on path 2 before the cut:\n{ss}"));
    assert!(
        cut.acked >= 64 << 10 && cut.unacked > 0,
        "path 2 was idle at the cut: {cut:?}"
    );
}

/// Bytes the kernel counted arriving on one of its interfaces.
fn rx_bytes(ns: &mptcp_tests::Netns, iface: &str) -> u64 {
    ns.exec(
        "cat",
        &[&format!("/sys/class/net/{iface}/statistics/rx_bytes")],
    )
    .expect("rx_bytes")
    .trim()
    .parse()
    .expect("a number")
}

/// `mptcp-user connect` (the MPTCP engine by default) sends `bytes` to a
/// kernel MPTCP echo server that announces its second address; checks the
/// echo byte-exact, and from the kernel's side that the connection stayed
/// MPTCP, accepted a join and received data on both interfaces.
fn engine_client_to_kernel_server(checksums: bool, v6: bool) {
    let lab = Lab::up(&LabConfig {
        subflow_endpoints: false,
        ..LabConfig::unique(2)
    })
    .expect("lab");
    // With DSS checksums the kernel's TCP checksums stay partial (veth's
    // default), accepted by `connect` on veth; without, the ethtool
    // workaround keeps them full.
    if !checksums {
        checksums_in_software(&lab, false);
    }
    if checksums {
        lab.server
            .exec("sysctl", &["-qw", "net.mptcp.checksum_enabled=1"])
            .expect("sysctl");
    }
    let (first, second): (std::net::IpAddr, std::net::IpAddr) = if v6 {
        (lab.paths[0].server_v6.into(), lab.paths[1].server_v6.into())
    } else {
        (lab.paths[0].server_v4.into(), lab.paths[1].server_v4.into())
    };
    // The kernel server announces its second address; our path manager joins it.
    lab.server
        .ip(&[
            "mptcp",
            "endpoint",
            "add",
            &second.to_string(),
            "dev",
            &lab.paths[1].server_if,
            "signal",
        ])
        .expect("endpoint");
    let remote = SocketAddr::new(first, 5330);
    // Bound to any address: joins arrive at the announced one too.
    let any = SocketAddr::new(
        if v6 {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        },
        5330,
    );
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(any).expect("MPTCP listen"))
        .expect("server ns");
    let served = kernel_echo_once(listener);
    let rx_before = [
        rx_bytes(&lab.server, &lab.paths[0].server_if),
        rx_bytes(&lab.server, &lab.paths[1].server_if),
    ];
    let bytes: u64 = 64 << 20;
    let out = Command::new("ip")
        .args(["netns", "exec", lab.client.name(), "timeout", "120"])
        .arg(binary())
        .args([
            "connect",
            &remote.to_string(),
            "--iface",
            "cli0",
            "--iface",
            "cli1",
            // The join first: the data is multipath from its first byte.
            "--wait-subflows",
            "2",
        ])
        .args(["--bytes", &bytes.to_string(), "--json"])
        .output()
        .expect("connect");
    assert!(out.status.success(), "{}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_report(&report, bytes);
    assert_eq!(served.join().expect("server"), bytes);
    let subflows = report["end"]["subflows"].as_array().expect("subflows");
    let carried = subflows
        .iter()
        .filter(|s| s["bytes_sent"].as_u64() > Some(0))
        .count();
    assert!(
        carried >= 2,
        "fewer than two subflows carried data: {report}"
    );
    // The kernel's view: an MPTCP connection all along, a join it accepted,
    // data arriving on both of its interfaces, no checksum error.
    let n = |c: &str| lab.server.nstat(c).expect("nstat");
    assert!(n("MPTcpExtMPCapableSYNRX") >= 1);
    assert!(n("MPTcpExtMPCapableACKRX") >= 1);
    assert_eq!(n("MPTcpExtMPCapableFallbackACK"), 0);
    assert_eq!(n("MPTcpExtMPCapableFallbackSYNACK"), 0);
    assert!(n("MPTcpExtMPJoinAckRx") >= 1);
    assert_eq!(n("MPTcpExtDSSNotMatching"), 0);
    assert_eq!(n("MPTcpExtInfiniteMapRx"), 0);
    assert_eq!(n("MPTcpExtDataCsumErr"), 0);
    let rx = [
        rx_bytes(&lab.server, &lab.paths[0].server_if) - rx_before[0],
        rx_bytes(&lab.server, &lab.paths[1].server_if) - rx_before[1],
    ];
    eprintln!("kernel server received per interface: {rx:?} bytes");
    // Both subflows were up before the first byte: each path carried a
    // real share of the 64 MiB.
    assert!(rx.iter().all(|b| *b >= 1 << 20), "{rx:?}: {report}");
}

#[test]
fn engine_mptcp_client_to_a_kernel_mptcp_server_over_two_paths() {
    if !require_root() {
        return;
    }
    engine_client_to_kernel_server(false, false);
}

#[test]
fn engine_mptcp_client_to_a_kernel_mptcp_server_over_ipv6() {
    if !require_root() {
        return;
    }
    engine_client_to_kernel_server(false, true);
}

#[test]
fn engine_mptcp_client_to_a_kernel_mptcp_server_with_dss_checksums() {
    if !require_root() {
        return;
    }
    engine_client_to_kernel_server(true, false);
}

#[test]
fn kernel_mptcp_client_with_dss_checksums_is_echoed() {
    if !require_root() {
        return;
    }
    // No ethtool workaround here: the partial TCP checksums are accepted.
    let lab = two_path_lab_partial_checksums(true);
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5323);
    let server = start_serve(&lab, &on_both_paths(&listen.to_string(), &[]));
    let len = 64 << 20;
    let (back, ss) = kernel_mptcp_echo(&lab, listen, len, || {});
    assert_pattern(&back, len);
    assert_two_subflows_carried_data(&lab, &ss);
    assert_eq!(lab.client.nstat("MPTcpExtDataCsumErr").expect("nstat"), 0);
    assert_eq!(
        lab.client.nstat("MPTcpExtDSSNotMatching").expect("nstat"),
        0
    );
    // The engine saw the kernel's partial TCP checksums and took them.
    let stats = serve_stats(&lab, &server, 1);
    assert!(
        stats["engine"]["partial_checksum"].as_u64() > Some(1000),
        "{stats}"
    );
    assert_eq!(stats["engine"]["bad_checksum"], 0, "{stats}");
}

/// A middlebox in `ns`: MPTCP options (kind 30) stripped from every SYN/ACK
/// passing its netfilter `chain` (mangle table).
fn strip_mptcp_from_syn_acks(ns: &mptcp_tests::Netns, chain: &str) {
    for iptables in ["iptables", "ip6tables"] {
        ns.exec(
            iptables,
            &[
                "-t",
                "mangle",
                "-A",
                chain,
                "-p",
                "tcp",
                "--tcp-flags",
                "SYN,ACK",
                "SYN,ACK",
                "-j",
                "TCPOPTSTRIP",
                "--strip-options",
                "30",
            ],
        )
        .expect("iptables TCPOPTSTRIP (apt install iptables)");
    }
}

/// The engine client meets a kernel MPTCP server whose SYN/ACK lost its
/// MP_CAPABLE on the way: the engine falls back to plain TCP, and the
/// kernel server, judging by the third ACK, falls back too.
#[test]
fn engine_client_falls_back_when_a_middlebox_strips_mptcp_options() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    checksums_in_software(&lab, false);
    strip_mptcp_from_syn_acks(&lab.server, "POSTROUTING");
    let remote = SocketAddr::new(lab.paths[0].server_v4.into(), 5340);
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(remote).expect("MPTCP listen"))
        .expect("server ns");
    let served = kernel_echo_once(listener);
    let n = |c: &str| lab.server.nstat(c).expect("nstat");
    let (syns, fallbacks) = (
        n("MPTcpExtMPCapableSYNRX"),
        n("MPTcpExtMPCapableFallbackACK"),
    );
    let bytes = 4 << 20;
    let report = connect_json(&lab, remote, bytes);
    assert_report(&report, bytes);
    assert_eq!(served.join().expect("server"), bytes);
    // The kernel saw our MP_CAPABLE SYN, then a third ACK without it.
    assert_eq!(n("MPTcpExtMPCapableSYNRX"), syns + 1);
    assert_eq!(n("MPTcpExtMPCapableFallbackACK"), fallbacks + 1);
    assert_eq!(n("MPTcpExtMPCapableACKRX"), 0);
}

/// A kernel MPTCP client meets the engine server through a middlebox that
/// strips MP_CAPABLE from the engine's SYN/ACK: the kernel client falls
/// back, and so must the engine, on a third ACK without MP_CAPABLE.
#[test]
fn engine_server_falls_back_when_a_middlebox_strips_mptcp_options() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    checksums_in_software(&lab, true);
    // The engine's frames leave through AF_XDP, past netfilter: strip them
    // where they enter the client's kernel.
    strip_mptcp_from_syn_acks(&lab.client, "PREROUTING");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5341);
    let server = start_serve(&lab, &["--iface", "srv0", "--listen", &listen.to_string()]);
    let n = |c: &str| lab.client.nstat(c).expect("nstat");
    let fallbacks = n("MPTcpExtMPCapableFallbackSYNACK");
    let len = 4 << 20;
    let back = lab
        .client
        .enter(|| {
            let mut s =
                mptcp_tests::mptcp_connect(listen, Duration::from_secs(10)).expect("connect");
            let mut w = s.try_clone().expect("clone");
            let sender = thread::spawn(move || {
                let data: Vec<u8> = Pattern::STREAM.bytes(0, len);
                w.write_all(&data).expect("write");
                w.shutdown(Shutdown::Write).expect("shutdown");
            });
            let mut back = Vec::new();
            s.read_to_end(&mut back).expect("read");
            sender.join().expect("sender");
            back
        })
        .expect("client ns");
    assert_pattern(&back, len);
    assert_eq!(n("MPTcpExtMPCapableFallbackSYNACK"), fallbacks + 1);
    assert_eq!(n("MPTcpExtMPCapableSYNACKRX"), 0);
    let stats = serve_stats(&lab, &server, 1);
    assert_eq!(stats["engine"]["bad_checksum"], 0, "{stats}");
}

/// A two-path lab whose kernel client has its path-2 endpoint (id 5) as
/// given (`subflow` or `subflow backup`), and `serve` on both interfaces.
fn kernel_client_endpoint_lab(port: u16, flags: &[&str]) -> (Lab, Server, SocketAddr) {
    let lab = two_path_lab(false);
    let mut args = vec![
        "mptcp",
        "endpoint",
        "add",
        "10.100.1.1",
        "dev",
        "cli1",
        "id",
        "5",
    ];
    args.extend(flags);
    lab.client.ip(&args).expect("endpoint");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let server = start_serve(&lab, &on_both_paths(&listen.to_string(), &[]));
    (lab, server, listen)
}

/// The kernel's subflow from `local` (an address of the client) in `ss`.
fn subflow_from<'a>(subflows: &'a [SubflowBytes], local: &str, ss: &str) -> &'a SubflowBytes {
    subflows
        .iter()
        .find(|s| {
            s.local.starts_with(&format!("{local}%")) || s.local.starts_with(&format!("{local}:"))
        })
        .unwrap_or_else(|| panic!("no subflow from {local}:\n{ss}"))
}

/// The kernel client joins path 2 as a backup subflow (MP_JOIN with the B
/// flag): the engine sends nothing on it while path 1 works, and when path
/// 1 goes down mid-transfer the rest of the echo arrives over the backup.
#[test]
fn kernel_backup_subflow_is_idle_until_the_regular_path_fails() {
    if !require_root() {
        return;
    }
    let (lab, _server, listen) = kernel_client_endpoint_lab(5342, &["subflow", "backup"]);
    let len = 32 << 20;
    let (back, ss) = kernel_mptcp_echo(&lab, listen, len, || {
        lab.client
            .ip(&["link", "set", &lab.paths[0].client_if, "down"])
            .expect("link down");
    });
    // Everything after the cut came over the backup, the only path left.
    assert_pattern(&back, len);
    let subflows = kernel_subflows(&ss);
    eprintln!("kernel subflows before the cut: {subflows:?}");
    assert!(subflows.len() >= 2, "{ss}");
    // Half the echo was back, all of it over path 1: the kernel received
    // nothing on the backup.
    let backup = subflow_from(&subflows, "10.100.1.1", &ss);
    assert_eq!(
        backup.received, 0,
        "the engine sent on the backup: {backup:?}"
    );
    let regular = subflow_from(&subflows, "10.100.0.1", &ss);
    assert!(regular.received >= (len / 2) as u64, "{regular:?}");
}

/// The kernel client turns its path-2 subflow into a backup mid-transfer
/// (`ip mptcp endpoint change ... backup` sends MP_PRIO): the engine stops
/// sending on it, while path 1 carries the rest.
#[test]
fn kernel_mp_prio_moves_the_engine_off_a_subflow() {
    if !require_root() {
        return;
    }
    let (lab, _server, listen) = kernel_client_endpoint_lab(5343, &["subflow"]);
    let prio_before = lab.client.nstat("MPTcpExtMPPrioTx").expect("nstat");
    let len = 64 << 20;
    let to_backup = || {
        lab.client
            .ip(&["mptcp", "endpoint", "change", "id", "5", "backup"])
            .expect("endpoint change");
    };
    let nothing = || {};
    let (back, ss) = kernel_mptcp_echo_marks(
        &lab,
        listen,
        len,
        &[
            (len / 4, &to_backup),
            (len / 2, &nothing),
            (len * 7 / 8, &nothing),
        ],
    );
    assert_pattern(&back, len);
    assert!(lab.client.nstat("MPTcpExtMPPrioTx").expect("nstat") > prio_before);
    let at = |i: usize| {
        let subflows = kernel_subflows(&ss[i]);
        eprintln!("kernel subflows at mark {i}: {subflows:?}");
        let p1 = subflow_from(&subflows, "10.100.0.1", &ss[i]).received;
        let p2 = subflow_from(&subflows, "10.100.1.1", &ss[i]).received;
        (p1, p2)
    };
    let (before1, before2) = at(0);
    let (mid1, mid2) = at(1);
    let (end1, end2) = at(2);
    // Both paths carried the first quarter.
    assert!(before1 > 0 && before2 > 0, "{:?}", ss[0]);
    // Between the second and third marks (3/8 of the echo, well after the
    // MP_PRIO), path 2 took nothing new; what it got just after the MP_PRIO
    // was already on its way.
    assert_eq!(end2, mid2, "path 2 still carried data after MP_PRIO");
    assert!(end1 - mid1 >= (len / 4) as u64, "{mid1} -> {end1}");
}

/// The kernel MPTCP server withdraws its announced address mid-transfer
/// (`ip mptcp endpoint delete`: REMOVE_ADDR, and it shuts its side of the
/// subflows to that address down itself): the engine client carries on
/// over the subflows left, the kernel checks the echo byte by byte, and
/// never has to answer a segment with RST. (The kernel's own shutdown
/// hides whether the engine acted on the REMOVE_ADDR; that reaction is
/// judged by mptcp_api.rs and by the client-role conformance replay.)
#[test]
fn engine_client_carries_on_when_a_kernel_server_withdraws_its_address() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&LabConfig {
        subflow_endpoints: false,
        ..LabConfig::unique(2)
    })
    .expect("lab");
    checksums_in_software(&lab, false);
    lab.server
        .ip(&[
            "mptcp",
            "endpoint",
            "add",
            &lab.paths[1].server_v4.to_string(),
            "dev",
            &lab.paths[1].server_if,
            "id",
            "7",
            "signal",
        ])
        .expect("endpoint");
    let remote = SocketAddr::new(lab.paths[0].server_v4.into(), 5344);
    let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 5344);
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(any).expect("MPTCP listen"))
        .expect("server ns");
    let served = kernel_echo_once(listener);
    let n = |c: &str| lab.server.nstat(c).expect("nstat");
    let rm_before = n("MPTcpExtRmAddrTx");
    let bytes: u64 = 64 << 20;
    let child = Command::new("ip")
        .args(["netns", "exec", lab.client.name(), "timeout", "120"])
        .arg(binary())
        .args([
            "connect",
            &remote.to_string(),
            "--iface",
            "cli0",
            "--iface",
            "cli1",
        ])
        .args([
            "--wait-subflows",
            "2",
            "--bytes",
            &bytes.to_string(),
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("connect");
    // Path 2 busy first.
    let srv1 = &lab.paths[1].server_if;
    let start = rx_bytes(&lab.server, srv1);
    assert!(
        wait_until(Duration::from_secs(30), || rx_bytes(&lab.server, srv1)
            >= start + (4 << 20)),
        "path 2 never carried 4 MiB"
    );
    lab.server
        .ip(&["mptcp", "endpoint", "delete", "id", "7"])
        .expect("endpoint delete");
    let at_removal = rx_bytes(&lab.server, srv1);
    let rsts_at_removal = n("TcpOutRsts");
    let out = child.wait_with_output().expect("connect");
    assert!(out.status.success(), "{}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_report(&report, bytes);
    assert_eq!(served.join().expect("server"), bytes);
    assert!(n("MPTcpExtRmAddrTx") > rm_before, "no REMOVE_ADDR sent");
    let after = rx_bytes(&lab.server, srv1) - at_removal;
    eprintln!("path 2 after the removal: {after} bytes");
    // The kernel closed its side of the withdrawn address's subflows; data
    // the engine went on sending there would meet its RSTs.
    let rsts = n("TcpOutRsts") - rsts_at_removal;
    eprintln!("kernel RSTs after the removal: {rsts}");
    assert!(rsts <= 4, "the kernel answered {rsts} segments with RST");
}

/// A middlebox in `ns` rewrites the first payload byte of one TCP segment
/// (of at least 500 bytes) to `dport`, fixing the TCP checksum: only the
/// DSS checksum can notice.
fn corrupt_one_segment(ns: &mptcp_tests::Netns, dport: u16) {
    let rule = format!(
        "add rule inet corrupt out tcp dport {dport} meta length > 500 \
         limit rate 1/hour burst 1 packets @ih,0,8 set 0x41"
    );
    for cmd in [
        "add table inet corrupt",
        "add chain inet corrupt out { type filter hook output priority 0 ; }",
        &rule,
    ] {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        ns.exec("nft", &args).expect("nft (apt install nftables)");
    }
}

/// A kernel MPTCP client with DSS checksums, on one subflow, sends `len`
/// bytes through a middlebox that changes one payload byte and fixes the
/// TCP checksum. Returns the kernel client's (MPFailRx, InfiniteMapTx,
/// DataCsumErr) increments and what came back before the read gave up.
fn corrupted_kernel_echo(port: u16, len: usize) -> ((u64, u64, u64), Vec<u8>) {
    let lab = one_path_lab();
    lab.client
        .exec("sysctl", &["-qw", "net.mptcp.checksum_enabled=1"])
        .expect("sysctl");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let _server = start_serve(&lab, &["--iface", "srv0", "--listen", &listen.to_string()]);
    corrupt_one_segment(&lab.client, port);
    let n = |c: &str| lab.client.nstat(c).expect("nstat");
    let counters = || {
        (
            n("MPTcpExtMPFailRx"),
            n("MPTcpExtInfiniteMapTx"),
            n("MPTcpExtDataCsumErr"),
        )
    };
    let before = counters();
    let back = lab
        .client
        .enter(|| {
            let mut s =
                mptcp_tests::mptcp_connect(listen, Duration::from_secs(10)).expect("connect");
            let mut w = s.try_clone().expect("clone");
            let sender = thread::spawn(move || {
                let _ = w.write_all(&Pattern::STREAM.bytes(0, len));
                let _ = w.shutdown(Shutdown::Write);
            });
            let mut back = Vec::new();
            let _ = s.read_to_end(&mut back);
            drop(s);
            sender.join().expect("sender");
            back
        })
        .expect("client ns");
    let after = counters();
    (
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        back,
    )
}

/// Only the DSS checksum can see the corruption: the engine catches it and
/// answers MP_FAIL, which the kernel counts, and the kernel falls back to
/// an infinite mapping as RFC 8684 section 3.7 asks.
#[test]
fn kernel_client_payload_corruption_is_caught_by_the_dss_checksum() {
    if !require_root() {
        return;
    }
    let ((mp_fail, infinite, csum_err), _) = corrupted_kernel_echo(5345, 1 << 20);
    assert_eq!(mp_fail, 1, "MP_FAIL received by the kernel");
    assert_eq!(infinite, 1, "infinite mappings sent by the kernel");
    assert_eq!(csum_err, 0, "the kernel's own DSS checksum errors");
}

/// After that fallback the echo should complete (what to do with the
/// corrupted byte aside). Today it stalls: the engine delivers nothing
/// more once the kernel switched to the infinite mapping. Visible as an
/// ignored (skipped) test until fixed.
#[test]
#[ignore = "after MP_FAIL and the kernel's infinite mapping the engine's echo stalls"]
fn kernel_client_echo_completes_after_an_mp_fail_fallback() {
    if !require_root() {
        return;
    }
    let len = 1 << 20;
    let (_, back) = corrupted_kernel_echo(5346, len);
    assert_eq!(back.len(), len, "echo length after the fallback");
}
