//! Seeded randomness for the simulator. PCG (rand_pcg) is value-stable
//! across releases, so a seed names one run, bit for bit, on any machine.

use rand_core::Rng;
use rand_pcg::Pcg64;

pub use mptcp_engine::app::pattern::mix64;

/// One independent random stream (one per link), derived from the run's seed.
#[derive(Clone, Debug)]
pub struct SimRng(Pcg64);

impl SimRng {
    pub fn new(seed: u64, stream: u64) -> SimRng {
        let state = ((mix64(seed) as u128) << 64) | mix64(seed ^ 0x5eed) as u128;
        SimRng(Pcg64::new(state, stream as u128))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// A uniform value in `[0, 1)` from 53 random bits.
pub fn unit(draw: u64) -> f64 {
    (draw >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// True with probability `p`.
pub fn chance(draw: u64, p: f64) -> bool {
    p > 0.0 && unit(draw) < p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_streams_differ() {
        let a: Vec<u64> = {
            let mut r = SimRng::new(7, 0);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SimRng::new(7, 0);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = SimRng::new(7, 1);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let d: Vec<u64> = {
            let mut r = SimRng::new(8, 0);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn unit_and_chance_bounds() {
        assert_eq!(unit(0), 0.0);
        assert!(unit(u64::MAX) < 1.0);
        assert!(!chance(0, 0.0));
        assert!(chance(u64::MAX, 1.0));
        let mut r = SimRng::new(1, 2);
        let hits = (0..100_000).filter(|_| chance(r.next_u64(), 0.25)).count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
    }
}
