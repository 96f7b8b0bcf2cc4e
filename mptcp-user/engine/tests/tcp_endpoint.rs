//! TcpEndpoint over IPv4 and IPv6 packets through an in-test wire.

use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::tcp::{Config, TcpEndpoint};
use mptcp_engine::time::Instant;
use mptcp_engine::wire::ip::parse_ip_tcp;
use mptcp_engine::wire::tcp::TcpFlags;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

const DELAY: Duration = Duration::from_millis(2);

struct Wire {
    now: Instant,
    a: TcpEndpoint,
    b: TcpEndpoint,
    /// (arrival, to_b, packet)
    queue: VecDeque<(Instant, bool, Vec<u8>)>,
    /// Corrupts the n-th packet from a to b (0-based), if set.
    corrupt: Option<usize>,
    sent_a: usize,
    buf: Vec<u8>,
}

impl Wire {
    fn new(a: TcpEndpoint, b: TcpEndpoint) -> Wire {
        Wire {
            now: Instant::ZERO,
            a,
            b,
            queue: VecDeque::new(),
            corrupt: None,
            sent_a: 0,
            buf: vec![0u8; 2048],
        }
    }

    fn step(&mut self) -> bool {
        while let Some((_, n)) = self.a.poll_transmit(self.now, &mut self.buf) {
            let mut p = self.buf[..n].to_vec();
            if self.corrupt == Some(self.sent_a) {
                let last = p.len() - 1;
                p[last] ^= 0x40;
            }
            self.sent_a += 1;
            self.queue.push_back((self.now + DELAY, true, p));
        }
        while let Some((_, n)) = self.b.poll_transmit(self.now, &mut self.buf) {
            self.queue
                .push_back((self.now + DELAY, false, self.buf[..n].to_vec()));
        }
        let next = [
            self.queue.front().map(|q| q.0),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        while self.queue.front().is_some_and(|q| q.0 <= self.now) {
            let (_, to_b, p) = self.queue.pop_front().unwrap();
            if to_b {
                self.b.handle_packet(self.now, 0, &p);
            } else {
                self.a.handle_packet(self.now, 0, &p);
            }
        }
        if self.a.poll_timeout().is_some_and(|t| t <= self.now) {
            self.a.handle_timeout(self.now);
        }
        if self.b.poll_timeout().is_some_and(|t| t <= self.now) {
            self.b.handle_timeout(self.now);
        }
        true
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    mptcp_engine::app::Pattern::new(seed).bytes(0, len)
}

fn cfg() -> Config {
    Config {
        time_wait: Duration::from_millis(100),
        ..Config::default()
    }
}

/// Runs a full exchange and close; returns (what b got, what a got).
fn exchange(w: &mut Wire, to_b: &[u8], to_a: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut sa, mut sb) = (0, 0);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let mut tmp = vec![0u8; 1 << 16];
    for _ in 0..10_000_000 {
        sa += w.a.send(&to_b[sa..]);
        sb += w.b.send(&to_a[sb..]);
        if sa == to_b.len() && w.a.is_established() {
            w.a.close();
        }
        if sb == to_a.len() && w.b.is_established() {
            w.b.close();
        }
        let na = w.a.recv(&mut tmp);
        got_a.extend_from_slice(&tmp[..na]);
        let nb = w.b.recv(&mut tmp);
        got_b.extend_from_slice(&tmp[..nb]);
        if w.a.is_closed() && w.b.is_closed() && w.a.is_read_closed() && w.b.is_read_closed() {
            break;
        }
        if !w.step() && na == 0 && nb == 0 {
            break;
        }
    }
    (got_b, got_a)
}

fn pair(client: &str, server: &str, listen: &str) -> Wire {
    let c: SocketAddr = client.parse().unwrap();
    let s: SocketAddr = server.parse().unwrap();
    let l: SocketAddr = listen.parse().unwrap();
    Wire::new(
        TcpEndpoint::client(cfg(), c, s, Instant::ZERO),
        TcpEndpoint::listen(cfg(), l),
    )
}

#[test]
fn ipv4_and_ipv6_transfers_are_exact_and_close() {
    for (c, s, l) in [
        ("192.0.2.1:40000", "192.0.2.2:5201", "192.0.2.2:5201"),
        ("[2001:db8::1]:40000", "[2001:db8::2]:5201", "[::]:5201"),
    ] {
        let mut w = pair(c, s, l);
        let to_b = pattern(2 << 20, 1);
        let to_a = pattern(300_000, 2);
        let (got_b, got_a) = exchange(&mut w, &to_b, &to_a);
        assert!(got_b == to_b, "{c}: client to server");
        assert!(got_a == to_a, "{c}: server to client");
        assert!(w.a.is_closed() && w.b.is_closed());
        assert!(w.a.is_read_closed() && w.b.is_read_closed());
        let ps = w.b.path_stats();
        assert_eq!(ps.bytes_received, to_b.len() as u64);
        assert_eq!(w.a.path_stats().bytes_sent, to_b.len() as u64);
        let st = w.a.subflow_stats().unwrap();
        assert_eq!(st.bytes_acked, to_b.len() as u64);
        assert!(st.srtt >= 2 * DELAY);
        assert_eq!(w.b.counters().bad_checksum, 0);
    }
}

#[test]
fn corrupted_packet_is_dropped_and_repaired() {
    let mut w = pair("192.0.2.1:40000", "192.0.2.2:5201", "0.0.0.0:5201");
    // Packet 0 is the SYN, 1 the handshake ACK; 5 carries data.
    w.corrupt = Some(5);
    let to_b = pattern(200_000, 3);
    let (got_b, _) = exchange(&mut w, &to_b, &[]);
    assert!(got_b == to_b);
    assert_eq!(w.b.counters().bad_checksum, 1);
    assert_eq!(w.a.path_stats().retransmits, 1);
}

#[test]
fn unmatched_segments_get_a_reset_and_garbage_is_counted() {
    let mut w = pair("192.0.2.1:40000", "192.0.2.2:5201", "192.0.2.2:5201");
    // A SYN to a port nobody listens on.
    let mut other = TcpEndpoint::client(
        cfg(),
        "192.0.2.1:40001".parse().unwrap(),
        "192.0.2.2:9".parse().unwrap(),
        Instant::ZERO,
    );
    let mut buf = vec![0u8; 2048];
    let (_, n) = other.poll_transmit(Instant::ZERO, &mut buf).unwrap();
    let syn = buf[..n].to_vec();
    w.b.handle_packet(Instant::ZERO, 0, &syn);
    assert_eq!(w.b.counters().unmatched, 1);
    let (_, n) = w.b.poll_transmit(Instant::ZERO, &mut buf).expect("RST");
    let (_, rst) = parse_ip_tcp(&buf[..n]).unwrap();
    assert!(rst.flags.contains(TcpFlags::RST | TcpFlags::ACK));
    let (_, syn_seg) = parse_ip_tcp(&syn).unwrap();
    assert_eq!(rst.ack, syn_seg.seq.wrapping_add(1));
    assert_eq!(rst.dst_port, 40001);
    // The RST refuses the other client's connection.
    other.handle_packet(Instant::ZERO, 0, &buf[..n]);
    assert!(other.is_closed());
    // Garbage.
    w.b.handle_packet(Instant::ZERO, 0, &[0x45, 0, 0]);
    w.b.handle_packet(Instant::ZERO, 0, &[]);
    assert_eq!(w.b.counters().malformed, 2);
    // The listener still accepts its real client.
    let (got_b, _) = exchange(&mut w, b"after the noise", &[]);
    assert_eq!(got_b, b"after the noise");
}

#[test]
fn segments_fit_an_mtu_sized_frame_buffer() {
    for (c, s, mtu_payload) in [
        ("192.0.2.1:40000", "192.0.2.2:5201", 1448),
        ("[2001:db8::1]:40000", "[2001:db8::2]:5201", 1428),
    ] {
        let mut w = pair(c, s, s);
        w.buf = vec![0u8; 1500];
        let data = pattern(100_000, 5);
        let (got_b, _) = exchange(&mut w, &data, &[]);
        assert!(got_b == data);
        let st = w.a.subflow_stats().unwrap();
        // Full frames: payload is the MTU less IP, TCP and timestamps.
        let segments = st.segments_sent;
        assert!(
            segments <= (data.len() / mtu_payload) as u64 + 6,
            "{c}: {segments} segments"
        );
    }
}

#[test]
fn mss_follows_the_mtu() {
    assert_eq!(Config::mss_for_mtu(1500, false), 1460);
    assert_eq!(Config::mss_for_mtu(1500, true), 1440);
    let c = cfg().with_mtu(9000, false);
    assert_eq!(c.mss, 8960);
    // A jumbo path carries jumbo segments end to end.
    let a: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let b: SocketAddr = "192.0.2.2:5201".parse().unwrap();
    let mut w = Wire::new(
        TcpEndpoint::client(c.clone(), a, b, Instant::ZERO),
        TcpEndpoint::listen(c, b),
    );
    w.buf = vec![0u8; 9000];
    let data = pattern(1 << 20, 6);
    let (got_b, _) = exchange(&mut w, &data, &[]);
    assert!(got_b == data);
    assert_eq!(w.a.subflow().unwrap().sender_mss(), 8948);
}
