//! A byte buffer addressed by absolute stream offset whose memory grows
//! with use: fixed-size chunks come from a per-thread pool when bytes are
//! written and go back when the owner releases them (acknowledged, or
//! read). An idle connection holds no chunk at all.
//!
//! The owner keeps the invariant that live bytes never span more than the
//! capacity (its window); the ring itself only copies. Offsets below the
//! release point are gone: writing there is ignored, reading gives zeroes.
//!
//! The pool (one per thread: one engine per worker thread) counts the
//! bytes in use, which `--max-memory` bounds by shrinking advertised
//! windows ([`pool::window_allowance`]), never by failing a write.

use std::collections::VecDeque;

/// Bytes per chunk: a page, so a short message costs a page per ring while
/// it is in flight (thousands of connections opening at once each hold a
/// few), and a busy connection still copies in runs of 4 KiB.
pub const CHUNK: usize = 4 << 10;

type Chunk = Box<[u8]>;

/// The per-thread chunk pool and its accounting.
pub mod pool {
    use super::{Chunk, CHUNK};
    use std::cell::RefCell;

    /// Figures of this thread's pool.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PoolStats {
        /// Bytes in chunks held by rings now.
        pub in_use: u64,
        /// Highest `in_use` seen.
        pub peak: u64,
        /// Bytes in free chunks kept for reuse.
        pub free: u64,
        /// Chunks obtained from the allocator (the rest were reused).
        pub allocated: u64,
        /// Chunks handed out while `in_use` was over the limit.
        pub over_limit: u64,
        /// The limit (0: none).
        pub limit: u64,
    }

    struct Pool {
        free: Vec<Chunk>,
        keep: usize,
        stats: PoolStats,
        /// Receive-window budget (0: none) and the window bytes promised
        /// now (what peers may send before hearing from us again).
        window_budget: u64,
        promised: u64,
        /// Connections promising something now (their fair share divides
        /// the budget).
        promising: u64,
    }

    thread_local! {
        static POOL: RefCell<Pool> = const { RefCell::new(Pool {
            free: Vec::new(),
            keep: 1024,
            stats: PoolStats { in_use: 0, peak: 0, free: 0, allocated: 0, over_limit: 0, limit: 0 },
            window_budget: 0,
            promised: 0,
            promising: 0,
        }) };
    }

    /// Bounds the receive windows this thread's connections offer, all
    /// together, to `bytes` (0: no bound): what may be in flight towards
    /// the driver at once, so a burst of connections fits its receive ring
    /// (each window still gets one MSS, see the connection's `free`).
    pub fn set_window_budget(bytes: u64) {
        POOL.with_borrow_mut(|p| p.window_budget = bytes);
    }

    /// Window bytes left in the budget (`u64::MAX` without one).
    pub fn window_budget_left() -> u64 {
        POOL.with_borrow(|p| {
            if p.window_budget == 0 {
                u64::MAX
            } else {
                p.window_budget.saturating_sub(p.promised)
            }
        })
    }

    /// The most a connection that promises `own` bytes now may offer: what
    /// the budget has left plus its own, and no more than a fair share of
    /// the budget, so connections that opened first do not hold it all
    /// (`u64::MAX` without a budget).
    pub fn window_budget_for(own: u64) -> u64 {
        POOL.with_borrow(|p| {
            if p.window_budget == 0 {
                return u64::MAX;
            }
            let sharing = p.promising + (own == 0) as u64;
            let share = p.window_budget / sharing.max(1);
            p.window_budget
                .saturating_sub(p.promised)
                .saturating_add(own)
                .min(share)
        })
    }

    /// Window bytes promised by this thread's connections now.
    pub fn window_promised() -> u64 {
        POOL.with_borrow(|p| p.promised)
    }

    /// A connection's promise changed from `old` to `new` bytes.
    pub fn repromise(old: u64, new: u64) {
        if old != new {
            POOL.with_borrow_mut(|p| {
                p.promised = (p.promised + new).saturating_sub(old);
                p.promising = (p.promising + (new > 0) as u64).saturating_sub((old > 0) as u64);
            });
        }
    }

    /// Sets this thread's memory limit in bytes (0: none) and how many free
    /// chunks it keeps for reuse (beyond that they go back to the allocator).
    pub fn configure(limit: u64, keep_chunks: usize) {
        POOL.with_borrow_mut(|p| {
            p.stats.limit = limit;
            p.keep = keep_chunks;
            while p.free.len() > keep_chunks {
                p.free.pop();
                p.stats.free -= CHUNK as u64;
            }
        });
    }

    pub fn stats() -> PoolStats {
        POOL.with_borrow(|p| p.stats)
    }

    pub(super) fn take() -> Chunk {
        POOL.with_borrow_mut(|p| {
            let s = &mut p.stats;
            if s.limit != 0 && s.in_use >= s.limit {
                s.over_limit += 1;
            }
            s.in_use += CHUNK as u64;
            s.peak = s.peak.max(s.in_use);
            match p.free.pop() {
                Some(c) => {
                    s.free -= CHUNK as u64;
                    c
                }
                None => {
                    s.allocated += 1;
                    vec![0u8; CHUNK].into_boxed_slice()
                }
            }
        })
    }

    pub(super) fn give(c: Chunk) {
        POOL.with_borrow_mut(|p| {
            p.stats.in_use -= CHUNK as u64;
            if p.free.len() < p.keep {
                p.free.push(c);
                p.stats.free += CHUNK as u64;
            }
        })
    }

    /// How many more bytes a receiver may offer in its window, beyond what
    /// its ring already holds in chunks: unbounded without a limit; under
    /// a limit, what is left below it.
    pub fn window_allowance() -> u64 {
        POOL.with_borrow(|p| {
            let s = &p.stats;
            if s.limit == 0 {
                u64::MAX
            } else {
                s.limit.saturating_sub(s.in_use)
            }
        })
    }
}

#[derive(Debug)]
pub struct Ring {
    capacity: u64,
    chunks: VecDeque<Chunk>,
    /// Stream offset of the first chunk's first byte (a multiple of CHUNK).
    base: u64,
    /// Bytes below this offset were released.
    low: u64,
    /// One past the highest offset ever written.
    end: u64,
}

impl Ring {
    /// A ring for at most `capacity` live bytes; no memory until written.
    pub fn new(capacity: usize) -> Ring {
        Ring {
            capacity: capacity.max(1) as u64,
            chunks: VecDeque::new(),
            base: 0,
            low: 0,
            end: 0,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of memory the ring holds now.
    pub fn allocated(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// Bytes already backed by chunks from `from` on (what a receiver may
    /// offer under memory pressure without taking more from the pool).
    pub fn backed_from(&self, from: u64) -> u64 {
        (self.base + self.allocated() as u64).saturating_sub(from.max(self.base))
    }

    /// Copies `data` to stream offsets `[offset, offset + data.len())`.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) {
        debug_assert!(data.len() as u64 <= self.capacity);
        // Bytes below the release point are gone for good.
        let skip = self.low.saturating_sub(offset).min(data.len() as u64) as usize;
        let (offset, data) = (offset + skip as u64, &data[skip..]);
        if data.is_empty() {
            return;
        }
        if self.chunks.is_empty() {
            self.base = self.low - self.low % CHUNK as u64;
        }
        let last = offset + data.len() as u64;
        while self.base + ((self.chunks.len() * CHUNK) as u64) < last {
            self.chunks.push_back(pool::take());
        }
        self.end = self.end.max(last);
        let mut at = offset;
        let mut src = data;
        while !src.is_empty() {
            let rel = (at - self.base) as usize;
            let (i, o) = (rel / CHUNK, rel % CHUNK);
            let n = src.len().min(CHUNK - o);
            self.chunks[i][o..o + n].copy_from_slice(&src[..n]);
            src = &src[n..];
            at += n as u64;
        }
    }

    /// Copies stream offsets `[offset, offset + out.len())` into `out`.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) {
        debug_assert!(out.len() as u64 <= self.capacity);
        let mut at = offset;
        let mut dst = &mut out[..];
        while !dst.is_empty() {
            let n;
            match at.checked_sub(self.base).map(|r| r as usize) {
                Some(rel) if rel / CHUNK < self.chunks.len() => {
                    let (i, o) = (rel / CHUNK, rel % CHUNK);
                    n = dst.len().min(CHUNK - o);
                    dst[..n].copy_from_slice(&self.chunks[i][o..o + n]);
                }
                _ => {
                    // Released or never written: zeroes. A peer can cause
                    // it (a DATA_ACK for data queued but not yet sent);
                    // the bytes are ones it claims to hold already.
                    n = dst.len().min(CHUNK - (at % CHUNK as u64) as usize);
                    dst[..n].fill(0);
                }
            }
            dst = &mut dst[n..];
            at += n as u64;
        }
    }

    /// Calls `f` on the stored slices of `[offset, offset + len)` in order
    /// (zeroes for released or never-written bytes, as `read_at`): reads
    /// such as a checksum without a copy.
    pub fn for_each_slice(&self, offset: u64, len: usize, mut f: impl FnMut(&[u8])) {
        const ZEROES: [u8; CHUNK] = [0; CHUNK];
        let (mut at, end) = (offset, offset + len as u64);
        while at < end {
            let o = (at % CHUNK as u64) as usize;
            let n = ((end - at) as usize).min(CHUNK - o);
            match at.checked_sub(self.base).map(|r| r as usize / CHUNK) {
                Some(i) if i < self.chunks.len() => f(&self.chunks[i][o..o + n]),
                _ => f(&ZEROES[..n]),
            }
            at += n as u64;
        }
    }

    /// The stored bytes from `offset` on, as far as they are contiguous
    /// (to the end of a chunk) and at most `max` (zeroes where nothing is
    /// stored, as `read_at`).
    pub fn slice_at(&self, offset: u64, max: usize) -> &[u8] {
        static ZEROES: [u8; CHUNK] = [0; CHUNK];
        let o = (offset % CHUNK as u64) as usize;
        let n = max.min(CHUNK - o);
        match offset.checked_sub(self.base).map(|r| r as usize / CHUNK) {
            Some(i) if i < self.chunks.len() => &self.chunks[i][o..o + n],
            _ => &ZEROES[..n],
        }
    }

    /// Forgets every byte below `offset`: chunks wholly below it go back to
    /// the pool, and all of them once nothing written lies above it.
    pub fn release(&mut self, offset: u64) {
        if offset <= self.low {
            return;
        }
        self.low = offset;
        if offset >= self.end {
            while let Some(c) = self.chunks.pop_front() {
                pool::give(c);
            }
            return;
        }
        while !self.chunks.is_empty() && self.base + CHUNK as u64 <= offset {
            if let Some(c) = self.chunks.pop_front() {
                pool::give(c);
            }
            self.base += CHUNK as u64;
        }
    }

    /// Reads like [`Ring::read_at`], then releases up to the end of what
    /// was read (a receive buffer read in order).
    pub fn consume(&mut self, offset: u64, out: &mut [u8]) {
        self.read_at(offset, out);
        self.release(offset + out.len() as u64);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        while let Some(c) = self.chunks.pop_front() {
            pool::give(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_gives_memory_back() {
        let before = pool::stats().in_use;
        let mut r = Ring::new(1 << 20);
        assert_eq!(r.allocated(), 0);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        r.write_at(5, &data);
        let mut out = vec![0u8; data.len()];
        r.read_at(5, &mut out);
        assert_eq!(out, data);
        assert_eq!(r.allocated(), (100_005usize).div_ceil(CHUNK) * CHUNK);
        assert_eq!(pool::stats().in_use - before, r.allocated() as u64);
        // Released in part: whole chunks below go back.
        r.release(40_000);
        assert_eq!(r.base, (40_000 / CHUNK * CHUNK) as u64);
        r.read_at(40_000, &mut out[..1000]);
        assert_eq!(&out[..1000], &data[39_995..40_995]);
        // Drained: everything goes back.
        r.consume(40_000, &mut out[..60_005]);
        assert_eq!(&out[..60_005], &data[39_995..]);
        assert_eq!(r.allocated(), 0);
        assert_eq!(pool::stats().in_use, before);
        // Writing below the release point is ignored; above it starts afresh.
        r.write_at(99_000, &data[..2000]);
        r.read_at(100_005, &mut out[..995]);
        assert_eq!(&out[..995], &data[1005..2000]);
        assert_eq!(r.allocated(), CHUNK);
        // Out of order: a gap is backed too, and filled later.
        r.write_at(150_000, &data[..10]);
        r.write_at(120_000, &data[..10]);
        r.read_at(120_000, &mut out[..10]);
        assert_eq!(&out[..10], &data[..10]);
        // Slices in order, as read_at gives them (zeroes below the chunks).
        let mut seen = Vec::new();
        r.for_each_slice(95_000, 30_000, |s| seen.extend_from_slice(s));
        let mut want = vec![0u8; 30_000];
        r.read_at(95_000, &mut want);
        assert_eq!(seen, want);
        assert_eq!(&seen[..3304], &[0; 3304]);
        assert_eq!(&seen[25_000..25_010], &data[..10]);
        // Contiguous slices: to the end of a chunk at most.
        assert_eq!(r.slice_at(120_000, 10), &data[..10]);
        assert_eq!(r.slice_at(120_000, 1 << 20).len(), CHUNK - 120_000 % CHUNK);
        assert_eq!(r.slice_at(95_000, 100), &[0; 100]);
        drop(r);
        assert_eq!(pool::stats().in_use, before);
    }

    #[test]
    fn allowance_follows_the_limit() {
        pool::configure(0, 1024);
        assert_eq!(pool::window_allowance(), u64::MAX);
        let base = pool::stats().in_use;
        pool::configure(base + 4 * CHUNK as u64, 1024);
        let mut r = Ring::new(1 << 20);
        r.write_at(0, &[1; CHUNK]);
        assert_eq!(pool::window_allowance(), 3 * CHUNK as u64);
        assert_eq!(r.backed_from(100), CHUNK as u64 - 100);
        r.write_at(CHUNK as u64, &[1; 4 * CHUNK]);
        assert_eq!(pool::window_allowance(), 0);
        assert!(pool::stats().over_limit >= 1);
        drop(r);
        pool::configure(0, 1024);
    }
}
