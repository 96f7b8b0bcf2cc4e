//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN` tests of the XDP classifier.
use std::net::IpAddr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// A TCP segment in an Ethernet frame, built field by field.
#[derive(Clone, Debug)]
pub struct TcpFrame {
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub flags: u8,
    /// Raw option bytes; padded with EOL to a multiple of 4 unless `raw_data_offset` is set.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    /// Overrides the data offset field (in 32-bit words) to craft bad headers.
    pub raw_data_offset: Option<u8>,
    /// IPv4 only: overrides IHL (in words); the header gets that many words
    /// of options when it is more than 5.
    pub ihl: u8,
    /// IPv4 only: flags and fragment offset field.
    pub frag: u16,
    /// IP protocol / IPv6 next header.
    pub protocol: u8,
}

impl TcpFrame {
    pub fn new(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> TcpFrame {
        TcpFrame {
            vlan: None,
            src,
            dst,
            src_port,
            dst_port,
            flags: ACK,
            options: Vec::new(),
            payload: Vec::new(),
            raw_data_offset: None,
            ihl: 5,
            frag: 0x4000, // DF
            protocol: 6,
        }
    }

    pub fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    pub fn options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut options = self.options.clone();
        if self.raw_data_offset.is_none() {
            while !options.len().is_multiple_of(4) {
                options.push(0);
            }
        }
        let data_offset = self
            .raw_data_offset
            .unwrap_or(((20 + options.len()) / 4) as u8);
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.src_port.to_be_bytes());
        tcp.extend_from_slice(&self.dst_port.to_be_bytes());
        tcp.extend_from_slice(&1000u32.to_be_bytes());
        tcp.extend_from_slice(&2000u32.to_be_bytes());
        tcp.push(data_offset << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&65535u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent: the classifier ignores them
        tcp.extend_from_slice(&options);
        tcp.extend_from_slice(&self.payload);

        let mut frame = ethernet(
            self.vlan,
            if self.dst.is_ipv4() {
                ETH_P_IP
            } else {
                ETH_P_IPV6
            },
        );
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let header_len = usize::from(self.ihl.max(5)) * 4;
                let total = (header_len + tcp.len()) as u16;
                let mut ip = vec![0x40 | (self.ihl & 0x0f), 0];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34]);
                ip.extend_from_slice(&self.frag.to_be_bytes());
                ip.extend_from_slice(&[64, self.protocol, 0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.resize(header_len, 1); // NOP options
                let sum = checksum(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                frame.extend_from_slice(&ip);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                frame.extend_from_slice(&[self.protocol, 64]);
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
            }
            _ => panic!("mixed address families in a test frame"),
        }
        frame.extend_from_slice(&tcp);
        frame
    }
}

/// Destination/source MACs and the EtherType, with an optional 802.1Q tag.
pub fn ethernet(vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    if let Some(id) = vlan {
        frame.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut frame = ethernet(None, ETH_P_ARP);
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    frame
}

/// RFC 1071 checksum.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// MPTCP option bytes (RFC 8684) for each kind the classifier tells apart.
pub mod mptcp {
    /// MP_CAPABLE in a SYN (v1: no key).
    pub const MP_CAPABLE_SYN: [u8; 4] = [30, 4, 0x01, 0x81];
    /// MP_CAPABLE in the third ACK (both keys).
    pub const MP_CAPABLE_ACK: [u8; 20] = [
        30, 20, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ];
    /// MP_JOIN in a SYN: address id, token, nonce.
    pub const MP_JOIN_SYN: [u8; 12] = [30, 12, 0x10, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4];
    /// DSS with a 4-byte DATA_ACK.
    pub const DSS_ACK: [u8; 8] = [30, 8, 0x20, 0x01, 0, 0, 0, 42];
    /// ADD_ADDR (IPv4, with HMAC).
    pub const ADD_ADDR: [u8; 16] = [30, 16, 0x30, 2, 10, 0, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8];
    /// MP_PRIO.
    pub const MP_PRIO: [u8; 3] = [30, 3, 0x50];
}
