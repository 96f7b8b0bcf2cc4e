//! The connection's view of one subflow: the TCP subflow itself, how it
//! joined, its mappings and its pending per-subflow signals.

use super::recv::RxMapping;
use super::send::TxMapping;
use crate::crypto;
use crate::io::PathId;
use crate::mptcp::api::*;
use crate::tcp::{Ring, State, Subflow};
use std::collections::VecDeque;

/// How the subflow joined the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SubflowKind {
    /// The initial subflow (MP_CAPABLE).
    Initial,
    /// An additional subflow (MP_JOIN) with both nonces.
    Join { local_nonce: u32, remote_nonce: u32 },
}

/// Client-side handshake progress beyond the TCP states.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Handshake {
    /// MP_JOIN: third ACK sent, waiting for the peer's ACK.
    pub(super) join_ack_sent: bool,
    /// Initial subflow: the server sent an MPTCP option after the
    /// handshake, so it has our keys; until then the first mapping goes
    /// out as MP_CAPABLE with data (RFC 8684 3.1).
    pub(super) mpc_confirmed: bool,
}

/// Options this subflow owes the peer on its next suitable segment.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SubflowSignals {
    /// Client: the next segment is the third ACK of the handshake.
    pub(super) third_ack: bool,
    /// MP_PRIO with our backup flag.
    pub(super) mp_prio: bool,
    /// DATA_FIN on a pure ACK (retransmitted on a timer).
    pub(super) data_fin: bool,
    /// MP_FAIL with this data sequence number.
    pub(super) mp_fail: Option<u64>,
}

/// How the subflow ends, and what the application was told.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SubflowEnd {
    /// MP_TCPRST reason to put on our RST.
    pub(super) rst_reason: Option<u8>,
    /// MP_TCPRST reason the peer put on its RST.
    pub(super) peer_rst_reason: Option<u8>,
    pub(super) reason: Option<SubflowCloseReason>,
    /// Closed through the API: FIN queued.
    pub(super) closing: bool,
    /// SubflowEstablished was reported.
    pub(super) announced_established: bool,
    /// SubflowClosed was reported (or must never be: a refused MP_JOIN).
    pub(super) announced_closed: bool,
    /// SF_CLOSED went to the monitor.
    pub(super) monitor_closed: bool,
}

/// The connection's state for one subflow: the TCP subflow and the MPTCP
/// layer on it (Linux's mptcp_subflow_context).
#[derive(Debug)]
pub(super) struct MptcpSubflow {
    pub(super) id: SubflowId,
    pub(super) sub: Subflow,
    pub(super) path: PathId,
    pub(super) local_addr_id: u8,
    pub(super) remote_addr_id: u8,
    /// We asked the peer to treat it as backup.
    pub(super) backup: bool,
    /// The peer asked us to treat it as backup.
    pub(super) peer_backup: bool,
    /// It went stale: on its return we ask the peer (MP_PRIO) to treat it
    /// as backup until the peer's side shows it lost nothing there. A
    /// Linux peer's subflow comes back in retransmission backoff, and what
    /// it schedules there would wait for that backed-off timer (seconds).
    pub(super) peer_held: bool,
    /// Its place among the subflows when the scheduler breaks a tie (the
    /// order of creation; a subflow re-created for a lost pair takes the
    /// lost one's, so a returned path keeps its rank).
    pub(super) rank: u32,
    pub(super) dscp: u8,
    pub(super) kind: SubflowKind,
    pub(super) handshake: Handshake,
    /// May carry data (keys confirmed, MP_JOIN third ACK acknowledged):
    /// RFC 8684's "fully established".
    pub(super) fully_established: bool,
    /// Redundant scheduling: the next data-level offset this subflow sends.
    pub(super) redundant_next: u64,
    /// A retransmission timeout fired when this much was acknowledged, and
    /// nothing was since: the scheduler leaves the subflow alone (and
    /// backups may take over).
    pub(super) stalled_at: Option<u64>,
    /// Another subflow from the same local path went stale when this one
    /// had this much acknowledged: it is likely dead too (shared fate), so
    /// the scheduler treats it as a backup until it or a sibling on its path
    /// is acknowledged again.
    pub(super) suspect_at: Option<u64>,
    /// Mappings of the data we handed it, in subflow order.
    pub(super) tx_maps: VecDeque<TxMapping>,
    /// `tx_maps` are in data-level order too (no reinjection among them).
    pub(super) tx_maps_ordered: bool,
    /// Mappings the peer sent on it, in subflow order.
    pub(super) rx_maps: VecDeque<RxMapping>,
    pub(super) signals: SubflowSignals,
    pub(super) end: SubflowEnd,
    pub(super) bytes_reinjected: u64,
}

impl MptcpSubflow {
    pub(super) fn new(
        id: SubflowId,
        sub: Subflow,
        path: PathId,
        kind: SubflowKind,
        local_addr_id: u8,
        remote_addr_id: u8,
    ) -> MptcpSubflow {
        MptcpSubflow {
            id,
            sub,
            path,
            local_addr_id,
            remote_addr_id,
            backup: false,
            peer_backup: false,
            peer_held: false,
            rank: id,
            dscp: 0,
            kind,
            handshake: Handshake::default(),
            fully_established: false,
            redundant_next: 0,
            stalled_at: None,
            suspect_at: None,
            tx_maps: VecDeque::new(),
            tx_maps_ordered: true,
            rx_maps: VecDeque::new(),
            signals: SubflowSignals::default(),
            end: SubflowEnd::default(),
            bytes_reinjected: 0,
        }
    }

    /// Its path came back after it went stale: ask the peer (MP_PRIO) to
    /// keep its data off it for now (see `peer_held`).
    pub(super) fn hold_peer(&mut self) {
        if self.peer_held && self.end.reason.is_none() {
            self.signals.mp_prio = true;
            self.sub.request_ack();
        }
    }

    /// Hands `len` bytes of the connection's send buffer `buf` from
    /// data-level offset `start` to the subflow under one new mapping, with
    /// its DSS checksum when `dsn_base` (IDSN + 1) is given, and ends the
    /// segment there so no segment straddles two mappings. The bytes stay
    /// in `buf`: segments are filled from it ([`MptcpSubflow::fill`]).
    /// Returns how many bytes the subflow took.
    pub(super) fn send_mapped(
        &mut self,
        buf: &Ring,
        start: u64,
        len: u64,
        dsn_base: Option<u64>,
    ) -> u64 {
        let off = self.sub.send_offset();
        let m = self.sub.send_external(len as usize) as u64;
        if m == 0 {
            return 0;
        }
        let csum = dsn_base.map_or(0, |base| {
            let mut c =
                crypto::DssChecksum::new(base.wrapping_add(start), (off + 1) as u32, m as u16);
            buf.for_each_slice(start, m as usize, |b| c.add(b));
            c.finish()
        });
        if self.tx_maps.back().is_some_and(|b| b.dsn > start) {
            self.tx_maps_ordered = false;
        }
        self.tx_maps.push_back(TxMapping {
            off,
            dsn: start,
            len: m,
            csum,
            reinjected: false,
        });
        self.sub.mark_send_boundary();
        m
    }

    /// The lowest data-level offset this subflow may still send again (a
    /// subflow-level retransmission needs the bytes even once the data
    /// level has them acknowledged through another subflow).
    pub(super) fn lowest_needed(&mut self) -> Option<u64> {
        if self.tx_maps.is_empty() {
            self.tx_maps_ordered = true;
            return None;
        }
        if self.tx_maps_ordered {
            return self.tx_maps.front().map(|m| m.dsn);
        }
        self.tx_maps.iter().map(|m| m.dsn).min()
    }

    /// Writes the subflow's stream bytes from `off` into `out`, from the
    /// connection's send buffer through the mappings (or the linear part
    /// after a fallback): what the subflow's segments carry.
    pub(super) fn fill(
        maps: &VecDeque<TxMapping>,
        linear: Option<(u64, u64)>,
        buf: &Ring,
        off: u64,
        out: &mut [u8],
    ) {
        let dsn = match linear {
            Some((sub_off, data_off)) if off >= sub_off => Some(data_off + (off - sub_off)),
            _ => {
                let i = maps.partition_point(|m| m.off + m.len <= off);
                maps.get(i)
                    .filter(|m| m.off <= off)
                    .map(|m| m.dsn + (off - m.off))
            }
        };
        match dsn {
            Some(d) => buf.read_at(d, out),
            // Unmapped (a closed subflow's): never needed by the peer.
            None => out.fill(0),
        }
    }
}

impl MptcpSubflow {
    pub(super) fn usable(&self) -> bool {
        self.fully_established
            && !self.end.closing
            && self.end.reason.is_none()
            && matches!(self.sub.state(), State::Established | State::CloseWait)
    }

    pub(super) fn status(&self) -> SubflowStatus {
        if self.sub.is_closed() {
            SubflowStatus::Closed
        } else if self.end.closing
            || !matches!(self.sub.state(), State::Established | State::CloseWait)
        {
            if self.sub.is_established() || self.sub.state() == State::TimeWait || self.end.closing
            {
                SubflowStatus::Closing
            } else {
                SubflowStatus::Establishing
            }
        } else if !self.fully_established {
            SubflowStatus::Establishing
        } else if self.backup || self.peer_backup {
            SubflowStatus::Backup
        } else {
            SubflowStatus::FullyEstablished
        }
    }
}
