//! The front end: one file per subcommand, and what they share (root and
//! interface checks, port reservation, the stats file, engine options).

pub mod classify;
pub mod connect;
pub mod ctl;
pub mod datapath_opts;
pub mod decode;
pub mod emulate;
pub mod engine_opts;
pub mod iperf3_client;
pub mod load;
pub mod raw;
pub mod rr;
pub mod serve;
pub mod sim;
pub mod stats;
pub mod trace;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use mptcp_datapath::worker::{Path, Worker};
use mptcp_datapath::Datapath;
use mptcp_engine::mptcp::MptcpConfig;
use mptcp_engine::tcp::Config;

use engine_opts::EngineOptions;

/// Which engine terminates the connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// MPTCP (RFC 8684); plain TCP clients are served by fallback.
    Mptcp,
    /// Plain TCP only, one connection at a time.
    Tcp,
}

/// What to do with TCP segments whose checksum covers only the pseudo-header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PartialChecksum {
    /// Accept them when every interface is a veth (Linux sends them so there).
    Auto,
    Accept,
    /// Count and drop them.
    Drop,
}

/// Where running instances leave their control sockets, or counters for `stats`.
pub const STATS_DIR: &str = mptcp_control::RUN_DIR;

pub(crate) fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("mptcp-user {what} needs root (XDP programs and AF_XDP sockets need CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW)");
    }
    Ok(())
}

pub(crate) fn check_interfaces(ifaces: &[String]) -> Result<Vec<IpAddr>> {
    let mut addrs = Vec::new();
    for iface in ifaces {
        mptcp_datapath::iface::ifindex(iface)?;
        addrs.extend(mptcp_datapath::xdp::interface_addresses(iface)?);
    }
    Ok(addrs)
}

/// Binds (without listening) a kernel TCP socket to `addr`: fails if the
/// port is in use, and keeps the kernel from handing it out meanwhile.
pub(crate) fn reserve_port(addr: SocketAddr) -> Result<(OwnedFd, u16)> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let sa = socket2_addr(addr);
    // SAFETY: sa holds a sockaddr of the given length.
    let r = unsafe { libc::bind(fd.as_raw_fd(), &sa.0 as *const _ as *const _, sa.1) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            bail!(
                "port {} on {} is already owned (a kernel socket or another mptcp-user)",
                addr.port(),
                addr.ip()
            );
        }
        return Err(e).with_context(|| format!("binding {addr}"));
    }
    // SAFETY: zeroed storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname into a storage of the given size.
    unsafe { libc::getsockname(fd.as_raw_fd(), &mut storage as *mut _ as *mut _, &mut len) };
    // Both sockaddr_in and sockaddr_in6 keep the port at bytes 2..4.
    // SAFETY: storage is at least 4 bytes.
    let bytes: [u8; 4] = unsafe { std::ptr::read(&storage as *const _ as *const [u8; 4]) };
    Ok((fd, u16::from_be_bytes([bytes[2], bytes[3]])))
}

/// Binds `n` consecutive ports on every address of `ips`, starting at one
/// the kernel offers, so that neither the kernel's `connect()` nor another
/// instance takes a port the engine's subflows use (the XDP program steers
/// the whole range to the engine). The descriptors hold the ports.
pub(crate) fn reserve_ports(ips: &[IpAddr], n: u16) -> Result<(Vec<OwnedFd>, u16)> {
    const TRIES: usize = 64;
    let first = *ips
        .first()
        .context("no local address to reserve ports on")?;
    for _ in 0..TRIES {
        let (fd, base) = reserve_port(SocketAddr::new(first, 0))?;
        if base.checked_add(n.saturating_sub(1)).is_none() {
            continue;
        }
        let mut held = vec![fd];
        let all = ips.iter().enumerate().all(|(i, ip)| {
            (u16::from(i == 0)..n).all(|k| match reserve_port(SocketAddr::new(*ip, base + k)) {
                Ok((fd, _)) => {
                    held.push(fd);
                    true
                }
                Err(_) => false,
            })
        });
        if all {
            return Ok((held, base));
        }
    }
    bail!(
        "no {n} consecutive free ports on {ips:?} in {TRIES} tries; \
         widen net.ipv4.ip_local_port_range or close sockets"
    )
}

fn socket2_addr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: storage is larger than sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: storage is larger than sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

pub(crate) fn tcp_config(paths: &[Path], ipv6: bool) -> Config {
    let mtu = paths.iter().map(|p| p.mtu).min().unwrap_or(1500);
    Config::default().with_mtu(mtu, ipv6)
}

/// Counters a running instance publishes for `stats`.
pub(crate) struct StatsFile {
    path: PathBuf,
}

impl StatsFile {
    pub(crate) fn create() -> StatsFile {
        let _ = std::fs::create_dir_all(STATS_DIR);
        StatsFile {
            path: PathBuf::from(STATS_DIR).join(format!("{}.json", std::process::id())),
        }
    }

    pub(crate) fn write(&self, value: &serde_json::Value) {
        let tmp = self.path.with_extension("tmp");
        if std::fs::write(&tmp, value.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}

impl Drop for StatsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The counters of an instance without a control socket, for its stats
/// file; built by the same code as the control plane's `stats`.
pub(crate) fn instance_stats<E>(
    role: &str,
    datapath: &Datapath,
    worker: &Worker<E>,
    engine: serde_json::Value,
) -> serde_json::Value {
    serde_json::to_value(mptcp_control::snapshot::collect(
        role, datapath, worker, engine,
    ))
    .unwrap_or_default()
}

pub(crate) fn rate(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds
    } else {
        0.0
    }
}

/// Whether segments whose TCP checksum covers only the pseudo-header are
/// accepted: Linux leaves them so (CHECKSUM_PARTIAL) on veth, where the
/// peer's stack never finishes them; a real wire always carries full sums.
/// `auto` accepts them when every interface is a veth.
pub fn accept_partial(choice: PartialChecksum, ifaces: &[String]) -> (bool, String) {
    match choice {
        PartialChecksum::Accept => (true, "accepted (--partial-checksum accept)".into()),
        PartialChecksum::Drop => (false, "dropped (--partial-checksum drop)".into()),
        PartialChecksum::Auto => {
            let drivers: Vec<String> = ifaces
                .iter()
                .map(|i| {
                    mptcp_datapath::iface::interface_driver(i).unwrap_or_else(|| "unknown".into())
                })
                .collect();
            let veth = drivers.iter().all(|d| d == "veth");
            let why = format!("driver {}", drivers.join(", "));
            if veth {
                (true, format!("accepted ({why}; auto)"))
            } else {
                (false, format!("dropped ({why}; auto)"))
            }
        }
    }
}

/// The MPTCP engine's configuration for these paths (MSS from the smallest
/// MTU) and options; secrets are random (`MptcpConfig::default`).
pub fn mptcp_config(paths: &[Path], ipv6: bool, opts: &EngineOptions) -> MptcpConfig {
    let mut cfg = MptcpConfig::default();
    let mtu = paths.iter().map(|p| p.mtu).min().unwrap_or(1500);
    cfg.tcp = cfg.tcp.clone().with_mtu(mtu, ipv6);
    opts.apply(&mut cfg);
    cfg
}
