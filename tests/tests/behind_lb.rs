//! Many servers behind an existing L4 load balancer (issue 12 point 7),
//! the RFC 8684 way. The lab:
//!
//! ```text
//!   client ns            router ns (VIP 10.99.0.100)          server ns A, B
//!   c0 10.70.0.1 ------- rc0                     ra  -------- s0 10.80.0.1 (serve A)
//!   c1 10.71.0.1 ------- rc1   nft DNAT VIP:80   rb  -------- s0 10.81.0.1 (serve B)
//!                              -> jhash(saddr . sport) mod 2 -> A:8080 | B:8080
//! ```
//!
//! The same with direct server return (an ECMP route with the L4 hash
//! in the router, the VIP delivered unchanged to A or B). Two
//! `serve --behind-lb 10.99.0.100:80` instances; 100 kernel MPTCP
//! clients (Python IPPROTO_MPTCP sockets) with a `subflow fullmesh`
//! endpoint on each address, so they would open subflows to the VIP from
//! their second address. The SYN/ACK's C flag stops that; the servers'
//! ADD_ADDR brings the clients to A or B directly. Each connection's
//! subflows all land on the server holding it: checked from both servers'
//! `ctl --json connections` / `subflows`, their join counters, the
//! client's sockets, and a capture of the SYN/ACKs in the router.
//! The control: the same without `--behind-lb`, where joins to the VIP go
//! to the wrong server about half the time and are refused. Last, the roles
//! turned: the engine as the client of a Linux server that sets C.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

use mptcp_tests::capture::{tshark_fields, Capture};
use mptcp_tests::cli::{
    ctl_json, mptcp_user, output_text, release_binary, start_serve_release_in, Server,
};
use mptcp_tests::{require_root, unique_name, wait_until, KernelEchoServer, Lab, Netns};
use serde_json::Value;

const ECHO_CLIENTS: &str = include_str!("../scripts/echo_clients.py");
const VIP: &str = "10.99.0.100";
const SERVERS: [&str; 2] = ["10.80.0.1", "10.81.0.1"];
const CLIENTS: [&str; 2] = ["10.70.0.1", "10.71.0.1"];
const N: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Balancer {
    /// nftables DNAT: VIP:80 -> A:8080 or B:8080 by jhash(saddr . sport).
    Dnat,
    /// Direct server return: the router forwards VIP:80 unchanged to A or
    /// B by an ECMP route with the L4 hash (fib_multipath_hash_policy=1),
    /// as anycast/Maglev-style balancers do; the servers own the VIP.
    Dsr,
}

struct LbLab {
    mode: Balancer,
    client: Netns,
    router: Netns,
    servers: [Netns; 2],
}

fn sh(ns: &Netns, args: &[&str]) {
    ns.ip(args)
        .unwrap_or_else(|e| panic!("{}: ip {args:?}: {e}", ns.name()));
}

impl LbLab {
    fn up(mode: Balancer) -> LbLab {
        let lab = LbLab {
            mode,
            client: Netns::create(&unique_name("mplbc")).expect("netns"),
            router: Netns::create(&unique_name("mplbr")).expect("netns"),
            servers: [
                Netns::create(&unique_name("mplba")).expect("netns"),
                Netns::create(&unique_name("mplbb")).expect("netns"),
            ],
        };
        let r = lab.router.name();
        for (ns, ifname, peer) in [
            (&lab.client, "c0", "rc0"),
            (&lab.client, "c1", "rc1"),
            (&lab.servers[0], "s0", "ra"),
            (&lab.servers[1], "s0", "rb"),
        ] {
            sh(
                ns,
                &[
                    "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", r,
                ],
            );
        }
        for (ns, ifname, addr) in [
            (&lab.client, "c0", "10.70.0.1/24"),
            (&lab.client, "c1", "10.71.0.1/24"),
            (&lab.router, "rc0", "10.70.0.254/24"),
            (&lab.router, "rc1", "10.71.0.254/24"),
            (&lab.router, "ra", "10.80.0.254/24"),
            (&lab.router, "rb", "10.81.0.254/24"),
            (&lab.servers[0], "s0", "10.80.0.1/24"),
            (&lab.servers[1], "s0", "10.81.0.1/24"),
        ] {
            sh(ns, &["addr", "add", addr, "dev", ifname]);
            sh(ns, &["link", "set", ifname, "up"]);
        }
        lab.router
            .exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
            .expect("forwarding");
        // The client's second address leaves by its own link.
        sh(
            &lab.client,
            &["route", "add", "default", "via", "10.70.0.254"],
        );
        sh(
            &lab.client,
            &["rule", "add", "from", CLIENTS[1], "table", "101"],
        );
        sh(
            &lab.client,
            &[
                "route",
                "add",
                "default",
                "via",
                "10.71.0.254",
                "dev",
                "c1",
                "table",
                "101",
            ],
        );
        for (ns, gw) in lab.servers.iter().zip(["10.80.0.254", "10.81.0.254"]) {
            sh(ns, &["route", "add", "default", "via", gw]);
        }
        // The kernel client would open a subflow from every address to
        // every address of the server it knows, the VIP included.
        lab.client.mptcp_limits(4).expect("limits");
        for (addr, dev) in CLIENTS.iter().zip(["c0", "c1"]) {
            sh(
                &lab.client,
                &[
                    "mptcp", "endpoint", "add", addr, "dev", dev, "subflow", "fullmesh",
                ],
            );
        }
        if mode == Balancer::Dsr {
            for k in [
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv4.conf.all.rp_filter=0",
            ] {
                lab.router.exec("sysctl", &["-qw", k]).expect("sysctl");
            }
            sh(
                &lab.router,
                &[
                    "route",
                    "add",
                    &format!("{VIP}/32"),
                    "nexthop",
                    "via",
                    SERVERS[0],
                    "nexthop",
                    "via",
                    SERVERS[1],
                ],
            );
            return lab;
        }
        sh(
            &lab.router,
            &["addr", "add", &format!("{VIP}/32"), "dev", "lo"],
        );
        sh(&lab.router, &["link", "set", "lo", "up"]);
        // The balancer: DNAT by a hash of the client's address and port.
        let rules = format!(
            "table ip lb {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
             ip daddr {VIP} tcp dport 80 dnat to jhash ip saddr . tcp sport mod 2 \
             map {{ 0 : {}, 1 : {} }} : 8080\n  }}\n}}\n",
            SERVERS[0], SERVERS[1]
        );
        let mut nft = lab
            .router
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (apt-get install nftables)");
        nft.stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("rules");
        assert!(nft.wait().expect("nft").success(), "nft -f: {rules}");
        lab
    }

    /// The lab and its two serve instances (and their pids).
    fn with_servers(mode: Balancer, behind_lb: bool) -> (LbLab, [Server; 2], [u32; 2]) {
        let lab = LbLab::up(mode);
        let servers = [lab.serve(0, behind_lb), lab.serve(1, behind_lb)];
        let pids = [servers[0].0.id(), servers[1].0.id()];
        (lab, servers, pids)
    }

    fn serve(&self, i: usize, behind_lb: bool) -> Server {
        let listen = format!("{}:8080", SERVERS[i]);
        let mut args = vec!["--iface", "s0", "--listen", &listen];
        let vip = format!("{VIP}:80");
        if behind_lb {
            args.extend(["--behind-lb", &vip]);
        }
        start_serve_release_in(&self.servers[i], &args)
    }
}

/// `echo_clients.py --hold`: connect, echo, then hold until released.
struct Clients {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Clients {
    fn start(ns: &Netns) -> Clients {
        let mut child = ns
            .command("python3")
            .args(["-c", ECHO_CLIENTS, VIP, "80", &N.to_string(), "65536", "60"])
            .arg("--hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Clients { child, out }
    }

    fn line(&mut self) -> Value {
        mptcp_tests::json_line(&mut self.out)
    }

    fn release(&mut self) -> Value {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"close\n").expect("write");
        stdin.flush().expect("flush");
        self.line()
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server's view: token -> the client ends (ip:port) of its
/// established subflows.
fn server_view(ns: &Netns, pid: u32) -> BTreeMap<String, BTreeSet<String>> {
    let mut view = BTreeMap::new();
    let conns = ctl_json(ns.name(), pid, &["connections"]);
    for c in conns.as_array().into_iter().flatten() {
        let token = c["token"].as_str().expect("token").to_string();
        let rows = ctl_json(ns.name(), pid, &["subflows", &token]);
        let ends: BTreeSet<String> = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["state"] == "established")
            .map(|s| s["remote"].as_str().expect("remote").to_string())
            .collect();
        view.insert(token, ends);
    }
    view
}

/// The engine's counters of serve `pid` (its control socket).
fn counters(ns: &Netns, pid: u32) -> Value {
    let out = ns
        .command(release_binary().to_str().expect("path"))
        .args(["stats", "--json"])
        .output()
        .expect("stats");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["pid"] == pid)
        .map(|v| v["engine"]["counters"].clone())
        .unwrap_or(Value::Null)
}

/// The client's established TCP subflows: (local ip:port, remote ip:port).
fn client_subflows(ns: &Netns) -> Vec<(String, String)> {
    let out = ns
        .exec("ss", &["-Htn", "state", "established"])
        .expect("ss");
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Recv-Q Send-Q Local Peer; ss writes IP%DEV:PORT for bound sources.
            let local = match f.get(2)?.split_once('%') {
                Some((ip, rest)) => format!("{ip}:{}", rest.rsplit(':').next()?),
                None => f.get(2)?.to_string(),
            };
            Some((local, f.get(3)?.to_string()))
        })
        .collect()
}

#[test]
fn kernel_clients_through_a_dnat_balancer_keep_every_subflow_on_one_server() {
    if !require_root() {
        return;
    }
    every_subflow_on_one_server(Balancer::Dnat);
}

#[test]
fn kernel_clients_through_a_dsr_balancer_keep_every_subflow_on_one_server() {
    if !require_root() {
        return;
    }
    every_subflow_on_one_server(Balancer::Dsr);
}

fn every_subflow_on_one_server(mode: Balancer) {
    let (lab, _servers, pids) = LbLab::with_servers(mode, true);
    // ADD_ADDR carries the port the connection was accepted on: the
    // server's own under DNAT, the VIP's under DSR.
    let join_port = match lab.mode {
        Balancer::Dnat => 8080,
        Balancer::Dsr => 80,
    };
    let dir = std::env::temp_dir().join(unique_name("mptcp-behind-lb"));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("synack.pcap").to_string_lossy().to_string();
    // The SYN/ACKs the clients receive (from the VIP: un-NATed, or sent
    // so by the server).
    let capture = Capture::start_filtered(
        &lab.router,
        "rc0",
        &file,
        "tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)",
    );

    let mut clients = Clients::start(&lab.client);
    let echoed = clients.line();
    eprintln!("{N} echoes through the balancer: {echoed}");
    assert_eq!(echoed["exact"], N, "{echoed}");

    // Every connection gets its joins (one per client address to the
    // announced server address) while the clients hold on.
    let mut views = [BTreeMap::new(), BTreeMap::new()];
    let joined = wait_until(Duration::from_secs(30), || {
        for i in 0..2 {
            views[i] = server_view(&lab.servers[i], pids[i]);
        }
        let all: Vec<usize> = views
            .iter()
            .flat_map(|v| v.values().map(BTreeSet::len))
            .collect();
        all.len() == N && all.iter().all(|&k| k >= 3)
    });
    let sizes: Vec<Vec<usize>> = views
        .iter()
        .map(|v| v.values().map(BTreeSet::len).collect())
        .collect();
    assert!(joined, "subflows per connection, per server: {sizes:?}");
    eprintln!(
        "connections per server: {} and {}",
        views[0].len(),
        views[1].len()
    );
    assert!(
        views.iter().all(|v| !v.is_empty()),
        "the balancer used both servers"
    );
    for (i, pid) in pids.iter().enumerate() {
        let c = counters(&lab.servers[i], *pid);
        eprintln!("server {i} counters: {c}");
        assert_eq!(c["join_refused"], 0, "server {i}: {c}");
        let subflows: usize = views[i].values().map(|s| s.len() - 1).sum();
        assert_eq!(c["join_accepted"], subflows as u64, "server {i}: {c}");
    }

    // The client's side: only the initial subflows go to the VIP; every
    // join goes to the server holding its connection (the client's
    // address and port of each subflow is in that server's connection).
    let subflows = client_subflows(&lab.client);
    let to_vip = subflows
        .iter()
        .filter(|(_, r)| r == &format!("{VIP}:80"))
        .count();
    assert_eq!(to_vip, N, "one subflow per connection to the VIP");
    for (i, server) in SERVERS.iter().enumerate() {
        let ends: BTreeSet<&String> = views[i].values().flatten().collect();
        let joins: Vec<&(String, String)> = subflows
            .iter()
            .filter(|(_, r)| r == &format!("{server}:{join_port}"))
            .collect();
        assert_eq!(
            joins.len(),
            views[i].values().map(|s| s.len() - 1).sum::<usize>(),
            "server {i}"
        );
        for (l, _) in joins {
            assert!(ends.contains(l), "join {l} -> {server} is not there");
        }
        // Both client addresses: the second path is used.
        for c in CLIENTS {
            assert!(
                views[i]
                    .values()
                    .all(|s| s.iter().any(|e| e.starts_with(&format!("{c}:")))),
                "server {i}: every connection has a subflow from {c}"
            );
        }
    }

    // On the wire: every MP_CAPABLE SYN/ACK sets C.
    let mut rows = Vec::new();
    let filter = "tcp.options.mptcp.subtype == 0 && tcp.flags.syn == 1 && tcp.flags.ack == 1";
    let seen = wait_until(Duration::from_secs(10), || {
        rows = tshark_fields(
            &file,
            filter,
            &["ip.src", "tcp.options.mptcp.nomoresubflows.flag"],
        );
        rows.len() >= N
    });
    assert!(seen, "{} MP_CAPABLE SYN/ACKs captured", rows.len());
    drop(capture);
    for r in &rows {
        assert_eq!(r[0], VIP, "{r:?}");
        assert_eq!(r[1], "1", "the C flag: {r:?}");
    }
    let closed = clients.release();
    assert_eq!(closed["closed"], N, "{closed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The control: without --behind-lb the SYN/ACK has no C flag, the kernel
/// clients join the VIP from their second address, and the balancer hands
/// about half of those joins to the server that does not hold the token.
#[test]
fn without_behind_lb_joins_to_the_vip_reach_the_wrong_server() {
    if !require_root() {
        return;
    }
    let (lab, _servers, pids) = LbLab::with_servers(Balancer::Dnat, false);
    let mut clients = Clients::start(&lab.client);
    let echoed = clients.line();
    assert_eq!(echoed["exact"], N, "{echoed}");
    let mut refused = 0;
    let astray = wait_until(Duration::from_secs(30), || {
        refused = (0..2)
            .map(|i| {
                counters(&lab.servers[i], pids[i])["join_refused"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum::<u64>();
        refused >= 10
    });
    assert!(astray, "joins refused: {refused}");
    let vip_joins = client_subflows(&lab.client)
        .iter()
        .filter(|(l, r)| l.starts_with(CLIENTS[1]) && r == &format!("{VIP}:80"))
        .count();
    eprintln!("without C: {refused} joins refused, {vip_joins} joins to the VIP stand");
    clients.release();
}

/// The engine as the client honours a kernel server's C flag (Linux sets
/// it with `net.mptcp.allow_join_initial_addr_port=0`): it opens no subflow
/// to the initial address and joins the announced one. The control, with
/// the sysctl back at 1: the engine's second address joins the initial one.
#[test]
fn engine_client_honours_a_kernel_servers_c_flag() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_without_endpoints(2).expect("lab");
    let (first, second) = (lab.paths[0].server_v4, lab.paths[1].server_v4);
    lab.server_signals_v4(1).expect("endpoint");
    let _kernel = KernelEchoServer::start(&lab.server, "0.0.0.0:5340".parse().expect("addr"));
    let initial = format!("{first}:5340");
    // (remote of every subflow the engine opened) for one connection.
    let remotes = |deny: bool| -> Vec<String> {
        let allow = format!("net.mptcp.allow_join_initial_addr_port={}", !deny as u8);
        lab.server.exec("sysctl", &["-qw", &allow]).expect("sysctl");
        let out = mptcp_user(lab.client.name())
            .args(["connect", &initial, "--iface", "cli0", "--iface", "cli1"])
            .args(["--wait-subflows", "2", "--bytes", "1000000", "--json"])
            .output()
            .expect("connect");
        assert!(out.status.success(), "{}", output_text(&out));
        let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(report["end"]["byte_exact"], true, "{report}");
        report["end"]["subflows"]
            .as_array()
            .expect("subflows")
            .iter()
            .map(|s| s["remote"].as_str().expect("remote").to_string())
            .collect()
    };
    let with_c = remotes(true);
    eprintln!("with C: {with_c:?}");
    assert_eq!(
        with_c.iter().filter(|r| **r == initial).count(),
        1,
        "only the initial subflow to {initial}: {with_c:?}"
    );
    assert!(
        with_c.iter().any(|r| *r == format!("{second}:5340")),
        "a join to the announced address: {with_c:?}"
    );
    let without = remotes(false);
    eprintln!("without C: {without:?}");
    assert!(
        without.iter().filter(|r| **r == initial).count() >= 2,
        "without C the second address joins the initial one: {without:?}"
    );
}
