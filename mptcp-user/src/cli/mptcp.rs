//! `serve` and `connect` over the MPTCP connection layer (`mptcp::MptcpEndpoint`):
//! every interface is a path; plain TCP clients are served by fallback.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::json;

use super::{instance_stats, new_app, PartialChecksum, ServeApp, ServeArgs, StatsFile};
use crate::afxdp::XskConfig;
use crate::io::ByteStream;
use crate::mptcp::{ConnHandle, Connection, LocalAddr, MptcpConfig, MptcpEndpoint};
use crate::pm::PmKind;
use crate::sched::SchedulerKind;
use crate::time::Instant;
use crate::worker::{self, App, Datapath, Path, Worker};
use crate::xdp::Ownership;

/// One connection of the endpoint seen as a byte stream.
struct ConnStream<'a>(&'a mut Connection);

impl ByteStream for ConnStream<'_> {
    fn send(&mut self, data: &[u8]) -> usize {
        self.0.send(data)
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.0.recv(buf)
    }
    fn close(&mut self) {
        self.0.close()
    }
    fn is_established(&self) -> bool {
        self.0.is_established()
    }
    fn is_read_closed(&self) -> bool {
        self.0.is_read_closed()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The kernel driver behind an interface (`veth`, `ixgbe`, ...), from the
/// ETHTOOL_GDRVINFO ioctl; `None` when the interface does not answer it.
pub fn interface_driver(iface: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x03;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 5 * 4],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        pad: [u8; 16],
    }
    let bytes = iface.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 32 * 4 + 12 + 5 * 4],
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        pad: [0; 16],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `req` is a valid ifreq whose data points at a drvinfo buffer
    // that outlives the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq) };
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return None;
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Whether segments whose TCP checksum covers only the pseudo-header are
/// accepted: Linux leaves them so (CHECKSUM_PARTIAL) on veth, where the
/// peer's stack never finishes them; a real wire always carries full sums.
/// `auto` accepts them when every interface is a veth.
pub(super) fn accept_partial(choice: PartialChecksum, ifaces: &[String]) -> (bool, String) {
    match choice {
        PartialChecksum::Accept => (true, "accepted (--partial-checksum accept)".into()),
        PartialChecksum::Drop => (false, "dropped (--partial-checksum drop)".into()),
        PartialChecksum::Auto => {
            let drivers: Vec<String> = ifaces
                .iter()
                .map(|i| interface_driver(i).unwrap_or_else(|| "unknown".into()))
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

pub(super) fn mptcp_config(
    paths: &[Path],
    ipv6: bool,
    scheduler: Option<&str>,
    pm: Option<&str>,
) -> Result<MptcpConfig> {
    let mut cfg = MptcpConfig::default();
    let mtu = paths.iter().map(|p| p.mtu).min().unwrap_or(1500);
    cfg.tcp = cfg.tcp.clone().with_mtu(mtu, ipv6);
    cfg.tcp.isn_secret = worker::random_secret();
    cfg.secret = MptcpConfig::random_secret()?;
    if let Some(name) = scheduler {
        cfg.scheduler =
            SchedulerKind::from_name(name).ok_or_else(|| anyhow!("unknown scheduler {name}"))?;
    }
    if let Some(name) = pm {
        cfg.path_manager =
            PmKind::from_name(name, 2).ok_or_else(|| anyhow!("unknown path manager {name}"))?;
    }
    Ok(cfg)
}

/// The application of one connection, under the generation of its slot.
struct Slot {
    gen: u32,
    app: ServeApp,
    done: bool,
}

/// The applications of the endpoint's connections, by slot; only the
/// connections the endpoint reports as changed are polled (and those whose
/// application waits on a descriptor of its own, such as a backend socket).
struct PerConnection<'a> {
    args: &'a ServeArgs,
    apps: Vec<Option<Slot>>,
    /// Slots whose application has a descriptor to watch (forward mode).
    with_fd: Vec<ConnHandle>,
    closed: u64,
}

impl PerConnection<'_> {
    fn poll_one(&mut self, now: Instant, engine: &mut MptcpEndpoint, h: ConnHandle) -> usize {
        let i = h.slot as usize;
        if self.apps.len() <= i {
            self.apps.resize_with(i + 1, || None);
        }
        let Some(conn) = engine.get_mut(h) else {
            // Gone (reaped after a reset) before its application saw it.
            if self.apps[i].as_ref().is_some_and(|s| s.gen == h.gen) {
                if !self.apps[i].as_ref().is_some_and(|s| s.done) {
                    self.closed += 1;
                }
                self.apps[i] = None;
            }
            return 0;
        };
        let slot = match &mut self.apps[i] {
            Some(s) if s.gen == h.gen => s,
            other => {
                if other.as_ref().is_some_and(|s| !s.done) {
                    self.closed += 1;
                }
                let app = new_app(self.args);
                if App::<ConnStream<'_>>::wake_fd(&app).is_some() {
                    self.with_fd.push(h);
                }
                other.insert(Slot {
                    gen: h.gen,
                    app,
                    done: false,
                })
            }
        };
        if slot.done {
            return 0;
        }
        let (w, done) = slot.app.poll(now, &mut ConnStream(conn));
        if done {
            slot.done = true;
            self.closed += 1;
            eprintln!("connection {} closed", self.closed);
        }
        w
    }
}

impl App<MptcpEndpoint> for PerConnection<'_> {
    fn poll(&mut self, now: Instant, engine: &mut MptcpEndpoint) -> (usize, bool) {
        let mut work = 0;
        let mut with_fd = std::mem::take(&mut self.with_fd);
        with_fd.retain(|h| engine.get(*h).is_some());
        for &h in &with_fd {
            work += self.poll_one(now, engine, h);
        }
        self.with_fd.append(&mut with_fd);
        self.with_fd.dedup();
        while let Some(h) = engine.poll_app_ready() {
            work += self.poll_one(now, engine, h);
        }
        // Closed connections give their slots (and buffers) back; a reused
        // slot has a new generation, so its new application starts fresh.
        engine.reap_closed();
        let enough = self.args.connections != 0 && self.closed >= self.args.connections;
        (work, enough)
    }

    fn wake_fd(&self) -> Option<(std::os::fd::RawFd, i16)> {
        self.with_fd.iter().find_map(|h| {
            let slot = self.apps.get(h.slot as usize)?.as_ref()?;
            App::<ConnStream<'_>>::wake_fd(&slot.app)
        })
    }
}

/// The endpoint's figures as JSON numbers.
pub(super) fn engine_stats(e: &MptcpEndpoint, closed: u64) -> serde_json::Value {
    let c = e.counters();
    let w = e.work();
    let p = crate::tcp::pool::stats();
    json!({
        "connections": e.connection_count(), "closed": closed,
        "half_open": e.half_open_count(), "slots": e.slot_count(),
        "malformed": c.malformed, "bad_checksum": c.bad_checksum,
        "partial_checksum": c.partial_checksum, "unmatched": c.unmatched,
        "accepted": c.accepted, "join_accepted": c.join_accepted,
        "join_refused": c.join_refused, "resets_sent": c.resets_sent,
        "resets_dropped": c.resets_dropped,
        "refused_max_connections": c.refused_max_connections,
        "syn_dropped": c.syn_dropped,
        "work": { "transmit_calls": w.transmit_calls, "transmit_visits": w.transmit_visits,
                  "timeout_calls": w.timeout_calls, "timeout_visits": w.timeout_visits },
        "buffers": { "in_use": p.in_use, "peak": p.peak, "free": p.free,
                     "chunks_allocated": p.allocated, "over_limit": p.over_limit,
                     "limit": p.limit },
    })
}

pub fn serve_mptcp(args: &ServeArgs, owned: Vec<IpAddr>) -> Result<()> {
    let ownership = Ownership {
        addresses: owned.clone(),
        listen_ports: vec![args.listen.port()],
        client_ports: None,
    };
    let stop = worker::stop_on_signals();
    let (mut datapath, paths) = Datapath::open(&args.ifaces, &ownership, XskConfig::default())?;
    let mut locals = Vec::new();
    for ip in &owned {
        let path = args
            .ifaces
            .iter()
            .position(|i| crate::xdp::interface_addresses(i).is_ok_and(|a| a.contains(ip)))
            .unwrap_or(0);
        locals.push(LocalAddr {
            ip: *ip,
            path,
            signal: args.announce.contains(ip),
        });
    }
    let cfg = mptcp_config(
        &paths,
        args.listen.is_ipv6(),
        args.scheduler.as_deref(),
        args.pm.as_deref(),
    )?;
    let mut cfg = cfg;
    let (partial, partial_why) = accept_partial(args.partial_checksum, &args.ifaces);
    cfg.accept_partial_checksum = partial;
    cfg.max_connections = args.max_connections;
    cfg.max_half_open = args.max_half_open;
    // The engine runs on this thread: its buffer pool is this thread's.
    crate::tcp::pool::configure(args.max_memory, 4096);
    let engine = MptcpEndpoint::server(cfg, &locals, args.listen.port());
    for (p, m) in paths.iter().zip(&datapath.attach_modes) {
        eprintln!(
            "{}: XDP {:?} mode, AF_XDP {:?} mode, {} queue(s), MTU {}",
            p.iface,
            m,
            p.socket.mode(),
            1 + p.extra_rx.len(),
            p.mtu
        );
    }
    eprintln!(
        "serving {} ({:?}) with the MPTCP engine, partial TCP checksums {partial_why}; Ctrl-C to stop",
        args.listen, args.mode
    );
    let mut worker = Worker::new(engine, paths);
    let mut app = PerConnection {
        args,
        apps: Vec::new(),
        with_fd: Vec::new(),
        closed: 0,
    };
    let stats_file = StatsFile::create();
    let mut last_dump = std::time::Instant::now() - Duration::from_secs(2);
    while !stop.load(Ordering::Relaxed) {
        let (work, done) = worker.step(&mut app);
        if done {
            break;
        }
        if last_dump.elapsed() >= Duration::from_secs(1) {
            last_dump = std::time::Instant::now();
            let engine = engine_stats(&worker.engine, app.closed);
            stats_file.write(&instance_stats("serve", &datapath, &worker, engine));
        }
        if work == 0 {
            worker.sleep_with(app.wake_fd());
        }
    }
    datapath.detach_all()?;
    eprintln!("stopped; XDP detached from {}", args.ifaces.join(", "));
    Ok(())
}
