//! Data receive: mappings from the peer, data-level reassembly, the
//! DATA_ACK we send and the connection-level window.

use super::reset_reason;
use super::subflow::Sf;
use super::{Connection, Shared};
use crate::crypto;
use crate::mptcp::api::*;
use crate::wire::mptcp::{Dss, DssMapping};

/// Received mappings remembered per subflow, beyond which new ones are
/// ignored (the data then waits for a retransmission with its mapping).
pub(super) const RX_MAPPINGS: usize = 4096;

/// A mapping received from the peer (data-level offset relative to the
/// peer's IDSN + 1).
#[derive(Clone, Copy, Debug)]
pub(super) struct RxMap {
    pub(super) off: u64,
    pub(super) dsn: u64,
    pub(super) len: u64,
    pub(super) csum: Option<u16>,
    /// The mapping also carries the DATA_FIN: its checksum covers a
    /// data-level length one more than `len` (RFC 8684 3.3.1, as Linux).
    pub(super) fin: bool,
}

impl Shared {
    /// The 64-bit value nearest `near` whose low 32 bits are `v`.
    pub(super) fn expand(v: u64, wide: bool, near: u64) -> u64 {
        if wide {
            return v;
        }
        let cand = (near & !0xffff_ffff) | (v & 0xffff_ffff);
        [cand, cand.wrapping_add(1 << 32), cand.wrapping_sub(1 << 32)]
            .into_iter()
            .min_by_key(|c| c.wrapping_sub(near).min(near.wrapping_sub(*c)))
            .unwrap_or(cand)
    }

    pub(super) fn data_ack_abs(&self) -> u64 {
        let fin = self.peer_fin.is_some_and(|f| self.rcv_nxt >= f) as u64;
        self.remote_idsn
            .wrapping_add(1)
            .wrapping_add(self.rcv_nxt + fin)
    }

    pub(super) fn rcv_free(&self) -> u64 {
        self.rcv_buf.capacity() - (self.rcv_nxt - self.rcv_read)
    }

    /// Puts in-order data at its data-level offset.
    pub(super) fn deliver(&mut self, dsn: u64, data: &[u8]) {
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

impl Connection {
    pub(super) fn mapping_in(s: &mut Shared, sf: &mut Sf, d: &Dss, m: &DssMapping) {
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
                s.fall_back(FallbackReason::InfiniteMappingReceived);
                s.fail_received = true;
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

    pub(super) fn drain(&mut self, i: usize) {
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
}
