//! Many servers behind an L4 load balancer, the RFC 8684 way: the servers'
//! MP_CAPABLE SYN/ACK sets the C flag ("no more subflows to this address
//! and port"), so the client opens no subflow to the balanced address (the
//! VIP), and each server announces its own address with ADD_ADDR, where the
//! client joins it directly.
//!
//! An in-memory network, deterministic: one client endpoint (two addresses,
//! fullmesh) holding every connection, two server endpoints, and between
//! them a balancer that spreads connections to the VIP by a hash of the
//! client's address and port, either rewriting the destination (DNAT, with
//! the replies' source rewritten back) or forwarding unchanged (DSR: the
//! servers own the VIP too).

use mptcp_engine::io::Engine;
use mptcp_engine::mptcp::{ConnHandle, LocalAddr, MptcpConfig, MptcpEndpoint, SubflowStatus};
use mptcp_engine::time::Instant;
use mptcp_engine::wire::ip::{emit_ip_tcp, parse_ip_tcp, IpRepr};
use mptcp_engine::wire::mptcp::MpCapable;
use mptcp_engine::wire::tcp::TcpFlags;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The servers' port, and the VIP's (a balancer may map one to the other).
const PORT: u16 = 8080;
const VIP_PORT: u16 = 80;
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
const CLIENT: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
];
const SERVER: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)),
    IpAddr::V4(Ipv4Addr::new(10, 1, 1, 2)),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Balancer {
    /// Rewrites VIP -> server (and the replies' source back), like
    /// netfilter DNAT, IPVS-NAT or a cloud balancer.
    Dnat,
    /// Forwards with the VIP as destination, like IPVS-DR or Katran: the
    /// servers own the VIP and answer from it directly.
    Dsr,
}

/// Rewrites the addresses and ports of an IP/TCP packet (checksums
/// recomputed).
fn rewrite(p: &[u8], src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (_, tcp) = parse_ip_tcp(p).expect("a TCP packet");
    let mut tcp = tcp.clone();
    tcp.src_port = src.port();
    tcp.dst_port = dst.port();
    let ip = IpRepr::new_tcp(src.ip(), dst.ip()).expect("same family");
    let mut out = vec![0u8; 2048];
    let n = emit_ip_tcp(&ip, &tcp, &mut out).expect("fits");
    out.truncate(n);
    out
}

/// The balancer's choice for a client address and port (an FNV-1a hash of
/// the 4-tuple's client half, as nftables' `jhash ip saddr . tcp sport`).
fn pick(client: SocketAddr) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    let ip = match client.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for b in ip.iter().chain(&client.port().to_be_bytes()) {
        h = (h ^ *b as u32).wrapping_mul(0x0100_0193);
    }
    // FNV's low bit is only the parity of the bytes: mix first.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    (h % 2) as usize
}

struct Lab {
    mode: Balancer,
    client: MptcpEndpoint,
    servers: [MptcpEndpoint; 2],
    now: Instant,
    buf: Vec<u8>,
    /// DNAT's connection tracking: client address -> server.
    nat: HashMap<SocketAddr, usize>,
    /// SYN/ACKs with MP_CAPABLE seen by the balancer, and those with C set.
    mpc_synacks: usize,
    c_flags: usize,
}

impl Lab {
    fn new(mode: Balancer, deny_join_initial: bool) -> Lab {
        let mut ccfg = MptcpConfig::default();
        ccfg.tcp.time_wait = Duration::from_millis(200);
        let mut scfg = ccfg.clone();
        scfg.deny_join_initial = deny_join_initial;
        let clocals: Vec<LocalAddr> = CLIENT
            .iter()
            .enumerate()
            .map(|(path, &ip)| LocalAddr {
                ip,
                path,
                signal: false,
            })
            .collect();
        let server = |ip: IpAddr, k: u8| {
            // Servers have secrets (keys, tokens) of their own.
            let mut scfg = scfg.clone();
            scfg.secret[0] ^= k;
            // Each server announces its own address (serve --behind-lb
            // does by default); under DSR it owns the VIP too.
            let mut locals = vec![LocalAddr {
                ip,
                path: 0,
                signal: true,
            }];
            if mode == Balancer::Dsr {
                locals.insert(
                    0,
                    LocalAddr {
                        ip: VIP,
                        path: 0,
                        signal: false,
                    },
                );
            }
            let mut ep = MptcpEndpoint::server(scfg, &locals, PORT);
            if mode == Balancer::Dsr {
                ep.listen(SocketAddr::new(VIP, VIP_PORT));
            }
            ep
        };
        Lab {
            mode,
            client: MptcpEndpoint::new(ccfg, &clocals),
            servers: [server(SERVER[0], 1), server(SERVER[1], 2)],
            now: Instant::ZERO,
            buf: vec![0u8; 2048],
            nat: HashMap::new(),
            mpc_synacks: 0,
            c_flags: 0,
        }
    }

    /// A client packet through the balancer: (server, packet).
    fn toward_server(&mut self, p: &[u8]) -> (usize, Vec<u8>) {
        let (ip, tcp) = parse_ip_tcp(p).expect("client packet");
        let client = SocketAddr::new(ip.src(), tcp.src_port);
        if ip.dst() != VIP {
            let i = SERVER
                .iter()
                .position(|&s| s == ip.dst())
                .expect("a server");
            return (i, p.to_vec());
        }
        let i = *self.nat.entry(client).or_insert_with(|| pick(client));
        match self.mode {
            Balancer::Dnat => (i, rewrite(p, client, SocketAddr::new(SERVER[i], PORT))),
            Balancer::Dsr => (i, p.to_vec()),
        }
    }

    /// A server packet on its way back (DNAT: the source becomes the VIP
    /// again for tracked flows); counts the C flags of SYN/ACKs.
    fn toward_client(&mut self, i: usize, p: &[u8]) -> Vec<u8> {
        let (ip, tcp) = parse_ip_tcp(p).expect("server packet");
        if tcp.flags.contains(TcpFlags::SYN | TcpFlags::ACK) {
            if let Some(m) = tcp.options.mptcp.mp_capable() {
                self.mpc_synacks += 1;
                self.c_flags += (m.flags & MpCapable::FLAG_NO_MORE_SUBFLOWS != 0) as usize;
            }
        }
        let client = SocketAddr::new(ip.dst(), tcp.dst_port);
        if self.mode == Balancer::Dnat && ip.src() == SERVER[i] && self.nat.get(&client) == Some(&i)
        {
            return rewrite(p, SocketAddr::new(VIP, VIP_PORT), client);
        }
        p.to_vec()
    }

    fn exchange(&mut self) {
        loop {
            let mut any = false;
            while let Some((_, n)) = self.client.poll_transmit(self.now, &mut self.buf) {
                let pkt = self.buf[..n].to_vec();
                let (i, pkt) = self.toward_server(&pkt);
                self.servers[i].handle_packet(self.now, 0, &pkt);
                any = true;
            }
            for i in 0..2 {
                while let Some((_, n)) = self.servers[i].poll_transmit(self.now, &mut self.buf) {
                    let pkt = self.buf[..n].to_vec();
                    let pkt = self.toward_client(i, &pkt);
                    let dst = parse_ip_tcp(&pkt).expect("ip").0.dst();
                    let path = CLIENT.iter().position(|&c| c == dst).expect("a client");
                    self.client.handle_packet(self.now, path, &pkt);
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Exchanges and fires timers until `done` or 60 s of simulated time.
    fn run_until(&mut self, mut done: impl FnMut(&mut Lab) -> bool) -> bool {
        let end = self.now + Duration::from_secs(60);
        while self.now <= end {
            self.exchange();
            if done(self) {
                return true;
            }
            let step = self.now + Duration::from_millis(5);
            let next = [
                self.client.poll_timeout(),
                self.servers[0].poll_timeout(),
                self.servers[1].poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .fold(step, Instant::min);
            self.now = next.max(self.now + Duration::from_micros(1));
            self.client.handle_timeout(self.now);
            for s in &mut self.servers {
                s.handle_timeout(self.now);
            }
        }
        false
    }

    /// `n` connections to the VIP, each echoing `size` bytes byte-exact,
    /// run until each has `subflows` established subflows (or 60 s pass).
    fn echo(&mut self, n: u16, size: usize, subflows: usize) -> (Vec<ConnHandle>, bool) {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        // Ports far apart: a connection's joins take the ports after its own.
        let handles: Vec<ConnHandle> = (0..n)
            .map(|k| {
                self.client
                    .connect(40_000 + 16 * k, SocketAddr::new(VIP, VIP_PORT), self.now)
            })
            .collect();
        let mut sent = vec![0usize; handles.len()];
        let mut got: Vec<Vec<u8>> = vec![Vec::new(); handles.len()];
        let mut tmp = vec![0u8; 65536];
        let ok = self.run_until(|lab| {
            for s in &mut lab.servers {
                while let Some(h) = s.poll_app_ready() {
                    if let Some(c) = s.get_mut(h) {
                        let k = c.recv(&mut tmp);
                        assert_eq!(c.send(&tmp[..k]), k, "the echo fits");
                    }
                }
            }
            let mut done = 0;
            for (k, h) in handles.iter().enumerate() {
                let c = lab.client.get_mut(*h).expect("live");
                if c.is_established() && sent[k] < size {
                    sent[k] += c.send(&data[sent[k]..]);
                }
                let r = c.recv(&mut tmp);
                got[k].extend_from_slice(&tmp[..r]);
                let up = c
                    .subflows()
                    .filter(|s| s.status == SubflowStatus::FullyEstablished)
                    .count();
                done += (got[k].len() == size && up >= subflows) as usize;
            }
            done == handles.len()
        });
        for g in &got {
            assert!(g == &data, "echo differs ({} of {size} bytes)", g.len());
        }
        (handles, ok)
    }
}

/// The client's subflows of each connection all reach the server that
/// holds it: returns, per server, the connections it holds.
fn check_affinity(lab: &Lab, handles: &[ConnHandle]) -> [usize; 2] {
    let mut per_server = [0; 2];
    for h in handles {
        let c = lab.client.get(*h).expect("live");
        let token = c.info().remote_token;
        let owner: Vec<usize> = (0..2)
            .filter(|&i| lab.servers[i].handle_of_token(token).is_some())
            .collect();
        assert_eq!(owner.len(), 1, "token {token:08x} on servers {owner:?}");
        let i = owner[0];
        per_server[i] += 1;
        let s = lab.servers[i]
            .get(lab.servers[i].handle_of_token(token).unwrap())
            .unwrap();
        let live = |st: SubflowStatus| st == SubflowStatus::FullyEstablished;
        let client_side = c.subflows().filter(|f| live(f.status)).count();
        let server_side = s.subflows().filter(|f| live(f.status)).count();
        assert_eq!(
            client_side, server_side,
            "every subflow of the connection is on server {i}"
        );
        for f in c.subflows().filter(|f| live(f.status)) {
            // The initial subflow to the VIP, every join to the owner.
            if f.remote_addr_id == 0 {
                assert_eq!(f.tuple.remote, SocketAddr::new(VIP, VIP_PORT));
            } else {
                // The port the connection was accepted on, in the ADD_ADDR.
                let port = match lab.mode {
                    Balancer::Dnat => PORT,
                    Balancer::Dsr => VIP_PORT,
                };
                assert_eq!(f.tuple.remote, SocketAddr::new(SERVER[i], port));
            }
        }
    }
    per_server
}

fn behind_lb(mode: Balancer) {
    let mut lab = Lab::new(mode, true);
    let n = 16;
    // Two clients addresses times the one announced server address: two
    // joins besides the initial subflow.
    let (handles, ok) = lab.echo(n, 64 << 10, 3);
    assert!(ok, "every connection echoed with 3 subflows");
    assert_eq!(lab.mpc_synacks, n as usize);
    assert_eq!(lab.c_flags, n as usize, "every SYN/ACK sets C");
    let per_server = check_affinity(&lab, &handles);
    assert!(
        per_server.iter().all(|&k| k > 0),
        "both served: {per_server:?}"
    );
    for (i, s) in lab.servers.iter().enumerate() {
        let c = s.counters();
        assert_eq!(c.join_refused, 0, "server {i}: {c:?}");
        assert_eq!(
            c.join_accepted,
            2 * per_server[i] as u64,
            "server {i}: {c:?}"
        );
    }
    // The client never tried the VIP for a join.
    for h in &handles {
        let c = lab.client.get(*h).unwrap();
        let to_vip = c.subflows().filter(|f| f.tuple.remote.ip() == VIP).count();
        assert_eq!(to_vip, 1, "only the initial subflow goes to the VIP");
    }
}

#[test]
fn dnat_balancer_every_subflow_on_the_server_holding_the_connection() {
    behind_lb(Balancer::Dnat);
}

#[test]
fn dsr_balancer_every_subflow_on_the_server_holding_the_connection() {
    behind_lb(Balancer::Dsr);
}

/// The control: without the C flag the client joins the VIP too, and the
/// balancer sends about half of those joins to the server that does not
/// know the token.
#[test]
fn without_the_c_flag_joins_to_the_vip_reach_the_wrong_server() {
    for mode in [Balancer::Dnat, Balancer::Dsr] {
        let mut lab = Lab::new(mode, false);
        let (_, _) = lab.echo(16, 16 << 10, 2);
        assert_eq!(lab.c_flags, 0);
        let refused: u64 = lab.servers.iter().map(|s| s.counters().join_refused).sum();
        let c: Vec<_> = lab.servers.iter().map(|s| s.counters().clone()).collect();
        assert!(refused > 0, "{mode:?}: no join went astray {c:?}");
    }
}

/// The client side alone: a SYN/ACK with C keeps the path manager off the
/// initial address, ADD_ADDR'd addresses still get joined; without C the
/// second client address joins the initial one.
#[test]
fn client_honours_the_c_flag() {
    for deny in [false, true] {
        let mut lab = Lab::new(Balancer::Dnat, deny);
        let (handles, ok) = lab.echo(4, 1000, 2);
        // Without C some joins to the VIP are refused by the other server.
        assert!(ok || !deny, "every connection joined");
        for h in &handles {
            let c = lab.client.get(*h).unwrap();
            let to_vip = c.subflows().filter(|f| f.tuple.remote.ip() == VIP).count();
            if deny {
                assert_eq!(to_vip, 1, "only the initial subflow to the VIP");
            } else {
                assert!(to_vip >= 2, "a join to the VIP without C");
            }
        }
    }
}
