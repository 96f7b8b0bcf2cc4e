//! Benchmarks print figures and ratios; they never fail on a timing.
