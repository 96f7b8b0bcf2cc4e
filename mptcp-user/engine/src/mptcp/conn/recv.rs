//! Data receive: mappings from the peer, data-level reassembly, the
//! DATA_ACK we send and the connection-level window.

use super::keys::expand_dsn;
use super::reset_reason;
use super::subflow::MptcpSubflow;
use super::{ConnState, Connection, Fallback, Linear, SubflowKind};
use crate::crypto;
use crate::mptcp::api::*;
use crate::tcp::{RangeSet, Ring};
use crate::wire::mptcp::{Dss, DssMapping};

/// Received mappings remembered per subflow, beyond which new ones are
/// ignored (the data then waits for a retransmission with its mapping).
pub(super) const RX_MAPPINGS: usize = 4096;

/// A mapping received from the peer (data-level offset relative to the
/// peer's IDSN + 1).
#[derive(Clone, Copy, Debug)]
pub(super) struct RxMapping {
    pub(super) off: u64,
    pub(super) dsn: u64,
    pub(super) len: u64,
    pub(super) csum: Option<u16>,
    /// The mapping also carries the DATA_FIN: its checksum covers a
    /// data-level length one more than `len` (RFC 8684 3.3.1, as Linux).
    pub(super) fin: bool,
}

/// The data-level receive side.
#[derive(Debug)]
pub(super) struct RecvState {
    pub(super) buf: Ring,
    /// Next data offset expected in order.
    pub(super) nxt: u64,
    /// Data offset the application has read up to.
    pub(super) read: u64,
    /// Data received beyond `nxt`.
    pub(super) out_of_order: RangeSet,
    /// Data offset of the peer's DATA_FIN.
    pub(super) peer_fin: Option<u64>,
    /// The peer sends 64-bit DSNs (we then send 64-bit DATA_ACKs).
    pub(super) peer_dsn64: bool,
    /// Right edge of the connection-level window in the last segment sent
    /// (data offset): under a memory limit, reading sends a window update
    /// once the edge could move an MSS past it (the subflows hold nothing
    /// to probe a closed window with).
    pub(super) advertised_edge: u64,
    /// Window bytes this connection counts in the thread's receive-window
    /// budget (`advertised_edge - nxt` when last advertised).
    promised: u64,
    /// TCP Fast Open: the SYN's data (when `tcp.accept_syn_data`). Linux
    /// keeps it outside the data sequence space: the application reads it
    /// before the data stream, and the initial subflow's sequence numbers
    /// in mappings count from after it (`syn_len` bytes).
    pub(super) syn_data: Vec<u8>,
    pub(super) syn_data_read: usize,
    pub(super) syn_len: u64,
}

/// The smallest window offered under memory pressure (one MSS).
const MIN_WINDOW: u64 = 1460;

impl RecvState {
    pub(super) fn new(buffer: usize, mss: u16) -> RecvState {
        let mss = mss.max(64) as usize;
        RecvState {
            buf: Ring::new(buffer),
            nxt: 0,
            read: 0,
            out_of_order: RangeSet::with_capacity(buffer / (2 * mss) + 16),
            peer_fin: None,
            peer_dsn64: false,
            advertised_edge: 0,
            promised: 0,
            syn_data: Vec::new(),
            syn_data_read: 0,
            syn_len: 0,
        }
    }

    /// Moves the initial subflow's SYN data out of its stream (MPTCP only:
    /// plain TCP keeps it in the stream, offset 0 = data 0).
    pub(super) fn take_syn_data(&mut self, sub: &mut crate::tcp::Subflow) {
        let mut data = vec![0u8; sub.readable()];
        let n = sub.recv(&mut data);
        data.truncate(n);
        self.syn_len = n as u64;
        self.syn_data = data;
    }

    /// The application's read of the SYN data, before the data stream.
    fn read_syn_data(&mut self, buf: &mut [u8]) -> usize {
        let rest = &self.syn_data[self.syn_data_read..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.syn_data_read += n;
        if self.syn_data_read == self.syn_data.len() {
            self.syn_data = Vec::new();
            self.syn_data_read = 0;
        }
        n
    }

    /// The data offset we acknowledge: all in-order data, and the peer's
    /// DATA_FIN once everything before it arrived.
    pub(super) fn acked(&self) -> u64 {
        let fin = self.peer_fin.is_some_and(|f| self.nxt >= f) as u64;
        self.nxt + fin
    }

    /// Room in the receive buffer: the connection-level window. Under a
    /// memory limit, no more than the chunks already allocated beyond what
    /// arrived plus what the pool has left; a connection holding nothing
    /// still gets one MSS, so none stalls for good. Under a receive-window
    /// budget, no more than what this connection promised already plus
    /// what the budget has left, nor more than a fair share of it, and at
    /// least one MSS.
    pub(super) fn free(&self) -> u64 {
        let held = self.nxt - self.read;
        let free = self.buf.capacity() - held;
        let room = self
            .buf
            .backed_from(self.nxt)
            .saturating_add(crate::tcp::pool::window_allowance());
        // Holding nothing, a connection always gets one MSS.
        let floor = if held == 0 { MIN_WINDOW } else { 0 };
        let budget = crate::tcp::pool::window_budget_for(self.promised).max(MIN_WINDOW);
        free.min(room.max(floor)).min(budget)
    }

    /// We advertised a window of `offered` bytes from `nxt`: the right edge
    /// the peer may fill, and this connection's share of the budget.
    pub(super) fn advertise(&mut self, offered: u64) {
        self.advertised_edge = self.nxt + offered;
        crate::tcp::pool::repromise(self.promised, offered);
        self.promised = offered;
    }

    /// Puts data at its data-level offset; in-order data advances `nxt`.
    pub(super) fn deliver(&mut self, dsn: u64, data: &[u8]) {
        let mut start = dsn;
        let mut end = dsn + data.len() as u64;
        if end <= self.nxt {
            return;
        }
        start = start.max(self.nxt);
        end = end.min(self.read + self.buf.capacity());
        if start >= end {
            return;
        }
        let from = (start - dsn) as usize;
        let to = (end - dsn) as usize;
        self.buf.write_at(start, &data[from..to]);
        if start == self.nxt {
            self.nxt = end;
            while let Some((a, b)) = self.out_of_order.first() {
                if a > self.nxt {
                    break;
                }
                self.nxt = self.nxt.max(b);
                self.out_of_order.pop_first_if_reaches(a);
            }
        } else {
            self.out_of_order.insert(start, end);
        }
    }
}

impl Drop for RecvState {
    fn drop(&mut self) {
        // A closed connection promises nothing more.
        crate::tcp::pool::repromise(self.promised, 0);
    }
}

impl ConnState {
    /// The DATA_ACK we send, as a 64-bit DSN.
    pub(super) fn data_ack_abs(&self) -> u64 {
        self.keys.remote().dsn(self.recv.acked())
    }
}

impl Connection {
    pub(super) fn mapping_in(s: &mut ConnState, sf: &mut MptcpSubflow, d: &Dss, m: &DssMapping) {
        if m.dsn_wide {
            s.recv.peer_dsn64 = true;
        }
        let base = s.keys.remote().dsn(0);
        let near = base.wrapping_add(s.recv.nxt);
        let dsn = expand_dsn(m.dsn, m.dsn_wide, near).wrapping_sub(base);
        // Huge values are old or bogus mappings (wrapped below zero).
        if dsn > s.recv.nxt + (1 << 40) {
            return;
        }
        let len = m.data_len as u64;
        if d.data_fin {
            if len >= 1 {
                s.recv.peer_fin = Some(dsn + len - 1);
                sf.sub.request_ack();
            }
            if m.ssn == 0 && len == 1 {
                return;
            }
        }
        // Subflow sequence numbers in mappings count from after the SYN's
        // data on the initial subflow (TFO).
        let ssn_base = if sf.kind == SubflowKind::Initial {
            s.recv.syn_len
        } else {
            0
        };
        if len == 0 {
            // An infinite mapping (RFC 8684 3.7): from its subflow sequence
            // number on, data follows linearly, without options.
            let next = sf.sub.recv_offset().saturating_sub(ssn_base) + 1;
            let rel = next as i64 + (m.ssn.wrapping_sub(next as u32) as i32 as i64);
            if let Fallback::Mptcp {
                recv: recv @ None, ..
            } = &mut s.fallback
            {
                if rel < 1 {
                    return;
                }
                *recv = Some(Linear {
                    subflow: 0,
                    subflow_off: rel as u64 - 1 + ssn_base,
                    data_off: dsn,
                });
                s.pending.fall_back_send = true;
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
        let next = sf.sub.recv_offset().saturating_sub(ssn_base) + 1;
        let rel = next as i64 + (m.ssn.wrapping_sub(next as u32) as i32 as i64);
        if rel < 1 {
            return;
        }
        let off = rel as u64 - 1 + ssn_base;
        if sf.rx_maps.iter().rev().any(|r| r.off == off) || sf.rx_maps.len() >= RX_MAPPINGS {
            return;
        }
        let map = RxMapping {
            off,
            dsn,
            len,
            csum: m.checksum,
            fin: d.data_fin,
        };
        let at = sf.rx_maps.partition_point(|r| r.off < off);
        sf.rx_maps.insert(at, map);
    }

    pub(super) fn drain(&mut self, i: usize) {
        let others_usable = self
            .subflows
            .iter()
            .enumerate()
            .any(|(j, f)| j != i && f.usable());
        let s = &mut self.s;
        let Some(sf) = self.subflows.get_mut(i) else {
            return;
        };
        // DSS checksums count subflow sequence numbers from after the
        // SYN's data on the initial subflow (TFO).
        let ssn_base = if sf.kind == SubflowKind::Initial {
            s.recv.syn_len
        } else {
            0
        };
        loop {
            let readable = sf.sub.readable() as u64;
            if readable == 0 {
                break;
            }
            let off = sf.sub.recv_offset();
            let linear = s.fallback.linear_recv();
            if let Some(l) = linear.filter(|l| off >= l.subflow_off) {
                let n = readable.min(self.scratch.len() as u64) as usize;
                let got = sf.sub.recv(&mut self.scratch[..n]);
                s.recv
                    .deliver(l.data_off + (off - l.subflow_off), &self.scratch[..got]);
                continue;
            }
            // Mapped bytes stop where the linear part starts.
            let readable = match linear {
                Some(l) => readable.min(l.subflow_off - off),
                None => readable,
            };
            while sf.rx_maps.front().is_some_and(|m| m.off + m.len <= off) {
                sf.rx_maps.pop_front();
            }
            let Some(m) = sf.rx_maps.front().copied().filter(|m| m.off <= off) else {
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
                        let dsn = s.keys.remote().dsn(m.dsn);
                        crypto::dss_checksum(
                            dsn,
                            (m.off - ssn_base + 1) as u32,
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
                    sf.signals.mp_fail = Some(s.keys.remote().dsn(m.dsn));
                    if others_usable {
                        sf.end.rst_reason = Some(reset_reason::MIDDLEBOX_INTERFERENCE);
                        sf.end.reason = Some(SubflowCloseReason::Local);
                        sf.sub.abort();
                        break;
                    }
                    sf.sub.request_ack();
                    continue;
                }
                s.recv.deliver(m.dsn + (off - m.off), &self.scratch[..got]);
            } else {
                let n = readable
                    .min(m.off + m.len - off)
                    .min(self.scratch.len() as u64) as usize;
                let got = sf.sub.recv(&mut self.scratch[..n]);
                s.recv.deliver(m.dsn + (off - m.off), &self.scratch[..got]);
            }
        }
        if s.fallback.linear_recv().is_some()
            && sf.sub.is_read_closed()
            && s.recv.peer_fin.is_none()
        {
            s.recv.peer_fin = Some(s.recv.nxt);
        }
        // The peer filled the window it had (small under a memory limit or
        // the window budget): it can send nothing more until we answer, so
        // answer now rather than after the delayed-ACK timer.
        if s.recv.nxt > s.recv.read && s.recv.advertised_edge < s.recv.nxt + MIN_WINDOW {
            sf.sub.request_ack();
        }
    }

    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        let s = &mut self.s;
        if s.recv.syn_data_read < s.recv.syn_data.len() {
            return s.recv.read_syn_data(buf);
        }
        let n = (buf.len() as u64).min(s.recv.nxt - s.recv.read) as usize;
        if n == 0 {
            return 0;
        }
        s.recv.buf.read_at(s.recv.read, &mut buf[..n]);
        self.consume(n)
    }

    /// Hands in-order bytes to `f` where they lie in the receive buffer (up
    /// to 64 slices; the SYN's data alone first); what `f` takes counts as
    /// read. See [`crate::io::ByteStream::read_slices`].
    pub fn read_slices(&mut self, f: &mut dyn FnMut(&[std::io::IoSlice<'_>]) -> usize) -> usize {
        const MAX: usize = 64;
        let r = &self.s.recv;
        let mut iov = [std::io::IoSlice::new(&[]); MAX];
        let mut n = 0;
        if r.syn_data_read < r.syn_data.len() {
            iov[0] = std::io::IoSlice::new(&r.syn_data[r.syn_data_read..]);
            n = 1;
        } else {
            let (mut at, end) = (r.read, r.nxt);
            while at < end && n < MAX {
                let b = r
                    .buf
                    .slice_at(at, (end - at).min(usize::MAX as u64) as usize);
                iov[n] = std::io::IoSlice::new(b);
                n += 1;
                at += b.len() as u64;
            }
        }
        if n == 0 {
            return 0;
        }
        let offered: usize = iov[..n].iter().map(|s| s.len()).sum();
        let took = f(&iov[..n]).min(offered);
        self.consume(took)
    }

    /// Drops up to `max` in-order bytes as if read, without copying them.
    pub fn consume(&mut self, max: usize) -> usize {
        let s = &mut self.s;
        if s.recv.syn_data_read < s.recv.syn_data.len() {
            // Data that came with the SYN goes first, as in recv.
            let n = (s.recv.syn_data.len() - s.recv.syn_data_read).min(max);
            s.recv.syn_data_read += n;
            if s.recv.syn_data_read == s.recv.syn_data.len() {
                s.recv.syn_data = Vec::new();
                s.recv.syn_data_read = 0;
            }
            return n;
        }
        let n = (max as u64).min(s.recv.nxt - s.recv.read) as usize;
        if n == 0 {
            return 0;
        }
        let before = s.recv.free();
        s.recv.buf.release(s.recv.read + n as u64);
        s.recv.read += n as u64;
        let cap = s.recv.buf.capacity();
        let after = s.recv.free();
        // Tell the peer when the window reopens past half the buffer; under
        // a memory limit (where windows run small and may have closed)
        // whenever the edge can move an MSS past the one it knows.
        let limited = crate::tcp::pool::window_allowance() != u64::MAX
            || crate::tcp::pool::window_budget_left() != u64::MAX;
        let edge = s.recv.nxt + after;
        if (before < cap / 2 && after >= cap / 2)
            || (limited && edge >= s.recv.advertised_edge + MIN_WINDOW)
        {
            if let Some(sf) = self.subflows.iter_mut().find(|f| f.usable()) {
                sf.sub.request_ack();
            }
        }
        n
    }
}
