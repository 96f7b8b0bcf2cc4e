//! IPv4 or IPv6 carrying TCP: the engine's unit of input and output.
use super::ethernet::{EthernetFrame, EthernetRepr, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::ipv4::{Ipv4Packet, Ipv4Repr, PROTO_TCP};
use super::ipv6::{Ipv6Packet, Ipv6Repr};
use super::tcp::{TcpPacket, TcpRepr};
use super::{Error, Result};
use std::net::IpAddr;

/// An IP header of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpRepr {
    V4(Ipv4Repr),
    V6(Ipv6Repr),
}

impl IpRepr {
    /// A TCP-carrying header with default TTL/hop limit; `None` for mixed families.
    pub fn new_tcp(src: IpAddr, dst: IpAddr) -> Option<IpRepr> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(IpRepr::V4(Ipv4Repr {
                src: s,
                dst: d,
                ..Default::default()
            })),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(IpRepr::V6(Ipv6Repr {
                src: s,
                dst: d,
                ..Default::default()
            })),
            _ => None,
        }
    }
    pub fn src(&self) -> IpAddr {
        match self {
            IpRepr::V4(r) => IpAddr::V4(r.src),
            IpRepr::V6(r) => IpAddr::V6(r.src),
        }
    }
    pub fn dst(&self) -> IpAddr {
        match self {
            IpRepr::V4(r) => IpAddr::V4(r.dst),
            IpRepr::V6(r) => IpAddr::V6(r.dst),
        }
    }
    pub fn header_len(&self) -> usize {
        match self {
            IpRepr::V4(_) => 20,
            IpRepr::V6(_) => 40,
        }
    }
    pub fn payload_len(&self) -> usize {
        match self {
            IpRepr::V4(r) => r.payload_len as usize,
            IpRepr::V6(r) => r.payload_len as usize,
        }
    }
    pub fn set_payload_len(&mut self, len: u16) {
        match self {
            IpRepr::V4(r) => r.payload_len = len,
            IpRepr::V6(r) => r.payload_len = len,
        }
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        match self {
            IpRepr::V4(r) => r.emit(buf),
            IpRepr::V6(r) => r.emit(buf),
        }
    }
}

/// Parses an IP packet holding a TCP segment (no IPv4 fragments, no IPv6
/// extension headers). The TCP checksum is not checked; the IPv4 header
/// checksum is (`Malformed` if wrong).
pub fn parse_ip_tcp(packet: &[u8]) -> Result<(IpRepr, TcpRepr<'_>)> {
    let version = packet.first().ok_or(Error::Truncated)? >> 4;
    let (ip, seg) = match version {
        4 => {
            let p = Ipv4Packet::new_checked(packet)?;
            if !p.verify_checksum() {
                return Err(Error::Malformed);
            }
            let r = Ipv4Repr::parse(&p)?;
            if r.protocol != PROTO_TCP || r.is_fragment() {
                return Err(Error::Unsupported);
            }
            let seg = &packet[p.header_len()..p.total_len()];
            (IpRepr::V4(r), seg)
        }
        6 => {
            let p = Ipv6Packet::new_checked(packet)?;
            let r = Ipv6Repr::parse(&p)?;
            if r.next_header != PROTO_TCP {
                return Err(Error::Unsupported);
            }
            (IpRepr::V6(r), &packet[40..40 + p.payload_len()])
        }
        _ => return Err(Error::BadVersion),
    };
    let tcp = TcpRepr::parse_packet(&TcpPacket::new_checked(seg)?)?;
    Ok((ip, tcp))
}

/// Writes an IP header and a TCP segment (with both checksums) into `buf`;
/// the IP payload length is set from the segment. Returns the total length.
pub fn emit_ip_tcp(ip: &IpRepr, tcp: &TcpRepr<'_>, buf: &mut [u8]) -> Result<usize> {
    let tcp_len = u16::try_from(tcp.buffer_len()?).map_err(|_| Error::Exhausted)?;
    let mut ip = *ip;
    ip.set_payload_len(tcp_len);
    let hl = ip.header_len();
    let total = hl + tcp_len as usize;
    if buf.len() < total {
        return Err(Error::Exhausted);
    }
    ip.emit(buf)?;
    tcp.emit(&mut buf[hl..total], ip.src(), ip.dst())?;
    Ok(total)
}

/// Parses an Ethernet frame (one optional 802.1Q tag) holding IP and TCP.
pub fn parse_eth_ip_tcp(frame: &[u8]) -> Result<(EthernetRepr, IpRepr, TcpRepr<'_>)> {
    let f = EthernetFrame::new_checked(frame)?;
    let eth = EthernetRepr::parse(&f)?;
    let payload = &frame[f.header_len()..];
    match eth.ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => {}
        _ => return Err(Error::Unsupported),
    }
    let (ip, tcp) = parse_ip_tcp(payload)?;
    let v6 = matches!(ip, IpRepr::V6(_));
    if v6 != (eth.ethertype == ETHERTYPE_IPV6) {
        return Err(Error::BadVersion);
    }
    Ok((eth, ip, tcp))
}

/// Writes Ethernet, IP and TCP headers plus the payload into `buf` (the
/// EtherType follows the IP family); returns the frame length.
pub fn emit_eth_ip_tcp(
    eth: &EthernetRepr,
    ip: &IpRepr,
    tcp: &TcpRepr<'_>,
    buf: &mut [u8],
) -> Result<usize> {
    let mut eth = *eth;
    eth.ethertype = match ip {
        IpRepr::V4(_) => ETHERTYPE_IPV4,
        IpRepr::V6(_) => ETHERTYPE_IPV6,
    };
    let hl = eth.emit(buf)?;
    let n = emit_ip_tcp(ip, tcp, buf.get_mut(hl..).ok_or(Error::Exhausted)?)?;
    Ok(hl + n)
}
