//! One MPTCP connection: its subflows, the data-level send and receive
//! state, and the options it puts on and takes off every segment.

mod keys;
mod options;
mod pm;
mod recv;
mod send;
mod signals;
mod subflow;

use self::options::MAX_OPTIONS;
use self::recv::RxMap;
use self::send::MAX_MAPPING;
use self::signals::AddAddrTx;
use self::subflow::{Kind, Sf};

use super::api::*;
use super::{reset_reason, KeySource, MptcpConfig};
use crate::crypto;
use crate::io::PathId;
use crate::pm::{PathManager, SubflowRequest};
use crate::sched::{Scheduler, SubflowView};
use crate::tcp::{CloseReason, FourTuple, RangeSet, Ring, State, Subflow, SubflowEvent};
use crate::time::Instant;
use crate::wire::ip::{emit_ip_tcp, IpRepr};
use crate::wire::mptcp::{MpJoin, MptcpOption};
use crate::wire::tcp::{TcpFlags, TcpRepr};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const EVENT_QUEUE: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// Everything but the subflows, so both can be borrowed at once.
#[derive(Debug)]
struct Shared {
    role: Role,
    tcp: crate::tcp::Config,
    checksum_wanted: bool,
    max_subflows: usize,
    reinject_on_rto: bool,
    add_addr_timeout: Duration,
    add_addr_retries: u32,

    local_key: u64,
    remote_key: u64,
    remote_key_known: bool,
    local_token: u32,
    remote_token: u32,
    local_idsn: u64,
    remote_idsn: u64,
    checksum: bool,
    fallback: bool,
    /// After an infinite mapping (RFC 8684 3.7), per direction: from this
    /// subflow offset on, data follows linearly from this data offset.
    /// Sending: (subflow index, subflow offset, data offset).
    tx_fb: Option<(usize, u64, u64)>,
    rx_fb: Option<(u64, u64)>,
    /// MP_FAIL received, or the peer's infinite mapping: fall back our
    /// sending direction too.
    fail_received: bool,
    established: bool,

    snd_buf: Ring,
    snd_written: u64,
    snd_una: u64,
    snd_nxt: u64,
    reinject: VecDeque<(u64, u64)>,
    peer_wnd_edge: u64,
    close_requested: bool,
    data_fin_acked: bool,
    data_fin_deadline: Option<Instant>,
    data_fin_backoff: u32,
    subflows_closed: bool,

    rcv_buf: Ring,
    rcv_nxt: u64,
    rcv_read: u64,
    ooo: RangeSet,
    peer_fin: Option<u64>,
    peer_dsn64: bool,

    locals: Vec<LocalAddr>,
    remotes: Vec<(u8, SocketAddr)>,
    add_addr: Vec<AddAddrTx>,
    echo_pending: Vec<(u8, IpAddr, Option<u16>)>,
    remove_pending: Option<u8>,
    /// Address ids the peer removed, whose subflows are still to close.
    peer_removed: Vec<u8>,
    reset: bool,
    fast_closed: bool,
    next_port: u16,
    pm_dirty: bool,

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

impl Shared {
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
    s: Shared,
    sfs: Vec<Sf>,
    next_id: SubflowId,
    sched: Box<dyn Scheduler>,
    pm: Box<dyn PathManager>,
    scratch: Box<[u8]>,
    views: Vec<SubflowView>,
    pm_out: Vec<SubflowRequest>,
    /// Tuples of subflows created since the endpoint last looked.
    new_tuples: Vec<(FourTuple, usize)>,
    tx_next: usize,
}

impl Connection {
    fn new(cfg: &MptcpConfig, role: Role, local_key: u64, locals: Vec<LocalAddr>) -> Connection {
        let mss = cfg.tcp.mss.max(64) as usize;
        Connection {
            s: Shared {
                role,
                tcp: cfg.tcp.clone(),
                checksum_wanted: cfg.checksum,
                max_subflows: cfg.max_subflows.max(1),
                reinject_on_rto: cfg.reinject_on_rto,
                add_addr_timeout: cfg.add_addr_timeout,
                add_addr_retries: cfg.add_addr_retries,
                local_key,
                remote_key: 0,
                remote_key_known: false,
                local_token: crypto::token(local_key),
                remote_token: 0,
                local_idsn: crypto::idsn(local_key),
                remote_idsn: 0,
                checksum: cfg.checksum,
                fallback: false,
                tx_fb: None,
                rx_fb: None,
                fail_received: false,
                established: false,
                snd_buf: Ring::new(cfg.send_buffer),
                snd_written: 0,
                snd_una: 0,
                snd_nxt: 0,
                reinject: VecDeque::with_capacity(64),
                peer_wnd_edge: 65535,
                close_requested: false,
                data_fin_acked: false,
                data_fin_deadline: None,
                data_fin_backoff: 0,
                subflows_closed: false,
                rcv_buf: Ring::new(cfg.recv_buffer),
                rcv_nxt: 0,
                rcv_read: 0,
                ooo: RangeSet::with_capacity(cfg.recv_buffer / (2 * mss) + 16),
                peer_fin: None,
                peer_dsn64: false,
                locals,
                remotes: Vec::new(),
                add_addr: Vec::new(),
                echo_pending: Vec::new(),
                remove_pending: None,
                peer_removed: Vec::new(),
                reset: false,
                fast_closed: false,
                next_port: 0,
                pm_dirty: false,
                events: VecDeque::with_capacity(EVENT_QUEUE),
                monitor: VecDeque::from([Mon::Created]),
                fallback_reason: None,
                bad_hmac: 0,
                checksum_failures: 0,
            },
            sfs: Vec::with_capacity(cfg.max_subflows.max(1)),
            next_id: 0,
            sched: cfg.scheduler.build(),
            pm: cfg.path_manager.build(),
            scratch: vec![0u8; MAX_MAPPING as usize + 1024].into_boxed_slice(),
            views: Vec::with_capacity(cfg.max_subflows.max(1)),
            pm_out: Vec::new(),
            new_tuples: Vec::new(),
            tx_next: 0,
        }
    }

    fn add_sf(
        &mut self,
        sub: Subflow,
        path: PathId,
        kind: Kind,
        local_id: u8,
        remote_id: u8,
    ) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let mut sub = sub;
        if self.s.fallback {
            sub.set_option_reserve(0);
        } else {
            // A DATA_ACK alone: 4 + 8 bytes.
            sub.set_ack_option_reserve(12);
        }
        self.new_tuples.push((sub.tuple(), self.sfs.len()));
        self.sfs.push(Sf {
            id,
            sub,
            path,
            local_id,
            remote_id,
            backup: false,
            peer_backup: false,
            dscp: 0,
            kind,
            fully: false,
            third_ack_pending: false,
            join_ack_sent: false,
            mpc_confirmed: false,
            red_next: 0,
            stale: false,
            acked_at_rto: 0,
            tx: VecDeque::new(),
            rx: VecDeque::new(),
            prio_pending: false,
            data_fin_pending: false,
            fail_pending: None,
            rst_reason: None,
            peer_rst_reason: None,
            close_reason: None,
            closing: false,
            announced: false,
            close_announced: false,
            monitor_closed: false,
            bytes_reinjected: 0,
        });
        self.sfs.len() - 1
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
        let mut c = Connection::new(cfg, Role::Client, key, locals);
        c.s.next_port = local_port.wrapping_add(1).max(1024);
        c.s.remotes.push((0, remote));
        let sub = Subflow::connect(&cfg.tcp, FourTuple { local, remote }, now);
        c.add_sf(sub, path, Kind::Capable, 0, 0);
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
        // The initial address gets id 0; the others keep their order.
        locals.retain(|l| l.ip != tuple.local.ip());
        locals.insert(
            0,
            LocalAddr {
                ip: tuple.local.ip(),
                path,
                signal: false,
            },
        );
        let mut c = Connection::new(cfg, Role::Server, key, locals);
        c.s.remotes.push((0, tuple.remote));
        match syn.options.mptcp.mp_capable() {
            Some(mpc) if mpc.version == 1 && mpc.sender_key.is_none() => {
                c.s.checksum = cfg.checksum || mpc.checksum_required();
            }
            _ => {
                c.s.fallback = true;
                c.s.fall_back(FallbackReason::SynWithoutMpCapable);
            }
        }
        c.add_sf(sub, path, Kind::Capable, 0, 0);
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
        if self.s.fallback
            || !self.s.remote_key_known
            || self.live_subflows() >= self.s.max_subflows
        {
            return false;
        }
        let Some(mut sub) = Subflow::accept(&self.s.tcp, tuple, now, syn) else {
            return false;
        };
        keys.replay_isn(&mut sub);
        let local_id = self
            .s
            .locals
            .iter()
            .position(|l| l.ip == tuple.local.ip())
            .unwrap_or(0) as u8;
        let kind = Kind::Join {
            local_nonce: keys.nonce(),
            remote_nonce: nonce,
        };
        let i = self.add_sf(sub, path, kind, local_id, addr_id);
        self.sfs[i].peer_backup = backup;
        true
    }

    fn live_subflows(&self) -> usize {
        self.sfs.iter().filter(|f| f.close_reason.is_none()).count()
    }

    pub(crate) fn take_new_tuples(&mut self, out: &mut Vec<(FourTuple, usize)>) {
        out.append(&mut self.new_tuples);
    }

    /// Subflow `i` is closed or in TIME_WAIT.
    pub(crate) fn subflow_finished(&self, i: usize) -> bool {
        self.sfs
            .get(i)
            .is_none_or(|f| f.sub.is_closed() || f.sub.state() == State::TimeWait)
    }

    pub(crate) fn local_token(&self) -> u32 {
        self.s.local_token
    }

    pub(crate) fn is_fallback(&self) -> bool {
        self.s.fallback
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
        let Some(sf) = self.sfs.get_mut(i) else {
            return;
        };
        let s = &mut self.s;
        let f = seg.flags;
        let opts = &seg.options.mptcp;
        if f.contains(TcpFlags::RST) {
            for o in opts {
                match *o {
                    MptcpOption::MpTcpRst { reason, .. } => sf.peer_rst_reason = Some(reason),
                    MptcpOption::MpFastclose { receiver_key } if receiver_key == s.local_key => {
                        s.fast_closed = true;
                    }
                    _ => {}
                }
            }
            sf.sub.on_segment(now, seg);
            if s.fast_closed && !s.reset {
                s.reset = true;
                s.push_event(MptcpEvent::FastClosed);
                for o in self.sfs.iter_mut() {
                    o.sub.abort();
                }
                for j in 0..self.sfs.len() {
                    if j != i {
                        self.handle_events(now, j);
                    }
                }
            }
            self.after_segment(now, i, keys);
            return;
        }
        let state = sf.sub.state();
        let mut feed = true;
        match (state, sf.kind) {
            (State::SynSent, Kind::Capable) if f.contains(TcpFlags::SYN | TcpFlags::ACK) => {
                match opts.mp_capable() {
                    Some(mpc) if mpc.version == 1 && mpc.sender_key.is_some() && !s.fallback => {
                        s.set_remote_key(mpc.sender_key.unwrap_or(0));
                        s.checksum = s.checksum_wanted || mpc.checksum_required();
                        sf.third_ack_pending = true;
                    }
                    _ => {
                        if !s.fallback {
                            s.fallback = true;
                            s.fall_back(FallbackReason::SynAckWithoutMpCapable);
                            sf.sub.set_option_reserve(0);
                            s.push_event(MptcpEvent::FellBackToTcp);
                        }
                    }
                }
            }
            (State::SynSent, Kind::Join { local_nonce, .. })
                if f.contains(TcpFlags::SYN | TcpFlags::ACK) =>
            {
                let ok = match opts.mp_join() {
                    Some(&MpJoin::SynAck {
                        backup,
                        addr_id,
                        hmac,
                        nonce,
                    }) => {
                        let want =
                            crypto::join_synack_hmac(s.remote_key, s.local_key, nonce, local_nonce);
                        if want == hmac {
                            sf.kind = Kind::Join {
                                local_nonce,
                                remote_nonce: nonce,
                            };
                            sf.peer_backup = backup;
                            sf.remote_id = addr_id;
                            sf.third_ack_pending = true;
                            true
                        } else {
                            false
                        }
                    }
                    _ => false,
                };
                if !ok {
                    s.bad_hmac += 1;
                    sf.sub.on_segment(now, seg);
                    sf.rst_reason = Some(reset_reason::MPTCP_ERROR);
                    sf.close_reason = Some(SubflowCloseReason::BadHmac);
                    sf.sub.abort();
                    feed = false;
                }
            }
            (State::SynReceived, Kind::Capable) if f.contains(TcpFlags::ACK) && !s.fallback => {
                match opts.mp_capable() {
                    Some(mpc)
                        if mpc.sender_key.is_some() && mpc.receiver_key == Some(s.local_key) =>
                    {
                        s.set_remote_key(mpc.sender_key.unwrap_or(0));
                        sf.fully = true;
                        if let Some(len) = mpc.data_len.filter(|&l| l > 0) {
                            // MP_CAPABLE with data: DSN IDSN+1, SSN 1.
                            sf.rx.push_back(RxMap {
                                off: 0,
                                dsn: 0,
                                len: len as u64,
                                csum: mpc.checksum,
                                fin: false,
                            });
                        }
                    }
                    // The third ACK was lost and this segment is not the
                    // first data one: wait for that one's retransmission.
                    _ if !opts.is_empty() => {
                        feed = false;
                    }
                    _ => {
                        // The third ACK lost its option: go on as plain TCP.
                        s.fallback = true;
                        s.fall_back(FallbackReason::AckWithoutMpCapable);
                        sf.sub.set_option_reserve(0);
                        s.push_event(MptcpEvent::FellBackToTcp);
                    }
                }
            }
            (
                State::SynReceived,
                Kind::Join {
                    local_nonce,
                    remote_nonce,
                },
            ) if f.contains(TcpFlags::ACK) => {
                let want =
                    crypto::join_ack_hmac(s.remote_key, s.local_key, remote_nonce, local_nonce);
                match opts.mp_join() {
                    Some(MpJoin::Ack { hmac }) if *hmac == want => {
                        sf.sub.on_segment(now, seg);
                        // RFC 8684 3.2: the third ACK is acknowledged.
                        sf.sub.request_ack();
                        sf.fully = true;
                        feed = false;
                    }
                    _ => {
                        s.bad_hmac += 1;
                        sf.sub.on_segment(now, seg);
                        sf.rst_reason = Some(reset_reason::MPTCP_ERROR);
                        sf.close_reason = Some(SubflowCloseReason::BadHmac);
                        sf.announced = true;
                        sf.close_announced = true;
                        sf.sub.abort();
                        feed = false;
                    }
                }
            }
            _ => {}
        }
        if !s.fallback && sf.close_reason.is_none() && !f.contains(TcpFlags::SYN) {
            if sf.join_ack_sent && !sf.fully {
                sf.fully = true;
            }
            Self::options_in(s, sf, seg, now);
        }
        if feed {
            sf.sub.on_segment(now, seg);
        }
        self.after_segment(now, i, keys);
    }

    /// Moves subflow data to the connection and handles subflow events.
    fn after_segment(&mut self, now: Instant, i: usize, keys: &mut KeySource) {
        if std::mem::take(&mut self.s.fail_received) && !self.s.fallback && self.s.tx_fb.is_none() {
            let others = self
                .sfs
                .iter()
                .enumerate()
                .any(|(j, f)| j != i && f.usable());
            let s = &mut self.s;
            let sf = &mut self.sfs[i];
            if others {
                sf.rst_reason = Some(reset_reason::MIDDLEBOX_INTERFERENCE);
                sf.close_reason = Some(SubflowCloseReason::Local);
                sf.sub.abort();
            } else {
                // Infinite mapping: resend everything not acknowledged at
                // the data level after what the subflow already holds.
                s.tx_fb = Some((i, sf.sub.send_offset(), s.snd_una));
                s.snd_nxt = s.snd_una;
                s.reinject.clear();
                s.fall_back(FallbackReason::MpFailReceived);
                if s.rx_fb.is_none() {
                    s.push_event(MptcpEvent::FellBackToTcp);
                }
            }
        }
        self.drain(i);
        self.handle_events(now, i);
        while let Some(id) = self.s.peer_removed.pop() {
            for j in 0..self.sfs.len() {
                let sf = &mut self.sfs[j];
                if sf.remote_id == id && sf.close_reason.is_none() {
                    sf.close_reason = Some(SubflowCloseReason::AddressRemoved);
                    sf.sub.abort();
                    self.handle_events(now, j);
                }
            }
        }
        self.run_pm(now, keys);
    }

    fn handle_events(&mut self, now: Instant, i: usize) {
        let mut reinject = false;
        let mut peer_closed = false;
        {
            let s = &mut self.s;
            let Some(sf) = self.sfs.get_mut(i) else {
                return;
            };
            while let Some(e) = sf.sub.poll_event() {
                match e {
                    SubflowEvent::Established => {
                        if sf.kind == Kind::Capable && !s.established {
                            s.established = true;
                            s.push_event(MptcpEvent::Established);
                            if s.role == Role::Client {
                                // Data may follow the third ACK (RFC 8684 3.1).
                                sf.fully = true;
                            }
                            s.pm_dirty = true;
                            if s.role == Role::Server {
                                s.queue_signals(now);
                                if !s.add_addr.is_empty() {
                                    sf.sub.request_ack();
                                }
                            }
                        }
                    }
                    SubflowEvent::RetransmissionTimeout => {
                        sf.stale = true;
                        sf.acked_at_rto = sf.sub.acked_offset();
                        s.push_event(MptcpEvent::RetransmissionTimeout { id: sf.id });
                        reinject |= s.reinject_on_rto;
                    }
                    // As Linux (since 5.19): a subflow the peer finished
                    // while the connection goes on is closed on our side too.
                    SubflowEvent::PeerClosed => {
                        peer_closed = !s.fallback
                            && s.rx_fb.is_none()
                            && s.tx_fb.is_none()
                            && s.peer_fin.is_none()
                            && !s.reset
                            && !sf.closing
                            && sf.close_reason.is_none();
                    }
                    SubflowEvent::Closed(r) => {
                        let reason = sf.close_reason.unwrap_or(match r {
                            CloseReason::Normal => SubflowCloseReason::Normal,
                            CloseReason::Reset => SubflowCloseReason::Reset(sf.peer_rst_reason),
                            CloseReason::Refused => SubflowCloseReason::Refused,
                            CloseReason::TimedOut => SubflowCloseReason::TimedOut,
                            CloseReason::Aborted => SubflowCloseReason::Local,
                        });
                        sf.close_reason = Some(reason);
                        reinject = true;
                        if !sf.close_announced {
                            sf.close_announced = true;
                            let e = MptcpEvent::SubflowClosed { id: sf.id, reason };
                            if std::mem::replace(&mut sf.monitor_closed, true) {
                                s.push_app_event(e);
                            } else {
                                s.push_event(e);
                            }
                        }
                        s.pm_dirty = true;
                    }
                }
            }
            if sf.fully && !sf.announced && sf.close_reason.is_none() {
                sf.announced = true;
                s.push_event(MptcpEvent::SubflowEstablished { id: sf.id });
            }
        }
        if reinject {
            self.reinject(i);
        }
        if peer_closed {
            let id = self.sfs[i].id;
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
        let n = self.sfs.len();
        for k in 0..n {
            let i = (self.tx_next + k) % n;
            let sf = &mut self.sfs[i];
            let tuple = sf.sub.tuple();
            let ip_header = if tuple.local.is_ipv4() { 20 } else { 40 };
            let room = buf
                .len()
                .saturating_sub(ip_header + 20 + MAX_OPTIONS)
                .min(self.scratch.len());
            let Some(mut seg) = sf.sub.poll_transmit(now, &mut self.scratch[..room]) else {
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
                self.tx_next = (i + 1) % n;
                return Some((sf.path, len));
            }
        }
        None
    }

    // ---- timers ----

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let sub = self.sfs.iter().filter_map(|f| f.sub.poll_timeout()).min();
        let addr = self.s.add_addr.iter().map(|t| t.deadline).min();
        let fin = self.s.data_fin_deadline.filter(|_| !self.s.data_fin_acked);
        [sub, addr, fin].into_iter().flatten().min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, keys: &mut KeySource) {
        // ADD_ADDR not echoed in time: send it again, a few times.
        let s = &mut self.s;
        for t in s.add_addr.iter_mut().filter(|t| t.deadline <= now) {
            t.tries += 1;
            t.due = true;
            t.deadline = now + s.add_addr_timeout * (1 << t.tries.min(8));
        }
        let retries = s.add_addr_retries;
        s.add_addr.retain(|t| t.tries <= retries);
        for i in 0..self.sfs.len() {
            if self.sfs[i].sub.poll_timeout().is_some_and(|t| t <= now) {
                self.sfs[i].sub.on_timeout(now);
                self.handle_events(now, i);
            }
        }
        self.run_pm(now, keys);
    }

    // ---- application ----

    pub fn close(&mut self) {
        self.s.close_requested = true;
    }

    pub fn is_established(&self) -> bool {
        self.s.established && !self.s.reset
    }

    pub fn is_read_closed(&self) -> bool {
        self.s.peer_fin.is_some_and(|f| self.s.rcv_nxt >= f) && self.s.rcv_read == self.s.rcv_nxt
    }

    pub fn is_closed(&self) -> bool {
        let subs_done = self
            .sfs
            .iter()
            .all(|f| f.sub.is_closed() || f.sub.state() == State::TimeWait);
        if self.s.reset {
            return subs_done;
        }
        subs_done && (self.s.subflows_closed || self.sfs.iter().all(|f| f.close_reason.is_some()))
    }

    // ---- subflow-control API ----

    /// Every subflow, closed ones included.
    pub fn subflows(&self) -> impl Iterator<Item = SubflowInfo> + '_ {
        self.sfs.iter().map(|f| SubflowInfo {
            id: f.id,
            tuple: f.sub.tuple(),
            path: f.path,
            status: f.status(),
            local_addr_id: f.local_id,
            remote_addr_id: f.remote_id,
            backup: f.backup,
            peer_backup: f.peer_backup,
            dscp: f.dscp,
        })
    }

    fn find(&self, id: SubflowId) -> Option<usize> {
        self.sfs.iter().position(|f| f.id == id)
    }

    pub fn subflow_tuple(&self, id: SubflowId) -> Option<FourTuple> {
        self.find(id).map(|i| self.sfs[i].sub.tuple())
    }

    pub fn subflow_stats(&self, id: SubflowId) -> Option<SubflowStats> {
        let f = &self.sfs[self.find(id)?];
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
        let sf = &mut self.sfs[i];
        if sf.closing || sf.close_reason.is_some() {
            return false;
        }
        if !std::mem::replace(&mut sf.monitor_closed, true) {
            self.s.push_monitor(Mon::SfClosed(id, why));
        }
        sf.closing = true;
        sf.sub.close();
        for m in sf.tx.iter_mut() {
            m.reinjected = false;
        }
        let end = sf.close_reason;
        sf.close_reason = Some(SubflowCloseReason::Local);
        self.reinject(i);
        self.sfs[i].close_reason = end;
        true
    }

    /// Backup priority (MP_PRIO to the peer) and DSCP of one subflow.
    pub fn set_subflow_options(&mut self, id: SubflowId, opts: SubflowOptions) -> bool {
        let Some(i) = self.find(id) else {
            return false;
        };
        let sf = &mut self.sfs[i];
        if let Some(b) = opts.backup {
            if b != sf.backup {
                sf.backup = b;
                sf.prio_pending = true;
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
        (self.s.local_key, self.s.remote_key)
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
        self.s.snd_una
    }

    /// Removes a local address: REMOVE_ADDR to the peer and its subflows close.
    pub fn remove_local_address(&mut self, addr_id: u8) {
        self.s.remove_pending = Some(addr_id);
        self.s.add_addr.retain(|t| t.id != addr_id);
        let ids: Vec<SubflowId> = self
            .sfs
            .iter()
            .filter(|f| f.local_id == addr_id && f.close_reason.is_none())
            .map(|f| f.id)
            .collect();
        for id in ids {
            self.close_subflow(id);
        }
        if let Some(sf) = self.sfs.iter_mut().find(|f| f.usable()) {
            sf.sub.request_ack();
        }
    }

    /// Announces one of our addresses (ADD_ADDR) on this connection; it
    /// must be one the connection was given (the classifier owns it).
    /// Returns its address id.
    pub fn announce_address(&mut self, now: Instant, ip: IpAddr) -> Option<u8> {
        if self.s.fallback {
            return None;
        }
        let id = self.s.locals.iter().position(|l| l.ip == ip)?;
        if id == 0 {
            return None;
        }
        self.s.locals[id].signal = true;
        self.s.add_addr.retain(|t| t.id != id as u8);
        self.s.queue_signals(now);
        if let Some(sf) = self.sfs.iter_mut().find(|f| f.usable()) {
            sf.sub.request_ack();
        }
        Some(id as u8)
    }

    /// The id of one of our addresses on this connection.
    pub fn local_address_id(&self, ip: IpAddr) -> Option<u8> {
        self.s
            .locals
            .iter()
            .position(|l| l.ip == ip)
            .map(|i| i as u8)
    }

    /// Our token (as `ip mptcp monitor` shows it).
    pub fn token(&self) -> u32 {
        self.s.local_token
    }

    /// Why the connection fell back to plain TCP, if it did.
    pub fn fallback_reason(&self) -> Option<FallbackReason> {
        self.s.fallback_reason
    }

    /// What an operator lists about the connection.
    pub fn info(&self) -> ConnectionInfo {
        let s = &self.s;
        let state = if s.reset || s.fast_closed {
            ConnectionState::Reset
        } else if self.is_closed() {
            ConnectionState::Closed
        } else if s.close_requested || s.peer_fin.is_some() {
            ConnectionState::Closing
        } else if s.established {
            ConnectionState::Established
        } else {
            ConnectionState::Connecting
        };
        let (local, remote) = self.sfs.first().map_or_else(
            || {
                let any = SocketAddr::from(([0, 0, 0, 0], 0));
                (any, s.remotes.first().map_or(any, |r| r.1))
            },
            |f| (f.sub.tuple().local, f.sub.tuple().remote),
        );
        let mut retx = 0;
        let mut reinjected = 0;
        for f in &self.sfs {
            retx += f.sub.stats().bytes_retransmitted;
            reinjected += f.bytes_reinjected;
        }
        ConnectionInfo {
            token: s.local_token,
            remote_token: s.remote_token,
            local,
            remote,
            state,
            fallback: s.fallback_reason,
            bytes_acked: s.snd_una,
            bytes_sent: s.snd_nxt.max(s.snd_una),
            bytes_received: s.rcv_nxt,
            subflows: self.live_subflows(),
            subflows_total: self.sfs.len(),
            bytes_retransmitted: retx,
            bytes_reinjected: reinjected,
        }
    }

    /// Moves the monitor events not yet taken to `out`, with addresses,
    /// ids and flags filled in, as `ip mptcp monitor` shows them.
    pub(crate) fn take_monitor(&mut self, mut out: impl FnMut(MonitorEvent)) {
        while let Some(m) = self.s.monitor.pop_front() {
            let token = self.s.local_token;
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
                if let Some(f) = self.sfs.iter().find(|f| f.id == id) {
                    ev.local_id = Some(f.local_id);
                    ev.remote_id = Some(f.remote_id);
                    ev.local = Some(f.sub.tuple().local);
                    ev.remote = Some(f.sub.tuple().remote);
                    ev.backup = f.backup || f.peer_backup;
                }
            };
            match m {
                Mon::Created | Mon::Event(MptcpEvent::Established) => {
                    if let Some(f) = self.sfs.first() {
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
        self.s.reset = true;
        for sf in self.sfs.iter_mut() {
            sf.sub.abort();
        }
    }
}
