//! OLIA, the Opportunistic Linked Increases Algorithm (Khalili et al.,
//! draft-khalili-mptcp-congestion-control): coupled increase that moves
//! traffic to the best paths while keeping every path probed. The
//! connection computes each path's alpha with [`olia_alphas`] from every
//! subflow's window, RTT and [`Olia::loss_interval`], then pushes it in
//! `CouplingInfo::path_alpha` together with the sum of cwnd/rtt.

use super::{
    loss_window, min_ssthresh, rescaled_window, AckEvent, CongestionControl, CouplingInfo,
};
use crate::time::Instant;
use core::any::Any;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Olia {
    cwnd: u64,
    ssthresh: u64,
    mss: u32,
    pending: f64,
    alpha: f64,
    /// Sum over subflows of cwnd/srtt (bytes per second), 0 before coupling.
    sum_rate: f64,
    /// Bytes acknowledged between the last two losses, and since the last.
    between_losses: u64,
    since_loss: u64,
}

impl Olia {
    pub fn new(mss: u32, init_segments: u32) -> Olia {
        Olia {
            cwnd: mss as u64 * init_segments.max(1) as u64,
            ssthresh: u64::MAX,
            mss,
            pending: 0.0,
            alpha: 0.0,
            sum_rate: 0.0,
            between_losses: 0,
            since_loss: 0,
        }
    }

    /// OLIA's l_r: the larger of the bytes acknowledged between the last
    /// two losses and since the last one.
    pub fn loss_interval(&self) -> u64 {
        self.between_losses.max(self.since_loss)
    }

    fn on_loss(&mut self) {
        self.between_losses = self.since_loss;
        self.since_loss = 0;
        self.pending = 0.0;
    }
}

/// One subflow as OLIA's alpha computation sees it.
#[derive(Clone, Copy, Debug)]
pub struct OliaPath {
    pub cwnd: u64,
    pub srtt: Duration,
    pub loss_interval: u64,
}

/// Writes each path's alpha into `out` (same order as `paths`): paths that
/// are among the best (largest l_r^2 / rtt_r) but not among those with the
/// largest window get a positive share, the largest-window paths a negative
/// one, the rest zero.
pub fn olia_alphas(paths: &[OliaPath], out: &mut [f64]) {
    let n = paths.len().min(out.len());
    out[..n].fill(0.0);
    if n == 0 {
        return;
    }
    let quality = |p: &OliaPath| {
        let rtt = p.srtt.as_secs_f64().max(1e-6);
        let l = p.loss_interval as f64;
        l * l / rtt
    };
    let best = paths[..n].iter().map(quality).fold(f64::MIN, f64::max);
    let max_w = paths[..n].iter().map(|p| p.cwnd).max().unwrap_or(0);
    let is_best = |p: &OliaPath| quality(p) >= best * (1.0 - 1e-9);
    let collected = paths[..n]
        .iter()
        .filter(|p| is_best(p) && p.cwnd < max_w)
        .count();
    if collected == 0 {
        return;
    }
    let largest = paths[..n].iter().filter(|p| p.cwnd == max_w).count();
    let total = n as f64;
    for (p, a) in paths[..n].iter().zip(out.iter_mut()) {
        if is_best(p) && p.cwnd < max_w {
            *a = 1.0 / (total * collected as f64);
        } else if p.cwnd == max_w {
            *a = -1.0 / (total * largest as f64);
        }
    }
}

impl CongestionControl for Olia {
    fn name(&self) -> &'static str {
        "olia"
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
        self.since_loss += ack.acked_bytes;
        if !ack.cwnd_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            let room = self.ssthresh - self.cwnd;
            self.cwnd += ack.acked_bytes.min(room);
            return;
        }
        // Per acknowledged segment, in segments:
        //   (w_r / rtt_r^2) / (sum_p w_p / rtt_p)^2 + alpha_r / w_r
        let mss = self.mss as f64;
        let w = self.cwnd as f64 / mss;
        let rtt = ack.srtt.as_secs_f64();
        let own_rate = if rtt > 0.0 { w / rtt } else { 0.0 };
        let sum = (self.sum_rate / mss).max(own_rate);
        let coupled = if rtt > 0.0 && sum > 0.0 {
            (w / (rtt * rtt)) / (sum * sum)
        } else {
            1.0 / w
        };
        let per_segment = (coupled + self.alpha / w).max(0.0);
        self.pending += per_segment * ack.acked_bytes as f64;
        if self.pending >= 1.0 {
            let whole = self.pending.floor();
            self.cwnd += whole as u64;
            self.pending -= whole;
        }
    }
    fn on_congestion_event(&mut self, _now: Instant, _in_flight: u64) {
        self.on_loss();
        self.ssthresh = (self.cwnd / 2).max(min_ssthresh(self.mss));
        self.cwnd = self.ssthresh;
    }
    fn on_rto(&mut self, _now: Instant, in_flight: u64) {
        self.on_loss();
        self.ssthresh = (in_flight / 2).max(min_ssthresh(self.mss));
        self.cwnd = loss_window(self.mss);
    }
    fn on_coupling(&mut self, info: &CouplingInfo) {
        self.sum_rate = info.sum_cwnd_over_rtt;
        self.alpha = info.path_alpha;
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    fn ack(acked: u64, srtt_ms: u64) -> AckEvent {
        AckEvent {
            now: Instant::ZERO,
            acked_bytes: acked,
            rtt_sample: None,
            srtt: Duration::from_millis(srtt_ms),
            min_rtt: Duration::from_millis(srtt_ms),
            prior_in_flight: u64::MAX / 4,
            cwnd_limited: true,
            mss: MSS,
            round: 0,
        }
    }

    fn in_avoidance(segments: u32) -> Olia {
        let mut cc = Olia::new(MSS, segments * 2);
        cc.on_congestion_event(Instant::ZERO, 0);
        cc
    }

    fn one_rtt(cc: &mut Olia, srtt_ms: u64) -> u64 {
        let before = cc.window();
        for _ in 0..before / MSS as u64 {
            cc.on_ack(&ack(MSS as u64, srtt_ms));
        }
        cc.window() - before
    }

    #[test]
    fn alone_it_grows_like_reno() {
        let mut cc = in_avoidance(20);
        let g = one_rtt(&mut cc, 10);
        assert!((950..=1000).contains(&g), "{g}");
    }

    #[test]
    fn alphas_shift_growth_to_the_best_path_with_a_small_window() {
        let ms = Duration::from_millis;
        let paths = [
            // Best path (long loss interval) but small window.
            OliaPath {
                cwnd: 10_000,
                srtt: ms(10),
                loss_interval: 1_000_000,
            },
            // Largest window, worse path.
            OliaPath {
                cwnd: 30_000,
                srtt: ms(10),
                loss_interval: 100_000,
            },
            OliaPath {
                cwnd: 20_000,
                srtt: ms(10),
                loss_interval: 100_000,
            },
        ];
        let mut alphas = [9.0; 3];
        olia_alphas(&paths, &mut alphas);
        assert_eq!(alphas, [1.0 / 3.0, -1.0 / 3.0, 0.0]);
        // When the best path also has the largest window, nothing moves.
        let mut same = paths;
        same[0].cwnd = 40_000;
        olia_alphas(&same, &mut alphas);
        assert_eq!(alphas, [0.0; 3]);
    }

    #[test]
    fn coupled_paths_grow_less_than_reno_and_loss_intervals_are_tracked() {
        let mut a = in_avoidance(20);
        let mut b = in_avoidance(20);
        let info = CouplingInfo::from_subflows([
            (a.window(), Duration::from_millis(10)),
            (b.window(), Duration::from_millis(10)),
        ]);
        a.on_coupling(&info);
        b.on_coupling(&info);
        let total = one_rtt(&mut a, 10) + one_rtt(&mut b, 10);
        // Two equal paths: (w/rtt^2)/(2w/rtt)^2 per segment = 1/(4w), so
        // each grows a quarter segment and the pair half a segment per RTT.
        assert!((480..=520).contains(&total), "{total}");
        assert_eq!(a.loss_interval(), 20_000);
        a.on_congestion_event(Instant::ZERO, 0);
        one_rtt(&mut a, 10);
        // Halved to 10 segments: one RTT acknowledges 10 000 bytes.
        assert_eq!(a.since_loss, 10_000);
        assert_eq!(a.between_losses, 20_000);
        assert_eq!(a.loss_interval(), 20_000);
    }
}
