//! Two MptcpEndpoints over the simulator's network (`mptcp_sim::Network`):
//! per path a rate, a one-way delay, a loss probability (seeded) and an
//! up/down switch, plus a hook that may rewrite or drop any packet.

#![allow(dead_code)]

use mptcp_engine::app::Pattern;
use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::mptcp::{LocalAddr, MptcpConfig, MptcpEndpoint};
use mptcp_engine::time::Instant;
use mptcp_sim::{LinkProfile, Network, ProfilePatch, QueueLimit, SendOutcome, Side};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct PathSpec {
    /// Bits per second (0: unlimited).
    pub rate_bps: u64,
    /// One-way delay.
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

    /// The simulator's description of this path (its `delay` is the round trip).
    fn sim(&self) -> mptcp_sim::PathSpec {
        mptcp_sim::PathSpec {
            source: String::new(),
            initial: LinkProfile {
                rate_bps: (self.rate_bps > 0).then_some(self.rate_bps),
                delay: self.delay * 2,
                loss: self.loss_ppm as f64 / 1e6,
                queue: QueueLimit::Packets(self.queue as u64),
                ..LinkProfile::default()
            },
            changes: Vec::new(),
        }
    }
}

/// Rewrites or drops a packet: (path, to_server, packet) -> keep.
pub type Tamper = Box<dyn FnMut(usize, bool, &mut Vec<u8>) -> bool>;

pub struct Net {
    pub now: Instant,
    pub client: MptcpEndpoint,
    pub server: MptcpEndpoint,
    network: Network,
    buf: Vec<u8>,
    /// Optional hook that may rewrite or drop each packet: (path, to_server, packet) -> keep.
    pub tamper: Option<Tamper>,
    /// Packets lost on the way (tampered away, lost, queue full, path down).
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
        let specs: Vec<mptcp_sim::PathSpec> = paths.iter().map(PathSpec::sim).collect();
        Net {
            now,
            client,
            server,
            network: Network::new(&specs, seed),
            buf: vec![0u8; 2048],
            tamper: None,
            dropped: 0,
            stuck: 0,
        }
    }

    pub fn set_up(&mut self, path: usize, up: bool) {
        let patch = ProfilePatch {
            up: Some(up),
            ..ProfilePatch::default()
        };
        self.network.change_profile(self.now, path, &patch);
    }

    fn send(&mut self, path: usize, to_server: bool, len: usize) {
        if path >= self.network.path_count() {
            self.dropped += 1;
            return;
        }
        if let Some(t) = self.tamper.as_mut() {
            let mut p = self.buf[..len].to_vec();
            if !t(path, to_server, &mut p) {
                self.dropped += 1;
                return;
            }
            self.buf[..p.len()].copy_from_slice(&p);
            return self.send_untampered(path, to_server, p.len());
        }
        self.send_untampered(path, to_server, len)
    }

    fn send_untampered(&mut self, path: usize, to_server: bool, len: usize) {
        let from = if to_server {
            Side::Client
        } else {
            Side::Server
        };
        if let SendOutcome::Dropped(_) = self.network.send(self.now, from, path, &self.buf[..len]) {
            self.dropped += 1;
        }
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
                    self.send(path, true, n);
                    any = true;
                }
                while let Some((path, n)) = self.server.poll_transmit(self.now, &mut self.buf) {
                    self.send(path, false, n);
                    any = true;
                }
                if !any {
                    break;
                }
            }
            if done(self) {
                return true;
            }
            let next = [
                self.client.poll_timeout(),
                self.server.poll_timeout(),
                self.network.next_event_time(),
            ]
            .into_iter()
            .flatten()
            .min();
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
            let (client, server) = (&mut self.client, &mut self.server);
            self.network.process_until(now, |d| match d.to {
                Side::Server => server.handle_packet(now, d.path, d.packet),
                Side::Client => client.handle_packet(now, d.path, d.packet),
            });
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
        }
    }
}

/// Deterministic payload: the test pattern of `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    Pattern::new(seed).bytes(0, len)
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
