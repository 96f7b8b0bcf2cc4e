//! A sorted set of disjoint half-open `u64` intervals with a fixed capacity:
//! the receive side's out-of-order map and the send side's SACK scoreboard.
//! Storage is inline, so inserting never allocates; when full, an insert that
//! would need a new slot is refused and the caller drops that information.

#[derive(Clone, Debug)]
pub struct RangeSet<const N: usize> {
    ranges: [(u64, u64); N],
    len: usize,
}

impl<const N: usize> Default for RangeSet<N> {
    fn default() -> Self {
        RangeSet {
            ranges: [(0, 0); N],
            len: 0,
        }
    }
}

impl<const N: usize> RangeSet<N> {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.ranges[..self.len]
    }
    pub fn first(&self) -> Option<(u64, u64)> {
        self.as_slice().first().copied()
    }
    pub fn last(&self) -> Option<(u64, u64)> {
        self.as_slice().last().copied()
    }

    /// Adds `[start, end)`, merging with overlapping or adjacent ranges.
    /// Returns false (and changes nothing) when a new slot was needed but
    /// the set is full.
    pub fn insert(&mut self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        // First range whose end reaches `start` (may merge with it).
        let first = self.as_slice().partition_point(|&(_, e)| e < start);
        // Ranges [first, last) touch or overlap the new one.
        let last = first + self.as_slice()[first..].partition_point(|&(s, _)| s <= end);
        if first == last {
            if self.len == N {
                return false;
            }
            self.ranges.copy_within(first..self.len, first + 1);
            self.ranges[first] = (start, end);
            self.len += 1;
            return true;
        }
        let merged = (
            start.min(self.ranges[first].0),
            end.max(self.ranges[last - 1].1),
        );
        self.ranges[first] = merged;
        let removed = last - first - 1;
        if removed > 0 {
            self.ranges.copy_within(last..self.len, first + 1);
            self.len -= removed;
        }
        true
    }

    /// Forgets everything below `point`, trimming a range that straddles it.
    pub fn remove_below(&mut self, point: u64) {
        let drop = self.as_slice().partition_point(|&(_, e)| e <= point);
        if drop > 0 {
            self.ranges.copy_within(drop..self.len, 0);
            self.len -= drop;
        }
        if let Some(r) = self.ranges[..self.len].first_mut() {
            r.0 = r.0.max(point);
        }
    }

    /// Removes and returns the first range if it starts at or before `point`.
    pub fn pop_first_if_reaches(&mut self, point: u64) -> Option<(u64, u64)> {
        let first = self.first()?;
        if first.0 > point {
            return None;
        }
        self.ranges.copy_within(1..self.len, 0);
        self.len -= 1;
        Some(first)
    }

    /// Total length of the parts of the ranges inside `[lo, hi)`.
    pub fn covered_within(&self, lo: u64, hi: u64) -> u64 {
        let mut sum = 0;
        for &(s, e) in self.as_slice() {
            if s >= hi {
                break;
            }
            let (s, e) = (s.max(lo), e.min(hi));
            if s < e {
                sum += e - s;
            }
        }
        sum
    }

    /// The range containing `point`, if any.
    pub fn containing(&self, point: u64) -> Option<(u64, u64)> {
        self.as_slice()
            .iter()
            .copied()
            .find(|&(s, e)| s <= point && point < e)
    }

    /// The first point at or after `from` and below `limit` that no range
    /// covers, with the end of that gap (clamped to `limit`).
    pub fn first_gap(&self, from: u64, limit: u64) -> Option<(u64, u64)> {
        let mut at = from;
        for &(s, e) in self.as_slice() {
            if at >= limit {
                return None;
            }
            if e <= at {
                continue;
            }
            if s > at {
                return Some((at, s.min(limit)));
            }
            at = e;
        }
        (at < limit).then_some((at, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_orders() {
        let mut r = RangeSet::<4>::default();
        assert!(r.insert(10, 20));
        assert!(r.insert(30, 40));
        assert!(r.insert(0, 5));
        assert_eq!(r.as_slice(), &[(0, 5), (10, 20), (30, 40)]);
        assert!(r.insert(20, 30)); // adjacent on both sides
        assert_eq!(r.as_slice(), &[(0, 5), (10, 40)]);
        assert!(r.insert(3, 12));
        assert_eq!(r.as_slice(), &[(0, 40)]);
    }

    #[test]
    fn full_set_refuses_new_slot_but_merges() {
        let mut r = RangeSet::<2>::default();
        assert!(r.insert(0, 1));
        assert!(r.insert(5, 6));
        assert!(!r.insert(10, 11));
        assert!(r.insert(6, 8));
        assert_eq!(r.as_slice(), &[(0, 1), (5, 8)]);
    }

    #[test]
    fn remove_below_and_gaps() {
        let mut r = RangeSet::<8>::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.first_gap(0, 100), Some((0, 10)));
        assert_eq!(r.first_gap(10, 100), Some((20, 30)));
        assert_eq!(r.first_gap(35, 100), Some((40, 100)));
        assert_eq!(r.first_gap(35, 40), None);
        assert_eq!(r.covered_within(15, 35), 10);
        r.remove_below(15);
        assert_eq!(r.as_slice(), &[(15, 20), (30, 40)]);
        r.remove_below(25);
        assert_eq!(r.as_slice(), &[(30, 40)]);
        assert_eq!(r.pop_first_if_reaches(29), None);
        assert_eq!(r.pop_first_if_reaches(30), Some((30, 40)));
        assert!(r.is_empty());
    }
}
