//! One MPTCP connection: its subflows, the data-level send and receive
//! state, and the options it puts on and takes off every segment.

use super::api::*;
use super::{reset_reason, KeySource, MptcpConfig};
use crate::crypto;
use crate::io::PathId;
use crate::pm::{PathManager, PmView, SubflowRequest};
use crate::sched::{Scheduler, SubflowView};
use crate::tcp::{CloseReason, FourTuple, RangeSet, Ring, State, Subflow, SubflowEvent};
use crate::time::Instant;
use crate::wire::ip::{emit_ip_tcp, IpRepr};
use crate::wire::mptcp::{AddAddr, AddrIds, Dss, DssMapping, MpCapable, MpJoin, MptcpOption};
use crate::wire::tcp::{TcpFlags, TcpRepr};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Largest DSS mapping we create (its length field has 16 bits).
const MAX_MAPPING: u64 = 65535;
const EVENT_QUEUE: usize = 64;
/// Received mappings remembered per subflow, beyond which new ones are
/// ignored (the data then waits for a retransmission with its mapping).
const RX_MAPPINGS: usize = 4096;
const MAX_OPTIONS: usize = 40;
/// DATA_FIN retransmission interval before backoff.
const DATA_FIN_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// Data handed to a subflow: its stream offset, data-level offset, length
/// and DSS checksum.
#[derive(Clone, Copy, Debug)]
struct TxMap {
    off: u64,
    dsn: u64,
    len: u64,
    csum: u16,
    reinjected: bool,
}

/// A mapping received from the peer (data-level offset relative to the
/// peer's IDSN + 1).
#[derive(Clone, Copy, Debug)]
struct RxMap {
    off: u64,
    dsn: u64,
    len: u64,
    csum: Option<u16>,
    /// The mapping also carries the DATA_FIN: its checksum covers a
    /// data-level length one more than `len` (RFC 8684 3.3.1, as Linux).
    fin: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The initial subflow (MP_CAPABLE).
    Capable,
    /// An additional subflow (MP_JOIN) with both nonces.
    Join { local_nonce: u32, remote_nonce: u32 },
}

#[derive(Debug)]
struct Sf {
    id: SubflowId,
    sub: Subflow,
    path: PathId,
    local_id: u8,
    remote_id: u8,
    backup: bool,
    peer_backup: bool,
    dscp: u8,
    kind: Kind,
    /// May carry data (keys confirmed, MP_JOIN third ACK acknowledged).
    fully: bool,
    /// Client: the next segment is the third ACK of the handshake.
    third_ack_pending: bool,
    /// Client MP_JOIN: third ACK sent, waiting for the peer's ACK.
    join_ack_sent: bool,
    /// Client, initial subflow: the server sent an MPTCP option after the
    /// handshake, so it has our keys; until then the first mapping goes
    /// out as MP_CAPABLE with data (RFC 8684 3.1).
    mpc_confirmed: bool,
    /// Redundant scheduling: the next data-level offset this subflow sends.
    red_next: u64,
    /// A retransmission timeout fired and nothing was acknowledged since:
    /// the scheduler leaves it alone (and backups may take over).
    stale: bool,
    acked_at_rto: u64,
    tx: VecDeque<TxMap>,
    rx: VecDeque<RxMap>,
    prio_pending: bool,
    data_fin_pending: bool,
    fail_pending: Option<u64>,
    /// MP_TCPRST reason to put on our RST.
    rst_reason: Option<u8>,
    /// MP_TCPRST reason the peer put on its RST.
    peer_rst_reason: Option<u8>,
    close_reason: Option<SubflowCloseReason>,
    closing: bool,
    /// SubflowEstablished was reported.
    announced: bool,
    /// SubflowClosed was reported (or must never be: a refused MP_JOIN).
    close_announced: bool,
    /// SF_CLOSED went to the monitor.
    monitor_closed: bool,
    bytes_reinjected: u64,
}

impl Sf {
    /// Hands `data` (data-level offset `start`) to the subflow under one new
    /// mapping, with its DSS checksum when `dsn_base` (IDSN + 1) is given,
    /// and ends the segment there so no segment straddles two mappings.
    /// Returns how many bytes the subflow took.
    fn send_mapped(&mut self, data: &[u8], start: u64, dsn_base: Option<u64>) -> u64 {
        let off = self.sub.send_offset();
        let m = self.sub.send(data) as u64;
        if m == 0 {
            return 0;
        }
        let csum = dsn_base.map_or(0, |base| {
            crypto::dss_checksum(
                base.wrapping_add(start),
                (off + 1) as u32,
                m as u16,
                &data[..m as usize],
            )
        });
        self.tx.push_back(TxMap {
            off,
            dsn: start,
            len: m,
            csum,
            reinjected: false,
        });
        self.sub.mark_send_boundary();
        m
    }
}

impl Sf {
    fn usable(&self) -> bool {
        self.fully
            && !self.closing
            && self.close_reason.is_none()
            && matches!(self.sub.state(), State::Established | State::CloseWait)
    }

    fn status(&self) -> SubflowStatus {
        if self.sub.is_closed() {
            SubflowStatus::Closed
        } else if self.closing || !matches!(self.sub.state(), State::Established | State::CloseWait)
        {
            if self.sub.is_established() || self.sub.state() == State::TimeWait || self.closing {
                SubflowStatus::Closing
            } else {
                SubflowStatus::Establishing
            }
        } else if !self.fully {
            SubflowStatus::Establishing
        } else if self.backup || self.peer_backup {
            SubflowStatus::Backup
        } else {
            SubflowStatus::FullyEstablished
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct AddAddrTx {
    id: u8,
    addr: IpAddr,
    deadline: Instant,
    tries: u32,
    due: bool,
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
        if self.events.len() == EVENT_QUEUE {
            self.events.pop_front();
        }
        self.events.push_back(e);
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

    fn set_remote_key(&mut self, key: u64) {
        self.remote_key = key;
        self.remote_key_known = true;
        self.remote_token = crypto::token(key);
        self.remote_idsn = crypto::idsn(key);
    }

    /// The 64-bit value nearest `near` whose low 32 bits are `v`.
    fn expand(v: u64, wide: bool, near: u64) -> u64 {
        if wide {
            return v;
        }
        let cand = (near & !0xffff_ffff) | (v & 0xffff_ffff);
        [cand, cand.wrapping_add(1 << 32), cand.wrapping_sub(1 << 32)]
            .into_iter()
            .min_by_key(|c| c.wrapping_sub(near).min(near.wrapping_sub(*c)))
            .unwrap_or(cand)
    }

    fn data_ack_abs(&self) -> u64 {
        let fin = self.peer_fin.is_some_and(|f| self.rcv_nxt >= f) as u64;
        self.remote_idsn
            .wrapping_add(1)
            .wrapping_add(self.rcv_nxt + fin)
    }

    fn rcv_free(&self) -> u64 {
        self.rcv_buf.capacity() - (self.rcv_nxt - self.rcv_read)
    }

    fn on_data_ack(&mut self, abs: u64, wide: bool, window: u64) {
        let near = self.local_idsn.wrapping_add(1).wrapping_add(self.snd_una);
        let off = Shared::expand(abs, wide, near).wrapping_sub(self.local_idsn.wrapping_add(1));
        let fin_extra = self.close_requested as u64;
        if off > self.snd_written + fin_extra {
            return;
        }
        if off >= self.snd_una {
            self.snd_una = off.min(self.snd_written);
            if self.close_requested && off == self.snd_written + 1 {
                self.data_fin_acked = true;
                self.data_fin_deadline = None;
            }
            self.peer_wnd_edge = self.peer_wnd_edge.max(off + window);
        }
    }

    /// Puts in-order data at its data-level offset.
    fn deliver(&mut self, dsn: u64, data: &[u8]) {
        let mut start = dsn;
        let mut end = dsn + data.len() as u64;
        if end <= self.rcv_nxt {
            return;
        }
        start = start.max(self.rcv_nxt);
        end = end.min(self.rcv_read + self.rcv_buf.capacity());
        if start >= end {
            return;
        }
        let from = (start - dsn) as usize;
        let to = (end - dsn) as usize;
        self.rcv_buf.write_at(start, &data[from..to]);
        if start == self.rcv_nxt {
            self.rcv_nxt = end;
            while let Some((a, b)) = self.ooo.first() {
                if a > self.rcv_nxt {
                    break;
                }
                self.rcv_nxt = self.rcv_nxt.max(b);
                self.ooo.pop_first_if_reaches(a);
            }
        } else {
            self.ooo.insert(start, end);
        }
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
        if let Some(isn) = keys.replay_isn() {
            sub.set_initial_send_seq_for_replay(isn);
        }
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
        if let Some(isn) = keys.replay_isn() {
            sub.set_initial_send_seq_for_replay(isn);
        }
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

    /// DSS, address signals and MP_PRIO/MP_FAIL on an established subflow.
    fn options_in(s: &mut Shared, sf: &mut Sf, seg: &TcpRepr, _now: Instant) {
        let window = match sf.sub.negotiated().2 {
            Some((snd_ws, _)) => (seg.window as u64) << snd_ws,
            None => seg.window as u64,
        };
        let opts = &seg.options.mptcp;
        if sf.kind == Kind::Capable
            && s.role == Role::Client
            && !sf.mpc_confirmed
            && !opts.is_empty()
            && opts.mp_capable().is_none()
        {
            // Fully established: the server has our key, so MP_JOINs will
            // find the token (RFC 8684 3.1).
            sf.mpc_confirmed = true;
            s.pm_dirty = true;
        }
        for o in opts {
            match *o {
                MptcpOption::Dss(d) => {
                    if let Some(a) = d.data_ack {
                        s.on_data_ack(a, d.data_ack_wide, window);
                    }
                    if let Some(m) = d.mapping {
                        Self::mapping_in(s, sf, &d, &m);
                    }
                }
                MptcpOption::AddAddr(a) => {
                    if a.echo {
                        for t in s.add_addr.iter_mut() {
                            if t.id == a.addr_id {
                                t.tries = u32::MAX;
                                t.due = false;
                            }
                        }
                        s.add_addr.retain(|t| t.tries != u32::MAX);
                        continue;
                    }
                    let want =
                        crypto::add_addr_hmac(s.remote_key, s.local_key, a.addr_id, a.addr, a.port);
                    if a.hmac != Some(want) {
                        s.bad_hmac += 1;
                        continue;
                    }
                    let port = a
                        .port
                        .unwrap_or_else(|| s.remotes.first().map_or(0, |r| r.1.port()));
                    let sa = SocketAddr::new(a.addr, port);
                    if !s.remotes.iter().any(|r| r.0 == a.addr_id) {
                        s.remotes.push((a.addr_id, sa));
                        s.push_event(MptcpEvent::AddressAnnounced {
                            addr_id: a.addr_id,
                            addr: sa,
                        });
                        s.pm_dirty = true;
                    }
                    s.echo_pending.push((a.addr_id, a.addr, a.port));
                    sf.sub.request_ack();
                }
                MptcpOption::RemoveAddr(ids) => {
                    for &id in ids.as_slice() {
                        if s.remotes.iter().any(|r| r.0 == id) {
                            s.remotes.retain(|r| r.0 != id || id == 0);
                            s.push_event(MptcpEvent::AddressRemoved { addr_id: id });
                            s.remove_pending_ids_from_peer(id);
                        }
                    }
                }
                MptcpOption::MpCapable(mpc)
                    if sf.kind == Kind::Capable && s.role == Role::Server =>
                {
                    // MP_CAPABLE with data after the handshake (the client
                    // had not heard from us yet): the first mapping.
                    if let Some(len) = mpc.data_len.filter(|&l| l > 0) {
                        if !sf.rx.iter().any(|r| r.off == 0) && sf.sub.recv_offset() == 0 {
                            sf.rx.push_front(RxMap {
                                off: 0,
                                dsn: 0,
                                len: len as u64,
                                csum: mpc.checksum,
                                fin: false,
                            });
                        }
                    }
                }
                MptcpOption::MpPrio { backup, .. } if sf.peer_backup != backup => {
                    sf.peer_backup = backup;
                    s.push_monitor(Mon::Prio(sf.id));
                }
                MptcpOption::MpFail { .. } => {
                    // The peer found a bad checksum: with one subflow go on
                    // as plain TCP (infinite mapping), else drop this one.
                    s.fail_received = true;
                }
                _ => {}
            }
        }
    }

    fn mapping_in(s: &mut Shared, sf: &mut Sf, d: &Dss, m: &DssMapping) {
        if m.dsn_wide {
            s.peer_dsn64 = true;
        }
        let base = s.remote_idsn.wrapping_add(1);
        let near = base.wrapping_add(s.rcv_nxt);
        let dsn = Shared::expand(m.dsn, m.dsn_wide, near).wrapping_sub(base);
        // Huge values are old or bogus mappings (wrapped below zero).
        if dsn > s.rcv_nxt + (1 << 40) {
            return;
        }
        let len = m.data_len as u64;
        if d.data_fin {
            if len >= 1 {
                s.peer_fin = Some(dsn + len - 1);
                sf.sub.request_ack();
            }
            if m.ssn == 0 && len == 1 {
                return;
            }
        }
        if len == 0 {
            // An infinite mapping (RFC 8684 3.7): from its subflow sequence
            // number on, data follows linearly, without options.
            let next = sf.sub.recv_offset() + 1;
            let rel = next as i64 + (m.ssn.wrapping_sub(next as u32) as i32 as i64);
            if rel >= 1 && !s.fallback && s.rx_fb.is_none() {
                s.rx_fb = Some((rel as u64 - 1, dsn));
                s.fail_received = true;
                s.fall_back(FallbackReason::InfiniteMappingReceived);
                s.push_event(MptcpEvent::FellBackToTcp);
            }
            return;
        }
        let len = if d.data_fin { len - 1 } else { len };
        if len == 0 {
            return;
        }
        // Relative subflow sequence number to stream offset.
        let next = sf.sub.recv_offset() + 1;
        let rel = next as i64 + (m.ssn.wrapping_sub(next as u32) as i32 as i64);
        if rel < 1 {
            return;
        }
        let off = rel as u64 - 1;
        if sf.rx.iter().rev().any(|r| r.off == off) || sf.rx.len() >= RX_MAPPINGS {
            return;
        }
        let map = RxMap {
            off,
            dsn,
            len,
            csum: m.checksum,
            fin: d.data_fin,
        };
        let at = sf.rx.partition_point(|r| r.off < off);
        sf.rx.insert(at, map);
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

    fn drain(&mut self, i: usize) {
        let others_usable = self
            .sfs
            .iter()
            .enumerate()
            .any(|(j, f)| j != i && f.usable());
        let s = &mut self.s;
        let Some(sf) = self.sfs.get_mut(i) else {
            return;
        };
        loop {
            let readable = sf.sub.readable() as u64;
            if readable == 0 {
                break;
            }
            let off = sf.sub.recv_offset();
            let linear = if s.fallback { Some((0, 0)) } else { s.rx_fb };
            if let Some((fsub, fdsn)) = linear.filter(|l| off >= l.0) {
                let n = readable.min(self.scratch.len() as u64) as usize;
                let got = sf.sub.recv(&mut self.scratch[..n]);
                s.deliver(fdsn + (off - fsub), &self.scratch[..got]);
                continue;
            }
            // Mapped bytes stop where the linear part starts.
            let readable = match linear {
                Some((fsub, _)) => readable.min(fsub - off),
                None => readable,
            };
            while sf.rx.front().is_some_and(|m| m.off + m.len <= off) {
                sf.rx.pop_front();
            }
            let Some(m) = sf.rx.front().copied().filter(|m| m.off <= off) else {
                break;
            };
            if s.checksum {
                if readable < m.off + m.len - off {
                    break;
                }
                let n = (m.off + m.len - off) as usize;
                let got = sf.sub.recv(&mut self.scratch[..n]);
                let ok = off != m.off
                    || m.csum.is_none_or(|c| {
                        let dsn = s.remote_idsn.wrapping_add(1).wrapping_add(m.dsn);
                        crypto::dss_checksum(
                            dsn,
                            (m.off + 1) as u32,
                            (m.len + u64::from(m.fin)) as u16,
                            &self.scratch[..got],
                        ) == c
                    });
                if !ok {
                    // A middlebox changed the payload (RFC 8684 3.7): with
                    // other subflows, reset this one (the peer reinjects on
                    // them what we never acknowledged at the data level);
                    // alone, drop the mapping and send MP_FAIL, to which
                    // the peer answers with an infinite mapping.
                    s.checksum_failures += 1;
                    sf.fail_pending = Some(s.remote_idsn.wrapping_add(1).wrapping_add(m.dsn));
                    if others_usable {
                        sf.rst_reason = Some(reset_reason::MIDDLEBOX_INTERFERENCE);
                        sf.close_reason = Some(SubflowCloseReason::Local);
                        sf.sub.abort();
                        break;
                    }
                    sf.sub.request_ack();
                    continue;
                }
                s.deliver(m.dsn + (off - m.off), &self.scratch[..got]);
            } else {
                let n = readable
                    .min(m.off + m.len - off)
                    .min(self.scratch.len() as u64) as usize;
                let got = sf.sub.recv(&mut self.scratch[..n]);
                s.deliver(m.dsn + (off - m.off), &self.scratch[..got]);
            }
        }
        if (s.fallback || s.rx_fb.is_some()) && sf.sub.is_read_closed() && s.peer_fin.is_none() {
            s.peer_fin = Some(s.rcv_nxt);
        }
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

    /// Queues the data-level ranges subflow `i` holds but the peer has not
    /// acknowledged, for sending on other subflows.
    fn reinject(&mut self, i: usize) {
        let others = self
            .sfs
            .iter()
            .enumerate()
            .any(|(j, f)| j != i && f.usable());
        let s = &mut self.s;
        let Some(sf) = self.sfs.get_mut(i) else {
            return;
        };
        let closed = sf.close_reason.is_some();
        if !others && !closed {
            return;
        }
        for m in sf.tx.iter_mut() {
            let end = m.dsn + m.len;
            if m.reinjected || end <= s.snd_una {
                continue;
            }
            m.reinjected = true;
            let start = m.dsn.max(s.snd_una);
            match s.reinject.back_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => s.reinject.push_back((start, end)),
            }
        }
        if closed {
            sf.tx.clear();
        }
    }

    fn run_pm(&mut self, now: Instant, keys: &mut KeySource) {
        let s = &self.s;
        if !s.pm_dirty
            || s.role != Role::Client
            || !s.established
            || s.fallback
            || s.subflows_closed
            || (s.close_requested && s.snd_una == s.snd_written)
            || s.reset
            || !self
                .sfs
                .iter()
                .any(|f| f.kind == Kind::Capable && f.mpc_confirmed)
        {
            return;
        }
        self.s.pm_dirty = false;
        let local: Vec<IpAddr> = self.s.locals.iter().map(|l| l.ip).collect();
        let remote: Vec<SocketAddr> = self.s.remotes.iter().map(|r| r.1).collect();
        let live: Vec<(IpAddr, SocketAddr)> = self
            .sfs
            .iter()
            .filter(|f| f.close_reason.is_none())
            .map(|f| (f.sub.tuple().local.ip(), f.sub.tuple().remote))
            .collect();
        self.pm_out.clear();
        self.pm.wanted(
            &PmView {
                local: &local,
                remote: &remote,
                subflows: &live,
            },
            &mut self.pm_out,
        );
        let reqs = std::mem::take(&mut self.pm_out);
        for r in &reqs {
            let _ = self.open_join(now, keys, r.local, None, r.remote);
        }
        self.pm_out = reqs;
    }

    /// Opens an MP_JOIN subflow (client role). `port` 0/None picks one.
    pub(crate) fn open_join(
        &mut self,
        now: Instant,
        keys: &mut KeySource,
        local: IpAddr,
        port: Option<u16>,
        remote: SocketAddr,
    ) -> Option<SubflowId> {
        let confirmed = self
            .sfs
            .iter()
            .any(|f| f.kind == Kind::Capable && f.mpc_confirmed);
        if self.s.fallback
            || !confirmed
            || !self.s.remote_key_known
            || self.live_subflows() >= self.s.max_subflows
        {
            return None;
        }
        let li = self.s.locals.iter().position(|l| l.ip == local)?;
        let path = self.s.locals[li].path;
        let port = match port {
            Some(p) if p != 0 => p,
            _ => {
                let p = self.s.next_port;
                self.s.next_port = p.wrapping_add(1).max(1024);
                p
            }
        };
        let remote_id = self
            .s
            .remotes
            .iter()
            .find(|r| r.1 == remote)
            .map_or(0, |r| r.0);
        let tuple = FourTuple {
            local: SocketAddr::new(local, port),
            remote,
        };
        if self
            .sfs
            .iter()
            .any(|f| f.sub.tuple() == tuple && !f.sub.is_closed())
        {
            return None;
        }
        let sub = Subflow::connect(&self.s.tcp, tuple, now);
        let kind = Kind::Join {
            local_nonce: keys.nonce(),
            remote_nonce: 0,
        };
        let i = self.add_sf(sub, path, kind, li as u8, remote_id);
        Some(self.sfs[i].id)
    }

    // ---- outgoing ----

    /// Pushes the aggregate of every usable subflow to coupled controllers
    /// (LIA, OLIA); uncoupled ones are left alone.
    fn couple(&mut self) {
        use crate::cc::{olia_alphas, CcAlgorithm, CouplingInfo, Olia, OliaPath};
        const MAX: usize = 64;
        let algo = self.s.tcp.congestion_control;
        if !matches!(algo, CcAlgorithm::Lia | CcAlgorithm::Olia) {
            return;
        }
        let mut paths = [OliaPath {
            cwnd: 0,
            srtt: Duration::ZERO,
            loss_interval: 0,
        }; MAX];
        let mut idx = [0usize; MAX];
        let mut n = 0;
        for (i, f) in self.sfs.iter_mut().enumerate() {
            if !f.usable() || n == MAX {
                continue;
            }
            let st = f.sub.stats();
            let loss_interval = f
                .sub
                .congestion_control_mut()
                .as_any_mut()
                .downcast_mut::<Olia>()
                .map_or(0, |o| o.loss_interval());
            paths[n] = OliaPath {
                cwnd: st.cwnd,
                srtt: st.srtt,
                loss_interval,
            };
            idx[n] = i;
            n += 1;
        }
        let mut info = CouplingInfo::from_subflows(paths[..n].iter().map(|p| (p.cwnd, p.srtt)));
        let mut alphas = [0f64; MAX];
        if algo == CcAlgorithm::Olia {
            olia_alphas(&paths[..n], &mut alphas[..n]);
        } else {
            alphas[..n].fill(info.lia_alpha());
        }
        for k in 0..n {
            info.path_alpha = alphas[k];
            self.sfs[idx[k]]
                .sub
                .congestion_control_mut()
                .on_coupling(&info);
        }
    }

    /// Hands queued data to subflows as the scheduler decides.
    fn schedule(&mut self, now: Instant) {
        self.couple();
        let s = &mut self.s;
        for sf in self.sfs.iter_mut() {
            let acked = sf.sub.acked_offset();
            if sf.stale && acked > sf.acked_at_rto {
                sf.stale = false;
            }
            while sf.tx.front().is_some_and(|m| m.off + m.len <= acked) {
                sf.tx.pop_front();
            }
        }
        let linear = if s.fallback { Some((0, 0, 0)) } else { s.tx_fb };
        if let Some((fi, fsub, fdsn)) = linear {
            if let Some(sf) = self.sfs.get_mut(fi) {
                let acked = sf.sub.acked_offset();
                if acked >= fsub {
                    s.snd_una = s.snd_una.max(fdsn + (acked - fsub)).min(s.snd_written);
                }
                while s.snd_nxt < s.snd_written {
                    let n = (s.snd_written - s.snd_nxt)
                        .min(sf.sub.send_space() as u64)
                        .min(self.scratch.len() as u64) as usize;
                    if n == 0 {
                        break;
                    }
                    s.snd_buf.read_at(s.snd_nxt, &mut self.scratch[..n]);
                    s.snd_nxt += sf.sub.send(&self.scratch[..n]) as u64;
                }
                if s.close_requested && s.snd_nxt == s.snd_written && !s.subflows_closed {
                    s.subflows_closed = true;
                    sf.sub.close();
                }
            }
            return;
        }
        while s.reinject.front().is_some_and(|r| r.1 <= s.snd_una) {
            s.reinject.pop_front();
        }
        if let Some(r) = s.reinject.front_mut() {
            r.0 = r.0.max(s.snd_una);
        }
        // Redundant: every usable subflow sends every byte, each from its
        // own cursor; the first copy to arrive counts.
        let redundant = self.sched.redundant();
        if redundant {
            loop {
                let limit = s.snd_written.min(s.peer_wnd_edge);
                let mut sent = false;
                for sf in self.sfs.iter_mut().filter(|f| f.usable()) {
                    let st = sf.sub.stats();
                    let queued = st.in_flight + sf.sub.unsent();
                    let mss = st.mss.max(1) as u64;
                    let room = (st.cwnd + mss)
                        .saturating_sub(queued)
                        .min(sf.sub.send_space() as u64);
                    let start = sf.red_next.max(s.snd_una);
                    let mut n = limit
                        .saturating_sub(start)
                        .min(room)
                        .min(MAX_MAPPING)
                        .min(self.scratch.len() as u64);
                    if n > mss {
                        n -= n % mss;
                    }
                    if n == 0 || (n < mss && limit - start > n) {
                        continue;
                    }
                    s.snd_buf.read_at(start, &mut self.scratch[..n as usize]);
                    let dsn_base = s.checksum.then(|| s.local_idsn.wrapping_add(1));
                    let m = sf.send_mapped(&self.scratch[..n as usize], start, dsn_base);
                    sf.red_next = start + m;
                    s.snd_nxt = s.snd_nxt.max(start + m);
                    sent |= m > 0;
                }
                if !sent {
                    break;
                }
            }
        }
        if !redundant {
            loop {
                let (start, avail, reinj) = match s.reinject.front() {
                    Some(&(a, b)) => (a, b - a, true),
                    None => {
                        let limit = s.snd_written.min(s.peer_wnd_edge);
                        (s.snd_nxt, limit.saturating_sub(s.snd_nxt), false)
                    }
                };
                if avail == 0 {
                    break;
                }
                self.views.clear();
                for sf in &self.sfs {
                    let mut v = SubflowView {
                        usable: sf.usable() && !sf.stale,
                        backup: sf.backup || sf.peer_backup,
                        ..Default::default()
                    };
                    if v.usable {
                        let st = sf.sub.stats();
                        let queued = st.in_flight + sf.sub.unsent();
                        v.srtt = st.srtt;
                        v.mss = st.mss;
                        v.queued = queued;
                        v.cwnd = st.cwnd;
                        // One segment beyond the window, so the subflow sees
                        // itself window-limited and its controller grows cwnd.
                        v.room = (st.cwnd + st.mss as u64)
                            .saturating_sub(queued)
                            .min(st.snd_wnd.saturating_sub(queued).max(if queued == 0 {
                                st.mss as u64
                            } else {
                                0
                            }))
                            .min(sf.sub.send_space() as u64);
                        if v.room < st.mss as u64 && v.room < avail {
                            v.room = 0;
                        }
                    }
                    self.views.push(v);
                }
                let Some(i) = self.sched.pick(&self.views) else {
                    break;
                };
                let mss = self.views[i].mss.max(1) as u64;
                let mut n = avail
                    .min(self.views[i].room)
                    .min(MAX_MAPPING)
                    .min(self.scratch.len() as u64);
                if n > mss && n < avail {
                    n -= n % mss;
                }
                if n == 0 {
                    break;
                }
                s.snd_buf.read_at(start, &mut self.scratch[..n as usize]);
                {
                    let sf = &mut self.sfs[i];
                    let dsn_base = s.checksum.then(|| s.local_idsn.wrapping_add(1));
                    let m = sf.send_mapped(&self.scratch[..n as usize], start, dsn_base);
                    if m == 0 {
                        continue;
                    }
                    if reinj {
                        sf.bytes_reinjected += m;
                    }
                }
                self.sched.sent(i, n);
                if reinj {
                    if let Some(r) = s.reinject.front_mut() {
                        r.0 += n;
                        if r.0 >= r.1 {
                            s.reinject.pop_front();
                        }
                    }
                } else {
                    s.snd_nxt += n;
                }
            }
        }
        if s.close_requested
            && !s.data_fin_acked
            && s.snd_nxt == s.snd_written
            && s.reinject.is_empty()
            && s.data_fin_deadline.is_none()
        {
            s.data_fin_deadline = Some(now);
        }
        if s.data_fin_deadline.is_some_and(|d| d <= now) && !s.data_fin_acked {
            let wait = DATA_FIN_TIMEOUT * (1 << s.data_fin_backoff.min(6));
            s.data_fin_backoff += 1;
            s.data_fin_deadline = Some(now + wait);
            for sf in self
                .sfs
                .iter_mut()
                .filter(|f| f.usable() || (f.fully && f.sub.is_established()))
            {
                sf.data_fin_pending = true;
                sf.sub.request_ack();
            }
        }
        // Both DATA_FINs done: close the subflows.
        let peer_done = s.peer_fin.is_some_and(|f| s.rcv_nxt >= f);
        if s.data_fin_acked && peer_done && !s.subflows_closed {
            s.subflows_closed = true;
            for sf in self.sfs.iter_mut() {
                sf.sub.close();
            }
        }
        if !s.add_addr.is_empty() || !s.echo_pending.is_empty() || s.remove_pending.is_some() {
            let due = s.echo_pending.len() + s.add_addr.iter().filter(|t| t.due).count();
            if due > 0 || s.remove_pending.is_some() {
                if let Some(sf) = self.sfs.iter_mut().find(|f| f.usable()) {
                    sf.sub.request_ack();
                }
            }
        }
    }

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

    fn options_out(s: &mut Shared, sf: &mut Sf, seg: &mut TcpRepr) {
        let f = seg.flags;
        let push = |seg: &mut TcpRepr, o: MptcpOption| {
            let _ = seg.options.mptcp.push(o);
        };
        if f.contains(TcpFlags::RST) {
            // As Linux: MP_FASTCLOSE (when we abort the connection), then
            // MP_TCPRST with the reason.
            if s.reset && !s.fast_closed && s.remote_key_known && !s.fallback {
                push(
                    seg,
                    MptcpOption::MpFastclose {
                        receiver_key: s.remote_key,
                    },
                );
            }
            let reason = sf
                .rst_reason
                .or((s.reset && !s.fallback).then_some(reset_reason::UNSPECIFIED));
            if let Some(r) = reason {
                push(
                    seg,
                    MptcpOption::MpTcpRst {
                        flags: 0,
                        reason: r,
                    },
                );
            }
            return;
        }
        let flags = MpCapable::FLAG_HMAC_SHA256
            | if s.checksum {
                MpCapable::FLAG_CHECKSUM
            } else {
                0
            };
        if f.contains(TcpFlags::SYN) {
            if s.fallback {
                return;
            }
            let synack = f.contains(TcpFlags::ACK);
            let o = match (sf.kind, synack) {
                (Kind::Capable, false) => MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags,
                    ..Default::default()
                }),
                (Kind::Capable, true) => MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags,
                    sender_key: Some(s.local_key),
                    ..Default::default()
                }),
                (Kind::Join { local_nonce, .. }, false) => MptcpOption::MpJoin(MpJoin::Syn {
                    backup: sf.backup,
                    addr_id: sf.local_id,
                    token: s.remote_token,
                    nonce: local_nonce,
                }),
                (
                    Kind::Join {
                        local_nonce,
                        remote_nonce,
                    },
                    true,
                ) => MptcpOption::MpJoin(MpJoin::SynAck {
                    backup: sf.backup,
                    addr_id: sf.local_id,
                    hmac: crypto::join_synack_hmac(
                        s.local_key,
                        s.remote_key,
                        local_nonce,
                        remote_nonce,
                    ),
                    nonce: local_nonce,
                }),
            };
            push(seg, o);
            return;
        }
        if s.fallback {
            return;
        }
        if let Some((_, fsub, fdsn)) = s.tx_fb {
            let off = sf.sub.send_offset_of(seg.seq);
            let data_ack = s.rx_fb.is_none().then(|| s.data_ack_abs());
            if !seg.payload.is_empty() && off.is_some_and(|o| o >= fsub) {
                // The infinite mapping on the first segment of the linear
                // part (and its retransmissions); nothing but a DATA_ACK
                // (while the peer's direction is mapped) on the others.
                let mapping = (off == Some(fsub)).then(|| DssMapping {
                    dsn: s.local_idsn.wrapping_add(1).wrapping_add(fdsn),
                    dsn_wide: true,
                    ssn: (fsub + 1) as u32,
                    data_len: 0,
                    checksum: s.checksum.then_some(0),
                });
                if mapping.is_some() || data_ack.is_some() {
                    let dss = Dss {
                        data_fin: false,
                        data_ack,
                        data_ack_wide: true,
                        mapping,
                    };
                    push(seg, MptcpOption::Dss(dss));
                }
                return;
            }
            if seg.payload.is_empty() && data_ack.is_none() {
                return;
            }
        }
        if sf.kind == Kind::Capable
            && s.role == Role::Client
            && !sf.mpc_confirmed
            && !seg.payload.is_empty()
            && sf
                .sub
                .send_offset_of(seg.seq)
                .is_some_and(|o| o < sf.tx.front().map_or(0, |m| m.len))
            && sf.tx.front().is_some_and(|m| m.off == 0)
        {
            // When data rides on the third ACK, this is that ACK: Linux falls
            // back to TCP on a data segment whose MP_CAPABLE lacks data_len.
            sf.third_ack_pending = false;
            let m = sf.tx[0];
            push(
                seg,
                MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags,
                    sender_key: Some(s.local_key),
                    receiver_key: Some(s.remote_key),
                    data_len: Some(m.len as u16),
                    checksum: s.checksum.then_some(m.csum),
                }),
            );
            return;
        }
        // Until the peer shows it has the handshake (any MPTCP option from
        // it), our pure ACKs repeat the third-ACK option, as Linux does: a
        // lost third ACK is recovered by the peer's SYN/ACK retransmission.
        let unconfirmed = s.role == Role::Client
            && seg.payload.is_empty()
            && match sf.kind {
                Kind::Capable => !sf.mpc_confirmed,
                Kind::Join { .. } => sf.join_ack_sent && !sf.fully,
            };
        if sf.third_ack_pending || unconfirmed {
            sf.third_ack_pending = false;
            let o = match sf.kind {
                Kind::Capable => MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags,
                    sender_key: Some(s.local_key),
                    receiver_key: Some(s.remote_key),
                    ..Default::default()
                }),
                Kind::Join {
                    local_nonce,
                    remote_nonce,
                } => {
                    sf.join_ack_sent = true;
                    MptcpOption::MpJoin(MpJoin::Ack {
                        hmac: crypto::join_ack_hmac(
                            s.local_key,
                            s.remote_key,
                            local_nonce,
                            remote_nonce,
                        ),
                    })
                }
            };
            push(seg, o);
            return;
        }
        if !s.remote_key_known {
            return;
        }
        if seg.payload.is_empty() && !f.contains(TcpFlags::FIN) {
            // Address signals ride alone on pure ACKs, as Linux does.
            if let Some((id, addr, port)) = s.echo_pending.pop() {
                push(
                    seg,
                    MptcpOption::AddAddr(AddAddr {
                        echo: true,
                        addr_id: id,
                        addr,
                        port,
                        hmac: None,
                    }),
                );
                return;
            }
            if let Some(t) = s.add_addr.iter_mut().find(|t| t.due) {
                t.due = false;
                let hmac = crypto::add_addr_hmac(s.local_key, s.remote_key, t.id, t.addr, None);
                push(
                    seg,
                    MptcpOption::AddAddr(AddAddr {
                        echo: false,
                        addr_id: t.id,
                        addr: t.addr,
                        port: None,
                        hmac: Some(hmac),
                    }),
                );
                return;
            }
            if let Some(id) = s.remove_pending.take() {
                if let Ok(ids) = AddrIds::from_slice(&[id]) {
                    push(seg, MptcpOption::RemoveAddr(ids));
                }
            }
            if sf.prio_pending {
                sf.prio_pending = false;
                push(
                    seg,
                    MptcpOption::MpPrio {
                        backup: sf.backup,
                        addr_id: None,
                    },
                );
            }
            if let Some(dsn) = sf.fail_pending.take() {
                push(seg, MptcpOption::MpFail { dsn });
            }
        }
        let mut dss = Dss {
            data_fin: false,
            data_ack: Some(s.data_ack_abs() & if s.peer_dsn64 { u64::MAX } else { 0xffff_ffff }),
            data_ack_wide: s.peer_dsn64,
            mapping: None,
        };
        if !seg.payload.is_empty() {
            let off = sf.sub.send_offset_of(seg.seq);
            let m = off.and_then(|o| {
                sf.tx
                    .iter()
                    .find(|m| m.off <= o && o < m.off + m.len)
                    .copied()
            });
            if let Some(m) = m {
                dss.mapping = Some(DssMapping {
                    dsn: s.local_idsn.wrapping_add(1).wrapping_add(m.dsn),
                    dsn_wide: true,
                    ssn: (m.off + 1) as u32,
                    data_len: m.len as u16,
                    checksum: s.checksum.then_some(m.csum),
                });
            }
        } else if sf.data_fin_pending && s.close_requested && !s.data_fin_acked {
            sf.data_fin_pending = false;
            let dsn = s.local_idsn.wrapping_add(1).wrapping_add(s.snd_written);
            dss.data_fin = true;
            dss.mapping = Some(DssMapping {
                dsn,
                dsn_wide: true,
                ssn: 0,
                data_len: 1,
                checksum: s.checksum.then(|| crypto::dss_checksum(dsn, 0, 1, &[])),
            });
        }
        push(seg, MptcpOption::Dss(dss));
        // The connection-level window, relative to the DATA_ACK.
        let free = s.rcv_free();
        let scaled = match sf.sub.negotiated().2 {
            Some((_, rcv_ws)) => free >> rcv_ws,
            None => free,
        };
        seg.window = seg.window.min(scaled.min(u16::MAX as u64) as u16);
        while seg.options.wire_len().map_or(true, |l| l > MAX_OPTIONS) && seg.options.sack.len > 0 {
            seg.options.sack.len -= 1;
        }
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

    pub fn send(&mut self, data: &[u8]) -> usize {
        let s = &mut self.s;
        if s.close_requested || s.reset {
            return 0;
        }
        let free = s.snd_buf.capacity() - (s.snd_written - s.snd_una);
        let n = (data.len() as u64).min(free) as usize;
        if n > 0 {
            s.snd_buf.write_at(s.snd_written, &data[..n]);
            s.snd_written += n as u64;
        }
        n
    }

    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        let s = &mut self.s;
        let n = (buf.len() as u64).min(s.rcv_nxt - s.rcv_read) as usize;
        if n == 0 {
            return 0;
        }
        let before = s.rcv_free();
        s.rcv_buf.read_at(s.rcv_read, &mut buf[..n]);
        s.rcv_read += n as u64;
        let cap = s.rcv_buf.capacity();
        if before < cap / 2 && s.rcv_free() >= cap / 2 {
            if let Some(sf) = self.sfs.iter_mut().find(|f| f.usable()) {
                sf.sub.request_ack();
            }
        }
        n
    }

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

    pub fn subflow_stats(&self, id: SubflowId) -> Option<SubflowStatistics> {
        let f = &self.sfs[self.find(id)?];
        let st = f.sub.stats();
        Some(SubflowStatistics {
            cwnd: st.cwnd,
            ssthresh: st.ssthresh,
            srtt: st.srtt,
            rttvar: st.rttvar,
            rto: st.rto,
            bytes_sent: st.bytes_sent,
            bytes_acked: st.bytes_acked,
            bytes_retransmitted: st.bytes_retransmitted,
            bytes_received: st.bytes_received,
            retransmits: st.retransmits,
            bytes_reinjected: f.bytes_reinjected,
        })
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

impl Shared {
    /// Server: the ADD_ADDRs for our "signal" addresses.
    fn queue_signals(&mut self, now: Instant) {
        for (id, l) in self.locals.iter().enumerate().skip(1) {
            if l.signal && !self.add_addr.iter().any(|t| t.id == id as u8) {
                self.add_addr.push(AddAddrTx {
                    id: id as u8,
                    addr: l.ip,
                    deadline: now + self.add_addr_timeout,
                    tries: 0,
                    due: true,
                });
            }
        }
    }

    fn remove_pending_ids_from_peer(&mut self, id: u8) {
        self.peer_removed.push(id);
    }
}
