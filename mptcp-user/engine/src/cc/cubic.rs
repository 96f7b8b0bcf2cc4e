//! CUBIC (RFC 9438): cubic window growth around the window of the last loss,
//! fast convergence, the Reno-friendly region, and an optional HyStart++
//! (RFC 9406) exit from slow start on RTT increase.

use super::{loss_window, min_ssthresh, AckEvent, CongestionControl};
use crate::time::Instant;
use core::any::Any;
use std::time::Duration;

/// Tunables; the defaults are those of RFC 9438.
#[derive(Clone, Copy, Debug)]
pub struct CubicConfig {
    /// The C constant, in segments per second cubed.
    pub c: f64,
    /// Multiplicative decrease factor.
    pub beta: f64,
    pub fast_convergence: bool,
    /// Leave slow start when RTT grows (HyStart++ without its conservative
    /// phase), so slow start does not overshoot into a burst of losses.
    pub hystart: bool,
}

impl Default for CubicConfig {
    fn default() -> CubicConfig {
        CubicConfig {
            c: 0.4,
            beta: 0.7,
            fast_convergence: true,
            hystart: true,
        }
    }
}

/// HyStart++ constants (RFC 9406 section 4.3).
const HYSTART_MIN_RTT_THRESH: Duration = Duration::from_millis(4);
const HYSTART_MAX_RTT_THRESH: Duration = Duration::from_millis(16);
const HYSTART_SAMPLES: u32 = 8;

#[derive(Clone, Debug)]
pub struct Cubic {
    cfg: CubicConfig,
    mss: u32,
    /// Window in bytes, fractional so small per-ACK increments accumulate.
    cwnd: f64,
    ssthresh: u64,
    /// Window (segments) the cubic curve plateaus at.
    w_max: f64,
    /// Window (segments) just before the last reduction (cwnd_prior).
    w_prior: f64,
    /// Reno-friendly estimate (segments).
    w_est: f64,
    /// Seconds from epoch start to reach `w_max` again.
    k: f64,
    epoch_start: Option<Instant>,
    // HyStart++ round state.
    round: Option<u64>,
    last_round_min_rtt: Option<Duration>,
    round_min_rtt: Option<Duration>,
    round_samples: u32,
}

impl Cubic {
    pub fn new(mss: u32, init_segments: u32, cfg: CubicConfig) -> Cubic {
        Cubic {
            cfg,
            mss,
            cwnd: mss as f64 * init_segments.max(1) as f64,
            ssthresh: u64::MAX,
            w_max: 0.0,
            w_prior: 0.0,
            w_est: 0.0,
            k: 0.0,
            epoch_start: None,
            round: None,
            last_round_min_rtt: None,
            round_min_rtt: None,
            round_samples: 0,
        }
    }

    fn segments(&self) -> f64 {
        self.cwnd / self.mss as f64
    }

    /// W_cubic(t) of RFC 9438 equation 1, in segments.
    fn w_cubic(&self, t: f64) -> f64 {
        let d = t - self.k;
        self.cfg.c * d * d * d + self.w_max
    }

    fn reduce(&mut self) {
        let w = self.segments();
        self.w_prior = w;
        self.w_max = if self.cfg.fast_convergence && w < self.w_max {
            w * (1.0 + self.cfg.beta) / 2.0
        } else {
            w
        };
        let ss = (self.cwnd * self.cfg.beta) as u64;
        self.ssthresh = ss.max(min_ssthresh(self.mss));
        self.epoch_start = None;
    }

    /// HyStart++ (RFC 9406): compare the minimum RTT of this round with
    /// that of the previous one.
    fn hystart_sample(&mut self, ack: &AckEvent) {
        let Some(rtt) = ack.rtt_sample else { return };
        match self.round {
            Some(r) if r == ack.round => {}
            _ => {
                self.round = Some(ack.round);
                if self.round_min_rtt.is_some() {
                    self.last_round_min_rtt = self.round_min_rtt;
                }
                self.round_min_rtt = None;
                self.round_samples = 0;
            }
        }
        self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |m| m.min(rtt)));
        self.round_samples += 1;
        if let (Some(last), Some(cur)) = (self.last_round_min_rtt, self.round_min_rtt) {
            let thresh = (last / 8).clamp(HYSTART_MIN_RTT_THRESH, HYSTART_MAX_RTT_THRESH);
            if self.round_samples >= HYSTART_SAMPLES && cur >= last + thresh {
                self.ssthresh = self.cwnd as u64;
            }
        }
    }
}

impl CongestionControl for Cubic {
    fn name(&self) -> &'static str {
        "cubic"
    }
    fn window(&self) -> u64 {
        self.cwnd as u64
    }
    fn ssthresh(&self) -> u64 {
        self.ssthresh
    }
    fn set_mss(&mut self, mss: u32) {
        if mss == 0 || mss == self.mss {
            return;
        }
        self.cwnd = (self.cwnd / self.mss as f64).max(1.0) * mss as f64;
        self.mss = mss;
    }

    fn on_ack(&mut self, ack: &AckEvent) {
        if !ack.cwnd_limited {
            return;
        }
        let mss = self.mss as f64;
        if (self.cwnd as u64) < self.ssthresh {
            if self.cfg.hystart {
                self.hystart_sample(ack);
            }
            // Slow start, never overshooting ssthresh within one ACK.
            let room = self.ssthresh.saturating_sub(self.cwnd as u64);
            self.cwnd += ack.acked_bytes.min(room) as f64;
            return;
        }
        let acked_segs = ack.acked_bytes as f64 / mss;
        let cwnd_segs = self.segments();
        let epoch = match self.epoch_start {
            Some(e) => e,
            None => {
                self.epoch_start = Some(ack.now);
                if self.w_max <= cwnd_segs {
                    self.w_max = cwnd_segs;
                    self.k = 0.0;
                } else {
                    self.k = ((self.w_max - cwnd_segs) / self.cfg.c).cbrt();
                }
                self.w_est = cwnd_segs;
                ack.now
            }
        };
        let t = ack.now.saturating_duration_since(epoch).as_secs_f64();
        let rtt = ack.srtt.as_secs_f64();

        // Reno-friendly estimate (RFC 9438 section 4.3).
        let beta = self.cfg.beta;
        let alpha = if self.w_est >= self.w_prior {
            1.0
        } else {
            3.0 * (1.0 - beta) / (1.0 + beta)
        };
        self.w_est += alpha * acked_segs / cwnd_segs;

        if self.w_cubic(t) < self.w_est {
            self.cwnd = (self.w_est * mss).max(self.cwnd);
            return;
        }
        let target = self.w_cubic(t + rtt).clamp(cwnd_segs, 1.5 * cwnd_segs);
        self.cwnd += (target - cwnd_segs) / cwnd_segs * acked_segs * mss;
    }

    fn on_congestion_event(&mut self, _now: Instant, _in_flight: u64) {
        self.reduce();
        self.cwnd = self.ssthresh as f64;
    }

    fn on_rto(&mut self, _now: Instant, _in_flight: u64) {
        self.reduce();
        self.cwnd = loss_window(self.mss) as f64;
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
