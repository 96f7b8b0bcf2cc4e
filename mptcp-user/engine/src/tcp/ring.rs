//! A byte ring addressed by absolute stream offset (offset modulo capacity),
//! allocated once. The owner keeps the invariant that live bytes never span
//! more than the capacity; the ring itself only copies.

#[derive(Debug)]
pub struct Ring {
    buf: Box<[u8]>,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            buf: vec![0u8; capacity.max(1)].into_boxed_slice(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.buf.len() as u64
    }

    fn index(&self, offset: u64) -> usize {
        (offset % self.buf.len() as u64) as usize
    }

    /// Copies `data` to stream offsets `[offset, offset + data.len())`.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) {
        debug_assert!(data.len() <= self.buf.len());
        let at = self.index(offset);
        let first = data.len().min(self.buf.len() - at);
        self.buf[at..at + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// Copies stream offsets `[offset, offset + out.len())` into `out`.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) {
        debug_assert!(out.len() <= self.buf.len());
        let at = self.index(offset);
        let first = out.len().min(self.buf.len() - at);
        out[..first].copy_from_slice(&self.buf[at..at + first]);
        let rest = out.len() - first;
        out[first..].copy_from_slice(&self.buf[..rest]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around() {
        let mut r = Ring::new(8);
        r.write_at(6, &[1, 2, 3, 4]);
        let mut out = [0u8; 4];
        r.read_at(6, &mut out);
        assert_eq!(out, [1, 2, 3, 4]);
        r.read_at(8, &mut out[..2]);
        assert_eq!(&out[..2], &[3, 4]);
    }
}
