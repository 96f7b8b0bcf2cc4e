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
use mptcp_engine::app::App;
use mptcp_engine::io::{Engine, PathId};
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
    /// Packets dropped for want of a neighbour MAC.
    pub no_neighbour: u64,
    /// Passes that found the TX ring or free frames exhausted (the engine keeps the data).
    pub tx_ring_full: u64,
    /// Packets the engine wrote into one path's frame but sent on another:
    /// each costs a second copy (through the scratch buffer).
    pub tx_rerouted: u64,
    /// Passes through the loop and how many ended asleep in poll().
    pub passes: u64,
    pub sleeps: u64,
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

/// Looks up (and if need be asks the kernel to resolve) the neighbour of a
/// destination we could not send to; at most every 100 ms per path, so a
/// miss costs netlink round trips only off the steady-state path.
fn resolve_missing(path: &mut Path) {
    let Some(dst) = path.neighbours.missing else {
        return;
    };
    let now = std::time::Instant::now();
    if path
        .neighbours
        .last_resolution
        .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
    {
        return;
    }
    path.neighbours.last_resolution = Some(now);
    let ifindex = path.socket.ifindex();
    let next_hop = match crate::route::route_get(dst) {
        Ok(r) if r.oif == ifindex => r.next_hop(dst),
        _ => dst,
    };
    match crate::route::neighbour(ifindex, next_hop) {
        Ok(Some(mac)) => {
            path.neighbours.learn(dst, mac);
            path.neighbours.missing = None;
        }
        _ => {
            // Zero timeout: send one probe (ARP/NS) and come back later.
            let _ = crate::route::resolve_neighbour(&path.iface, next_hop, Duration::ZERO);
        }
    }
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
        }
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
    pub fn replace_engine(&mut self, engine: E) -> E {
        std::mem::replace(&mut self.engine, engine)
    }

    fn receive(&mut self, now: Instant) -> usize {
        let mut total = 0;
        let engine = &mut self.engine;
        let stats = &mut self.stats;
        for (id, path) in self.paths.iter_mut().enumerate() {
            let neighbours = &mut path.neighbours;
            let mut on_frame = |frame: &[u8]| {
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
                engine.handle_packet(now, id, packet);
            };
            let busy = self.busy_poll;
            // Receive before transmitting: drain the ring (a bounded number
            // of batches) so a burst does not overflow it while we send.
            for socket in std::iter::once(&mut path.socket).chain(&mut path.extra_rx) {
                for _ in 0..RX_BATCHES_PER_PASS {
                    let n = socket.recv_batch(RX_BATCH, &mut on_frame);
                    total += n as usize;
                    if n == 0 && busy {
                        socket.busy_poll_rx();
                    }
                    if n < RX_BATCH {
                        break;
                    }
                }
            }
        }
        self.stats.rx_frames += total as u64;
        total
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
                            no_neighbour = ip_dst(&frame[ETH_HLEN..ETH_HLEN + len]);
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
            if no_neighbour.is_some() {
                self.stats.no_neighbour += 1;
                path.neighbours.missing = no_neighbour;
            }
            if let Some((to, len)) = other {
                self.stats.tx_rerouted += 1;
                self.send_from_scratch(to, len);
                self.last_tx_path = to;
            }
        }
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
            self.stats.no_neighbour += 1;
            path.neighbours.missing = ip_dst(&self.scratch[ETH_HLEN..ETH_HLEN + len]);
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
            if path.neighbours.missing.is_some() {
                resolve_missing(path);
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
        let wait = self.engine.poll_timeout().map_or(MAX_SLEEP, |t| {
            t.saturating_duration_since(now).min(MAX_SLEEP)
        });
        if wait.is_zero() {
            return;
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
        let watch = self.linkwatch.as_ref().map(|w| (w.fd(), libc::POLLIN));
        for (fd, events) in sockets.chain(extra.iter().copied()).chain(watch) {
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
