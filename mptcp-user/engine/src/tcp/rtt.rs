//! RTT estimation and the retransmission timeout of RFC 6298.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    latest: Duration,
    initial_rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
    /// A lower ceiling for backed-off timeouts (a stale MPTCP subflow probes its path often).
    backoff_cap: Option<Duration>,
}

impl RttEstimator {
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            latest: Duration::ZERO,
            initial_rto,
            min_rto,
            max_rto,
            backoff_cap: None,
        }
    }

    pub fn on_sample(&mut self, rtt: Duration) {
        self.latest = rtt;
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                // rttvar = 3/4 rttvar + 1/4 |srtt - r|; srtt = 7/8 srtt + 1/8 r
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    pub fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(Duration::ZERO)
    }
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }
    pub fn min_rtt(&self) -> Duration {
        self.min_rtt.unwrap_or(Duration::ZERO)
    }
    pub fn latest(&self) -> Duration {
        self.latest
    }
    pub fn has_sample(&self) -> bool {
        self.srtt.is_some()
    }

    /// The RTO before backoff.
    pub fn rto(&self) -> Duration {
        let rto = match self.srtt {
            None => self.initial_rto,
            // The clock granularity G is the driver's nanoseconds: negligible.
            Some(srtt) => srtt + self.rttvar * 4,
        };
        rto.clamp(self.min_rto, self.max_rto)
    }

    /// The RTO after `backoff` doublings, capped at the maximum.
    pub fn backed_off(&self, backoff: u32) -> Duration {
        let mut rto = self.rto();
        // The cap never goes below the RTO itself.
        let max = self
            .backoff_cap
            .map_or(self.max_rto, |c| c.clamp(rto, self.max_rto));
        for _ in 0..backoff {
            rto = (rto * 2).min(max);
        }
        rto
    }

    pub fn backoff_capped(&self) -> bool {
        self.backoff_cap.is_some()
    }

    /// Caps backed-off timeouts at `cap` (never below the RTO); `None` lifts the cap.
    pub fn set_backoff_cap(&mut self, cap: Option<Duration>) {
        self.backoff_cap = cap;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_cap_bounds_doublings_but_not_the_rto() {
        let ms = std::time::Duration::from_millis;
        let mut r = super::RttEstimator::new(ms(1000), ms(200), ms(60_000));
        r.on_sample(ms(20));
        assert_eq!(r.backed_off(5), ms(6400));
        r.set_backoff_cap(Some(ms(500)));
        assert_eq!(r.backed_off(1), ms(400));
        assert_eq!(r.backed_off(5), ms(500));
        r.set_backoff_cap(Some(ms(50)));
        assert_eq!(r.backed_off(3), ms(200));
        r.set_backoff_cap(None);
        assert_eq!(r.backed_off(3), ms(1600));
    }

    use super::*;

    #[test]
    fn rfc6298_first_and_later_samples() {
        let ms = Duration::from_millis;
        let mut e = RttEstimator::new(ms(1000), ms(1), ms(60_000));
        assert_eq!(e.rto(), ms(1000));
        e.on_sample(ms(100));
        assert_eq!(e.srtt(), ms(100));
        assert_eq!(e.rttvar(), ms(50));
        assert_eq!(e.rto(), ms(300));
        e.on_sample(ms(200));
        // rttvar = 0.75*50 + 0.25*100 = 62.5; srtt = 87.5 + 25 = 112.5
        assert_eq!(e.rttvar(), Duration::from_micros(62_500));
        assert_eq!(e.srtt(), Duration::from_micros(112_500));
        assert_eq!(e.backed_off(2), Duration::from_micros(362_500) * 4);
    }

    #[test]
    fn min_rto_applies() {
        let ms = Duration::from_millis;
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(60_000));
        e.on_sample(ms(10));
        assert_eq!(e.rto(), ms(200));
        assert_eq!(e.backed_off(30), ms(60_000));
    }
}
