//! The one source of secrets (MPTCP keys and nonces, TCP ISNs): random by
//! default. Deterministic secrets are for tests and the simulator, which
//! set them explicitly from a seed.
//!
//! Read once per configuration from the OS (`/dev/urandom`), never on the
//! packet path. Should that fail (a sandbox without /dev), the standard
//! library's randomly keyed SipHash (seeded by the kernel's getrandom) is
//! the fallback, so a default configuration never carries a constant.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;

/// `N` random bytes.
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut out));
    if from_os.is_err() {
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_draws_differ() {
        let a: [u8; 32] = super::random();
        let b: [u8; 32] = super::random();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
