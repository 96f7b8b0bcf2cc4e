//! Initial sequence numbers per RFC 6528: ISN = M + F(4-tuple, secret), with
//! M a 4 microsecond clock (here the driver's time) and F SHA-256.

use crate::time::Instant;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

fn feed_addr(h: &mut Sha256, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => h.update(ip.octets()),
        IpAddr::V6(ip) => h.update(ip.octets()),
    }
    h.update(a.port().to_be_bytes());
}

/// Returns (ISN, timestamp offset). The timestamp offset comes from the same
/// hash so TSval does not reveal the driver's clock (RFC 7323 section 7.1).
pub fn initial_sequence(
    secret: &[u8; 16],
    local: &SocketAddr,
    remote: &SocketAddr,
    now: Instant,
) -> (u32, u32) {
    let mut h = Sha256::new();
    h.update(secret);
    feed_addr(&mut h, local);
    feed_addr(&mut h, remote);
    let d = h.finalize();
    let f = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let ts_offset = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let m = (now.as_nanos() / 4_000) as u32;
    (f.wrapping_add(m), ts_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_tuple_secret_and_clock() {
        let l: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let r: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let r2: SocketAddr = "10.0.0.2:81".parse().unwrap();
        let s = [7u8; 16];
        let t0 = Instant::ZERO;
        let (a, _) = initial_sequence(&s, &l, &r, t0);
        let (b, _) = initial_sequence(&s, &l, &r2, t0);
        let (c, _) = initial_sequence(&[8u8; 16], &l, &r, t0);
        let (d, _) = initial_sequence(&s, &l, &r, Instant::from_nanos(4_000 * 10));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(d, a.wrapping_add(10));
    }
}
