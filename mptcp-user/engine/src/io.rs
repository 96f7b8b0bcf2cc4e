//! The seam between the sans-IO engine and its drivers (the simulator, the
//! AF_XDP datapath, benchmarks). A driver hands the engine frames and time,
//! and asks it for frames to send and for its next deadline.

use crate::tcp::FourTuple;
use crate::time::Instant;

/// Index of a path: an interface for the AF_XDP driver, a link for the simulator.
pub type PathId = usize;

/// An engine that consumes and produces IP packets (starting at the IPv4 or
/// IPv6 header; the link layer is the driver's business).
pub trait Engine {
    /// A packet arrived on `path`. Malformed packets are counted and dropped.
    fn handle_packet(&mut self, now: Instant, path: PathId, packet: &[u8]);
    /// Writes the next packet to send into `buf` and returns its path and
    /// length, or `None` when there is nothing to send now.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, usize)>;
    /// The next instant at which `handle_timeout` must be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Fires every timer due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// Journal every tuple and token filed or forgotten, for a driver that
    /// steers segments between several engines (engines without
    /// connections to steer keep nothing).
    fn set_affinity_journal(&mut self, _on: bool) {}
    /// The next change of the journal.
    fn poll_affinity(&mut self) -> Option<AffinityChange> {
        None
    }
    /// The driver saw `path` go away (its link down, its address removed):
    /// what it carries should move to the other paths at once.
    fn path_down(&mut self, _now: Instant, _path: PathId) {}
    /// `path` is back (link up, address added): use it again without
    /// waiting for backoffs.
    fn path_up(&mut self, _now: Instant, _path: PathId) {}
}

/// A tuple or token the endpoint filed or forgot, for a driver that steers
/// segments to the endpoint owning them ([`Engine::poll_affinity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityChange {
    Tuple {
        tuple: FourTuple,
        added: bool,
    },
    /// Our token of an MPTCP connection (MP_JOIN SYNs carry it).
    Token {
        token: u32,
        added: bool,
    },
}

/// The application side of one connection: a reliable byte stream.
pub trait ByteStream {
    /// Queues bytes for sending; returns how many were accepted (bounded buffers).
    fn send(&mut self, data: &[u8]) -> usize;
    /// Reads in-order bytes; returns how many were copied.
    fn recv(&mut self, buf: &mut [u8]) -> usize;
    /// Drops up to `max` in-order bytes unread, as if read (an application
    /// that discards); returns how many. Engines override it to skip the copy.
    fn consume(&mut self, max: usize) -> usize {
        let mut scratch = [0u8; 4096];
        let mut done = 0;
        while done < max {
            let want = (max - done).min(scratch.len());
            let n = self.recv(&mut scratch[..want]);
            if n == 0 {
                break;
            }
            done += n;
        }
        done
    }
    /// Whether [`ByteStream::read_slices`] hands bytes over where they lie
    /// (the engines); otherwise read them with `recv`.
    fn can_read_slices(&self) -> bool {
        false
    }
    /// Hands in-order bytes to `f` as slices of the receive buffer, where
    /// they lie (several at once, for `writev`); `f` returns how many bytes
    /// it took, and those count as read (the rest stays). Returns that
    /// count. Only where [`ByteStream::can_read_slices`] says so.
    fn read_slices(&mut self, f: &mut dyn FnMut(&[std::io::IoSlice<'_>]) -> usize) -> usize {
        let _ = f;
        0
    }
    /// Sends FIN (DATA_FIN for MPTCP) once all queued bytes are sent.
    fn close(&mut self);
    /// True once the connection can carry data.
    fn is_established(&self) -> bool;
    /// True once the peer closed its side and every byte was read.
    fn is_read_closed(&self) -> bool;
    /// True once the connection is fully closed or reset.
    fn is_closed(&self) -> bool;
}

/// Per-path figures a driver or report can show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    pub path: PathId,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Payload bytes received in order.
    pub bytes_received: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
}
