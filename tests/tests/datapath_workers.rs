//! Several workers (issue 12): veths with 4 queues, `serve --workers 2`
//! and `load --workers 2`, the kernel's MPTCP on the other side.
//!
//! On veth the receive queue of a frame is the sender's transmit queue,
//! which the kernel picks per socket at random (and may change on a
//! retransmission timeout): the subflows of one connection land on both
//! workers' queues, so frames must be handed to the connection's owner.
//! Each test checks, from `ctl --json` and `stats --json`, that every
//! connection's subflows all live on one worker, that both workers own
//! connections, and that hand-offs happened.

use std::net::SocketAddr;

use mptcp_tests::cli::{
    ctl_json, on_both_paths, release_binary, run_load, start_serve_release, start_serve_with,
    wait_stats, EchoClients,
};
use mptcp_tests::{require_root, KernelEchoServer, Lab, LabConfig};
use serde_json::Value;

/// A lab of two paths whose veths have 4 queues each, and a second client
/// address on each path: with `subflow` endpoints on three of the four
/// client addresses, every kernel connection has 4 subflows.
fn four_queue_lab() -> Lab {
    let lab = Lab::up(&LabConfig {
        queues: 4,
        subflow_endpoints: false,
        ..LabConfig::unique(2)
    })
    .expect("lab");
    for (i, p) in lab.paths.iter().enumerate() {
        let extra = format!("10.100.{i}.3");
        lab.client
            .ip(&["addr", "add", &format!("{extra}/24"), "dev", &p.client_if])
            .expect("address");
        let mut endpoints = vec![extra];
        if i > 0 {
            endpoints.push(p.client_v4.to_string());
        }
        for e in endpoints {
            lab.client
                .ip(&[
                    "mptcp",
                    "endpoint",
                    "add",
                    &e,
                    "dev",
                    &p.client_if,
                    "subflow",
                ])
                .expect("endpoint");
        }
    }
    for ns in [&lab.client, &lab.server] {
        ns.mptcp_limits(8).expect("limits");
    }
    lab
}

/// `serve` arguments: both server interfaces, `listen`, two workers, and `more`.
fn two_workers<'a>(listen: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = on_both_paths(listen, &["--workers", "2"]);
    args.extend_from_slice(more);
    args
}

/// Per-worker figures: (connections, rx_frames, handoffs) by worker index.
fn workers(v: &Value) -> Vec<(u64, u64, u64)> {
    let mut w: Vec<(usize, (u64, u64, u64))> = v["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers array: {v}"))
        .iter()
        .map(|e| {
            let n = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k}: {e}"));
            (
                e["worker"].as_u64().unwrap() as usize,
                (n("connections"), n("rx_frames"), n("handoffs")),
            )
        })
        .collect();
    w.sort();
    w.into_iter().map(|(_, f)| f).collect()
}

#[test]
fn two_workers_serve_kernel_clients_with_four_subflows_each() {
    if !require_root() {
        return;
    }
    let n = 200;
    let lab = four_queue_lab();
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5601);
    let listen_s = listen.to_string();
    let server = start_serve_release(&lab, &two_workers(&listen_s, &[]));
    let pid = server.0.id();
    let mut clients = EchoClients::start(&lab.client, listen, n, 64 << 10, true);
    let echoed = clients.line();
    eprintln!("{n} concurrent 64 KiB echoes: {echoed}");
    assert_eq!(echoed["exact"], n, "{echoed}");
    // Every connection gets its three joins, while the clients hold on.
    let v = wait_stats(&lab.server, pid, 30, |v| {
        v["engine"]["counters"]["join_accepted"].as_u64() >= Some(3 * n as u64)
    });
    assert_eq!(v["engine"]["counters"]["join_refused"], 0, "{v}");
    // Each connection, and all four of its subflows, on one worker.
    let rows = ctl_json(lab.server.name(), pid, &["connections"]);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), n, "{rows:?}");
    let mut hist = std::collections::BTreeMap::new();
    for r in rows {
        *hist
            .entry((r["worker"].as_u64(), r["subflows"].as_u64()))
            .or_insert(0) += 1;
    }
    eprintln!(
        "(worker, subflows) -> connections: {hist:?}; {}",
        v["workers"]
    );
    let mut per_worker = [0u64; 2];
    for r in rows {
        assert_eq!(r["subflows"], 4, "{r}");
        per_worker[r["worker"].as_u64().expect("worker") as usize] += 1;
    }
    eprintln!("connections per worker (ctl): {per_worker:?}");
    assert!(per_worker.iter().all(|&c| c > 0), "{per_worker:?}");
    let w = workers(&v);
    eprintln!("workers (connections, rx_frames, handoffs): {w:?}");
    assert_eq!(w.len(), 2, "{v}");
    assert_eq!([w[0].0, w[1].0], per_worker, "stats and ctl agree");
    assert!(w.iter().all(|f| f.1 > 0), "{w:?}");
    assert!(w.iter().map(|f| f.2).sum::<u64>() > 0, "hand-offs: {w:?}");
    assert!(v["classifier"]["owner_tagged"].as_u64() > Some(0), "{v}");
    clients.release();
    let closed = clients.line();
    assert_eq!(closed["closed"], n, "{closed}");
    let v = wait_stats(&lab.server, pid, 20, |v| v["engine"]["connections"] == 0);
    assert_eq!(v["engine"]["closed"], n, "{v}");
    for e in v["workers"].as_array().expect("workers") {
        assert_eq!(e["handoff_dropped"], 0, "{e}");
        assert_eq!(e["affinity_failed"], 0, "{e}");
        assert_eq!(e["panics"], 0, "{e}");
    }
    drop(server);
}

#[test]
fn two_load_workers_against_a_kernel_server_with_four_subflows_each() {
    if !require_root() {
        return;
    }
    let lab = four_queue_lab();
    // The kernel server announces its second address: the engine's
    // fullmesh opens 2 local x 2 remote addresses = 4 subflows.
    lab.server_signals_v4(1).expect("signal endpoint");
    let to = SocketAddr::new(lab.paths[0].server_v4.into(), 5602);
    let kernel = KernelEchoServer::start(&lab.server, to);
    let r = run_load(
        &lab,
        to,
        &[
            "--workers",
            "2",
            "--subflows",
            "4",
            "--concurrency",
            "200",
            "--connections",
            "200",
            "--size",
            "65536",
            "--first-port",
            "20000",
        ],
    );
    drop(kernel);
    eprintln!("load --workers 2 -> kernel: {r}");
    let joins = lab.server.nstat("MPTcpExtMPJoinSynRx").expect("nstat");
    let acks = lab.server.nstat("MPTcpExtMPJoinAckRx").expect("nstat");
    eprintln!("kernel server: {joins} MP_JOIN SYNs, {acks} MP_JOIN ACKs");
    // Every join the kernel answered was completed: its SYN/ACK reached
    // the worker that opened it, wherever it arrived.
    assert!(joins >= 200 && acks == joins, "{joins} SYNs, {acks} ACKs");

    assert_eq!(r["exact"], 200, "{r}");
    assert_eq!(r["mismatched"], 0, "{r}");
    // Every connection had its 4 subflows, all in the engine of the worker
    // that opened it (an engine per worker: a subflow elsewhere would be
    // an unknown one, answered by a RST).
    assert_eq!(r["subflows"], serde_json::json!({"4": 200}), "{r}");
    // veth says nothing of RSS (ETHTOOL_GRSSH): no port choice, hand-offs.
    assert_eq!(r["rss_ports"], false, "{r}");
    let w = workers(&r);
    assert_eq!(w.len(), 2, "{r}");
    assert!(w.iter().all(|f| f.0 > 0 && f.1 > 0), "{w:?}");
    assert!(w.iter().map(|f| f.2).sum::<u64>() > 0, "hand-offs: {w:?}");
    for e in r["workers"].as_array().expect("workers") {
        assert_eq!(e["handoff_dropped"], 0, "{e}");
        assert_eq!(e["affinity_failed"], 0, "{e}");
    }
}

/// A worker that panics is reported in `stats`, its connections are reset,
/// it starts afresh, and the other worker's connections carry on.
#[test]
fn a_panicking_worker_is_reported_reset_and_restarted() {
    if !require_root() {
        return;
    }
    let lab = four_queue_lab();
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5603);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", lab.server.name()])
        .arg(release_binary())
        // Worker 1 panics once, as soon as it holds a connection.
        .env("MPTCP_USER_FAULT_PANIC_WORKER", "1");
    let listen_s = listen.to_string();
    let server = start_serve_with(&lab.server, &two_workers(&listen_s, &[]), cmd);
    let pid = server.0.id();
    // Round 1: the clients caught on worker 1 when it panics are reset;
    // the others (worker 0's, and worker 1's after its restart) complete.
    let n = 40;
    let mut c = EchoClients::start(&lab.client, listen, n, 64 << 10, false);
    let first = c.line();
    eprintln!("round 1: {first}");
    let (exact, errors) = (first["exact"].as_u64(), first["errors"].as_u64());
    assert_eq!(
        exact.zip(errors).map(|(e, r)| e + r),
        Some(n as u64),
        "{first}"
    );
    assert!(
        errors >= Some(1),
        "the panicking worker's connection was reset: {first}"
    );
    drop(c);
    let v = wait_stats(&lab.server, pid, 10, |v| {
        v["workers"]
            .as_array()
            .is_some_and(|w| w.iter().any(|e| e["panics"] == 1))
    });
    let panics: Vec<u64> = {
        let mut w: Vec<(u64, u64)> = v["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|e| (e["worker"].as_u64().unwrap(), e["panics"].as_u64().unwrap()))
            .collect();
        w.sort();
        w.into_iter().map(|(_, p)| p).collect()
    };
    assert_eq!(panics, [0, 1], "{}", v["workers"]);
    // Round 2: both workers serve, every connection byte-exact.
    let mut c = EchoClients::start(&lab.client, listen, 100, 64 << 10, true);
    let second = c.line();
    assert_eq!(second["exact"], 100, "{second}");
    let rows = ctl_json(lab.server.name(), pid, &["connections"]);
    let owners: std::collections::BTreeSet<u64> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["worker"].as_u64())
        .collect();
    assert_eq!(owners, [0, 1].into(), "{rows}");
    c.release();
    assert_eq!(c.line()["closed"], 100);
    drop(server);
}

/// IPv6 on two workers: `[::]` listener; the kernel clients join the
/// address we announce on path 2 (IPv6 neighbour discovery answers only
/// for an interface's own addresses, so a join to the first address over
/// path 2 would find no neighbour).
#[test]
fn ipv6_clients_on_two_workers() {
    if !require_root() {
        return;
    }
    let n = 50;
    let lab = Lab::up(&LabConfig {
        queues: 4,
        subflow_endpoints: false,
        ..LabConfig::unique(2)
    })
    .expect("lab");
    let announce = lab.paths[1].server_v6.to_string();
    let server = start_serve_release(&lab, &two_workers("[::]:5604", &["--announce", &announce]));
    let pid = server.0.id();
    let to = SocketAddr::new(lab.paths[0].server_v6.into(), 5604);
    let mut clients = EchoClients::start(&lab.client, to, n, 64 << 10, true);
    let echoed = clients.line();
    assert_eq!(echoed["exact"], n, "{echoed}");
    let v = wait_stats(&lab.server, pid, 30, |v| {
        v["engine"]["counters"]["join_accepted"].as_u64() >= Some(n as u64)
    });
    let rows = ctl_json(lab.server.name(), pid, &["connections"]);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), n, "{rows:?}");
    for r in rows {
        assert!(
            r["remote"].as_str().is_some_and(|a| a.starts_with('[')),
            "{r}"
        );
        assert_eq!(r["subflows"], 2, "{r}");
    }
    let w = workers(&v);
    eprintln!("IPv6, workers (connections, rx_frames, handoffs): {w:?}");
    assert!(w.iter().all(|f| f.0 > 0), "{w:?}");
    assert!(w.iter().map(|f| f.2).sum::<u64>() > 0, "hand-offs: {w:?}");
    clients.release();
    assert_eq!(clients.line()["closed"], n);
    drop(server);
}

#[test]
fn closing_connections_leave_no_segment_to_a_forgotten_one() {
    if !require_root() {
        return;
    }
    // 1000 concurrent echoes that close as soon as they are done, on two
    // workers: many subflows close at once from both ends. A subflow that
    // reached TIME_WAIT in a receive pass owes the ACK of the client's FIN;
    // when its connection was reaped before the transmit pass, the ACK never
    // left, the client sent its FIN again and met a RST (about 130 per 1000
    // connections here before the fix).
    let n = 1000;
    let lab = Lab::up(&LabConfig {
        queues: 2,
        ..LabConfig::unique(2)
    })
    .expect("lab");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5605);
    let listen_s = listen.to_string();
    let server = start_serve_release(&lab, &two_workers(&listen_s, &[]));
    let pid = server.0.id();
    let mut clients = EchoClients::start(&lab.client, listen, n, 64 << 10, false);
    let echoed = clients.line();
    assert_eq!(echoed["exact"], n, "{echoed}");
    let t = std::time::Instant::now();
    wait_stats(&lab.server, pid, 20, |v| {
        v["engine"]["closed"] == n && v["engine"]["connections"] == 0
    });
    eprintln!("all closed {:?} after the echoes", t.elapsed());
    // What is observed is an absence: a FIN sent again would come one RTO
    // (200 ms or more) after the first.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let v = wait_stats(&lab.server, pid, 5, |_| true);
    let c = &v["engine"]["counters"];
    eprintln!("{n} closing echoes on two workers: {c}");
    assert_eq!(
        c["unmatched"], 0,
        "segments met a forgotten connection: {c}"
    );
    drop(server);
}
