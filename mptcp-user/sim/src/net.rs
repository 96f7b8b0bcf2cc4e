//! A deterministic in-memory network: paths of two links (one per
//! direction) driven by a discrete-event scheduler.
//!
//! Each link models a drop-tail queue in front of a rate limiter, then
//! propagation delay with jitter, plus random loss, duplication and
//! reordering, an MTU, and profile changes over time (including down/up).
//! Events live in a binary heap ordered by (time, sequence number), so two
//! events at the same instant fire in the order they were scheduled and a
//! seed fixes the whole run.

use core::cmp::Ordering;
use std::collections::BinaryHeap;

use mptcp_engine::io::PathId;
use mptcp_engine::time::Instant;

use super::rng::{chance, unit, SimRng};
use super::spec::{LinkProfile, PathSpec, ProfilePatch};

/// One end of every path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// Why the network dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The path was down when the packet was sent or while it was in flight.
    Down,
    /// Larger than the path MTU.
    Mtu,
    /// Random loss.
    Loss,
    /// The drop-tail queue was full.
    Queue,
}

/// What became of a packet handed to [`Network::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// On its way; `duplicated` when a second copy follows it.
    Queued {
        duplicated: bool,
    },
    Dropped(DropReason),
}

/// Counters of one link (one direction of one path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets and bytes handed to the link by the sender.
    pub offered_packets: u64,
    pub offered_bytes: u64,
    /// Packets and bytes handed to the receiver (duplicates included).
    pub delivered_packets: u64,
    pub delivered_bytes: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub dropped_mtu: u64,
    pub dropped_down: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Packets held back so that later ones overtake them.
    pub reordered: u64,
    /// Largest queue occupancy seen, in bytes (the packet being serialized included).
    pub max_queue_bytes: u64,
}

/// A packet arriving at `to` on `path` at `at`.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub at: Instant,
    pub to: Side,
    pub path: PathId,
    pub packet: &'a [u8],
}

struct Link {
    rate_bps: Option<u64>,
    one_way_ns: u64,
    jitter_ns: u64,
    loss: f64,
    dup: f64,
    reorder: f64,
    reorder_delay_ns: u64,
    mtu: usize,
    queue_limit: u64,
    up: bool,
    /// Bumped when the path goes down: packets in flight from an older epoch are lost.
    epoch: u32,
    /// When the transmitter finishes the last accepted packet.
    busy_until: Instant,
    /// Latest in-order delivery time: jitter never reorders.
    last_delivery: Instant,
    rng: SimRng,
    stats: LinkStats,
}

impl Link {
    fn new(profile: &LinkProfile, rng: SimRng) -> Link {
        let mut link = Link {
            rate_bps: None,
            one_way_ns: 0,
            jitter_ns: 0,
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            reorder_delay_ns: 0,
            mtu: 0,
            queue_limit: 0,
            up: true,
            epoch: 0,
            busy_until: Instant::ZERO,
            last_delivery: Instant::ZERO,
            rng,
            stats: LinkStats::default(),
        };
        link.configure(profile, Instant::ZERO);
        link
    }

    fn configure(&mut self, p: &LinkProfile, now: Instant) {
        self.rate_bps = p.rate_bps;
        self.one_way_ns = nanos(p.delay) / 2;
        self.jitter_ns = nanos(p.jitter);
        self.loss = p.loss;
        self.dup = p.dup;
        self.reorder = p.reorder;
        self.reorder_delay_ns = nanos(p.effective_reorder_delay());
        self.mtu = p.mtu;
        self.queue_limit = p.queue_limit_bytes();
        if self.up && !p.up {
            // The cut loses the queue and everything on the wire.
            self.epoch = self.epoch.wrapping_add(1);
            self.busy_until = now;
            self.last_delivery = now;
        }
        self.up = p.up;
    }

    /// Queues `len` bytes at `now`; returns the delivery time, or `None` when the queue is full.
    fn schedule(
        &mut self,
        now: Instant,
        len: usize,
        jitter_draw: u64,
        reorder_draw: Option<u64>,
    ) -> Option<Instant> {
        let len = len as u64;
        let departure = match self.rate_bps {
            Some(rate) => {
                let backlog_ns = self.busy_until.as_nanos().saturating_sub(now.as_nanos());
                let backlog = (backlog_ns as u128 * rate as u128 / 8_000_000_000) as u64;
                if backlog > 0 && backlog + len > self.queue_limit {
                    return None;
                }
                self.stats.max_queue_bytes = self.stats.max_queue_bytes.max(backlog + len);
                let serialization = (len as u128 * 8_000_000_000)
                    .div_ceil(rate as u128)
                    .min(u64::MAX as u128) as u64;
                let start = self.busy_until.max(now);
                self.busy_until =
                    Instant::from_nanos(start.as_nanos().saturating_add(serialization));
                self.busy_until
            }
            None => now,
        };
        let mut one_way = self.one_way_ns;
        if self.jitter_ns > 0 {
            let offset = (unit(jitter_draw) * self.jitter_ns as f64) as u64;
            one_way = (one_way + offset).saturating_sub(self.jitter_ns / 2);
        }
        let in_order = Instant::from_nanos(departure.as_nanos().saturating_add(one_way))
            .max(self.last_delivery);
        self.last_delivery = in_order;
        match reorder_draw {
            Some(draw) => {
                self.stats.reordered += 1;
                let extra = 1 + (unit(draw) * self.reorder_delay_ns as f64) as u64;
                Some(Instant::from_nanos(
                    in_order.as_nanos().saturating_add(extra),
                ))
            }
            None => Some(in_order),
        }
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

#[derive(Clone, Copy)]
enum EventKind {
    Deliver {
        link: u32,
        buf: u32,
        len: u32,
        epoch: u32,
    },
    Change {
        path: u32,
        index: u32,
    },
}

struct Event {
    at: Instant,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    // Reversed: BinaryHeap is a max-heap and we want the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

/// Fixed-size packet buffers, recycled: a buffer is allocated only when the
/// packets in flight reach a new peak.
struct PacketPool {
    bufs: Vec<Box<[u8]>>,
    free: Vec<u32>,
    buf_size: usize,
}

impl PacketPool {
    fn store(&mut self, data: &[u8]) -> u32 {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.bufs.push(vec![0u8; self.buf_size].into_boxed_slice());
                (self.bufs.len() - 1) as u32
            }
        };
        self.bufs[idx as usize][..data.len()].copy_from_slice(data);
        idx
    }
}

struct PathState {
    spec: PathSpec,
    profile: LinkProfile,
}

/// The simulated network between one client and one server.
pub struct Network {
    paths: Vec<PathState>,
    /// `2 * path` carries client-to-server packets, `2 * path + 1` the reverse.
    links: Vec<Link>,
    events: BinaryHeap<Event>,
    next_seq: u64,
    pool: PacketPool,
    in_flight: usize,
}

fn link_index(path: PathId, from: Side) -> usize {
    2 * path
        + match from {
            Side::Client => 0,
            Side::Server => 1,
        }
}

impl Network {
    /// Builds the paths; each link draws from its own random stream of `seed`.
    pub fn new(paths: &[PathSpec], seed: u64) -> Network {
        let mut links = Vec::with_capacity(2 * paths.len());
        for (i, spec) in paths.iter().enumerate() {
            for dir in 0..2u64 {
                links.push(Link::new(
                    &spec.initial,
                    SimRng::new(seed, 2 * i as u64 + dir),
                ));
            }
        }
        let buf_size = paths.iter().map(PathSpec::max_mtu).max().unwrap_or(1500);
        let mut net = Network {
            paths: paths
                .iter()
                .map(|s| PathState {
                    spec: s.clone(),
                    profile: s.initial.clone(),
                })
                .collect(),
            links,
            events: BinaryHeap::with_capacity(1024),
            next_seq: 0,
            pool: PacketPool {
                bufs: Vec::new(),
                free: Vec::new(),
                buf_size,
            },
            in_flight: 0,
        };
        for (p, spec) in paths.iter().enumerate() {
            for (index, change) in spec.changes.iter().enumerate() {
                net.push(
                    Instant::ZERO + change.at,
                    EventKind::Change {
                        path: p as u32,
                        index: index as u32,
                    },
                );
            }
        }
        net
    }

    fn push(&mut self, at: Instant, kind: EventKind) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push(Event { at, seq, kind });
    }

    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// The profile in force on `path` now.
    pub fn profile(&self, path: PathId) -> &LinkProfile {
        &self.paths[path].profile
    }

    pub fn spec(&self, path: PathId) -> &PathSpec {
        &self.paths[path].spec
    }

    /// Counters of the link that carries packets sent by `from` on `path`.
    pub fn link_stats(&self, path: PathId, from: Side) -> &LinkStats {
        &self.links[link_index(path, from)].stats
    }

    /// Packets on their way (queued or propagating).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Packet buffers the network has allocated (constant once warm).
    pub fn pool_buffers(&self) -> usize {
        self.pool.bufs.len()
    }

    /// Changes `path`'s profile now (both directions), as a `;at=` change
    /// would: a path taken down loses its queue and what is on the wire.
    pub fn change_profile(&mut self, now: Instant, path: PathId, patch: &ProfilePatch) {
        let Some(state) = self.paths.get_mut(path) else {
            return;
        };
        state.profile.apply(patch);
        for li in [2 * path, 2 * path + 1] {
            self.links[li].configure(&state.profile, now);
        }
    }

    /// When the next packet arrives or the next profile change happens.
    pub fn next_event_time(&self) -> Option<Instant> {
        self.events.peek().map(|e| e.at)
    }

    /// Hands the network a packet sent by `from` on `path` at `now`.
    /// Unknown paths drop the packet as if the path were down.
    pub fn send(&mut self, now: Instant, from: Side, path: PathId, packet: &[u8]) -> SendOutcome {
        let li = link_index(path, from);
        let Some(link) = self.links.get_mut(li) else {
            return SendOutcome::Dropped(DropReason::Down);
        };
        link.stats.offered_packets += 1;
        link.stats.offered_bytes += packet.len() as u64;
        // A fixed number of draws per packet, so the n-th packet on a link
        // always sees the same randomness whatever the knobs say.
        let d_loss = link.rng.next_u64();
        let d_dup = link.rng.next_u64();
        let d_reorder = link.rng.next_u64();
        let d_reorder_amount = link.rng.next_u64();
        let d_jitter = link.rng.next_u64();
        let d_jitter_copy = link.rng.next_u64();

        let reason = if !link.up {
            Some(DropReason::Down)
        } else if packet.len() > link.mtu {
            Some(DropReason::Mtu)
        } else if chance(d_loss, link.loss) {
            Some(DropReason::Loss)
        } else {
            None
        };
        if let Some(reason) = reason {
            count_drop(&mut link.stats, reason);
            return SendOutcome::Dropped(reason);
        }
        let reorder = chance(d_reorder, link.reorder).then_some(d_reorder_amount);
        let Some(at) = link.schedule(now, packet.len(), d_jitter, reorder) else {
            link.stats.dropped_queue += 1;
            return SendOutcome::Dropped(DropReason::Queue);
        };
        let epoch = link.epoch;
        let copy_at = if chance(d_dup, link.dup) {
            let copy_at = link.schedule(now, packet.len(), d_jitter_copy, None);
            match copy_at {
                Some(_) => link.stats.duplicated += 1,
                None => link.stats.dropped_queue += 1,
            }
            copy_at
        } else {
            None
        };
        for at in core::iter::once(at).chain(copy_at) {
            let buf = self.pool.store(packet);
            self.in_flight += 1;
            self.push(
                at,
                EventKind::Deliver {
                    link: li as u32,
                    buf,
                    len: packet.len() as u32,
                    epoch,
                },
            );
        }
        SendOutcome::Queued {
            duplicated: copy_at.is_some(),
        }
    }

    /// Fires every event due at or before `now`, in order: applies profile
    /// changes and hands each arriving packet to `deliver`.
    pub fn process_until(&mut self, now: Instant, mut deliver: impl FnMut(Delivery<'_>)) {
        while let Some(ev) = self.events.peek() {
            if ev.at > now {
                break;
            }
            let Some(ev) = self.events.pop() else { break };
            match ev.kind {
                EventKind::Change { path, index } => {
                    let state = &mut self.paths[path as usize];
                    if let Some(change) = state.spec.changes.get(index as usize) {
                        state.profile.apply(&change.patch);
                    }
                    for li in [2 * path as usize, 2 * path as usize + 1] {
                        self.links[li].configure(&state.profile, ev.at);
                    }
                }
                EventKind::Deliver {
                    link: li,
                    buf,
                    len,
                    epoch,
                } => {
                    self.in_flight -= 1;
                    let link = &mut self.links[li as usize];
                    if link.up && link.epoch == epoch {
                        link.stats.delivered_packets += 1;
                        link.stats.delivered_bytes += len as u64;
                        let to = if li % 2 == 0 {
                            Side::Server
                        } else {
                            Side::Client
                        };
                        deliver(Delivery {
                            at: ev.at,
                            to,
                            path: li as usize / 2,
                            packet: &self.pool.bufs[buf as usize][..len as usize],
                        });
                    } else {
                        link.stats.dropped_down += 1;
                    }
                    self.pool.free.push(buf);
                }
            }
        }
    }
}

fn count_drop(stats: &mut LinkStats, reason: DropReason) {
    match reason {
        DropReason::Down => stats.dropped_down += 1,
        DropReason::Mtu => stats.dropped_mtu += 1,
        DropReason::Loss => stats.dropped_loss += 1,
        DropReason::Queue => stats.dropped_queue += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_path_spec;

    fn net(spec: &str) -> Network {
        Network::new(&[parse_path_spec(spec).unwrap()], 1)
    }

    fn drain(net: &mut Network) -> Vec<(Instant, Side, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(t) = net.next_event_time() {
            net.process_until(t, |d| out.push((d.at, d.to, d.packet.to_vec())));
        }
        out
    }

    #[test]
    fn serialization_and_propagation() {
        // 12 Mbit/s: a 1500-byte packet takes exactly 1 ms; 10 ms RTT is 5 ms one way.
        let mut n = net("rate=12mbit,delay=10ms");
        let pkt = [7u8; 1500];
        for _ in 0..3 {
            assert_eq!(
                n.send(Instant::ZERO, Side::Client, 0, &pkt),
                SendOutcome::Queued { duplicated: false }
            );
        }
        let got = drain(&mut n);
        let times: Vec<u64> = got.iter().map(|g| g.0.as_nanos() / 1_000_000).collect();
        assert_eq!(times, vec![6, 7, 8]);
        assert!(got.iter().all(|g| g.1 == Side::Server && g.2 == pkt));
        assert_eq!(n.in_flight(), 0);
    }

    #[test]
    fn reverse_direction_reaches_the_client() {
        let mut n = net("delay=2ms");
        n.send(Instant::ZERO, Side::Server, 0, b"ack");
        let got = drain(&mut n);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, Side::Client);
        assert_eq!(got[0].0, Instant::from_nanos(1_000_000));
    }

    #[test]
    fn mtu_and_unknown_path_drop() {
        let mut n = net("mtu=1280");
        assert_eq!(
            n.send(Instant::ZERO, Side::Client, 0, &[0; 1281]),
            SendOutcome::Dropped(DropReason::Mtu)
        );
        assert_eq!(
            n.send(Instant::ZERO, Side::Client, 3, &[0; 10]),
            SendOutcome::Dropped(DropReason::Down)
        );
        assert_eq!(n.link_stats(0, Side::Client).dropped_mtu, 1);
        assert!(drain(&mut n).is_empty());
    }

    #[test]
    fn drop_tail_queue_holds_its_limit() {
        // 10 packets of queue; the one being serialized counts too.
        let mut n = net("rate=12mbit,queue=10pkt");
        let outcomes: Vec<_> = (0..15)
            .map(|_| n.send(Instant::ZERO, Side::Client, 0, &[0; 1500]))
            .collect();
        let queued = outcomes
            .iter()
            .filter(|o| matches!(o, SendOutcome::Queued { .. }))
            .count();
        assert_eq!(queued, 10);
        assert_eq!(n.link_stats(0, Side::Client).dropped_queue, 5);
        assert_eq!(n.link_stats(0, Side::Client).max_queue_bytes, 15_000);
    }

    #[test]
    fn pool_recycles_buffers() {
        let mut n = net("rate=100mbit,delay=1ms");
        let mut now = Instant::ZERO;
        for _ in 0..1000 {
            n.send(now, Side::Client, 0, &[1; 1000]);
            now = now + std::time::Duration::from_micros(100);
            n.process_until(now, |_| {});
        }
        // About 1 ms / 100 us packets in flight at a time, never 1000 buffers.
        assert!(n.pool_buffers() <= 12, "{}", n.pool_buffers());
    }
}
