//! The runner with a toy reliable transport (selective receive, go-back-N
//! sender, fixed window and timeout): byte-exact transfers over adverse
//! paths, determinism, and the checks that must fail when a stream is wrong.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mptcp_engine::io::{ByteStream, Engine, PathId, PathStats};
use mptcp_engine::time::Instant;
use mptcp_sim::{
    parse_path_spec, run, run_with, EndpointFactory, Hooks, Observer, Outcome, SendOutcome, Side,
    SimConfig, SimEndpoint, Simulation, Topology,
};

const DATA: u8 = 1;
const ACK: u8 = 2;
const HEADER: usize = 10;

struct Toy {
    path: PathId,
    mss: usize,
    window: u64,
    rto: Duration,
    // Sender: `unacked` holds the stream from offset `snd_una`.
    unacked: VecDeque<u8>,
    snd_una: u64,
    snd_nxt: u64,
    high_sent: u64,
    closing: bool,
    deadline: Option<Instant>,
    // Receiver.
    rcv_nxt: u64,
    out_of_order: BTreeMap<u64, Vec<u8>>,
    readable: VecDeque<u8>,
    fin_at: Option<u64>,
    ack_due: bool,
    /// Flip this stream offset on its way to the application (to prove the check bites).
    corrupt_at: Option<u64>,
    delivered: u64,
    stats: PathStats,
}

impl Toy {
    fn new(path: PathId, mtu: usize) -> Toy {
        Toy {
            path,
            mss: mtu - HEADER,
            window: 64 * 1024,
            rto: Duration::from_millis(300),
            unacked: VecDeque::new(),
            snd_una: 0,
            snd_nxt: 0,
            high_sent: 0,
            closing: false,
            deadline: None,
            rcv_nxt: 0,
            out_of_order: BTreeMap::new(),
            readable: VecDeque::new(),
            fin_at: None,
            ack_due: false,
            corrupt_at: None,
            delivered: 0,
            stats: PathStats {
                path,
                ..PathStats::default()
            },
        }
    }

    fn stream_end(&self) -> u64 {
        self.snd_una + self.unacked.len() as u64
    }

    fn take_in_order(&mut self, data: &[u8]) {
        for &b in data {
            let b = if self.corrupt_at == Some(self.delivered) {
                b ^ 0xff
            } else {
                b
            };
            self.readable.push_back(b);
            self.delivered += 1;
        }
        self.rcv_nxt += data.len() as u64;
        self.stats.bytes_received += data.len() as u64;
    }
}

impl Engine for Toy {
    fn handle_packet(&mut self, now: Instant, _path: PathId, p: &[u8]) {
        if p.len() < HEADER {
            return;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&p[1..9]);
        let value = u64::from_le_bytes(word);
        match p[0] {
            DATA => {
                let payload = &p[HEADER..];
                if p[9] == 1 {
                    self.fin_at = Some(value + payload.len() as u64);
                }
                if value == self.rcv_nxt {
                    self.take_in_order(payload);
                    while let Some(seg) = self.out_of_order.remove(&self.rcv_nxt) {
                        self.take_in_order(&seg);
                    }
                } else if value > self.rcv_nxt {
                    self.out_of_order.insert(value, payload.to_vec());
                }
                self.ack_due = true;
            }
            ACK if value > self.snd_una => {
                let drained = (value.min(self.stream_end()) - self.snd_una) as usize;
                self.unacked.drain(..drained);
                self.snd_una = value;
                self.snd_nxt = self.snd_nxt.max(value);
                self.deadline = (self.snd_una < self.high_sent).then(|| now + self.rto);
            }
            _ => {}
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, usize)> {
        if self.ack_due {
            self.ack_due = false;
            let fin = self.fin_at.is_some_and(|f| f == self.rcv_nxt) as u64;
            buf[0] = ACK;
            buf[1..9].copy_from_slice(&(self.rcv_nxt + fin).to_le_bytes());
            return Some((self.path, HEADER));
        }
        let end = self.stream_end();
        let fin_pending = self.closing && self.snd_nxt <= end;
        if self.snd_nxt >= self.snd_una + self.window || (self.snd_nxt >= end && !fin_pending) {
            return None;
        }
        let len = (end.saturating_sub(self.snd_nxt)).min(self.mss as u64) as usize;
        let start = (self.snd_nxt - self.snd_una) as usize;
        for (i, b) in self.unacked.range(start..start + len).enumerate() {
            buf[HEADER + i] = *b;
        }
        let fin = self.closing && self.snd_nxt + len as u64 == end;
        buf[0] = DATA;
        buf[1..9].copy_from_slice(&self.snd_nxt.to_le_bytes());
        buf[9] = fin as u8;
        if self.snd_nxt < self.high_sent {
            self.stats.retransmits += 1;
        }
        self.stats.bytes_sent += len as u64;
        self.snd_nxt += len as u64 + fin as u64;
        self.high_sent = self.high_sent.max(self.snd_nxt);
        self.deadline.get_or_insert(now + self.rto);
        Some((self.path, HEADER + len))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            // Go back N.
            self.snd_nxt = self.snd_una;
            self.deadline = Some(now + self.rto);
        }
    }
}

impl ByteStream for Toy {
    fn send(&mut self, data: &[u8]) -> usize {
        let room = (1usize << 20).saturating_sub(self.unacked.len());
        let n = room.min(data.len());
        self.unacked.extend(&data[..n]);
        n
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.readable.len());
        for (dst, src) in buf.iter_mut().zip(self.readable.drain(..n)) {
            *dst = src;
        }
        n
    }
    fn close(&mut self) {
        self.closing = true;
    }
    fn is_established(&self) -> bool {
        true
    }
    fn is_read_closed(&self) -> bool {
        self.fin_at == Some(self.rcv_nxt) && self.readable.is_empty()
    }
    fn is_closed(&self) -> bool {
        false
    }
}

impl SimEndpoint for Toy {
    fn path_stats(&self) -> Vec<PathStats> {
        vec![self.stats.clone()]
    }
}

struct ToyFactory;

impl EndpointFactory for ToyFactory {
    type Client = Toy;
    type Server = Toy;
    fn build(&mut self, topology: &Topology, _seed: u64) -> (Toy, Toy) {
        let mtu = topology.paths[0].mtu;
        (Toy::new(0, mtu), Toy::new(0, mtu))
    }
}

fn config(spec: &str, bytes: u64, seed: u64) -> SimConfig {
    SimConfig::new(vec![parse_path_spec(spec).unwrap()], bytes, seed)
}

fn run_toy(spec: &str, bytes: u64, seed: u64) -> mptcp_sim::SimReport {
    run_with(
        &config(spec, bytes, seed),
        &mut ToyFactory,
        Hooks::default(),
    )
}

#[test]
fn clean_path_is_byte_exact_and_window_limited() {
    let r = run_toy("rate=100mbit,delay=20ms", 4 << 20, 1);
    assert_eq!(r.outcome, Outcome::Complete, "{r}");
    assert!(r.byte_exact && r.end_of_stream && r.first_mismatch.is_none());
    assert_eq!(r.received, 4 << 20);
    // 64 KiB per 20 ms round trip, a little under 26.2 Mbit/s.
    assert!(
        r.goodput_bps > 20e6 && r.goodput_bps < 26.3e6,
        "{}",
        r.goodput_bps
    );
    assert_eq!(r.paths.len(), 1);
    assert_eq!(r.paths[0].retransmits, 0);
    assert_eq!(r.paths[0].bytes, 4 << 20);
    assert_eq!(r.paths[0].received, 4 << 20);
    assert_eq!(r.established, Some(Duration::ZERO));
}

#[test]
fn adverse_paths_stay_byte_exact_over_many_seeds() {
    let profiles = [
        "rate=50mbit,delay=10ms,loss=3%",
        "rate=50mbit,delay=10ms,reorder=5%",
        "rate=50mbit,delay=10ms,dup=5%",
        "rate=50mbit,delay=10ms,jitter=8ms",
        "rate=50mbit,delay=10ms,loss=1%,reorder=1%,dup=1%,jitter=2ms;at=300ms,down;at=600ms,up",
    ];
    for spec in profiles {
        for seed in 1..=4 {
            let r = run_toy(spec, 1 << 20, seed);
            assert!(r.byte_exact, "{spec} seed {seed}: {r}");
        }
    }
    let lossy = run_toy(profiles[0], 1 << 20, 1);
    assert!(lossy.paths[0].retransmits > 0);
    assert!(lossy.paths[0].forward.dropped_loss > 0);
    assert!(lossy.paths[0].bytes > 1 << 20);
}

#[test]
fn same_seed_same_report() {
    let spec = "rate=50mbit,delay=10ms,loss=1%,reorder=1%,dup=1%,jitter=2ms";
    let a = run_toy(spec, 1 << 20, 9);
    assert_eq!(a, run_toy(spec, 1 << 20, 9));
    assert_ne!(a, run_toy(spec, 1 << 20, 10));
}

#[test]
fn a_corrupted_byte_is_caught_at_its_offset() {
    let cfg = config("rate=50mbit,delay=10ms", 300_000, 1);
    let topo = Topology::for_paths(&cfg.paths);
    let client = Toy::new(0, topo.paths[0].mtu);
    let mut server = Toy::new(0, topo.paths[0].mtu);
    server.corrupt_at = Some(123_457);
    let r = run(&cfg, client, server, Hooks::default());
    assert_eq!(r.outcome, Outcome::Complete);
    assert!(!r.byte_exact);
    assert_eq!(r.first_mismatch, Some(123_457));
    assert!(r.to_string().contains("offset 123457"));
}

#[test]
fn a_dead_path_ends_at_the_time_limit_not_exact() {
    let mut cfg = config("delay=10ms;at=50ms,down", 1 << 20, 1);
    cfg.time_limit = Duration::from_secs(5);
    let r = run_with(&cfg, &mut ToyFactory, Hooks::default());
    assert_eq!(r.outcome, Outcome::TimeLimit);
    assert!(!r.byte_exact);
    assert!(r.received < 1 << 20);
    assert!(r.duration <= Duration::from_secs(5));
    assert!(r.paths[0].forward.dropped_down > 0);
}

#[test]
fn oversize_packets_are_dropped_and_counted() {
    // The toy believes the path MTU is 1500 while a link in between allows 1400.
    let cfg = config(
        "rate=10mbit,delay=10ms,mtu=1500;at=100ms,mtu=1400",
        200_000,
        1,
    );
    let c = Toy::new(0, 1500);
    let s = Toy::new(0, 1500);
    let mut limited = cfg.clone();
    limited.time_limit = Duration::from_secs(3);
    let r = run(&limited, c, s, Hooks::default());
    assert!(!r.byte_exact);
    assert!(r.paths[0].forward.dropped_mtu > 0);
}

#[derive(Default)]
struct Counter {
    sent: [u64; 2],
    delivered: [u64; 2],
    dropped: u64,
}

impl Observer for Counter {
    fn on_send(&mut self, _: Instant, from: Side, _: PathId, _: &[u8], outcome: SendOutcome) {
        self.sent[(from == Side::Server) as usize] += 1;
        if matches!(outcome, SendOutcome::Dropped(_)) {
            self.dropped += 1;
        }
    }
    fn on_deliver(&mut self, d: &mptcp_sim::Delivery<'_>) {
        self.delivered[(d.to == Side::Client) as usize] += 1;
    }
}

#[test]
fn observer_sees_what_the_links_count() {
    let cfg = config("rate=50mbit,delay=10ms,loss=2%", 1 << 20, 3);
    let mut counter = Counter::default();
    let r = run_with(
        &cfg,
        &mut ToyFactory,
        Hooks {
            observer: Some(&mut counter),
            progress: None,
        },
    );
    let p = &r.paths[0];
    assert_eq!(
        counter.sent,
        [p.forward.offered_packets, p.reverse.offered_packets]
    );
    assert_eq!(
        counter.delivered,
        [p.forward.delivered_packets, p.reverse.delivered_packets]
    );
    let drops = |l: &mptcp_sim::LinkStats| {
        l.dropped_loss + l.dropped_queue + l.dropped_mtu + l.dropped_down
    };
    assert!(p.forward.dropped_loss > 0);
    assert_eq!(counter.dropped, drops(&p.forward) + drops(&p.reverse));
}

#[test]
fn json_has_the_documented_keys() {
    // A queue larger than the toy's 64 KiB window: nothing is dropped.
    let r = run_toy("rate=50mbit,delay=10ms,queue=100pkt", 100_000, 1);
    let j = r.to_json();
    assert_eq!(j["bytes"], 100_000);
    assert_eq!(j["byte_exact"], true);
    assert!(j["duration_s"].as_f64().unwrap() > 0.0);
    assert!(j["goodput_bps"].as_f64().unwrap() > 0.0);
    assert_eq!(j["paths"][0]["bytes"], 100_000);
    assert_eq!(j["paths"][0]["retransmits"], 0);
    assert_eq!(j["paths"][0]["spec"], "rate=50mbit,delay=10ms,queue=100pkt");
    assert!(j["subflows"].as_array().unwrap().is_empty());
}

#[test]
fn stepping_in_pieces_gives_the_same_run() {
    let cfg = config("rate=50mbit,delay=10ms,loss=1%,jitter=1ms", 1 << 20, 4);
    let whole = run_with(&cfg, &mut ToyFactory, Hooks::default());

    let topo = Topology::for_paths(&cfg.paths);
    let (c, s) = ToyFactory.build(&topo, cfg.seed);
    let mut sim = Simulation::new(&cfg, c, s);
    let mut hooks = Hooks::default();
    let half_time = Instant::ZERO + whole.duration / 2;
    assert_eq!(sim.run_until(half_time, &mut hooks), None);
    assert!(sim.now() >= half_time);
    let mid = sim.report();
    assert_eq!(mid.outcome, Outcome::Running);
    assert!(sim.received() > 0 && sim.received() < 1 << 20);
    assert!(sim.network().link_stats(0, Side::Client).offered_packets > 0);
    // The endpoints are there to act on between steps.
    assert!(sim.client.stats.bytes_sent >= sim.received());
    assert_eq!(sim.run(&mut hooks), Outcome::Complete);
    assert_eq!(sim.report(), whole);
}
