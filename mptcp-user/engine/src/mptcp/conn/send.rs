//! Data send: the data-level send buffer, mappings handed to subflows,
//! the scheduler hand-off, reinjection and the DATA_FIN.

use super::keys::expand_dsn;
use super::subflow::MptcpSubflow;
use super::{ConnState, ConnTimer, Connection, Lifecycle, Linear};
use crate::sched::SubflowView;
use crate::tcp::Ring;
use crate::time::Instant;
use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

/// Largest DSS mapping we create (its length field has 16 bits).
pub(super) const MAX_MAPPING: u64 = 65535;
/// DATA_FIN retransmission interval before backoff.
pub(super) const DATA_FIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Floor of the data-level retransmission interval (TCP's minimum RTO).
const DATA_RTO_MIN: Duration = Duration::from_millis(200);

/// Data handed to a subflow: its stream offset, data-level offset, length
/// and DSS checksum.
#[derive(Clone, Copy, Debug)]
pub(super) struct TxMapping {
    pub(super) off: u64,
    pub(super) dsn: u64,
    pub(super) len: u64,
    pub(super) csum: u16,
    pub(super) reinjected: bool,
}

/// Our DATA_FIN (RFC 8684 3.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DataFin {
    /// `close()` not called yet.
    NotRequested,
    /// `close()` called: the DATA_FIN follows the last byte, and is sent
    /// again on a timer until acknowledged.
    Pending,
    /// The peer acknowledged it.
    Acked,
}

/// The data-level send side.
#[derive(Debug)]
pub(super) struct SendState {
    pub(super) buf: Ring,
    /// Data offset the application has written up to.
    pub(super) written: u64,
    /// Data offset the peer acknowledged (DATA_ACK).
    pub(super) una: u64,
    /// Next data offset to hand to a subflow for the first time.
    pub(super) nxt: u64,
    /// Data-level ranges to send again on other subflows.
    pub(super) reinject: VecDeque<Range<u64>>,
    /// Right edge of the peer's connection-level window.
    pub(super) peer_window_edge: u64,
    /// Our DATA_FIN, which `close()` asks for.
    pub(super) data_fin: DataFin,
    /// DATA_FIN retransmissions so far (the interval doubles each time).
    pub(super) data_fin_backoff: u32,
    /// `una` when the data-level retransmission timer was last armed: no
    /// progress by the time it fires means the DATA_ACK is stuck.
    pub(super) rtx_una: u64,
    /// Data-level retransmissions without progress (the interval doubles).
    pub(super) rtx_backoff: u32,
}

impl SendState {
    pub(super) fn new(buffer: usize) -> SendState {
        SendState {
            buf: Ring::new(buffer),
            written: 0,
            una: 0,
            nxt: 0,
            reinject: VecDeque::new(),
            peer_window_edge: 65535,
            data_fin: DataFin::NotRequested,
            data_fin_backoff: 0,
            rtx_una: 0,
            rtx_backoff: 0,
        }
    }
}

impl ConnState {
    /// A DATA_ACK (`abs`, 32 or 64 bits) with the window of its segment.
    pub(super) fn on_data_ack(&mut self, abs: u64, wide: bool, window: u64) {
        let base = self.keys.local.dsn(0);
        let near = self.keys.local.dsn(self.send.una);
        let off = expand_dsn(abs, wide, near).wrapping_sub(base);
        let fin_extra = (self.send.data_fin != DataFin::NotRequested) as u64;
        let tx = &mut self.send;
        if off > tx.written + fin_extra {
            return;
        }
        if off >= tx.una {
            // Acknowledged at the data level: its chunks go back to the pool
            // once no subflow may send them again (`release_sent`).
            tx.una = off.min(tx.written);
            if tx.data_fin != DataFin::NotRequested && off == tx.written + 1 {
                tx.data_fin = DataFin::Acked;
                self.timers.stop(ConnTimer::DataFin);
            }
            tx.peer_window_edge = tx.peer_window_edge.max(off + window);
        }
    }
}

impl Connection {
    /// Queues the data-level ranges subflow `i` holds but the peer has not
    /// acknowledged, for sending on other subflows.
    pub(super) fn reinject(&mut self, i: usize) {
        let others = self
            .subflows
            .iter()
            .enumerate()
            .any(|(j, f)| j != i && f.usable());
        let s = &mut self.s;
        let Some(sf) = self.subflows.get_mut(i) else {
            return;
        };
        let closed = sf.end.reason.is_some();
        if !others && !closed {
            return;
        }
        for m in sf.tx_maps.iter_mut() {
            let end = m.dsn + m.len;
            if m.reinjected || end <= s.send.una {
                continue;
            }
            m.reinjected = true;
            let start = m.dsn.max(s.send.una);
            match s.send.reinject.back_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => s.send.reinject.push_back(start..end),
            }
        }
        if sf.sub.is_closed() {
            // Sends nothing more. A subflow still closing may retransmit:
            // its segments are filled through these mappings.
            sf.tx_maps.clear();
        }
    }

    /// Gives back the send buffer's chunks below both the DATA_ACK and what
    /// any subflow may still retransmit (subflows send from this buffer).
    fn release_sent(&mut self) {
        let mut low = self.s.send.una;
        for sf in self.subflows.iter_mut() {
            if let Some(l) = sf.lowest_needed() {
                low = low.min(l);
            }
        }
        self.s.send.buf.release(low);
    }

    /// Pushes the aggregate of every usable subflow to coupled controllers
    /// (LIA, OLIA); uncoupled ones are left alone.
    pub(super) fn couple(&mut self) {
        use crate::cc::{olia_alphas, CcAlgorithm, CouplingInfo, Olia, OliaPath};
        const MAX: usize = 64;
        let algo = self.s.settings.tcp.congestion_control;
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
        for (i, f) in self.subflows.iter_mut().enumerate() {
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
            self.subflows[idx[k]]
                .sub
                .congestion_control_mut()
                .on_coupling(&info);
        }
    }

    /// Hands queued data to subflows as the scheduler decides.
    pub(super) fn schedule(&mut self, now: Instant) {
        self.couple();
        for i in 0..self.subflows.len() {
            let sf = &mut self.subflows[i];
            let acked = sf.sub.acked_offset();
            if sf.suspect_at.is_some_and(|at| acked > at) {
                sf.suspect_at = None;
            }
            if sf.stalled_at.is_some_and(|at| acked > at) {
                sf.stalled_at = None;
                sf.sub.set_backoff_cap(now, None);
                sf.hold_peer();
                // Its path works again: so do its siblings'.
                let path = sf.path;
                for o in self.subflows.iter_mut().filter(|o| o.path == path) {
                    o.suspect_at = None;
                }
            }
            let sf = &mut self.subflows[i];
            while sf.tx_maps.front().is_some_and(|m| m.off + m.len <= acked) {
                sf.tx_maps.pop_front();
            }
            if sf.sub.is_closed() {
                // Sends nothing more.
                sf.tx_maps.clear();
            }
        }
        if let Some(linear) = self.s.fallback.linear_send() {
            // The subflow's own retransmissions cover the data level now.
            self.s.timers.stop(ConnTimer::DataRetransmit);
            self.send_linear(linear);
            self.release_sent();
            return;
        }
        self.release_sent();
        self.trim_reinject();
        self.data_retransmit(now);
        if self.sched.redundant() {
            self.send_redundant();
        } else {
            self.send_scheduled();
        }
        self.data_fin_and_close(now);
    }

    /// After an infinite mapping (or fallen back to TCP): the rest of the
    /// data, in order, on the one subflow; the subflow's ACKs are the
    /// data-level ones.
    fn send_linear(&mut self, l: Linear) {
        let s = &mut self.s;
        if let Some(sf) = self.subflows.get_mut(l.subflow) {
            let acked = sf.sub.acked_offset();
            if acked >= l.subflow_off {
                let una = l.data_off + (acked - l.subflow_off);
                s.send.una = s.send.una.max(una).min(s.send.written);
            }
            // The subflow sends the bytes from the connection's buffer.
            let n = (s.send.written - s.send.nxt).min(sf.sub.send_space() as u64);
            s.send.nxt += sf.sub.send_external(n as usize) as u64;
            if s.send.data_fin != DataFin::NotRequested
                && s.send.nxt == s.send.written
                && s.lifecycle != Lifecycle::SubflowsClosed
            {
                s.lifecycle.subflows_closed();
                sf.sub.close();
            }
        }
    }

    /// Drops reinjection ranges the peer acknowledged meanwhile.
    fn trim_reinject(&mut self) {
        let s = &mut self.s;
        while s.send.reinject.front().is_some_and(|r| r.end <= s.send.una) {
            s.send.reinject.pop_front();
        }
        if let Some(r) = s.send.reinject.front_mut() {
            r.start = r.start.max(s.send.una);
        }
    }

    /// Watches the DATA_ACK: when it has not moved for a retransmission
    /// interval although the subflow carrying the data acknowledged it
    /// (Linux's receiver may take data into the connection after its
    /// subflow ACK went out, and sends no other ACK on a wide window), the
    /// data is queued again, and the peer's answer to it carries the
    /// DATA_ACK. Checked once per interval, not per packet.
    fn data_retransmit(&mut self, now: Instant) {
        let s = &mut self.s;
        let t = ConnTimer::DataRetransmit;
        if s.send.una >= s.send.nxt {
            s.timers.stop(t);
            return;
        }
        if !s.timers.is_armed(t) {
            s.send.rtx_una = s.send.una;
            s.send.rtx_backoff = 0;
            s.timers.arm(t, now + Self::data_rto(&self.subflows));
            return;
        }
        if !s.timers.is_due(t, now) {
            return;
        }
        let rto = Self::data_rto(&self.subflows);
        if s.send.una != s.send.rtx_una {
            // Progress since armed: watch the next interval.
            s.send.rtx_una = s.send.una;
            s.send.rtx_backoff = 0;
            s.timers.arm(t, now + rto);
            return;
        }
        // The bytes at `una` still on a subflow (not acknowledged there) or
        // queued again are that subflow's or the reinjection's business.
        let una = s.send.una;
        let mut end = s.send.nxt.min(una + MAX_MAPPING);
        let mut held = false;
        if let Some(r) = s.send.reinject.front() {
            held = r.start <= una;
            end = end.min(r.start);
        }
        for sf in &self.subflows {
            for m in &sf.tx_maps {
                if m.dsn <= una && una < m.dsn + m.len {
                    held = true;
                } else if m.dsn > una {
                    end = end.min(m.dsn);
                }
            }
        }
        if !held && !self.sched.redundant() {
            s.send.reinject.push_front(una..end);
            s.send.rtx_backoff += 1;
        }
        s.timers
            .arm(t, now + rto * (1 << s.send.rtx_backoff.min(6)));
    }

    /// The data-level retransmission interval: the slowest usable subflow's
    /// RTO, at least [`DATA_RTO_MIN`].
    fn data_rto(subflows: &[MptcpSubflow]) -> Duration {
        subflows
            .iter()
            .filter(|f| f.usable())
            .map(|f| f.sub.stats().rto)
            .max()
            .unwrap_or(DATA_RTO_MIN)
            .max(DATA_RTO_MIN)
    }

    /// Redundant: every usable subflow sends every byte, each from its own
    /// cursor; the first copy to arrive counts.
    fn send_redundant(&mut self) {
        let s = &mut self.s;
        loop {
            let limit = s.send.written.min(s.send.peer_window_edge);
            let mut sent = false;
            for sf in self.subflows.iter_mut().filter(|f| f.usable()) {
                let st = sf.sub.stats();
                let queued = st.in_flight + sf.sub.unsent();
                let mss = st.mss.max(1) as u64;
                let room = (st.cwnd + mss)
                    .saturating_sub(queued)
                    .min(sf.sub.send_space() as u64);
                let start = sf.redundant_next.max(s.send.una);
                let mut n = limit.saturating_sub(start).min(room).min(MAX_MAPPING);
                if n > mss {
                    n -= n % mss;
                }
                if n == 0 || (n < mss && limit - start > n) {
                    continue;
                }
                let dsn_base = s.checksum.then(|| s.keys.local.dsn(0));
                let m = sf.send_mapped(&s.send.buf, start, n, dsn_base);
                sf.redundant_next = start + m;
                s.send.nxt = s.send.nxt.max(start + m);
                sent |= m > 0;
            }
            if !sent {
                break;
            }
        }
    }

    /// Reinjections first, then new data, each piece on the subflow the
    /// scheduler picks, until it picks none or nothing is left.
    fn send_scheduled(&mut self) {
        let s = &mut self.s;
        loop {
            let (start, avail, reinj) = match s.send.reinject.front() {
                Some(r) => (r.start, r.end - r.start, true),
                None => {
                    let limit = s.send.written.min(s.send.peer_window_edge);
                    (s.send.nxt, limit.saturating_sub(s.send.nxt), false)
                }
            };
            if avail == 0 {
                if !reinj {
                    self.sched.drained();
                }
                break;
            }
            self.views.clear();
            for sf in &self.subflows {
                let mut v = SubflowView {
                    usable: sf.usable() && sf.stalled_at.is_none(),
                    // A suspect carries data only when nothing better can.
                    backup: sf.backup || sf.peer_backup || sf.suspect_at.is_some(),
                    rank: sf.rank,
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
            let mut n = avail.min(self.views[i].room).min(MAX_MAPPING);
            if n > mss && n < avail {
                n -= n % mss;
            }
            if n == 0 {
                break;
            }
            {
                let sf = &mut self.subflows[i];
                let dsn_base = s.checksum.then(|| s.keys.local.dsn(0));
                let m = sf.send_mapped(&s.send.buf, start, n, dsn_base);
                if m == 0 {
                    continue;
                }
                if reinj {
                    sf.bytes_reinjected += m;
                }
            }
            self.sched.sent(i, n);
            if reinj {
                if let Some(r) = s.send.reinject.front_mut() {
                    r.start += n;
                    if r.start >= r.end {
                        s.send.reinject.pop_front();
                    }
                }
            } else {
                s.send.nxt += n;
            }
        }
    }

    /// Arms and fires the DATA_FIN timer; closes the subflows once both
    /// DATA_FINs are through; asks for the pure ACK pending address
    /// signals ride on.
    fn data_fin_and_close(&mut self, now: Instant) {
        let s = &mut self.s;
        if s.send.data_fin == DataFin::Pending
            && s.send.nxt == s.send.written
            && s.send.reinject.is_empty()
            && !s.timers.is_armed(ConnTimer::DataFin)
        {
            s.timers.arm(ConnTimer::DataFin, now);
        }
        // Acknowledging the DATA_FIN stops its timer.
        if s.timers.is_due(ConnTimer::DataFin, now) {
            let wait = DATA_FIN_TIMEOUT * (1 << s.send.data_fin_backoff.min(6));
            s.send.data_fin_backoff += 1;
            s.timers.arm(ConnTimer::DataFin, now + wait);
            for sf in self
                .subflows
                .iter_mut()
                .filter(|f| f.usable() || (f.fully_established && f.sub.is_established()))
            {
                sf.signals.data_fin = true;
                sf.sub.request_ack();
            }
        }
        // Both DATA_FINs done: close the subflows.
        let peer_done = s.recv.peer_fin.is_some_and(|f| s.recv.nxt >= f);
        if s.send.data_fin == DataFin::Acked
            && peer_done
            && s.lifecycle != Lifecycle::SubflowsClosed
        {
            s.lifecycle.subflows_closed();
            for sf in self.subflows.iter_mut() {
                sf.sub.close();
            }
        }
        if !s.signals.add_addr.is_empty()
            || !s.signals.echo_pending.is_empty()
            || s.signals.remove_pending.is_some()
        {
            let due =
                s.signals.echo_pending.len() + s.signals.add_addr.iter().filter(|t| t.due).count();
            if due > 0 || s.signals.remove_pending.is_some() {
                if let Some(sf) = self.subflows.iter_mut().find(|f| f.usable()) {
                    sf.sub.request_ack();
                }
            }
        }
    }

    pub fn send(&mut self, data: &[u8]) -> usize {
        let s = &mut self.s;
        if s.send.data_fin != DataFin::NotRequested
            || matches!(s.lifecycle, Lifecycle::Reset { .. })
        {
            return 0;
        }
        let free = s.send.buf.capacity() - (s.send.written - s.send.una);
        let n = (data.len() as u64).min(free) as usize;
        if n > 0 {
            s.send.buf.write_at(s.send.written, &data[..n]);
            s.send.written += n as u64;
        }
        n
    }
}
