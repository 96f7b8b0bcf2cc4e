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
use crate::io::{ByteStream, Engine, PathId};
use crate::time::Instant;
use crate::wire::ethernet::MacAddr;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Frames taken from one RX ring per pass.
const RX_BATCH: u32 = 64;
/// Packets pulled from the engine per pass before receiving again.
const TX_BATCH: usize = 64;
/// Longest sleep, so a stop request or a stats dump is never far away.
const MAX_SLEEP: Duration = Duration::from_millis(200);
/// Neighbours remembered per path; beyond that the oldest is overwritten.
const NEIGHBOURS: usize = 64;

/// IP -> MAC for one path, learnt from received frames and netlink.
#[derive(Clone, Debug, Default)]
pub struct NeighbourTable {
    entries: Vec<(IpAddr, MacAddr)>,
    next_victim: usize,
    /// Used when a destination was never heard from (the resolved next hop).
    pub default: Option<MacAddr>,
    /// A destination we had a packet for but no MAC (resolved off the fast path).
    pub missing: Option<IpAddr>,
    last_resolution: Option<std::time::Instant>,
}

impl NeighbourTable {
    pub fn new() -> NeighbourTable {
        NeighbourTable {
            entries: Vec::with_capacity(NEIGHBOURS),
            next_victim: 0,
            default: None,
            missing: None,
            last_resolution: None,
        }
    }

    pub fn learn(&mut self, ip: IpAddr, mac: MacAddr) {
        if let Some(e) = self.entries.iter_mut().find(|(i, _)| *i == ip) {
            e.1 = mac;
        } else if self.entries.len() < NEIGHBOURS {
            self.entries.push((ip, mac));
        } else {
            self.entries[self.next_victim] = (ip, mac);
            self.next_victim = (self.next_victim + 1) % NEIGHBOURS;
        }
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<MacAddr> {
        self.entries
            .iter()
            .find(|(i, _)| *i == ip)
            .map(|(_, m)| *m)
            .or(self.default)
    }
}

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
    /// Passes through the loop and how many ended asleep in poll().
    pub passes: u64,
    pub sleeps: u64,
}

/// The application side, run inside the worker's loop.
pub trait App<E> {
    /// Moves bytes between the application and `engine`; returns how much
    /// work it did (0 = none) and whether it is finished.
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool);

    /// A descriptor (and poll events) whose readiness should end the worker's sleep.
    fn wake_fd(&self) -> Option<(std::os::fd::RawFd, i16)> {
        None
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
    pub stats: WorkerStats,
}

impl<E: Engine> Worker<E> {
    pub fn new(engine: E, paths: Vec<Path>) -> Worker<E> {
        Worker {
            engine,
            paths,
            origin: std::time::Instant::now(),
            scratch: vec![0u8; 1 << 16].into_boxed_slice(),
            last_tx_path: 0,
            stats: WorkerStats::default(),
        }
    }

    /// Engine time: nanoseconds of CLOCK_MONOTONIC since the worker started.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
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
            total += path.socket.recv_batch(RX_BATCH, &mut on_frame) as usize;
            for socket in &mut path.extra_rx {
                total += socket.recv_batch(RX_BATCH, &mut on_frame) as usize;
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
        self.sleep_with(None)
    }

    /// Like [`Worker::sleep`], also waking for `extra` (a descriptor and poll events).
    pub fn sleep_with(&mut self, extra: Option<(std::os::fd::RawFd, i16)>) {
        let now = self.now();
        let wait = self.engine.poll_timeout().map_or(MAX_SLEEP, |t| {
            t.saturating_duration_since(now).min(MAX_SLEEP)
        });
        if wait.is_zero() {
            return;
        }
        self.stats.sleeps += 1;
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 64];
        let all = self
            .paths
            .iter()
            .flat_map(|p| std::iter::once(&p.socket).chain(&p.extra_rx))
            .map(|s| (s.as_raw_fd(), libc::POLLIN))
            .chain(extra);
        let mut n = 0;
        for (fd, (raw, events)) in fds.iter_mut().zip(all) {
            fd.fd = raw;
            fd.events = events;
            n += 1;
        }
        // Round up: waking a little late is fine, waking early spins.
        let ms = wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: n initialised pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms) };
    }

    /// Runs until the application finishes or `stop` is set.
    pub fn run<A: App<E>>(&mut self, app: &mut A, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let (work, done) = self.step(app);
            if done {
                break;
            }
            if work == 0 {
                self.sleep_with(app.wake_fd());
            }
        }
    }
}

thread_local! {
    /// One staging buffer per worker thread for the echo and discard
    /// applications, so a connection costs no buffer while it is quiet.
    static APP_SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; 64 << 10].into_boxed_slice());
}

/// Sends every byte back. Bytes the engine cannot take yet wait in a
/// buffer of the connection's own, freed once sent.
#[derive(Default)]
pub struct Echo {
    pending: Vec<u8>,
    start: usize,
    pub bytes: u64,
    closing: bool,
}

impl<E: ByteStream> App<E> for Echo {
    fn poll(&mut self, _now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        if self.start < self.pending.len() {
            let n = engine.send(&self.pending[self.start..]);
            self.start += n;
            work += n;
            if self.start < self.pending.len() {
                return (work, engine.is_closed());
            }
            self.pending = Vec::new();
            self.start = 0;
        }
        APP_SCRATCH.with_borrow_mut(|buf| loop {
            let n = engine.recv(buf);
            self.bytes += n as u64;
            work += n;
            if n == 0 {
                break;
            }
            let sent = engine.send(&buf[..n]);
            if sent < n {
                self.pending.extend_from_slice(&buf[sent..n]);
                break;
            }
        });
        if self.pending.is_empty() && engine.is_read_closed() && !self.closing {
            engine.close();
            self.closing = true;
            work += 1;
        }
        (work, engine.is_closed())
    }
}

/// Reads and drops every byte.
#[derive(Default)]
pub struct Discard {
    pub bytes: u64,
    closing: bool,
}

impl<E: ByteStream> App<E> for Discard {
    fn poll(&mut self, _now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        APP_SCRATCH.with_borrow_mut(|buf| loop {
            let n = engine.recv(buf);
            if n == 0 {
                break;
            }
            self.bytes += n as u64;
            work += n;
        });
        if engine.is_read_closed() && !self.closing {
            engine.close();
            self.closing = true;
            work += 1;
        }
        (work, engine.is_closed())
    }
}

/// Period of the test pattern: a prime, so it never lines up with segment sizes.
const PATTERN_PERIOD: usize = 65521;

fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..PATTERN_PERIOD as u64 * 2)
            .map(|i| {
                let i = i % PATTERN_PERIOD as u64;
                ((i.wrapping_mul(2_654_435_761) >> 13) as u8) ^ (i >> 8) as u8
            })
            .collect()
    })
}

/// The byte at `offset` of the test pattern (never a run of zeroes, so
/// shifted or dropped data shows).
pub fn pattern_byte(offset: u64) -> u8 {
    pattern_table()[(offset % PATTERN_PERIOD as u64) as usize]
}

/// Fills `buf` with the pattern starting at `offset` (by slices, not bytes).
pub fn pattern_fill(offset: u64, buf: &mut [u8]) {
    let table = pattern_table();
    let mut at = (offset % PATTERN_PERIOD as u64) as usize;
    for chunk in buf.chunks_mut(PATTERN_PERIOD) {
        chunk.copy_from_slice(&table[at..at + chunk.len()]);
        at = (at + chunk.len()) % PATTERN_PERIOD;
    }
}

/// Bytes of `buf` that differ from the pattern at `offset`.
pub fn pattern_mismatches(offset: u64, buf: &[u8]) -> u64 {
    let table = pattern_table();
    let mut at = (offset % PATTERN_PERIOD as u64) as usize;
    let mut bad = 0;
    for chunk in buf.chunks(PATTERN_PERIOD) {
        let want = &table[at..at + chunk.len()];
        if chunk != want {
            bad += chunk.iter().zip(want).filter(|(a, b)| a != b).count() as u64;
        }
        at = (at + chunk.len()) % PATTERN_PERIOD;
    }
    bad
}

/// Sends `total` pattern bytes (or until `deadline`), reads what comes back,
/// checks it against the pattern, then closes.
pub struct Source {
    pub total: u64,
    pub deadline: Option<Instant>,
    pub sent: u64,
    pub received: u64,
    /// Received bytes that differed from the pattern.
    pub mismatches: u64,
    chunk: Box<[u8]>,
    rbuf: Box<[u8]>,
    closed: bool,
    /// The peer closed after we did; the transfer is complete.
    pub finished: bool,
}

impl Source {
    pub fn new(total: u64, deadline: Option<Instant>) -> Source {
        Source {
            total,
            deadline,
            sent: 0,
            received: 0,
            mismatches: 0,
            chunk: vec![0u8; 64 << 10].into_boxed_slice(),
            rbuf: vec![0u8; 256 << 10].into_boxed_slice(),
            closed: false,
            finished: false,
        }
    }
}

impl<E: ByteStream> App<E> for Source {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        if !engine.is_established() && !engine.is_closed() {
            return (0, false);
        }
        let time_up = self.deadline.is_some_and(|d| now >= d);
        while !self.closed && self.sent < self.total && !time_up {
            let n = (self.total - self.sent).min(self.chunk.len() as u64) as usize;
            pattern_fill(self.sent, &mut self.chunk[..n]);
            let accepted = engine.send(&self.chunk[..n]);
            self.sent += accepted as u64;
            work += accepted;
            if accepted < n {
                break;
            }
        }
        loop {
            let n = engine.recv(&mut self.rbuf);
            if n == 0 {
                break;
            }
            self.mismatches += pattern_mismatches(self.received, &self.rbuf[..n]);
            self.received += n as u64;
            work += n;
        }
        if !self.closed && (self.sent >= self.total || time_up) {
            engine.close();
            self.closed = true;
            work += 1;
        }
        self.finished = engine.is_closed() || (self.closed && engine.is_read_closed());
        (work, self.finished)
    }
}

/// Relays the connection to a TCP backend (a non-blocking kernel socket
/// driven from the worker loop), with back-pressure both ways: bytes are
/// taken from one side only when the other has taken the previous batch.
pub struct Forward {
    backend: std::net::TcpStream,
    to_backend: Box<[u8]>,
    tb: (usize, usize),
    to_engine: Box<[u8]>,
    te: (usize, usize),
    backend_eof: bool,
    backend_shut: bool,
    engine_closed: bool,
    pub forwarded: u64,
    pub returned: u64,
    /// The backend failed (reset, refused); the connection is closed.
    pub error: Option<std::io::ErrorKind>,
}

impl Forward {
    pub fn new(backend: std::net::TcpStream) -> std::io::Result<Forward> {
        backend.set_nonblocking(true)?;
        backend.set_nodelay(true)?;
        Ok(Forward {
            backend,
            to_backend: vec![0u8; 256 << 10].into_boxed_slice(),
            tb: (0, 0),
            to_engine: vec![0u8; 256 << 10].into_boxed_slice(),
            te: (0, 0),
            backend_eof: false,
            backend_shut: false,
            engine_closed: false,
            forwarded: 0,
            returned: 0,
            error: None,
        })
    }

    fn fail(&mut self, kind: std::io::ErrorKind) {
        self.error.get_or_insert(kind);
        self.backend_eof = true;
        self.tb = (0, 0);
        self.te = (0, 0);
    }
}

impl<E: ByteStream> App<E> for Forward {
    fn poll(&mut self, _now: Instant, engine: &mut E) -> (usize, bool) {
        use std::io::{ErrorKind, Read, Write};
        let mut work = 0;
        // Engine -> backend.
        loop {
            if self.tb.0 == self.tb.1 {
                self.tb = (0, engine.recv(&mut self.to_backend));
                if self.tb.1 == 0 {
                    break;
                }
            }
            match self.backend.write(&self.to_backend[self.tb.0..self.tb.1]) {
                Ok(n) => {
                    self.tb.0 += n;
                    self.forwarded += n as u64;
                    work += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(e.kind());
                    break;
                }
            }
        }
        // Backend -> engine.
        loop {
            if self.te.0 == self.te.1 {
                if self.backend_eof {
                    break;
                }
                match self.backend.read(&mut self.to_engine) {
                    Ok(0) => {
                        self.backend_eof = true;
                        break;
                    }
                    Ok(n) => self.te = (0, n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.fail(e.kind());
                        break;
                    }
                }
            }
            let n = engine.send(&self.to_engine[self.te.0..self.te.1]);
            self.te.0 += n;
            self.returned += n as u64;
            work += n;
            if self.te.0 < self.te.1 {
                break;
            }
        }
        if !self.backend_shut && engine.is_read_closed() && self.tb.0 == self.tb.1 {
            let _ = self.backend.shutdown(std::net::Shutdown::Write);
            self.backend_shut = true;
            work += 1;
        }
        if !self.engine_closed && self.backend_eof && self.te.0 == self.te.1 {
            engine.close();
            self.engine_closed = true;
            work += 1;
        }
        if engine.is_closed() && !self.backend_eof {
            // Reset or aborted on the engine side: nothing more will come.
            let _ = self.backend.shutdown(std::net::Shutdown::Both);
            self.backend_eof = true;
        }
        (work, engine.is_closed() && self.backend_eof)
    }

    fn wake_fd(&self) -> Option<(std::os::fd::RawFd, i16)> {
        let mut events = 0;
        if !self.backend_eof && self.te.0 == self.te.1 {
            events |= libc::POLLIN;
        }
        if self.tb.0 < self.tb.1 {
            events |= libc::POLLOUT;
        }
        (events != 0).then_some((self.backend.as_raw_fd(), events))
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the returned flag (and interrupt poll(),
/// which is not restarted), so workers stop and detach XDP cleanly.
pub fn stop_on_signals() -> &'static AtomicBool {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs an async-signal-safe handler (one atomic store).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    &STOP
}

/// Interfaces bound for a worker: one classifier per interface (each has
/// its own XSKMAP, so queue 0 of every interface can have a socket) and one
/// AF_XDP socket per (interface, queue). Dropping it detaches every program.
pub struct Datapath {
    pub classifiers: Vec<crate::xdp::Classifier>,
    pub attach_modes: Vec<crate::xdp::AttachMode>,
}

impl Datapath {
    /// Opens `ifaces` (a socket per receive queue) for the addresses and
    /// ports in `ownership`. The socket is in
    /// the XSKMAP before the program is attached, so no owned segment
    /// reaches the kernel in between.
    pub fn open(
        ifaces: &[String],
        ownership: &crate::xdp::Ownership,
        xsk: crate::afxdp::XskConfig,
    ) -> anyhow::Result<(Datapath, Vec<Path>)> {
        use anyhow::Context;
        let mut datapath = Datapath {
            classifiers: Vec::new(),
            attach_modes: Vec::new(),
        };
        let mut paths = Vec::new();
        for iface in ifaces {
            crate::afxdp::ifindex(iface)?;
            let mtu = crate::route::interface_mtu(iface)?;
            let mac = crate::route::interface_mac(iface)?;
            let mut classifier = crate::xdp::Classifier::load()?;
            classifier.set_ownership(ownership)?;
            let queues = crate::route::rx_queue_count(iface).clamp(1, mptcp_common::MAX_QUEUES);
            let socket = crate::afxdp::XskSocket::open(iface, 0, xsk)
                .with_context(|| format!("XDP attach refused on {iface}"))?;
            classifier.register_xsk(0, &socket)?;
            let mut extra_rx = Vec::new();
            // Receive-only sockets need no TX frames: a smaller UMEM each.
            let rx_only = crate::afxdp::XskConfig {
                frames: xsk.rx_frames,
                ..xsk
            };
            for queue in 1..queues {
                let s = crate::afxdp::XskSocket::open(iface, queue, rx_only)
                    .with_context(|| format!("XDP attach refused on {iface} queue {queue}"))?;
                classifier.register_xsk(queue, &s)?;
                extra_rx.push(s);
            }
            let mode = classifier.attach(iface).with_context(|| {
                format!("XDP attach refused on {iface} (another XDP program there?)")
            })?;
            datapath.classifiers.push(classifier);
            datapath.attach_modes.push(mode);
            paths.push(Path {
                iface: iface.clone(),
                socket,
                extra_rx,
                mac,
                mtu,
                neighbours: NeighbourTable::new(),
            });
        }
        Ok((datapath, paths))
    }

    /// Classifier counters summed over interfaces.
    pub fn counters(&self) -> anyhow::Result<crate::xdp::Counters> {
        let mut total = crate::xdp::Counters::default();
        for c in &self.classifiers {
            total.add(&c.counters()?);
        }
        Ok(total)
    }

    pub fn detach_all(&mut self) -> anyhow::Result<()> {
        for c in &mut self.classifiers {
            c.detach_all()?;
        }
        Ok(())
    }
}

/// 16 random bytes from the kernel (ISN and key secrets).
pub fn random_secret() -> [u8; 16] {
    let mut secret = [0u8; 16];
    let mut filled = 0;
    while filled < secret.len() {
        // SAFETY: writes at most the remaining bytes of `secret`.
        let n = unsafe {
            libc::getrandom(
                secret[filled..].as_mut_ptr() as *mut libc::c_void,
                secret.len() - filled,
                0,
            )
        };
        if n > 0 {
            filled += n as usize;
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_table_learns_updates_and_evicts() {
        let mut t = NeighbourTable::new();
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        assert_eq!(t.lookup(a), None);
        t.default = Some(MacAddr([9; 6]));
        assert_eq!(t.lookup(a), Some(MacAddr([9; 6])));
        t.learn(a, MacAddr([1; 6]));
        assert_eq!(t.lookup(a), Some(MacAddr([1; 6])));
        t.learn(a, MacAddr([2; 6]));
        assert_eq!(t.lookup(a), Some(MacAddr([2; 6])));
        for i in 0..NEIGHBOURS as u32 {
            t.learn(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)), MacAddr([3; 6]));
        }
        assert_eq!(t.entries.len(), NEIGHBOURS);
        // The first entry was overwritten: falls back to the default.
        assert_eq!(t.lookup(a), Some(MacAddr([9; 6])));
    }

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

    #[test]
    fn pattern_fill_and_check_agree_with_pattern_byte() {
        let mut buf = vec![0u8; 200_000];
        pattern_fill(12_345, &mut buf);
        for (i, b) in buf.iter().enumerate() {
            assert_eq!(*b, pattern_byte(12_345 + i as u64), "offset {i}");
        }
        assert_eq!(pattern_mismatches(12_345, &buf), 0);
        buf[70_000] ^= 1;
        buf[199_999] ^= 0x80;
        assert_eq!(pattern_mismatches(12_345, &buf), 2);
        assert_eq!(pattern_mismatches(12_346, &buf[1..]), 2);
        assert!(pattern_mismatches(0, &buf) > 100_000);
    }

    #[test]
    fn pattern_has_no_short_period() {
        let v: Vec<u8> = (0..4096).map(pattern_byte).collect();
        for period in 1..1500 {
            assert!(v[..2048] != v[period..period + 2048], "period {period}");
        }
    }
}
