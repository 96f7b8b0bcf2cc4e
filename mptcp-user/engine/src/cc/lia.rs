//! LIA, the Linked Increases Algorithm of RFC 6356: coupled congestion
//! avoidance for the subflows of one MPTCP connection. Each subflow runs
//! its own `Lia`; the connection pushes [`CouplingInfo`] (built with
//! [`CouplingInfo::from_subflows`]) so every increase sees all windows.

use super::{
    loss_window, min_ssthresh, rescaled_window, AckEvent, CongestionControl, CouplingInfo,
};
use crate::time::Instant;
use core::any::Any;

#[derive(Clone, Debug)]
pub struct Lia {
    cwnd: u64,
    ssthresh: u64,
    mss: u32,
    /// Fractional growth not yet added to `cwnd`.
    pending: f64,
    alpha: f64,
    total_cwnd: u64,
}

impl Lia {
    pub fn new(mss: u32, init_segments: u32) -> Lia {
        Lia {
            cwnd: mss as u64 * init_segments.max(1) as u64,
            ssthresh: u64::MAX,
            mss,
            pending: 0.0,
            alpha: 1.0,
            total_cwnd: 0,
        }
    }

    /// The coupling factor last pushed by the connection (1 when alone).
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl CongestionControl for Lia {
    fn name(&self) -> &'static str {
        "lia"
    }
    fn window(&self) -> u64 {
        self.cwnd
    }
    fn ssthresh(&self) -> u64 {
        self.ssthresh
    }
    fn set_mss(&mut self, mss: u32) {
        if mss == 0 || mss == self.mss {
            return;
        }
        self.cwnd = rescaled_window(self.cwnd, self.mss, mss);
        self.mss = mss;
    }
    fn on_ack(&mut self, ack: &AckEvent) {
        if !ack.cwnd_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            let room = self.ssthresh - self.cwnd;
            self.cwnd += ack.acked_bytes.min(room);
            return;
        }
        // RFC 6356 section 3, in bytes: min(alpha * acked * MSS / cwnd_total,
        // acked * MSS / cwnd_i); never more than uncoupled Reno.
        let mss = self.mss as f64;
        let acked = ack.acked_bytes as f64;
        let total = self.total_cwnd.max(self.cwnd) as f64;
        let coupled = self.alpha * acked * mss / total;
        let reno = acked * mss / self.cwnd as f64;
        self.pending += coupled.min(reno);
        if self.pending >= 1.0 {
            let whole = self.pending.floor();
            self.cwnd += whole as u64;
            self.pending -= whole;
        }
    }
    fn on_congestion_event(&mut self, _now: Instant, _in_flight: u64) {
        self.ssthresh = (self.cwnd / 2).max(min_ssthresh(self.mss));
        self.cwnd = self.ssthresh;
        self.pending = 0.0;
    }
    fn on_rto(&mut self, _now: Instant, in_flight: u64) {
        self.ssthresh = (in_flight / 2).max(min_ssthresh(self.mss));
        self.cwnd = loss_window(self.mss);
        self.pending = 0.0;
    }
    fn on_coupling(&mut self, info: &CouplingInfo) {
        self.total_cwnd = info.total_cwnd;
        self.alpha = info.lia_alpha();
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MSS: u32 = 1000;

    fn ack(acked: u64) -> AckEvent {
        AckEvent {
            now: Instant::ZERO,
            acked_bytes: acked,
            rtt_sample: None,
            srtt: Duration::from_millis(10),
            min_rtt: Duration::from_millis(10),
            prior_in_flight: u64::MAX / 4,
            cwnd_limited: true,
            mss: MSS,
            round: 0,
        }
    }

    /// One RTT of acks, one MSS each; returns the growth in bytes.
    fn one_rtt(cc: &mut Lia) -> u64 {
        let before = cc.window();
        for _ in 0..before / MSS as u64 {
            cc.on_ack(&ack(MSS as u64));
        }
        cc.window() - before
    }

    fn in_avoidance(segments: u32) -> Lia {
        let mut cc = Lia::new(MSS, segments * 2);
        cc.on_congestion_event(Instant::ZERO, 0);
        assert_eq!(cc.window(), segments as u64 * MSS as u64);
        cc
    }

    #[test]
    fn alone_it_is_reno() {
        let mut cc = in_avoidance(20);
        let g = one_rtt(&mut cc);
        // One MSS per RTT, less the growth of cwnd within the RTT.
        assert!((970..=1000).contains(&g), "{g}");
    }

    #[test]
    fn identical_paths_share_one_reno_increase() {
        let ms10 = Duration::from_millis(10);
        let n = 4u64;
        let mut flows: Vec<Lia> = (0..n).map(|_| in_avoidance(20)).collect();
        let info = CouplingInfo::from_subflows(flows.iter().map(|f| (f.window(), ms10)));
        assert!((info.lia_alpha() - 1.0 / n as f64).abs() < 1e-9);
        for f in &mut flows {
            f.on_coupling(&info);
        }
        // Each grows alpha * MSS * cwnd_i / total = MSS / n^2 per RTT, so the
        // aggregate grows MSS / n: less aggressive than one TCP.
        let total: u64 = flows.iter_mut().map(one_rtt).sum();
        let expect = MSS as u64 / n;
        assert!(total.abs_diff(expect) <= 4, "{total} vs {expect}");
    }

    #[test]
    fn alpha_favours_the_best_path_but_never_beats_reno() {
        let fast = (40_000, Duration::from_millis(10));
        let slow = (10_000, Duration::from_millis(100));
        let info = CouplingInfo::from_subflows([fast, slow]);
        // alpha = 50000 * (40000/0.01^2) / (40000/0.01 + 10000/0.1)^2
        let expect = 50_000.0 * (40_000.0 / 1e-4) / (4_000_000.0f64 + 100_000.0).powi(2);
        assert!((info.lia_alpha() - expect).abs() < 1e-9);
        // A subflow holding most of the total window: alpha * cwnd_i / total
        // > 1, so the coupled term would beat Reno and is capped to it.
        let mut cc = in_avoidance(45);
        cc.on_coupling(&info);
        assert!(cc.alpha() * 45_000.0 / 50_000.0 > 1.0);
        let g = one_rtt(&mut cc);
        assert!((970..=1000).contains(&g), "{g}");
        // The slow path's subflow grows by alpha * MSS * cwnd_i / total.
        let mut slow_cc = in_avoidance(10);
        slow_cc.on_coupling(&info);
        let g = one_rtt(&mut slow_cc) as f64;
        let expect = info.lia_alpha() * 1000.0 * 10_000.0 / 50_000.0;
        assert!((g - expect).abs() <= 2.0, "{g} vs {expect}");
    }
}
