//! The engine and the kernel's MPTCP over bad networks: two emulated paths
//! (`mptcp-user emulate` between the namespaces), the kernel as the peer in
//! both roles, 16 MiB each way checked byte by byte.
//!
//! - Profiles after the kernel's `mptcp_connect.sh` (loss 0.01%..1%,
//!   reordering, delay 0..100 ms, asymmetric paths), DSS checksums on and
//!   off, IPv4 and IPv6: `profiles_sampled` runs two cases by default;
//!   `MPTCP_LAB_FULL=1` runs every profile x role x checksum x family.
//! - After `simult_flows.sh`: two shaped paths, goodput against their summed
//!   rate, in both directions. The goal is 95% (printed, a target: see
//!   docs/emulator.md for the figures); the test asserts 85% of the payload
//!   capacity, about what the kernel's own test asks.
//!   `simult_flows_sampled` runs 10+10 Mbit/s and 15+5 Mbit/s with 25 ms on
//!   the faster path, engine sending and kernel sending; `MPTCP_LAB_FULL=1`
//!   adds the other delay placements.
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use mptcp_engine::app::Pattern;
use mptcp_tests::cli::{binary, on_both_paths, output_text, start_serve};
use mptcp_tests::{require_root, Lab, LabConfig};

fn pattern_byte(offset: u64) -> u8 {
    Pattern::STREAM.byte(offset)
}

const LEN: usize = 16 << 20;

fn full() -> bool {
    std::env::var("MPTCP_LAB_FULL").as_deref() == Ok("1")
}

#[derive(Clone, Copy, Debug)]
enum Role {
    /// A kernel MPTCP client echoes through `mptcp-user serve`.
    KernelClient,
    /// `mptcp-user connect` echoes through a kernel MPTCP server.
    EngineClient,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    paths: [&'static str; 2],
    role: Role,
    checksums: bool,
    v6: bool,
}

fn lab_for(paths: &[&str], kernel_client_endpoints: bool) -> Lab {
    let mut cfg = LabConfig::emulated(paths);
    cfg.subflow_endpoints = kernel_client_endpoints;
    Lab::up(&cfg).expect("lab")
}

fn addrs(lab: &Lab, v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (lab.paths[0].server_v6.into(), lab.paths[1].server_v6.into())
    } else {
        (lab.paths[0].server_v4.into(), lab.paths[1].server_v4.into())
    }
}

fn first_difference(back: &[u8]) -> Option<usize> {
    back.iter()
        .enumerate()
        .position(|(i, b)| *b != pattern_byte(i as u64))
}

/// Writes the pattern and reads the echo at once; returns what came back.
fn echo_through(stream: TcpStream, len: usize) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let data: Vec<u8> = (0..len as u64).map(pattern_byte).collect();
        w.write_all(&data).expect("write");
        w.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut r = stream;
    let mut back = Vec::with_capacity(len);
    r.read_to_end(&mut back).expect("read");
    sender.join().expect("sender");
    back
}

/// A kernel MPTCP echo server for one connection, any address.
fn kernel_echo_once(listener: TcpListener) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(120)))
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

fn checksum_sysctl(ns: &mptcp_tests::Netns, on: bool) {
    ns.exec(
        "sysctl",
        &[
            "-qw",
            &format!("net.mptcp.checksum_enabled={}", u8::from(on)),
        ],
    )
    .expect("sysctl");
}

/// Runs one case; returns an error text instead of panicking so a matrix
/// reports every failing case.
fn run_case(case: &Case, port: u16) -> Result<(), String> {
    let started = Instant::now();
    // The kernel client finds the second path by its endpoint (IPv4) or by
    // the engine's ADD_ADDR (IPv6: neighbour discovery answers only for an
    // interface's own addresses).
    let lab = lab_for(
        &case.paths,
        matches!(case.role, Role::KernelClient) && !case.v6,
    );
    let (first, second) = addrs(&lab, case.v6);
    let listen = SocketAddr::new(first, port);
    let kernel = match case.role {
        Role::KernelClient => &lab.client,
        Role::EngineClient => &lab.server,
    };
    checksum_sysctl(kernel, case.checksums);
    let csum_before = kernel.nstat("MPTcpExtDataCsumErr").unwrap_or(0);
    match case.role {
        Role::KernelClient => {
            let listen_s = listen.to_string();
            let second_s = second.to_string();
            let mut args = vec!["--iface", "srv0", "--iface", "srv1", "--listen", &listen_s];
            if case.v6 {
                args.extend(["--announce", &second_s]);
            }
            let _server = start_serve(&lab, &args);
            let back = lab
                .client
                .enter(|| {
                    let s = mptcp_tests::mptcp_connect(listen, Duration::from_secs(30))
                        .map_err(|e| format!("connect: {e:#}"))?;
                    Ok::<_, String>(echo_through(s, LEN))
                })
                .map_err(|e| format!("{e:#}"))??;
            if back.len() != LEN || first_difference(&back).is_some() {
                return Err(format!(
                    "echo of {} bytes, first difference at {:?}",
                    back.len(),
                    first_difference(&back)
                ));
            }
            let joins = lab.client.nstat("MPTcpExtMPJoinSynAckRx").unwrap_or(0);
            if joins == 0 {
                return Err("the kernel client never joined a second subflow".into());
            }
        }
        Role::EngineClient => {
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
                .map_err(|e| format!("{e:#}"))?;
            let any: IpAddr = if case.v6 {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            let listener = lab
                .server
                .enter(|| mptcp_tests::mptcp_listen(SocketAddr::new(any, port)))
                .map_err(|e| format!("{e:#}"))?
                .map_err(|e| format!("{e:#}"))?;
            let served = kernel_echo_once(listener);
            let out = Command::new("ip")
                .args(["netns", "exec", lab.client.name(), "timeout", "240"])
                .arg(binary())
                .args([
                    "connect",
                    &listen.to_string(),
                    "--iface",
                    "cli0",
                    "--iface",
                    "cli1",
                    "--bytes",
                    &LEN.to_string(),
                    "--json",
                ])
                .output()
                .expect("connect");
            if !out.status.success() {
                return Err(format!("connect failed: {}", output_text(&out)));
            }
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("JSON: {e}"))?;
            let end = &report["end"];
            if end["byte_exact"] != true || end["sum_received"]["bytes"] != LEN as u64 {
                return Err(format!("not byte-exact: {end}"));
            }
            let served = served.join().map_err(|_| "kernel echo panicked")?;
            if served != LEN as u64 {
                return Err(format!("the kernel echoed {served} bytes"));
            }
            if lab.server.nstat("MPTcpExtMPJoinAckRx").unwrap_or(0) == 0 {
                return Err("no join reached the kernel server".into());
            }
        }
    }
    let csum_errors = kernel.nstat("MPTcpExtDataCsumErr").unwrap_or(0) - csum_before;
    if csum_errors != 0 {
        return Err(format!("{csum_errors} DSS checksum errors"));
    }
    if kernel.nstat("MPTcpExtMPCapableFallbackACK").unwrap_or(0)
        + kernel.nstat("MPTcpExtMPCapableFallbackSYNACK").unwrap_or(0)
        != 0
    {
        return Err("the kernel fell back to TCP".into());
    }
    eprintln!("ok: {case:?} in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn run_cases(cases: &[Case], port: u16) {
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            run_case(c, port + i as u16)
                .err()
                .map(|e| format!("{c:?}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The profiles of mptcp_connect.sh, as pairs of path specs.
const PROFILES: &[[&str; 2]] = &[
    ["rate=100mbit,loss=0.01%", "rate=100mbit,delay=5ms"],
    [
        "rate=100mbit,delay=10ms,loss=0.1%",
        "rate=100mbit,delay=20ms",
    ],
    ["rate=50mbit,delay=20ms,loss=1%", "rate=50mbit,delay=10ms"],
    [
        "rate=100mbit,delay=10ms,reorder=1%",
        "rate=100mbit,delay=10ms,reorder=5%",
    ],
    ["rate=100mbit", "rate=100mbit,delay=100ms"],
    [
        "rate=100mbit,delay=100ms,loss=0.1%",
        "rate=100mbit,delay=50ms",
    ],
    // Asymmetric: each direction its own rate, delay and loss.
    [
        "rate=50mbit,delay=10ms,loss=1%/rate=20mbit,delay=30ms",
        "rate=20mbit,delay=40ms/rate=50mbit,delay=10ms,loss=0.1%",
    ],
];

#[test]
fn profiles_sampled() {
    if !require_root() {
        return;
    }
    let cases: Vec<Case> = if full() {
        let mut v = Vec::new();
        for paths in PROFILES {
            for role in [Role::KernelClient, Role::EngineClient] {
                for checksums in [false, true] {
                    for v6 in [false, true] {
                        v.push(Case {
                            paths: *paths,
                            role,
                            checksums,
                            v6,
                        });
                    }
                }
            }
        }
        v
    } else {
        vec![
            Case {
                paths: PROFILES[1],
                role: Role::KernelClient,
                checksums: true,
                v6: false,
            },
            Case {
                paths: PROFILES[6],
                role: Role::EngineClient,
                checksums: false,
                v6: true,
            },
        ]
    };
    run_cases(&cases, 6100);
}

/// Reads `len` pattern bytes; returns the goodput in bit/s from the moment
/// a tenth has arrived to the end (the steady state, past slow start).
fn receive_pattern(mut stream: TcpStream, len: usize) -> Result<f64, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0usize;
    let mut tenth = None;
    loop {
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        if let Some(i) = (0..n).position(|i| buf[i] != pattern_byte((got + i) as u64)) {
            return Err(format!("byte {} differs", got + i));
        }
        got += n;
        if tenth.is_none() && got >= len / 10 {
            tenth = Some((Instant::now(), got));
        }
    }
    if got != len {
        return Err(format!("{got} of {len} bytes arrived"));
    }
    let (t, at) = tenth.ok_or("nothing arrived")?;
    Ok(((len - at) * 8) as f64 / t.elapsed().as_secs_f64())
}

/// The engine sends (`serve --mode source`) to a kernel MPTCP client.
fn engine_sends(lab: &Lab, port: u16) -> Result<f64, String> {
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let _server = start_serve(
        lab,
        &on_both_paths(&listen.to_string(), &["--mode", "source"]),
    );
    lab.client
        .enter(|| {
            let mut s = mptcp_tests::mptcp_connect(listen, Duration::from_secs(30))
                .map_err(|e| format!("connect: {e:#}"))?;
            s.write_all(&(LEN as u64).to_be_bytes())
                .map_err(|e| e.to_string())?;
            receive_pattern(s, LEN)
        })
        .map_err(|e| format!("{e:#}"))?
}

/// A kernel MPTCP server sends to `mptcp-user connect --reverse`.
fn kernel_sends(lab: &Lab, port: u16) -> Result<f64, String> {
    lab.server_signals_v4(1).map_err(|e| format!("{e:#}"))?;
    let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(any))
        .map_err(|e| format!("{e:#}"))?
        .map_err(|e| format!("{e:#}"))?;
    let source = thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        let mut req = [0u8; 8];
        conn.read_exact(&mut req)?;
        let n = u64::from_be_bytes(req) as usize;
        let data: Vec<u8> = (0..n as u64).map(pattern_byte).collect();
        conn.write_all(&data)?;
        conn.shutdown(Shutdown::Write)
    });
    let remote = SocketAddr::new(lab.paths[0].server_v4.into(), port);
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
            "--reverse",
            "--bytes",
            &LEN.to_string(),
            "--json",
        ])
        .output()
        .expect("connect");
    if !out.status.success() {
        return Err(format!("connect failed: {}", output_text(&out)));
    }
    source
        .join()
        .map_err(|_| "source panicked")?
        .map_err(|e| format!("kernel source: {e}"))?;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("JSON: {e}"))?;
    if report["end"]["byte_exact"] != true {
        return Err(format!("not byte-exact: {}", report["end"]));
    }
    // Steady state as on the other side: the intervals after a tenth had arrived, the last one too.
    let ivs = report["intervals"].as_array().ok_or("no intervals")?;
    let mut seen = 0u64;
    let (mut bytes, mut secs) = (0u64, 0.0);
    for iv in ivs {
        let b = iv["sum"]["bytes"].as_u64().unwrap_or(0);
        if seen >= (LEN / 10) as u64 {
            bytes += b;
            secs += iv["sum"]["seconds"].as_f64().unwrap_or(0.0);
        }
        seen += b;
    }
    if secs == 0.0 {
        return Err(format!("too few intervals: {report}"));
    }
    Ok(bytes as f64 * 8.0 / secs)
}

/// Rates count IP bytes; a full MPTCP data segment of 1500 IP bytes carries
/// 1428 bytes of data (IP and TCP headers 40, timestamps 12, a DSS mapping
/// with its data ACK 20), so goodput is judged against that share.
const PAYLOAD_SHARE: f64 = 1428.0 / 1500.0;
/// What the test asserts (simult_flows.sh asks about this much); the goal
/// of 95% is printed with each figure.
const FLOOR: f64 = 0.85;

/// simult_flows.sh's cases: (path specs, summed rate in bit/s).
const SIMULT: &[([&str; 2], f64)] = &[
    (["rate=10mbit", "rate=10mbit"], 20e6),
    (["rate=15mbit,delay=25ms", "rate=5mbit"], 20e6),
    (["rate=10mbit,delay=25ms", "rate=10mbit"], 20e6),
    (["rate=15mbit", "rate=5mbit,delay=25ms"], 20e6),
    (["rate=15mbit,delay=25ms", "rate=5mbit,delay=25ms"], 20e6),
];

#[test]
fn simult_flows_sampled() {
    if !require_root() {
        return;
    }
    let cases = if full() { SIMULT } else { &SIMULT[..2] };
    // MPTCP_SIMULT_CASE=I: only case I of the full list (for repeated runs).
    let only: Option<usize> = std::env::var("MPTCP_SIMULT_CASE")
        .ok()
        .and_then(|v| v.parse().ok());
    let cases = only.map_or(cases, |i| &SIMULT[i..=i]);
    let mut failures = Vec::new();
    for (i, (paths, sum)) in cases.iter().enumerate() {
        for engine_sender in [true, false] {
            let mut lab = lab_for(paths, true);
            let port = 6300 + 2 * i as u16 + u16::from(engine_sender);
            let rate = if engine_sender {
                engine_sends(&lab, port)
            } else {
                kernel_sends(&lab, port)
            };
            // What each path carried and dropped toward the receiver (the
            // client: the server sends in both cases).
            if let Ok(json) = lab.emulator.as_mut().expect("emulator").stop() {
                let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
                for p in 0..2 {
                    let d = &v["paths"][p]["down"];
                    eprintln!(
                        "  path {p}: delivered {} packets, dropped by the queue {}, largest queue {} bytes",
                        d["delivered_packets"], d["dropped_queue"], d["max_queue_bytes"]
                    );
                }
            }
            let who = if engine_sender { "engine" } else { "kernel" };
            match rate {
                Ok(r) => {
                    let capacity = sum * PAYLOAD_SHARE;
                    eprintln!(
                        "{paths:?}, {who} sending: {:.2} Mbit/s goodput, {:.1}% of {:.0} Mbit/s, {:.1}% of its payload capacity (goal 95%)",
                        r / 1e6,
                        100.0 * r / sum,
                        sum / 1e6,
                        100.0 * r / capacity
                    );
                    // The 95% goal is a target, reported (docs/emulator.md);
                    // the test holds the kernel selftest's bar, which proves
                    // both paths carry their share on a loaded machine.
                    if r < FLOOR * capacity {
                        failures.push(format!(
                            "{paths:?}, {who} sending: {:.1}% of the summed payload capacity (floor {:.0}%)",
                            100.0 * r / capacity,
                            100.0 * FLOOR
                        ));
                    }
                }
                Err(e) => failures.push(format!("{paths:?}, {who} sending: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
