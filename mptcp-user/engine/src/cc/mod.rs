//! Congestion control behind one trait, so a subflow can run NewReno, CUBIC
//! or (in the MPTCP layer) a coupled controller such as LIA or OLIA.
//!
//! Windows are in bytes. The subflow calls the hooks below; a connection-level
//! object that owns several subflows may push aggregate figures through
//! [`CongestionControl::on_coupling`] before acks are processed, which is all
//! LIA (RFC 6356) needs: alpha and the sum of the sibling windows.

mod cubic;
mod lia;
mod newreno;
mod olia;

pub use cubic::{Cubic, CubicConfig};
pub use lia::Lia;
pub use newreno::NewReno;
pub use olia::{olia_alphas, Olia, OliaPath};

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

impl CouplingInfo {
    /// Aggregates (cwnd in bytes, smoothed RTT) of every subflow taking
    /// part; subflows without an RTT sample yet are left out of the rates.
    pub fn from_subflows(subflows: impl IntoIterator<Item = (u64, Duration)>) -> CouplingInfo {
        let mut info = CouplingInfo::default();
        for (cwnd, srtt) in subflows {
            info.subflows += 1;
            info.total_cwnd += cwnd;
            let rtt = srtt.as_secs_f64();
            if rtt > 0.0 {
                info.sum_cwnd_over_rtt += cwnd as f64 / rtt;
                info.max_cwnd_over_rtt_sq =
                    info.max_cwnd_over_rtt_sq.max(cwnd as f64 / (rtt * rtt));
            }
        }
        info
    }

    /// RFC 6356's alpha: cwnd_total * max(cwnd_i / rtt_i^2) / (sum cwnd_i / rtt_i)^2
    /// (1 when there is nothing to couple with yet).
    pub fn lia_alpha(&self) -> f64 {
        if self.sum_cwnd_over_rtt <= 0.0 {
            return 1.0;
        }
        self.total_cwnd as f64 * self.max_cwnd_over_rtt_sq
            / (self.sum_cwnd_over_rtt * self.sum_cwnd_over_rtt)
    }
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
    /// RFC 6356 coupled increase; needs `on_coupling` from the connection
    /// (alone it behaves as NewReno).
    Lia,
    /// OLIA coupled increase; needs `on_coupling` with a per-path alpha from
    /// [`olia_alphas`] (alone it behaves as NewReno).
    Olia,
}

impl CcAlgorithm {
    /// Builds the controller with RFC 6928's initial window of `init_segments`.
    pub fn build(self, mss: u32, init_segments: u32) -> Box<dyn CongestionControl> {
        match self {
            CcAlgorithm::NewReno => Box::new(NewReno::new(mss, init_segments)),
            CcAlgorithm::Cubic => Box::new(Cubic::new(mss, init_segments, CubicConfig::default())),
            CcAlgorithm::Lia => Box::new(Lia::new(mss, init_segments)),
            CcAlgorithm::Olia => Box::new(Olia::new(mss, init_segments)),
        }
    }

    /// Parses "cubic", "newreno", "lia" or "olia" (as used on command lines).
    pub fn from_name(name: &str) -> Option<CcAlgorithm> {
        match name.to_ascii_lowercase().as_str() {
            "cubic" => Some(CcAlgorithm::Cubic),
            "newreno" | "reno" => Some(CcAlgorithm::NewReno),
            "lia" => Some(CcAlgorithm::Lia),
            "olia" => Some(CcAlgorithm::Olia),
            _ => None,
        }
    }
}

/// `cwnd` bytes at `old_mss` rescaled to `new_mss`, keeping the window in
/// whole segments (at least one) across an MSS change.
pub(crate) fn rescaled_window(cwnd: u64, old_mss: u32, new_mss: u32) -> u64 {
    (cwnd / old_mss.max(1) as u64).max(1) * new_mss as u64
}

/// The window RFC 5681 allows after an RTO: one segment.
pub(crate) fn loss_window(mss: u32) -> u64 {
    mss as u64
}

/// The smallest ssthresh RFC 5681 allows: two segments.
pub(crate) fn min_ssthresh(mss: u32) -> u64 {
    2 * mss as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    fn ack(now_ms: u64, acked: u64, rtt_ms: u64, round: u64) -> AckEvent {
        let rtt = Duration::from_millis(rtt_ms);
        AckEvent {
            now: Instant::from_nanos(now_ms * 1_000_000),
            acked_bytes: acked,
            rtt_sample: Some(rtt),
            srtt: rtt,
            min_rtt: rtt,
            prior_in_flight: u64::MAX / 4,
            cwnd_limited: true,
            mss: MSS,
            round,
        }
    }

    /// Acks one full window per RTT, one MSS per ACK; returns the window
    /// after each round.
    fn rounds(cc: &mut dyn CongestionControl, start_ms: u64, rtt_ms: u64, n: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t = start_ms;
        for r in 0..n {
            let acks = cc.window() / MSS as u64;
            for _ in 0..acks {
                cc.on_ack(&ack(t, MSS as u64, rtt_ms, 1000 + r));
            }
            t += rtt_ms;
            out.push(cc.window());
        }
        out
    }

    #[test]
    fn newreno_slow_start_doubles_then_grows_one_mss_per_rtt() {
        let mut cc = NewReno::new(MSS, 10);
        assert_eq!(rounds(&mut cc, 0, 10, 3), [20_000, 40_000, 80_000]);
        cc.on_congestion_event(Instant::ZERO, 80_000);
        assert_eq!((cc.window(), cc.ssthresh()), (40_000, 40_000));
        assert_eq!(rounds(&mut cc, 100, 10, 3), [41_000, 42_000, 43_000]);
        cc.on_rto(Instant::ZERO, 43_000);
        assert_eq!((cc.window(), cc.ssthresh()), (1_000, 21_500));
    }

    #[test]
    fn application_limited_flows_do_not_grow() {
        for mut cc in [
            CcAlgorithm::NewReno.build(MSS, 10),
            CcAlgorithm::Cubic.build(MSS, 10),
        ] {
            let mut a = ack(1, 5_000, 10, 1);
            a.cwnd_limited = false;
            cc.on_ack(&a);
            assert_eq!(cc.window(), 10_000, "{}", cc.name());
        }
    }

    #[test]
    fn cubic_reduces_by_beta_and_regrows_concave_then_convex() {
        let mut cc = Cubic::new(
            MSS,
            10,
            CubicConfig {
                hystart: false,
                ..CubicConfig::default()
            },
        );
        // Slow start to 100 segments, then a loss.
        rounds(&mut cc, 0, 10, 4);
        assert_eq!(cc.window(), 160_000);
        cc.on_congestion_event(Instant::from_nanos(40_000_000), 160_000);
        assert_eq!(cc.window(), 112_000);
        assert_eq!(cc.ssthresh(), 112_000);
        // K = cbrt(160 * 0.3 / 0.4) = 4.93 s. Sample the window each second
        // with a 100 ms RTT.
        let mut w = vec![cc.window()];
        let mut t = 100;
        for _ in 0..10 {
            for _ in 0..10 {
                let acks = cc.window() / MSS as u64;
                for _ in 0..acks {
                    cc.on_ack(&ack(t, MSS as u64, 100, 0));
                }
                t += 100;
            }
            w.push(cc.window());
        }
        let growth: Vec<i64> = w.windows(2).map(|p| p[1] as i64 - p[0] as i64).collect();
        // Concave: growth shrinks while approaching w_max (160 segments)...
        assert!(growth[0] > growth[2] && growth[2] > growth[3], "{w:?}");
        // ...it plateaus near w_max around K...
        let at_k = w[5] as f64 / 160_000.0;
        assert!((0.97..1.03).contains(&at_k), "{w:?}");
        // ...and is convex after it.
        assert!(growth[8] > growth[6] && growth[6] > growth[5], "{w:?}");
    }

    #[test]
    fn cubic_fast_convergence_lowers_w_max() {
        let mut cc = Cubic::new(
            MSS,
            100,
            CubicConfig {
                hystart: false,
                ..CubicConfig::default()
            },
        );
        cc.on_congestion_event(Instant::ZERO, 100_000); // w_max 100, cwnd 70
        cc.on_congestion_event(Instant::ZERO, 70_000); // 70 < 100: w_max = 70 * 0.85
        assert_eq!(cc.window(), 49_000);
        // Regrowth aims at 59.5 segments, not 70: after K the window is near
        // it (a long RTT keeps the Reno-friendly estimate below the curve).
        let k = ((59.5 - 49.0) / 0.4f64).cbrt();
        let mut t = 0;
        while (t as f64) < k * 1000.0 {
            let acks = cc.window() / MSS as u64;
            for _ in 0..acks {
                cc.on_ack(&ack(t, MSS as u64, 300, 0));
            }
            t += 300;
        }
        let segs = cc.window() as f64 / MSS as f64;
        assert!((57.0..63.0).contains(&segs), "{segs}");
    }

    #[test]
    fn cubic_reno_friendly_region_on_short_rtts() {
        // With a tiny RTT, Reno's growth per second beats the cubic curve.
        let mut cc = Cubic::new(
            MSS,
            100,
            CubicConfig {
                hystart: false,
                ..CubicConfig::default()
            },
        );
        cc.on_congestion_event(Instant::ZERO, 100_000);
        let w0 = cc.window();
        let w = rounds(&mut cc, 1, 1, 40);
        // alpha = 3 * 0.3 / 1.7 = 0.53 segments per RTT, ~21 over 40 RTTs,
        // while W_cubic(40 ms) is only about one segment above 70.
        let grown = (w[39] - w0) as f64 / MSS as f64;
        assert!((18.0..24.0).contains(&grown), "{grown}");
    }

    #[test]
    fn cubic_hystart_leaves_slow_start_when_rtt_grows() {
        let mut cc = Cubic::new(MSS, 10, CubicConfig::default());
        let mut t = 0;
        for round in 0..6u64 {
            // The RTT grows by 10 ms from round 3 on (a queue builds).
            let rtt = if round >= 3 { 30 } else { 20 };
            for _ in 0..cc.window() / MSS as u64 {
                cc.on_ack(&ack(t, MSS as u64, rtt, round));
            }
            t += rtt;
        }
        assert!(cc.ssthresh() < u64::MAX, "still in slow start");
        // Round 3 starts at 80 segments; the eighth sample ends slow start.
        assert_eq!(cc.ssthresh(), 80_000 + 7_000);
        // Afterwards growth is congestion avoidance, not doubling.
        assert!((87_000..95_000).contains(&cc.window()), "{}", cc.window());
    }
}
