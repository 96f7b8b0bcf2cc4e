//! A tiny deterministic network for two subflows wired back to back:
//! per-direction delay, jitter (reordering), loss, duplication, an optional
//! rate with a drop-tail queue, and a hook to drop chosen segments.
#![allow(dead_code)]

use mptcp_engine::tcp::{Config, FourTuple, State, Subflow};
use mptcp_engine::time::Instant;
use mptcp_engine::wire::tcp::{TcpFlags, TcpOptions, TcpRepr};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct OwnedSeg {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub options: TcpOptions,
    pub payload: Vec<u8>,
}

impl OwnedSeg {
    pub fn from_repr(r: &TcpRepr) -> OwnedSeg {
        OwnedSeg {
            src_port: r.src_port,
            dst_port: r.dst_port,
            seq: r.seq,
            ack: r.ack,
            flags: r.flags,
            window: r.window,
            options: r.options.clone(),
            payload: r.payload.to_vec(),
        }
    }
    pub fn repr(&self) -> TcpRepr<'_> {
        TcpRepr {
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq: self.seq,
            ack: self.ack,
            flags: self.flags,
            window: self.window,
            urgent: 0,
            options: self.options.clone(),
            payload: &self.payload,
        }
    }
    pub fn has(&self, f: TcpFlags) -> bool {
        self.flags.contains(f)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Link {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub dup: f64,
    /// Bits per second; `None` for infinitely fast.
    pub rate: Option<u64>,
    /// Drop-tail queue in bytes (with `rate`).
    pub queue: u64,
}

impl Link {
    pub fn delay_ms(ms: u64) -> Link {
        Link {
            delay: Duration::from_millis(ms),
            ..Default::default()
        }
    }
}

/// Who sent a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Client,
    Server,
}

/// A record of one transmitted segment (for assertions).
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Instant,
    pub from: Side,
    pub seg: OwnedSeg,
    pub dropped: bool,
}

struct InFlight {
    at: u64,
    id: u64,
    to: Side,
    seg: OwnedSeg,
}
impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.id) == (o.at, o.id)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(o.at, o.id))
    }
}

pub type DropHook = Box<dyn FnMut(Side, &OwnedSeg) -> bool>;

pub struct Pair {
    pub now: Instant,
    pub client: Subflow,
    pub server: Option<Subflow>,
    pub server_cfg: Config,
    pub tuple: FourTuple,
    pub to_server: Link,
    pub to_client: Link,
    /// Returns true to drop a segment (on top of random loss).
    pub drop_hook: Option<DropHook>,
    /// Keep a log of every segment sent.
    pub record: bool,
    pub log: Vec<Sent>,
    queue: BinaryHeap<Reverse<InFlight>>,
    link_free: [u64; 2],
    next_id: u64,
    rng: u64,
    buf: Vec<u8>,
}

pub fn tuple() -> FourTuple {
    FourTuple {
        local: "10.0.0.1:40000".parse().unwrap(),
        remote: "10.0.0.2:80".parse().unwrap(),
    }
}

fn reversed(t: FourTuple) -> FourTuple {
    FourTuple {
        local: t.remote,
        remote: t.local,
    }
}

impl Pair {
    pub fn new(client_cfg: &Config, server_cfg: &Config, link: Link, seed: u64) -> Pair {
        let t = tuple();
        Pair {
            now: Instant::ZERO,
            client: Subflow::connect(client_cfg, t, Instant::ZERO),
            server: None,
            server_cfg: server_cfg.clone(),
            tuple: t,
            to_server: link,
            to_client: link,
            drop_hook: None,
            record: false,
            log: Vec::new(),
            queue: BinaryHeap::new(),
            link_free: [0; 2],
            next_id: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            buf: vec![0u8; 65536],
        }
    }

    pub fn server(&mut self) -> &mut Subflow {
        self.server.as_mut().expect("server not created yet")
    }

    fn random(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn enqueue(&mut self, from: Side, seg: OwnedSeg) {
        let (link, to, dir) = match from {
            Side::Client => (self.to_server, Side::Server, 0),
            Side::Server => (self.to_client, Side::Client, 1),
        };
        let mut dropped = self.drop_hook.as_mut().is_some_and(|h| h(from, &seg));
        dropped |= link.loss > 0.0 && self.random() < link.loss;
        let now = self.now.as_nanos();
        let mut depart = now;
        if let Some(rate) = link.rate {
            let wire_bytes = seg.payload.len() as u64 + 52;
            let backlog_ns = self.link_free[dir].saturating_sub(now);
            let backlog_bytes = backlog_ns as u128 * rate as u128 / 8 / 1_000_000_000;
            if !dropped && backlog_bytes as u64 + wire_bytes > link.queue.max(wire_bytes) {
                dropped = true;
            }
            if !dropped {
                depart = self.link_free[dir].max(now) + wire_bytes * 8 * 1_000_000_000 / rate;
                self.link_free[dir] = depart;
            }
        }
        if self.record {
            self.log.push(Sent {
                at: self.now,
                from,
                seg: seg.clone(),
                dropped,
            });
        }
        if dropped {
            return;
        }
        let copies = if link.dup > 0.0 && self.random() < link.dup {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = (link.jitter.as_nanos() as f64 * self.random()) as u64;
            let at = depart + link.delay.as_nanos() as u64 + jitter;
            self.next_id += 1;
            self.queue.push(Reverse(InFlight {
                at,
                id: self.next_id,
                to,
                seg: seg.clone(),
            }));
        }
    }

    /// Sends everything both sides want to send now.
    pub fn pump(&mut self) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(r) = self.client.poll_transmit(now, &mut buf) {
            let s = OwnedSeg::from_repr(&r);
            self.enqueue(Side::Client, s);
        }
        if self.server.is_some() {
            while let Some(r) = self.server.as_mut().unwrap().poll_transmit(now, &mut buf) {
                let s = OwnedSeg::from_repr(&r);
                self.enqueue(Side::Server, s);
            }
        }
        self.buf = buf;
    }

    /// Hands a segment to a side directly (as if it just arrived).
    pub fn inject(&mut self, to: Side, seg: &OwnedSeg) -> mptcp_engine::tcp::Verdict {
        let now = self.now;
        match to {
            Side::Client => self.client.on_segment(now, &seg.repr()),
            Side::Server => self.server().on_segment(now, &seg.repr()),
        }
    }

    fn deliver(&mut self, to: Side, seg: OwnedSeg) {
        let now = self.now;
        match to {
            Side::Client => {
                self.client.on_segment(now, &seg.repr());
            }
            Side::Server => match self.server.as_mut() {
                Some(s) => {
                    s.on_segment(now, &seg.repr());
                }
                None => {
                    self.server =
                        Subflow::accept(&self.server_cfg, reversed(self.tuple), now, &seg.repr());
                }
            },
        }
    }

    pub fn next_event(&self) -> Option<Instant> {
        let net = self.queue.peek().map(|r| Instant::from_nanos(r.0.at));
        let timers = [
            self.client.poll_timeout(),
            self.server.as_ref().and_then(|s| s.poll_timeout()),
        ];
        net.into_iter().chain(timers.into_iter().flatten()).min()
    }

    /// Sends, then advances to the next event and processes it. Returns
    /// false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.pump();
        let Some(next) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(next);
        while self
            .queue
            .peek()
            .is_some_and(|r| r.0.at <= self.now.as_nanos())
        {
            let Reverse(f) = self.queue.pop().unwrap();
            self.deliver(f.to, f.seg);
        }
        let now = self.now;
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.on_timeout(now);
        }
        if let Some(s) = self.server.as_mut() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.on_timeout(now);
            }
        }
        true
    }

    /// Steps until `done` holds or `limit` of simulated time passes; returns
    /// whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Pair) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.now > end || !self.step() {
                return done(self);
            }
        }
    }

    pub fn established(&mut self) -> bool {
        self.client.is_established() && self.server.as_ref().is_some_and(|s| s.is_established())
    }
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    mptcp_engine::app::Pattern::new(seed).bytes(0, len)
}

/// Moves `a_to_b` from client to server and `b_to_a` back, both closing
/// after their data; returns what each side received.
pub fn transfer(
    pair: &mut Pair,
    a_to_b: &[u8],
    b_to_a: &[u8],
    limit: Duration,
) -> (Vec<u8>, Vec<u8>) {
    let mut sent_a = 0;
    let mut sent_b = 0;
    let mut got_b = Vec::with_capacity(a_to_b.len());
    let mut got_a = Vec::with_capacity(b_to_a.len());
    let mut tmp = vec![0u8; 1 << 16];
    let mut closed_a = false;
    let mut closed_b = false;
    pair.run_until(limit, |p| {
        sent_a += p.client.send(&a_to_b[sent_a..]);
        if sent_a == a_to_b.len() && !closed_a && p.client.is_established() {
            p.client.close();
            closed_a = true;
        }
        loop {
            let n = p.client.recv(&mut tmp);
            if n == 0 {
                break;
            }
            got_a.extend_from_slice(&tmp[..n]);
        }
        if let Some(s) = p.server.as_mut() {
            sent_b += s.send(&b_to_a[sent_b..]);
            if sent_b == b_to_a.len() && !closed_b && s.is_established() {
                s.close();
                closed_b = true;
            }
            loop {
                let n = s.recv(&mut tmp);
                if n == 0 {
                    break;
                }
                got_b.extend_from_slice(&tmp[..n]);
            }
        }
        let done = |s: &mptcp_engine::tcp::Subflow| {
            s.is_read_closed() && matches!(s.state(), State::Closed | State::TimeWait)
        };
        done(&p.client) && p.server.as_ref().is_some_and(done)
    });
    (got_b, got_a)
}
