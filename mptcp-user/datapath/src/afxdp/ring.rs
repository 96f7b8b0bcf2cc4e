//! Index arithmetic of the four AF_XDP rings, apart from the shared memory
//! so it can be tested on its own.
//!
//! The kernel and userspace share a free-running `u32` producer and consumer
//! index per ring; an entry lives at `index & mask`. Each side keeps cached
//! copies of the other side's index and reads the shared one only when the
//! cache says the ring is full (producer) or empty (consumer).

/// Cached indices of one ring seen from the side that produces into it
/// (fill and TX rings) or consumes from it (RX and completion rings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingIndex {
    size: u32,
    /// Our next entry (producer side) or the next entry to read (consumer side).
    pub(crate) local: u32,
    /// The other side's index as last read.
    pub(crate) cached_peer: u32,
}

impl RingIndex {
    /// A ring of `size` entries, a power of two.
    pub fn new(size: u32) -> Option<RingIndex> {
        size.is_power_of_two().then_some(RingIndex {
            size,
            local: 0,
            cached_peer: 0,
        })
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn mask(&self) -> u32 {
        self.size - 1
    }

    /// Producer side: free entries, given the consumer index last read.
    pub fn free(&self) -> u32 {
        self.size
            .wrapping_sub(self.local.wrapping_sub(self.cached_peer))
    }

    /// Consumer side: entries ready, given the producer index last read.
    pub fn ready(&self) -> u32 {
        self.cached_peer.wrapping_sub(self.local)
    }

    /// The slot of the entry `offset` places after our index.
    pub fn slot(&self, offset: u32) -> usize {
        (self.local.wrapping_add(offset) & self.mask()) as usize
    }

    pub fn advance(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
    }

    /// Starts both indices at `start` (tests exercise the wraparound).
    #[cfg(test)]
    pub fn at(size: u32, start: u32) -> RingIndex {
        RingIndex {
            size,
            local: start,
            cached_peer: start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_must_be_a_power_of_two() {
        assert!(RingIndex::new(0).is_none());
        assert!(RingIndex::new(6).is_none());
        assert_eq!(RingIndex::new(8).map(|r| r.mask()), Some(7));
    }

    #[test]
    fn producer_fills_then_waits_for_the_consumer() {
        let mut r = RingIndex::new(4).unwrap();
        assert_eq!(r.free(), 4);
        r.advance(3);
        assert_eq!(r.free(), 1);
        r.advance(1);
        assert_eq!(r.free(), 0);
        r.cached_peer = 2; // the kernel consumed two
        assert_eq!(r.free(), 2);
    }

    #[test]
    fn consumer_sees_what_was_produced() {
        let mut r = RingIndex::new(8).unwrap();
        assert_eq!(r.ready(), 0);
        r.cached_peer = 5;
        assert_eq!(r.ready(), 5);
        r.advance(5);
        assert_eq!(r.ready(), 0);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mut r = RingIndex::at(8, u32::MAX - 2);
        assert_eq!(r.free(), 8);
        assert_eq!(r.slot(0), ((u32::MAX - 2) & 7) as usize);
        r.advance(6); // crosses u32::MAX
        assert_eq!(r.local, 3);
        assert_eq!(r.free(), 2);
        assert_eq!(r.slot(0), 3);
        r.cached_peer = 1; // consumer crossed too
        assert_eq!(r.free(), 6);

        let mut c = RingIndex::at(8, u32::MAX);
        c.cached_peer = 4; // producer wrapped: 5 entries ready
        assert_eq!(c.ready(), 5);
        c.advance(5);
        assert_eq!(c.ready(), 0);
    }

    #[test]
    fn slots_cycle_through_the_ring() {
        let mut r = RingIndex::new(4).unwrap();
        let mut seen = Vec::new();
        for _ in 0..9 {
            seen.push(r.slot(0));
            r.advance(1);
        }
        assert_eq!(seen, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert_eq!(r.slot(2), 3);
    }
}
