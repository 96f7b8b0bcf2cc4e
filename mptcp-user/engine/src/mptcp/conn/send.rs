//! Data send: the data-level send buffer, mappings handed to subflows,
//! the scheduler hand-off, reinjection and the DATA_FIN.

use super::{Connection, Shared};
use crate::sched::SubflowView;
use crate::time::Instant;
use std::time::Duration;

/// Largest DSS mapping we create (its length field has 16 bits).
pub(super) const MAX_MAPPING: u64 = 65535;
/// DATA_FIN retransmission interval before backoff.
pub(super) const DATA_FIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Data handed to a subflow: its stream offset, data-level offset, length
/// and DSS checksum.
#[derive(Clone, Copy, Debug)]
pub(super) struct TxMap {
    pub(super) off: u64,
    pub(super) dsn: u64,
    pub(super) len: u64,
    pub(super) csum: u16,
    pub(super) reinjected: bool,
}

impl Shared {
    pub(super) fn on_data_ack(&mut self, abs: u64, wide: bool, window: u64) {
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
}

impl Connection {
    /// Queues the data-level ranges subflow `i` holds but the peer has not
    /// acknowledged, for sending on other subflows.
    pub(super) fn reinject(&mut self, i: usize) {
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

    /// Pushes the aggregate of every usable subflow to coupled controllers
    /// (LIA, OLIA); uncoupled ones are left alone.
    pub(super) fn couple(&mut self) {
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
    pub(super) fn schedule(&mut self, now: Instant) {
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
}
