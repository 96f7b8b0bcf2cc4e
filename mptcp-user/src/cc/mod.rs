//! Congestion control behind one trait, so a subflow can run NewReno, CUBIC
//! or (in the MPTCP layer) a coupled controller such as LIA or OLIA.
//!
//! Windows are in bytes. The subflow calls the hooks below; a connection-level
//! object that owns several subflows may push aggregate figures through
//! [`CongestionControl::on_coupling`] before acks are processed, which is all
//! LIA (RFC 6356) needs: alpha and the sum of the sibling windows.

mod cubic;
mod newreno;

pub use cubic::{Cubic, CubicConfig};
pub use newreno::NewReno;

use crate::time::Instant;
use core::any::Any;
use std::time::Duration;

/// What an ACK that advanced the cumulative ACK point tells the controller.
#[derive(Clone, Copy, Debug)]
pub struct AckEvent {
    pub now: Instant,
    /// Bytes newly acknowledged (cumulatively) by this ACK.
    pub acked_bytes: u64,
    /// An RTT sample taken from this ACK, if any.
    pub rtt_sample: Option<Duration>,
    /// The smoothed RTT after this ACK (zero before the first sample).
    pub srtt: Duration,
    /// The lowest RTT seen on this subflow (zero before the first sample).
    pub min_rtt: Duration,
    /// Bytes in flight before this ACK was processed.
    pub prior_in_flight: u64,
    /// True when the sender was limited by the congestion window recently;
    /// controllers must not grow the window of an application-limited flow.
    pub cwnd_limited: bool,
    /// Sender maximum segment size, in bytes.
    pub mss: u32,
    /// Round-trip counter: goes up by one each time all data outstanding at
    /// the start of the previous round has been acknowledged.
    pub round: u64,
}

/// Aggregate view of all subflows of one connection, for coupled controllers.
/// Each subflow of a connection gets the same figures except `path_alpha`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CouplingInfo {
    /// Subflows taking part in the coupling.
    pub subflows: usize,
    /// Sum of the congestion windows of those subflows, in bytes.
    pub total_cwnd: u64,
    /// Sum over subflows of cwnd_i / srtt_i, in bytes per second.
    pub sum_cwnd_over_rtt: f64,
    /// Max over subflows of cwnd_i / srtt_i^2, in bytes per second squared.
    pub max_cwnd_over_rtt_sq: f64,
    /// A coefficient computed for this subflow by the connection (OLIA's
    /// alpha_r, or LIA's alpha when the connection computes it itself).
    pub path_alpha: f64,
}

/// A congestion controller for one subflow. Object safe, so subflows hold a
/// `Box<dyn CongestionControl>` chosen per connection.
pub trait CongestionControl: core::fmt::Debug + Send {
    /// Human-readable name ("cubic", "newreno", "lia", ...).
    fn name(&self) -> &'static str;
    /// Congestion window in bytes.
    fn window(&self) -> u64;
    /// Slow-start threshold in bytes (`u64::MAX` before the first loss).
    fn ssthresh(&self) -> u64;
    /// The sender's MSS changed (set once after the handshake).
    fn set_mss(&mut self, mss: u32);
    /// Data was cumulatively acknowledged outside loss recovery.
    fn on_ack(&mut self, ack: &AckEvent);
    /// A loss was detected (fast retransmit): reduce the window once per
    /// window of data. `in_flight` is the bytes outstanding at that moment.
    fn on_congestion_event(&mut self, now: Instant, in_flight: u64);
    /// Loss recovery ended (the recovery point was acknowledged).
    fn on_recovery_exit(&mut self, _now: Instant) {}
    /// The retransmission timer fired: collapse to the loss window.
    fn on_rto(&mut self, now: Instant, in_flight: u64);
    /// Aggregate figures of sibling subflows, for coupled controllers.
    /// Uncoupled controllers ignore it.
    fn on_coupling(&mut self, _info: &CouplingInfo) {}
    /// Lets an owner reach its own concrete controller type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Which built-in controller a new subflow gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CcAlgorithm {
    NewReno,
    #[default]
    Cubic,
}

impl CcAlgorithm {
    /// Builds the controller with RFC 6928's initial window of `init_segments`.
    pub fn build(self, mss: u32, init_segments: u32) -> Box<dyn CongestionControl> {
        match self {
            CcAlgorithm::NewReno => Box::new(NewReno::new(mss, init_segments)),
            CcAlgorithm::Cubic => Box::new(Cubic::new(mss, init_segments, CubicConfig::default())),
        }
    }

    /// Parses "cubic" or "newreno" (as used on command lines).
    pub fn from_name(name: &str) -> Option<CcAlgorithm> {
        match name.to_ascii_lowercase().as_str() {
            "cubic" => Some(CcAlgorithm::Cubic),
            "newreno" | "reno" => Some(CcAlgorithm::NewReno),
            _ => None,
        }
    }
}

/// The window RFC 5681 allows after an RTO: one segment.
pub(crate) fn loss_window(mss: u32) -> u64 {
    mss as u64
}

/// The smallest ssthresh RFC 5681 allows: two segments.
pub(crate) fn min_ssthresh(mss: u32) -> u64 {
    2 * mss as u64
}
