//! Paths that die and come back (mptcp_net-next #554's scenario): a
//! 200-byte request and its 200-byte answer every 100 ms over two emulated
//! paths, the kernel's MPTCP as the client and `mptcp-user serve` echoing.
//! One path goes down for a while (`;at=` in the emulator, counted from the
//! connection's SYN) and comes back.
//!
//! Figures: the longest gap the application sees between two answers (goal
//! 300 ms, limit 1 s), and how long after the path returns a subflow on it
//! carries data again (limit 2 s), read from the emulator's per-path
//! counters printed every 100 ms.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use mptcp_tests::cli::{on_both_paths, start_serve};
use mptcp_tests::{require_root, Lab, LabConfig};

const DOWN_AT: f64 = 3.0;
const UP_AT: f64 = 7.0;
const RUN: Duration = Duration::from_secs(11);

/// A capture process, stopped with the test.
struct Capture(std::process::Child);

impl Drop for Capture {
    fn drop(&mut self) {
        // SIGINT lets tcpdump flush its file.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

struct Figures {
    longest_gap: Duration,
    answers: usize,
    /// Seconds after UP_AT until the dead path carried a data packet again.
    back_after: Option<f64>,
}

/// The kernel client's request/response loop; returns the answers' arrival times.
fn request_response(lab: &Lab, listen: SocketAddr) -> Vec<Instant> {
    request_response_sized(lab, listen, 200)
}

/// [`request_response`] with requests (and answers) of `size` bytes.
fn request_response_sized(lab: &Lab, listen: SocketAddr, size: usize) -> Vec<Instant> {
    lab.client
        .enter(|| {
            let s = mptcp_tests::mptcp_connect(listen, Duration::from_secs(10)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(15)))
                .expect("timeout");
            let mut w = s.try_clone().expect("clone");
            let start = Instant::now();
            let writer = thread::spawn(move || {
                let req = vec![0x42u8; size];
                let mut k = 0u32;
                while start.elapsed() < RUN {
                    let due = start + Duration::from_millis(100) * k;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    if w.write_all(&req).is_err() {
                        break;
                    }
                    k += 1;
                }
                let _ = w.shutdown(std::net::Shutdown::Write);
                k as usize
            });
            let mut r = s;
            let mut arrivals = Vec::new();
            let mut buf = [0u8; 4096];
            let mut got = 0usize;
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let before = got / size;
                        got += n;
                        for _ in before..got / size {
                            arrivals.push(Instant::now());
                        }
                    }
                }
            }
            let sent = writer.join().expect("writer");
            assert_eq!(arrivals.len(), sent, "every request answered");
            arrivals
        })
        .expect("client ns")
}

/// When, after `up_at` seconds of emulator time, `path` first delivered a
/// data packet in either direction (an interval with more than ACK-sized traffic).
fn back_after(emulator_log: &str, path: usize, up_at: f64) -> Option<f64> {
    let mut last: Option<Vec<(u64, u64)>> = None;
    for line in emulator_log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let t = v["elapsed_s"].as_f64()?;
        let p = &v["paths"][path];
        let now: Vec<(u64, u64)> = ["up", "down"]
            .iter()
            .map(|d| {
                (
                    p[d]["delivered_bytes"].as_u64().unwrap_or(0),
                    p[d]["delivered_packets"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        if let Some(before) = &last {
            // An answer is 200 bytes of data in a packet of about 270 bytes; ACKs are under 100.
            let data = now.iter().zip(before.iter()).any(|(n, b)| {
                let (db, dp) = (n.0 - b.0, n.1 - b.1);
                dp > 0 && db / dp > 150
            });
            if t > up_at && data {
                return Some(t - up_at);
            }
        }
        last = Some(now);
    }
    None
}

/// How the path dies: in the emulator's model (the endpoints see nothing
/// but silence), or as a pulled cable: the emulator's port set down, so the
/// engine's interface loses its carrier and its link watcher tells it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Death {
    Silent,
    Carrier,
}

/// Sets the emulator's port toward the engine down at DOWN_AT and up at
/// UP_AT, counted from the connection's SYN (the emulator's clock start).
fn pull_cable(lab: &Lab, path: usize, engine_client: bool) -> thread::JoinHandle<()> {
    let emu = mptcp_tests::Netns::existing(lab.emu.as_ref().expect("emulated lab").name());
    let log = lab.emulator.as_ref().expect("emulator").log.clone();
    let port = format!("{}{path}", if engine_client { "c" } else { "s" });
    thread::spawn(move || {
        let started = mptcp_tests::wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("clock started"))
        });
        assert!(started, "no SYN through the emulator");
        let t0 = Instant::now();
        for (at, state) in [(DOWN_AT, "down"), (UP_AT, "up")] {
            if let Some(wait) =
                (t0 + Duration::from_secs_f64(at)).checked_duration_since(Instant::now())
            {
                thread::sleep(wait);
            }
            emu.ip(&["link", "set", &port, state]).expect("link set");
        }
    })
}

/// Who runs which end: the engine as client (a kernel echo server), the
/// engine as server (`mptcp-user serve` echoing to a kernel client), or the
/// kernel at both ends (the baseline).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    EngineClient,
    EngineServer,
    KernelBoth,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::EngineClient => "engine client",
            Who::EngineServer => "kernel client, engine server",
            Who::KernelBoth => "kernel client, kernel server (baseline)",
        }
    }
}

fn run_with(dead_path: usize, who: Who, death: Death) -> Figures {
    let engine_client = who == Who::EngineClient;
    let dying = match death {
        Death::Silent => format!("rate=20mbit,delay=20ms;at={DOWN_AT}s,down;at={UP_AT}s,up"),
        Death::Carrier => "rate=20mbit,delay=20ms".to_string(),
    };
    // The preferred (lower RTT) path 0 carries the answers while both work:
    // when path 1 is the one that died, path 0 dies for good a second after
    // path 1 came back, so path 1 must carry the data again.
    let specs = if dead_path == 0 {
        [dying, "rate=20mbit,delay=30ms".to_string()]
    } else {
        [
            format!("rate=20mbit,delay=20ms;at={}s,down", UP_AT + 1.0),
            dying.replace("delay=20ms", "delay=30ms"),
        ]
    };
    let specs = [specs[0].as_str(), specs[1].as_str()];
    let mut cfg = LabConfig::emulated(&specs);
    cfg.emulator_args = ["--clock-from-syn", "--stats-interval", "0.1"]
        .map(String::from)
        .to_vec();
    let lab = Lab::up(&cfg).expect("lab");
    // MPTCP_FAILOVER_PCAP=DIR: both sides of every path captured in the
    // emulator's namespace (c<i>: the client's view), for reading a gap.
    let _captures: Vec<_> = std::env::var("MPTCP_FAILOVER_PCAP")
        .ok()
        .map(|dir| {
            let emu = lab.emu.as_ref().expect("emulated lab");
            let client = match who {
                Who::EngineClient => "engine-client",
                Who::EngineServer => "kernel-client",
                Who::KernelBoth => "kernel-both",
            };
            (0..2)
                .map(|i| {
                    let file = format!("{dir}/{client}-path{dead_path}-dead-c{i}.pcap");
                    Capture(
                        emu.command("tcpdump")
                            .args(["-i", &format!("c{i}"), "-s", "200", "-w", &file])
                            .stderr(std::process::Stdio::null())
                            .spawn()
                            .expect("tcpdump"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let cable = (death == Death::Carrier).then(|| pull_cable(&lab, dead_path, engine_client));
    let (longest_gap, answers) = if engine_client {
        engine_request_response(&lab)
    } else {
        let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 7601);
        let (_server, _echo) = match who {
            Who::KernelBoth => (None, Some(kernel_echo_server(&lab, listen.port()))),
            _ => (
                Some(start_serve(&lab, &on_both_paths(&listen.to_string(), &[]))),
                None,
            ),
        };
        let arrivals = request_response(&lab, listen);
        let gap = arrivals
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        (gap, arrivals.len())
    };
    if let Some(c) = cable {
        c.join().expect("cable");
    }
    let log = lab.emulator.as_ref().expect("emulator").output();
    Figures {
        longest_gap,
        answers,
        back_after: back_after(&log, dead_path, UP_AT),
    }
}

fn check(dead_path: usize, engine_client: bool) {
    check_with(dead_path, engine_client, Death::Silent)
}

fn check_with(dead_path: usize, engine_client: bool, death: Death) {
    let who = if engine_client {
        Who::EngineClient
    } else {
        Who::EngineServer
    };
    let f = run_with(dead_path, who, death);
    let client = who.name();
    eprintln!(
        "{client}, path {dead_path} {} from {DOWN_AT} s to {UP_AT} s: {} answers, longest gap {:?} (goal 300 ms), data on it again {:?} s after it came back",
        match death {
            Death::Silent => "down",
            Death::Carrier => "unplugged",
        },
        f.answers,
        f.longest_gap,
        f.back_after
    );
    // The limit in both roles (the goal, 300 ms, is printed).
    let limit = Duration::from_secs(1);
    assert!(
        f.longest_gap < limit,
        "longest gap {:?} (limit {limit:?})",
        f.longest_gap
    );
    let back = f
        .back_after
        .expect("no data on the path after it came back");
    assert!(
        back < 2.0,
        "data on the path again only {back:.2} s after it came back"
    );
}

#[test]
fn kernel_client_survives_the_initial_path_dying() {
    if !require_root() {
        return;
    }
    check(0, false);
}

#[test]
fn kernel_client_survives_the_second_path_dying() {
    if !require_root() {
        return;
    }
    check(1, false);
}

#[test]
fn engine_client_survives_the_initial_path_dying() {
    if !require_root() {
        return;
    }
    check(0, true);
}

#[test]
fn engine_client_survives_the_second_path_dying() {
    if !require_root() {
        return;
    }
    check(1, true);
}

/// The same scenario with the kernel at both ends, for comparison: its
/// figures are printed; the test holds only that every request was answered.
/// With `MPTCP_LAB_FULL=1` only (25 s; it tests no code of ours).
#[test]
fn kernel_to_kernel_baseline() {
    if !require_root() {
        return;
    }
    if std::env::var("MPTCP_LAB_FULL").as_deref() != Ok("1") {
        eprintln!("skipped: the kernel-to-kernel baseline runs with MPTCP_LAB_FULL=1");
        return;
    }
    for dead_path in [0, 1] {
        let f = run_with(dead_path, Who::KernelBoth, Death::Silent);
        eprintln!(
            "{}, path {dead_path} down from {DOWN_AT} s to {UP_AT} s: {} answers, longest gap {:?}, data on it again {:?} s after it came back",
            Who::KernelBoth.name(),
            f.answers,
            f.longest_gap,
            f.back_after
        );
        assert!(f.answers > 90, "{} answers", f.answers);
    }
}

#[test]
fn engine_client_hears_its_initial_link_lose_its_carrier() {
    if !require_root() {
        return;
    }
    check_with(0, true, Death::Carrier);
}

#[test]
fn engine_server_hears_its_initial_link_lose_its_carrier() {
    if !require_root() {
        return;
    }
    check_with(0, false, Death::Carrier);
}

/// How many of the emulator's 100 ms intervals between `from` and `to`
/// seconds saw `path` deliver data (packets of 150 bytes or more on
/// average) in direction `dir` ("up": client to server), and how many
/// intervals there were.
fn data_intervals(
    emulator_log: &str,
    path: usize,
    dir: &str,
    from: f64,
    to: f64,
) -> (usize, usize) {
    let mut last: Option<(u64, u64)> = None;
    let (mut data, mut all) = (0, 0);
    for line in emulator_log.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let t = v["elapsed_s"].as_f64().unwrap_or(0.0);
        let d = &v["paths"][path][dir];
        let now = (
            d["delivered_bytes"].as_u64().unwrap_or(0),
            d["delivered_packets"].as_u64().unwrap_or(0),
        );
        if let Some(b) = last {
            if t > from && t <= to {
                all += 1;
                let (db, dp) = (now.0 - b.0, now.1 - b.1);
                if dp > 0 && db / dp > 150 {
                    data += 1;
                }
            }
        }
        last = Some(now);
    }
    (data, all)
}

#[test]
fn a_backup_subflow_carries_the_engines_data_only_while_the_regular_one_is_dead() {
    if !require_root() {
        return;
    }
    // Path 1 is the backup, and the faster one: were the flag ignored, the
    // lowest-RTT scheduler would prefer it. Path 0 dies from 3 s to 7 s.
    let specs = [
        format!("rate=20mbit,delay=30ms;at={DOWN_AT}s,down;at={UP_AT}s,up"),
        "rate=20mbit,delay=10ms".to_string(),
    ];
    let mut cfg = LabConfig::emulated(&[specs[0].as_str(), specs[1].as_str()]);
    cfg.emulator_args = ["--clock-from-syn", "--stats-interval", "0.1"]
        .map(String::from)
        .to_vec();
    cfg.subflow_endpoints = false;
    let lab = Lab::up(&cfg).expect("lab");
    // The kernel client joins from path 1 with the backup flag on its MP_JOIN.
    lab.client
        .ip(&[
            "mptcp",
            "endpoint",
            "add",
            &lab.paths[1].client_v4.to_string(),
            "dev",
            &lab.paths[1].client_if,
            "subflow",
            "backup",
        ])
        .expect("backup endpoint");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 7603);
    let _server = start_serve(&lab, &on_both_paths(&listen.to_string(), &[]));
    // 64 KiB answers: more than path 0's window takes at once, so a
    // scheduler that ignored the flag would spill onto the backup.
    let arrivals = request_response_sized(&lab, listen, 64 << 10);
    let log = lab.emulator.as_ref().expect("emulator").output();
    // The engine's answers ("down") on the backup path: before the outage,
    // during it, and after path 0 is back (and its first probe answered).
    let before = data_intervals(&log, 1, "down", 1.0, DOWN_AT);
    let during = data_intervals(&log, 1, "down", DOWN_AT + 0.5, UP_AT);
    let after = data_intervals(&log, 1, "down", UP_AT + 1.0, RUN.as_secs_f64() - 0.5);
    let on_path_0 = data_intervals(&log, 0, "down", 1.0, DOWN_AT);
    eprintln!(
        "{} answers; intervals with engine data on the backup path: before {before:?}, during {during:?}, after {after:?}; on path 0 before {on_path_0:?}",
        arrivals.len()
    );
    assert!(before.1 > 10 && after.1 > 10, "emulator stats missing");
    assert_eq!(before.0, 0, "backup used while the regular path worked");
    assert!(
        on_path_0.0 * 10 >= on_path_0.1 * 8,
        "path 0 idle: {on_path_0:?}"
    );
    assert!(
        during.0 * 10 >= during.1 * 8,
        "backup idle while path 0 was dead: {during:?}"
    );
    assert_eq!(after.0, 0, "backup still used after path 0 came back");
}

/// `mptcp-user connect --request-response 200` against a kernel MPTCP echo
/// server that announces its second address; returns the longest gap and the answers.
fn engine_request_response(lab: &Lab) -> (Duration, usize) {
    let port = 7602;
    let echo = kernel_echo_server(lab, port);
    let remote = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", lab.client.name(), "timeout", "60"])
        .arg(mptcp_tests::cli::binary())
        .args([
            "connect",
            &remote.to_string(),
            "--iface",
            "cli0",
            "--iface",
            "cli1",
        ])
        .args(["--request-response", "200", "--time"])
        .arg(RUN.as_secs_f64().to_string())
        .arg("--json")
        .output()
        .expect("connect");
    echo.join().expect("echo");
    assert!(
        out.status.success(),
        "{}",
        mptcp_tests::cli::output_text(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["answers"], v["requests"], "{v}");
    let gap = Duration::from_secs_f64(v["longest_gap_ms"].as_f64().expect("gap") / 1e3);
    (gap, v["answers"].as_u64().unwrap_or(0) as usize)
}

/// A kernel MPTCP echo server on `port` that announces its second address.
fn kernel_echo_server(lab: &Lab, port: u16) -> thread::JoinHandle<()> {
    lab.server_signals_v4(1).expect("endpoint");
    let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(any).expect("listen"))
        .expect("server ns");
    thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = c.shutdown(std::net::Shutdown::Write);
    })
}
