//! The deterministic pseudo-random byte stream a simulated application
//! sends. Any offset can be regenerated, so the receiver checks the stream
//! as it arrives without keeping a copy.

use super::rng::mix64;

/// Byte `i` of the stream is byte `i % 8` (little-endian) of `mix64(key + i / 8)`.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    key: u64,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            key: mix64(seed ^ 0x7061_7474_6572_6e00),
        }
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
    }
}
