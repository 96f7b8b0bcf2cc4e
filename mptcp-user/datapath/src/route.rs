//! Routes, neighbours, MTUs and MACs from the kernel's tables, over a raw
//! rtnetlink socket (two request kinds do not justify a netlink crate and
//! its async runtime). Used at set-up and when a new peer appears, never
//! per packet. Everything is read in the calling thread's network namespace.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use mptcp_engine::wire::ethernet::MacAddr;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;
const NLMSG_HDRLEN: usize = 16;

/// How the kernel would send to a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Outgoing interface index.
    pub oif: u32,
    /// The router to send through; `None` for an on-link destination.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick.
    pub prefsrc: Option<IpAddr>,
}

impl Route {
    /// The neighbour whose MAC frames to `dst` carry.
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
}

struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| Ipv4Addr::from(b).into()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| Ipv6Addr::from(b).into()),
        _ => None,
    }
}

/// The attributes (type, value) after a fixed header of `fixed` bytes.
pub(crate) fn attributes(body: &[u8], fixed: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = body.get(fixed..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

impl Netlink {
    fn open() -> Result<Netlink> {
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("netlink socket");
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a valid timeval option.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends one request and returns every reply message (type, body) until
    /// the answer is complete.
    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        payload: &[u8],
        dump: bool,
    ) -> Result<Vec<(u16, Vec<u8>)>> {
        self.seq += 1;
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        // SAFETY: sending our buffer on our socket (the kernel is the default peer).
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error()).context("netlink send");
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: receiving into our buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error()).context("netlink recv");
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let mlen = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let mtype = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if mlen < NLMSG_HDRLEN || mlen > rest.len() {
                    bail!("truncated netlink message");
                }
                let body = &rest[NLMSG_HDRLEN..mlen];
                rest = rest.get(align4(mlen)..).unwrap_or(&[]);
                if mseq != self.seq {
                    continue;
                }
                match mtype {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-code)).context("netlink");
                    }
                    _ => {
                        out.push((mtype, body.to_vec()));
                        if !dump {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}

/// The kernel's route to `dst` (`ip route get DST`).
/// Every route in every table: the bodies (rtmsg and attributes) of the
/// kernel's RTM_NEWROUTE messages, for the link watcher's starting state.
pub(crate) fn route_dump() -> Result<Vec<Vec<u8>>> {
    let mut nl = Netlink::open()?;
    let payload = vec![0u8; 12];
    let replies = nl.request(RTM_GETROUTE, libc::NLM_F_DUMP as u16, &payload, true)?;
    Ok(replies
        .into_iter()
        .filter(|(t, _)| *t == RTM_NEWROUTE)
        .map(|(_, b)| b)
        .collect())
}

pub fn route_get(dst: IpAddr) -> Result<Route> {
    let mut nl = Netlink::open()?;
    let addr = ip_bytes(&dst);
    let mut payload = vec![0u8; 12];
    payload[0] = family(&dst);
    payload[1] = (addr.len() * 8) as u8;
    let attr_len = 4 + addr.len();
    payload.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    payload.extend_from_slice(&RTA_DST.to_ne_bytes());
    payload.extend_from_slice(&addr);
    payload.resize(align4(payload.len()), 0);
    let replies = nl
        .request(RTM_GETROUTE, 0, &payload, false)
        .with_context(|| format!("no route to {dst}"))?;
    let Some((_, body)) = replies.iter().find(|(t, _)| *t == RTM_NEWROUTE) else {
        bail!("no route to {dst}");
    };
    let mut route = Route {
        oif: 0,
        gateway: None,
        prefsrc: None,
    };
    for (kind, value) in attributes(body, 12) {
        match kind {
            RTA_OIF if value.len() == 4 => {
                route.oif = u32::from_ne_bytes([value[0], value[1], value[2], value[3]])
            }
            RTA_GATEWAY => route.gateway = ip_from(value),
            RTA_PREFSRC => route.prefsrc = ip_from(value),
            _ => {}
        }
    }
    Ok(route)
}

/// The MAC of neighbour `ip` on interface `ifindex`, if the kernel knows it.
pub fn neighbour(ifindex: u32, ip: IpAddr) -> Result<Option<MacAddr>> {
    let mut nl = Netlink::open()?;
    let mut payload = vec![0u8; 12];
    payload[0] = family(&ip);
    payload[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    let replies = nl.request(RTM_GETNEIGH, libc::NLM_F_DUMP as u16, &payload, true)?;
    for (kind, body) in replies {
        if kind != RTM_NEWNEIGH || body.len() < 12 {
            continue;
        }
        let index = u32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
        let state = u16::from_ne_bytes([body[8], body[9]]);
        if index != ifindex || state & (NUD_INCOMPLETE | NUD_FAILED) != 0 {
            continue;
        }
        let mut dst = None;
        let mut mac = None;
        for (k, v) in attributes(&body, 12) {
            match k {
                NDA_DST => dst = ip_from(v),
                NDA_LLADDR => mac = <[u8; 6]>::try_from(v).ok().map(MacAddr),
                _ => {}
            }
        }
        if dst == Some(ip) {
            if let Some(mac) = mac {
                return Ok(Some(mac));
            }
        }
    }
    Ok(None)
}

/// The MAC of `next_hop` on `iface`, asking the kernel to resolve it when it
/// has no entry: a datagram to the discard port from a socket bound to the
/// interface makes the kernel send ARP or Neighbour Solicitation.
pub fn resolve_neighbour(iface: &str, next_hop: IpAddr, timeout: Duration) -> Result<MacAddr> {
    let ifindex = crate::iface::ifindex(iface)?;
    if let Some(mac) = neighbour(ifindex, next_hop)? {
        return Ok(mac);
    }
    let bind: SocketAddr = if next_hop.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = UdpSocket::bind(bind).context("neighbour probe socket")?;
    let name = CString::new(iface).context("interface name")?;
    // SAFETY: a NUL-terminated name of the given length.
    unsafe {
        libc::setsockopt(
            probe.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr() as *const libc::c_void,
            name.as_bytes().len() as libc::socklen_t,
        )
    };
    let deadline = Instant::now() + timeout;
    let mut next_probe = Instant::now();
    loop {
        if Instant::now() >= next_probe {
            // Errors (ICMP unreachable from an earlier probe) do not matter; the ARP does.
            let _ = probe.send_to(&[0], (next_hop, 9));
            next_probe = Instant::now() + Duration::from_millis(500);
        }
        if let Some(mac) = neighbour(ifindex, next_hop)? {
            return Ok(mac);
        }
        if Instant::now() >= deadline {
            bail!("{next_hop} does not answer ARP/NDP on {iface}");
        }
        // Set-up path only: waiting for the kernel to hear the answer.
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ifreq_ioctl(iface: &str, request: libc::c_ulong) -> Result<libc::ifreq> {
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("bad interface name {iface:?}");
    }
    // SAFETY: zeroed ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("ioctl socket")?;
    // SAFETY: the request reads/writes an ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODEV) {
            bail!("unknown interface {iface}");
        }
        return Err(e).with_context(|| format!("ioctl on {iface}"));
    }
    Ok(req)
}

/// The interface's MTU.
pub fn interface_mtu(iface: &str) -> Result<u16> {
    let req = ifreq_ioctl(iface, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.clamp(68, 65535) as u16)
}

/// Receive queues of the interface (ETHTOOL_GCHANNELS; 1 when the driver
/// does not say): the worker binds an AF_XDP socket to each.
pub fn rx_queue_count(iface: &str) -> u32 {
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolChannels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let Ok(mut req) = ifreq_ioctl(iface, libc::SIOCGIFINDEX) else {
        return 1;
    };
    req.ifr_ifru.ifru_data = &mut channels as *mut EthtoolChannels as *mut libc::c_char;
    let Ok(sock) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
        return 1;
    };
    // SAFETY: SIOCETHTOOL reads and writes the ethtool_channels ifru_data points at.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) } != 0 {
        return 1;
    }
    channels.rx_count.max(channels.combined_count).max(1)
}

/// The interface's own MAC address.
pub fn interface_mac(iface: &str) -> Result<MacAddr> {
    let req = ifreq_ioctl(iface, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(MacAddr(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_walk_aligned_and_stop_on_garbage() {
        // Header of 4 bytes, then RTA_OIF=7, then RTA_GATEWAY 10.0.0.1, then a bad length.
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&RTA_OIF.to_ne_bytes());
        body.extend_from_slice(&7u32.to_ne_bytes());
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&RTA_GATEWAY.to_ne_bytes());
        body.extend_from_slice(&[10, 0, 0, 1]);
        body.extend_from_slice(&200u16.to_ne_bytes());
        body.extend_from_slice(&1u16.to_ne_bytes());
        let attrs: Vec<_> = attributes(&body, 4).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (RTA_OIF, &7u32.to_ne_bytes()[..]));
        assert_eq!(
            ip_from(attrs[1].1),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(attributes(&body, 1000).count(), 0);
    }

    #[test]
    fn loopback_route_and_mtu() {
        let r = route_get(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("route to 127.0.0.1");
        assert_eq!(r.oif, crate::iface::ifindex("lo").expect("lo"));
        assert_eq!(r.gateway, None);
        assert_eq!(
            r.next_hop(Ipv4Addr::LOCALHOST.into()),
            IpAddr::from(Ipv4Addr::LOCALHOST)
        );
        assert!(interface_mtu("lo").expect("mtu") >= 1500);
        assert!(interface_mtu("no-such-if0").is_err());
    }
}
