//! The state machine of one TCP subflow (RFC 9293), with SACK-based loss
//! recovery (RFC 2018, RFC 6675), RTO (RFC 6298), window scaling and
//! timestamps (RFC 7323), delayed ACKs, zero-window probing and RFC 5961
//! checks. Sans-IO: segments and time come in; segments come out by polling.

use super::{initial_sequence, Config, FourTuple, RangeSet, Ring, RttEstimator, State};
use crate::cc::{AckEvent, CongestionControl};
use crate::time::{Instant, TimerName, Timers};
use crate::wire::tcp::{TcpFlags, TcpOptions, TcpRepr, Timestamps};
use std::collections::VecDeque;
use std::time::Duration;

/// Extra range slots beyond one per two segments of buffer (the worst case
/// of every other segment missing).
const RANGE_SLACK: usize = 16;
/// Pending application events before the oldest is dropped.
const EVENT_QUEUE: usize = 16;
const DUP_THRESH: u64 = 3;
const MAX_WINDOW_SHIFT: u8 = 14;
/// RFC 9293's default when the peer sends no MSS option.
const DEFAULT_PEER_MSS: u16 = 536;
const TIMESTAMP_OPTION_LEN: usize = 12;
const MAX_OPTION_LEN: usize = 40;
/// Retransmissions watched for a second loss; beyond that, the RTO repairs.
const RTX_LOG: usize = 1024;
/// Duplicate ACKs sent back to back at most, per batch of arrivals.
const MAX_ACKS_OWED: u8 = 8;

/// Writes the send stream's bytes from an offset into a segment's payload
/// ([`Subflow::poll_transmit_with`]).
pub type Fill<'a> = &'a mut dyn FnMut(u64, &mut [u8]);

/// A data segment to emit: where it starts, its length, whether it carries
/// the FIN and whether it is a retransmission.
struct DataSeg {
    start: u64,
    len: usize,
    fin: bool,
    retransmit: bool,
}

impl DataSeg {
    fn new(start: u64, len: u64, fin: bool, retransmit: bool) -> DataSeg {
        DataSeg {
            start,
            len: len as usize,
            fin,
            retransmit,
        }
    }
}

/// Why a subflow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both FINs exchanged and acknowledged.
    Normal,
    /// The peer sent an acceptable RST.
    Reset,
    /// The peer answered our SYN with RST.
    Refused,
    /// Too many retransmission timeouts.
    TimedOut,
    /// This side aborted (sent RST).
    Aborted,
}

/// What happened to a subflow, for the layer above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubflowEvent {
    Established,
    /// The peer's FIN arrived in order.
    PeerClosed,
    RetransmissionTimeout,
    Closed(CloseReason),
}

/// What `on_segment` did with a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Processed (possibly only its ACK, or partly trimmed).
    Accepted,
    /// Discarded (out of window, PAWS, bad ACK, no connection); an ACK or
    /// RST may have been queued in answer.
    Dropped,
}

/// The subflow's timers, one deadline each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubflowTimer {
    /// Retransmission (RFC 6298), or, with a zero window and nothing in
    /// flight, the persist probe: one slot, as in Linux, since the two
    /// never run at once and share the backoff.
    Retransmit,
    /// Delayed ACK.
    DelayedAck,
    /// TIME_WAIT's end.
    TimeWait,
    /// Loss held back by the reordering window (RACK-style).
    Reorder,
}

impl TimerName for SubflowTimer {
    const ALL: &'static [SubflowTimer] = &[
        SubflowTimer::Retransmit,
        SubflowTimer::DelayedAck,
        SubflowTimer::TimeWait,
        SubflowTimer::Reorder,
    ];
    fn slot(self) -> usize {
        self as usize
    }
}

/// Window scale shifts (RFC 7323): the peer's windows are shifted left by
/// `send`, ours right by `recv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowScale {
    pub send: u8,
    pub recv: u8,
}

/// Per-subflow statistics (what `ss -i` shows, and what the MPTCP
/// subflow-control API exposes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubflowStats {
    pub cwnd: u64,
    pub ssthresh: u64,
    pub srtt: Duration,
    pub rttvar: Duration,
    pub min_rtt: Duration,
    pub rto: Duration,
    pub mss: u32,
    pub in_flight: u64,
    pub snd_wnd: u64,
    pub rcv_wnd: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_retransmitted: u64,
    /// Payload bytes received in order.
    pub bytes_received: u64,
    pub segments_sent: u64,
    pub segments_received: u64,
    pub retransmits: u64,
    pub fast_recoveries: u64,
    pub timeouts: u64,
    /// Data-level bytes this subflow carried for another one that failed or
    /// stalled (set by the MPTCP connection; 0 for plain TCP).
    pub bytes_reinjected: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    /// Fast recovery after SACK or duplicate-ACK loss detection.
    Fast,
    /// Loss state after a retransmission timeout; the window regrows by
    /// slow start while the holes are resent.
    Timeout,
}

#[derive(Clone, Copy, Debug)]
struct SendTime {
    start: u64,
    end: u64,
    at: Instant,
}

/// One TCP subflow. See the module docs.
#[derive(Debug)]
pub struct Subflow {
    cfg: Config,
    tuple: FourTuple,
    state: State,
    close_reason: Option<CloseReason>,

    // Send side; sequence numbers relative to `iss`.
    iss: u32,
    snd_una: u64,
    snd_max: u64,
    snd_wnd: u64,
    max_snd_wnd: u64,
    snd_wl1: u64,
    snd_wl2: u64,
    snd_wscale: u8,
    peer_mss: u16,
    send_buf: Ring,
    /// Data bytes the application has written in total.
    send_written: u64,
    /// Relative sequence number of our FIN, once the application closed.
    fin_seq: Option<u64>,
    syn_pending: bool,
    syn_sent_at: Option<Instant>,
    syn_retransmitted: bool,

    // Loss recovery (RFC 6675 scoreboard).
    sacked: RangeSet,
    /// Unsacked bytes below this are deemed lost.
    lost_edge: u64,
    /// Lost bytes below this were already retransmitted in this episode.
    high_rxt: u64,
    recovery: Option<(Recovery, u64)>,
    dupacks: u64,
    /// Loss edge held back by the reordering window (applied when the
    /// Reorder timer fires).
    pending_lost_edge: u64,
    // Proportional rate reduction (RFC 6937) during fast recovery.
    prr_delivered: u64,
    prr_out: u64,
    prr_recover_fs: u64,
    /// Bytes fast recovery may send until the next ACK.
    prr_budget: u64,
    /// End of the highest range ever retransmitted (Karn's rule).
    rtx_high: u64,
    /// Retransmissions in flight: (start, end, snd_max when sent).
    rtx_log: VecDeque<(u64, u64, u64, Instant)>,
    /// Retransmitted ranges found lost again, to resend first.
    relost: RangeSet,
    send_times: VecDeque<SendTime>,
    /// Round-trip counter for congestion control and where this round ends.
    round: u64,
    round_end: u64,
    cwnd_blocked_at: Option<Instant>,

    // Receive side; sequence numbers relative to `irs`.
    irs: u32,
    rcv_nxt: u64,
    recv_buf: Ring,
    /// Data bytes the application has read in total.
    read_pos: u64,
    ooo: RangeSet,
    last_ooo_start: u64,
    /// Highest right window edge advertised (never shrinks).
    rcv_adv_edge: u64,
    rcv_wscale: u8,
    /// Our window scale, offered in the SYN.
    our_wscale: u8,
    /// Both SYNs carried the window scale option.
    wscale_ok: bool,
    rcv_fin: Option<u64>,
    rcv_mss: u64,
    last_ack_sent: u64,
    /// Direct receive (MPTCP): in-order data may bypass `recv_buf` up to
    /// this stream offset (0: off), when nothing waits in the ring; the
    /// layer above copies it from the segment to where it belongs.
    direct_limit: u64,
    /// What `on_segment` took that way: the stream offset and the range of
    /// the segment's payload.
    direct_taken: Option<(u64, std::ops::Range<usize>)>,

    // Options.
    sack_ok: bool,
    ts_ok: bool,
    ts_recent: u32,
    ts_offset: u32,

    // Timers.
    rtt: RttEstimator,
    backoff: u32,
    retries: u32,
    timers: Timers<SubflowTimer, 4>,
    /// When snd_una last advanced, or data went out with nothing in flight.
    progress_at: Instant,
    ack_now: bool,
    /// ACKs owed for out-of-order or duplicate segments: one each, so a
    /// batch of arrivals still yields the duplicate ACKs a sender counts.
    acks_owed: u8,
    window_update: bool,
    probe_pending: bool,
    quickack_left: u32,
    /// A RST to send: (seq, ack, with ACK flag).
    pending_rst: Option<(u32, u32, bool)>,
    /// Extra option bytes the layer above will add to every segment.
    option_reserve: usize,
    /// Option bytes the layer above adds to pure ACKs (bounds SACK blocks).
    ack_option_reserve: usize,
    /// Relative sequence numbers where an upper-layer record (an MPTCP DSS
    /// mapping) ends: no segment, new or retransmitted, crosses one.
    boundaries: VecDeque<u64>,

    cc: Box<dyn CongestionControl>,
    stats: SubflowStats,
    events: VecDeque<SubflowEvent>,
}

fn window_shift_for(capacity: usize) -> u8 {
    let mut shift = 0;
    while shift < MAX_WINDOW_SHIFT && (capacity >> shift) > u16::MAX as usize {
        shift += 1;
    }
    shift
}

impl Subflow {
    fn new(cfg: &Config, tuple: FourTuple, now: Instant) -> Subflow {
        let (iss, ts_offset) = initial_sequence(&cfg.isn_secret, &tuple.local, &tuple.remote, now);
        let our_wscale = if cfg.window_scaling {
            window_shift_for(cfg.recv_buffer)
        } else {
            0
        };
        let mss = cfg.mss as u32;
        Subflow {
            cfg: cfg.clone(),
            tuple,
            state: State::Closed,
            close_reason: None,
            iss,
            snd_una: 0,
            snd_max: 0,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: 0,
            snd_wl2: 0,
            snd_wscale: 0,
            peer_mss: DEFAULT_PEER_MSS,
            send_buf: Ring::new(cfg.send_buffer),
            send_written: 0,
            fin_seq: None,
            syn_pending: false,
            syn_sent_at: None,
            syn_retransmitted: false,
            sacked: RangeSet::with_capacity(
                cfg.send_buffer / (2 * mss.max(64) as usize) + RANGE_SLACK,
            ),
            lost_edge: 0,
            high_rxt: 0,
            recovery: None,
            dupacks: 0,
            pending_lost_edge: 0,
            prr_delivered: 0,
            prr_out: 0,
            prr_recover_fs: 0,
            prr_budget: 0,
            rtx_high: 0,
            rtx_log: VecDeque::new(),
            relost: RangeSet::with_capacity(RTX_LOG),
            send_times: VecDeque::new(),
            cwnd_blocked_at: None,
            round: 0,
            round_end: 0,
            irs: 0,
            rcv_nxt: 0,
            recv_buf: Ring::new(cfg.recv_buffer),
            read_pos: 0,
            ooo: RangeSet::with_capacity(
                cfg.recv_buffer / (2 * mss.max(64) as usize) + RANGE_SLACK,
            ),
            last_ooo_start: 0,
            rcv_adv_edge: 0,
            rcv_wscale: 0,
            our_wscale,
            wscale_ok: false,
            rcv_fin: None,
            rcv_mss: DEFAULT_PEER_MSS as u64,
            last_ack_sent: 0,
            direct_limit: 0,
            direct_taken: None,
            sack_ok: false,
            ts_ok: false,
            ts_recent: 0,
            ts_offset,
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            backoff: 0,
            retries: 0,
            timers: Timers::new(),
            progress_at: Instant::ZERO,
            ack_now: false,
            acks_owed: 0,
            window_update: false,
            probe_pending: false,
            quickack_left: 0,
            pending_rst: None,
            option_reserve: cfg.option_reserve as usize,
            ack_option_reserve: cfg.option_reserve as usize,
            boundaries: VecDeque::new(),
            cc: cfg
                .congestion_control
                .build(mss, cfg.initial_window_segments),
            stats: SubflowStats::default(),
            events: VecDeque::new(),
        }
    }

    /// Active open: the subflow will send a SYN at the next `poll_transmit`.
    pub fn connect(cfg: &Config, tuple: FourTuple, now: Instant) -> Subflow {
        let mut s = Subflow::new(cfg, tuple, now);
        s.state = State::SynSent;
        s.syn_pending = true;
        s
    }

    /// Passive open from a received SYN (the caller's listener matched it).
    /// Returns `None` when `syn` is not a plain SYN.
    pub fn accept(cfg: &Config, tuple: FourTuple, now: Instant, syn: &TcpRepr) -> Option<Subflow> {
        let f = syn.flags;
        if !f.contains(TcpFlags::SYN) || f.contains(TcpFlags::ACK) || f.contains(TcpFlags::RST) {
            return None;
        }
        let mut s = Subflow::new(cfg, tuple, now);
        s.state = State::SynReceived;
        s.irs = syn.seq;
        s.rcv_nxt = 1;
        s.apply_syn_options(&syn.options);
        // The SYN's window is never scaled.
        s.snd_wnd = syn.window as u64;
        s.max_snd_wnd = s.snd_wnd;
        s.syn_pending = true;
        s.stats.segments_received = 1;
        let len = syn.payload.len() as u64;
        if cfg.accept_syn_data && len > 0 && len <= s.recv_buf.capacity() {
            // The SYN's data is in-order data at offset 0; the SYN/ACK
            // acknowledges it.
            s.recv_buf.write_at(0, syn.payload);
            s.rcv_nxt = 1 + len;
            s.stats.bytes_received += len;
        }
        Some(s)
    }

    /// Replaces the congestion controller (e.g. with a coupled one).
    pub fn set_congestion_control(&mut self, mut cc: Box<dyn CongestionControl>) {
        cc.set_mss(self.sender_mss());
        self.cc = cc;
    }

    pub fn congestion_control(&self) -> &dyn CongestionControl {
        self.cc.as_ref()
    }

    pub fn congestion_control_mut(&mut self) -> &mut dyn CongestionControl {
        self.cc.as_mut()
    }

    /// Option bytes the layer above will add to each segment (MPTCP DSS);
    /// segment payloads shrink so the total stays within the MSS.
    pub fn set_option_reserve(&mut self, bytes: u8) {
        self.option_reserve = (bytes as usize).min(MAX_OPTION_LEN);
        self.ack_option_reserve = self.option_reserve;
        self.cc.set_mss(self.sender_mss());
    }

    /// Option bytes the layer above adds to segments without payload
    /// (MPTCP's DATA_ACK is shorter than a full DSS); only the number of
    /// SACK blocks depends on it. The layer above trims SACK blocks from
    /// data segments whose options would not fit.
    pub fn set_ack_option_reserve(&mut self, bytes: u8) {
        self.ack_option_reserve = (bytes as usize).min(MAX_OPTION_LEN);
    }

    /// Ends the current upper-layer record at the bytes queued so far: later
    /// segments never mix bytes from both sides of this point (an MPTCP DSS
    /// mapping must cover each segment whole).
    pub fn mark_send_boundary(&mut self) {
        let b = 1 + self.send_written;
        if self.boundaries.back() != Some(&b) && b > self.snd_una {
            self.boundaries.push_back(b);
        }
    }

    fn clamp_to_boundary(&self, start: u64, len: u64) -> u64 {
        let i = self.boundaries.partition_point(|&b| b <= start);
        match self.boundaries.get(i) {
            Some(&b) => len.min(b - start),
            None => len,
        }
    }

    /// Replaces the initial send sequence number before the SYN (or
    /// SYN/ACK) goes out. Only for replaying captured conversations
    /// (conformance tests); production ISNs come from `Config::isn_secret`.
    #[doc(hidden)]
    /// Our initial sequence number chosen from outside (a SYN cookie),
    /// before anything was sent.
    pub(crate) fn set_initial_send_seq(&mut self, iss: u32) {
        if self.snd_max == 0 {
            self.iss = iss;
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub fn set_initial_send_seq_for_replay(&mut self, iss: u32) {
        if self.snd_max == 0 {
            self.iss = iss;
        }
    }

    pub fn tuple(&self) -> FourTuple {
        self.tuple
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }
    pub fn is_established(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait
        )
    }
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }
    /// The peer's FIN arrived and every byte before it was read.
    pub fn is_read_closed(&self) -> bool {
        self.rcv_fin.is_some_and(|f| self.rcv_nxt > f) && self.readable() == 0
    }
    /// Whether SACK, timestamps and window scaling were negotiated.
    pub fn negotiated(&self) -> (bool, bool, Option<(u8, u8)>) {
        let ws = self.wscale_ok.then_some((self.snd_wscale, self.rcv_wscale));
        (self.sack_ok, self.ts_ok, ws)
    }
    /// The window scale shifts, when negotiated (RFC 7323).
    pub fn window_scale(&self) -> Option<WindowScale> {
        self.wscale_ok.then_some(WindowScale {
            send: self.snd_wscale,
            recv: self.rcv_wscale,
        })
    }
    pub fn initial_send_seq(&self) -> u32 {
        self.iss
    }
    pub fn initial_recv_seq(&self) -> u32 {
        self.irs
    }

    pub fn poll_event(&mut self) -> Option<SubflowEvent> {
        self.events.pop_front()
    }

    fn push_event(&mut self, e: SubflowEvent) {
        if self.events.len() == EVENT_QUEUE {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    pub fn stats(&self) -> SubflowStats {
        let mut s = self.stats.clone();
        s.cwnd = self.cc.window();
        s.ssthresh = self.cc.ssthresh();
        s.srtt = self.rtt.srtt();
        s.rttvar = self.rtt.rttvar();
        s.min_rtt = self.rtt.min_rtt();
        s.rto = self.rtt.backed_off(self.backoff);
        s.mss = self.sender_mss();
        s.in_flight = self.pipe();
        s.snd_wnd = self.snd_wnd;
        s.rcv_wnd = self.rcv_adv_edge.saturating_sub(self.rcv_nxt);
        s
    }

    // ---- application side ----

    /// Free bytes in the send buffer.
    pub fn send_space(&self) -> usize {
        if self.fin_seq.is_some() || !self.can_queue() {
            return 0;
        }
        let queued = self.send_written - self.acked_data();
        (self.send_buf.capacity() - queued) as usize
    }

    fn can_queue(&self) -> bool {
        matches!(
            self.state,
            State::SynSent | State::SynReceived | State::Established | State::CloseWait
        )
    }

    /// Queues bytes for sending; returns how many fitted.
    pub fn send(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.send_space());
        if n > 0 {
            self.send_buf.write_at(self.send_written, &data[..n]);
            self.send_written += n as u64;
        }
        n
    }

    /// Queues `len` bytes without copying them: the layer above keeps them
    /// and fills each segment's payload ([`Subflow::poll_transmit_with`]).
    /// Returns how many fitted. Never mixed with [`Subflow::send`].
    pub fn send_external(&mut self, len: usize) -> usize {
        let n = len.min(self.send_space());
        self.send_written += n as u64;
        n
    }

    /// Stream offset (0-based) of the next byte `send` will queue; MPTCP maps
    /// data sequence numbers to subflow sequence numbers with it.
    pub fn send_offset(&self) -> u64 {
        self.send_written
    }

    /// Caps the backed-off retransmission timeout (see [`RttEstimator::set_backoff_cap`]);
    /// a pending timer is pulled in to `now + cap` at most.
    pub fn set_backoff_cap(&mut self, now: Instant, cap: Option<Duration>) {
        self.rtt.set_backoff_cap(cap);
        if let (Some(d), Some(c)) = (self.timers.get(SubflowTimer::Retransmit), cap) {
            self.timers
                .arm(SubflowTimer::Retransmit, d.min(now + c.max(self.rtt.rto())));
        }
    }

    /// Bytes sent and not yet acknowledged.
    pub fn outstanding(&self) -> u64 {
        self.snd_max.saturating_sub(self.snd_una)
    }

    /// Retransmits now (its path came back): a pending retransmission timer
    /// is pulled in to `now`.
    pub fn probe_now(&mut self, now: Instant) {
        if let Some(d) = self.timers.get(SubflowTimer::Retransmit) {
            self.timers.arm(SubflowTimer::Retransmit, d.min(now));
        }
    }

    /// Since when data has been in flight without any of it acknowledged
    /// (`None` when nothing is in flight).
    pub fn unacked_since(&self) -> Option<Instant> {
        (self.snd_max > self.snd_una && self.is_synchronized()).then_some(self.progress_at)
    }

    /// The retransmission timeout before backoff, and the smoothed RTT.
    pub fn rto_srtt(&self) -> (Duration, Duration) {
        (self.rtt.rto(), self.rtt.srtt())
    }

    /// Stream offset (0-based) up to which the peer acknowledged data; the
    /// bytes from here to `send_offset` may still need sending (reinjection
    /// on another subflow when this one fails).
    /// An ACK or a RST waits to go out (in TIME_WAIT: the ACK of the
    /// peer's FIN, which must leave before the subflow is forgotten).
    pub fn owes_segment(&self) -> bool {
        self.pending_rst.is_some() || self.ack_now || self.acks_owed > 0
    }

    pub fn acked_offset(&self) -> u64 {
        self.acked_data()
    }

    /// Bytes queued but never sent.
    pub fn unsent(&self) -> u64 {
        (1 + self.send_written).saturating_sub(self.snd_max.max(1))
    }

    /// Stream offset (0-based) of the next byte `recv` returns.
    pub fn recv_offset(&self) -> u64 {
        self.read_pos
    }

    /// In-order bytes ready to read.
    pub fn readable(&self) -> usize {
        (self.delivered_end() - self.read_pos) as usize
    }

    /// Data bytes received in order (stream offset just past the last one).
    fn delivered_end(&self) -> u64 {
        let end = self.rcv_nxt.saturating_sub(1);
        match self.rcv_fin {
            Some(f) if self.rcv_nxt > f => end - 1,
            _ => end,
        }
    }

    /// Reads in-order bytes.
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.readable());
        if n == 0 {
            return 0;
        }
        self.recv_buf.read_at(self.read_pos, &mut buf[..n]);
        self.consume(n)
    }

    /// Drops up to `max` in-order bytes as if read, without copying them.
    pub fn consume(&mut self, max: usize) -> usize {
        let n = max.min(self.readable());
        if n == 0 {
            return 0;
        }
        self.recv_buf.release(self.read_pos + n as u64);
        self.read_pos += n as u64;
        // Tell a sender we throttled that room opened up.
        let cap = self.recv_buf.capacity();
        let adv = self.rcv_adv_edge.saturating_sub(self.rcv_nxt);
        let possible = (1 + self.read_pos + cap).saturating_sub(self.rcv_nxt);
        let mss = self.rcv_mss;
        if self.is_established() && adv < cap / 2 && possible >= adv + 2 * mss {
            self.window_update = true;
        }
        n
    }

    /// Lets the next `on_segment` hand in-order data up to stream offset
    /// `limit` to the layer above instead of storing it (0: store all).
    /// Taken only while nothing is readable, so the stream stays in order.
    pub fn set_direct_limit(&mut self, limit: u64) {
        self.direct_limit = limit;
        self.direct_taken = None;
    }

    /// The data the last `on_segment` handed up: its stream offset and the
    /// range of the segment's payload. It counts as received and read.
    pub fn take_direct(&mut self) -> Option<(u64, std::ops::Range<usize>)> {
        self.direct_limit = 0;
        self.direct_taken.take()
    }

    /// Sends FIN once everything queued is sent.
    pub fn close(&mut self) {
        match self.state {
            // Nothing queued: nothing to deliver (RFC 9293 3.10.4).
            State::SynSent if self.send_written == 0 => self.enter_closed(CloseReason::Normal),
            // Queued data goes out after the handshake, then the FIN.
            State::SynSent | State::SynReceived => self.fin_seq = Some(1 + self.send_written),
            State::Established => {
                self.fin_seq = Some(1 + self.send_written);
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.fin_seq = Some(1 + self.send_written);
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Aborts with a RST.
    pub fn abort(&mut self) {
        if !matches!(self.state, State::Closed | State::SynSent | State::TimeWait) {
            let seq = self.iss.wrapping_add(self.snd_max as u32);
            let ack = self.irs.wrapping_add(self.rcv_nxt as u32);
            self.pending_rst = Some((seq, ack, true));
        }
        self.enter_closed(CloseReason::Aborted);
    }

    fn enter_closed(&mut self, reason: CloseReason) {
        if self.state == State::Closed && self.close_reason.is_some() {
            return;
        }
        self.state = State::Closed;
        self.close_reason = Some(reason);
        self.timers.stop_all();
        self.push_event(SubflowEvent::Closed(reason));
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.timers.stop(SubflowTimer::Retransmit);
        self.timers
            .arm(SubflowTimer::TimeWait, now + self.cfg.time_wait);
    }

    // ---- sequence helpers ----

    fn acked_data(&self) -> u64 {
        self.snd_una.saturating_sub(1).min(self.send_written)
    }

    /// Relative send sequence of a wire ACK number (negative: before the ISS).
    fn snd_rel(&self, wire: u32) -> i64 {
        let base = self.iss.wrapping_add(self.snd_una as u32);
        self.snd_una as i64 + wire.wrapping_sub(base) as i32 as i64
    }

    fn rcv_rel(&self, wire: u32) -> i64 {
        let base = self.irs.wrapping_add(self.rcv_nxt as u32);
        self.rcv_nxt as i64 + wire.wrapping_sub(base) as i32 as i64
    }

    fn ts_now(&self, now: Instant) -> u32 {
        ((now.as_nanos() / 1_000_000) as u32).wrapping_add(self.ts_offset)
    }

    /// Payload bytes of a full segment carrying only our usual options.
    pub fn sender_mss(&self) -> u32 {
        let mss = self.peer_mss.min(self.cfg.mss) as usize;
        let opts = if self.ts_ok { TIMESTAMP_OPTION_LEN } else { 0 } + self.option_reserve;
        mss.saturating_sub(opts).max(64) as u32
    }

    fn sack_block_limit(&self) -> usize {
        if !self.sack_ok {
            return 0;
        }
        let used = if self.ts_ok { TIMESTAMP_OPTION_LEN } else { 0 } + self.ack_option_reserve;
        // NOP, NOP, kind, length, then 8 bytes per block.
        MAX_OPTION_LEN.saturating_sub(used + 4) / 8
    }

    /// TCP option bytes the next data segment will carry (timestamps, SACK
    /// blocks, the upper layer's reserve); a driver sizing payload room
    /// into a frame of fixed size subtracts this and the fixed headers.
    pub fn option_space_needed(&self) -> usize {
        let ts = if self.ts_ok { TIMESTAMP_OPTION_LEN } else { 0 };
        let blocks = self.sack_blocks_to_send();
        let sack = if blocks > 0 { 4 + 8 * blocks } else { 0 };
        (ts + sack + self.option_reserve).min(MAX_OPTION_LEN)
    }

    /// Stream offset (0-based) of the byte a sent segment's sequence number
    /// names, for mapping segments to MPTCP data sequence numbers.
    pub fn send_offset_of(&self, seq: u32) -> Option<u64> {
        let rel = self.snd_rel(seq);
        (rel >= 1).then(|| rel as u64 - 1)
    }

    /// Stream offset (0-based) of the byte a received segment's sequence
    /// number names (valid once the peer's SYN was seen).
    pub fn recv_offset_of(&self, seq: u32) -> Option<u64> {
        let rel = self.rcv_rel(seq);
        (self.rcv_nxt > 0 && rel >= 1).then(|| rel as u64 - 1)
    }

    /// Everything the peer sent before sequence number `end` has arrived,
    /// with no hole: a segment from the peer ending there (a pure ACK
    /// carries its next sequence number) shows it lost nothing.
    pub fn received_all_before(&self, end: u32) -> bool {
        self.rcv_nxt > 0 && self.ooo.is_empty() && self.rcv_rel(end) <= self.rcv_nxt as i64
    }

    /// Makes the next `poll_transmit` produce an ACK even with nothing else
    /// to say (an upper layer has options to signal, e.g. a DATA_ACK).
    pub fn request_ack(&mut self) {
        if self.is_synchronized() {
            self.ack_now = true;
        }
    }

    fn sack_blocks_to_send(&self) -> usize {
        self.ooo.len().min(self.sack_block_limit())
    }

    // ---- incoming segments ----

    /// Processes one segment addressed to this subflow.
    pub fn on_segment(&mut self, now: Instant, seg: &TcpRepr) -> Verdict {
        self.stats.segments_received += 1;
        match self.state {
            State::Closed => {
                self.queue_rst_for(seg);
                Verdict::Dropped
            }
            State::SynSent => self.on_segment_syn_sent(now, seg),
            _ => self.on_segment_synchronized(now, seg),
        }
    }

    /// RFC 9293's reset generation for a segment that has no place here.
    fn queue_rst_for(&mut self, seg: &TcpRepr) {
        if seg.flags.contains(TcpFlags::RST) {
            return;
        }
        if seg.flags.contains(TcpFlags::ACK) {
            self.pending_rst = Some((seg.ack, 0, false));
        } else {
            let len = seg.payload.len() as u32
                + seg.flags.contains(TcpFlags::SYN) as u32
                + seg.flags.contains(TcpFlags::FIN) as u32;
            self.pending_rst = Some((0, seg.seq.wrapping_add(len), true));
        }
    }

    fn apply_syn_options(&mut self, opts: &TcpOptions) {
        self.peer_mss = opts.mss.filter(|&m| m > 0).unwrap_or(DEFAULT_PEER_MSS);
        match opts.window_scale {
            Some(ws) if self.cfg.window_scaling => {
                self.wscale_ok = true;
                self.snd_wscale = ws.min(MAX_WINDOW_SHIFT);
                self.rcv_wscale = self.our_wscale;
            }
            _ => {
                self.wscale_ok = false;
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        self.sack_ok = self.cfg.sack && opts.sack_permitted;
        self.ts_ok = false;
        if let (Some(ts), true) = (opts.timestamps, self.cfg.timestamps) {
            self.ts_ok = true;
            self.ts_recent = ts.tsval;
        }
        self.cc.set_mss(self.sender_mss());
    }

    fn become_established(&mut self) {
        self.state = if self.fin_seq.is_some() {
            State::FinWait1
        } else {
            State::Established
        };
        self.quickack_left = self.cfg.quickack_segments;
        self.backoff = 0;
        self.retries = 0;
        self.push_event(SubflowEvent::Established);
    }

    fn on_segment_syn_sent(&mut self, now: Instant, seg: &TcpRepr) -> Verdict {
        let f = seg.flags;
        let has_ack = f.contains(TcpFlags::ACK);
        // Our SYN must have gone out (snd_max > 0): a SYN/ACK for a SYN
        // still queued would leave snd_una ahead of snd_max.
        let ack_ok = has_ack && self.snd_max > 0 && seg.ack == self.iss.wrapping_add(1);
        if has_ack && !ack_ok {
            self.queue_rst_for(seg);
            return Verdict::Dropped;
        }
        if f.contains(TcpFlags::RST) {
            if ack_ok {
                self.enter_closed(CloseReason::Refused);
                return Verdict::Accepted;
            }
            return Verdict::Dropped;
        }
        if !f.contains(TcpFlags::SYN) {
            return Verdict::Dropped;
        }
        self.irs = seg.seq;
        self.rcv_nxt = 1;
        self.apply_syn_options(&seg.options);
        if !ack_ok {
            // Simultaneous open.
            self.state = State::SynReceived;
            self.syn_pending = true;
            self.snd_wnd = seg.window as u64;
            return Verdict::Accepted;
        }
        self.snd_una = 1;
        self.snd_wnd = seg.window as u64;
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = 0;
        self.snd_wl2 = 1;
        if let Some(r) = self.handshake_rtt(now, seg) {
            self.rtt.on_sample(r);
        }
        self.timers.stop(SubflowTimer::Retransmit);
        self.become_established();
        self.ack_now = true;
        Verdict::Accepted
    }

    fn on_segment_synchronized(&mut self, now: Instant, seg: &TcpRepr) -> Verdict {
        let f = seg.flags;
        let rst = f.contains(TcpFlags::RST);
        let syn = f.contains(TcpFlags::SYN);
        let fin = f.contains(TcpFlags::FIN);
        let seq = self.rcv_rel(seg.seq);
        let payload_len = seg.payload.len() as i64;
        let seg_len = payload_len + syn as i64 + fin as i64;

        // A retransmitted SYN while our SYN/ACK is unacknowledged.
        if self.state == State::SynReceived && syn && !f.contains(TcpFlags::ACK) && seq == 0 {
            self.syn_pending = true;
            return Verdict::Accepted;
        }

        // PAWS (RFC 7323 section 5), without the 24-day idle rule.
        if self.ts_ok && !rst {
            if let Some(ts) = seg.options.timestamps {
                if (ts.tsval.wrapping_sub(self.ts_recent) as i32) < 0 {
                    self.ack_now = true;
                    return Verdict::Dropped;
                }
            }
        }

        // Acceptability (RFC 9293 section 3.10.7.4).
        let nxt = self.rcv_nxt as i64;
        let wnd = self.rcv_adv_edge.saturating_sub(self.rcv_nxt) as i64;
        let edge = nxt + wnd;
        let acceptable = if seg_len == 0 {
            if wnd == 0 {
                seq == nxt
            } else {
                seq >= nxt && seq < edge
            }
        } else {
            wnd > 0 && seq < edge && seq + seg_len > nxt
        };

        if rst {
            // RFC 5961 section 3: only an exact RST resets; others in the
            // window get a challenge ACK.
            if seq == nxt {
                self.enter_closed(CloseReason::Reset);
                return Verdict::Accepted;
            }
            if acceptable {
                self.ack_now = true;
            }
            return Verdict::Dropped;
        }
        if !acceptable {
            self.ack_now = true;
            // A zero window still takes ACKs (RFC 9293 section 3.10.7.4).
            if wnd == 0
                && seq == nxt
                && f.contains(TcpFlags::ACK)
                && self.state != State::SynReceived
            {
                self.process_ack(now, seg, seq);
                self.update_timers(now);
                return Verdict::Accepted;
            }
            return Verdict::Dropped;
        }
        if syn {
            // RFC 5961 section 4: challenge ACK, drop.
            self.ack_now = true;
            return Verdict::Dropped;
        }
        if !f.contains(TcpFlags::ACK) {
            return Verdict::Dropped;
        }
        if self.ts_ok {
            if let Some(ts) = seg.options.timestamps {
                if seq <= self.last_ack_sent as i64 {
                    self.ts_recent = ts.tsval;
                }
            }
        }

        if self.state == State::SynReceived {
            if self.snd_rel(seg.ack) != 1 {
                self.queue_rst_for(seg);
                return Verdict::Dropped;
            }
            self.snd_una = 1;
            self.snd_wnd = (seg.window as u64) << self.snd_wscale;
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seq as u64;
            self.snd_wl2 = 1;
            if let Some(r) = self.handshake_rtt(now, seg) {
                self.rtt.on_sample(r);
            }
            self.timers.stop(SubflowTimer::Retransmit);
            self.become_established();
        } else {
            self.process_ack(now, seg, seq);
            if self.state == State::Closed {
                return Verdict::Accepted;
            }
        }

        self.receive_data(now, seg, seq, fin);
        self.update_timers(now);
        Verdict::Accepted
    }

    /// Sender side of an incoming ACK: window, SACK, cumulative ACK, loss
    /// detection and recovery, congestion control, FIN acknowledgement.
    fn process_ack(&mut self, now: Instant, seg: &TcpRepr, seq: i64) {
        let ack = self.snd_rel(seg.ack);
        if ack > self.snd_max as i64 {
            // Acknowledges something never sent.
            self.ack_now = true;
            return;
        }
        let max_back = self.max_snd_wnd.max(65535) as i64;
        if ack < self.snd_una as i64 - max_back {
            // RFC 5961 section 5: too old, challenge.
            self.ack_now = true;
            return;
        }
        let ack = ack.max(0) as u64;
        let seq = seq.max(0) as u64;

        let wnd = (seg.window as u64) << self.snd_wscale;
        let mut window_changed = false;
        if self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack) {
            window_changed = wnd != self.snd_wnd;
            if self.snd_wnd == 0 && wnd > 0 && self.snd_max == self.snd_una {
                // The window opened: the persist timer and its backoff end.
                self.timers.stop(SubflowTimer::Retransmit);
                self.backoff = 0;
            }
            self.snd_wnd = wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
        }

        let una_before = self.snd_una;
        let sacked_before = self.sacked.covered();
        let mut sack_news = false;
        if self.sack_ok {
            let una = ack.max(self.snd_una);
            for &(l, r) in seg.options.sack.as_slice() {
                let (l, r) = (self.snd_rel(l), self.snd_rel(r));
                // Ignore D-SACKs and anything outside the outstanding data.
                if l >= r || r <= una as i64 || r > self.snd_max as i64 {
                    continue;
                }
                let l = (l.max(una as i64)) as u64;
                let before = self.sacked.covered_within(l, r as u64);
                if before < r as u64 - l && self.sacked.insert(l, r as u64) {
                    sack_news = true;
                }
            }
        }

        let prior_in_flight = self.pipe();
        if ack > self.snd_una {
            let acked_data = ack.saturating_sub(1).min(self.send_written) - self.acked_data();
            self.stats.bytes_acked += acked_data;
            let newly = ack - self.snd_una;
            self.snd_una = ack;
            self.progress_at = now;
            self.send_buf.release(self.acked_data());
            self.sacked.remove_below(ack);
            self.dupacks = 0;
            self.backoff = 0;
            self.retries = 0;
            if ack >= self.round_end {
                self.round += 1;
                self.round_end = self.snd_max;
            }
            let rtt_sample = self.take_rtt_sample(now, ack);
            if let Some(r) = rtt_sample {
                self.rtt.on_sample(r);
            }
            // Restart the retransmission timer (RFC 6298 rule 5.3).
            self.timers.set(
                SubflowTimer::Retransmit,
                (self.snd_max > self.snd_una).then(|| now + self.rtt.rto()),
            );

            let mut grow = true;
            if let Some((kind, point)) = self.recovery {
                if ack >= point {
                    self.recovery = None;
                    if kind == Recovery::Fast {
                        self.cc.on_recovery_exit(now);
                        grow = false;
                    }
                } else if kind == Recovery::Fast {
                    grow = false;
                    if !self.sack_ok {
                        // NewReno partial ACK: the next hole is lost too.
                        self.mark_first_lost();
                    }
                }
            }
            if grow {
                let cwnd = self.cc.window();
                let blocked_recently = self.cwnd_blocked_at.is_some_and(|t| {
                    now.saturating_duration_since(t)
                        <= self.rtt.srtt().max(Duration::from_millis(1))
                });
                let in_slow_start = cwnd < self.cc.ssthresh();
                let ev = AckEvent {
                    now,
                    acked_bytes: newly,
                    rtt_sample,
                    srtt: self.rtt.srtt(),
                    min_rtt: self.rtt.min_rtt(),
                    prior_in_flight,
                    cwnd_limited: blocked_recently
                        || (in_slow_start && prior_in_flight * 2 >= cwnd),
                    mss: self.sender_mss(),
                    round: self.round,
                };
                self.cc.on_ack(&ev);
            }
            self.on_fin_acked(now);
        } else if ack == self.snd_una
            && self.snd_max > self.snd_una
            && seg.payload.is_empty()
            && !seg.flags.contains(TcpFlags::FIN)
            && !window_changed
        {
            self.dupacks += 1;
        }

        self.detect_loss(now, sack_news);
        self.detect_lost_retransmissions(now);

        if let Some((Recovery::Fast, _)) = self.recovery {
            // RFC 6937 DeliveredData: cumulative plus SACKed progress.
            let delivered =
                (self.snd_una - una_before + self.sacked.covered()).saturating_sub(sacked_before);
            self.prr_delivered += delivered;
            let ssthresh = self.cc.ssthresh();
            let pipe = self.pipe();
            let mss = self.sender_mss() as u64;
            self.prr_budget = if pipe > ssthresh {
                let fs = self.prr_recover_fs.max(1) as u128;
                let target = (self.prr_delivered as u128 * ssthresh as u128).div_ceil(fs) as u64;
                target.saturating_sub(self.prr_out)
            } else {
                // Slow-start reduction bound.
                let limit = self
                    .prr_delivered
                    .saturating_sub(self.prr_out)
                    .max(delivered)
                    + mss;
                ssthresh.saturating_sub(pipe).min(limit)
            };
        }
    }

    fn mark_first_lost(&mut self) {
        let end = (self.snd_una + self.sender_mss() as u64).min(self.snd_max);
        self.lost_edge = self.lost_edge.max(end);
        self.high_rxt = self.high_rxt.max(self.snd_una);
    }

    /// RFC 6675 IsLost over the scoreboard: the lowest point above which
    /// DupThresh ranges or more than (DupThresh-1)*SMSS bytes are SACKed.
    fn detect_loss(&mut self, now: Instant, sack_news: bool) {
        if self.snd_max <= self.snd_una {
            return;
        }
        if sack_news {
            let mss = self.sender_mss() as u64;
            let mut bytes = 0;
            let mut candidate = None;
            for (count, (s, e)) in self.sacked.iter().rev().enumerate() {
                bytes += e - s;
                if count as u64 + 1 >= DUP_THRESH || bytes > (DUP_THRESH - 1) * mss {
                    candidate = Some(s);
                    break;
                }
            }
            if let Some(edge) = candidate {
                // Reordering tolerance (RACK, RFC 8985): a hole counts as
                // lost only once data sent a reordering window after it
                // was delivered; the rest waits for the reorder timer.
                let settled = self.settled_edge(edge);
                self.lost_edge = self.lost_edge.max(settled);
                if edge > self.lost_edge {
                    self.pending_lost_edge = self.pending_lost_edge.max(edge);
                    if !self.timers.is_armed(SubflowTimer::Reorder) {
                        self.timers
                            .arm(SubflowTimer::Reorder, now + self.reorder_window());
                    }
                }
            }
        }
        self.maybe_enter_recovery(now);
    }

    fn maybe_enter_recovery(&mut self, now: Instant) {
        let lost = self.lost_edge > self.snd_una;
        // With SACK the scoreboard decides (duplicate ACKs under reordering
        // would fire too early); without it, RFC 5681's three dup ACKs.
        let dup_rule = !self.sack_ok && self.dupacks >= DUP_THRESH;
        if self.recovery.is_none() && (lost || dup_rule) {
            let in_flight = self.pipe();
            self.recovery = Some((Recovery::Fast, self.snd_max));
            self.prr_delivered = 0;
            self.prr_out = 0;
            self.prr_budget = 0;
            self.prr_recover_fs = self.snd_max - self.snd_una;
            self.high_rxt = self.snd_una;
            self.mark_first_lost();
            self.stats.fast_recoveries += 1;
            self.cc.on_congestion_event(now, in_flight);
        }
    }

    /// RFC 8985's reordering window: a quarter of the minimum RTT.
    fn reorder_window(&self) -> Duration {
        (self.rtt.min_rtt() / 4).min(self.rtt.srtt())
    }

    /// How far up to `edge` holes may be declared lost now: up to the end of
    /// the newest original transmission sent at least one reordering window
    /// before the newest SACKed one.
    fn settled_edge(&self, edge: u64) -> u64 {
        let window = self.reorder_window();
        let Some((_, newest)) = self.sacked.last() else {
            return edge;
        };
        if window.is_zero() {
            return edge;
        }
        let i = self.send_times.partition_point(|t| t.end < newest);
        let Some(reference) = self.send_times.get(i).filter(|t| t.start < newest) else {
            // Not tracked (ring full, or a retransmission): no gating.
            return edge;
        };
        let Some(limit) = reference
            .at
            .as_nanos()
            .checked_sub(window.as_nanos() as u64)
        else {
            return self.snd_una;
        };
        let j = self
            .send_times
            .partition_point(|t| t.at.as_nanos() <= limit);
        let settled = match j {
            0 => self.snd_una,
            _ => self.send_times[j - 1].end,
        };
        edge.min(settled.max(self.snd_una))
    }

    /// A retransmission is lost again when data sent after it was SACKed
    /// (DupThresh segments' worth) while it was not, and it had a minimum
    /// RTT plus the reordering window to arrive (RACK's idea).
    fn detect_lost_retransmissions(&mut self, now: Instant) {
        self.relost.remove_below(self.snd_una);
        let mss = self.sender_mss() as u64;
        let patience = self.rtt.min_rtt() + self.reorder_window();
        while let Some(&(s, e, sent_at_max, at)) = self.rtx_log.front() {
            if e <= self.snd_una || self.sacked.covered_within(s, e) == e - s {
                self.rtx_log.pop_front();
                continue;
            }
            let later = self.sacked.covered_within(sent_at_max, self.snd_max);
            if later <= (DUP_THRESH - 1) * mss || now < at + patience {
                break;
            }
            self.rtx_log.pop_front();
            self.relost.insert(s.max(self.snd_una), e);
        }
    }

    /// Bytes found lost again and not resent since.
    fn relost_bytes(&self) -> u64 {
        self.relost
            .iter()
            .map(|(s, e)| (e - s) - self.sacked.covered_within(s, e))
            .sum()
    }

    /// The next range found lost again that still needs resending.
    fn next_relost(&mut self) -> Option<(u64, u64)> {
        while let Some((s, e)) = self.relost.first() {
            if let Some(gap) = self.sacked.first_gap(s.max(self.snd_una), e) {
                return Some(gap);
            }
            self.relost.pop_first_if_reaches(s);
        }
        None
    }

    /// The handshake's RTT: from our SYN (or SYN/ACK) sent once, or, when
    /// it went out again and Karn's rule leaves no sample, from the
    /// timestamp the peer echoed, which names the transmission it answers
    /// (RFC 7323 section 4). Without one, a subflow opened over a link that
    /// was down has no RTT until it carries data, and a lowest-RTT
    /// scheduler never gives it any.
    fn handshake_rtt(&self, now: Instant, seg: &TcpRepr) -> Option<Duration> {
        if !self.syn_retransmitted {
            return self.syn_sent_at.map(|at| now.saturating_duration_since(at));
        }
        let ts = seg
            .options
            .timestamps
            .filter(|t| self.ts_ok && t.tsecr != 0)?;
        let ms = self.ts_now(now).wrapping_sub(ts.tsecr);
        // Millisecond ticks: an answer within the tick counts as one.
        (ms < 60_000).then(|| Duration::from_millis(u64::from(ms.max(1))))
    }

    fn take_rtt_sample(&mut self, now: Instant, ack: u64) -> Option<Duration> {
        let mut newest = None;
        while let Some(t) = self.send_times.front() {
            if t.end > ack {
                break;
            }
            newest = Some(*t);
            self.send_times.pop_front();
        }
        let t = newest?;
        (t.start >= self.rtx_high).then(|| now.saturating_duration_since(t.at))
    }

    fn on_fin_acked(&mut self, now: Instant) {
        let Some(fin) = self.fin_seq else { return };
        if self.snd_una <= fin {
            return;
        }
        match self.state {
            State::FinWait1 => self.state = State::FinWait2,
            State::Closing => self.enter_time_wait(now),
            State::LastAck => self.enter_closed(CloseReason::Normal),
            _ => {}
        }
    }

    /// Receiver side: payload into the ring (in order or not), FIN, ACK policy.
    fn receive_data(&mut self, now: Instant, seg: &TcpRepr, seq: i64, fin: bool) {
        let receiving = matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        );
        if !receiving {
            // After the peer's FIN: anything but a retransmitted FIN is odd.
            if fin || !seg.payload.is_empty() {
                self.ack_now = true;
                if self.state == State::TimeWait {
                    self.timers
                        .arm(SubflowTimer::TimeWait, now + self.cfg.time_wait);
                }
            }
            return;
        }
        let nxt = self.rcv_nxt as i64;
        let edge = self.rcv_adv_edge as i64;
        let mut data = seg.payload;
        let mut start = seq;
        let mut skip = 0;
        if start < nxt {
            skip = ((nxt - start) as usize).min(data.len());
            data = &data[skip..];
            start = nxt;
            if seg.payload.len() as i64 + seq <= nxt {
                // Pure duplicate: tell the sender at once.
                self.owe_ack();
            }
        }
        let mut fin_in_window = fin;
        if start + data.len() as i64 > edge {
            let keep = (edge - start).max(0) as usize;
            data = &data[..keep.min(data.len())];
            fin_in_window = false;
        }
        if fin_in_window && self.rcv_fin.is_none() {
            self.rcv_fin = Some((seq + seg.payload.len() as i64) as u64);
        }
        if !seg.payload.is_empty() {
            self.rcv_mss = self.rcv_mss.max(seg.payload.len() as u64);
        }

        if !data.is_empty() {
            let start = start as u64;
            let end = start + data.len() as u64;
            if start == self.rcv_nxt {
                if self.read_pos == start - 1 && self.ooo.is_empty() && end - 1 <= self.direct_limit
                {
                    // Nothing waits in the ring: the layer above takes the
                    // bytes straight from the segment (one copy fewer).
                    self.read_pos = end - 1;
                    self.direct_taken = Some((start - 1, skip..skip + data.len()));
                } else {
                    self.recv_buf.write_at(start - 1, data);
                }
                self.rcv_nxt = end;
                self.stats.bytes_received += data.len() as u64;
                if !self.ooo.is_empty() {
                    // Filled (part of) a hole: ACK at once (RFC 5681 4.2).
                    while let Some((_, e)) = self.ooo.pop_first_if_reaches(self.rcv_nxt) {
                        if e > self.rcv_nxt {
                            self.stats.bytes_received += e - self.rcv_nxt;
                            self.rcv_nxt = e;
                        }
                    }
                    self.ack_now = true;
                } else if self.quickack_left > 0 {
                    self.quickack_left -= 1;
                    self.ack_now = true;
                } else if self.rcv_nxt - self.last_ack_sent >= 2 * self.rcv_mss {
                    self.ack_now = true;
                } else if !self.timers.is_armed(SubflowTimer::DelayedAck) {
                    self.timers
                        .arm(SubflowTimer::DelayedAck, now + self.cfg.delayed_ack);
                }
            } else {
                // Out of order: keep it if the range set has room.
                if self.ooo.insert(start, end) {
                    self.recv_buf.write_at(start - 1, data);
                    self.last_ooo_start = start;
                }
                self.owe_ack();
            }
        }

        if let Some(f) = self.rcv_fin {
            if self.rcv_nxt == f {
                self.rcv_nxt = f + 1;
                self.ack_now = true;
                self.push_event(SubflowEvent::PeerClosed);
                match self.state {
                    State::Established => self.state = State::CloseWait,
                    State::FinWait1 => {
                        if self.fin_seq.is_some_and(|s| self.snd_una > s) {
                            self.enter_time_wait(now);
                        } else {
                            self.state = State::Closing;
                        }
                    }
                    State::FinWait2 => self.enter_time_wait(now),
                    _ => {}
                }
            }
        }
    }

    fn owe_ack(&mut self) {
        self.acks_owed = self.acks_owed.saturating_add(1).min(MAX_ACKS_OWED);
    }

    // ---- timers ----

    /// The next instant at which `on_timeout` must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }

    /// The earliest armed timer and its deadline.
    pub fn next_timer(&self) -> Option<(Instant, SubflowTimer)> {
        self.timers.next()
    }

    /// Fires every timer due at `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.timers.take_due(SubflowTimer::DelayedAck, now) {
            self.ack_now = true;
        }
        if self.timers.take_due(SubflowTimer::TimeWait, now) {
            self.enter_closed(CloseReason::Normal);
            return;
        }
        if self.timers.take_due(SubflowTimer::Reorder, now) {
            if self.is_synchronized() && self.snd_max > self.snd_una {
                // Whatever is still missing below the held-back edge did
                // not merely arrive late.
                self.lost_edge = self.lost_edge.max(self.pending_lost_edge.min(self.snd_max));
                self.maybe_enter_recovery(now);
            }
            self.pending_lost_edge = 0;
        }
        if self.timers.take_due(SubflowTimer::Retransmit, now) {
            self.on_retransmission_timer(now);
        }
    }

    fn on_retransmission_timer(&mut self, now: Instant) {
        match self.state {
            State::Closed | State::TimeWait => {}
            State::SynSent | State::SynReceived => {
                self.retries += 1;
                if self.retries > self.cfg.max_syn_retransmissions {
                    self.enter_closed(CloseReason::TimedOut);
                    return;
                }
                self.backoff += 1;
                self.syn_pending = true;
                self.syn_retransmitted = true;
                self.timers.arm(
                    SubflowTimer::Retransmit,
                    now + self.rtt.backed_off(self.backoff),
                );
            }
            _ if self.snd_max > self.snd_una => {
                // Capped probes (a stale MPTCP subflow) do not use up the
                // retries: the connection decides how long to keep probing.
                if !self.rtt.backoff_capped() {
                    self.retries += 1;
                }
                if self.retries > self.cfg.max_retransmissions {
                    self.abort();
                    self.close_reason = Some(CloseReason::TimedOut);
                    if let Some(SubflowEvent::Closed(r)) = self.events.back_mut() {
                        *r = CloseReason::TimedOut;
                    }
                    return;
                }
                self.stats.timeouts += 1;
                self.push_event(SubflowEvent::RetransmissionTimeout);
                if self.backoff == 0 {
                    let in_flight = self.pipe();
                    self.cc.on_rto(now, in_flight);
                } else {
                    // Repeated timeouts: the peer may have reneged on SACKs.
                    self.sacked.clear();
                }
                self.rtx_log.clear();
                self.relost.clear();
                self.timers.stop(SubflowTimer::Reorder);
                self.pending_lost_edge = 0;
                self.recovery = Some((Recovery::Timeout, self.snd_max));
                self.lost_edge = self.snd_max;
                self.high_rxt = self.snd_una;
                self.dupacks = 0;
                self.backoff += 1;
                self.timers.arm(
                    SubflowTimer::Retransmit,
                    now + self.rtt.backed_off(self.backoff),
                );
            }
            _ => {
                if self.needs_persist() {
                    self.probe_pending = true;
                    self.backoff += 1;
                    self.timers.arm(
                        SubflowTimer::Retransmit,
                        now + self.rtt.backed_off(self.backoff),
                    );
                }
            }
        }
    }

    fn needs_persist(&self) -> bool {
        self.snd_wnd == 0 && self.snd_max == self.snd_una && self.unsent() > 0
    }

    /// Arms the retransmission or persist timer when something waits on one.
    fn update_timers(&mut self, now: Instant) {
        if self.timers.is_armed(SubflowTimer::Retransmit) || !self.is_synchronized() {
            return;
        }
        if self.snd_max > self.snd_una || self.needs_persist() {
            self.timers.arm(
                SubflowTimer::Retransmit,
                now + self.rtt.backed_off(self.backoff),
            );
        }
    }

    fn is_synchronized(&self) -> bool {
        !matches!(
            self.state,
            State::Closed | State::SynSent | State::SynReceived
        )
    }

    // ---- loss accounting ----

    /// RFC 6675 pipe: outstanding bytes not SACKed, minus those deemed lost
    /// and not yet retransmitted.
    pub fn pipe(&self) -> u64 {
        if self.snd_max <= self.snd_una {
            return 0;
        }
        let outstanding = self.snd_max - self.snd_una;
        let sacked = self.sacked.covered();
        let lo = self.high_rxt.max(self.snd_una);
        let lost_unsent = if self.lost_edge > lo {
            (self.lost_edge - lo) - self.sacked.covered_within(lo, self.lost_edge)
        } else {
            0
        };
        // Without SACK each duplicate ACK stands for a segment that left
        // the network (the window inflation of RFC 6582).
        let left = if self.sack_ok {
            0
        } else {
            self.dupacks * self.sender_mss() as u64
        };
        let relost = if self.relost.is_empty() {
            0
        } else {
            self.relost_bytes()
        };
        outstanding.saturating_sub(sacked + lost_unsent + left + relost)
    }

    // ---- outgoing segments ----

    /// The next segment to send, its payload copied into `buf`, or `None`.
    /// `buf` should hold at least one MSS; smaller buffers give smaller
    /// segments. Call repeatedly until `None`.
    pub fn poll_transmit<'b>(&mut self, now: Instant, buf: &'b mut [u8]) -> Option<TcpRepr<'b>> {
        self.poll_transmit_inner(now, buf, None)
    }

    /// [`Subflow::poll_transmit`] for data queued with
    /// [`Subflow::send_external`]: `fill(offset, out)` writes the stream
    /// bytes from `offset` into `out` (one segment never crosses a send
    /// boundary, see [`Subflow::mark_send_boundary`]).
    pub fn poll_transmit_with<'b>(
        &mut self,
        now: Instant,
        buf: &'b mut [u8],
        fill: Fill<'_>,
    ) -> Option<TcpRepr<'b>> {
        self.poll_transmit_inner(now, buf, Some(fill))
    }

    fn poll_transmit_inner<'b>(
        &mut self,
        now: Instant,
        buf: &'b mut [u8],
        fill: Option<Fill<'_>>,
    ) -> Option<TcpRepr<'b>> {
        if let Some((seq, ack, with_ack)) = self.pending_rst.take() {
            let flags = if with_ack {
                TcpFlags::RST | TcpFlags::ACK
            } else {
                TcpFlags::RST
            };
            return Some(self.repr(seq, ack, flags, 0, TcpOptions::default(), &[]));
        }
        match self.state {
            State::Closed => return None,
            State::SynSent | State::SynReceived => {
                if self.syn_pending {
                    return Some(self.syn_segment(now));
                }
                return self.ack_only(now);
            }
            State::TimeWait => return self.ack_only(now),
            _ => {}
        }
        if let Some(repr) = self.data_segment(now, buf, fill) {
            return Some(repr);
        }
        if self.probe_pending {
            self.probe_pending = false;
            // An old sequence number the receiver must answer with an ACK.
            let seq = self.iss.wrapping_add(self.snd_una as u32).wrapping_sub(1);
            let repr = self.ack_repr(now, seq, TcpFlags::ACK, &[]);
            self.stats.segments_sent += 1;
            return Some(repr);
        }
        self.ack_only(now)
    }

    fn ack_only<'b>(&mut self, now: Instant) -> Option<TcpRepr<'b>> {
        if !(self.ack_now || self.window_update || self.acks_owed > 0) || self.rcv_nxt == 0 {
            return None;
        }
        let seq = self.iss.wrapping_add(self.snd_max as u32);
        let repr = self.ack_repr(now, seq, TcpFlags::ACK, &[]);
        self.stats.segments_sent += 1;
        Some(repr)
    }

    fn syn_segment<'b>(&mut self, now: Instant) -> TcpRepr<'b> {
        self.syn_pending = false;
        let passive = self.state == State::SynReceived;
        let mut opts = TcpOptions {
            mss: Some(self.cfg.mss),
            ..Default::default()
        };
        if self.cfg.window_scaling && (!passive || self.wscale_ok) {
            opts.window_scale = Some(self.our_wscale);
        }
        opts.sack_permitted = if passive { self.sack_ok } else { self.cfg.sack };
        let with_ts = if passive {
            self.ts_ok
        } else {
            self.cfg.timestamps
        };
        if with_ts {
            opts.timestamps = Some(Timestamps {
                tsval: self.ts_now(now),
                tsecr: if passive { self.ts_recent } else { 0 },
            });
        }
        let window = self.recv_buf.capacity().min(u16::MAX as u64) as u16;
        let (flags, ack) = if passive {
            self.rcv_adv_edge = self.rcv_nxt + window as u64;
            self.last_ack_sent = self.rcv_nxt;
            (
                TcpFlags::SYN | TcpFlags::ACK,
                self.irs.wrapping_add(self.rcv_nxt as u32),
            )
        } else {
            (TcpFlags::SYN, 0)
        };
        if self.syn_sent_at.is_none() {
            self.syn_sent_at = Some(now);
        }
        self.snd_max = self.snd_max.max(1);
        if !self.timers.is_armed(SubflowTimer::Retransmit) {
            self.timers.arm(
                SubflowTimer::Retransmit,
                now + self.rtt.backed_off(self.backoff),
            );
        }
        self.stats.segments_sent += 1;
        self.repr(self.iss, ack, flags, window, opts, &[])
    }

    fn data_segment<'b>(
        &mut self,
        now: Instant,
        buf: &'b mut [u8],
        fill: Option<Fill<'_>>,
    ) -> Option<TcpRepr<'b>> {
        let data_end = 1 + self.send_written;
        let max_seg = (self.sender_mss() as usize).min(buf.len()).max(1) as u64;
        let cwnd = self.cc.window();
        let pipe = self.pipe();
        while self.boundaries.front().is_some_and(|&b| b <= self.snd_una) {
            self.boundaries.pop_front();
        }

        // Retransmissions lost again come first.
        if let Some((s, e)) = self.next_relost() {
            let data_len =
                self.clamp_to_boundary(s, e.min(data_end).saturating_sub(s).min(max_seg));
            let fin = self.fin_seq == Some(s + data_len) && e > s + data_len;
            let span = data_len + fin as u64;
            if span > 0 {
                if !self.may_send(pipe, span, cwnd) {
                    self.cwnd_blocked_at = Some(now);
                    return None;
                }
                if let Some((rs, re)) = self.relost.pop_first_if_reaches(s) {
                    self.relost.insert(s + span, re);
                    debug_assert!(rs <= s);
                }
                return Some(self.emit_data(now, DataSeg::new(s, data_len, fin, true), buf, fill));
            }
        }

        // RFC 6675 NextSeg rule 1: the first lost hole not yet retransmitted.
        if self.lost_edge > self.snd_una {
            let from = self.high_rxt.max(self.snd_una);
            if let Some((s, e)) = self.sacked.first_gap(from, self.lost_edge) {
                let data_len =
                    self.clamp_to_boundary(s, e.min(data_end).saturating_sub(s).min(max_seg));
                let fin = self.fin_seq == Some(s + data_len) && e > s + data_len;
                let span = data_len + fin as u64;
                // The first retransmission of an episode goes out regardless
                // of pipe (RFC 6675 section 5, step 4.3).
                let first = s == self.snd_una && self.high_rxt <= self.snd_una;
                if span > 0 {
                    if !first && !self.may_send(pipe, span, cwnd) {
                        self.cwnd_blocked_at = Some(now);
                        return None;
                    }
                    return Some(self.emit_data(
                        now,
                        DataSeg::new(s, data_len, fin, true),
                        buf,
                        fill,
                    ));
                }
            }
        }

        // New data (rule 2).
        let start = self.snd_max;
        let avail = data_end.saturating_sub(start);
        let fin_unsent = self.fin_seq.is_some_and(|f| self.snd_max <= f);
        if avail == 0 && !fin_unsent {
            return None;
        }
        let mut len = self.clamp_to_boundary(start, avail.min(max_seg));
        let wnd_room = (self.snd_una + self.snd_wnd).saturating_sub(start);
        if len > wnd_room {
            // Sender silly window avoidance (RFC 9293 3.8.6.2.1).
            let worth_it = wnd_room >= max_seg || (pipe == 0 && wnd_room > 0);
            if !worth_it {
                return None;
            }
            len = wnd_room;
        }
        if !self.may_send(pipe, len.max(1), cwnd) {
            self.cwnd_blocked_at = Some(now);
            return None;
        }
        let fin = fin_unsent && start + len == data_end;
        if len == 0 && !fin {
            return None;
        }
        Some(self.emit_data(now, DataSeg::new(start, len, fin, false), buf, fill))
    }

    /// Congestion check for `span` more bytes: PRR's budget in fast
    /// recovery, the window against pipe otherwise.
    fn may_send(&self, pipe: u64, span: u64, cwnd: u64) -> bool {
        match self.recovery {
            Some((Recovery::Fast, _)) => span <= self.prr_budget,
            _ => pipe == 0 || pipe + span <= cwnd,
        }
    }

    fn emit_data<'b>(
        &mut self,
        now: Instant,
        seg: DataSeg,
        buf: &'b mut [u8],
        fill: Option<Fill<'_>>,
    ) -> TcpRepr<'b> {
        let DataSeg {
            start,
            len,
            fin,
            retransmit,
        } = seg;
        if len > 0 {
            match fill {
                Some(f) => f(start - 1, &mut buf[..len]),
                None => self.send_buf.read_at(start - 1, &mut buf[..len]),
            }
        }
        let end = start + len as u64 + fin as u64;
        if retransmit {
            if self.rtx_log.len() < RTX_LOG {
                self.rtx_log.push_back((start, end, self.snd_max, now));
            }
            self.high_rxt = self.high_rxt.max(end);
            self.rtx_high = self.rtx_high.max(end);
            self.stats.retransmits += 1;
            self.stats.bytes_retransmitted += len as u64;
        } else {
            if self.snd_max == self.snd_una {
                self.progress_at = now;
            }
            self.snd_max = end;
            // Bounded by the send buffer's segments; grows with use.
            let bound = self.cfg.send_buffer / self.cfg.mss.max(64) as usize + RANGE_SLACK;
            if self.send_times.len() < bound {
                self.send_times.push_back(SendTime {
                    start,
                    end,
                    at: now,
                });
            }
        }
        if let Some((Recovery::Fast, _)) = self.recovery {
            let span = len as u64 + fin as u64;
            self.prr_out += span;
            self.prr_budget = self.prr_budget.saturating_sub(span);
        }
        self.stats.bytes_sent += len as u64;
        self.stats.segments_sent += 1;
        if !self.timers.is_armed(SubflowTimer::Retransmit) {
            self.timers.arm(
                SubflowTimer::Retransmit,
                now + self.rtt.backed_off(self.backoff),
            );
        }
        let mut flags = TcpFlags::ACK;
        if fin {
            flags = flags | TcpFlags::FIN;
        }
        if len > 0 && start + len as u64 == 1 + self.send_written {
            flags = flags | TcpFlags::PSH;
        }
        let seq = self.iss.wrapping_add(start as u32);
        self.ack_repr(now, seq, flags, &buf[..len])
    }

    /// A segment carrying an ACK: window, timestamps and SACK blocks filled
    /// in, and the delayed-ACK state cleared.
    fn ack_repr<'b>(
        &mut self,
        now: Instant,
        seq: u32,
        flags: TcpFlags,
        payload: &'b [u8],
    ) -> TcpRepr<'b> {
        let mut opts = TcpOptions::default();
        if self.ts_ok {
            opts.timestamps = Some(Timestamps {
                tsval: self.ts_now(now),
                tsecr: self.ts_recent,
            });
        }
        let blocks = self.sack_blocks_to_send();
        if blocks > 0 {
            // The range holding the latest arrival first (RFC 2018 section 4).
            let latest = self.ooo.containing(self.last_ooo_start);
            if let Some((s, e)) = latest {
                opts.sack.push(
                    self.irs.wrapping_add(s as u32),
                    self.irs.wrapping_add(e as u32),
                );
            }
            for (s, e) in self.ooo.iter() {
                if opts.sack.len as usize >= blocks {
                    break;
                }
                if Some((s, e)) != latest {
                    opts.sack.push(
                        self.irs.wrapping_add(s as u32),
                        self.irs.wrapping_add(e as u32),
                    );
                }
            }
        }
        let window = self.advertise_window();
        self.ack_now = false;
        self.acks_owed = self.acks_owed.saturating_sub(1);
        self.window_update = false;
        self.timers.stop(SubflowTimer::DelayedAck);
        self.last_ack_sent = self.rcv_nxt;
        let ack = self.irs.wrapping_add(self.rcv_nxt as u32);
        self.repr(seq, ack, flags, window, opts, payload)
    }

    /// The window field to send; grows the advertised edge in steps of at
    /// least min(buffer/2, MSS) (receiver silly window avoidance).
    fn advertise_window(&mut self) -> u16 {
        // Under a memory limit, offer what the ring already holds in chunks
        // plus what the pool has left (one MSS when it holds nothing).
        let held = self.rcv_nxt.saturating_sub(1).saturating_sub(self.read_pos);
        let room = self
            .recv_buf
            .backed_from(self.rcv_nxt.saturating_sub(1))
            .saturating_add(super::pool::window_allowance());
        let room = if held == 0 {
            room.max(self.rcv_mss)
        } else {
            room
        };
        let cap = self.recv_buf.capacity().min(held.saturating_add(room));
        let limit = 1 + self.read_pos + cap;
        let step = (cap / 2).min(self.rcv_mss);
        let target = if limit >= self.rcv_adv_edge + step {
            limit
        } else {
            self.rcv_adv_edge
        };
        let wnd = (target.saturating_sub(self.rcv_nxt) >> self.rcv_wscale).min(u16::MAX as u64);
        let edge = self.rcv_nxt + (wnd << self.rcv_wscale);
        self.rcv_adv_edge = self.rcv_adv_edge.max(edge);
        wnd as u16
    }

    fn repr<'b>(
        &self,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        window: u16,
        options: TcpOptions,
        payload: &'b [u8],
    ) -> TcpRepr<'b> {
        TcpRepr {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq,
            ack,
            flags,
            window,
            urgent: 0,
            options,
            payload,
        }
    }
}
