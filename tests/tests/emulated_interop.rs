//! The engine and the kernel's MPTCP over bad networks: two emulated paths
//! (`mptcp-user emulate` between the namespaces), the kernel as the peer in
//! both roles, 16 MiB each way checked byte by byte.
//!
//! - Profiles after the kernel's `mptcp_connect.sh` (loss 0.01%..1%,
//!   reordering, delay 0..100 ms, asymmetric paths), DSS checksums on and
//!   off, IPv4 and IPv6: `profiles_sampled` runs two cases by default;
//!   `MPTCP_LAB_FULL=1` runs every profile x role x checksum x family.
//! - After `simult_flows.sh`: two shaped paths must carry at least 95% of
//!   their summed rate, in both directions (the kernel's own test asks ~85%).
//!   `simult_flows_sampled` runs 10+10 Mbit/s and 15+5 Mbit/s with 25 ms on
//!   the faster path, engine sending and kernel sending; `MPTCP_LAB_FULL=1`
//!   adds the other delay placements.
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use mptcp_tests::cli::{binary, output_text, start_serve};
use mptcp_tests::{require_root, Lab, LabConfig};
use mptcp_user::worker::pattern_byte;

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
