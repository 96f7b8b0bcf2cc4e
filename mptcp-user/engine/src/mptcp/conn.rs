//! One MPTCP connection: its subflows, the data-level send and receive
//! state, and the options it puts on and takes off every segment.

mod keys;
mod options;
mod pm;
mod recv;
mod send;
mod signals;
mod subflow;

use self::keys::Keys;
use self::options::MAX_OPTIONS;
use self::recv::RecvState;
use self::send::{DataFin, SendState, MAX_MAPPING};
/// Size of the staging buffer an endpoint lends its connections.
pub(crate) const SCRATCH_LEN: usize = MAX_MAPPING as usize + 1024;
use self::signals::{RemoteAddr, Signals};
use self::subflow::{MptcpSubflow, SubflowKind};

use super::api::*;
use super::{reset_reason, KeySource, MptcpConfig};
use crate::crypto::Version;
use crate::io::PathId;
use crate::pm::{PathManager, SubflowRequest};
use crate::sched::{Scheduler, SubflowView};
use crate::tcp::{CloseReason, FourTuple, State, Subflow, SubflowEvent};
use crate::time::{Instant, TimerName, Timers};
use crate::wire::ip::{emit_ip_tcp, IpRepr};
use crate::wire::mptcp::{MpJoin, MptcpOption};
use crate::wire::tcp::{TcpFlags, TcpRepr};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const EVENT_QUEUE: usize = 64;
/// Longest wait between retransmission probes of a stale subflow (its RTO
/// backoff is capped): a path that comes back carries data again within it.
pub(crate) const STALE_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// A subflow with data in flight and no acknowledgement for this long (or
/// two RTOs, whichever first; never less than two smoothed RTTs) is stale.
pub(crate) const STALE_AFTER: Duration = Duration::from_millis(250);

/// Up to this many segments in flight, a subflow is thin: a probe timeout
/// makes it stale (see `stale_deadline`).
const THIN_FLIGHT_SEGMENTS: u64 = 4;
/// What a probe timeout allows for the peer's delayed ACK (Linux's
/// smallest, TCP_DELACK_MIN; it acknowledges interactive data at once).
const THIN_ACK_DELAY: Duration = Duration::from_millis(40);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// Settings copied from [`MptcpConfig`] that the connection reads later.
#[derive(Debug)]
struct Settings {
    tcp: crate::tcp::Config,
    checksum_wanted: bool,
    max_subflows: usize,
    client_ports: u16,
    reinject_on_rto: bool,
    add_addr_timeout: Duration,
    add_addr_retries: u32,
}

/// Work that incoming options leave for the connection to do.
#[derive(Debug, Default)]
struct Pending {
    /// Something the path manager looks at changed (addresses, subflows).
    path_manager: bool,
    /// MP_FAIL received, or the peer's infinite mapping: fall back our
    /// sending direction too.
    fall_back_send: bool,
    /// MP_FASTCLOSE on an ACK (v0's way; RFC 8684 allows it too): reset.
    fast_close: bool,
    /// v0 MP_PRIO naming an address id: (peer's address id, backup).
    peer_prio: Vec<(u8, bool)>,
}

/// Where the connection is in its life. Our DATA_FIN has its own state
/// ([`DataFin`]): `close()` may come at any point of this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    /// The initial subflow's handshake is under way.
    Connecting,
    /// The initial subflow is established: data flows, subflows join.
    Established,
    /// Both DATA_FINs are acknowledged (or, fallen back to TCP, every byte
    /// is sent after `close()`): the subflows were told to close.
    SubflowsClosed,
    /// Aborted: by `abort()` (our RSTs then carry MP_FASTCLOSE), or by the
    /// peer's MP_FASTCLOSE (`by_peer`, also when it came after ours).
    Reset { by_peer: bool },
}

impl Lifecycle {
    /// The subflows were told to close. Before the handshake completes the
    /// connection stays `Connecting` (the subflows, closing, still report
    /// it), and a reset one stays reset.
    fn subflows_closed(&mut self) {
        if *self == Lifecycle::Established {
            *self = Lifecycle::SubflowsClosed;
        }
    }
}

/// From where on a direction carries data linearly, without mappings:
/// after an infinite mapping (RFC 8684 3.7), or from the start when the
/// handshake fell back to TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Linear {
    /// The subflow carrying the data (sending side; 0 when receiving).
    subflow: usize,
    /// Subflow stream offset where the linear part starts.
    subflow_off: u64,
    /// Data-level offset of that byte.
    data_off: u64,
}

impl Linear {
    const FROM_START: Linear = Linear {
        subflow: 0,
        subflow_off: 0,
        data_off: 0,
    };
}

/// How far the connection fell back to plain TCP (RFC 8684 3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fallback {
    /// MPTCP; after MP_FAIL or an infinite mapping, a direction may go on
    /// linearly (DATA_ACKs still flow while the other direction is mapped).
    Mptcp {
        send: Option<Linear>,
        recv: Option<Linear>,
    },
    /// The handshake fell back: plain TCP on the one subflow, no options.
    Tcp,
}

impl Fallback {
    const NONE: Fallback = Fallback::Mptcp {
        send: None,
        recv: None,
    };

    fn is_tcp(self) -> bool {
        self == Fallback::Tcp
    }

    /// Where our data starts to go out linearly, if it does.
    fn linear_send(self) -> Option<Linear> {
        match self {
            Fallback::Mptcp { send, .. } => send,
            Fallback::Tcp => Some(Linear::FROM_START),
        }
    }

    /// Where the peer's data starts to come in linearly, if it does.
    fn linear_recv(self) -> Option<Linear> {
        match self {
            Fallback::Mptcp { recv, .. } => recv,
            Fallback::Tcp => Some(Linear::FROM_START),
        }
    }
}

/// The connection's own timers (each subflow has its own table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnTimer {
    /// The earliest retransmission of an ADD_ADDR the peer has not echoed.
    AddAddr,
    /// DATA_FIN (re)transmission.
    DataFin,
    /// Data the peer's subflow acknowledged but its data level did not:
    /// sent again to draw a fresh DATA_ACK (Linux's `mptcp_retransmit_timer`).
    DataRetransmit,
}

impl TimerName for ConnTimer {
    const ALL: &'static [ConnTimer] = &[
        ConnTimer::AddAddr,
        ConnTimer::DataFin,
        ConnTimer::DataRetransmit,
    ];
    fn slot(self) -> usize {
        self as usize
    }
}

/// Everything but the subflows, so both can be borrowed at once.
#[derive(Debug)]
struct ConnState {
    role: Role,
    /// Decides the key derivations and the handshake's and options' forms.
    version: Version,
    /// v0: MP_FASTCLOSE went out on an ACK (RFC 6824 3.5).
    fastclose_sent: bool,
    settings: Settings,
    keys: Keys,
    /// DSS checksums in use (we or the peer asked).
    checksum: bool,
    fallback: Fallback,
    lifecycle: Lifecycle,
    /// ADD_ADDR retransmission and DATA_FIN timers.
    timers: Timers<ConnTimer, 3>,

    send: SendState,
    recv: RecvState,
    signals: Signals,
    pending: Pending,
    /// Local port of the next MP_JOIN subflow we open.
    /// Client: the first subflow's port and the next one a join takes.
    first_port: u16,
    next_port: u16,

    events: VecDeque<MptcpEvent>,
    /// What the endpoint's monitor stream has not taken yet (bounded).
    monitor: VecDeque<Mon>,
    fallback_reason: Option<FallbackReason>,
    bad_hmac: u64,
    checksum_failures: u64,
}

/// A monitor event before the endpoint adds addresses and flags.
#[derive(Clone, Copy, Debug)]
enum Mon {
    Event(MptcpEvent),
    Created,
    Prio(SubflowId),
    /// Closed from MPTCP's view (by us or the peer), before TIME_WAIT ends.
    SfClosed(SubflowId, SubflowCloseReason),
}

impl ConnState {
    fn push_event(&mut self, e: MptcpEvent) {
        self.push_app_event(e);
        self.push_monitor(Mon::Event(e));
    }

    /// For the application only (the monitor heard of it already).
    fn push_app_event(&mut self, e: MptcpEvent) {
        if self.events.len() == EVENT_QUEUE {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn push_monitor(&mut self, m: Mon) {
        if self.monitor.len() == EVENT_QUEUE {
            self.monitor.pop_front();
        }
        self.monitor.push_back(m);
    }

    fn fall_back(&mut self, why: FallbackReason) {
        self.fallback_reason.get_or_insert(why);
    }
}

/// One MPTCP connection (or one that fell back to plain TCP).
#[derive(Debug)]
pub struct Connection {
    s: ConnState,
    subflows: Vec<MptcpSubflow>,
    next_id: SubflowId,
    sched: Box<dyn Scheduler>,
    pm: Box<dyn PathManager>,
    scratch: Box<[u8]>,
    views: Vec<SubflowView>,
    pm_out: Vec<SubflowRequest>,
    /// Tuples of subflows created since the endpoint last looked.
    new_tuples: Vec<(FourTuple, usize)>,
    /// The subflow `poll_transmit` asks first (each in turn).
    next_to_poll: usize,
}

impl Connection {
    fn new(
        cfg: &MptcpConfig,
        role: Role,
        version: Version,
        local_key: u64,
        locals: Vec<LocalAddr>,
    ) -> Connection {
        Connection {
            s: ConnState {
                role,
                version,
                fastclose_sent: false,
                settings: Settings {
                    // For the subflows joined later: an MP_JOIN SYN's data (no
                    // mapping could place it) is ignored; the peer sends it again.
                    tcp: crate::tcp::Config {
                        accept_syn_data: false,
                        ..cfg.tcp.clone()
                    },
                    checksum_wanted: cfg.checksum,
                    max_subflows: cfg.max_subflows.max(1),
                    client_ports: cfg.client_ports.max(1),
                    reinject_on_rto: cfg.reinject_on_rto,
                    add_addr_timeout: cfg.add_addr_timeout,
                    add_addr_retries: cfg.add_addr_retries,
                },
                keys: Keys::new(version, local_key),
                checksum: cfg.checksum,
                fallback: Fallback::NONE,
                lifecycle: Lifecycle::Connecting,
                timers: Timers::new(),
                send: SendState::new(cfg.send_buffer),
                recv: RecvState::new(cfg.recv_buffer, cfg.tcp.mss),
                signals: Signals::new(locals),
                pending: Pending::default(),
                first_port: 0,
                next_port: 0,
                events: VecDeque::new(),
                monitor: VecDeque::from([Mon::Created]),
                fallback_reason: None,
                bad_hmac: 0,
                checksum_failures: 0,
            },
            subflows: Vec::new(),
            next_id: 0,
            sched: cfg.scheduler.build(),
            pm: cfg.path_manager.build(),
            // Lent by the endpoint for each call (one per endpoint).
            scratch: Box::default(),
            views: Vec::new(),
            pm_out: Vec::new(),
            new_tuples: Vec::new(),
            next_to_poll: 0,
        }
    }

    fn add_subflow(
        &mut self,
        sub: Subflow,
        path: PathId,
        kind: SubflowKind,
        local_id: u8,
        remote_id: u8,
    ) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let mut sub = sub;
        if self.s.fallback.is_tcp() {
            sub.set_option_reserve(0);
        } else {
            // A DATA_ACK alone: 4 + 8 bytes.
            sub.set_ack_option_reserve(12);
        }
        self.new_tuples.push((sub.tuple(), self.subflows.len()));
        self.subflows
            .push(MptcpSubflow::new(id, sub, path, kind, local_id, remote_id));
        self.subflows.len() - 1
    }

    /// Client side: the initial subflow to `remote` from `locals[0]`.
    pub(crate) fn connect(
        cfg: &MptcpConfig,
        keys: &mut KeySource,
        locals: Vec<LocalAddr>,
        local_port: u16,
        remote: SocketAddr,
        now: Instant,
    ) -> Connection {
        let key = keys.key();
        let local = SocketAddr::new(locals[0].ip, local_port);
        let path = locals[0].path;
        let mut c = Connection::new(cfg, Role::Client, cfg.client_version, key, locals);
        c.s.first_port = local_port;
        c.s.next_port = local_port.wrapping_add(1);
        c.s.signals.remotes.push(RemoteAddr {
            id: 0,
            addr: remote,
        });
        let mut sub = Subflow::connect(&cfg.tcp, FourTuple { local, remote }, now);
        keys.replay_isn(&mut sub);
        c.add_subflow(sub, path, SubflowKind::Initial, 0, 0);
        c
    }

    /// Server side: a connection from a SYN (MP_CAPABLE or plain TCP).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accept(
        cfg: &MptcpConfig,
        keys: &mut KeySource,
        key: u64,
        mut locals: Vec<LocalAddr>,
        path: PathId,
        tuple: FourTuple,
        syn: &TcpRepr,
        now: Instant,
    ) -> Option<Connection> {
        let mut sub = Subflow::accept(&cfg.tcp, tuple, now, syn)?;
        keys.replay_isn(&mut sub);
        // The initial address gets id 0; the others keep their order. Behind
        // a load balancer it is announced too when it is a signal address:
        // the client reached it as the VIP and may join it only so.
        locals.retain(|l| l.ip != tuple.local.ip() || (cfg.deny_join_initial && l.signal));
        locals.insert(
            0,
            LocalAddr {
                ip: tuple.local.ip(),
                path,
                signal: false,
            },
        );
        // The SYN's version if we answer in it: v1 offers no key, v0 its key.
        let mpc = syn.options.mptcp.mp_capable();
        let version = mpc.and_then(|m| match (Version::from_wire(m.version), m.sender_key) {
            (Some(Version::V1), None) | (Some(Version::V0), Some(_)) => {
                Version::from_wire(m.version).filter(|v| cfg.server_versions.contains(*v))
            }
            _ => None,
        });
        let mut c = Connection::new(cfg, Role::Server, version.unwrap_or_default(), key, locals);
        c.s.signals.deny_join_initial = cfg.deny_join_initial;
        c.s.signals.announce_port = cfg.deny_join_initial.then_some(tuple.local.port());
        c.s.signals.remotes.push(RemoteAddr {
            id: 0,
            addr: tuple.remote,
        });
        match (version, mpc) {
            (Some(v), Some(mpc)) => {
                c.s.checksum = cfg.checksum || mpc.checksum_required();
                if v == Version::V0 {
                    c.s.set_remote_key(mpc.sender_key.unwrap_or(0));
                }
            }
            _ => {
                c.s.fallback = Fallback::Tcp;
                c.s.fall_back(FallbackReason::SynWithoutMpCapable);
            }
        }
        if !c.s.fallback.is_tcp() && sub.readable() > 0 {
            // Plain TCP keeps SYN data in the stream (offset 0 = data 0).
            c.s.recv.take_syn_data(&mut sub);
        }
        c.add_subflow(sub, path, SubflowKind::Initial, 0, 0);
        Some(c)
    }

    /// Server side: an MP_JOIN SYN for this connection. Returns false (the
    /// caller answers with a RST) when it cannot be accepted.
    pub(crate) fn accept_join(
        &mut self,
        keys: &mut KeySource,
        path: PathId,
        tuple: FourTuple,
        syn: &TcpRepr,
        now: Instant,
    ) -> bool {
        let Some(MpJoin::Syn {
            backup,
            addr_id,
            nonce,
            ..
        }) = syn.options.mptcp.mp_join().copied()
        else {
            return false;
        };
        if self.s.fallback.is_tcp()
            || self.s.keys.remote.is_none()
            || self.live_subflows() >= self.s.settings.max_subflows
        {
            return false;
        }
        let Some(mut sub) = Subflow::accept(&self.s.settings.tcp, tuple, now, syn) else {
            return false;
        };
        keys.replay_isn(&mut sub);
        // The announced id when the initial address is announced too.
        let local_id = self
            .s
            .signals
            .locals
            .iter()
            .rposition(|l| l.ip == tuple.local.ip())
            .unwrap_or(0) as u8;
        let kind = SubflowKind::Join {
            local_nonce: keys.nonce(),
            remote_nonce: nonce,
        };
        let i = self.add_subflow(sub, path, kind, local_id, addr_id);
        self.subflows[i].peer_backup = backup;
        true
    }

    fn live_subflows(&self) -> usize {
        self.subflows
            .iter()
            .filter(|f| f.end.reason.is_none())
            .count()
    }

    /// Swaps in the staging buffer for one call into the connection (and
    /// back out after it): the endpoint owns one for all its connections,
    /// so an idle connection holds none.
    pub(crate) fn lend_scratch(&mut self, scratch: &mut Box<[u8]>) {
        std::mem::swap(&mut self.scratch, scratch);
    }

    /// The initial sequence number of the initial subflow, before its
    /// SYN/ACK goes out (a SYN cookie).
    pub(crate) fn set_initial_send_seq(&mut self, isn: u32) {
        if let Some(sf) = self.subflows.first_mut() {
            sf.sub.set_initial_send_seq(isn);
        }
    }

    pub(crate) fn take_new_tuples(&mut self, out: &mut Vec<(FourTuple, usize)>) {
        out.append(&mut self.new_tuples);
    }

    /// Subflow `i` is closed or in TIME_WAIT.
    pub(crate) fn subflow_finished(&self, i: usize) -> bool {
        self.subflows
            .get(i)
            .is_none_or(|f| f.sub.is_closed() || f.sub.state() == State::TimeWait)
    }

    pub(crate) fn local_token(&self) -> u32 {
        self.s.keys.local.token
    }

    /// The MPTCP version of this connection (the offered one until the
    /// handshake ends; meaningless after a fallback to TCP).
    pub fn version(&self) -> Version {
        self.s.version
    }

    /// The connection went on as plain TCP (no MP_CAPABLE answer, or later).
    pub fn is_fallback(&self) -> bool {
        self.s.fallback.is_tcp()
    }

    // ---- incoming ----

    /// A segment for subflow `i`.
    pub(crate) fn on_segment(
        &mut self,
        now: Instant,
        i: usize,
        seg: &TcpRepr,
        keys: &mut KeySource,
    ) {
        let Some(sf) = self.subflows.get_mut(i) else {
            return;
        };
        let s = &mut self.s;
        let f = seg.flags;
        let opts = &seg.options.mptcp;
        if f.contains(TcpFlags::RST) {
            let mut fast_close = false;
            for o in opts {
                match *o {
                    MptcpOption::MpTcpRst { reason, .. } => sf.end.peer_rst_reason = Some(reason),
                    MptcpOption::MpFastclose { receiver_key }
                        if receiver_key == s.keys.local.key =>
                    {
                        fast_close = true;
                    }
                    _ => {}
                }
            }
            sf.sub.on_segment(now, seg);
            if let Lifecycle::Reset { by_peer } = &mut s.lifecycle {
                // We aborted first: stop sending MP_FASTCLOSE.
                *by_peer |= fast_close;
            } else if fast_close {
                s.lifecycle = Lifecycle::Reset { by_peer: true };
                s.push_event(MptcpEvent::FastClosed);
                for o in self.subflows.iter_mut() {
                    o.sub.abort();
                }
                for j in 0..self.subflows.len() {
                    if j != i {
                        self.handle_events(now, j);
                    }
                }
            }
            self.after_segment(now, i, keys);
            return;
        }
        let feed = Self::handshake_in(s, sf, seg, now);
        if !s.fallback.is_tcp() && sf.end.reason.is_none() && !f.contains(TcpFlags::SYN) {
            if sf.handshake.join_ack_sent && !sf.fully_established {
                sf.fully_established = true;
            }
            Self::options_in(s, sf, seg, now);
        }
        if feed {
            Self::subflow_segment(s, sf, now, seg);
        }
        if let (true, Lifecycle::Reset { by_peer }) =
            (self.s.pending.fast_close, &mut self.s.lifecycle)
        {
            // We aborted first: stop sending MP_FASTCLOSE.
            *by_peer = true;
            self.s.pending.fast_close = false;
        }
        if std::mem::take(&mut self.s.pending.fast_close) {
            // MP_FASTCLOSE on an ACK (v0's way; RFC 8684 allows it too):
            // RST every subflow.
            self.s.lifecycle = Lifecycle::Reset { by_peer: true };
            self.s.push_event(MptcpEvent::FastClosed);
            for o in self.subflows.iter_mut() {
                o.sub.abort();
            }
            for j in 0..self.subflows.len() {
                self.handle_events(now, j);
            }
        }
        // An idle subflow made stale by a link event has no probe of its
        // own: a segment from the peer on it says its path works again.
        let sf = &mut self.subflows[i];
        if sf.stalled_at.is_some() && sf.sub.unacked_since().is_none() {
            sf.stalled_at = None;
            sf.suspect_at = None;
            sf.sub.set_backoff_cap(now, None);
            sf.hold_peer();
        }
        // The peer's side of a returned subflow lost nothing (or has
        // retransmitted it): it may carry the peer's data again.
        let end = seg.seq.wrapping_add(seg.payload.len() as u32);
        if sf.peer_held && sf.stalled_at.is_none() && sf.sub.received_all_before(end) {
            sf.peer_held = false;
            sf.signals.mp_prio = true;
            sf.sub.request_ack();
        }
        self.after_segment(now, i, keys);
    }

    /// Feeds a segment to the subflow; in-order data whose mappings are
    /// known goes straight from the segment to the connection's receive
    /// buffer (no copy through the subflow's). DSS checksums need a whole
    /// mapping, and a linear (fallen back) stream has none: both go through
    /// the subflow's buffer and `drain`.
    fn subflow_segment(s: &mut ConnState, sf: &mut MptcpSubflow, now: Instant, seg: &TcpRepr) {
        let direct = !s.checksum
            && !seg.payload.is_empty()
            && s.fallback.linear_recv().is_none()
            && sf.sub.readable() == 0;
        if !direct {
            sf.sub.on_segment(now, seg);
            return;
        }
        // How far the mappings cover the subflow's stream without a gap (as
        // far as this segment could reach).
        let mut end = sf.sub.recv_offset();
        let reach = end + seg.payload.len() as u64;
        while sf.rx_maps.front().is_some_and(|m| m.off + m.len <= end) {
            sf.rx_maps.pop_front();
        }
        for m in &sf.rx_maps {
            if m.off > end || end >= reach {
                break;
            }
            end = end.max(m.off + m.len);
        }
        sf.sub.set_direct_limit(end);
        sf.sub.on_segment(now, seg);
        let Some((mut off, range)) = sf.sub.take_direct() else {
            return;
        };
        let mut data = &seg.payload[range];
        while !data.is_empty() {
            while sf.rx_maps.front().is_some_and(|m| m.off + m.len <= off) {
                sf.rx_maps.pop_front();
            }
            let Some(m) = sf.rx_maps.front().filter(|m| m.off <= off) else {
                debug_assert!(false, "direct data beyond its mappings");
                return;
            };
            let n = ((m.off + m.len - off) as usize).min(data.len());
            s.recv.deliver(m.dsn + (off - m.off), &data[..n]);
            data = &data[n..];
            off += n as u64;
        }
    }

    /// Moves subflow data to the connection and handles subflow events.
    fn after_segment(&mut self, now: Instant, i: usize, keys: &mut KeySource) {
        if std::mem::take(&mut self.s.pending.fall_back_send)
            && matches!(self.s.fallback, Fallback::Mptcp { send: None, .. })
        {
            let others = self
                .subflows
                .iter()
                .enumerate()
                .any(|(j, f)| j != i && f.usable());
            let s = &mut self.s;
            let sf = &mut self.subflows[i];
            if others {
                sf.end.rst_reason = Some(reset_reason::MIDDLEBOX_INTERFERENCE);
                sf.end.reason = Some(SubflowCloseReason::Local);
                sf.sub.abort();
            } else {
                // Infinite mapping: resend everything not acknowledged at
                // the data level after what the subflow already holds.
                let linear = Linear {
                    subflow: i,
                    subflow_off: sf.sub.send_offset(),
                    data_off: s.send.una,
                };
                let Fallback::Mptcp { send, recv } = &mut s.fallback else {
                    unreachable!("checked above")
                };
                *send = Some(linear);
                s.send.nxt = s.send.una;
                s.send.reinject.clear();
                let recv_linear = recv.is_some();
                s.fall_back(FallbackReason::MpFailReceived);
                if !recv_linear {
                    s.push_event(MptcpEvent::FellBackToTcp);
                }
            }
        }
        for (id, backup) in std::mem::take(&mut self.s.pending.peer_prio) {
            for sf in self.subflows.iter_mut().filter(|f| f.remote_addr_id == id) {
                sf.peer_backup = backup;
            }
        }
        self.drain(i);
        self.handle_events(now, i);
        while let Some(id) = self.s.signals.peer_removed.pop() {
            for j in 0..self.subflows.len() {
                let sf = &mut self.subflows[j];
                if sf.remote_addr_id == id && sf.end.reason.is_none() {
                    sf.end.reason = Some(SubflowCloseReason::AddressRemoved);
                    sf.sub.abort();
                    self.handle_events(now, j);
                }
            }
        }
        self.run_pm(now, keys);
    }

    fn handle_events(&mut self, now: Instant, i: usize) {
        let mut reinject = false;
        let mut stale = false;
        let mut peer_closed = false;
        {
            let s = &mut self.s;
            let Some(sf) = self.subflows.get_mut(i) else {
                return;
            };
            while let Some(e) = sf.sub.poll_event() {
                match e {
                    SubflowEvent::Established => {
                        if sf.kind == SubflowKind::Initial && s.lifecycle == Lifecycle::Connecting {
                            s.lifecycle = Lifecycle::Established;
                            s.push_event(MptcpEvent::Established);
                            if s.role == Role::Client && s.version == Version::V1 {
                                // Data may follow the third ACK (RFC 8684 3.1);
                                // in v0 only after it (options_out).
                                sf.fully_established = true;
                            }
                            s.pending.path_manager = true;
                            if s.role == Role::Server {
                                s.queue_signals(now);
                                if !s.signals.add_addr.is_empty() {
                                    sf.sub.request_ack();
                                }
                            }
                        }
                    }
                    SubflowEvent::RetransmissionTimeout => {
                        stale = true;
                        s.push_event(MptcpEvent::RetransmissionTimeout { id: sf.id });
                    }
                    // As Linux (since 5.19): a subflow the peer finished
                    // while the connection goes on is closed on our side too.
                    SubflowEvent::PeerClosed => {
                        peer_closed = s.fallback == Fallback::NONE
                            && s.recv.peer_fin.is_none()
                            && !matches!(s.lifecycle, Lifecycle::Reset { .. })
                            && !sf.end.closing
                            && sf.end.reason.is_none();
                    }
                    SubflowEvent::Closed(r) => {
                        let reason = sf.end.reason.unwrap_or(match r {
                            CloseReason::Normal => SubflowCloseReason::Normal,
                            CloseReason::Reset => SubflowCloseReason::Reset(sf.end.peer_rst_reason),
                            CloseReason::Refused => SubflowCloseReason::Refused,
                            CloseReason::TimedOut => SubflowCloseReason::TimedOut,
                            CloseReason::Aborted => SubflowCloseReason::Local,
                        });
                        sf.end.reason = Some(reason);
                        reinject = true;
                        if !sf.end.announced_closed {
                            sf.end.announced_closed = true;
                            let e = MptcpEvent::SubflowClosed { id: sf.id, reason };
                            if std::mem::replace(&mut sf.end.monitor_closed, true) {
                                s.push_app_event(e);
                            } else {
                                s.push_event(e);
                            }
                        }
                        s.pending.path_manager = true;
                    }
                }
            }
            if sf.fully_established && !sf.end.announced_established && sf.end.reason.is_none() {
                sf.end.announced_established = true;
                s.push_event(MptcpEvent::SubflowEstablished { id: sf.id });
            }
        }
        if stale {
            self.mark_stale(now, i);
        }
        if reinject {
            self.reinject(i);
        }
        if peer_closed {
            let id = self.subflows[i].id;
            self.close_subflow_because(id, SubflowCloseReason::Normal);
        }
    }

    // ---- outgoing ----

    /// The next packet of this connection, emitted into `buf`.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(PathId, usize)> {
        self.schedule(now);
        let n = self.subflows.len();
        let linear = self.s.fallback.linear_send();
        for k in 0..n {
            let i = (self.next_to_poll + k) % n;
            let sf = &mut self.subflows[i];
            let tuple = sf.sub.tuple();
            let ip_header = if tuple.local.is_ipv4() { 20 } else { 40 };
            let room = buf
                .len()
                .saturating_sub(ip_header + 20 + MAX_OPTIONS)
                .min(self.scratch.len());
            // Payload straight from the connection's send buffer.
            let lin = linear
                .filter(|l| l.subflow == i)
                .map(|l| (l.subflow_off, l.data_off));
            let (maps, data) = (&sf.tx_maps, &self.s.send.buf);
            let mut fill = |off: u64, out: &mut [u8]| MptcpSubflow::fill(maps, lin, data, off, out);
            let Some(mut seg) =
                sf.sub
                    .poll_transmit_with(now, &mut self.scratch[..room], &mut fill)
            else {
                continue;
            };
            Self::options_out(&mut self.s, sf, &mut seg);
            let Some(mut ip) = IpRepr::new_tcp(tuple.local.ip(), tuple.remote.ip()) else {
                continue;
            };
            match &mut ip {
                IpRepr::V4(r) => r.dscp_ecn = sf.dscp << 2,
                IpRepr::V6(r) => r.traffic_class = sf.dscp << 2,
            }
            if let Ok(len) = emit_ip_tcp(&ip, &seg, buf) {
                self.next_to_poll = (i + 1) % n;
                return Some((sf.path, len));
            }
        }
        None
    }

    // ---- timers ----

    /// When `sf` becomes stale if nothing is acknowledged before.
    fn stale_deadline(sf: &MptcpSubflow) -> Option<Instant> {
        if sf.stalled_at.is_some() || sf.end.reason.is_some() || !sf.fully_established {
            return None;
        }
        let since = sf.sub.unacked_since()?;
        let (rto, srtt) = sf.sub.rto_srtt();
        let mut after = (rto * 2).min(STALE_AFTER.max(srtt * 2));
        // A thin flow (a request, an answer, the tail of a transfer) gets no
        // duplicate ACKs to reveal a loss before its timeout: after a probe
        // timeout (two smoothed RTTs and the peer's delayed ACK, as RFC
        // 8985's) its data is tried on another subflow. A wrong guess costs
        // a copy, and this subflow's next ACK makes it usable again.
        if !srtt.is_zero()
            && sf.sub.outstanding() <= THIN_FLIGHT_SEGMENTS * u64::from(sf.sub.sender_mss())
        {
            after = after.min(srtt * 2 + THIN_ACK_DELAY);
        }
        Some(since + after)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        // Asked after every packet: a plain loop (iterator chains of
        // Options cost several times more here).
        let mut best = self
            .s
            .timers
            .next()
            .map_or(u64::MAX, |(at, _)| at.as_nanos());
        for f in &self.subflows {
            if let Some(t) = f.sub.poll_timeout() {
                best = best.min(t.as_nanos());
            }
            if let Some(t) = Self::stale_deadline(f) {
                best = best.min(t.as_nanos());
            }
        }
        // A path manager's retry, while the connection may still open subflows.
        if let Some(t) = self.pm.next_wakeup().filter(|_| self.pm_may_run()) {
            best = best.min(t.as_nanos());
        }
        (best != u64::MAX).then_some(Instant::from_nanos(best))
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, keys: &mut KeySource) {
        // ADD_ADDR not echoed in time: send it again, a few times.
        let s = &mut self.s;
        if s.timers.is_due(ConnTimer::AddAddr, now) {
            for t in s.signals.add_addr.iter_mut().filter(|t| t.deadline <= now) {
                t.tries += 1;
                t.due = true;
                t.deadline = now + s.settings.add_addr_timeout * (1 << t.tries.min(8));
            }
            // v0's ADD_ADDR is never echoed: sent once more, then trusted.
            let retries = match s.version {
                Version::V0 => s.settings.add_addr_retries.min(1),
                Version::V1 => s.settings.add_addr_retries,
            };
            s.signals.add_addr.retain(|t| t.tries <= retries);
            s.rearm_add_addr();
        }
        if self.pm.next_wakeup().is_some_and(|t| t <= now) {
            s.pending.path_manager = true;
        }
        for i in 0..self.subflows.len() {
            if self.subflows[i]
                .sub
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.subflows[i].sub.on_timeout(now);
                self.handle_events(now, i);
            }
            if Self::stale_deadline(&self.subflows[i]).is_some_and(|t| t <= now) {
                // No acknowledgement for a while: stop scheduling on it and
                // reinject its data now, before its RTO says so.
                self.mark_stale(now, i);
            }
        }
        self.run_pm(now, keys);
    }

    /// Subflow `i` stopped answering: the scheduler gives it nothing new,
    /// it probes at least every [`STALE_PROBE_INTERVAL`], its data goes out
    /// again on the others, and its siblings on the same local path become
    /// suspect (a reinjection onto a subflow through the same dead link
    /// would wait for a second timeout).
    fn mark_stale(&mut self, now: Instant, i: usize) {
        let path = self.subflows[i].path;
        for j in 0..self.subflows.len() {
            let o = &mut self.subflows[j];
            if o.path != path || o.stalled_at.is_some() || o.end.reason.is_some() {
                continue;
            }
            // A sibling waiting for an acknowledgement is taken as dead
            // too (the next one clears it); an idle one is suspect.
            if j != i && o.sub.unacked_since().is_none() {
                o.suspect_at.get_or_insert(o.sub.acked_offset());
                continue;
            }
            o.stalled_at = Some(o.sub.acked_offset());
            o.peer_held = !o.backup;
            // Probe a stale path often: when it comes back, it carries
            // data again within a probe interval.
            o.sub.set_backoff_cap(now, Some(STALE_PROBE_INTERVAL));
            if self.s.settings.reinject_on_rto {
                self.reinject(j);
            }
        }
    }

    /// The driver saw the link of `path` go down (or its address or route
    /// go away): every subflow on it is stale at once, without waiting for
    /// a timeout, and its data is reinjected.
    pub(crate) fn path_down(&mut self, now: Instant, path: PathId) {
        for i in 0..self.subflows.len() {
            let sf = &self.subflows[i];
            if sf.path == path && sf.stalled_at.is_none() && sf.end.reason.is_none() {
                self.mark_stale(now, i);
            }
        }
        self.leave_dead_path(now, path);
    }

    /// Client, with another path working: the peer's subflows on the dead
    /// one still hold data it moves only when its own timers say so (Linux:
    /// about 1 s for an answer lost there). A REMOVE_ADDR for our address
    /// on it, sent on a working subflow, makes the peer close them and send
    /// that data again at once (Linux: `mptcp_pm_rm_addr_or_subflow`, whose
    /// subflow close retransmits pending data). Our subflows there are
    /// reset (the RST goes nowhere); the path manager opens new ones, and
    /// `path_up` has it try at once when the link returns. A server, or a
    /// manual path manager, keeps its subflows: nothing would re-create them.
    fn leave_dead_path(&mut self, now: Instant, path: PathId) {
        let works_elsewhere = self
            .subflows
            .iter()
            .any(|f| f.path != path && f.usable() && f.stalled_at.is_none());
        if self.s.role != Role::Client
            || self.s.fallback.is_tcp()
            || !works_elsewhere
            || !self.pm.reopens_lost_subflows()
        {
            return;
        }
        for j in 0..self.subflows.len() {
            let sf = &mut self.subflows[j];
            if sf.path != path || sf.end.reason.is_some() {
                continue;
            }
            self.s.signals.remove_pending = Some(sf.local_addr_id);
            sf.end.reason = Some(SubflowCloseReason::Local);
            sf.sub.abort();
            self.handle_events(now, j);
        }
        if let Some(sf) = self.subflows.iter_mut().find(|f| f.usable()) {
            sf.sub.request_ack();
        }
    }

    /// The link of `path` came back: its stale subflows probe now (the
    /// first acknowledgement makes them usable again, and the scheduler's
    /// preference fails back to them), idle ones are usable again, and the
    /// path manager tries its lost subflows again without waiting.
    pub(crate) fn path_up(&mut self, now: Instant, path: PathId, keys: &mut KeySource) {
        for sf in self.subflows.iter_mut().filter(|f| f.path == path) {
            // A SYN or data waiting for its retransmission goes now.
            sf.sub.probe_now(now);
            // Tell the peer at once, before our probe revives its side.
            sf.hold_peer();
            if sf.sub.unacked_since().is_none() {
                sf.stalled_at = None;
                sf.suspect_at = None;
                sf.sub.set_backoff_cap(now, None);
            }
        }
        self.pm.retry_now(now);
        self.s.pending.path_manager = true;
        self.run_pm(now, keys);
    }

    // ---- application ----

    pub fn close(&mut self) {
        if self.s.send.data_fin == DataFin::NotRequested {
            self.s.send.data_fin = DataFin::Pending;
        }
    }

    pub fn is_established(&self) -> bool {
        matches!(
            self.s.lifecycle,
            Lifecycle::Established | Lifecycle::SubflowsClosed
        )
    }

    pub fn is_read_closed(&self) -> bool {
        self.s.recv.syn_data.is_empty()
            && self.s.recv.peer_fin.is_some_and(|f| self.s.recv.nxt >= f)
            && self.s.recv.read == self.s.recv.nxt
    }

    pub fn is_closed(&self) -> bool {
        // TIME_WAIT is done for us (the connection is forgotten, its late
        // segments answered by RST) once the last ACK has gone out.
        let subs_done = self.subflows.iter().all(|f| {
            f.sub.is_closed() || (f.sub.state() == State::TimeWait && !f.sub.owes_segment())
        });
        if let Lifecycle::Reset { .. } = self.s.lifecycle {
            return subs_done;
        }
        subs_done
            && (self.s.lifecycle == Lifecycle::SubflowsClosed
                || self.subflows.iter().all(|f| f.end.reason.is_some()))
    }

    // ---- subflow-control API ----

    /// Every subflow, closed ones included.
    pub fn subflows(&self) -> impl Iterator<Item = SubflowInfo> + '_ {
        self.subflows.iter().map(|f| SubflowInfo {
            id: f.id,
            tuple: f.sub.tuple(),
            path: f.path,
            status: f.status(),
            local_addr_id: f.local_addr_id,
            remote_addr_id: f.remote_addr_id,
            backup: f.backup,
            peer_backup: f.peer_backup,
            dscp: f.dscp,
        })
    }

    fn find(&self, id: SubflowId) -> Option<usize> {
        self.subflows.iter().position(|f| f.id == id)
    }

    pub fn subflow_tuple(&self, id: SubflowId) -> Option<FourTuple> {
        self.find(id).map(|i| self.subflows[i].sub.tuple())
    }

    pub fn subflow_stats(&self, id: SubflowId) -> Option<SubflowStats> {
        let f = &self.subflows[self.find(id)?];
        let mut st = f.sub.stats();
        st.bytes_reinjected = f.bytes_reinjected;
        Some(st)
    }

    /// Closes one subflow (FIN); its unacknowledged data is reinjected.
    pub fn close_subflow(&mut self, id: SubflowId) -> bool {
        self.close_subflow_because(id, SubflowCloseReason::Local)
    }

    fn close_subflow_because(&mut self, id: SubflowId, why: SubflowCloseReason) -> bool {
        let Some(i) = self.find(id) else {
            return false;
        };
        let sf = &mut self.subflows[i];
        if sf.end.closing || sf.end.reason.is_some() {
            return false;
        }
        if !std::mem::replace(&mut sf.end.monitor_closed, true) {
            self.s.push_monitor(Mon::SfClosed(id, why));
        }
        sf.end.closing = true;
        sf.sub.close();
        for m in sf.tx_maps.iter_mut() {
            m.reinjected = false;
        }
        let end = sf.end.reason;
        sf.end.reason = Some(SubflowCloseReason::Local);
        self.reinject(i);
        self.subflows[i].end.reason = end;
        true
    }

    /// Backup priority (MP_PRIO to the peer) and DSCP of one subflow.
    pub fn set_subflow_options(&mut self, id: SubflowId, opts: SubflowOptions) -> bool {
        let Some(i) = self.find(id) else {
            return false;
        };
        let sf = &mut self.subflows[i];
        if let Some(b) = opts.backup {
            if b != sf.backup {
                sf.backup = b;
                sf.signals.mp_prio = true;
                sf.sub.request_ack();
                self.s.push_monitor(Mon::Prio(id));
            }
        }
        if let Some(d) = opts.dscp {
            sf.dscp = d & 0x3f;
        }
        true
    }

    pub fn poll_event(&mut self) -> Option<MptcpEvent> {
        self.s.events.pop_front()
    }

    /// Local and remote keys (for tests and tracing).
    pub fn keys(&self) -> (u64, u64) {
        (self.s.keys.local.key, self.s.keys.remote().key)
    }

    pub fn checksum_enabled(&self) -> bool {
        self.s.checksum
    }

    /// MP_JOIN and ADD_ADDR HMACs that did not verify.
    pub fn bad_hmacs(&self) -> u64 {
        self.s.bad_hmac
    }

    pub fn checksum_failures(&self) -> u64 {
        self.s.checksum_failures
    }

    /// Bytes acknowledged at the data level.
    pub fn data_acked(&self) -> u64 {
        self.s.send.una
    }

    /// Removes a local address: REMOVE_ADDR to the peer and its subflows close.
    pub fn remove_local_address(&mut self, addr_id: u8) {
        self.s.signals.remove_pending = Some(addr_id);
        self.s.signals.add_addr.retain(|t| t.id != addr_id);
        self.s.rearm_add_addr();
        let ids: Vec<SubflowId> = self
            .subflows
            .iter()
            .filter(|f| f.local_addr_id == addr_id && f.end.reason.is_none())
            .map(|f| f.id)
            .collect();
        for id in ids {
            self.close_subflow(id);
        }
        if let Some(sf) = self.subflows.iter_mut().find(|f| f.usable()) {
            sf.sub.request_ack();
        }
    }

    /// Announces one of our addresses (ADD_ADDR) on this connection; it
    /// must be one the connection was given (the classifier owns it).
    /// Returns its address id.
    pub fn announce_address(&mut self, now: Instant, ip: IpAddr) -> Option<u8> {
        if self.s.fallback.is_tcp() {
            return None;
        }
        let id = self.s.signals.locals.iter().position(|l| l.ip == ip)?;
        if id == 0 {
            return None;
        }
        self.s.signals.locals[id].signal = true;
        self.s.signals.add_addr.retain(|t| t.id != id as u8);
        self.s.queue_signals(now);
        if let Some(sf) = self.subflows.iter_mut().find(|f| f.usable()) {
            sf.sub.request_ack();
        }
        Some(id as u8)
    }

    /// The id of one of our addresses on this connection.
    pub fn local_address_id(&self, ip: IpAddr) -> Option<u8> {
        self.s
            .signals
            .locals
            .iter()
            .position(|l| l.ip == ip)
            .map(|i| i as u8)
    }

    /// Our token (as `ip mptcp monitor` shows it).
    pub fn token(&self) -> u32 {
        self.s.keys.local.token
    }

    /// Why the connection fell back to plain TCP, if it did.
    pub fn fallback_reason(&self) -> Option<FallbackReason> {
        self.s.fallback_reason
    }

    /// What an operator lists about the connection.
    pub fn info(&self) -> ConnectionInfo {
        let s = &self.s;
        let state = if matches!(s.lifecycle, Lifecycle::Reset { .. }) {
            ConnectionState::Reset
        } else if self.is_closed() {
            ConnectionState::Closed
        } else if s.send.data_fin != DataFin::NotRequested || s.recv.peer_fin.is_some() {
            ConnectionState::Closing
        } else if s.lifecycle != Lifecycle::Connecting {
            ConnectionState::Established
        } else {
            ConnectionState::Connecting
        };
        let initial = self
            .subflows
            .iter()
            .find(|f| f.kind == SubflowKind::Initial);
        let (local, remote) = initial.map_or_else(
            || {
                let any = SocketAddr::from(([0, 0, 0, 0], 0));
                (any, s.signals.remotes.first().map_or(any, |r| r.addr))
            },
            |f| (f.sub.tuple().local, f.sub.tuple().remote),
        );
        let mut retx = 0;
        let mut reinjected = 0;
        for f in &self.subflows {
            retx += f.sub.stats().bytes_retransmitted;
            reinjected += f.bytes_reinjected;
        }
        ConnectionInfo {
            token: s.keys.local.token,
            remote_token: s.keys.remote.map_or(0, |k| k.token),
            local,
            remote,
            state,
            fallback: s.fallback_reason,
            bytes_acked: s.send.una,
            bytes_sent: s.send.nxt.max(s.send.una),
            bytes_received: s.recv.nxt,
            subflows: self.live_subflows(),
            subflows_total: self.subflows.len(),
            bytes_retransmitted: retx,
            bytes_reinjected: reinjected,
        }
    }

    /// Moves the monitor events not yet taken to `out`, with addresses,
    /// ids and flags filled in, as `ip mptcp monitor` shows them.
    pub(crate) fn take_monitor(&mut self, mut out: impl FnMut(MonitorEvent)) {
        while let Some(m) = self.s.monitor.pop_front() {
            let token = self.s.keys.local.token;
            let mut ev = MonitorEvent {
                kind: MonitorKind::Created,
                token,
                subflow: None,
                local_id: None,
                remote_id: None,
                local: None,
                remote: None,
                backup: false,
                close_reason: None,
                reset_reason: None,
            };
            let sf_event = |ev: &mut MonitorEvent, kind, id: SubflowId| {
                ev.kind = kind;
                ev.subflow = Some(id);
                if let Some(f) = self.subflows.iter().find(|f| f.id == id) {
                    ev.local_id = Some(f.local_addr_id);
                    ev.remote_id = Some(f.remote_addr_id);
                    ev.local = Some(f.sub.tuple().local);
                    ev.remote = Some(f.sub.tuple().remote);
                    ev.backup = f.backup || f.peer_backup;
                }
            };
            match m {
                Mon::Created | Mon::Event(MptcpEvent::Established) => {
                    if let Some(f) = self.subflows.first() {
                        ev.local = Some(f.sub.tuple().local);
                        ev.remote = Some(f.sub.tuple().remote);
                        ev.local_id = Some(0);
                        ev.remote_id = Some(0);
                    }
                    if !matches!(m, Mon::Created) {
                        ev.kind = MonitorKind::Established;
                    }
                }
                Mon::Prio(id) => sf_event(&mut ev, MonitorKind::SfPrio, id),
                Mon::Event(MptcpEvent::SubflowEstablished { id }) => {
                    sf_event(&mut ev, MonitorKind::SfEstablished, id)
                }
                Mon::Event(MptcpEvent::SubflowClosed { id, reason })
                | Mon::SfClosed(id, reason) => {
                    sf_event(&mut ev, MonitorKind::SfClosed, id);
                    ev.close_reason = Some(reason);
                    if let SubflowCloseReason::Reset(r) = reason {
                        ev.reset_reason = r;
                    }
                }
                Mon::Event(MptcpEvent::AddressAnnounced { addr_id, addr }) => {
                    ev.kind = MonitorKind::Announced;
                    ev.remote_id = Some(addr_id);
                    ev.remote = Some(addr);
                }
                Mon::Event(MptcpEvent::AddressRemoved { addr_id }) => {
                    ev.kind = MonitorKind::Removed;
                    ev.remote_id = Some(addr_id);
                }
                Mon::Event(MptcpEvent::Closed) => ev.kind = MonitorKind::Closed,
                // CLOSED comes when the endpoint frees the connection.
                Mon::Event(
                    MptcpEvent::FastClosed
                    | MptcpEvent::FellBackToTcp
                    | MptcpEvent::RetransmissionTimeout { .. },
                ) => continue,
            }
            out(ev);
        }
    }

    /// A CLOSED monitor event for this connection (the endpoint sends it
    /// when it frees the connection).
    pub(crate) fn closed_event(&self) -> MonitorEvent {
        let i = self.info();
        MonitorEvent {
            kind: MonitorKind::Closed,
            token: i.token,
            subflow: None,
            local_id: None,
            remote_id: None,
            local: Some(i.local),
            remote: Some(i.remote),
            backup: false,
            close_reason: None,
            reset_reason: None,
        }
    }

    /// Aborts the connection: MP_FASTCLOSE with RST on every subflow.
    pub fn abort(&mut self) {
        if !matches!(self.s.lifecycle, Lifecycle::Reset { .. }) {
            self.s.lifecycle = Lifecycle::Reset { by_peer: false };
        }
        for sf in self.subflows.iter_mut() {
            sf.sub.abort();
        }
    }
}
