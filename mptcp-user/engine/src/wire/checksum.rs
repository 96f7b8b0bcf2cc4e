//! Internet checksum (RFC 1071), pseudo-headers and incremental update (RFC 1624).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Adds `data` to a running one's-complement sum (not yet folded). Odd
/// trailing bytes are padded with zero, so only the last chunk of a message
/// may have odd length.
pub fn accumulate(sum: u64, data: &[u8]) -> u64 {
    // One's-complement addition is byte-order independent up to a final
    // swap, so add native 4-byte words into 64-bit accumulators (no carry
    // is lost below 2^32 words), then fold to 16 bits and swap into network
    // order. Four independent accumulators over 16-byte blocks let the
    // compiler vectorise: this runs once per received and per sent segment.
    let mut acc = [0u64; 4];
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        add_block(&mut acc, b);
    }
    finish(acc, blocks.remainder(), sum)
}

/// Copies `src` into `dst` (same length) and adds it to a running sum, as
/// [`accumulate`] does, in one pass: the sender's payload is read once.
pub fn copy_and_accumulate(sum: u64, dst: &mut [u8], src: &[u8]) -> u64 {
    debug_assert_eq!(dst.len(), src.len());
    let mut acc = [0u64; 4];
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (o, b) in (&mut d).zip(&mut s) {
        o.copy_from_slice(b);
        add_block(&mut acc, b);
    }
    let rest = s.remainder();
    d.into_remainder().copy_from_slice(rest);
    finish(acc, rest, sum)
}

/// Adds one 16-byte block to the four accumulators.
#[inline(always)]
fn add_block(acc: &mut [u64; 4], b: &[u8]) {
    for (i, a) in acc.iter_mut().enumerate() {
        *a += u64::from(u32::from_ne_bytes([
            b[4 * i],
            b[4 * i + 1],
            b[4 * i + 2],
            b[4 * i + 3],
        ]));
    }
}

/// Adds the last partial block (zero-padded), folds and swaps into network
/// order, and adds that to `sum`.
#[inline(always)]
fn finish(mut acc: [u64; 4], rest: &[u8], sum: u64) -> u64 {
    let mut tail = [0u8; 16];
    tail[..rest.len()].copy_from_slice(rest);
    add_block(&mut acc, &tail);
    // Each accumulator is below 2^62: the sum cannot overflow.
    let folded = fold(acc.iter().sum());
    let be = if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    };
    sum + be as u64
}

/// Folds a running sum into 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data` (complemented, ready for the wire).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(accumulate(0, data))
}

/// Sum of the IPv4 pseudo-header (RFC 793) for an upper-layer length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) -> u64 {
    let mut sum = accumulate(0, &src.octets());
    sum = accumulate(sum, &dst.octets());
    sum + protocol as u64 + len as u64
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u64 {
    let mut sum = accumulate(0, &src.octets());
    sum = accumulate(sum, &dst.octets());
    sum + next_header as u64 + len as u64
}

/// Pseudo-header sum for a pair of addresses of one family; `None` if mixed.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: u32) -> Option<u64> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(pseudo_header_v4(s, d, protocol, len)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(pseudo_header_v6(s, d, protocol, len)),
        _ => None,
    }
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changes from
/// `old` to `new`, without touching the rest of the data.
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = (!checksum) as u64 + (!old) as u64 + new as u64;
    !fold(sum)
}

/// As [`update16`] for a 32-bit field (a sequence number, an IPv4 address).
pub fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    let c = update16(checksum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_sums_as_accumulate_does() {
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in [0, 1, 15, 16, 17, 1459, 1460, 1500] {
            let mut out = vec![0u8; len];
            let got = copy_and_accumulate(7, &mut out, &data[..len]);
            assert_eq!(out, &data[..len]);
            assert_eq!(fold(got), fold(accumulate(7, &data[..len])), "len {len}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: these bytes sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    /// RFC 1071 done the slow way: big-endian 16-bit words, folded.
    fn naive(data: &[u8]) -> u16 {
        let mut sum = 0u64;
        for pair in data.chunks(2) {
            sum += u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u64;
        }
        fold(sum)
    }

    proptest::proptest! {
        #[test]
        fn matches_naive_sum(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), start in 0u64..1 << 40) {
            proptest::prop_assert_eq!(fold(accumulate(start, &data)), fold(start + naive(&data) as u64));
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0xab]), checksum(&[0xab, 0x00]));
        assert_eq!(checksum(&[1, 2, 3, 4, 5]), checksum(&[1, 2, 3, 4, 5, 0]));
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data = [
            0x45u8, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 10, 1, 1, 1, 10, 1, 1, 2,
        ];
        let c0 = checksum(&data);
        data[8] = 0x3f; // TTL decrement changes the word at offset 8
        let c1 = checksum(&data);
        assert_eq!(update16(c0, 0x4006, 0x3f06), c1);
        let old = u32::from_be_bytes([10, 1, 1, 2]);
        let new = u32::from_be_bytes([192, 168, 7, 9]);
        data[16..20].copy_from_slice(&new.to_be_bytes());
        assert_eq!(update32(c1, old, new), checksum(&data));
    }
}
