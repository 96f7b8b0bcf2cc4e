//! `serve`, `connect` and `stats`: the datapath from the command line.
//!
//! Until the MPTCP connection layer is merged these run the plain TCP
//! engine (`tcp::TcpEndpoint`), which is also what serves non-MPTCP
//! clients; one connection at a time on the server.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::afxdp::XskConfig;
use crate::io::ByteStream;
use crate::tcp::{Config, TcpEndpoint};
use crate::time::Instant;
use crate::worker::{self, App, Datapath, Echo, Forward, Path, Source, Worker};
use crate::xdp::Ownership;

pub mod emulate;
mod mptcp;
mod reverse;
pub mod trace;

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

/// Where running instances leave their counters for `stats`.
pub const STATS_DIR: &str = "/run/mptcp-user";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Send every byte back.
    Echo,
    /// Read and drop.
    Discard,
    /// Relay each connection to the TCP backend given by --to.
    Forward,
    /// Generate data, like an iperf3 server for `-R`: the client's first 8
    /// bytes (big-endian) say how many bytes of the test pattern to send
    /// (all ones: until the client closes its side); then the server closes.
    /// This is what `connect --reverse` asks for.
    Source,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Interfaces to serve on (repeat for several paths).
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// Address and port to accept connections on (0.0.0.0 or :: for every
    /// address of the interfaces).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Further local addresses to announce to MPTCP clients (ADD_ADDR).
    #[arg(long)]
    pub announce: Vec<IpAddr>,
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: Mode,
    /// Backend for --mode forward.
    #[arg(long)]
    pub to: Option<SocketAddr>,
    /// Packet scheduler: default (lowest RTT with room), roundrobin, redundant.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Path manager: fullmesh, ndiffports, manual.
    #[arg(long)]
    pub pm: Option<String>,
    /// MPTCP by default (plain TCP clients are served by fallback).
    #[arg(long, value_enum, default_value = "mptcp")]
    pub engine: EngineKind,
    /// Partial TCP checksums (MPTCP engine): accepted on veth by default.
    #[arg(long, value_enum, default_value = "auto")]
    pub partial_checksum: PartialChecksum,
    /// Stop after this many connections (0 = serve until signalled).
    #[arg(long, default_value_t = 0)]
    pub connections: u64,
}

#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// The server.
    pub remote: SocketAddr,
    /// Interfaces to open subflows on; the first carries the connection.
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// Bytes to send.
    #[arg(long, conflicts_with = "time")]
    pub bytes: Option<u64>,
    /// Seconds to send for.
    #[arg(long)]
    pub time: Option<f64>,
    /// Receive from the server instead of sending (iperf3 -R): the server
    /// must run `serve --mode source`; --bytes/--time then say how much to
    /// receive.
    #[arg(long)]
    pub reverse: bool,
    /// A JSON report in iperf3's layout.
    #[arg(long)]
    pub json: bool,
    /// MPTCP by default (falls back to TCP against a plain TCP server).
    #[arg(long, value_enum, default_value = "mptcp")]
    pub engine: EngineKind,
    /// Partial TCP checksums (MPTCP engine): accepted on veth by default.
    #[arg(long, value_enum, default_value = "auto")]
    pub partial_checksum: PartialChecksum,
    /// Packet scheduler: lowest-rtt, round-robin, redundant.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Path manager: fullmesh, ndiffports, manual.
    #[arg(long)]
    pub pm: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Raw JSON, one object per instance.
    #[arg(long)]
    pub json: bool,
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("mptcp-user {what} needs root (XDP programs and AF_XDP sockets need CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW)");
    }
    Ok(())
}

fn check_interfaces(ifaces: &[String]) -> Result<Vec<IpAddr>> {
    let mut addrs = Vec::new();
    for iface in ifaces {
        crate::afxdp::ifindex(iface)?;
        addrs.extend(crate::xdp::interface_addresses(iface)?);
    }
    Ok(addrs)
}

/// Binds (without listening) a kernel TCP socket to `addr`: fails if the
/// port is in use, and keeps the kernel from handing it out meanwhile.
fn reserve_port(addr: SocketAddr) -> Result<(OwnedFd, u16)> {
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

fn tcp_config(paths: &[Path], ipv6: bool) -> Config {
    let mtu = paths.iter().map(|p| p.mtu).min().unwrap_or(1500);
    let mut cfg = Config::default().with_mtu(mtu, ipv6);
    cfg.isn_secret = worker::random_secret();
    cfg
}

/// Counters a running instance publishes for `stats`.
struct StatsFile {
    path: PathBuf,
}

impl StatsFile {
    fn create() -> StatsFile {
        let _ = std::fs::create_dir_all(STATS_DIR);
        StatsFile {
            path: PathBuf::from(STATS_DIR).join(format!("{}.json", std::process::id())),
        }
    }

    fn write(&self, value: &serde_json::Value) {
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

fn instance_stats<E>(
    role: &str,
    datapath: &Datapath,
    worker: &Worker<E>,
    engine: serde_json::Value,
) -> serde_json::Value {
    let c = datapath.counters().unwrap_or_default();
    let s = &worker.stats;
    json!({
        "pid": std::process::id(),
        "role": role,
        "interfaces": worker.paths.iter().zip(&datapath.attach_modes).map(|(p, m)| json!({
            "name": p.iface, "xdp": format!("{m:?}"), "af_xdp": format!("{:?}", p.socket.mode()),
            "rx_frames": p.socket.counters.rx_frames, "tx_frames": p.socket.counters.tx_frames,
            "kernel_rx_dropped": p.socket.kernel_stats().map(|k| k.rx_dropped).unwrap_or(0),
            "rx_frames_per_queue": std::iter::once(&p.socket).chain(&p.extra_rx)
                .map(|s| s.counters.rx_frames).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "classifier": {
            "seen": c.seen, "redirected": c.redirected, "passed": c.passed, "owned": c.owned,
            "owned_no_socket": c.owned_no_socket, "malformed": c.malformed,
            "mp_capable_syn": c.mp_capable_syn, "mp_join_syn": c.mp_join_syn, "dss": c.dss,
            "other_mptcp": c.other_mptcp, "plain_tcp": c.plain_tcp,
        },
        "worker": {
            "rx_frames": s.rx_frames, "tx_frames": s.tx_frames, "rx_not_ip": s.rx_not_ip,
            "no_neighbour": s.no_neighbour, "tx_ring_full": s.tx_ring_full,
            "passes": s.passes, "sleeps": s.sleeps,
        },
        "engine": engine,
    })
}

fn tcp_engine_stats(e: &TcpEndpoint, connections: u64) -> serde_json::Value {
    let c = e.counters();
    let s = e.subflow_stats().unwrap_or_default();
    json!({
        "connections": connections,
        "malformed": c.malformed, "bad_checksum": c.bad_checksum, "unmatched": c.unmatched,
        "resets_sent": c.resets_sent,
        "current": { "bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
                     "retransmits": s.retransmits },
    })
}

enum ServeApp {
    Echo(Echo),
    Discard(worker::Discard),
    Forward(Box<Forward>),
    Source(reverse::PatternSource),
    /// The backend refused: the connection is closed at once.
    Refused,
}

impl<E: ByteStream> App<E> for ServeApp {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        match self {
            ServeApp::Echo(a) => a.poll(now, engine),
            ServeApp::Discard(a) => a.poll(now, engine),
            ServeApp::Forward(a) => a.poll(now, engine),
            ServeApp::Source(a) => a.poll(now, engine),
            ServeApp::Refused => {
                engine.close();
                (0, engine.is_closed())
            }
        }
    }
    fn wake_fd(&self) -> Option<(std::os::fd::RawFd, i16)> {
        match self {
            ServeApp::Forward(a) => App::<E>::wake_fd(a.as_ref()),
            _ => None,
        }
    }
}

fn new_app(args: &ServeArgs) -> ServeApp {
    match args.mode {
        Mode::Echo => ServeApp::Echo(Echo::default()),
        Mode::Discard => ServeApp::Discard(worker::Discard::default()),
        Mode::Source => ServeApp::Source(reverse::PatternSource::default()),
        Mode::Forward => {
            let Some(to) = args.to else {
                return ServeApp::Refused;
            };
            match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .and_then(Forward::new)
            {
                Ok(f) => ServeApp::Forward(Box::new(f)),
                Err(e) => {
                    eprintln!("backend {to}: {e}");
                    ServeApp::Refused
                }
            }
        }
    }
}

pub fn serve(args: &ServeArgs) -> Result<()> {
    require_root("serve")?;
    if args.mode == Mode::Forward && args.to.is_none() {
        bail!("--mode forward needs --to IP:PORT");
    }
    let local_addrs = check_interfaces(&args.ifaces)?;
    let listen_ip = args.listen.ip();
    let owned: Vec<IpAddr> = if listen_ip.is_unspecified() {
        local_addrs
            .iter()
            .copied()
            .filter(|a| a.is_ipv4() == listen_ip.is_ipv4())
            .collect()
    } else if local_addrs.contains(&listen_ip) {
        let mut v = vec![listen_ip];
        v.extend(args.announce.iter().copied());
        v
    } else {
        bail!("address {listen_ip} is not on {}", args.ifaces.join(" or "));
    };
    for a in &args.announce {
        if !local_addrs.contains(a) {
            bail!(
                "--announce {a}: address is not on {}",
                args.ifaces.join(" or ")
            );
        }
    }
    if owned.is_empty() {
        bail!("no address of that family on {}", args.ifaces.join(", "));
    }
    let (_reservation, _) = reserve_port(args.listen)?;
    if args.engine == EngineKind::Mptcp {
        return mptcp::serve_mptcp(args, owned);
    }
    let ownership = Ownership {
        addresses: owned,
        listen_ports: vec![args.listen.port()],
        client_ports: None,
    };
    let stop = worker::stop_on_signals();
    let (mut datapath, paths) = Datapath::open(&args.ifaces, &ownership, XskConfig::default())?;
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
        "serving {} ({:?}) with the plain TCP engine; Ctrl-C to stop",
        args.listen, args.mode
    );
    let cfg = tcp_config(&paths, args.listen.is_ipv6());
    let mut worker = Worker::new(TcpEndpoint::listen(cfg.clone(), args.listen), paths);
    let stats_file = StatsFile::create();
    let mut connections = 0u64;
    let mut app: Option<ServeApp> = None;
    let mut last_dump = std::time::Instant::now() - Duration::from_secs(2);
    while !stop.load(Ordering::Relaxed) {
        // The backend is dialled when a client arrives, not before.
        if app.is_none() && worker.engine.subflow().is_some() {
            app = Some(new_app(args));
        }
        let (work, done) = match app.as_mut() {
            Some(a) => worker.step(a),
            None => worker.step(&mut Idle),
        };
        if done {
            connections += 1;
            let s = worker.engine.subflow_stats().unwrap_or_default();
            eprintln!(
                "connection {connections} closed: {} bytes in, {} bytes out, {} retransmits",
                s.bytes_received, s.bytes_sent, s.retransmits
            );
            worker.replace_engine(TcpEndpoint::listen(cfg.clone(), args.listen));
            app = None;
            if args.connections != 0 && connections >= args.connections {
                break;
            }
        }
        if last_dump.elapsed() >= Duration::from_secs(1) {
            last_dump = std::time::Instant::now();
            let engine = tcp_engine_stats(&worker.engine, connections);
            stats_file.write(&instance_stats("serve", &datapath, &worker, engine));
        }
        if work == 0 {
            worker.sleep_with(app.as_ref().and_then(App::<TcpEndpoint>::wake_fd));
        }
    }
    datapath.detach_all()?;
    eprintln!("stopped; XDP detached from {}", args.ifaces.join(", "));
    Ok(())
}

/// No application yet (a listener waiting for its connection).
struct Idle;

impl<E> App<E> for Idle {
    fn poll(&mut self, _now: Instant, _engine: &mut E) -> (usize, bool) {
        (0, false)
    }
}

struct Interval {
    start: f64,
    end: f64,
    sent: u64,
    received: u64,
}

fn rate(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds
    } else {
        0.0
    }
}

pub fn connect(args: &ConnectArgs) -> Result<()> {
    require_root("connect")?;
    let local_addrs = check_interfaces(&args.ifaces)?;
    let route = crate::route::route_get(args.remote.ip())?;
    let iface = &args.ifaces[0];
    let ifindex = crate::afxdp::ifindex(iface)?;
    if route.oif != ifindex {
        bail!(
            "the kernel routes {} out of interface #{} , not {iface}",
            args.remote.ip(),
            route.oif
        );
    }
    let local_ip = route
        .prefsrc
        .filter(|a| local_addrs.contains(a))
        .or_else(|| {
            crate::xdp::interface_addresses(iface)
                .ok()?
                .into_iter()
                .find(|a| a.is_ipv4() == args.remote.is_ipv4())
        })
        .ok_or_else(|| anyhow!("no address of {}'s family on {iface}", args.remote))?;
    let next_hop = route.next_hop(args.remote.ip());
    let mac = crate::route::resolve_neighbour(iface, next_hop, Duration::from_secs(3))?;
    let (_reservation, port) = reserve_port(SocketAddr::new(local_ip, 0))?;
    let local = SocketAddr::new(local_ip, port);
    // One local address per interface (path); the first is the route's.
    let mut locals = vec![local_ip];
    for other in &args.ifaces[1..] {
        if let Some(a) = crate::xdp::interface_addresses(other)?
            .into_iter()
            .find(|a| a.is_ipv4() == args.remote.is_ipv4())
        {
            locals.push(a);
        }
    }
    // MP_JOIN subflows take the ports after the first.
    let last_port = port.saturating_add(15);
    let ownership = Ownership {
        addresses: locals.clone(),
        listen_ports: vec![],
        client_ports: Some(port..=last_port),
    };
    let (datapath, mut paths) = Datapath::open(&args.ifaces, &ownership, XskConfig::default())?;
    paths[0].neighbours.default = Some(mac);
    match args.engine {
        EngineKind::Tcp => {
            let cfg = tcp_config(&paths, args.remote.is_ipv6());
            let engine = TcpEndpoint::client(cfg, local, args.remote, Instant::ZERO);
            run_connect(args, Worker::new(engine, paths), datapath, local)
        }
        EngineKind::Mptcp => {
            let mut cfg = mptcp::mptcp_config(
                &paths,
                args.remote.is_ipv6(),
                args.scheduler.as_deref(),
                args.pm.as_deref(),
            )?;
            let (partial, why) = mptcp::accept_partial(args.partial_checksum, &args.ifaces);
            cfg.accept_partial_checksum = partial;
            if !args.json {
                println!("partial TCP checksums {why}");
            }
            let addrs: Vec<crate::mptcp::LocalAddr> = locals
                .iter()
                .enumerate()
                .map(|(path, ip)| crate::mptcp::LocalAddr {
                    ip: *ip,
                    path,
                    signal: false,
                })
                .collect();
            let engine =
                crate::mptcp::MptcpEndpoint::client(cfg, &addrs, port, args.remote, Instant::ZERO);
            run_connect(args, Worker::new(engine, paths), datapath, local)
        }
    }
}

/// Per-subflow figures of an engine, for `connect`'s report.
pub trait Measured {
    /// (id, path, local, remote, bytes sent, bytes received, retransmits).
    fn subflow_report(&self) -> Vec<(u32, usize, SocketAddr, SocketAddr, u64, u64, u64)>;
}

impl Measured for TcpEndpoint {
    fn subflow_report(&self) -> Vec<(u32, usize, SocketAddr, SocketAddr, u64, u64, u64)> {
        let Some(sf) = self.subflow() else {
            return Vec::new();
        };
        let s = sf.stats();
        let t = sf.tuple();
        vec![(
            0,
            self.path(),
            t.local,
            t.remote,
            s.bytes_sent,
            s.bytes_received,
            s.retransmits,
        )]
    }
}

impl Measured for crate::mptcp::MptcpEndpoint {
    fn subflow_report(&self) -> Vec<(u32, usize, SocketAddr, SocketAddr, u64, u64, u64)> {
        let Some(c) = self.connection() else {
            return Vec::new();
        };
        c.subflows()
            .map(|i| {
                let s = c.subflow_stats(i.id).unwrap_or_default();
                (
                    i.id,
                    i.path,
                    i.tuple.local,
                    i.tuple.remote,
                    s.bytes_sent,
                    s.bytes_received,
                    s.retransmits,
                )
            })
            .collect()
    }
}

fn run_connect<E: crate::io::Engine + ByteStream + Measured>(
    args: &ConnectArgs,
    mut worker: Worker<E>,
    mut datapath: Datapath,
    local: SocketAddr,
) -> Result<()> {
    let stop = worker::stop_on_signals();
    let total = args.bytes.unwrap_or(if args.time.is_some() {
        u64::MAX
    } else {
        64 << 20
    });
    let deadline = args
        .time
        .map(|s| worker.now() + Duration::from_secs_f64(s.max(0.0)));
    // Time-based runs send (or ask for) u64::MAX bytes: reverse::UNTIL_CLOSED.
    let mut source = if args.reverse {
        reverse::Transfer::Receive(reverse::PatternSink::new(total, deadline))
    } else {
        reverse::Transfer::Send(Source::new(total, deadline))
    };
    if !args.json {
        println!(
            "connecting {local} -> {} over {} ({:?} engine)",
            args.remote,
            args.ifaces.join(", "),
            args.engine
        );
    }
    let started = std::time::Instant::now();
    let mut intervals: Vec<Interval> = Vec::new();
    let mut mark = (0.0f64, 0u64, 0u64);
    let stats_file = StatsFile::create();
    let mut established_at = None;
    let mut last_subflows: Vec<(u32, usize, SocketAddr, SocketAddr, u64, u64, u64)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let (work, done) = worker.step(&mut source);
        if established_at.is_none() && worker.engine.is_established() {
            established_at = Some(started.elapsed().as_secs_f64());
        }
        let t = started.elapsed().as_secs_f64();
        if t - mark.0 >= 1.0 || done {
            let iv = Interval {
                start: mark.0,
                end: t,
                sent: source.sent() - mark.1,
                received: source.received() - mark.2,
            };
            if !args.json {
                println!(
                    "[{:>2}] {:6.2}-{:6.2} sec  sent {:>10} B {:7.3} Gbit/s  received {:>10} B {:7.3} Gbit/s",
                    0,
                    iv.start,
                    iv.end,
                    iv.sent,
                    rate(iv.sent, iv.end - iv.start) / 1e9,
                    iv.received,
                    rate(iv.received, iv.end - iv.start) / 1e9
                );
            }
            let subflows = worker.engine.subflow_report();
            if !args.json {
                for sf in &subflows {
                    let before = last_subflows.iter().find(|p| p.0 == sf.0);
                    let (moved, verb) = if source.is_reverse() {
                        (sf.5 - before.map_or(0, |p| p.5), "received")
                    } else {
                        (sf.4 - before.map_or(0, |p| p.4), "sent")
                    };
                    println!(
                        "     subflow {} path {} {} -> {}: {verb} {:>10} B {:7.3} Gbit/s",
                        sf.0,
                        sf.1,
                        sf.2,
                        sf.3,
                        moved,
                        rate(moved, iv.end - iv.start) / 1e9
                    );
                }
            }
            last_subflows = subflows;
            mark = (t, source.sent(), source.received());
            intervals.push(iv);
            let engine = json!({"subflows": last_subflows.len()});
            stats_file.write(&instance_stats("connect", &datapath, &worker, engine));
        }
        if done {
            break;
        }
        if work == 0 {
            worker.sleep();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    datapath.detach_all()?;
    let subflows = worker.engine.subflow_report();
    let retransmits: u64 = subflows.iter().map(|s| s.6).sum();
    let ok = source.finished() && source.mismatches() == 0;
    if args.json {
        // As iperf3 -R: streams and sum_sent describe the sender, the server
        // (everything it sent arrived: the stream is reliable and finished).
        let reverse = source.is_reverse();
        let streams = |iv: &Interval| {
            let bytes = if reverse { iv.received } else { iv.sent };
            json!({"socket": 0, "start": iv.start, "end": iv.end, "seconds": iv.end - iv.start,
                   "bytes": bytes, "bits_per_second": rate(bytes, iv.end - iv.start)})
        };
        let sender_bytes = source.measured();
        let report = json!({
            "start": {
                "connected": [{"local_host": local.ip().to_string(), "local_port": local.port(),
                               "remote_host": args.remote.ip().to_string(), "remote_port": args.remote.port()}],
                "connect_seconds": established_at,
                "test_start": {"protocol": "TCP", "num_streams": 1, "bytes": args.bytes, "duration": args.time,
                               "reverse": u8::from(reverse)},
            },
            "intervals": intervals.iter().map(|iv| json!({
                "streams": [streams(iv)],
                "sum": streams(iv),
            })).collect::<Vec<_>>(),
            "end": {
                "sum_sent": {"start": 0.0, "end": elapsed, "seconds": elapsed, "bytes": sender_bytes,
                              "bits_per_second": rate(sender_bytes, elapsed), "retransmits": retransmits},
                "sum_received": {"start": 0.0, "end": elapsed, "seconds": elapsed, "bytes": source.received(),
                                  "bits_per_second": rate(source.received(), elapsed)},
                "subflows": subflows.iter().map(|sf| json!({
                    "id": sf.0, "path": sf.1, "interface": args.ifaces.get(sf.1),
                    "local": sf.2.to_string(), "remote": sf.3.to_string(), "bytes_sent": sf.4,
                    "bytes_received": sf.5, "retransmits": sf.6,
                    "bits_per_second": rate(if reverse { sf.5 } else { sf.4 }, elapsed)})).collect::<Vec<_>>(),
                "byte_exact": ok,
                "mismatched_bytes": source.mismatches(),
            },
        });
        println!("{report}");
    } else {
        println!(
            "sent {} B ({:.3} Gbit/s), received {} B ({:.3} Gbit/s) in {elapsed:.2} s; {} retransmits; {} check: {}",
            source.sent(),
            rate(source.sent(), elapsed) / 1e9,
            source.received(),
            rate(source.received(), elapsed) / 1e9,
            retransmits,
            if source.is_reverse() { "pattern" } else { "echo" },
            if source.received() == 0 {
                "nothing came back".to_string()
            } else if source.mismatches() == 0 {
                "byte-exact".to_string()
            } else {
                format!("{} bytes differ", source.mismatches())
            }
        );
    }
    if !source.finished() {
        bail!("the connection did not finish (interrupted or reset)");
    }
    if source.mismatches() != 0 {
        bail!(
            "{} received bytes differ from what was sent",
            source.mismatches()
        );
    }
    if let Some((wanted, got)) = source.shortfall() {
        bail!("asked the server for {wanted} bytes, received {got} (is it `serve --mode source`?)");
    }
    Ok(())
}

pub fn stats(args: &StatsArgs) -> Result<()> {
    let dir = match std::fs::read_dir(STATS_DIR) {
        Ok(d) => d,
        Err(_) => bail!("no running mptcp-user instance ({STATS_DIR} is empty)"),
    };
    let mut found = 0;
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let pid: Option<u32> = path.file_stem().and_then(|s| s.to_str()?.parse().ok());
        // A file left by a killed instance: its process is gone.
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("{path:?}"))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{path:?}"))?;
        found += 1;
        if args.json {
            println!("{value}");
        } else {
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    if found == 0 {
        bail!("no running mptcp-user instance");
    }
    Ok(())
}
