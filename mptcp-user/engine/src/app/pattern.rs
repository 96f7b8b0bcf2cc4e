//! The test pattern: a deterministic pseudo-random byte stream that every
//! sender in the project writes (the simulator, `connect`, `serve --mode
//! source`, the integration tests, the benchmarks). Any offset can be
//! regenerated, so a receiver checks the stream as it arrives without
//! keeping a copy, and shifted, dropped or duplicated bytes show.

/// SplitMix64's finaliser: a fast 64-bit bijection with good avalanche.
pub const fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Byte `i` of the stream is byte `i % 8` (little-endian) of `mix64(key + i / 8)`.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    key: u64,
}

impl Pattern {
    /// The stream of the datapath's applications and tests (seed 0).
    pub const STREAM: Pattern = Pattern::new(0);

    pub const fn new(seed: u64) -> Pattern {
        Pattern {
            key: mix64(seed ^ 0x7061_7474_6572_6e00),
        }
    }

    /// The byte at `offset`.
    pub fn byte(&self, offset: u64) -> u8 {
        self.word(offset / 8)[(offset % 8) as usize]
    }

    /// `len` bytes of the stream from `offset`.
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(offset, &mut v);
        v
    }

    /// How many bytes of `data` differ from the stream at `offset`.
    pub fn mismatches(&self, offset: u64, data: &[u8]) -> u64 {
        let mut bad = 0u64;
        let mut pos = offset;
        for chunk in data.chunks(8) {
            let word = self.word(pos / 8);
            let skip = (pos % 8) as usize;
            let n = (8 - skip).min(chunk.len());
            bad += chunk[..n]
                .iter()
                .zip(&word[skip..skip + n])
                .filter(|(a, b)| a != b)
                .count() as u64;
            // A chunk that straddles two words: the rest is checked next round.
            if n < chunk.len() {
                bad += self.mismatches(pos + n as u64, &chunk[n..]);
            }
            pos += chunk.len() as u64;
        }
        bad
    }

    fn word(&self, index: u64) -> [u8; 8] {
        mix64(self.key.wrapping_add(index)).to_le_bytes()
    }

    /// Fills `buf` with the stream bytes starting at `offset`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut out = buf;
        while !out.is_empty() {
            let word = self.word(pos / 8);
            let skip = (pos % 8) as usize;
            let n = (8 - skip).min(out.len());
            out[..n].copy_from_slice(&word[skip..skip + n]);
            out = &mut out[n..];
            pos += n as u64;
        }
    }

    /// Index in `data` of the first byte that differs from the stream at `offset`.
    pub fn first_mismatch(&self, offset: u64, data: &[u8]) -> Option<usize> {
        let mut pos = offset;
        let mut rest = data;
        let mut checked = 0;
        while !rest.is_empty() {
            let word = self.word(pos / 8);
            let skip = (pos % 8) as usize;
            let n = (8 - skip).min(rest.len());
            if rest[..n] != word[skip..skip + n] {
                let i = (0..n).find(|&i| rest[i] != word[skip + i]).unwrap_or(0);
                return Some(checked + i);
            }
            rest = &rest[n..];
            pos += n as u64;
            checked += n;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_position_addressable() {
        let p = Pattern::new(3);
        let mut whole = vec![0u8; 100];
        p.fill(0, &mut whole);
        let mut part = vec![0u8; 37];
        p.fill(13, &mut part);
        assert_eq!(&whole[13..50], &part[..]);
        assert_ne!(whole[..8], whole[8..16]);
        let mut other = vec![0u8; 100];
        Pattern::new(4).fill(0, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn finds_the_first_wrong_byte() {
        let p = Pattern::new(9);
        let mut buf = vec![0u8; 64];
        p.fill(5, &mut buf);
        assert_eq!(p.first_mismatch(5, &buf), None);
        buf[21] ^= 0x40;
        buf[40] ^= 1;
        assert_eq!(p.first_mismatch(5, &buf), Some(21));
        assert_eq!(p.first_mismatch(6, &buf[1..]), Some(20));
        // The same bytes read at the wrong offset do not pass.
        assert!(p.first_mismatch(4, &buf).is_some());
        assert_eq!(p.mismatches(5, &buf), 2);
        assert_eq!(p.mismatches(6, &buf[1..]), 2);
    }

    #[test]
    fn byte_agrees_with_fill() {
        let p = Pattern::STREAM;
        let v = p.bytes(12_345, 300);
        for (i, b) in v.iter().enumerate() {
            assert_eq!(*b, p.byte(12_345 + i as u64), "offset {i}");
        }
        assert_eq!(p.mismatches(12_345, &v), 0);
    }
}
