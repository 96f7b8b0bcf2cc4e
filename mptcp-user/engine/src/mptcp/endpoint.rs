//! The MPTCP endpoint: owns connections and listeners, demultiplexes
//! packets by 4-tuple (and MP_JOIN SYNs by token), and answers what
//! matches nothing with a RST.

use super::api::{LocalAddr, MonitorEvent};
use super::conn::Connection;
use super::{reset_reason, KeySource, MptcpConfig};
use crate::io::{ByteStream, Engine, PathId};
use crate::tcp::FourTuple;
use crate::time::Instant;
use crate::wire::ip::{emit_ip_tcp, parse_ip_tcp, IpRepr};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::mptcp::{MpJoin, MptcpOption};
use crate::wire::tcp::{ChecksumState, TcpFlags, TcpOptions, TcpPacket, TcpRepr};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Packets the endpoint refused or could not place, by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MptcpCounters {
    pub malformed: u64,
    pub bad_checksum: u64,
    /// Accepted with a pseudo-header-only (CHECKSUM_PARTIAL) checksum.
    pub partial_checksum: u64,
    pub unmatched: u64,
    /// MP_JOIN SYNs with an unknown token or over the subflow limit.
    pub join_refused: u64,
    pub resets_sent: u64,
    /// Monitor events dropped because nobody took them in time.
    pub monitor_dropped: u64,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server { port: u16 },
}

/// An MPTCP endpoint in the client role (one connection) or the server role
/// (a listener accepting any number of connections). See the module docs of
/// [`crate::mptcp`].
#[derive(Debug)]
pub struct MptcpEndpoint {
    cfg: MptcpConfig,
    role: Role,
    locals: Vec<LocalAddr>,
    keys: KeySource,
    /// Connection slots; indices stay valid until `reap_closed` frees one.
    conns: Vec<Option<Connection>>,
    by_tuple: HashMap<FourTuple, (usize, usize)>,
    by_token: HashMap<u32, usize>,
    pending_reset: Option<PendingReset>,
    new_tuples: Vec<(FourTuple, usize)>,
    tx_next: usize,
    counters: MptcpCounters,
    monitor: VecDeque<MonitorEvent>,
}

impl MptcpEndpoint {
    fn new(cfg: MptcpConfig, role: Role, locals: Vec<LocalAddr>) -> MptcpEndpoint {
        let keys = KeySource::from_config(&cfg);
        MptcpEndpoint {
            cfg,
            role,
            locals,
            keys,
            conns: Vec::new(),
            by_tuple: HashMap::new(),
            by_token: HashMap::new(),
            pending_reset: None,
            new_tuples: Vec::new(),
            tx_next: 0,
            counters: MptcpCounters::default(),
            monitor: VecDeque::new(),
        }
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
        let mut ep = MptcpEndpoint::new(cfg, Role::Client, locals.to_vec());
        let conn = Connection::connect(
            &ep.cfg,
            &mut ep.keys,
            locals.to_vec(),
            local_port,
            remote,
            now,
        );
        ep.by_token.insert(conn.local_token(), 0);
        ep.conns.push(Some(conn));
        ep.register(0);
        ep
    }

    /// A server listening on `port` of every address in `locals` (those
    /// marked `signal` are announced with ADD_ADDR).
    pub fn server(cfg: MptcpConfig, locals: &[LocalAddr], port: u16) -> MptcpEndpoint {
        MptcpEndpoint::new(cfg, Role::Server { port }, locals.to_vec())
    }

    fn register(&mut self, ci: usize) {
        if let Some(Some(c)) = self.conns.get_mut(ci) {
            c.take_new_tuples(&mut self.new_tuples);
            let (q, counters) = (&mut self.monitor, &mut self.counters);
            c.take_monitor(|e| push_monitor(q, counters, e));
        }
        for (t, si) in self.new_tuples.drain(..) {
            self.by_tuple.insert(t, (ci, si));
        }
    }

    /// The first live connection (the client's, or the oldest accepted).
    pub fn connection(&self) -> Option<&Connection> {
        self.conns.iter().flatten().next()
    }

    pub fn connection_mut(&mut self) -> Option<&mut Connection> {
        self.conns.iter_mut().flatten().next()
    }

    /// Every live connection.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.conns.iter().flatten()
    }

    pub fn connections_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.conns.iter_mut().flatten()
    }

    /// How many connection slots exist (live or awaiting `reap_closed`).
    pub fn slot_count(&self) -> usize {
        self.conns.len()
    }

    /// The connection in slot `slot` (slots are stable until reaped).
    pub fn connection_at(&self, slot: usize) -> Option<&Connection> {
        self.conns.get(slot).and_then(Option::as_ref)
    }

    pub fn connection_at_mut(&mut self, slot: usize) -> Option<&mut Connection> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    /// Frees the slots of fully closed connections and forgets their
    /// tuples and tokens; a long-running driver calls it now and then.
    /// Returns how many were freed.
    pub fn reap_closed(&mut self) -> usize {
        let mut freed = 0;
        for ci in 0..self.conns.len() {
            if self.conns[ci].as_ref().is_some_and(Connection::is_closed) {
                if let Some(mut c) = self.conns[ci].take() {
                    let (q, counters) = (&mut self.monitor, &mut self.counters);
                    c.take_monitor(|e| push_monitor(q, counters, e));
                    push_monitor(q, counters, c.closed_event());
                }
                self.by_tuple.retain(|_, v| v.0 != ci);
                self.by_token.retain(|_, v| *v != ci);
                freed += 1;
            }
        }
        freed
    }

    pub fn counters(&self) -> &MptcpCounters {
        &self.counters
    }

    /// The next connection or subflow event of any connection, named as
    /// `ip mptcp monitor` names them (bounded queue: the oldest go first
    /// when nobody takes them, counted in `monitor_dropped`).
    pub fn poll_monitor(&mut self) -> Option<MonitorEvent> {
        self.monitor.pop_front()
    }

    /// The slot of the live connection with our token `token`.
    pub fn slot_of_token(&self, token: u32) -> Option<usize> {
        match self.by_token.get(&token) {
            Some(&ci) if self.connection_at(ci).is_some() => Some(ci),
            // Fallback connections are not in the token table.
            _ => self
                .conns
                .iter()
                .position(|c| c.as_ref().is_some_and(|c| c.token() == token)),
        }
    }

    /// Opens a subflow by tuple on the connection in `slot` (client role:
    /// Linux, like most peers, accepts MP_JOIN only on its listener; port 0
    /// picks one). Returns its id.
    pub fn open_subflow_at(
        &mut self,
        slot: usize,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<super::SubflowId> {
        let c = self.conns.get_mut(slot)?.as_mut()?;
        let id = c.open_join(now, &mut self.keys, local.ip(), Some(local.port()), remote)?;
        self.register(slot);
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
        let c = self.conns.first_mut()?.as_mut()?;
        let id = c.open_join(now, &mut self.keys, local.ip(), Some(local.port()), remote)?;
        self.register(0);
        Some(id)
    }

    fn listening(&self, dst: SocketAddr) -> bool {
        match self.role {
            Role::Server { port } => {
                port == dst.port()
                    && self.locals.iter().any(|l| {
                        l.ip == dst.ip()
                            || (l.ip.is_unspecified() && l.ip.is_ipv4() == dst.is_ipv4())
                    })
            }
            Role::Client => false,
        }
    }

    fn refuse(
        &mut self,
        path: PathId,
        src: SocketAddr,
        dst: SocketAddr,
        seg: &TcpRepr,
        reason: Option<u8>,
    ) {
        self.counters.unmatched += 1;
        if seg.flags.contains(TcpFlags::RST) || self.pending_reset.is_some() {
            return;
        }
        let (seq, ack, with_ack) = if seg.flags.contains(TcpFlags::ACK) {
            (seg.ack, 0, false)
        } else {
            (0, seg.seq.wrapping_add(seg.segment_len() as u32), true)
        };
        self.pending_reset = Some(PendingReset {
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
        // Tokens are unique among live connections.
        loop {
            let k = self.keys.key();
            if !self.by_token.contains_key(&crate::crypto::token(k)) {
                return k;
            }
        }
    }
}

impl Engine for MptcpEndpoint {
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
        if let Some(&(ci, si)) = self.by_tuple.get(&tuple) {
            match self.conns.get_mut(ci) {
                // A new SYN on the tuple of a finished subflow starts afresh.
                Some(Some(c)) if is_syn && c.subflow_finished(si) => {
                    self.by_tuple.remove(&tuple);
                }
                Some(Some(c)) => {
                    c.on_segment(now, si, &seg, &mut self.keys);
                    self.register(ci);
                    return;
                }
                _ => {
                    self.by_tuple.remove(&tuple);
                }
            }
        }
        if is_syn && self.listening(dst) {
            if let Some(MpJoin::Syn { token, .. }) = seg.options.mptcp.mp_join() {
                let ci = self.by_token.get(token).copied();
                let ok = ci.is_some_and(|ci| {
                    self.conns[ci]
                        .as_mut()
                        .is_some_and(|c| c.accept_join(&mut self.keys, path, tuple, &seg, now))
                });
                match ci {
                    Some(ci) if ok => self.register(ci),
                    _ => {
                        self.counters.join_refused += 1;
                        let reason = if ci.is_some() {
                            reset_reason::LACK_OF_RESOURCES
                        } else {
                            reset_reason::MPTCP_ERROR
                        };
                        self.refuse(path, src, dst, &seg, Some(reason));
                    }
                }
                return;
            }
            let key = self.new_key();
            if let Some(c) = Connection::accept(
                &self.cfg,
                &mut self.keys,
                key,
                self.locals.clone(),
                path,
                tuple,
                &seg,
                now,
            ) {
                let ci = self
                    .conns
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or(self.conns.len());
                if !c.is_fallback() {
                    self.by_token.insert(c.local_token(), ci);
                }
                if ci == self.conns.len() {
                    self.conns.push(Some(c));
                } else {
                    self.conns[ci] = Some(c);
                }
                self.register(ci);
                return;
            }
        }
        self.refuse(path, src, dst, &seg, None);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, usize)> {
        if let Some(PendingReset {
            from,
            to,
            seq,
            ack,
            with_ack,
            reason,
            path,
        }) = self.pending_reset.take()
        {
            let mut options = TcpOptions::default();
            if let Some(reason) = reason {
                let _ = options
                    .mptcp
                    .push(MptcpOption::MpTcpRst { flags: 0, reason });
            }
            let rst = TcpRepr {
                src_port: from.port(),
                dst_port: to.port(),
                seq,
                ack,
                flags: if with_ack {
                    TcpFlags::RST | TcpFlags::ACK
                } else {
                    TcpFlags::RST
                },
                window: 0,
                urgent: 0,
                options,
                payload: &[],
            };
            if let Some(ip) = IpRepr::new_tcp(from.ip(), to.ip()) {
                if let Ok(n) = emit_ip_tcp(&ip, &rst, buf) {
                    self.counters.resets_sent += 1;
                    return Some((path, n));
                }
            }
        }
        let n = self.conns.len();
        for k in 0..n {
            let ci = (self.tx_next + k) % n;
            let Some(c) = self.conns[ci].as_mut() else {
                continue;
            };
            let out = c.poll_transmit(now, buf);
            self.register(ci);
            if out.is_some() {
                self.tx_next = (ci + 1) % n;
                return out;
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flatten()
            .filter_map(Connection::poll_timeout)
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        for ci in 0..self.conns.len() {
            if let Some(c) = self.conns[ci].as_mut() {
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    c.handle_timeout(now, &mut self.keys);
                    self.register(ci);
                }
            }
        }
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
