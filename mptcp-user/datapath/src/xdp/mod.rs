//! The XDP classifier seen from userspace: load the embedded object, write
//! which addresses and ports the engine owns, attach to interfaces, read the
//! counters, and run the program on crafted frames (`BPF_PROG_TEST_RUN`).
//!
//! The AF_XDP driver fills the XSKMAP through [`Classifier::register_xsk`]
//! (or [`Classifier::xsk_map`]). Interface names resolve in the network
//! namespace of the calling thread.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuValues, XskMap},
    programs::{xdp::XdpLinkId, TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
pub use mptcp_common::{Config, Counters, Meta, TupleKey, META_MAGIC};
use mptcp_common::{
    MAP_CONFIG, MAP_COUNTERS, MAP_TOKENS, MAP_TUPLES, MAP_XSKS, MAX_PORTS, MAX_V4, MAX_V6,
    PROGRAM_CLASSIFY,
};

pub mod affinity;

/// The eBPF object built by `build.rs` (see `mptcp-ebpf-build`).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mptcp-ebpf.o"));

/// `aya::Pod` is foreign to both crates, hence the wrappers.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct PodConfig(Config);
// SAFETY: Config is repr(C), Copy, without padding (bytemuck::Pod checks it).
unsafe impl aya::Pod for PodConfig {}

#[repr(transparent)]
#[derive(Clone, Copy)]
struct PodCounters(Counters);
// SAFETY: Counters is repr(C) of u64s only.
unsafe impl aya::Pod for PodCounters {}

/// What the engine owns: segments to one of these addresses AND ports are
/// steered to AF_XDP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    pub addresses: Vec<IpAddr>,
    pub listen_ports: Vec<u16>,
    /// Local ports of connections the engine opens (inclusive).
    pub client_ports: Option<RangeInclusive<u16>>,
}

impl Ownership {
    /// The map value; fails if a table would overflow.
    pub fn to_config(&self) -> Result<Config> {
        let mut config = Config::EMPTY;
        for addr in &self.addresses {
            match addr {
                IpAddr::V4(a) => {
                    let i = config.n_v4 as usize;
                    if i >= MAX_V4 {
                        bail!("more than {MAX_V4} owned IPv4 addresses");
                    }
                    config.v4[i] = a.octets();
                    config.n_v4 += 1;
                }
                IpAddr::V6(a) => {
                    let i = config.n_v6 as usize;
                    if i >= MAX_V6 {
                        bail!("more than {MAX_V6} owned IPv6 addresses");
                    }
                    config.v6[i] = a.octets();
                    config.n_v6 += 1;
                }
            }
        }
        if self.listen_ports.len() > MAX_PORTS {
            bail!("more than {MAX_PORTS} listening ports");
        }
        for (slot, port) in config.listen_ports.iter_mut().zip(&self.listen_ports) {
            *slot = *port;
        }
        config.n_listen_ports = self.listen_ports.len() as u32;
        if let Some(range) = &self.client_ports {
            config.client_port_lo = *range.start();
            config.client_port_hi = *range.end();
        }
        Ok(config)
    }

    /// Inverse of [`Ownership::to_config`].
    pub fn from_config(config: &Config) -> Ownership {
        let v4 = config.v4.iter().take(config.n_v4 as usize);
        let v6 = config.v6.iter().take(config.n_v6 as usize);
        Ownership {
            addresses: v4
                .map(|a| IpAddr::V4(Ipv4Addr::from(*a)))
                .chain(v6.map(|a| IpAddr::V6(Ipv6Addr::from(*a))))
                .collect(),
            listen_ports: config
                .listen_ports
                .iter()
                .take(config.n_listen_ports as usize)
                .copied()
                .collect(),
            client_ports: (config.client_port_lo <= config.client_port_hi)
                .then_some(config.client_port_lo..=config.client_port_hi),
        }
    }
}

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic (skb) XDP: works everywhere, slower, no zero-copy AF_XDP.
    Generic,
}

/// The XDP action a program returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

impl From<u32> for Verdict {
    fn from(action: u32) -> Self {
        match action {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            other => Verdict::Other(other),
        }
    }
}

/// Log level of the eBPF side (aya-log). `Off` lets the verifier prune every
/// log statement: the hot path pays nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EbpfLogLevel {
    #[default]
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The loaded classifier and its attachments. Dropping it detaches everything.
pub struct Classifier {
    ebpf: Ebpf,
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
    links: Vec<(String, XdpLinkId, AttachMode)>,
}

impl Classifier {
    /// Loads the embedded object into the kernel, with eBPF logging off.
    pub fn load() -> Result<Classifier> {
        Classifier::load_with_log(EbpfLogLevel::Off)
    }

    /// Loads the embedded object; eBPF log records go to the `log` crate.
    pub fn load_with_log(level: EbpfLogLevel) -> Result<Classifier> {
        raise_memlock_limit();
        let level_value = level as u8;
        let mut loader = EbpfLoader::new();
        // MPTCP_VERIFIER_LOG=1: the verifier's instruction-level log in load errors.
        if std::env::var_os("MPTCP_VERIFIER_LOG").is_some() {
            loader
                .verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
        }
        let mut ebpf = loader
            .override_global("AYA_LOG_LEVEL", &level_value, false)
            .load(OBJECT)
            .context("loading the eBPF object (are you root?)")?;
        // Read even when off, so "off" is observable (and tested) as silence.
        let logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, log::logger())
            .context("starting aya-log")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_CLASSIFY)
            .ok_or_else(|| anyhow!("program {PROGRAM_CLASSIFY} missing from the object"))?
            .try_into()?;
        program
            .load()
            .context("verifier rejected the XDP program")?;
        Ok(Classifier {
            ebpf,
            logger,
            links: Vec::new(),
        })
    }

    fn program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(PROGRAM_CLASSIFY)
            .ok_or_else(|| anyhow!("program {PROGRAM_CLASSIFY} missing"))?
            .try_into()?)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM_CLASSIFY)
            .ok_or_else(|| anyhow!("program {PROGRAM_CLASSIFY} missing"))?
            .try_into()?)
    }

    /// Writes what the engine owns. Takes effect for the next packet.
    pub fn set_ownership(&mut self, ownership: &Ownership) -> Result<()> {
        self.set_config(&ownership.to_config()?)
    }

    pub fn set_config(&mut self, config: &Config) -> Result<()> {
        let mut map: Array<&mut MapData, PodConfig> = Array::try_from(
            self.ebpf
                .map_mut(MAP_CONFIG)
                .ok_or_else(|| anyhow!("map {MAP_CONFIG} missing"))?,
        )?;
        map.set(0, PodConfig(*config), 0)?;
        Ok(())
    }

    pub fn config(&self) -> Result<Config> {
        let map: Array<&MapData, PodConfig> = Array::try_from(
            self.ebpf
                .map(MAP_CONFIG)
                .ok_or_else(|| anyhow!("map {MAP_CONFIG} missing"))?,
        )?;
        Ok(map.get(&0, 0)?.0)
    }

    /// Several workers: the classifier tags each owned frame with the owner
    /// the affinity maps name ([`affinity`]). 0 or 1: no lookups at all.
    pub fn set_workers(&mut self, workers: u32) -> Result<()> {
        let mut config = self.config()?;
        config.workers = workers;
        self.set_config(&config)
    }

    /// Descriptors of the TUPLES and TOKENS maps, for [`affinity::AffinityMaps`]
    /// (the workers write them by syscall; the object stays with its owner).
    pub fn affinity_fds(&self) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
        let fd = |name: &str| -> Result<std::os::fd::OwnedFd> {
            use std::os::fd::AsFd;
            match self.ebpf.map(name) {
                Some(aya::maps::Map::HashMap(data)) => {
                    Ok(data.fd().as_fd().try_clone_to_owned()?)
                }
                _ => bail!("hash map {name} missing from the object"),
            }
        };
        Ok((fd(MAP_TUPLES)?, fd(MAP_TOKENS)?))
    }

    /// Attaches in driver mode, falling back to generic mode (with a message
    /// on stderr) when the driver has no native XDP.
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode> {
        match self.attach_with_mode(iface, AttachMode::Driver) {
            Ok(()) => Ok(AttachMode::Driver),
            Err(driver_err) => {
                eprintln!(
                    "note: {iface}: native (driver) XDP unavailable ({driver_err:#}); \
                     using generic XDP, which is slower and has no zero-copy AF_XDP"
                );
                self.attach_with_mode(iface, AttachMode::Generic)
                    .with_context(|| format!("{iface}: generic XDP failed too"))?;
                Ok(AttachMode::Generic)
            }
        }
    }

    pub fn attach_with_mode(&mut self, iface: &str, mode: AttachMode) -> Result<()> {
        let xdp_mode = match mode {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        let link = self
            .program_mut()?
            .attach(iface, xdp_mode)
            .with_context(|| format!("attaching XDP to {iface} ({mode:?} mode)"))?;
        self.links.push((iface.to_string(), link, mode));
        Ok(())
    }

    /// Interfaces this classifier is attached to, with their mode.
    pub fn attachments(&self) -> Vec<(String, AttachMode)> {
        self.links.iter().map(|(i, _, m)| (i.clone(), *m)).collect()
    }

    pub fn detach(&mut self, iface: &str) -> Result<()> {
        let Some(pos) = self.links.iter().position(|(i, _, _)| i == iface) else {
            bail!("not attached to {iface}");
        };
        let (_, link, _) = self.links.remove(pos);
        self.program_mut()?.detach(link)?;
        Ok(())
    }

    pub fn detach_all(&mut self) -> Result<()> {
        while let Some((_, link, _)) = self.links.pop() {
            self.program_mut()?.detach(link)?;
        }
        Ok(())
    }

    /// Counters summed over all CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let map: PerCpuArray<&MapData, PodCounters> = PerCpuArray::try_from(
            self.ebpf
                .map(MAP_COUNTERS)
                .ok_or_else(|| anyhow!("map {MAP_COUNTERS} missing"))?,
        )?;
        let mut total = Counters::default();
        for per_cpu in map.get(&0, 0)?.iter() {
            total.add(&per_cpu.0);
        }
        Ok(total)
    }

    pub fn reset_counters(&mut self) -> Result<()> {
        let mut map: PerCpuArray<&mut MapData, PodCounters> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(MAP_COUNTERS)
                .ok_or_else(|| anyhow!("map {MAP_COUNTERS} missing"))?,
        )?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zeros = PerCpuValues::try_from(vec![PodCounters(Counters::default()); cpus])?;
        map.set(0, zeros, 0)?;
        Ok(())
    }

    /// The XSKMAP (receive queue -> AF_XDP socket) for the AF_XDP driver.
    pub fn xsk_map(&mut self) -> Result<XskMap<&mut MapData>> {
        Ok(XskMap::try_from(
            self.ebpf
                .map_mut(MAP_XSKS)
                .ok_or_else(|| anyhow!("map {MAP_XSKS} missing"))?,
        )?)
    }

    /// Steers `queue`'s owned segments to the AF_XDP socket `socket`.
    pub fn register_xsk(&mut self, queue: u32, socket: &impl std::os::fd::AsRawFd) -> Result<()> {
        self.xsk_map()?
            .set(queue, socket.as_raw_fd(), 0)
            .with_context(|| format!("XSKMAP[{queue}]"))
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN, queue 0) and
    /// returns its verdict. Counters count it like a real packet.
    pub fn test_run(&self, frame: &[u8]) -> Result<Verdict> {
        Ok(self.test_run_output(frame)?.0)
    }

    /// Like [`Classifier::test_run`], also returning the frame as the program left it.
    pub fn test_run_output(&self, frame: &[u8]) -> Result<(Verdict, Vec<u8>)> {
        // XDP may grow the frame; leave room so the kernel never reports ENOSPC.
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN on a {}-byte frame", frame.len()))?;
        out.truncate(result.data_size_out as usize);
        Ok((Verdict::from(result.return_value), out))
    }

    /// Forwards pending eBPF log records to the `log` crate.
    pub fn flush_logs(&mut self) {
        self.logger.flush();
    }
}

impl Drop for Classifier {
    fn drop(&mut self) {
        // Links close with the program anyway; detaching explicitly keeps errors visible.
        if let Err(e) = self.detach_all() {
            eprintln!("warning: detaching XDP: {e:#}");
        }
    }
}

/// The IPv4 and IPv6 addresses of `iface` (getifaddrs), link-local IPv6 excluded.
pub fn interface_addresses(iface: &str) -> Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut found = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, valid until freeifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        if name.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family tells its real type.
        unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    found.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 => {
                    let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    let addr = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    if !addr.is_unicast_link_local() {
                        found.push(IpAddr::V6(addr));
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: the list from getifaddrs above, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure only matters on old kernels.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
    }
}

/// Human-readable counters, one per line.
pub fn format_counters(c: &Counters) -> String {
    format!(
        "seen            {}\n\
         passed          {}\n\
         redirected      {}\n\
         owned           {}\n\
         owned, no sock  {}\n\
         malformed       {}\n\
         owned by kind:  MP_CAPABLE SYN {}, MP_JOIN SYN {}, DSS {}, other MPTCP {}, plain TCP {}\n\
         owner tagged    {} (metadata refused {})",
        c.seen,
        c.passed,
        c.redirected,
        c.owned,
        c.owned_no_socket,
        c.malformed,
        c.mp_capable_syn,
        c.mp_join_syn,
        c.dss,
        c.other_mptcp,
        c.plain_tcp,
        c.owner_tagged,
        c.owner_meta_failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_round_trips_through_config() {
        let ownership = Ownership {
            addresses: vec![
                "10.0.0.1".parse().unwrap(),
                "fd00::1".parse().unwrap(),
                "192.168.1.2".parse().unwrap(),
            ],
            listen_ports: vec![443, 80],
            client_ports: Some(40000..=40999),
        };
        let config = ownership.to_config().unwrap();
        assert_eq!(config.n_v4, 2);
        assert_eq!(config.n_v6, 1);
        assert_eq!(config.v4[1], [192, 168, 1, 2]);
        assert_eq!(
            (config.client_port_lo, config.client_port_hi),
            (40000, 40999)
        );
        let back = Ownership::from_config(&config);
        // IPv4 first, then IPv6: the map keeps them apart.
        assert_eq!(back.addresses[2], ownership.addresses[1]);
        assert_eq!(back.listen_ports, ownership.listen_ports);
        assert_eq!(back.client_ports, ownership.client_ports);
    }

    #[test]
    fn no_client_range_means_none() {
        let config = Ownership::default().to_config().unwrap();
        assert_eq!(config, Config::EMPTY);
        assert!(config.client_port_lo > config.client_port_hi);
        assert_eq!(Ownership::from_config(&config), Ownership::default());
    }

    #[test]
    fn table_overflows_are_errors() {
        let v4 = Ownership {
            addresses: (0..=MAX_V4 as u8)
                .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
                .collect(),
            ..Ownership::default()
        };
        assert!(v4.to_config().is_err());
        let v6 = Ownership {
            addresses: (0..=MAX_V6 as u16)
                .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)))
                .collect(),
            ..Ownership::default()
        };
        assert!(v6.to_config().is_err());
        let ports = Ownership {
            listen_ports: (0..=MAX_PORTS as u16).collect(),
            ..Ownership::default()
        };
        assert!(ports.to_config().is_err());
        let full = Ownership {
            listen_ports: (0..MAX_PORTS as u16).collect(),
            ..Ownership::default()
        };
        assert_eq!(full.to_config().unwrap().n_listen_ports, MAX_PORTS as u32);
    }

    #[test]
    fn verdicts_from_xdp_actions() {
        assert_eq!(Verdict::from(2), Verdict::Pass);
        assert_eq!(Verdict::from(4), Verdict::Redirect);
        assert_eq!(Verdict::from(0), Verdict::Aborted);
        assert_eq!(Verdict::from(9), Verdict::Other(9));
    }

    #[test]
    fn counters_sum_and_difference() {
        let mut a = Counters {
            seen: 3,
            dss: 2,
            ..Counters::default()
        };
        a.add(&Counters {
            seen: 4,
            plain_tcp: 1,
            ..Counters::default()
        });
        assert_eq!((a.seen, a.dss, a.plain_tcp), (7, 2, 1));
        let d = a.since(&Counters {
            seen: 5,
            dss: 9,
            ..Counters::default()
        });
        assert_eq!((d.seen, d.dss, d.plain_tcp), (2, 0, 1));
        assert!(format_counters(&a).contains("DSS 2"));
    }

    #[test]
    fn loopback_has_its_address() {
        let addrs = interface_addresses("lo").unwrap();
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
        assert!(interface_addresses("no-such-if0").unwrap().is_empty());
    }
}
