//! The worker: one thread runs one engine over its AF_XDP sockets in a
//! run-to-completion loop (receive a batch, let the application move bytes,
//! transmit a batch, fire timers) and sleeps in poll() when there is nothing
//! to do, until the next engine deadline or a frame arrives.
//!
//! Ethernet is the worker's business: received frames lose their header
//! before the engine sees them (the engine speaks IP), and sent packets get
//! the MAC of the neighbour that the destination was last heard from on that
//! path (weak host model: a subflow's segments leave by the interface, and
//! toward the neighbour, they came from), or the path's resolved next hop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::afxdp::XskSocket;
use crate::handoff::{Lent, Links, Returned};
use crate::xdp::affinity::AffinityMaps;
use mptcp_engine::app::App;
use mptcp_engine::io::{AffinityChange, Engine, PathId};
use mptcp_engine::time::Instant;
use mptcp_engine::wire::ethernet::MacAddr;

use crate::neighbour::NeighbourTable;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Frames taken from one RX ring per pass.
const RX_BATCH: u32 = 64;
/// RX batches taken per socket and pass while the ring stays full.
const RX_BATCHES_PER_PASS: u32 = 64;
/// Packets pulled from the engine per pass before receiving again.
const TX_BATCH: usize = 256;
/// Longest sleep, so a stop request or a stats dump is never far away.
const MAX_SLEEP: Duration = Duration::from_millis(200);
/// While a next hop is unresolved: how often the kernel's table is read
/// (the worker wakes this often), and how often a probe is sent.
const RESOLVE_EVERY: Duration = Duration::from_millis(2);
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long a packet waits for its next hop before it is dropped.
const HOLD_FOR: std::time::Duration = Duration::from_secs(1);

/// One interface queue the worker serves; its index is the engine's `PathId`.
pub struct Path {
    pub iface: String,
    /// Queue 0's socket: receives, and carries everything the path sends.
    pub socket: XskSocket,
    /// Sockets of queues 1.. (multi-queue NICs): receive only.
    pub extra_rx: Vec<XskSocket>,
    pub mac: MacAddr,
    /// Largest IP packet the interface carries.
    pub mtu: u16,
    pub neighbours: NeighbourTable,
}

/// What the worker did, for `stats` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Received frames that were not IPv4/IPv6.
    pub rx_not_ip: u64,
    /// Packets dropped for want of a neighbour MAC (the hold queue of
    /// `neighbour::PENDING` packets per path was full).
    pub no_neighbour: u64,
    /// Passes that found the TX ring or free frames exhausted (the engine keeps the data).
    pub tx_ring_full: u64,
    /// Packets the engine wrote into one path's frame but sent on another:
    /// each costs a second copy (through the scratch buffer).
    pub tx_rerouted: u64,
    /// Passes through the loop and how many ended asleep in poll().
    pub passes: u64,
    pub sleeps: u64,
    /// Several workers: frames that arrived here for another worker's
    /// connection and were lent to it, frames other workers lent us, and
    /// frames dropped because their owner had too many of ours already.
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub handoff_dropped: u64,
}

/// A worker among several: its links to the others and its handles on the
/// classifier's affinity maps.
pub struct Affinity {
    pub links: Links,
    pub maps: AffinityMaps,
}

impl Affinity {
    pub fn id(&self) -> usize {
        self.links.id
    }
}

/// The source IP of an IPv4/IPv6 packet.
fn ip_src(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => <[u8; 4]>::try_from(packet.get(12..16)?)
            .ok()
            .map(|a| Ipv4Addr::from(a).into()),
        6 => <[u8; 16]>::try_from(packet.get(8..24)?)
            .ok()
            .map(|a| Ipv6Addr::from(a).into()),
        _ => None,
    }
}

/// The destination IP of an IPv4/IPv6 packet.
fn ip_dst(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => <[u8; 4]>::try_from(packet.get(16..20)?)
            .ok()
            .map(|a| Ipv4Addr::from(a).into()),
        6 => <[u8; 16]>::try_from(packet.get(24..40)?)
            .ok()
            .map(|a| Ipv6Addr::from(a).into()),
        _ => None,
    }
}

/// Writes the Ethernet header for the IP packet already at `frame[14..]`.
fn write_ethernet(frame: &mut [u8], ip_len: usize, src: MacAddr, table: &NeighbourTable) -> usize {
    let Some(dst) = ip_dst(&frame[ETH_HLEN..ETH_HLEN + ip_len]).and_then(|d| table.lookup(d))
    else {
        return 0;
    };
    let ethertype = if frame[ETH_HLEN] >> 4 == 6 {
        ETHERTYPE_IPV6
    } else {
        ETHERTYPE_IPV4
    };
    frame[0..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    ETH_HLEN + ip_len
}

/// Looks up the neighbours of the destinations we could not send to, every
/// `RESOLVE_EVERY` while any is missing (asking the kernel to resolve them,
/// by a probe, every `PROBE_EVERY`), then sends the packets held for them.
/// Netlink round trips happen only while a next hop is unresolved.
fn resolve_missing(path: &mut Path, stats: &mut WorkerStats) {
    if !path.neighbours.resolving() {
        return;
    }
    let now = std::time::Instant::now();
    let since = |t: Option<std::time::Instant>| t.map(|t| now.duration_since(t));
    if since(path.neighbours.last_resolution).is_some_and(|d| d < RESOLVE_EVERY) {
        return;
    }
    path.neighbours.last_resolution = Some(now);
    let probe = since(path.neighbours.last_probe).is_none_or(|d| d >= PROBE_EVERY);
    if probe {
        path.neighbours.last_probe = Some(now);
    }
    let ifindex = path.socket.ifindex();
    // At most `neighbour::PENDING` packets; a destination already learnt
    // (an earlier packet's) is skipped.
    for i in 0..path.neighbours.pending.len() {
        let dst = path.neighbours.pending[i].0;
        if path.neighbours.lookup(dst).is_some() {
            continue;
        }
        let next_hop = match crate::route::route_get(dst) {
            Ok(r) if r.oif == ifindex => r.next_hop(dst),
            _ => dst,
        };
        match crate::route::neighbour(ifindex, next_hop) {
            Ok(Some(mac)) => path.neighbours.learn(dst, mac),
            _ if probe => {
                // Zero timeout: send one probe (ARP/NS) and come back later.
                let _ = crate::route::resolve_neighbour(&path.iface, next_hop, Duration::ZERO);
            }
            _ => {}
        }
    }
    send_held(path, stats, now);
}

/// Sends the held packets whose next hop is now known and drops those held
/// longer than `HOLD_FOR` (TCP retransmits them).
fn send_held(path: &mut Path, stats: &mut WorkerStats, now: std::time::Instant) {
    let mut held = std::mem::take(&mut path.neighbours.pending);
    held.retain(|(dst, at, ip)| {
        if path.neighbours.lookup(*dst).is_none() {
            if now.duration_since(*at) < HOLD_FOR {
                return true;
            }
            stats.no_neighbour += 1;
            return false;
        }
        let (mac, table) = (path.mac, &path.neighbours);
        let sent = path.socket.send_with(|frame| {
            frame[ETH_HLEN..ETH_HLEN + ip.len()].copy_from_slice(ip);
            write_ethernet(frame, ip.len(), mac, table)
        });
        if sent {
            stats.tx_frames += 1;
        } else {
            stats.tx_ring_full += 1;
        }
        false
    });
    path.neighbours.pending = held;
    path.socket.flush();
}

/// Receives batches from one socket until it runs dry (or a bounded number
/// of batches); `batch` takes one. Returns the frames received.
#[inline(always)]
fn drain(
    socket: &mut XskSocket,
    busy: bool,
    mut batch: impl FnMut(&mut XskSocket) -> u32,
) -> usize {
    let mut total = 0;
    for _ in 0..RX_BATCHES_PER_PASS {
        let n = batch(socket);
        total += n as usize;
        if n == 0 && busy {
            socket.busy_poll_rx();
        }
        if n < RX_BATCH {
            break;
        }
    }
    total
}

/// One received frame into the engine: Ethernet off, the sender's MAC learnt.
#[inline(always)]
fn feed<E: Engine>(
    engine: &mut E,
    stats: &mut WorkerStats,
    neighbours: &mut NeighbourTable,
    now: Instant,
    path: PathId,
    frame: &[u8],
) {
    let Some(header) = frame.get(..ETH_HLEN) else {
        stats.rx_not_ip += 1;
        return;
    };
    let ethertype = u16::from_be_bytes([header[12], header[13]]);
    if ethertype != ETHERTYPE_IPV4 && ethertype != ETHERTYPE_IPV6 {
        stats.rx_not_ip += 1;
        return;
    }
    let packet = &frame[ETH_HLEN..];
    if let Some(src) = ip_src(packet) {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&header[6..12]);
        neighbours.learn(src, MacAddr(mac));
    }
    engine.handle_packet(now, path, packet);
}

pub struct Worker<E> {
    pub engine: E,
    pub paths: Vec<Path>,
    origin: std::time::Instant,
    /// A packet the engine produced for another path than the frame it was written in.
    scratch: Box<[u8]>,
    last_tx_path: PathId,
    /// poll() descriptors, reused between sleeps.
    pollfds: Vec<libc::pollfd>,
    /// Busy polling ([`Worker::set_busy_poll`]): never sleep, drive the NAPI
    /// with recvfrom when a socket is empty.
    busy_poll: bool,
    /// Link and address events of the paths' interfaces (None when the
    /// subscription failed: the engine's timeouts still find dead paths).
    pub linkwatch: Option<crate::linkwatch::LinkWatch>,
    pub stats: WorkerStats,
    /// Set when this worker is one of several ([`Worker::set_affinity`]).
    affinity: Option<Box<Affinity>>,
}

impl<E> Worker<E> {
    /// This worker's place among several, if it is one of several.
    pub fn affinity(&self) -> Option<&Affinity> {
        self.affinity.as_deref()
    }
}

impl<E: Engine> Worker<E> {
    pub fn new(engine: E, paths: Vec<Path>) -> Worker<E> {
        let linkwatch = crate::linkwatch::LinkWatch::open_for(&paths);
        Worker {
            engine,
            paths,
            origin: std::time::Instant::now(),
            scratch: vec![0u8; 1 << 16].into_boxed_slice(),
            last_tx_path: 0,
            pollfds: Vec::new(),
            busy_poll: false,
            linkwatch,
            stats: WorkerStats::default(),
            affinity: None,
        }
    }

    /// Makes this worker one of several: frames tagged for another owner
    /// are handed to it, and the engine's tuples and tokens are published
    /// in the classifier's maps.
    pub fn set_affinity(&mut self, affinity: Affinity) {
        self.engine.set_affinity_journal(true);
        self.affinity = Some(Box::new(affinity));
    }

    /// Engine time: nanoseconds of CLOCK_MONOTONIC since the worker started.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    /// Busy polling for dedicated cores: every socket prefers busy polling
    /// (`usecs` per call, `budget` packets), the worker never sleeps, and an
    /// empty RX ring is refilled by running the interface's NAPI on this
    /// thread instead of in softirq on whichever core the sender used.
    pub fn set_busy_poll(&mut self, usecs: u32, budget: u32) -> std::io::Result<()> {
        for path in &mut self.paths {
            for s in std::iter::once(&mut path.socket).chain(&mut path.extra_rx) {
                s.set_busy_poll(usecs, budget)?;
            }
        }
        self.busy_poll = true;
        Ok(())
    }

    /// Swaps in a new engine (e.g. a fresh listener after a connection ended).
    pub fn replace_engine(&mut self, mut engine: E) -> E {
        engine.set_affinity_journal(self.affinity.is_some());
        std::mem::replace(&mut self.engine, engine)
    }

    fn receive(&mut self, now: Instant) -> usize {
        if self.affinity.is_some() {
            return self.receive_tagged(now);
        }
        let mut total = 0;
        let engine = &mut self.engine;
        let stats = &mut self.stats;
        for (id, path) in self.paths.iter_mut().enumerate() {
            let neighbours = &mut path.neighbours;
            let mut on_frame = |frame: &[u8]| feed(engine, stats, neighbours, now, id, frame);
            let busy = self.busy_poll;
            // Receive before transmitting: drain the ring (a bounded number
            // of batches) so a burst does not overflow it while we send.
            for socket in std::iter::once(&mut path.socket).chain(&mut path.extra_rx) {
                total += drain(socket, busy, |s| s.recv_batch(RX_BATCH, &mut on_frame));
            }
        }
        self.stats.rx_frames += total as u64;
        total
    }

    /// [`Worker::receive`] among several workers: frames whose metadata
    /// names another owner are lent to it; then the frames others lent us,
    /// and ours coming back.
    fn receive_tagged(&mut self, now: Instant) -> usize {
        let Some(aff) = self.affinity.as_deref_mut() else {
            return 0;
        };
        let links = &mut aff.links;
        let me = links.id;
        let workers = links.workers();
        let mut total = 0;
        let engine = &mut self.engine;
        let stats = &mut self.stats;
        let busy = self.busy_poll;
        for (id, path) in self.paths.iter_mut().enumerate() {
            let neighbours = &mut path.neighbours;
            let sockets = std::iter::once(&mut path.socket).chain(&mut path.extra_rx);
            for (si, socket) in sockets.enumerate() {
                let mut on_frame = |frame: &[u8], owner: Option<u32>, addr: u64| {
                    let owner = owner
                        .map(|o| o as usize)
                        .filter(|&o| o != me && o < workers);
                    let Some(owner) = owner else {
                        feed(engine, stats, neighbours, now, id, frame);
                        return false;
                    };
                    let lent = Lent {
                        ptr: frame.as_ptr(),
                        len: frame.len() as u32,
                        path: id as u32,
                        socket: si as u32,
                        addr,
                    };
                    if links.lend(owner, lent) {
                        stats.handoffs_out += 1;
                        true
                    } else {
                        // Like a full RX ring: dropped, TCP recovers.
                        stats.handoff_dropped += 1;
                        false
                    }
                };
                total += drain(socket, busy, |s| {
                    s.recv_batch_tagged(RX_BATCH, &mut on_frame)
                });
            }
        }
        links.wake_owners();
        // Frames from our own sockets (those lent out included).
        stats.rx_frames += total as u64;
        // Frames lent to us, in batches per lender, each given back at once.
        for o in 0..workers {
            let (Some(from), Some(back)) = (links.from[o].as_mut(), links.back_to[o].as_mut())
            else {
                continue;
            };
            for _ in 0..RX_BATCH * RX_BATCHES_PER_PASS {
                let Some(f) = from.pop() else { break };
                if let Some(path) = self.paths.get_mut(f.path as usize) {
                    // SAFETY: the lender keeps the frame out of its fill ring
                    // until it is back, and its UMEM outlives every worker.
                    let frame = unsafe { std::slice::from_raw_parts(f.ptr, f.len as usize) };
                    feed(
                        engine,
                        stats,
                        &mut path.neighbours,
                        now,
                        f.path as usize,
                        frame,
                    );
                }
                stats.handoffs_in += 1;
                total += 1;
                let r = Returned {
                    path: f.path,
                    socket: f.socket,
                    addr: f.addr,
                };
                // Never full: the lender keeps at most as many out as it holds.
                let _ = back.push(r);
            }
        }
        // Ours, back from their owners: to the fill rings again.
        for o in 0..workers {
            let Some(back) = links.back_from[o].as_mut() else {
                continue;
            };
            while let Some(r) = back.pop() {
                links.lent_to[o] -= 1;
                let socket = self
                    .paths
                    .get_mut(r.path as usize)
                    .and_then(|p| match r.socket {
                        0 => Some(&mut p.socket),
                        i => p.extra_rx.get_mut(i as usize - 1),
                    });
                if let Some(s) = socket {
                    s.give_back(r.addr);
                }
            }
        }
        total
    }

    /// Several workers: the tuples and tokens the engine filed or forgot go
    /// to the classifier's maps before the pass's packets are published to
    /// the TX rings (a SYN or SYN/ACK leaves only once the answers to it
    /// will be steered here).
    fn publish_affinity(&mut self) {
        let Some(aff) = self.affinity.as_deref_mut() else {
            return;
        };
        while let Some(c) = self.engine.poll_affinity() {
            match c {
                AffinityChange::Tuple { tuple, added: true } => {
                    aff.maps.own_tuple(tuple.local, tuple.remote)
                }
                AffinityChange::Tuple {
                    tuple,
                    added: false,
                } => aff.maps.forget_tuple(tuple.local, tuple.remote),
                AffinityChange::Token { token, added: true } => aff.maps.own_token(token),
                AffinityChange::Token {
                    token,
                    added: false,
                } => aff.maps.forget_token(token),
            }
        }
    }

    fn transmit(&mut self, now: Instant) -> usize {
        let mut sent = 0;
        for _ in 0..TX_BATCH {
            let p = self.last_tx_path.min(self.paths.len().saturating_sub(1));
            let Some(path) = self.paths.get_mut(p) else {
                return 0;
            };
            if !path.socket.can_send() {
                // Leave the data in the engine until the kernel hands frames back;
                // flushing below kicks it, and the next pass retries.
                self.stats.tx_ring_full += 1;
                sent += 1;
                break;
            }
            let engine = &mut self.engine;
            let scratch = &mut self.scratch;
            let mut other: Option<(PathId, usize)> = None;
            let mut nothing = false;
            let mut no_neighbour = None;
            let mac = path.mac;
            let mtu = usize::from(path.mtu);
            let neighbours = &path.neighbours;
            path.socket.send_with(|frame| {
                let room = frame.len().min(ETH_HLEN + mtu);
                match engine.poll_transmit(now, &mut frame[ETH_HLEN..room]) {
                    None => {
                        nothing = true;
                        0
                    }
                    Some((to, len)) if to == p => {
                        let n = write_ethernet(frame, len, mac, neighbours);
                        if n == 0 {
                            // Held (from the scratch buffer) until resolved.
                            let ip = &frame[ETH_HLEN..ETH_HLEN + len];
                            scratch[..len].copy_from_slice(ip);
                            no_neighbour = ip_dst(ip).map(|d| (d, len));
                        }
                        n
                    }
                    Some((to, len)) => {
                        scratch[ETH_HLEN..ETH_HLEN + len]
                            .copy_from_slice(&frame[ETH_HLEN..ETH_HLEN + len]);
                        other = Some((to, len));
                        0
                    }
                }
            });
            if nothing {
                break;
            }
            sent += 1;
            if let Some((dst, len)) = no_neighbour {
                if !path.neighbours.hold(dst, &self.scratch[..len]) {
                    self.stats.no_neighbour += 1;
                }
            }
            if let Some((to, len)) = other {
                self.stats.tx_rerouted += 1;
                self.send_from_scratch(to, len);
                self.last_tx_path = to;
            }
        }
        // Joins the engine opened while writing this batch are filed too.
        self.publish_affinity();
        for path in &mut self.paths {
            path.socket.flush();
        }
        self.stats.tx_frames += sent as u64;
        sent
    }

    fn send_from_scratch(&mut self, to: PathId, len: usize) {
        let Some(path) = self.paths.get_mut(to) else {
            self.stats.no_neighbour += 1;
            return;
        };
        let n = write_ethernet(&mut self.scratch, len, path.mac, &path.neighbours);
        if n == 0 {
            let ip = &self.scratch[ETH_HLEN..ETH_HLEN + len];
            let held = ip_dst(ip).is_some_and(|dst| path.neighbours.hold(dst, ip));
            if !held {
                self.stats.no_neighbour += 1;
            }
            return;
        }
        let scratch = &self.scratch;
        if !path.socket.send_with(|frame| {
            frame[..n].copy_from_slice(&scratch[..n]);
            n
        }) {
            self.stats.tx_ring_full += 1;
        }
    }

    /// Sends what the engine has queued (its RSTs after aborts, say)
    /// without receiving anything new.
    pub fn send_pending(&mut self) -> usize {
        let now = self.now();
        let sent = self.transmit(now);
        for path in &mut self.paths {
            path.socket.reclaim();
        }
        sent
    }

    /// One pass: receive, timers, application, transmit. Returns the work
    /// done and whether the application finished.
    pub fn step<A: App<E>>(&mut self, app: &mut A) -> (usize, bool) {
        self.stats.passes += 1;
        let now = self.now();
        let mut work = self.receive(now);
        if let Some(w) = &mut self.linkwatch {
            w.poll(now, &mut self.engine);
        }
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
            work += 1;
        }
        let (app_work, done) = app.poll(now, &mut self.engine);
        work += app_work;
        work += self.transmit(now);
        for path in &mut self.paths {
            path.socket.reclaim();
            if path.neighbours.resolving() {
                resolve_missing(path, &mut self.stats);
            }
        }
        (work, done)
    }

    /// Sleeps in poll() until a frame arrives, the next engine deadline, or
    /// `MAX_SLEEP`, whichever comes first.
    pub fn sleep(&mut self) {
        self.sleep_with(&[])
    }

    /// Like [`Worker::sleep`], also waking for `extra` (descriptors and poll events).
    pub fn sleep_with(&mut self, extra: &[(std::os::fd::RawFd, i16)]) {
        if self.busy_poll {
            // The receive pass already polled the NAPIs.
            return;
        }
        let now = self.now();
        let resolving = self.paths.iter().any(|p| p.neighbours.resolving());
        let longest = if resolving { RESOLVE_EVERY } else { MAX_SLEEP };
        let wait = self
            .engine
            .poll_timeout()
            .map_or(longest, |t| t.saturating_duration_since(now).min(longest));
        if wait.is_zero() {
            return;
        }
        if let Some(aff) = &self.affinity {
            if !aff.links.prepare_sleep() {
                return;
            }
        }
        self.stats.sleeps += 1;
        // Reused between sleeps: no allocation once it has grown.
        let fds = &mut self.pollfds;
        fds.clear();
        let sockets = self
            .paths
            .iter()
            .flat_map(|p| std::iter::once(&p.socket).chain(&p.extra_rx))
            .map(|s| (s.as_raw_fd(), libc::POLLIN));
        let wake = self
            .affinity
            .as_ref()
            .map(|a| (a.links.wake_fd(), libc::POLLIN));
        // The link watcher's descriptor goes last (its revents are read below).
        let watch = self.linkwatch.as_ref().map(|w| (w.fd(), libc::POLLIN));
        for (fd, events) in sockets
            .chain(extra.iter().copied())
            .chain(wake)
            .chain(watch)
        {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
        }
        // Round up: waking a little late is fine, waking early spins.
        let ms = wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: fds.len() initialised pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if let Some(aff) = &self.affinity {
            aff.links.woke();
        }
        if let (Some(w), Some(last)) = (&mut self.linkwatch, fds.last()) {
            if last.revents != 0 {
                w.set_readable();
            }
        }
    }

    /// Runs until the application finishes or `stop` is set.
    pub fn run<A: App<E>>(&mut self, app: &mut A, stop: &AtomicBool) {
        let mut wake = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let (work, done) = self.step(app);
            if done {
                break;
            }
            if work == 0 {
                wake.clear();
                app.wake_fds(&mut wake);
                self.sleep_with(&wake);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_header_uses_the_learnt_neighbour() {
        let mut t = NeighbourTable::new();
        let dst: IpAddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into();
        let mut frame = [0u8; 14 + 40];
        frame[14] = 0x60;
        frame[14 + 24..14 + 40]
            .copy_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
        assert_eq!(write_ethernet(&mut frame, 40, MacAddr([7; 6]), &t), 0);
        t.learn(dst, MacAddr([5; 6]));
        assert_eq!(write_ethernet(&mut frame, 40, MacAddr([7; 6]), &t), 54);
        assert_eq!(&frame[0..6], &[5; 6]);
        assert_eq!(&frame[6..12], &[7; 6]);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(ip_dst(&frame[14..]), Some(dst));
        assert_eq!(ip_src(&[0x45; 8]), None);
        assert_eq!(ip_dst(&[]), None);
    }
}
