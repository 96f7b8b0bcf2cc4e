//! IPv4 header (any IHL; options are skipped on parse, never emitted).
use super::checksum;
use super::{be16, Error, Result};
use std::net::Ipv4Addr;

pub const PROTO_TCP: u8 = 6;

/// A checked view of an IPv4 packet: the header is whole and the total
/// length fits the buffer (trailing link-layer padding is ignored).
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < 20 {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let ihl = ((b[0] & 0x0f) as usize) * 4;
        let total = u16::from_be_bytes([b[2], b[3]]) as usize;
        if ihl < 20 || total < ihl {
            return Err(Error::BadLength);
        }
        if b.len() < ihl || b.len() < total {
            return Err(Error::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn header_len(&self) -> usize {
        ((self.b()[0] & 0x0f) as usize) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.b()[1]
    }
    pub fn total_len(&self) -> usize {
        be16(self.b(), 2).unwrap_or(0) as usize
    }
    pub fn ident(&self) -> u16 {
        be16(self.b(), 4).unwrap_or(0)
    }
    pub fn dont_frag(&self) -> bool {
        self.b()[6] & 0x40 != 0
    }
    pub fn more_frags(&self) -> bool {
        self.b()[6] & 0x20 != 0
    }
    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        be16(self.b(), 6).unwrap_or(0) & 0x1fff
    }
    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }
    pub fn header_checksum(&self) -> u16 {
        be16(self.b(), 10).unwrap_or(0)
    }
    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    pub fn options(&self) -> &[u8] {
        &self.b()[20..self.header_len()]
    }
    /// True when the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.b()[..self.header_len()]) == 0
    }
    /// The payload up to the total length (link padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[h..t]
    }
    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        let h = self.header_len();
        let b = self.buffer.as_mut();
        b[10] = 0;
        b[11] = 0;
        let c = checksum::checksum(&b[..h]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }
    /// Decrements the TTL and patches the checksum incrementally (RFC 1624).
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        let old = u16::from_be_bytes([b[8], b[9]]);
        b[8] = b[8].wrapping_sub(1);
        let new = u16::from_be_bytes([b[8], b[9]]);
        let c = checksum::update16(u16::from_be_bytes([b[10], b[11]]), old, new);
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// An IPv4 header as a plain value. Emitted without options (IHL 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Length of what follows the header.
    pub payload_len: u16,
    pub ttl: u8,
    /// DSCP (high six bits) and ECN (low two).
    pub dscp_ecn: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    pub frag_offset: u16,
}

impl Default for Ipv4Repr {
    fn default() -> Self {
        Ipv4Repr {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            protocol: PROTO_TCP,
            payload_len: 0,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
    }
}

impl Ipv4Repr {
    /// Parses the header; the checksum is not checked (see `verify_checksum`).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self> {
        Ok(Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: (p.total_len() - p.header_len()) as u16,
            ttl: p.ttl(),
            dscp_ecn: p.dscp_ecn(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
        })
    }

    pub const fn header_len(&self) -> usize {
        20
    }
    pub fn buffer_len(&self) -> usize {
        20 + self.payload_len as usize
    }
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }

    /// Writes the header (with its checksum) at the start of `buf`; returns 20.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let Some(h) = buf.get_mut(..20) else {
            return Err(Error::Exhausted);
        };
        let total = self.payload_len.checked_add(20).ok_or(Error::Malformed)?;
        if self.frag_offset > 0x1fff {
            return Err(Error::Malformed);
        }
        h[0] = 0x45;
        h[1] = self.dscp_ecn;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        let frag = self.frag_offset
            | if self.dont_frag { 0x4000 } else { 0 }
            | if self.more_frags { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[10] = 0;
        h[11] = 0;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        Ok(20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 1, 1, 1),
            dst: Ipv4Addr::new(10, 1, 1, 2),
            payload_len: 4,
            ident: 0x1234,
            ..Default::default()
        }
    }

    #[test]
    fn roundtrip_and_checksum() {
        let mut buf = [0u8; 24];
        sample().emit(&mut buf).unwrap();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), sample());
        let mut bad = buf;
        bad[15] ^= 1;
        assert!(!Ipv4Packet::new_checked(&bad[..]).unwrap().verify_checksum());
    }

    #[test]
    fn options_are_skipped() {
        // IHL 6: one word of options (NOPs), 4 payload bytes.
        let mut buf = [0u8; 28];
        sample().emit(&mut buf).unwrap();
        let mut with = [0u8; 28];
        with[..20].copy_from_slice(&buf[..20]);
        with[0] = 0x46;
        with[2..4].copy_from_slice(&28u16.to_be_bytes());
        with[20..24].copy_from_slice(&[1, 1, 1, 0]);
        with[24..28].copy_from_slice(&[9, 9, 9, 9]);
        let mut p = Ipv4Packet::new_checked(&mut with[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[9, 9, 9, 9]);
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), sample());
        p.decrement_ttl();
        assert!(p.verify_checksum());
    }

    #[test]
    fn bad_headers() {
        let mut buf = [0u8; 24];
        sample().emit(&mut buf).unwrap();
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..23]).unwrap_err(),
            Error::Truncated
        );
        let mut v6 = buf;
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            Error::BadVersion
        );
        let mut ihl = buf;
        ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&ihl[..]).unwrap_err(),
            Error::BadLength
        );
    }
}
