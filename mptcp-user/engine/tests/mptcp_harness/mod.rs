//! A deterministic multi-path network for two MptcpEndpoints: per path a
//! rate, a one-way delay, a loss probability (seeded) and an up/down switch.

#![allow(dead_code)]

use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::mptcp::{LocalAddr, MptcpConfig, MptcpEndpoint};
use mptcp_engine::time::Instant;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct PathSpec {
    /// Bits per second (0: unlimited).
    pub rate_bps: u64,
    pub delay: Duration,
    /// Loss probability in parts per million.
    pub loss_ppm: u32,
    /// Packets queued at most per direction.
    pub queue: usize,
}

impl PathSpec {
    pub fn new(rate_mbps: u64, delay_ms: u64, loss_ppm: u32) -> PathSpec {
        PathSpec {
            rate_bps: rate_mbps * 1_000_000,
            delay: Duration::from_millis(delay_ms),
            loss_ppm,
            queue: 1000,
        }
    }
}

struct Link {
    spec: PathSpec,
    up: bool,
    /// When the transmitter is free again.
    busy_until: Instant,
    /// (arrival, packet)
    flight: VecDeque<(Instant, Vec<u8>)>,
}

/// Rewrites or drops a packet: (path, to_server, packet) -> keep.
pub type Tamper = Box<dyn FnMut(usize, bool, &mut Vec<u8>) -> bool>;

pub struct Net {
    pub now: Instant,
    pub client: MptcpEndpoint,
    pub server: MptcpEndpoint,
    /// [path][0: to server, 1: to client]
    links: Vec<[Link; 2]>,
    rng: u64,
    buf: Vec<u8>,
    /// Optional hook that may rewrite or drop each packet: (path, to_server, packet) -> keep.
    pub tamper: Option<Tamper>,
    pub dropped: u64,
    stuck: u32,
}

pub fn client_ip(path: usize) -> IpAddr {
    format!("10.0.{path}.1").parse().unwrap()
}
pub fn server_ip(path: usize) -> IpAddr {
    format!("10.0.{path}.2").parse().unwrap()
}
pub const PORT: u16 = 8080;

impl Net {
    /// Client addresses 10.0.p.1, server addresses 10.0.p.2 (the server
    /// announces its extra ones when `signal`).
    pub fn new(
        paths: &[PathSpec],
        ccfg: MptcpConfig,
        scfg: MptcpConfig,
        signal: bool,
        seed: u64,
    ) -> Net {
        let clocals: Vec<LocalAddr> = (0..paths.len())
            .map(|p| LocalAddr {
                ip: client_ip(p),
                path: p,
                signal: false,
            })
            .collect();
        let slocals: Vec<LocalAddr> = (0..paths.len())
            .map(|p| LocalAddr {
                ip: server_ip(p),
                path: p,
                signal: signal && p > 0,
            })
            .collect();
        let now = Instant::ZERO;
        let client = MptcpEndpoint::client(
            ccfg,
            &clocals,
            40000,
            SocketAddr::new(server_ip(0), PORT),
            now,
        );
        let server = MptcpEndpoint::server(scfg, &slocals, PORT);
        let links = paths
            .iter()
            .map(|&spec| {
                let l = || Link {
                    spec,
                    up: true,
                    busy_until: Instant::ZERO,
                    flight: VecDeque::new(),
                };
                [l(), l()]
            })
            .collect();
        Net {
            now,
            client,
            server,
            links,
            rng: seed | 1,
            buf: vec![0u8; 2048],
            tamper: None,
            dropped: 0,
            stuck: 0,
        }
    }

    fn rand_ppm(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) as u32
    }

    pub fn set_up(&mut self, path: usize, up: bool) {
        for l in self.links[path].iter_mut() {
            l.up = up;
            if !up {
                l.flight.clear();
            }
        }
    }

    fn send(&mut self, path: usize, to_server: bool, mut p: Vec<u8>) {
        if path >= self.links.len() {
            self.dropped += 1;
            return;
        }
        if let Some(t) = self.tamper.as_mut() {
            if !t(path, to_server, &mut p) {
                self.dropped += 1;
                return;
            }
        }
        let r = self.rand_ppm();
        let now = self.now;
        let l = &mut self.links[path][to_server as usize];
        if !l.up || r < l.spec.loss_ppm || l.flight.len() >= l.spec.queue {
            self.dropped += 1;
            return;
        }
        let start = l.busy_until.max(now);
        let tx = Duration::from_nanos(
            (p.len() as u64 * 8 * 1_000_000_000)
                .checked_div(l.spec.rate_bps)
                .unwrap_or(0),
        );
        l.busy_until = start + tx;
        l.flight.push_back((start + tx + l.spec.delay, p));
    }

    /// Runs until `done` or `limit` of simulated time; returns whether done.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            let mut bursts = 0u32;
            loop {
                bursts += 1;
                assert!(
                    bursts < 1_000_000,
                    "endless transmissions at {:?}",
                    self.now
                );
                let mut any = false;
                while let Some((path, n)) = self.client.poll_transmit(self.now, &mut self.buf) {
                    let p = self.buf[..n].to_vec();
                    self.send(path, true, p);
                    any = true;
                }
                while let Some((path, n)) = self.server.poll_transmit(self.now, &mut self.buf) {
                    let p = self.buf[..n].to_vec();
                    self.send(path, false, p);
                    any = true;
                }
                if !any {
                    break;
                }
            }
            if done(self) {
                return true;
            }
            let mut next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            for pl in &self.links {
                for l in pl {
                    if let Some(f) = l.flight.front() {
                        next = Some(next.map_or(f.0, |n: Instant| n.min(f.0)));
                    }
                }
            }
            let Some(next) = next else { return false };
            if next <= self.now {
                self.stuck += 1;
                assert!(
                    self.stuck < 1_000_000,
                    "time does not advance at {:?}",
                    self.now
                );
            } else {
                self.stuck = 0;
            }
            if next > end {
                return false;
            }
            self.now = self.now.max(next);
            let now = self.now;
            for pi in 0..self.links.len() {
                for dir in 0..2 {
                    while self.links[pi][dir]
                        .flight
                        .front()
                        .is_some_and(|f| f.0 <= now)
                    {
                        let (_, p) = self.links[pi][dir].flight.pop_front().unwrap();
                        if dir == 1 {
                            self.server.handle_packet(now, pi, &p);
                        } else {
                            self.client.handle_packet(now, pi, &p);
                        }
                    }
                }
            }
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
        }
    }
}

/// Deterministic payload.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Client sends `up` bytes, server echoes nothing but sends `down` bytes;
/// both close when done. Returns (bytes received by server, by client).
pub fn transfer(
    net: &mut Net,
    up: &[u8],
    down: &[u8],
    limit: Duration,
) -> (Vec<u8>, Vec<u8>, bool) {
    let mut got_s = Vec::new();
    let mut got_c = Vec::new();
    let (mut sent_c, mut sent_s) = (0usize, 0usize);
    let (mut closed_c, mut closed_s) = (false, false);
    let mut tmp = vec![0u8; 65536];
    let ok = net.run_until(limit, |n| {
        if n.client.is_established() {
            sent_c += n.client.send(&up[sent_c..]);
            if sent_c == up.len() && !closed_c {
                n.client.close();
                closed_c = true;
            }
        }
        if n.server.is_established() {
            sent_s += n.server.send(&down[sent_s..]);
            if sent_s == down.len() && !closed_s {
                n.server.close();
                closed_s = true;
            }
        }
        loop {
            let k = n.server.recv(&mut tmp);
            if k == 0 {
                break;
            }
            got_s.extend_from_slice(&tmp[..k]);
        }
        loop {
            let k = n.client.recv(&mut tmp);
            if k == 0 {
                break;
            }
            got_c.extend_from_slice(&tmp[..k]);
        }
        n.client.is_read_closed() && n.server.is_read_closed() && closed_c && closed_s
    });
    (got_s, got_c, ok)
}
