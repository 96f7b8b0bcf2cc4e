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

/// Why a connection went on as plain TCP (mptcp_net-next #514).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallbackReason {
    /// Server: the client's SYN had no MP_CAPABLE (or not version 1).
    SynWithoutMpCapable,
    /// Client: the SYN/ACK had no MP_CAPABLE.
    SynAckWithoutMpCapable,
    /// Server: the third ACK came without MP_CAPABLE (stripped).
    AckWithoutMpCapable,
    /// The peer sent an infinite mapping.
    InfiniteMappingReceived,
    /// The peer reported a bad DSS checksum (MP_FAIL) with one subflow left.
    MpFailReceived,
}

impl FallbackReason {
    /// A short name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            FallbackReason::SynWithoutMpCapable => "syn-without-mp-capable",
            FallbackReason::SynAckWithoutMpCapable => "synack-without-mp-capable",
            FallbackReason::AckWithoutMpCapable => "ack-without-mp-capable",
            FallbackReason::InfiniteMappingReceived => "infinite-mapping-received",
            FallbackReason::MpFailReceived => "mp-fail-received",
        }
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Established,
    /// Our DATA_FIN is queued or sent, or the peer's arrived.
    Closing,
    Closed,
    /// Reset or fast-closed.
    Reset,
}

impl ConnectionState {
    pub fn name(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Established => "established",
            ConnectionState::Closing => "closing",
            ConnectionState::Closed => "closed",
            ConnectionState::Reset => "reset",
        }
    }
}

/// One row of [`Connection::info`](super::Connection::info): what an
/// operator lists. Byte counts are data-level and survive subflows closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Our token (the one `ip mptcp monitor` and `ss -M` show).
    pub token: u32,
    pub remote_token: u32,
    /// The initial subflow's addresses.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: ConnectionState,
    pub fallback: Option<FallbackReason>,
    /// Data-level bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Data-level bytes sent (first transmissions).
    pub bytes_sent: u64,
    /// Data-level bytes received in order.
    pub bytes_received: u64,
    /// Subflows not closed.
    pub subflows: usize,
    /// Subflows ever opened, closed ones included.
    pub subflows_total: usize,
    /// Sum over every subflow, closed ones included.
    pub bytes_retransmitted: u64,
    pub bytes_reinjected: u64,
}

/// Event kinds, named as `ip mptcp monitor` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorKind {
    Created,
    Established,
    Closed,
    Announced,
    Removed,
    SfEstablished,
    SfClosed,
    SfPrio,
}

impl MonitorKind {
    pub fn name(self) -> &'static str {
        match self {
            MonitorKind::Created => "CREATED",
            MonitorKind::Established => "ESTABLISHED",
            MonitorKind::Closed => "CLOSED",
            MonitorKind::Announced => "ANNOUNCED",
            MonitorKind::Removed => "REMOVED",
            MonitorKind::SfEstablished => "SF_ESTABLISHED",
            MonitorKind::SfClosed => "SF_CLOSED",
            MonitorKind::SfPrio => "SF_PRIO",
        }
    }
}

/// One event of [`MptcpEndpoint::poll_monitor`](super::MptcpEndpoint::poll_monitor),
/// with what `ip mptcp monitor` prints: token, address ids, addresses,
/// ports, backup flag, and the error or reset reason of a closed subflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorEvent {
    pub kind: MonitorKind,
    pub token: u32,
    /// The subflow (SF_* events).
    pub subflow: Option<SubflowId>,
    pub local_id: Option<u8>,
    pub remote_id: Option<u8>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub backup: bool,
    /// SF_CLOSED: why.
    pub close_reason: Option<SubflowCloseReason>,
    /// SF_CLOSED: the MP_TCPRST reason code the peer sent, if any.
    pub reset_reason: Option<u8>,
}

impl SubflowCloseReason {
    pub fn name(self) -> &'static str {
        match self {
            SubflowCloseReason::Normal => "normal",
            SubflowCloseReason::Reset(_) => "reset",
            SubflowCloseReason::TimedOut => "timed-out",
            SubflowCloseReason::Refused => "refused",
            SubflowCloseReason::BadHmac => "bad-hmac",
            SubflowCloseReason::AddressRemoved => "address-removed",
            SubflowCloseReason::Local => "local",
        }
    }
}

impl SubflowStatus {
    pub fn name(self) -> &'static str {
        match self {
            SubflowStatus::Establishing => "establishing",
            SubflowStatus::FullyEstablished => "established",
            SubflowStatus::Backup => "backup",
            SubflowStatus::Closing => "closing",
            SubflowStatus::Closed => "closed",
        }
    }
}
