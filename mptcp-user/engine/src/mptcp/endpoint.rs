//! The MPTCP endpoint: owns connections and listeners, demultiplexes
//! packets by 4-tuple (and MP_JOIN SYNs by token), and answers what
//! matches nothing with a RST.
//!
//! Event-driven, with quinn-proto's `Endpoint` as the model, so that the
//! work per packet and per timer does not grow with the number of
//! connections:
//! - connections live in a slab; a [`ConnHandle`] (slot and generation)
//!   names one, and a freed slot's old handles never reach its next tenant;
//! - a transmit queue holds the connections that may have something to send
//!   (fed by packet arrival, application access and fired timers) and is
//!   drained by `poll_transmit`; an idle connection is never visited;
//! - a binary heap with lazy deletion holds each connection once under its
//!   earliest deadline (entries whose deadline or generation no longer
//!   match are dropped when they surface, and the heap is rebuilt when
//!   stale entries outnumber live ones, so its size stays O(connections));
//! - an application queue tells the application which connections changed;
//! - a closed connection's tuples and token are removed directly.

use super::api::{LocalAddr, MonitorEvent};
use super::conn::{Connection, SCRATCH_LEN};
use super::syncookie::{self, PendingCookie};
use super::{reset_reason, KeySource, MptcpConfig};
use crate::io::{AffinityChange, ByteStream, Engine, PathId};
use crate::tcp::FourTuple;
use crate::time::Instant;
use crate::wire::ip::{emit_ip_tcp, parse_ip_tcp, IpRepr};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::mptcp::{MpJoin, MptcpOption};
use crate::wire::tcp::{ChecksumState, TcpFlags, TcpOptions, TcpPacket, TcpRepr};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;

/// Packets the endpoint refused or could not place, by cause, and what its
/// limits did. Every field is a count since the endpoint was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MptcpCounters {
    pub malformed: u64,
    pub bad_checksum: u64,
    /// Accepted with a pseudo-header-only (CHECKSUM_PARTIAL) checksum.
    pub partial_checksum: u64,
    pub unmatched: u64,
    /// MP_JOIN SYNs with an unknown token or over the subflow limit.
    pub join_refused: u64,
    /// MP_JOIN SYNs accepted (they never count against the half-open queue).
    pub join_accepted: u64,
    pub resets_sent: u64,
    /// RSTs not sent: the RST queue was full or the rate limit was reached.
    pub resets_dropped: u64,
    /// Connections accepted (a SYN that made a connection).
    pub accepted: u64,
    /// SYNs refused with a RST because `max_connections` were open.
    pub refused_max_connections: u64,
    /// SYNs dropped because the half-open queue was full and SYN cookies
    /// are off (or their queue was full).
    pub syn_dropped: u64,
    /// SYN/ACKs sent with a SYN cookie (the half-open queue was full).
    pub syn_cookies_sent: u64,
    /// Connections made from a valid cookie in a third ACK.
    pub syn_cookies_accepted: u64,
    /// ACKs for no connection whose cookie did not check (answered by RST).
    pub syn_cookies_invalid: u64,
    /// Monitor events dropped because nobody took them in time.
    pub monitor_dropped: u64,
    /// Affinity changes dropped because the driver did not take them in time.
    pub affinity_dropped: u64,
}

/// Work the endpoint did, for tests and profiles: how many connections
/// each entry point visited. With thousands of idle connections these
/// stay proportional to the traffic, not to the connection count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointWork {
    /// Calls of `poll_transmit` and connections they visited.
    pub transmit_calls: u64,
    pub transmit_visits: u64,
    /// Calls of `handle_timeout` and connections whose timers they fired.
    pub timeout_calls: u64,
    pub timeout_visits: u64,
    /// Timer heap entries pushed, and heap rebuilds (stale entries dropped).
    pub timer_pushes: u64,
    pub timer_rebuilds: u64,
    /// Entries that came due before their connection's deadline (filed
    /// when it was earlier; refiled without visiting the connection).
    pub timer_early: u64,
}

/// A connection of the endpoint: its slot and the slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnHandle {
    pub slot: u32,
    pub gen: u32,
}

/// Affinity changes kept for [`MptcpEndpoint::poll_affinity`] at most.
const AFFINITY_QUEUE: usize = 1 << 16;

/// Monitor events kept for [`MptcpEndpoint::poll_monitor`]; older ones are
/// dropped (and counted) when nobody takes them.
const MONITOR_QUEUE: usize = 1024;

/// The checksum verdict of the TCP segment inside `packet` (Bad when the
/// IP lengths do not frame a TCP header).
fn checksum_state(packet: &[u8], ip: &IpRepr) -> ChecksumState {
    let bytes = match ip {
        IpRepr::V4(_) => Ipv4Packet::new_checked(packet)
            .ok()
            .and_then(|p| packet.get(p.header_len()..p.total_len())),
        IpRepr::V6(r) => packet.get(40..40 + r.payload_len as usize),
    };
    match bytes.and_then(|b| TcpPacket::new_checked(b).ok()) {
        Some(p) => p.checksum_state(ip.src(), ip.dst()),
        None => ChecksumState::Bad,
    }
}

/// A RST to send for a segment that matched nothing.
#[derive(Debug, Clone, Copy)]
struct PendingReset {
    from: SocketAddr,
    to: SocketAddr,
    seq: u32,
    ack: u32,
    with_ack: bool,
    reason: Option<u8>,
    path: PathId,
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug)]
struct RateLimit {
    rate: u64,
    burst: u64,
    tokens: u64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u64, burst: u64) -> RateLimit {
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: Instant::ZERO,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos() as u64;
        let earned = elapsed.saturating_mul(self.rate) / 1_000_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(self.burst);
            self.last = now;
        } else if now < self.last {
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// One slab entry.
#[derive(Debug, Default)]
struct Slot {
    conn: Option<Connection>,
    gen: u32,
    /// The deadline this slot is filed under in the timer heap.
    deadline: Option<Instant>,
    tx_queued: bool,
    app_queued: bool,
    /// In the list of closed connections awaiting `reap_closed`.
    closed: bool,
    /// Counted in the half-open queue (accepted, not yet established).
    half_open: bool,
    /// Every tuple ever registered for this connection, and its token.
    tuples: Vec<FourTuple>,
    token: Option<u32>,
}

/// An MPTCP endpoint: any number of client connections and listeners. See
/// the module docs of [`crate::mptcp`].
#[derive(Debug)]
pub struct MptcpEndpoint {
    cfg: MptcpConfig,
    /// Listening sockets: `[::]:port` takes IPv4 and IPv6, `0.0.0.0:port`
    /// IPv4 only, a specific address only itself.
    listeners: Vec<SocketAddr>,
    locals: Vec<LocalAddr>,
    keys: KeySource,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    half_open: usize,
    by_tuple: HashMap<FourTuple, (u32, usize)>,
    by_token: HashMap<u32, u32>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    tx_ready: VecDeque<u32>,
    app_ready: VecDeque<u32>,
    closed: Vec<u32>,
    due: Vec<u32>,
    resets: VecDeque<PendingReset>,
    reset_limit: RateLimit,
    cookies: VecDeque<PendingCookie>,
    cookie_secret: [u8; 32],
    /// Where the SYN/ACK of a connection rebuilt from a cookie goes (it
    /// was sent already, statelessly).
    discard: Box<[u8]>,
    new_tuples: Vec<(FourTuple, usize)>,
    /// The staging buffer lent to whichever connection is working.
    scratch: Box<[u8]>,
    counters: MptcpCounters,
    work: EndpointWork,
    monitor: VecDeque<MonitorEvent>,
    /// Affinity changes, when a driver asked for them.
    affinity: Option<VecDeque<AffinityChange>>,
}

/// Files an affinity change, if they are asked for (bounded: a full
/// journal drops the change and counts it).
fn push_affinity(
    q: &mut Option<VecDeque<AffinityChange>>,
    counters: &mut MptcpCounters,
    c: AffinityChange,
) {
    if let Some(q) = q {
        if q.len() >= AFFINITY_QUEUE {
            counters.affinity_dropped += 1;
        } else {
            q.push_back(c);
        }
    }
}

impl MptcpEndpoint {
    /// An endpoint with no connection and no listener; `locals` are the
    /// addresses it owns (the path manager's and the listeners').
    pub fn new(cfg: MptcpConfig, locals: &[LocalAddr]) -> MptcpEndpoint {
        let keys = KeySource::from_config(&cfg);
        let reset_limit = RateLimit::new(cfg.resets_per_second, cfg.reset_queue as u64);
        let cookie_secret = cfg
            .cookie_secret
            .unwrap_or_else(|| syncookie::secret(&cfg.secret));
        MptcpEndpoint {
            cfg,
            listeners: Vec::new(),
            locals: locals.to_vec(),
            keys,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            half_open: 0,
            by_tuple: HashMap::new(),
            by_token: HashMap::new(),
            timers: BinaryHeap::new(),
            tx_ready: VecDeque::new(),
            app_ready: VecDeque::new(),
            closed: Vec::new(),
            // Timers come due in steady state (entries filed early, see
            // `touch`): room up front, so firing one never allocates.
            due: Vec::with_capacity(64),
            resets: VecDeque::new(),
            reset_limit,
            cookies: VecDeque::new(),
            cookie_secret,
            discard: vec![0u8; 2048].into_boxed_slice(),
            new_tuples: Vec::new(),
            scratch: vec![0u8; SCRATCH_LEN].into_boxed_slice(),
            counters: MptcpCounters::default(),
            work: EndpointWork::default(),
            monitor: VecDeque::new(),
            affinity: None,
        }
    }

    /// Journals every tuple and token filed or forgot from now on, for
    /// [`MptcpEndpoint::poll_affinity`] (off by default: nothing is kept).
    pub fn set_affinity_journal(&mut self, on: bool) {
        self.affinity = on.then(VecDeque::new);
    }

    /// The next tuple or token filed or forgotten (see
    /// [`MptcpEndpoint::set_affinity_journal`]).
    pub fn poll_affinity(&mut self) -> Option<AffinityChange> {
        self.affinity.as_mut()?.pop_front()
    }

    /// A client connecting from `locals[0].ip:local_port` to `remote`; the
    /// other local addresses serve the path manager. `locals` must not be
    /// empty.
    pub fn client(
        cfg: MptcpConfig,
        locals: &[LocalAddr],
        local_port: u16,
        remote: SocketAddr,
        now: Instant,
    ) -> MptcpEndpoint {
        let mut ep = MptcpEndpoint::new(cfg, locals);
        ep.connect(local_port, remote, now);
        ep
    }

    /// A server listening on `port` of every address in `locals` (those
    /// marked `signal` are announced with ADD_ADDR).
    pub fn server(cfg: MptcpConfig, locals: &[LocalAddr], port: u16) -> MptcpEndpoint {
        let mut ep = MptcpEndpoint::new(cfg, locals);
        for l in locals {
            ep.listen(SocketAddr::new(l.ip, port));
        }
        ep
    }

    /// Accepts connections to `addr` (its address must be one of the
    /// endpoint's, or unspecified: `[::]` for IPv4 and IPv6 alike).
    pub fn listen(&mut self, addr: SocketAddr) {
        if !self.listeners.contains(&addr) {
            self.listeners.push(addr);
        }
    }

    /// Opens a connection from `locals[0].ip:local_port` to `remote` (the
    /// caller picks a port no other connection of this endpoint uses).
    pub fn connect(&mut self, local_port: u16, remote: SocketAddr, now: Instant) -> ConnHandle {
        let locals = self.locals.clone();
        let conn = Connection::connect(&self.cfg, &mut self.keys, locals, local_port, remote, now);
        let token = conn.local_token();
        let h = self.insert(conn, Some(token), false);
        self.mark_tx(h.slot);
        self.touch(h.slot);
        h
    }

    fn insert(&mut self, conn: Connection, token: Option<u32>, half_open: bool) -> ConnHandle {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.conn = Some(conn);
        s.gen = s.gen.wrapping_add(1);
        s.deadline = None;
        s.closed = false;
        s.half_open = half_open;
        s.tuples.clear();
        s.token = token;
        if let Some(t) = token {
            self.by_token.insert(t, slot);
            let change = AffinityChange::Token {
                token: t,
                added: true,
            };
            push_affinity(&mut self.affinity, &mut self.counters, change);
        }
        let gen = s.gen;
        self.live += 1;
        self.half_open += half_open as usize;
        self.register(slot);
        ConnHandle { slot, gen }
    }

    /// Files the tuples of the connection's new subflows.
    fn register(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if let Some(c) = s.conn.as_mut() {
            c.take_new_tuples(&mut self.new_tuples);
            let (q, counters) = (&mut self.monitor, &mut self.counters);
            c.take_monitor(|e| push_monitor(q, counters, e));
        }
        for (t, si) in self.new_tuples.drain(..) {
            self.by_tuple.insert(t, (slot, si));
            let change = AffinityChange::Tuple {
                tuple: t,
                added: true,
            };
            push_affinity(&mut self.affinity, &mut self.counters, change);
            if !s.tuples.contains(&t) {
                s.tuples.push(t);
            }
        }
    }

    fn mark_tx(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !s.tx_queued && s.conn.is_some() {
            s.tx_queued = true;
            self.tx_ready.push_back(slot);
        }
    }

    fn mark_app(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !s.app_queued && s.conn.is_some() {
            s.app_queued = true;
            self.app_ready.push_back(slot);
        }
    }

    /// After anything happened to a connection: new tuples, its deadline
    /// in the heap, the half-open count, and whether it closed.
    fn touch(&mut self, slot: u32) {
        self.register(slot);
        let s = &mut self.slots[slot as usize];
        let Some(c) = s.conn.as_ref() else {
            return;
        };
        // Filed only when it comes earlier: a deadline that moved later (an
        // RTO pushed back by every ACK) keeps its entry, which then fires
        // early once and files the real one, as Linux's lazy timers do.
        // A heap push per packet would cost more than that visit.
        if let Some(t) = c.poll_timeout() {
            if s.deadline.is_none_or(|f| t < f) {
                s.deadline = Some(t);
                self.timers.push(Reverse((t, slot, s.gen)));
                self.work.timer_pushes += 1;
            }
        }
        let closed = c.is_closed();
        if s.half_open && (closed || c.is_established()) {
            s.half_open = false;
            self.half_open -= 1;
        }
        if closed && !s.closed {
            s.closed = true;
            self.closed.push(slot);
            self.mark_app(slot);
        }
        self.clean_timers();
    }

    fn timer_valid(&self, t: Instant, slot: u32, gen: u32) -> bool {
        let s = &self.slots[slot as usize];
        s.gen == gen && s.conn.is_some() && s.deadline == Some(t)
    }

    /// Drops stale entries from the top of the heap, and rebuilds it when
    /// stale entries outnumber the connections (amortised O(1) per push).
    fn clean_timers(&mut self) {
        while let Some(&Reverse((t, slot, gen))) = self.timers.peek() {
            if self.timer_valid(t, slot, gen) {
                break;
            }
            self.timers.pop();
        }
        if self.timers.len() > 2 * self.live + 64 {
            self.work.timer_rebuilds += 1;
            let mut v = std::mem::take(&mut self.timers).into_vec();
            v.retain(|&Reverse((t, slot, gen))| self.timer_valid(t, slot, gen));
            self.timers = BinaryHeap::from(v);
        }
    }

    fn handle(&self, slot: u32) -> ConnHandle {
        ConnHandle {
            slot,
            gen: self.slots[slot as usize].gen,
        }
    }

    fn slot_of(&self, h: ConnHandle) -> Option<&Slot> {
        self.slots
            .get(h.slot as usize)
            .filter(|s| s.gen == h.gen && s.conn.is_some())
    }

    /// The connection behind `h`, if it still exists.
    pub fn get(&self, h: ConnHandle) -> Option<&Connection> {
        self.slot_of(h).and_then(|s| s.conn.as_ref())
    }

    /// The connection behind `h`, to send, receive or close: it is queued
    /// for transmission, since the application may have given it work.
    pub fn get_mut(&mut self, h: ConnHandle) -> Option<&mut Connection> {
        self.slot_of(h)?;
        self.mark_tx(h.slot);
        self.slots[h.slot as usize].conn.as_mut()
    }

    /// The next connection whose state changed for the application (data,
    /// window, establishment, close) since it was last returned. Each
    /// connection is queued at most once.
    pub fn poll_app_ready(&mut self) -> Option<ConnHandle> {
        while let Some(slot) = self.app_ready.pop_front() {
            let s = &mut self.slots[slot as usize];
            s.app_queued = false;
            if s.conn.is_some() {
                return Some(self.handle(slot));
            }
        }
        None
    }

    /// The first live connection (the client's, or the oldest slot).
    pub fn connection(&self) -> Option<&Connection> {
        self.slots.iter().find_map(|s| s.conn.as_ref())
    }

    /// The first live connection, queued for transmission.
    pub fn connection_mut(&mut self) -> Option<&mut Connection> {
        let slot = self.slots.iter().position(|s| s.conn.is_some())? as u32;
        self.mark_tx(slot);
        self.slots[slot as usize].conn.as_mut()
    }

    /// Every live connection.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.slots.iter().filter_map(|s| s.conn.as_ref())
    }

    /// Every live connection with its handle.
    pub fn handles(&self) -> impl Iterator<Item = ConnHandle> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(i, s)| ConnHandle {
                slot: i as u32,
                gen: s.gen,
            })
    }

    /// Every live connection, mutable: all of them are queued for
    /// transmission (O(connections); for tests and tools).
    pub fn connections_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        for slot in 0..self.slots.len() as u32 {
            self.mark_tx(slot);
        }
        self.slots.iter_mut().filter_map(|s| s.conn.as_mut())
    }

    /// Live connections (closed ones awaiting `reap_closed` included).
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// Connections accepted whose handshake is not complete.
    pub fn half_open_count(&self) -> usize {
        self.half_open
    }

    /// How many connection slots exist (live or free).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Frees the slots of closed connections and forgets their tuples and
    /// tokens (directly, by the lists kept per connection); a driver calls
    /// it now and then. Returns how many were freed.
    pub fn reap_closed(&mut self) -> usize {
        let mut freed = 0;
        while let Some(slot) = self.closed.pop() {
            let s = &mut self.slots[slot as usize];
            if !s.closed || s.conn.is_none() {
                continue;
            }
            if let Some(mut c) = s.conn.take() {
                let (q, counters) = (&mut self.monitor, &mut self.counters);
                c.take_monitor(|e| push_monitor(q, counters, e));
                push_monitor(q, counters, c.closed_event());
            }
            s.closed = false;
            s.deadline = None;
            if s.half_open {
                s.half_open = false;
                self.half_open -= 1;
            }
            for t in s.tuples.drain(..) {
                if self.by_tuple.get(&t).is_some_and(|v| v.0 == slot) {
                    self.by_tuple.remove(&t);
                    let change = AffinityChange::Tuple {
                        tuple: t,
                        added: false,
                    };
                    push_affinity(&mut self.affinity, &mut self.counters, change);
                }
            }
            s.tuples.shrink_to(4);
            if let Some(t) = s.token.take() {
                if self.by_token.get(&t) == Some(&slot) {
                    self.by_token.remove(&t);
                    let change = AffinityChange::Token {
                        token: t,
                        added: false,
                    };
                    push_affinity(&mut self.affinity, &mut self.counters, change);
                }
            }
            self.live -= 1;
            self.free.push(slot);
            freed += 1;
        }
        self.clean_timers();
        freed
    }

    pub fn counters(&self) -> &MptcpCounters {
        &self.counters
    }

    pub fn work(&self) -> &EndpointWork {
        &self.work
    }

    /// The next connection or subflow event of any connection, named as
    /// `ip mptcp monitor` names them (bounded queue: the oldest go first
    /// when nobody takes them, counted in `monitor_dropped`).
    pub fn poll_monitor(&mut self) -> Option<MonitorEvent> {
        self.monitor.pop_front()
    }

    /// The live connection with our token `token`.
    pub fn handle_of_token(&self, token: u32) -> Option<ConnHandle> {
        match self.by_token.get(&token) {
            Some(&slot) if self.slots[slot as usize].conn.is_some() => Some(self.handle(slot)),
            // Fallback connections are not in the token table.
            _ => {
                let slot = self
                    .slots
                    .iter()
                    .position(|s| s.conn.as_ref().is_some_and(|c| c.token() == token))?;
                Some(self.handle(slot as u32))
            }
        }
    }

    /// Runs `f` on every connection (for rare events: link changes).
    fn each_connection(&mut self, mut f: impl FnMut(&mut Connection, &mut KeySource)) {
        for slot in 0..self.slots.len() as u32 {
            let Some(c) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            c.lend_scratch(&mut self.scratch);
            f(c, &mut self.keys);
            c.lend_scratch(&mut self.scratch);
            self.mark_tx(slot);
            self.touch(slot);
        }
    }

    /// Opens a subflow by tuple on the connection `h` (client role: Linux,
    /// like most peers, accepts MP_JOIN only on its listener; port 0 picks
    /// one). Returns its id.
    pub fn open_subflow_at(
        &mut self,
        h: ConnHandle,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<super::SubflowId> {
        self.slot_of(h)?;
        let c = self.slots[h.slot as usize].conn.as_mut()?;
        let id = c.open_join(now, &mut self.keys, local.ip(), Some(local.port()), remote)?;
        self.mark_tx(h.slot);
        self.touch(h.slot);
        Some(id)
    }

    /// Opens a subflow by tuple on the first connection (client role; port
    /// 0 picks one). Returns its id.
    pub fn open_subflow(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<super::SubflowId> {
        let slot = self.slots.iter().position(|s| s.conn.is_some())? as u32;
        let c = self.slots[slot as usize].conn.as_mut()?;
        let id = c.open_join(now, &mut self.keys, local.ip(), Some(local.port()), remote)?;
        self.mark_tx(slot);
        self.touch(slot);
        Some(id)
    }

    fn ours(&self, ip: std::net::IpAddr) -> bool {
        self.locals
            .iter()
            .any(|l| l.ip == ip || (l.ip.is_unspecified() && (l.ip.is_ipv6() || ip.is_ipv4())))
    }

    /// MP_JOIN SYNs may come to any of our addresses (the client's other
    /// paths reach our initial address, announced ones theirs) on a port
    /// we listen on; the token then names the connection.
    fn join_listening(&self, dst: SocketAddr) -> bool {
        self.ours(dst.ip()) && self.listeners.iter().any(|l| l.port() == dst.port())
    }

    fn listening(&self, dst: SocketAddr) -> bool {
        self.ours(dst.ip())
            && self.listeners.iter().any(|l| {
                l.port() == dst.port()
                    && (l.ip() == dst.ip()
                        || (l.ip().is_unspecified() && (l.ip().is_ipv6() || dst.is_ipv4())))
            })
    }

    /// Queues a RST answering `seg` (bounded and rate-limited; what does
    /// not fit is counted, never silently lost).
    fn refuse(
        &mut self,
        now: Instant,
        path: PathId,
        src: SocketAddr,
        dst: SocketAddr,
        seg: &TcpRepr,
        reason: Option<u8>,
    ) {
        if seg.flags.contains(TcpFlags::RST) {
            return;
        }
        if self.resets.len() >= self.cfg.reset_queue || !self.reset_limit.take(now) {
            self.counters.resets_dropped += 1;
            return;
        }
        let (seq, ack, with_ack) = if seg.flags.contains(TcpFlags::ACK) {
            (seg.ack, 0, false)
        } else {
            (0, seg.seq.wrapping_add(seg.segment_len() as u32), true)
        };
        self.resets.push_back(PendingReset {
            from: dst,
            to: src,
            seq,
            ack,
            with_ack,
            reason,
            path,
        });
    }

    fn new_key(&mut self) -> u64 {
        // Tokens are unique among live connections, whichever version the
        // new one turns out to speak.
        use crate::crypto::Version;
        loop {
            let k = self.keys.key();
            if [Version::V0, Version::V1]
                .iter()
                .all(|v| !self.by_token.contains_key(&v.token(k)))
            {
                return k;
            }
        }
    }

    /// The SYN/ACK for a SYN answered with a cookie: a throwaway
    /// connection writes it (same options, keys and checksums as any),
    /// then is dropped; nothing is kept.
    fn emit_cookie(
        &mut self,
        now: Instant,
        pc: PendingCookie,
        buf: &mut [u8],
    ) -> Option<(PathId, usize)> {
        let syn = pc.syn();
        let isn = syncookie::make(&self.cookie_secret, &pc.tuple, pc.seq, &pc.options, now);
        let key = self.new_key();
        let locals = self.locals.clone();
        let mut c = Connection::accept(
            &self.cfg,
            &mut self.keys,
            key,
            locals,
            pc.path,
            pc.tuple,
            &syn,
            now,
        )?;
        c.set_initial_send_seq(isn);
        c.lend_scratch(&mut self.scratch);
        let out = c.poll_transmit(now, buf);
        c.lend_scratch(&mut self.scratch);
        if out.is_some() {
            self.counters.syn_cookies_sent += 1;
        }
        out
    }

    /// An ACK that matched no connection, to a listener: a connection if it
    /// acknowledges a valid cookie (true), else false.
    fn accept_cookie(
        &mut self,
        now: Instant,
        path: PathId,
        tuple: FourTuple,
        seg: &TcpRepr,
    ) -> bool {
        let Some(cs) = syncookie::check(&self.cookie_secret, &tuple, seg, now) else {
            self.counters.syn_cookies_invalid += 1;
            return false;
        };
        let (src, dst) = (tuple.remote, tuple.local);
        if self.live >= self.cfg.max_connections {
            self.counters.refused_max_connections += 1;
            self.refuse(
                now,
                path,
                src,
                dst,
                seg,
                Some(reset_reason::LACK_OF_RESOURCES),
            );
            return true;
        }
        let syn = syncookie::rebuild_syn(seg, cs);
        let key = match seg.options.mptcp.mp_capable() {
            Some(m) if syn.options.mptcp.mp_capable().is_some() => {
                let key = m.receiver_key.unwrap_or(0);
                let version = crate::crypto::Version::from_wire(m.version).unwrap_or_default();
                if self.by_token.contains_key(&version.token(key)) {
                    self.counters.syn_cookies_invalid += 1;
                    self.refuse(now, path, src, dst, seg, Some(reset_reason::MPTCP_ERROR));
                    return true;
                }
                key
            }
            _ => self.new_key(),
        };
        let locals = self.locals.clone();
        let Some(mut c) = Connection::accept(
            &self.cfg,
            &mut self.keys,
            key,
            locals,
            path,
            tuple,
            &syn,
            now,
        ) else {
            return false;
        };
        c.set_initial_send_seq(seg.ack.wrapping_sub(1));
        c.lend_scratch(&mut self.scratch);
        // The SYN/ACK went out already (statelessly): this one is dropped,
        // and the subflow is where it would be after sending it.
        let _ = c.poll_transmit(now, &mut self.discard);
        c.on_segment(now, 0, seg, &mut self.keys);
        c.lend_scratch(&mut self.scratch);
        let token = (!c.is_fallback()).then(|| c.local_token());
        self.counters.syn_cookies_accepted += 1;
        self.counters.accepted += 1;
        let h = self.insert(c, token, false);
        self.mark_tx(h.slot);
        self.mark_app(h.slot);
        self.touch(h.slot);
        true
    }

    fn emit_reset(&mut self, r: PendingReset, buf: &mut [u8]) -> Option<(PathId, usize)> {
        let mut options = TcpOptions::default();
        if let Some(reason) = r.reason {
            let _ = options
                .mptcp
                .push(MptcpOption::MpTcpRst { flags: 0, reason });
        }
        let rst = TcpRepr {
            src_port: r.from.port(),
            dst_port: r.to.port(),
            seq: r.seq,
            ack: r.ack,
            flags: if r.with_ack {
                TcpFlags::RST | TcpFlags::ACK
            } else {
                TcpFlags::RST
            },
            window: 0,
            urgent: 0,
            options,
            payload: &[],
        };
        let ip = IpRepr::new_tcp(r.from.ip(), r.to.ip())?;
        let n = emit_ip_tcp(&ip, &rst, buf).ok()?;
        self.counters.resets_sent += 1;
        Some((r.path, n))
    }

    /// A SYN for a listener (not MP_JOIN): a new connection, or a refusal.
    #[allow(clippy::too_many_arguments)]
    fn on_listen_syn(&mut self, now: Instant, path: PathId, tuple: FourTuple, seg: &TcpRepr) {
        let (src, dst) = (tuple.remote, tuple.local);
        if self.live >= self.cfg.max_connections {
            self.counters.refused_max_connections += 1;
            self.refuse(
                now,
                path,
                src,
                dst,
                seg,
                Some(reset_reason::LACK_OF_RESOURCES),
            );
            return;
        }
        if self.half_open >= self.cfg.max_half_open {
            if self.cfg.syn_cookies && self.cookies.len() < self.cfg.syn_cookie_queue {
                self.cookies
                    .push_back(PendingCookie::from_syn(path, tuple, seg));
            } else {
                self.counters.syn_dropped += 1;
            }
            return;
        }
        let key = self.new_key();
        let locals = self.locals.clone();
        let Some(c) = Connection::accept(
            &self.cfg,
            &mut self.keys,
            key,
            locals,
            path,
            tuple,
            seg,
            now,
        ) else {
            self.counters.unmatched += 1;
            self.refuse(now, path, src, dst, seg, None);
            return;
        };
        let token = (!c.is_fallback()).then(|| c.local_token());
        self.counters.accepted += 1;
        let h = self.insert(c, token, true);
        self.mark_tx(h.slot);
        self.mark_app(h.slot);
        self.touch(h.slot);
    }
}

impl Engine for MptcpEndpoint {
    fn set_affinity_journal(&mut self, on: bool) {
        MptcpEndpoint::set_affinity_journal(self, on)
    }
    fn poll_affinity(&mut self) -> Option<AffinityChange> {
        MptcpEndpoint::poll_affinity(self)
    }
    /// Every subflow on `path` is stale at once and its data is reinjected
    /// on the others. A rare event: it visits every connection.
    fn path_down(&mut self, now: Instant, path: PathId) {
        self.each_connection(|c, _| c.path_down(now, path));
    }

    /// Stale subflows on `path` probe now, and path managers open the
    /// subflows they lost without waiting for their backoff.
    fn path_up(&mut self, now: Instant, path: PathId) {
        self.each_connection(|c, keys| c.path_up(now, path, keys));
    }

    fn handle_packet(&mut self, now: Instant, path: PathId, packet: &[u8]) {
        let Ok((ip, seg)) = parse_ip_tcp(packet) else {
            self.counters.malformed += 1;
            return;
        };
        match checksum_state(packet, &ip) {
            ChecksumState::Valid => {}
            ChecksumState::Partial if self.cfg.accept_partial_checksum => {
                self.counters.partial_checksum += 1;
            }
            _ => {
                self.counters.bad_checksum += 1;
                return;
            }
        }
        let src = SocketAddr::new(ip.src(), seg.src_port);
        let dst = SocketAddr::new(ip.dst(), seg.dst_port);
        let tuple = FourTuple {
            local: dst,
            remote: src,
        };
        let f = seg.flags;
        let is_syn =
            f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::ACK) && !f.contains(TcpFlags::RST);
        if let Some(&(slot, si)) = self.by_tuple.get(&tuple) {
            match self.slots[slot as usize].conn.as_mut() {
                // A new SYN on the tuple of a finished subflow starts afresh.
                Some(c) if is_syn && c.subflow_finished(si) => {
                    self.by_tuple.remove(&tuple);
                }
                Some(c) => {
                    c.lend_scratch(&mut self.scratch);
                    c.on_segment(now, si, &seg, &mut self.keys);
                    c.lend_scratch(&mut self.scratch);
                    self.mark_tx(slot);
                    self.mark_app(slot);
                    self.touch(slot);
                    return;
                }
                None => {
                    self.by_tuple.remove(&tuple);
                }
            }
        }
        let join = seg.options.mptcp.mp_join().and_then(|j| match j {
            MpJoin::Syn { token, .. } => Some(*token),
            _ => None,
        });
        if let (true, Some(token)) = (is_syn && self.join_listening(dst), join) {
            let slot = self.by_token.get(&token).copied();
            let ok = slot.is_some_and(|slot| {
                self.slots[slot as usize]
                    .conn
                    .as_mut()
                    .is_some_and(|c| c.accept_join(&mut self.keys, path, tuple, &seg, now))
            });
            match slot {
                Some(slot) if ok => {
                    self.counters.join_accepted += 1;
                    self.mark_tx(slot);
                    self.mark_app(slot);
                    self.touch(slot);
                }
                _ => {
                    self.counters.join_refused += 1;
                    let v0 = slot
                        .and_then(|slot| self.slots[slot as usize].conn.as_ref())
                        .map(|c| c.version())
                        == Some(crate::crypto::Version::V0);
                    // v0 has no MP_TCPRST; an unknown token says nothing
                    // of the version, and v0 peers ignore the option.
                    let reason = if v0 {
                        None
                    } else if slot.is_some() {
                        Some(reset_reason::LACK_OF_RESOURCES)
                    } else {
                        Some(reset_reason::MPTCP_ERROR)
                    };
                    self.counters.unmatched += 1;
                    self.refuse(now, path, src, dst, &seg, reason);
                }
            }
            return;
        }
        if is_syn && join.is_none() && self.listening(dst) {
            self.on_listen_syn(now, path, tuple, &seg);
            return;
        }
        let plain_ack =
            f.contains(TcpFlags::ACK) && !f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::RST);
        if plain_ack
            && self.cfg.syn_cookies
            && self.listening(dst)
            && self.accept_cookie(now, path, tuple, &seg)
        {
            return;
        }
        self.counters.unmatched += 1;
        self.refuse(now, path, src, dst, &seg, None);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, usize)> {
        self.work.transmit_calls += 1;
        while let Some(r) = self.resets.pop_front() {
            if let Some(out) = self.emit_reset(r, buf) {
                return Some(out);
            }
        }
        while let Some(pc) = self.cookies.pop_front() {
            if let Some(out) = self.emit_cookie(now, pc, buf) {
                return Some(out);
            }
        }
        while let Some(&slot) = self.tx_ready.front() {
            self.work.transmit_visits += 1;
            let s = &mut self.slots[slot as usize];
            let Some(c) = s.conn.as_mut() else {
                s.tx_queued = false;
                self.tx_ready.pop_front();
                continue;
            };
            c.lend_scratch(&mut self.scratch);
            let out = c.poll_transmit(now, buf);
            c.lend_scratch(&mut self.scratch);
            if out.is_some() {
                // To the back: connections with much to send take turns.
                self.tx_ready.pop_front();
                self.tx_ready.push_back(slot);
            } else {
                s.tx_queued = false;
                self.tx_ready.pop_front();
            }
            self.touch(slot);
            if out.is_some() {
                return out;
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.work.timeout_calls += 1;
        // Collect first: a connection re-armed at or before `now` waits
        // for the next call instead of looping here.
        let mut due = std::mem::take(&mut self.due);
        while let Some(&Reverse((t, slot, gen))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.timer_valid(t, slot, gen) {
                self.slots[slot as usize].deadline = None;
                due.push(slot);
            }
        }
        for slot in due.drain(..) {
            if let Some(c) = self.slots[slot as usize].conn.as_mut() {
                if c.poll_timeout().is_none_or(|t| t > now) {
                    // Filed early (see `touch`): file the real deadline.
                    self.work.timer_early += 1;
                    self.touch(slot);
                    continue;
                }
                self.work.timeout_visits += 1;
                c.lend_scratch(&mut self.scratch);
                c.handle_timeout(now, &mut self.keys);
                c.lend_scratch(&mut self.scratch);
            }
            self.mark_tx(slot);
            self.mark_app(slot);
            self.touch(slot);
        }
        self.due = due;
    }
}

/// The first connection as a byte stream.
impl ByteStream for MptcpEndpoint {
    fn send(&mut self, data: &[u8]) -> usize {
        self.connection_mut().map_or(0, |c| c.send(data))
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.connection_mut().map_or(0, |c| c.recv(buf))
    }
    fn consume(&mut self, max: usize) -> usize {
        self.connection_mut().map_or(0, |c| c.consume(max))
    }
    fn can_read_slices(&self) -> bool {
        true
    }
    fn read_slices(&mut self, f: &mut dyn FnMut(&[std::io::IoSlice<'_>]) -> usize) -> usize {
        self.connection_mut().map_or(0, |c| c.read_slices(f))
    }
    fn close(&mut self) {
        if let Some(c) = self.connection_mut() {
            c.close();
        }
    }
    fn is_established(&self) -> bool {
        self.connection().is_some_and(Connection::is_established)
    }
    fn is_read_closed(&self) -> bool {
        self.connection().is_some_and(Connection::is_read_closed)
    }
    fn is_closed(&self) -> bool {
        self.connection().is_some_and(Connection::is_closed)
    }
}

fn push_monitor(q: &mut VecDeque<MonitorEvent>, counters: &mut MptcpCounters, e: MonitorEvent) {
    if q.len() == MONITOR_QUEUE {
        q.pop_front();
        counters.monitor_dropped += 1;
    }
    q.push_back(e);
}
