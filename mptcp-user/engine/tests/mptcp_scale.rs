//! Scale is correctness: with thousands of idle connections, the work an
//! endpoint does per packet and per timer stays proportional to the
//! traffic, not to the number of connections; closed connections give
//! their slots, tuples and tokens back; refusals are counted.
//!
//! An in-memory pair: one client endpoint holding every connection, one
//! server, packets handed across directly (no loss, no delay), time
//! advanced to the next deadline when both are quiet.

use mptcp_engine::io::Engine;
use mptcp_engine::mptcp::{ConnHandle, LocalAddr, MptcpConfig, MptcpEndpoint};
use mptcp_engine::tcp::pool;
use mptcp_engine::time::Instant;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const PORT: u16 = 8080;

/// Live heap bytes (allocated and not freed), over all threads.
struct Counting;
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn client_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
}
fn server_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))
}

fn config() -> MptcpConfig {
    let mut c = MptcpConfig::default();
    c.tcp.time_wait = Duration::from_millis(200);
    c
}

fn client_ip2() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1))
}

struct Pair {
    client: MptcpEndpoint,
    server: MptcpEndpoint,
    now: Instant,
    buf: Vec<u8>,
}

impl Pair {
    fn new(ccfg: MptcpConfig, scfg: MptcpConfig) -> Pair {
        Pair::with_client_addrs(ccfg, scfg, &[client_ip()])
    }

    /// Clients with several addresses open MP_JOIN subflows from the others.
    fn with_client_addrs(ccfg: MptcpConfig, scfg: MptcpConfig, ips: &[IpAddr]) -> Pair {
        let clocal: Vec<LocalAddr> = ips
            .iter()
            .map(|&ip| LocalAddr {
                ip,
                path: 0,
                signal: false,
            })
            .collect();
        let slocal = [LocalAddr {
            ip: server_ip(),
            path: 0,
            signal: false,
        }];
        Pair {
            client: MptcpEndpoint::new(ccfg, &clocal),
            server: MptcpEndpoint::server(scfg, &slocal, PORT),
            now: Instant::ZERO,
            buf: vec![0u8; 1600],
        }
    }

    fn connect(&mut self, port: u16) -> ConnHandle {
        self.client
            .connect(port, SocketAddr::new(server_ip(), PORT), self.now)
    }

    /// Moves every pending packet both ways; returns how many moved.
    fn exchange(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let mut any = false;
            while let Some((_, n)) = self.client.poll_transmit(self.now, &mut self.buf) {
                self.server.handle_packet(self.now, 0, &self.buf[..n]);
                moved += 1;
                any = true;
            }
            while let Some((_, n)) = self.server.poll_transmit(self.now, &mut self.buf) {
                self.client.handle_packet(self.now, 0, &self.buf[..n]);
                moved += 1;
                any = true;
            }
            if !any {
                return moved;
            }
        }
    }

    /// Exchanges packets and fires timers (time jumps to the next deadline,
    /// at most `step` ahead) until `done` or `limit` of simulated time.
    fn run_until(
        &mut self,
        limit: Duration,
        step: Duration,
        mut done: impl FnMut(&mut Pair) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now <= end {
            self.exchange();
            if done(self) {
                return true;
            }
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.now + step)
                .min(self.now + step);
            self.now = next.max(self.now + Duration::from_micros(1));
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
        }
        false
    }
}

/// The server reads what arrived and closes each connection whose peer
/// closed; both sides reap.
fn server_reads_and_closes(p: &mut Pair) {
    while let Some(h) = p.server.poll_app_ready() {
        if let Some(c) = p.server.get_mut(h) {
            let mut t = [0u8; 8];
            while c.recv(&mut t) > 0 {}
            if c.is_read_closed() {
                c.close();
            }
        }
    }
    p.server.reap_closed();
    p.client.reap_closed();
}

fn established(ep: &MptcpEndpoint) -> usize {
    ep.connections().filter(|c| c.is_established()).count()
}

#[test]
fn ten_thousand_idle_connections_cost_no_work_per_packet() {
    const N: usize = 10_000;
    // Two subflows each (the second joins from another client address).
    let mut p = Pair::with_client_addrs(config(), config(), &[client_ip(), client_ip2()]);
    let heap_before = LIVE.load(Ordering::Relaxed);
    let handles: Vec<ConnHandle> = (0..N).map(|i| p.connect(10_000 + i as u16)).collect();
    let ok = p.run_until(Duration::from_secs(30), Duration::from_millis(50), |p| {
        established(&p.client) == N && established(&p.server) == N
    });
    assert!(
        ok,
        "established: {} client, {} server",
        established(&p.client),
        established(&p.server)
    );
    // Each connection echoes 5 bytes once (as the idle
    // connections do; it also lets the clients' path managers open the
    // second subflows), then delayed ACKs and the like settle: idle.
    for h in &handles {
        assert_eq!(p.client.get_mut(*h).unwrap().send(b"hello"), 5);
    }
    let mut tmp = [0u8; 64];
    let mut echoed = 0;
    let ok = p.run_until(Duration::from_secs(10), Duration::from_millis(10), |p| {
        while let Some(sh) = p.server.poll_app_ready() {
            let c = p.server.get_mut(sh).unwrap();
            let n = c.recv(&mut tmp);
            assert_eq!(c.send(&tmp[..n]), n);
        }
        while let Some(ch) = p.client.poll_app_ready() {
            echoed += p.client.get_mut(ch).unwrap().recv(&mut tmp);
        }
        echoed == 5 * N && p.server.counters().join_accepted == N as u64
    });
    assert!(ok, "{echoed} bytes echoed, {:?}", p.server.counters());
    p.run_until(Duration::from_secs(1), Duration::from_millis(100), |_| {
        false
    });
    assert_eq!(
        p.server.poll_app_ready(),
        None,
        "idle connections stay quiet"
    );
    // Memory that grows with use: idle connections hold no buffer chunk,
    // and all they hold is at most 16 KB each (the kernel's figure). Two
    // endpoints (client and server) hold N connections each; the tables
    // (slab, tuple and token maps, heap, queues) are counted in.
    assert_eq!(pool::stats().in_use, 0, "{:?}", pool::stats());
    let per_conn = (LIVE.load(Ordering::Relaxed) - heap_before) / (2 * N as i64);
    eprintln!("heap per idle connection per end: {per_conn} bytes");
    assert!(per_conn <= 16 << 10, "{per_conn} bytes per idle connection");
    assert_eq!(p.server.connection_count(), N);
    assert_eq!(p.server.counters().accepted, N as u64);
    assert_eq!(p.server.counters().join_accepted, N as u64);
    assert!(p.server.connections().all(|c| c.subflows().count() == 2));

    // One connection talks; the rest stay idle.
    let before = p.server.work().clone();
    let h = handles[N / 2];
    assert_eq!(p.client.get_mut(h).unwrap().send(b"hello"), 5);
    let mut got = Vec::new();
    let ok = p.run_until(Duration::from_secs(2), Duration::from_millis(10), |p| {
        while let Some(sh) = p.server.poll_app_ready() {
            let c = p.server.get_mut(sh).unwrap();
            let n = c.recv(&mut tmp);
            got.extend_from_slice(&tmp[..n]);
        }
        got == b"hello"
    });
    assert!(ok, "the server read {got:?}");
    // Let the ACKs go out.
    p.run_until(
        Duration::from_millis(500),
        Duration::from_millis(50),
        |_| false,
    );
    let after = p.server.work().clone();
    let transmit_visits = after.transmit_visits - before.transmit_visits;
    let transmit_calls = after.transmit_calls - before.transmit_calls;
    let timeout_visits = after.timeout_visits - before.timeout_visits;
    eprintln!("one exchange among {N} idle connections: {transmit_calls} poll_transmit calls visited {transmit_visits} connections; handle_timeout visited {timeout_visits}");
    // A handful of segments (data, ACK, delayed ACK): a handful of visits.
    assert!(
        transmit_visits <= 16,
        "poll_transmit visited {transmit_visits} connections"
    );
    assert!(
        timeout_visits <= 8,
        "handle_timeout visited {timeout_visits} connections"
    );
    // The heap holds each connection at most a few times (lazy deletion is bounded).
    assert!(after.timer_pushes - before.timer_pushes <= 32);
}

#[test]
fn closed_connections_free_their_slots_tuples_and_tokens() {
    const N: usize = 500;
    let mut p = Pair::new(config(), config());
    for round in 0..4u16 {
        let handles: Vec<ConnHandle> = (0..N)
            .map(|i| p.connect(20_000 + round * 1000 + i as u16))
            .collect();
        assert!(
            p.run_until(Duration::from_secs(10), Duration::from_millis(50), |p| {
                established(&p.server) == N
            })
        );
        for h in &handles {
            let c = p.client.get_mut(*h).unwrap();
            assert_eq!(c.send(b"bye"), 3);
            c.close();
        }
        // The server closes each connection once it has read the DATA_FIN.
        let ok = p.run_until(Duration::from_secs(20), Duration::from_millis(50), |p| {
            server_reads_and_closes(p);
            p.server.connection_count() == 0 && p.client.connection_count() == 0
        });
        assert!(
            ok,
            "round {round}: {} server and {} client connections left",
            p.server.connection_count(),
            p.client.connection_count()
        );
        // Slots are reused, not added: the slab never grows past one round.
        assert!(
            p.server.slot_count() <= N,
            "round {round}: {} slots",
            p.server.slot_count()
        );
        assert_eq!(p.server.half_open_count(), 0);
    }
    assert_eq!(p.server.counters().accepted, 4 * N as u64);
}

/// A driver steering segments to the worker that owns them learns every
/// tuple and token the endpoint files, and every one it forgets.
#[test]
fn the_affinity_journal_files_and_forgets_tuples_and_tokens() {
    use mptcp_engine::mptcp::AffinityChange;
    use std::collections::HashSet;
    const N: usize = 20;
    let mut p = Pair::with_client_addrs(config(), config(), &[client_ip(), client_ip2()]);
    p.server.set_affinity_journal(true);
    let handles: Vec<ConnHandle> = (0..N).map(|i| p.connect(30_000 + i as u16)).collect();
    assert!(
        p.run_until(Duration::from_secs(10), Duration::from_millis(10), |p| {
            established(&p.server) == N
        })
    );
    // Data lets the clients' path managers open the second subflows.
    for h in &handles {
        assert_eq!(p.client.get_mut(*h).unwrap().send(b"x"), 1);
    }
    assert!(
        p.run_until(Duration::from_secs(10), Duration::from_millis(10), |p| {
            p.server.counters().join_accepted == N as u64
        })
    );
    let tokens: HashSet<u32> = p.server.connections().map(|c| c.token()).collect();
    let mut tuples = HashSet::new();
    let mut filed_tokens = HashSet::new();
    while let Some(c) = p.server.poll_affinity() {
        match c {
            AffinityChange::Tuple { tuple, added: true } => assert!(tuples.insert(tuple)),
            AffinityChange::Token { token, added: true } => assert!(filed_tokens.insert(token)),
            other => panic!("nothing closed yet: {other:?}"),
        }
    }
    assert_eq!(filed_tokens, tokens);
    assert_eq!(tuples.len(), 2 * N, "two subflows each");
    assert!(tuples.iter().all(|t| t.local.ip() == server_ip()));
    for h in &handles {
        p.client.get_mut(*h).unwrap().close();
    }
    let ok = p.run_until(Duration::from_secs(20), Duration::from_millis(50), |p| {
        server_reads_and_closes(p);
        p.server.connection_count() == 0
    });
    assert!(ok);
    while let Some(c) = p.server.poll_affinity() {
        match c {
            AffinityChange::Tuple {
                tuple,
                added: false,
            } => assert!(tuples.remove(&tuple)),
            AffinityChange::Token {
                token,
                added: false,
            } => assert!(filed_tokens.remove(&token)),
            other => panic!("nothing opened: {other:?}"),
        }
    }
    assert!(tuples.is_empty() && filed_tokens.is_empty());
    // Off by default: the client kept nothing.
    assert_eq!(p.client.poll_affinity(), None);
}

#[test]
fn connections_over_the_limit_are_refused_and_counted() {
    let mut scfg = config();
    scfg.max_connections = 10;
    let mut p = Pair::new(config(), scfg);
    for i in 0..15 {
        p.connect(30_000 + i);
    }
    p.run_until(Duration::from_secs(3), Duration::from_millis(50), |_| false);
    assert_eq!(established(&p.server), 10);
    assert_eq!(p.server.counters().refused_max_connections, 5);
    // The refused clients got a RST each and gave up.
    assert_eq!(established(&p.client), 10);
    assert!(p.server.counters().resets_sent >= 5);
}

#[test]
fn resets_are_queued_not_lost() {
    // Many stray segments in one batch: every one gets its RST (before,
    // only one pending RST was kept and the rest were lost).
    let mut p = Pair::new(config(), config());
    for i in 0..40 {
        p.connect(40_000 + i);
    }
    // The client's SYNs go to a port nobody listens on.
    let mut server = MptcpEndpoint::new(
        config(),
        &[LocalAddr {
            ip: server_ip(),
            path: 0,
            signal: false,
        }],
    );
    let mut buf = vec![0u8; 1600];
    while let Some((_, n)) = p.client.poll_transmit(p.now, &mut buf) {
        server.handle_packet(p.now, 0, &buf[..n]);
    }
    let mut rsts = 0;
    while let Some((_, n)) = server.poll_transmit(p.now, &mut buf) {
        p.client.handle_packet(p.now, 0, &buf[..n]);
        rsts += 1;
    }
    assert_eq!(rsts, 40);
    assert_eq!(server.counters().resets_sent, 40);
    assert_eq!(server.counters().resets_dropped, 0);
    assert!(p.client.connections().all(|c| c.is_closed()));

    // Bounded: a queue of 8 and 8 per second; the rest are counted.
    let mut cfg = config();
    cfg.reset_queue = 8;
    cfg.resets_per_second = 8;
    let mut server = MptcpEndpoint::new(
        cfg,
        &[LocalAddr {
            ip: server_ip(),
            path: 0,
            signal: false,
        }],
    );
    let mut q = Pair::new(config(), config());
    for i in 0..40 {
        q.connect(41_000 + i);
    }
    while let Some((_, n)) = q.client.poll_transmit(q.now, &mut buf) {
        server.handle_packet(q.now, 0, &buf[..n]);
    }
    let mut rsts = 0;
    while server.poll_transmit(q.now, &mut buf).is_some() {
        rsts += 1;
    }
    assert_eq!(rsts, 8);
    assert_eq!(server.counters().resets_dropped, 32);
}

/// An MP_CAPABLE SYN from a random-looking source that never completes.
fn flood_syn(i: u32, buf: &mut [u8]) -> usize {
    use mptcp_engine::wire::ip::{emit_ip_tcp, IpRepr};
    use mptcp_engine::wire::mptcp::{MpCapable, MptcpOption};
    use mptcp_engine::wire::tcp::{TcpFlags, TcpOptions, TcpRepr};
    let x = i.wrapping_mul(2_654_435_761);
    let src = IpAddr::V4(Ipv4Addr::new(10, 9, (x >> 8) as u8, x as u8));
    let mut options = TcpOptions {
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        ..Default::default()
    };
    options
        .mptcp
        .push(MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: MpCapable::FLAG_HMAC_SHA256,
            ..Default::default()
        }))
        .unwrap();
    let syn = TcpRepr {
        src_port: 1024 + (x >> 16) as u16 % 60_000,
        dst_port: PORT,
        seq: x,
        ack: 0,
        flags: TcpFlags::SYN,
        window: 64_000,
        urgent: 0,
        options,
        payload: &[],
    };
    emit_ip_tcp(&IpRepr::new_tcp(src, server_ip()).unwrap(), &syn, buf).unwrap()
}

/// Every client connection sends `size` bytes of a pattern, the server
/// echoes them, the client checks them; returns the bytes that matched.
fn echo_all(p: &mut Pair, handles: &[ConnHandle], size: usize, mut between: impl FnMut(&mut Pair)) {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let mut sent = vec![0usize; handles.len()];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); handles.len()];
    let mut tmp = vec![0u8; 65536];
    let ok = p.run_until(Duration::from_secs(60), Duration::from_millis(5), |p| {
        between(p);
        // The server: an echo, only for connections that changed.
        while let Some(h) = p.server.poll_app_ready() {
            let Some(c) = p.server.get_mut(h) else {
                continue;
            };
            let n = c.recv(&mut tmp);
            if n > 0 {
                assert_eq!(c.send(&tmp[..n]), n, "the echo fits the send buffer");
            }
        }
        let mut done = 0;
        for (k, h) in handles.iter().enumerate() {
            let c = p.client.get_mut(*h).unwrap();
            if c.is_established() && sent[k] < size {
                sent[k] += c.send(&data[sent[k]..]);
            }
            let n = c.recv(&mut tmp);
            got[k].extend_from_slice(&tmp[..n]);
            done += (got[k].len() == size) as usize;
        }
        done == handles.len()
    });
    let short: Vec<usize> = got.iter().map(Vec::len).filter(|&l| l != size).collect();
    assert!(
        ok,
        "{} connections short: {:?}",
        short.len(),
        &short[..short.len().min(10)]
    );
    for g in &got {
        assert!(g == &data, "echo differs");
    }
}

#[test]
fn syn_cookies_carry_mp_capable_and_plain_tcp() {
    // No half-open room at all: every connection comes through a cookie.
    let mut scfg = config();
    scfg.max_half_open = 0;
    let mut p = Pair::new(config(), scfg);
    let handles: Vec<ConnHandle> = (0..50).map(|i| p.connect(50_000 + i)).collect();
    echo_all(&mut p, &handles, 20_000, |_| {});
    let c = p.server.counters().clone();
    assert_eq!(c.syn_cookies_accepted, 50, "{c:?}");
    assert!(c.syn_cookies_sent >= 50);
    assert_eq!(p.server.half_open_count(), 0);
    // MPTCP, not fallback: both ends know each other's key.
    for h in &handles {
        let (local, remote) = p.client.get(*h).unwrap().keys();
        assert!(p.server.connections().any(|s| s.keys() == (remote, local)));
    }

    // Plain TCP through a cookie: a TCP client, served by fallback.
    use mptcp_engine::io::ByteStream;
    use mptcp_engine::tcp::TcpEndpoint;
    let mut tcp = TcpEndpoint::client(
        mptcp_engine::tcp::Config::default(),
        SocketAddr::new(client_ip(), 60_000),
        SocketAddr::new(server_ip(), PORT),
        p.now,
    );
    let mut buf = vec![0u8; 1600];
    let mut echoed = Vec::new();
    let mut tmp = [0u8; 256];
    let mut sent = false;
    for _ in 0..200 {
        while let Some((_, n)) = tcp.poll_transmit(p.now, &mut buf) {
            p.server.handle_packet(p.now, 0, &buf[..n]);
        }
        while let Some(h) = p.server.poll_app_ready() {
            let c = p.server.get_mut(h).unwrap();
            let n = c.recv(&mut tmp);
            c.send(&tmp[..n]);
        }
        while let Some((_, n)) = p.server.poll_transmit(p.now, &mut buf) {
            tcp.handle_packet(p.now, 0, &buf[..n]);
        }
        if tcp.is_established() && !sent {
            sent = tcp.send(b"plain through a cookie") == 22;
        }
        let n = tcp.recv(&mut tmp);
        echoed.extend_from_slice(&tmp[..n]);
        p.now = p.now + Duration::from_millis(5);
        tcp.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
    assert_eq!(echoed, b"plain through a cookie");
    assert_eq!(p.server.counters().syn_cookies_accepted, 51);

    // A forged ACK (no cookie of ours) gets a RST, not a connection.
    let before = p.server.connection_count();
    let forged = {
        use mptcp_engine::wire::ip::{emit_ip_tcp, IpRepr};
        use mptcp_engine::wire::tcp::{TcpFlags, TcpRepr};
        let ack = TcpRepr {
            src_port: 61_000,
            dst_port: PORT,
            seq: 1000,
            ack: 0x1234_5678,
            flags: TcpFlags::ACK,
            window: 1000,
            urgent: 0,
            options: Default::default(),
            payload: &[],
        };
        emit_ip_tcp(
            &IpRepr::new_tcp(client_ip(), server_ip()).unwrap(),
            &ack,
            &mut buf,
        )
        .unwrap()
    };
    let frame = buf[..forged].to_vec();
    p.server.handle_packet(p.now, 0, &frame);
    assert_eq!(p.server.connection_count(), before);
    assert_eq!(p.server.counters().syn_cookies_invalid, 1);
}

#[test]
fn syn_cookies_carry_v0_mp_capable() {
    // v0 through cookies: the third ACK repeats the client's key (the SYN
    // carried it), so the rebuilt connection speaks v0 with both keys.
    let mut ccfg = config();
    ccfg.client_version = mptcp_engine::crypto::Version::V0;
    let mut scfg = config();
    scfg.max_half_open = 0;
    let mut p = Pair::new(ccfg, scfg);
    let handles: Vec<ConnHandle> = (0..10).map(|i| p.connect(50_000 + i)).collect();
    echo_all(&mut p, &handles, 20_000, |_| {});
    let c = p.server.counters().clone();
    assert_eq!(c.syn_cookies_accepted, 10, "{c:?}");
    for h in &handles {
        let cc = p.client.get(*h).unwrap();
        assert_eq!(cc.version(), mptcp_engine::crypto::Version::V0);
        assert!(!cc.is_fallback());
        let (local, remote) = cc.keys();
        assert!(p.server.connections().any(
            |s| s.keys() == (remote, local) && s.version() == mptcp_engine::crypto::Version::V0
        ));
    }
}

#[test]
fn a_syn_flood_leaves_room_for_real_clients_and_their_joins() {
    const LEGIT: usize = 40;
    let mut scfg = config();
    scfg.max_half_open = 64;
    // The flood's half-open connections give up quickly, as in a long flood.
    scfg.tcp.max_syn_retransmissions = 1;
    let mut p = Pair::with_client_addrs(config(), scfg, &[client_ip(), client_ip2()]);
    let mut buf = vec![0u8; 1600];
    let mut flood = 0u32;
    // A flood is already running when the clients come.
    for _ in 0..2000 {
        let n = flood_syn(flood, &mut buf);
        flood += 1;
        p.server.handle_packet(p.now, 0, &buf[..n]);
    }
    // SYN/ACKs to the flood's addresses go nowhere.
    while p.server.poll_transmit(p.now, &mut buf).is_some() {}
    let handles: Vec<ConnHandle> = (0..LEGIT as u16).map(|i| p.connect(52_000 + i)).collect();
    let mut peak_conns = 0;
    echo_all(&mut p, &handles, 64 << 10, |p| {
        // 200 flood SYNs per step, interleaved with the real traffic.
        let mut b = [0u8; 128];
        for _ in 0..200 {
            let n = flood_syn(flood, &mut b);
            flood += 1;
            p.server.handle_packet(p.now, 0, &b[..n]);
        }
        peak_conns = peak_conns.max(p.server.connection_count());
        p.server.reap_closed();
    });
    let c = p.server.counters().clone();
    eprintln!("{flood} flood SYNs; server counters {c:?}; peak {peak_conns} connections");
    assert!(p.server.half_open_count() <= 64);
    // Bounded: the flood holds at most the half-open queue, never more.
    assert!(peak_conns <= 64 + LEGIT, "peak {peak_conns} connections");
    // Past the half-open queue, SYNs got cookies (or, beyond the bounded
    // queue of cookie replies, were dropped and counted).
    assert!(c.syn_cookies_sent >= 256, "{c:?}");
    assert_eq!(c.accepted - c.syn_cookies_accepted, 64, "{c:?}");
    // (The last batch of 200 may still wait in the cookie queue.)
    assert!(
        c.syn_cookies_sent + c.syn_dropped + 64 + 256 >= u64::from(flood),
        "{c:?}"
    );
    // Every real client got in and was joined by its second subflow.
    let joined = handles
        .iter()
        .filter(|h| p.client.get(**h).unwrap().subflows().count() >= 2)
        .count();
    assert_eq!(joined, LEGIT);
    assert!(c.join_accepted >= LEGIT as u64, "{c:?}");
    assert_eq!(c.join_refused, 0);
}

/// One connection sends `total` bytes to a server application that reads
/// nothing for `pause` (simulated); returns what the server held when it
/// started reading and whether every byte then arrived in order.
fn paused_reader(total: usize, pause: Duration) -> (usize, bool) {
    let mut p = Pair::new(config(), config());
    let h = p.connect(45_000);
    let data: Vec<u8> = (0..total).map(|i| (i * 7 % 253) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 1 << 16];
    let mut held = None;
    let start = p.now;
    let ok = p.run_until(Duration::from_secs(60), Duration::from_millis(1), |p| {
        let c = p.client.get_mut(h).unwrap();
        if c.is_established() && sent < total {
            sent += c.send(&data[sent..]);
        }
        if p.now.saturating_duration_since(start) < pause {
            return false;
        }
        let handles: Vec<ConnHandle> = p.server.handles().collect();
        for sh in handles {
            let c = p.server.get_mut(sh).unwrap();
            loop {
                let n = c.recv(&mut tmp);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&tmp[..n]);
            }
        }
        held.get_or_insert(got.len());
        got.len() == total
    });
    if !ok {
        let c = p.client.get(h).unwrap();
        for sf in c.subflows() {
            eprintln!(
                "client subflow {:?} {:?}",
                sf.status,
                c.subflow_stats(sf.id)
            );
        }
        eprintln!("client data acked {}", c.data_acked());
        for sc in p.server.connections() {
            for sf in sc.subflows() {
                eprintln!(
                    "server subflow {:?} {:?}",
                    sf.status,
                    sc.subflow_stats(sf.id)
                );
            }
        }
        eprintln!(
            "paused reader: {} of {total} bytes after {:?}; client sent {sent}; {:?}",
            got.len(),
            p.now.saturating_duration_since(start),
            pool::stats()
        );
    }
    (held.unwrap_or(0), ok && got == data)
}

#[test]
fn a_memory_limit_shrinks_windows_and_fails_nothing() {
    const TOTAL: usize = 4 << 20;
    // No limit: the server buffers what its 8 MB window lets in.
    pool::configure(0, 1024);
    let (held_free, exact) = paused_reader(TOTAL, Duration::from_secs(3));
    assert!(exact);
    // A 256 KiB limit for this thread's engines (both ends here): windows
    // shrink to what is already held plus what is left, and the transfer
    // still completes byte for byte.
    pool::configure(256 << 10, 1024);
    let (held_limited, exact) = paused_reader(TOTAL, Duration::from_secs(3));
    let stats = pool::stats();
    pool::configure(0, 1024);
    eprintln!("held by an idle reader: {held_free} bytes without a limit, {held_limited} with 256 KiB; {stats:?}");
    assert!(exact, "the limited transfer did not complete exactly");
    assert!(held_free >= TOTAL / 2, "{held_free}");
    assert!(held_limited <= 512 << 10, "{held_limited}");
    assert!(stats.over_limit > 0, "the limit was reached: {stats:?}");
}

#[test]
fn a_listener_on_the_unspecified_ipv6_address_takes_ipv4_too() {
    let v6: IpAddr = "fd00::2".parse().unwrap();
    let locals = [
        LocalAddr {
            ip: server_ip(),
            path: 0,
            signal: false,
        },
        LocalAddr {
            ip: v6,
            path: 0,
            signal: false,
        },
    ];
    for (listen, v4_ok, v6_ok) in [("[::]:8080", true, true), ("0.0.0.0:8080", true, false)] {
        let mut p = Pair::new(config(), config());
        p.server = MptcpEndpoint::new(config(), &locals);
        p.server.listen(listen.parse().unwrap());
        let mut v6_client = MptcpEndpoint::new(
            config(),
            &[LocalAddr {
                ip: "fd00::1".parse().unwrap(),
                path: 0,
                signal: false,
            }],
        );
        let h4 = p.connect(46_000);
        let h6 = v6_client.connect(46_001, SocketAddr::new(v6, PORT), p.now);
        let mut buf = vec![0u8; 1600];
        for _ in 0..20 {
            p.exchange();
            while let Some((_, n)) = v6_client.poll_transmit(p.now, &mut buf) {
                p.server.handle_packet(p.now, 0, &buf[..n]);
            }
            while let Some((_, n)) = p.server.poll_transmit(p.now, &mut buf) {
                // Each reply to its own client, by family.
                if buf[0] >> 4 == 6 {
                    v6_client.handle_packet(p.now, 0, &buf[..n]);
                } else {
                    p.client.handle_packet(p.now, 0, &buf[..n]);
                }
            }
        }
        let up4 = p.client.get(h4).is_some_and(|c| c.is_established());
        let up6 = v6_client.get(h6).is_some_and(|c| c.is_established());
        assert_eq!((up4, up6), (v4_ok, v6_ok), "listening on {listen}");
    }
}

#[test]
fn joins_reach_announced_addresses_of_a_specific_listener() {
    // Listening on one address, announcing another: the client's MP_JOIN
    // to the announced address is accepted (the token names the connection).
    let announced: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2));
    let locals = [
        LocalAddr {
            ip: server_ip(),
            path: 0,
            signal: false,
        },
        LocalAddr {
            ip: announced,
            path: 0,
            signal: true,
        },
    ];
    let mut p = Pair::new(config(), config());
    p.server = MptcpEndpoint::new(config(), &locals);
    p.server.listen(SocketAddr::new(server_ip(), PORT));
    let h = p.connect(47_000);
    let ok = p.run_until(Duration::from_secs(10), Duration::from_millis(10), |p| {
        p.client.get(h).is_some_and(|c| c.subflows().count() >= 2)
            && p.server.counters().join_accepted == 1
    });
    assert!(ok, "{:?}", p.server.counters());
    assert_eq!(p.server.counters().join_refused, 0);
    let c = p.client.get(h).unwrap();
    assert!(c.subflows().any(|s| s.tuple.remote.ip() == announced));
}

/// A burst of connections opening at once may send no more than the
/// receive-window budget (plus one MSS each) before hearing from us: their
/// SYN/ACK windows and every later window come out of it, and closed
/// connections give their share back. Without a budget, each offers its
/// whole buffer.
#[test]
fn a_window_budget_bounds_what_a_burst_of_connections_may_send() {
    const N: usize = 1000;
    const MSS: u64 = 1460;
    for budget in [0, 200 * MSS] {
        pool::set_window_budget(budget);
        let mut p = Pair::new(config(), config());
        let handles: Vec<ConnHandle> = (0..N).map(|i| p.connect(20_000 + i as u16)).collect();
        let ok = p.run_until(Duration::from_secs(30), Duration::from_millis(50), |p| {
            established(&p.client) == N && established(&p.server) == N
        });
        assert!(ok, "budget {budget}: not all established");
        let opened = pool::window_promised();
        let mut peak = opened;
        echo_all(&mut p, &handles, 16 << 10, |_| {
            peak = peak.max(pool::window_promised());
        });
        eprintln!("budget {budget}: {opened} bytes of window promised once open, {peak} at most");
        // Both ends are on this thread: 2N connections count.
        if budget == 0 {
            assert!(opened >= 2 * N as u64 * 60_000, "{opened}");
        } else {
            assert!(peak <= budget + 2 * N as u64 * MSS, "{peak}");
        }
        drop(p);
        assert_eq!(
            pool::window_promised(),
            0,
            "closed connections keep a promise"
        );
    }
    pool::set_window_budget(0);
}

#[test]
fn a_cookies_ack_is_accepted_by_another_engine_sharing_the_cookie_secret() {
    // Two workers of one server: the SYN reaches one, the ACK of its
    // cookie another (the client's transmit queue changed). With one
    // cookie secret between them, and one ISN secret (the second must
    // agree with the SYN/ACK's timestamps, or the client's PAWS drops
    // what it sends), as `serve` sets, the second accepts it.
    let isn_secret = mptcp_engine::secret::random();
    for shared in [true, false] {
        let cookie = shared.then(mptcp_engine::secret::random);
        let worker = || {
            let mut c = config();
            c.max_half_open = 0;
            c.cookie_secret = cookie;
            c.tcp.isn_secret = isn_secret;
            c
        };
        let mut p = Pair::new(config(), worker());
        let mut other = MptcpEndpoint::server(
            worker(),
            &[LocalAddr {
                ip: server_ip(),
                path: 0,
                signal: false,
            }],
            PORT,
        );
        let h = p.connect(50_000);
        // SYN to the first worker, its cookie SYN/ACK back.
        let (_, n) = p.client.poll_transmit(p.now, &mut p.buf).expect("SYN");
        p.server.handle_packet(p.now, 0, &p.buf[..n]);
        let (_, n) = p.server.poll_transmit(p.now, &mut p.buf).expect("SYN/ACK");
        p.client.handle_packet(p.now, 0, &p.buf[..n]);
        assert_eq!(p.server.counters().syn_cookies_sent, 1);
        // Everything after goes to the other one.
        std::mem::swap(&mut p.server, &mut other);
        if shared {
            echo_all(&mut p, &[h], 20_000, |_| {});
            assert_eq!(p.server.counters().syn_cookies_accepted, 1);
        } else {
            p.exchange();
            let c = p.server.counters();
            assert_eq!(
                (c.syn_cookies_accepted, c.syn_cookies_invalid),
                (0, 1),
                "{c:?}"
            );
        }
    }
}
