//! A sorted set of disjoint half-open `u64` intervals with a fixed capacity:
//! the receive side's out-of-order map and the send side's SACK scoreboard.
//! Storage grows on demand up to the capacity (an idle connection holds
//! none); when full, an insert that would need a new
//! slot is refused and the caller drops that information (never wrong, only
//! less informed). Most inserts land at or near the end and most removals
//! at the front, which a ring makes cheap.

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct RangeSet {
    ranges: VecDeque<(u64, u64)>,
    capacity: usize,
    /// Sum of the lengths of all ranges.
    covered: u64,
}

impl RangeSet {
    pub fn with_capacity(capacity: usize) -> RangeSet {
        let capacity = capacity.max(1);
        RangeSet {
            ranges: VecDeque::new(),
            capacity,
            covered: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn clear(&mut self) {
        self.ranges.clear();
        self.covered = 0;
    }
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().copied()
    }
    pub fn first(&self) -> Option<(u64, u64)> {
        self.ranges.front().copied()
    }
    pub fn last(&self) -> Option<(u64, u64)> {
        self.ranges.back().copied()
    }
    /// Total length of all ranges.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Adds `[start, end)`, merging with overlapping or adjacent ranges.
    /// Returns false (and changes nothing) when a new slot was needed but
    /// the set is full.
    pub fn insert(&mut self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        // Fast path: at or after the end (in-order growth).
        if let Some(&(ls, le)) = self.ranges.back() {
            if start > le {
                return self.push_new(self.ranges.len(), start, end);
            }
            if start >= ls && start <= le {
                if end > le {
                    self.covered += end - le;
                    self.ranges.back_mut().expect("non-empty").1 = end;
                }
                return true;
            }
        }
        // First range whose end reaches `start` (may merge with it).
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        // Ranges [first, last) touch or overlap the new one.
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].0 <= end {
            last += 1;
        }
        if first == last {
            return self.push_new(first, start, end);
        }
        let merged = (
            start.min(self.ranges[first].0),
            end.max(self.ranges[last - 1].1),
        );
        for i in first..last {
            let (s, e) = self.ranges[i];
            self.covered -= e - s;
        }
        self.ranges.drain(first + 1..last);
        self.ranges[first] = merged;
        self.covered += merged.1 - merged.0;
        true
    }

    fn push_new(&mut self, at: usize, start: u64, end: u64) -> bool {
        if self.ranges.len() == self.capacity {
            return false;
        }
        self.ranges.insert(at, (start, end));
        self.covered += end - start;
        true
    }

    /// Forgets everything below `point`, trimming a range that straddles it.
    pub fn remove_below(&mut self, point: u64) {
        while let Some(&(s, e)) = self.ranges.front() {
            if e <= point {
                self.covered -= e - s;
                self.ranges.pop_front();
            } else {
                if s < point {
                    self.covered -= point - s;
                    self.ranges[0].0 = point;
                }
                break;
            }
        }
    }

    /// Removes and returns the first range if it starts at or before `point`.
    pub fn pop_first_if_reaches(&mut self, point: u64) -> Option<(u64, u64)> {
        let first = self.first()?;
        if first.0 > point {
            return None;
        }
        self.ranges.pop_front();
        self.covered -= first.1 - first.0;
        Some(first)
    }

    /// Total length of the parts of the ranges inside `[lo, hi)`.
    pub fn covered_within(&self, lo: u64, hi: u64) -> u64 {
        let from = self.ranges.partition_point(|&(_, e)| e <= lo);
        let mut sum = 0;
        for &(s, e) in self.ranges.range(from..) {
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
        let i = self.ranges.partition_point(|&(_, e)| e <= point);
        self.ranges.get(i).copied().filter(|&(s, _)| s <= point)
    }

    /// The first point at or after `from` and below `limit` that no range
    /// covers, with the end of that gap (clamped to `limit`).
    pub fn first_gap(&self, from: u64, limit: u64) -> Option<(u64, u64)> {
        let mut at = from;
        let i = self.ranges.partition_point(|&(_, e)| e <= at);
        for &(s, e) in self.ranges.range(i..) {
            if at >= limit {
                return None;
            }
            if s > at {
                return Some((at, s.min(limit)));
            }
            at = at.max(e);
        }
        (at < limit).then_some((at, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_orders() {
        let mut r = RangeSet::with_capacity(4);
        assert!(r.insert(10, 20));
        assert!(r.insert(30, 40));
        assert!(r.insert(0, 5));
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 5), (10, 20), (30, 40)]);
        assert!(r.insert(20, 30)); // adjacent on both sides
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 5), (10, 40)]);
        assert!(r.insert(3, 12));
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 40)]);
    }

    #[test]
    fn full_set_refuses_new_slot_but_merges() {
        let mut r = RangeSet::with_capacity(2);
        assert!(r.insert(0, 1));
        assert!(r.insert(5, 6));
        assert!(!r.insert(10, 11));
        assert!(r.insert(6, 8));
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 1), (5, 8)]);
    }

    #[test]
    fn remove_below_and_gaps() {
        let mut r = RangeSet::with_capacity(8);
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.first_gap(0, 100), Some((0, 10)));
        assert_eq!(r.first_gap(10, 100), Some((20, 30)));
        assert_eq!(r.first_gap(35, 100), Some((40, 100)));
        assert_eq!(r.first_gap(35, 40), None);
        assert_eq!(r.covered_within(15, 35), 10);
        r.remove_below(15);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(15, 20), (30, 40)]);
        r.remove_below(25);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(30, 40)]);
        assert_eq!(r.pop_first_if_reaches(29), None);
        assert_eq!(r.pop_first_if_reaches(30), Some((30, 40)));
        assert!(r.is_empty());
        assert_eq!(r.covered(), 0);
    }

    #[test]
    fn covered_tracks_merges_and_trims() {
        let mut r = RangeSet::with_capacity(16);
        for i in 0..8u64 {
            r.insert(i * 10, i * 10 + 5);
        }
        assert_eq!(r.covered(), 40);
        r.insert(3, 72);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 75)]);
        assert_eq!(r.covered(), 75);
        r.remove_below(70);
        assert_eq!(r.covered(), 5);
        assert_eq!(r.containing(72), Some((70, 75)));
        assert_eq!(r.containing(75), None);
    }
}
