//! Receive-side scaling as the NIC computes it: the Toeplitz hash of a
//! segment's addresses and ports, and the indirection table that maps it
//! to a receive queue (ETHTOOL_GRSSH). A client that knows both picks
//! local ports whose answers land on the queue of the worker that owns the
//! connection, as mTCP does, and saves the hand-off. veth has no RSS (a
//! frame arrives on the queue its sender transmitted on): [`read`] says
//! `None` and every frame that lands elsewhere is handed off.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// `include/uapi/linux/ethtool.h`.
const ETHTOOL_GRSSH: u32 = 0x46;
/// ETH_RSS_HASH_TOP: the Toeplitz function.
const HASH_TOEPLITZ: u8 = 1;

/// An interface's RSS key and indirection table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rss {
    pub key: Vec<u8>,
    pub indir: Vec<u32>,
}

/// The Toeplitz hash of `input` under `key` (Microsoft's RSS definition:
/// for every set bit of the input, XOR in the 32 key bits starting there).
/// The key must be at least 4 bytes longer than the input.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let bit = |i: usize| {
        key.get(i / 8)
            .map_or(0, |k| u32::from((k >> (7 - i % 8)) & 1))
    };
    let mut window = (0..32).fold(0u32, |w, i| (w << 1) | bit(i));
    let mut hash = 0;
    for (i, byte) in input.iter().enumerate() {
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                hash ^= window;
            }
            window = (window << 1) | bit(32 + i * 8 + b);
        }
    }
    hash
}

/// The hash input of a TCP segment from `src` to `dst` (addresses, then ports).
fn input(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    for ip in [src.ip(), dst.ip()] {
        match ip {
            IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
        }
    }
    v.extend_from_slice(&src.port().to_be_bytes());
    v.extend_from_slice(&dst.port().to_be_bytes());
    v
}

impl Rss {
    /// The receive queue of a segment from `src` to `dst`.
    pub fn queue(&self, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        if self.indir.is_empty() || src.is_ipv4() != dst.is_ipv4() {
            return None;
        }
        let h = toeplitz(&self.key, &input(src, dst));
        self.indir.get(h as usize % self.indir.len()).copied()
    }
}

/// `struct ethtool_rxfh` without its flexible array.
#[repr(C)]
#[derive(Default)]
struct RxfhHeader {
    cmd: u32,
    rss_context: u32,
    indir_size: u32,
    key_size: u32,
    hfunc: u8,
    input_xfrm: u8,
    rsvd8: [u8; 2],
    rsvd32: u32,
}

fn grssh(iface: &str, buf: &mut [u32]) -> Option<()> {
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: zeroed ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = buf.as_mut_ptr() as *mut libc::c_char;
    let sock = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    // SAFETY: SIOCETHTOOL reads and writes the ethtool_rxfh at ifru_data,
    // sized by its own indir_size and key_size fields.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    (r == 0).then_some(())
}

/// `iface`'s RSS key and indirection table, if its driver hashes with
/// Toeplitz and says so (ETHTOOL_GRSSH); `None` otherwise (veth).
pub fn read(iface: &str) -> Option<Rss> {
    const WORDS: usize = std::mem::size_of::<RxfhHeader>() / 4;
    let mut head = [0u32; WORDS];
    head[0] = ETHTOOL_GRSSH;
    // First call: the sizes.
    grssh(iface, &mut head)?;
    let (indir_size, key_size) = (head[2] as usize, head[3] as usize);
    if indir_size == 0 || key_size == 0 || indir_size > 1 << 16 || key_size > 256 {
        return None;
    }
    let mut buf = vec![0u32; WORDS + indir_size + key_size.div_ceil(4)];
    buf[0] = ETHTOOL_GRSSH;
    buf[2] = indir_size as u32;
    buf[3] = key_size as u32;
    grssh(iface, &mut buf)?;
    let hfunc = buf[4].to_ne_bytes()[0];
    if hfunc != HASH_TOEPLITZ {
        return None;
    }
    let indir = buf[WORDS..WORDS + indir_size].to_vec();
    let key: Vec<u8> = buf[WORDS + indir_size..]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(key_size)
        .collect();
    Some(Rss { key, indir })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microsoft's RSS verification key.
    const KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn microsoft_verification_vectors() {
        let h = |src: &str, dst: &str| toeplitz(&KEY, &input(sa(src), sa(dst)));
        assert_eq!(h("66.9.149.187:2794", "161.142.100.80:1766"), 0x51ccc178);
        assert_eq!(h("199.92.111.2:14230", "65.69.140.83:4739"), 0xc626b0ea);
        assert_eq!(h("24.19.198.95:12898", "12.22.207.184:38024"), 0x5c2b394a);
        assert_eq!(
            h("[3ffe:2501:200:1fff::7]:2794", "[3ffe:2501:200:3::1]:1766"),
            0x40207d3d
        );
        // Addresses only (the 2-tuple hash).
        let v4 = [66u8, 9, 149, 187, 161, 142, 100, 80];
        assert_eq!(toeplitz(&KEY, &v4), 0x323e8fc2);
    }

    #[test]
    fn the_indirection_table_picks_the_queue() {
        let rss = Rss {
            key: KEY.to_vec(),
            indir: vec![0, 1, 2, 3],
        };
        let (src, dst) = (sa("66.9.149.187:2794"), sa("161.142.100.80:1766"));
        assert_eq!(rss.queue(src, dst), Some(0x51ccc178 % 4));
        assert_eq!(rss.queue(src, sa("[::1]:1")), None);
        let empty = Rss {
            key: KEY.to_vec(),
            indir: vec![],
        };
        assert_eq!(empty.queue(src, dst), None);
    }

    #[test]
    fn loopback_has_no_rss() {
        assert_eq!(read("lo"), None);
        assert_eq!(read("no-such-if0"), None);
    }
}
