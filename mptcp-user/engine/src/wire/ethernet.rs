//! Ethernet II frames with at most one 802.1Q tag.
use super::{be16, Error, Result};
use core::fmt;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// A MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            a[0], a[1], a[2], a[3], a[4], a[5]
        )
    }
}

/// A checked view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` after checking it holds the whole header (and the tag, if any).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < 14 {
            return Err(Error::Truncated);
        }
        let f = EthernetFrame { buffer };
        if f.buffer.as_ref().len() < f.header_len() {
            return Err(Error::Truncated);
        }
        Ok(f)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn tagged(&self) -> bool {
        u16::from_be_bytes([self.buffer.as_ref()[12], self.buffer.as_ref()[13]]) == ETHERTYPE_VLAN
    }

    /// 14, or 18 with an 802.1Q tag.
    pub fn header_len(&self) -> usize {
        if self.tagged() {
            18
        } else {
            14
        }
    }

    pub fn dst(&self) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[0..6]);
        MacAddr(a)
    }

    pub fn src(&self) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[6..12]);
        MacAddr(a)
    }

    /// The 802.1Q tag control information (PCP, DEI, VLAN id), if tagged.
    pub fn vlan_tci(&self) -> Option<u16> {
        if self.tagged() {
            be16(self.buffer.as_ref(), 14).ok()
        } else {
            None
        }
    }

    /// The EtherType of the payload (after the tag, if any).
    pub fn ethertype(&self) -> u16 {
        let at = self.header_len() - 2;
        be16(self.buffer.as_ref(), at).unwrap_or(0)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[0..6].copy_from_slice(&mac.0);
    }
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[6..12].copy_from_slice(&mac.0);
    }
}

/// An Ethernet header as a plain value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// 802.1Q tag control information, when the frame carries one tag.
    pub vlan: Option<u16>,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self> {
        Ok(EthernetRepr {
            dst: frame.dst(),
            src: frame.src(),
            vlan: frame.vlan_tci(),
            ethertype: frame.ethertype(),
        })
    }

    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            14
        }
    }

    /// Writes the header at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        let Some(h) = buf.get_mut(..len) else {
            return Err(Error::Exhausted);
        };
        h[0..6].copy_from_slice(&self.dst.0);
        h[6..12].copy_from_slice(&self.src.0);
        if let Some(tci) = self.vlan {
            h[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            h[14..16].copy_from_slice(&tci.to_be_bytes());
        }
        h[len - 2..len].copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_roundtrip() {
        let repr = EthernetRepr {
            dst: MacAddr([1, 2, 3, 4, 5, 6]),
            src: MacAddr([7, 8, 9, 10, 11, 12]),
            vlan: Some(0x2064),
            ethertype: ETHERTYPE_IPV6,
        };
        let mut buf = [0u8; 20];
        assert_eq!(repr.emit(&mut buf).unwrap(), 18);
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.payload().len(), 2);
        assert_eq!(EthernetRepr::parse(&f).unwrap(), repr);
        assert_eq!(
            EthernetFrame::new_checked(&buf[..17]).unwrap_err(),
            Error::Truncated
        );
    }
}
