//! The subflow-control API (the enhanced socket API of Hesmans and
//! Bonaventure): list subflows with their status, read one subflow's tuple,
//! open a subflow by tuple, close one by id, set per-subflow options
//! (backup priority, DSCP), read per-subflow statistics, and a stream of
//! events. The methods live on [`Connection`](super::Connection) and are
//! reachable through [`MptcpEndpoint`](super::MptcpEndpoint).

use crate::io::PathId;
use crate::tcp::FourTuple;
use std::net::{IpAddr, SocketAddr};

/// Identifies a subflow within its connection (never reused).
pub type SubflowId = u32;

/// Where a subflow is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubflowStatus {
    /// Handshake under way (or MP_JOIN third ACK not yet acknowledged).
    Establishing,
    FullyEstablished,
    /// Fully established and marked backup (by us or the peer).
    Backup,
    /// Closing or closed.
    Closing,
    Closed,
}

/// One row of [`Connection::subflows`](super::Connection::subflows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubflowInfo {
    pub id: SubflowId,
    pub tuple: FourTuple,
    pub path: PathId,
    pub status: SubflowStatus,
    pub local_addr_id: u8,
    pub remote_addr_id: u8,
    /// We asked the peer to treat it as backup.
    pub backup: bool,
    /// The peer asked us to treat it as backup.
    pub peer_backup: bool,
    pub dscp: u8,
}

/// Per-subflow statistics: the subflow's TCP figures (what `ss -i` shows)
/// and the data it carried for other subflows (`bytes_reinjected`).
pub use crate::tcp::SubflowStats;

/// Per-subflow options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubflowOptions {
    /// Backup priority (sent to the peer with MP_PRIO).
    pub backup: Option<bool>,
    /// DSCP (six bits) of the packets this subflow sends.
    pub dscp: Option<u8>,
}

/// Why a subflow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubflowCloseReason {
    /// FIN exchange.
    Normal,
    /// The peer reset it, with the MP_TCPRST reason code when one came.
    Reset(Option<u8>),
    /// Too many retransmission timeouts.
    TimedOut,
    /// The peer refused the SYN.
    Refused,
    /// An MP_JOIN HMAC did not verify.
    BadHmac,
    /// Its address was removed (REMOVE_ADDR) by the peer.
    AddressRemoved,
    /// Closed through the API or by the connection.
    Local,
}

/// Connection and subflow events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MptcpEvent {
    Established,
    /// The peer did not speak MPTCP, or a middlebox stripped the options:
    /// the connection goes on as plain TCP.
    FellBackToTcp,
    Closed,
    SubflowEstablished {
        id: SubflowId,
    },
    SubflowClosed {
        id: SubflowId,
        reason: SubflowCloseReason,
    },
    AddressAnnounced {
        addr_id: u8,
        addr: SocketAddr,
    },
    AddressRemoved {
        addr_id: u8,
    },
    RetransmissionTimeout {
        id: SubflowId,
    },
    /// The peer aborted the connection (MP_FASTCLOSE).
    FastClosed,
}

/// A local address the connection may use and announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddr {
    pub ip: IpAddr,
    /// The driver path packets from this address go out on.
    pub path: PathId,
    /// Announce it to the peer with ADD_ADDR (server side "signal").
    pub signal: bool,
}
