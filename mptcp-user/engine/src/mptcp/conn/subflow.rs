//! The connection's view of one subflow: the TCP subflow itself, how it
//! joined, its mappings and its pending per-subflow signals.

use super::recv::RxMap;
use super::send::TxMap;
use crate::crypto;
use crate::io::PathId;
use crate::mptcp::api::*;
use crate::tcp::{State, Subflow};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The initial subflow (MP_CAPABLE).
    Capable,
    /// An additional subflow (MP_JOIN) with both nonces.
    Join { local_nonce: u32, remote_nonce: u32 },
}

#[derive(Debug)]
pub(super) struct Sf {
    pub(super) id: SubflowId,
    pub(super) sub: Subflow,
    pub(super) path: PathId,
    pub(super) local_id: u8,
    pub(super) remote_id: u8,
    pub(super) backup: bool,
    pub(super) peer_backup: bool,
    pub(super) dscp: u8,
    pub(super) kind: Kind,
    /// May carry data (keys confirmed, MP_JOIN third ACK acknowledged).
    pub(super) fully: bool,
    /// Client: the next segment is the third ACK of the handshake.
    pub(super) third_ack_pending: bool,
    /// Client MP_JOIN: third ACK sent, waiting for the peer's ACK.
    pub(super) join_ack_sent: bool,
    /// Client, initial subflow: the server sent an MPTCP option after the
    /// handshake, so it has our keys; until then the first mapping goes
    /// out as MP_CAPABLE with data (RFC 8684 3.1).
    pub(super) mpc_confirmed: bool,
    /// Redundant scheduling: the next data-level offset this subflow sends.
    pub(super) red_next: u64,
    /// A retransmission timeout fired and nothing was acknowledged since:
    /// the scheduler leaves it alone (and backups may take over).
    pub(super) stale: bool,
    pub(super) acked_at_rto: u64,
    pub(super) tx: VecDeque<TxMap>,
    pub(super) rx: VecDeque<RxMap>,
    pub(super) prio_pending: bool,
    pub(super) data_fin_pending: bool,
    pub(super) fail_pending: Option<u64>,
    /// MP_TCPRST reason to put on our RST.
    pub(super) rst_reason: Option<u8>,
    /// MP_TCPRST reason the peer put on its RST.
    pub(super) peer_rst_reason: Option<u8>,
    pub(super) close_reason: Option<SubflowCloseReason>,
    pub(super) closing: bool,
    /// SubflowEstablished was reported.
    pub(super) announced: bool,
    /// SubflowClosed was reported (or must never be: a refused MP_JOIN).
    pub(super) close_announced: bool,
    /// SF_CLOSED went to the monitor.
    pub(super) monitor_closed: bool,
    pub(super) bytes_reinjected: u64,
}

impl Sf {
    /// Hands `data` (data-level offset `start`) to the subflow under one new
    /// mapping, with its DSS checksum when `dsn_base` (IDSN + 1) is given,
    /// and ends the segment there so no segment straddles two mappings.
    /// Returns how many bytes the subflow took.
    pub(super) fn send_mapped(&mut self, data: &[u8], start: u64, dsn_base: Option<u64>) -> u64 {
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
    pub(super) fn usable(&self) -> bool {
        self.fully
            && !self.closing
            && self.close_reason.is_none()
            && matches!(self.sub.state(), State::Established | State::CloseWait)
    }

    pub(super) fn status(&self) -> SubflowStatus {
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
