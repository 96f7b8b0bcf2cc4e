//! One TCP subflow, sans-IO: the state machine ([`Subflow`]) fed with parsed
//! segments and polled for segments to send, plus helpers it is built from.
//!
//! Sequence numbers are kept internally as 64-bit offsets from the initial
//! sequence numbers (the SYN at 0, the first data byte at 1), so wraparound
//! is handled once, where segments enter and leave.
//!
//! How a layer above (MPTCP) drives many subflows:
//! - incoming: it sees each parsed [`TcpRepr`](crate::wire::tcp::TcpRepr)
//!   (MPTCP options included) before handing it to [`Subflow::on_segment`];
//!   [`Subflow::recv_offset_of`] maps a segment's sequence number to the
//!   subflow stream offset that [`Subflow::recv_offset`] reports when the
//!   bytes are read, which is how DSS mappings are applied.
//! - outgoing: it edits `options.mptcp` of the repr that
//!   [`Subflow::poll_transmit`] returns before emitting it;
//!   [`Subflow::set_option_reserve`] shrinks payloads so the options fit,
//!   [`Subflow::send_offset_of`] maps the segment to the stream offsets
//!   [`Subflow::send_offset`] handed out, and [`Subflow::request_ack`] forces
//!   a pure ACK to carry a signal.
//! - congestion control: [`Subflow::set_congestion_control`] installs a
//!   coupled controller; [`Subflow::congestion_control_mut`] reaches it to
//!   push [`CouplingInfo`](crate::cc::CouplingInfo) computed from every
//!   subflow's [`Subflow::stats`].
//! - events: [`Subflow::poll_event`] (established, peer FIN, RTO, closed).

mod endpoint;
mod isn;
mod ranges;
mod ring;
mod rtt;
mod subflow;

pub use endpoint::{EndpointCounters, TcpEndpoint};
pub use isn::initial_sequence;
pub use ranges::RangeSet;
pub use ring::{pool, Ring};
pub use rtt::RttEstimator;
pub use subflow::{
    CloseReason, Fill, Subflow, SubflowEvent, SubflowStats, SubflowTimer, Verdict, WindowScale,
};

use crate::cc::CcAlgorithm;
use std::net::SocketAddr;
use std::time::Duration;

/// The addresses of one subflow, seen from this end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FourTuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// RFC 9293 connection states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

/// Per-subflow settings; every bound on memory is here.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest payload we accept and send without options (the MSS option
    /// we advertise); the path MTU minus IP and TCP headers.
    pub mss: u16,
    /// Send buffer bytes (allocated once, at creation).
    pub send_buffer: usize,
    /// Receive buffer bytes (allocated once); also the largest window offered.
    pub recv_buffer: usize,
    pub window_scaling: bool,
    pub timestamps: bool,
    pub sack: bool,
    pub initial_rto: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// Longest an ACK for in-order data is held back.
    pub delayed_ack: Duration,
    /// Segments acknowledged at once after the handshake (Linux's quickack).
    pub quickack_segments: u32,
    /// How long TIME_WAIT lasts (2*MSL; drivers in simulation use less).
    pub time_wait: Duration,
    pub initial_window_segments: u32,
    pub congestion_control: CcAlgorithm,
    /// Secret of the RFC 6528 ISN function; a driver must set a random one.
    pub isn_secret: [u8; 16],
    /// Retransmission timeouts of data in a row before giving up.
    pub max_retransmissions: u32,
    /// SYN (or SYN/ACK) retransmissions before giving up.
    pub max_syn_retransmissions: u32,
    /// TCP option bytes kept free on every segment for an upper layer
    /// (MPTCP's DSS); payloads shrink by that much.
    pub option_reserve: u8,
    /// Take the data of a SYN (TCP Fast Open without a cookie, as RFC 8803
    /// clients send it) and acknowledge it in the SYN/ACK. Off: the SYN's
    /// payload is ignored and the client sends it again.
    pub accept_syn_data: bool,
}

impl Config {
    /// The MSS to advertise on a path with this MTU: the MTU less the IP
    /// header (20 or 40 bytes) and the fixed TCP header.
    pub fn mss_for_mtu(mtu: u16, ipv6: bool) -> u16 {
        mtu.saturating_sub(if ipv6 { 60 } else { 40 }).max(64)
    }

    /// This configuration with the MSS of a path of the given MTU.
    pub fn with_mtu(mut self, mtu: u16, ipv6: bool) -> Config {
        self.mss = Config::mss_for_mtu(mtu, ipv6);
        self
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mss: 1460,
            send_buffer: 4 << 20,
            recv_buffer: 4 << 20,
            window_scaling: true,
            timestamps: true,
            sack: true,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            delayed_ack: Duration::from_millis(40),
            quickack_segments: 16,
            time_wait: Duration::from_secs(60),
            initial_window_segments: 10,
            congestion_control: CcAlgorithm::Cubic,
            isn_secret: crate::secret::random(),
            max_retransmissions: 15,
            max_syn_retransmissions: 6,
            option_reserve: 0,
            accept_syn_data: false,
        }
    }
}
