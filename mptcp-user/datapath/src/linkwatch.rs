//! Link and address events of the paths' interfaces, from the kernel's
//! rtnetlink multicast groups, told to the engine as path down/up: a dead
//! local link makes its subflows stale at once (no timeout to wait for),
//! and a returning one has its subflows probed and re-created without
//! waiting for their backoff.
//!
//! A path is up while its interface is administratively up with a carrier
//! (IFF_UP and IFF_LOWER_UP), has not lost its global address, and some
//! unicast route leaves through it (counted from a dump at start, then from
//! route events: a path whose last route is deleted is down). One
//! non-blocking netlink socket, drained by the worker when poll() says it
//! is readable or, on a busy worker that never sleeps, every
//! [`DRAIN_INTERVAL`]: never a syscall per packet.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use mptcp_engine::io::{Engine, PathId};
use mptcp_engine::time::Instant;

use crate::route::attributes;

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTN_UNICAST: u8 = 1;
const RT_TABLE_LOCAL: u32 = 255;
/// rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
const RTMSG_LEN: usize = 12;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x1_0000;
const NLMSG_HDRLEN: usize = 16;
/// ifinfomsg: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
/// ifaddrmsg: family, prefixlen, flags, scope, index.
const IFADDRMSG_LEN: usize = 8;
/// Longest a busy worker goes without reading the socket.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// A change the engine is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    Down(PathId),
    Up(PathId),
}

/// What the watcher saw, for stats and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkWatchStats {
    /// Netlink messages read (every interface's, not only the paths').
    pub messages: u64,
    pub downs: u64,
    pub ups: u64,
    /// Messages too short for their header: counted and skipped.
    pub malformed: u64,
    /// The socket's buffer overflowed (ENOBUFS): events were lost.
    pub overruns: u64,
}

#[derive(Clone, Copy, Debug)]
struct PathState {
    ifindex: u32,
    link_up: bool,
    address_lost: bool,
    /// Unicast routes out of the interface (`None`: not known, not judged).
    routes: Option<u32>,
}

impl PathState {
    fn up(&self) -> bool {
        self.link_up && !self.address_lost && self.routes != Some(0)
    }
}

/// The subscription and what each path was last known to be.
pub struct LinkWatch {
    fd: OwnedFd,
    paths: Vec<PathState>,
    buf: Box<[u8]>,
    /// poll() found the socket readable.
    readable: bool,
    next_drain: Instant,
    pub stats: LinkWatchStats,
}

impl LinkWatch {
    /// Subscribes to link and address events; `ifindexes[i]` is path i's
    /// interface, up when the watch starts.
    pub fn open(ifindexes: &[u32]) -> io::Result<LinkWatch> {
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_ROUTE;
        // SAFETY: binding our socket to a valid sockaddr_nl.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut watch = LinkWatch {
            fd,
            paths: ifindexes
                .iter()
                .map(|&ifindex| PathState {
                    ifindex,
                    link_up: true,
                    address_lost: false,
                    routes: None,
                })
                .collect(),
            buf: vec![0u8; 1 << 15].into_boxed_slice(),
            readable: false,
            next_drain: Instant::ZERO,
            stats: LinkWatchStats::default(),
        };
        // Routes counted after subscribing, so no change falls in between
        // (one counted twice is the worst case: a path judged up).
        if let Ok(routes) = crate::route::route_dump() {
            for p in watch.paths.iter_mut() {
                p.routes = Some(0);
            }
            for body in &routes {
                Self::apply(&mut watch.paths, RTM_NEWROUTE, body);
            }
        }
        Ok(watch)
    }

    /// The watch of a worker's paths, if the subscription works.
    pub fn open_for(paths: &[crate::worker::Path]) -> Option<LinkWatch> {
        let ifindexes: Vec<u32> = paths
            .iter()
            .map(|p| crate::iface::ifindex(&p.iface).unwrap_or(0))
            .collect();
        LinkWatch::open(&ifindexes).ok()
    }

    /// For poll(): the socket to wake on.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// poll() reported the socket readable.
    pub fn set_readable(&mut self) {
        self.readable = true;
    }

    /// Tells the engine what changed, when the socket was readable or the
    /// busy worker's interval is up; otherwise costs nothing.
    pub fn poll<E: Engine>(&mut self, now: Instant, engine: &mut E) {
        if !self.readable && now < self.next_drain {
            return;
        }
        self.readable = false;
        self.next_drain = now + DRAIN_INTERVAL;
        self.drain(|e| match e {
            LinkEvent::Down(p) => engine.path_down(now, p),
            LinkEvent::Up(p) => engine.path_up(now, p),
        });
    }

    /// Reads every pending message without blocking; `f` hears each path
    /// that changed state.
    pub fn drain(&mut self, mut f: impl FnMut(LinkEvent)) {
        loop {
            // SAFETY: receiving into our buffer on our non-blocking socket.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::ENOBUFS) => {
                        self.stats.overruns += 1;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => return,
                }
            }
            if n == 0 {
                return;
            }
            let mut off = 0;
            let end = n as usize;
            while end - off >= NLMSG_HDRLEN {
                let b = &self.buf[off..end];
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let kind = u16::from_ne_bytes([b[4], b[5]]);
                if len < NLMSG_HDRLEN || len > b.len() {
                    self.stats.malformed += 1;
                    break;
                }
                self.stats.messages += 1;
                let body = &b[NLMSG_HDRLEN..len];
                if let Some(e) = Self::apply(&mut self.paths, kind, body) {
                    match e {
                        LinkEvent::Down(_) => self.stats.downs += 1,
                        LinkEvent::Up(_) => self.stats.ups += 1,
                    }
                    f(e);
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Updates the state of the path a message is about; returns the
    /// event when that path went down or came up.
    fn apply(paths: &mut [PathState], kind: u16, body: &[u8]) -> Option<LinkEvent> {
        let fixed = match kind {
            RTM_NEWLINK | RTM_DELLINK => IFINFOMSG_LEN,
            RTM_NEWADDR | RTM_DELADDR => IFADDRMSG_LEN,
            RTM_NEWROUTE | RTM_DELROUTE => RTMSG_LEN,
            _ => return None,
        };
        if body.len() < fixed {
            return None;
        }
        let ifindex = match kind {
            RTM_NEWROUTE | RTM_DELROUTE => counted_route_oif(body)?,
            // ifi_index and ifa_index both sit at bytes 4..8.
            _ => u32::from_ne_bytes([body[4], body[5], body[6], body[7]]),
        };
        let (i, p) = paths
            .iter_mut()
            .enumerate()
            .find(|(_, p)| p.ifindex == ifindex)?;
        let was = p.up();
        match kind {
            RTM_NEWLINK | RTM_DELLINK => {
                let flags = u32::from_ne_bytes([body[8], body[9], body[10], body[11]]);
                p.link_up = kind == RTM_NEWLINK && flags & IFF_UP != 0 && flags & IFF_LOWER_UP != 0;
            }
            RTM_NEWROUTE => p.routes = p.routes.map(|n| n + 1),
            RTM_DELROUTE => p.routes = p.routes.map(|n| n.saturating_sub(1)),
            _ => {
                if global_address(body) {
                    p.address_lost = kind == RTM_DELADDR;
                }
            }
        }
        match (was, p.up()) {
            (true, false) => Some(LinkEvent::Down(i)),
            (false, true) => Some(LinkEvent::Up(i)),
            _ => None,
        }
    }
}

/// The interface of a route that counts for a path: unicast, not in the
/// local table, not to an IPv6 link-local or multicast destination.
fn counted_route_oif(body: &[u8]) -> Option<u32> {
    if body[7] != RTN_UNICAST {
        return None;
    }
    let mut table = u32::from(body[4]);
    let mut oif = None;
    for (k, v) in attributes(body, RTMSG_LEN) {
        match (k, v.len()) {
            (RTA_TABLE, 4) => table = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
            (RTA_OIF, 4) => oif = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])),
            (RTA_DST, 16) if v[0] == 0xff || (v[0] == 0xfe && v[1] & 0xc0 == 0x80) => return None,
            _ => {}
        }
    }
    (table != RT_TABLE_LOCAL).then_some(oif?)
}

/// An address message about a global address (not IPv6 link-local, whose
/// coming and going says nothing of the paths the engine uses).
fn global_address(body: &[u8]) -> bool {
    attributes(body, IFADDRMSG_LEN)
        .filter(|(k, _)| *k == IFA_LOCAL || *k == IFA_ADDRESS)
        .any(|(_, v)| match v.len() {
            4 => true,
            16 => !(v[0] == 0xfe && v[1] & 0xc0 == 0x80),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, flags: u32) -> Vec<u8> {
        let mut b = vec![0u8; IFINFOMSG_LEN];
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        b[8..12].copy_from_slice(&flags.to_ne_bytes());
        b
    }

    fn addr(index: u32, ip: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; IFADDRMSG_LEN];
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        let len = 4 + ip.len() as u16;
        b.extend_from_slice(&len.to_ne_bytes());
        b.extend_from_slice(&IFA_ADDRESS.to_ne_bytes());
        b.extend_from_slice(ip);
        b
    }

    /// `ip ARGS` in the calling thread's namespace.
    fn ip(args: &[&str]) {
        let ok = std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?}");
    }

    /// Drains until `want` is heard (or 5 s pass).
    fn hear(w: &mut LinkWatch, want: LinkEvent) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        let mut heard = false;
        while !heard && std::time::Instant::now() < end {
            w.drain(|e| heard |= e == want);
            std::thread::sleep(Duration::from_millis(5));
        }
        heard
    }

    #[test]
    fn a_veth_losing_its_peer_is_a_path_down_and_back_up() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // A namespace of this thread's own (the `ip` children inherit it).
            // SAFETY: unshare on this thread only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            ip(&["link", "add", "lw0", "type", "veth", "peer", "name", "lw1"]);
            ip(&["link", "set", "lw0", "up"]);
            ip(&["link", "set", "lw1", "up"]);
            ip(&["addr", "add", "10.9.0.1/24", "dev", "lw0"]);
            let index = crate::iface::ifindex("lw0").unwrap();
            let mut w = LinkWatch::open(&[index]).unwrap();
            w.drain(|_| {});
            ip(&["link", "set", "lw1", "down"]);
            assert!(hear(&mut w, LinkEvent::Down(0)), "carrier loss unheard");
            ip(&["link", "set", "lw1", "up"]);
            assert!(hear(&mut w, LinkEvent::Up(0)), "carrier back unheard");
            ip(&["addr", "del", "10.9.0.1/24", "dev", "lw0"]);
            assert!(hear(&mut w, LinkEvent::Down(0)), "address removal unheard");
            ip(&["addr", "add", "10.9.0.1/24", "dev", "lw0"]);
            assert!(hear(&mut w, LinkEvent::Up(0)), "address back unheard");
            // Its last route (the prefix route of the address) deleted, then back.
            ip(&["route", "del", "10.9.0.0/24", "dev", "lw0"]);
            assert!(hear(&mut w, LinkEvent::Down(0)), "route removal unheard");
            ip(&["route", "add", "10.9.0.0/24", "dev", "lw0"]);
            assert!(hear(&mut w, LinkEvent::Up(0)), "route back unheard");
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn carrier_and_global_addresses_decide_a_path() {
        let mut paths = vec![
            PathState {
                ifindex: 7,
                link_up: true,
                address_lost: false,
                routes: None,
            },
            PathState {
                ifindex: 9,
                link_up: true,
                address_lost: false,
                routes: None,
            },
        ];
        let up = IFF_UP | IFF_LOWER_UP;
        // Another interface: nothing.
        assert_eq!(LinkWatch::apply(&mut paths, RTM_NEWLINK, &link(3, 0)), None);
        // Carrier lost on path 1, then back.
        assert_eq!(
            LinkWatch::apply(&mut paths, RTM_NEWLINK, &link(9, IFF_UP)),
            Some(LinkEvent::Down(1))
        );
        assert_eq!(
            LinkWatch::apply(&mut paths, RTM_NEWLINK, &link(9, IFF_UP)),
            None
        );
        assert_eq!(
            LinkWatch::apply(&mut paths, RTM_NEWLINK, &link(9, up)),
            Some(LinkEvent::Up(1))
        );
        // A link-local IPv6 address going away says nothing; a global one does.
        let ll = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            LinkWatch::apply(&mut paths, RTM_DELADDR, &addr(7, &ll)),
            None
        );
        assert_eq!(
            LinkWatch::apply(&mut paths, RTM_DELADDR, &addr(7, &[10, 0, 0, 1])),
            Some(LinkEvent::Down(0))
        );
        // The link coming and going meanwhile does not bring it back.
        assert_eq!(
            LinkWatch::apply(&mut paths, RTM_NEWLINK, &link(7, up)),
            None
        );
        assert_eq!(
            LinkWatch::apply(&mut paths, RTM_NEWADDR, &addr(7, &[10, 0, 0, 1])),
            Some(LinkEvent::Up(0))
        );
        // A removed interface is down; truncated bodies change nothing.
        assert_eq!(
            LinkWatch::apply(&mut paths, RTM_DELLINK, &link(7, up)),
            Some(LinkEvent::Down(0))
        );
        assert_eq!(LinkWatch::apply(&mut paths, RTM_NEWLINK, &[0u8; 6]), None);
    }
}
