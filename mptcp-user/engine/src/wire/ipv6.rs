//! IPv6 fixed header (extension headers are the caller's business).
use super::{be16, be32, Error, Result};
use std::net::Ipv6Addr;

/// A checked view of an IPv6 packet: the fixed header is whole and the
/// payload length fits the buffer (trailing link-layer padding is ignored).
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < 40 {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        let plen = u16::from_be_bytes([b[4], b[5]]) as usize;
        if b.len() < 40 + plen {
            return Err(Error::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub const fn header_len(&self) -> usize {
        40
    }
    pub fn traffic_class(&self) -> u8 {
        ((be16(self.b(), 0).unwrap_or(0) >> 4) & 0xff) as u8
    }
    pub fn flow_label(&self) -> u32 {
        be32(self.b(), 0).unwrap_or(0) & 0x000f_ffff
    }
    pub fn payload_len(&self) -> usize {
        be16(self.b(), 4).unwrap_or(0) as usize
    }
    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[8..24]);
        Ipv6Addr::from(a)
    }
    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[24..40]);
        Ipv6Addr::from(a)
    }
    pub fn payload(&self) -> &[u8] {
        &self.b()[40..40 + self.payload_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = 40 + self.payload_len();
        &mut self.buffer.as_mut()[40..end]
    }
}

/// An IPv6 fixed header as a plain value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: u16,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
}

impl Default for Ipv6Repr {
    fn default() -> Self {
        Ipv6Repr {
            src: Ipv6Addr::UNSPECIFIED,
            dst: Ipv6Addr::UNSPECIFIED,
            next_header: super::ipv4::PROTO_TCP,
            payload_len: 0,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
    }
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Self> {
        Ok(Ipv6Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: p.payload_len() as u16,
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    pub const fn header_len(&self) -> usize {
        40
    }
    pub fn buffer_len(&self) -> usize {
        40 + self.payload_len as usize
    }

    /// Writes the fixed header at the start of `buf`; returns 40.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let Some(h) = buf.get_mut(..40) else {
            return Err(Error::Exhausted);
        };
        if self.flow_label > 0x000f_ffff {
            return Err(Error::Malformed);
        }
        let first = (6u32 << 28) | ((self.traffic_class as u32) << 20) | self.flow_label;
        h[0..4].copy_from_slice(&first.to_be_bytes());
        h[4..6].copy_from_slice(&self.payload_len.to_be_bytes());
        h[6] = self.next_header;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
        Ok(40)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let r = Ipv6Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            payload_len: 3,
            traffic_class: 0xb8,
            flow_label: 0xabcde,
            ..Default::default()
        };
        let mut buf = [0u8; 44];
        r.emit(&mut buf).unwrap();
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload().len(), 3);
        assert_eq!(Ipv6Repr::parse(&p).unwrap(), r);
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..42]).unwrap_err(),
            Error::Truncated
        );
    }
}
