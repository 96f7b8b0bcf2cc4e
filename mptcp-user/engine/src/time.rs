//! Time as the sans-IO engine sees it: handed in by the driver, never read
//! from a clock inside the engine.

use core::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in nanoseconds since an origin chosen by the driver
/// (the simulator starts at zero; the AF_XDP driver uses CLOCK_MONOTONIC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Time since `earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_sub(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// A timer of a [`Timers`] table: a small enum naming its slots.
pub trait TimerName: Copy + Eq + core::fmt::Debug + 'static {
    /// Every timer, in slot order (ties in [`Timers::next`] go to the
    /// first).
    const ALL: &'static [Self];
    fn slot(self) -> usize;
}

/// One deadline per named timer; the earliest is found by a scan (a
/// handful of slots: cheaper than a heap, and nothing to keep in sync).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers<T: TimerName, const N: usize> {
    deadlines: [Option<Instant>; N],
    _names: core::marker::PhantomData<T>,
}

impl<T: TimerName, const N: usize> Default for Timers<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: TimerName, const N: usize> Timers<T, N> {
    pub const fn new() -> Self {
        assert!(T::ALL.len() == N, "one slot per timer");
        Timers {
            deadlines: [None; N],
            _names: core::marker::PhantomData,
        }
    }

    pub fn get(&self, t: T) -> Option<Instant> {
        self.deadlines[t.slot()]
    }

    pub fn is_armed(&self, t: T) -> bool {
        self.get(t).is_some()
    }

    /// Arms `t` for `at` (re-arms it when already armed).
    pub fn arm(&mut self, t: T, at: Instant) {
        self.deadlines[t.slot()] = Some(at);
    }

    /// Arms `t` for `at`, or disarms it with `None`.
    pub fn set(&mut self, t: T, at: Option<Instant>) {
        self.deadlines[t.slot()] = at;
    }

    pub fn stop(&mut self, t: T) {
        self.deadlines[t.slot()] = None;
    }

    pub fn stop_all(&mut self) {
        self.deadlines = [None; N];
    }

    /// `t` is armed and due at `now`.
    pub fn is_due(&self, t: T, now: Instant) -> bool {
        self.get(t).is_some_and(|d| d <= now)
    }

    /// Disarms `t` if it is due at `now`, and says whether it was.
    pub fn take_due(&mut self, t: T, now: Instant) -> bool {
        let due = self.is_due(t, now);
        if due {
            self.stop(t);
        }
        due
    }

    /// The earliest armed timer and its deadline.
    pub fn next(&self) -> Option<(Instant, T)> {
        let mut best: Option<(Instant, T)> = None;
        for &t in T::ALL {
            if let Some(d) = self.deadlines[t.slot()] {
                if best.is_none_or(|(b, _)| d < b) {
                    best = Some((d, t));
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum T {
        A,
        B,
        C,
    }
    impl TimerName for T {
        const ALL: &'static [T] = &[T::A, T::B, T::C];
        fn slot(self) -> usize {
            self as usize
        }
    }

    #[test]
    fn next_is_the_earliest_armed_and_ties_go_to_the_first_slot() {
        let mut t = Timers::<T, 3>::new();
        assert_eq!(t.next(), None);
        t.arm(T::C, Instant::from_nanos(5));
        t.arm(T::B, Instant::from_nanos(7));
        assert_eq!(t.next(), Some((Instant::from_nanos(5), T::C)));
        t.arm(T::A, Instant::from_nanos(5));
        assert_eq!(t.next(), Some((Instant::from_nanos(5), T::A)));
        assert!(!t.take_due(T::B, Instant::from_nanos(6)));
        assert!(t.take_due(T::A, Instant::from_nanos(6)));
        assert_eq!(t.next(), Some((Instant::from_nanos(5), T::C)));
        t.stop_all();
        assert_eq!(t.next(), None);
    }
}
