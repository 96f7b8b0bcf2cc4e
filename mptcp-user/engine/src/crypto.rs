//! MPTCP v1 cryptography (RFC 8684 sections 3.1, 3.2, 3.3.1, 3.4.1):
//! tokens and IDSNs from keys, MP_JOIN and ADD_ADDR HMACs (HMAC-SHA256),
//! and the DSS checksum.
use crate::wire::checksum;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// SHA-256 of a key in network byte order.
pub fn key_digest(key: u64) -> [u8; 32] {
    Sha256::digest(key.to_be_bytes()).into()
}

/// The connection token: the most significant 32 bits of SHA-256(key).
pub fn token(key: u64) -> u32 {
    let d = key_digest(key);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The initial data sequence number: the least significant 64 bits of SHA-256(key).
pub fn idsn(key: u64) -> u64 {
    let d = key_digest(key);
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&d[24..32]);
    u64::from_be_bytes(tail)
}

/// HMAC-SHA256 with a 16-byte key made of two 64-bit keys.
fn hmac_keys(first: u64, second: u64, msg: &[u8]) -> [u8; 32] {
    // HMAC pads short keys with zeros to the block size (RFC 2104), so a
    // zero-padded 64-byte key is the same key, and `new` cannot fail.
    let mut k = [0u8; 64];
    k[..8].copy_from_slice(&first.to_be_bytes());
    k[8..16].copy_from_slice(&second.to_be_bytes());
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&k.into());
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The MP_JOIN HMAC a host sends: key = own key || peer key, message =
/// own nonce || peer nonce. The SYN/ACK carries its leftmost 64 bits
/// ([`truncate64`]), the third ACK its leftmost 160 bits ([`truncate160`]).
pub fn join_hmac(own_key: u64, peer_key: u64, own_nonce: u32, peer_nonce: u32) -> [u8; 32] {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&own_nonce.to_be_bytes());
    msg[4..].copy_from_slice(&peer_nonce.to_be_bytes());
    hmac_keys(own_key, peer_key, &msg)
}

/// The MP_JOIN SYN/ACK HMAC sent by the listener B: HMAC(KeyB||KeyA, RB||RA), 64 bits.
pub fn join_synack_hmac(key_b: u64, key_a: u64, nonce_b: u32, nonce_a: u32) -> u64 {
    truncate64(&join_hmac(key_b, key_a, nonce_b, nonce_a))
}

/// The MP_JOIN ACK HMAC sent by the initiator A: HMAC(KeyA||KeyB, RA||RB), 160 bits.
pub fn join_ack_hmac(key_a: u64, key_b: u64, nonce_a: u32, nonce_b: u32) -> [u8; 20] {
    truncate160(&join_hmac(key_a, key_b, nonce_a, nonce_b))
}

/// The ADD_ADDR HMAC: key = sender's key || receiver's key, message =
/// address id || address || port (two zero bytes when no port is sent),
/// truncated to the rightmost 64 bits (RFC 8684 section 3.4.1; unlike
/// MP_JOIN's leftmost bits; Linux does the same).
pub fn add_addr_hmac(
    sender_key: u64,
    receiver_key: u64,
    addr_id: u8,
    addr: IpAddr,
    port: Option<u16>,
) -> u64 {
    let mut msg = [0u8; 19];
    msg[0] = addr_id;
    let at = match addr {
        IpAddr::V4(a) => {
            msg[1..5].copy_from_slice(&a.octets());
            5
        }
        IpAddr::V6(a) => {
            msg[1..17].copy_from_slice(&a.octets());
            17
        }
    };
    msg[at..at + 2].copy_from_slice(&port.unwrap_or(0).to_be_bytes());
    let mac = hmac_keys(sender_key, receiver_key, &msg[..at + 2]);
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&mac[24..]);
    u64::from_be_bytes(tail)
}

/// The leftmost 64 bits of an HMAC (MP_JOIN SYN/ACK).
pub fn truncate64(mac: &[u8; 32]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&mac[..8]);
    u64::from_be_bytes(a)
}

/// The leftmost 160 bits of an HMAC (MP_JOIN third ACK).
pub fn truncate160(mac: &[u8; 32]) -> [u8; 20] {
    let mut a = [0u8; 20];
    a.copy_from_slice(&mac[..20]);
    a
}

/// Running DSS checksum over a mapping whose data may span several
/// segments: start with the pseudo-header, add payload pieces in order.
#[derive(Clone, Copy, Debug)]
pub struct DssChecksum {
    sum: u64,
    /// Bytes added so far; an odd count shifts the next piece's alignment.
    added: u64,
}

impl DssChecksum {
    /// Pseudo-header: 64-bit DSN, 32-bit relative subflow sequence number,
    /// data-level length, and a zero checksum field.
    pub fn new(dsn: u64, ssn: u32, data_len: u16) -> Self {
        let mut ph = [0u8; 16];
        ph[..8].copy_from_slice(&dsn.to_be_bytes());
        ph[8..12].copy_from_slice(&ssn.to_be_bytes());
        ph[12..14].copy_from_slice(&data_len.to_be_bytes());
        DssChecksum {
            sum: checksum::accumulate(0, &ph),
            added: 0,
        }
    }

    pub fn add(&mut self, data: &[u8]) {
        let piece = checksum::fold(checksum::accumulate(0, data)) as u64;
        // A piece starting at an odd offset contributes byte-swapped words.
        self.sum += if self.added % 2 == 1 {
            (piece as u16).swap_bytes() as u64
        } else {
            piece
        };
        self.added += data.len() as u64;
    }

    /// The value to put on the wire.
    pub fn finish(&self) -> u16 {
        !checksum::fold(self.sum)
    }
}

/// The DSS checksum of a mapping whose data is all in `payload`.
pub fn dss_checksum(dsn: u64, ssn: u32, data_len: u16, payload: &[u8]) -> u16 {
    let mut c = DssChecksum::new(dsn, ssn, data_len);
    c.add(payload);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from the Linux 6.18 capture handshake-join-addaddr.pcap cannot
    // be restated here without the keys; those are checked by the decode
    // tests. These pin the constructions against independent computations.

    #[test]
    fn token_and_idsn_are_digest_ends() {
        // SHA-256 of eight zero bytes = af5570f5a1810b7a f78caf4bc70a660f 0df51e42baf91d4d e5b2328de0e83dfc
        assert_eq!(token(0), 0xaf5570f5);
        assert_eq!(idsn(0), 0xe5b2328de0e83dfc);
    }

    #[test]
    fn hmac_rfc4231_case2_shape() {
        // RFC 4231 test case 2 uses key "Jefe": check our HMAC plumbing with it.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let out: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(truncate64(&out), 0x5bdcc146bf60754e);
    }

    /// Values Linux 6.18 put on the wire in the shared fixture
    /// handshake-join-addaddr.pcap (read with tshark: `tcp.options.mptcp.*`).
    /// Client A 10.1.1.1, server B 10.1.1.2; keys from the MP_CAPABLE ACK.
    const KEY_A: u64 = 10946790433821942513;
    const KEY_B: u64 = 11119721905219461173;

    fn hex20(s: &str) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn tokens_and_idsns_match_linux() {
        // Frame 6's MP_JOIN SYN carries B's token; tshark's expected token of A.
        assert_eq!(token(KEY_B), 2914099435);
        assert_eq!(token(KEY_A), 1749565944);
        // Frame 14: A's first mapping starts at IDSN(A) + 1; its 32-bit
        // DATA_ACK acknowledges B's IDSN + 1.
        assert_eq!(idsn(KEY_A), 7537480983703206041);
        assert_eq!(idsn(KEY_B) as u32, 4201329994);
    }

    #[test]
    fn join_hmacs_match_linux() {
        // (RA from the SYN, RB and truncated HMAC-B from the SYN/ACK,
        // HMAC-A from the third ACK): frames 6-8 and 10-12.
        for (ra, rb, synack, ack) in [
            (
                2091223804u32,
                1820067546u32,
                11651746532590373875u64,
                "5be526a77354e87e2c9261b580361eb49585f077",
            ),
            (
                146933198,
                147588127,
                11410597288376680374,
                "4e8cf0440b31d5ebcb31e2df9151b3542b0dfd3e",
            ),
        ] {
            assert_eq!(join_synack_hmac(KEY_B, KEY_A, rb, ra), synack);
            assert_eq!(join_ack_hmac(KEY_A, KEY_B, ra, rb), hex20(ack));
        }
    }

    #[test]
    fn add_addr_hmac_matches_linux() {
        // Frame 4: B announces 10.1.2.2 as address id 1, no port.
        let addr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(
            add_addr_hmac(KEY_B, KEY_A, 1, addr, None),
            3216388657184113872
        );
    }

    #[test]
    fn dss_checksum_split_matches_whole() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = dss_checksum(0x1122334455667788, 1, 1001, &data);
        for cut in [0, 1, 2, 3, 500, 501, 1000, 1001] {
            let mut c = DssChecksum::new(0x1122334455667788, 1, 1001);
            c.add(&data[..cut]);
            c.add(&data[cut..]);
            assert_eq!(c.finish(), whole, "cut at {cut}");
        }
        // Verifying: the sum with the checksum in place folds to all ones.
        let mut ph = [0u8; 16];
        ph[..8].copy_from_slice(&0x1122334455667788u64.to_be_bytes());
        ph[8..12].copy_from_slice(&1u32.to_be_bytes());
        ph[12..14].copy_from_slice(&1001u16.to_be_bytes());
        ph[14..16].copy_from_slice(&whole.to_be_bytes());
        let s = checksum::accumulate(checksum::accumulate(0, &ph), &data);
        assert_eq!(checksum::fold(s), 0xffff);
    }
}
