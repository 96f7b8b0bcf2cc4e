//! `mptcp-user connect`: open one connection through XDP + AF_XDP and
//! measure it like iperf3 (per-second lines per subflow, a summary, JSON).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use mptcp_control::{ControlOptions, ControlPlane, WorkerSide};
use mptcp_datapath::afxdp::XskConfig;
use mptcp_datapath::apps::convert::client::ViaConvert;
use mptcp_datapath::signals::stop_on_signals;
use mptcp_datapath::worker::Worker;
use mptcp_datapath::xdp::Ownership;
use mptcp_datapath::Datapath;
use mptcp_engine::app::{PatternSink, Source, Transfer};
use mptcp_engine::crypto::Version;
use mptcp_engine::io::ByteStream;
use mptcp_engine::mptcp::MptcpEndpoint;
use mptcp_engine::tcp::{SubflowStats, TcpEndpoint};
use mptcp_engine::time::Instant;

use super::engine_opts::EngineOptions;
use super::{
    accept_partial, check_interfaces, instance_stats, mptcp_config, rate, require_root,
    reserve_ports, tcp_config, EngineKind, PartialChecksum, StatsFile,
};

/// Local ports one connection may use: the first subflow's and its joins'.
const CLIENT_PORTS: u16 = 16;

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
    /// Request/response instead of a bulk transfer (mptcp_net-next #554): a
    /// request of this many bytes every --interval for --time seconds (10 by
    /// default), each answered by the server's echo (`serve --mode echo`);
    /// reports the longest gap between two answers.
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["bytes", "reverse"])]
    pub request_response: Option<usize>,
    /// Interval between requests, in milliseconds (with --request-response).
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub interval: u64,
    /// A JSON report in iperf3's layout.
    #[arg(long)]
    pub json: bool,
    /// MPTCP by default (falls back to TCP against a plain TCP server).
    #[arg(long, value_enum, default_value = "mptcp")]
    pub engine: EngineKind,
    /// Hold the data until N subflows can carry it (at most 10 s, then send
    /// anyway and say so), so the transfer is multipath from its first byte.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub wait_subflows: usize,
    /// Partial TCP checksums (MPTCP engine): accepted on veth by default.
    #[arg(long, value_enum, default_value = "auto")]
    pub partial_checksum: PartialChecksum,
    /// MPTCP version to offer: 1 (RFC 8684), 0 (RFC 6824), or auto: the
    /// version remembered for this server (v1 at first), and when the server
    /// answers without MP_CAPABLE the other one, on a fresh connection; the
    /// version that worked is remembered per server address, as Apple's
    /// stack does (for this process, and in --version-cache).
    #[arg(long, value_enum, value_name = "V", default_value = "1")]
    pub mptcp_version: VersionChoice,
    /// A file remembering the version each server took (--mptcp-version
    /// auto): `ADDRESS VERSION` lines, read at start and rewritten.
    #[arg(long, value_name = "FILE")]
    pub version_cache: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub engine_opts: EngineOptions,
    /// Speak iperf3 to a stock `iperf3 -s` (e.g. `mptcpize run iperf3 -s`):
    /// a kernel TCP control connection, the engine's connection as the data
    /// stream; --bytes/--time/--reverse as iperf3's -n/-t/-R.
    #[arg(long, conflicts_with = "via_convert")]
    pub iperf3: bool,
    /// Reach the server through an RFC 8803 Transport Converter at
    /// ADDR:PORT (e.g. `serve --mode convert`): the engine connects to the
    /// converter and asks it, in a Convert message, for the server.
    #[arg(long, value_name = "ADDR:PORT")]
    pub via_convert: Option<SocketAddr>,
    #[command(flatten)]
    pub datapath_opts: super::datapath_opts::DatapathOptions,
}

/// `--mptcp-version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VersionChoice {
    #[value(name = "0")]
    V0,
    #[value(name = "1")]
    V1,
    Auto,
}

/// The MPTCP version each server took, by address (xnu keeps such a
/// cache too): in memory, and optionally in a small text file.
#[derive(Debug, Default)]
pub struct VersionCache {
    map: std::collections::BTreeMap<std::net::IpAddr, Version>,
    file: Option<std::path::PathBuf>,
}

impl VersionCache {
    /// Reads `file` if given (a missing file is an empty cache; bad lines are skipped).
    pub fn load(file: Option<&std::path::Path>) -> VersionCache {
        let mut c = VersionCache {
            map: Default::default(),
            file: file.map(|f| f.to_path_buf()),
        };
        if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) {
            for line in text.lines() {
                let mut it = line.split_whitespace();
                let (Some(a), Some(v)) = (it.next(), it.next()) else {
                    continue;
                };
                if let (Ok(a), Some(v)) = (a.parse(), v.parse().ok().and_then(Version::from_wire)) {
                    c.map.insert(a, v);
                }
            }
        }
        c
    }

    pub fn get(&self, server: std::net::IpAddr) -> Option<Version> {
        self.map.get(&server).copied()
    }

    /// Remembers (Some) or forgets (None) a server's version; rewrites the file.
    pub fn set(&mut self, server: std::net::IpAddr, v: Option<Version>) -> Result<()> {
        match v {
            Some(v) => self.map.insert(server, v),
            None => self.map.remove(&server),
        };
        if let Some(f) = &self.file {
            let text: String = self.map.iter().map(|(a, v)| format!("{a} {v}\n")).collect();
            let tmp = f.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, f))
                .map_err(|e| anyhow!("--version-cache {}: {e}", f.display()))?;
        }
        Ok(())
    }
}

struct Interval {
    start: f64,
    end: f64,
    sent: u64,
    received: u64,
}

pub fn connect(args: &ConnectArgs) -> Result<()> {
    require_root("connect")?;
    // Through a converter the engine connects to it; the destination goes
    // in the Convert message.
    let peer = args.via_convert.unwrap_or(args.remote);
    let control = if args.iperf3 {
        Some(super::iperf3_client::Control::open(args)?)
    } else {
        None
    };
    let local_addrs = check_interfaces(&args.ifaces)?;
    let route = mptcp_datapath::route::route_get(peer.ip())?;
    let iface = &args.ifaces[0];
    let ifindex = mptcp_datapath::iface::ifindex(iface)?;
    if route.oif != ifindex {
        bail!(
            "the kernel routes {} out of interface #{} , not {iface}",
            peer.ip(),
            route.oif
        );
    }
    let local_ip = route
        .prefsrc
        .filter(|a| local_addrs.contains(a))
        .or_else(|| {
            mptcp_datapath::xdp::interface_addresses(iface)
                .ok()?
                .into_iter()
                .find(|a| a.is_ipv4() == peer.is_ipv4())
        })
        .ok_or_else(|| anyhow!("no address of {}'s family on {iface}", peer))?;
    let next_hop = route.next_hop(peer.ip());
    let mac = mptcp_datapath::route::resolve_neighbour(iface, next_hop, Duration::from_secs(3))?;
    // One local address per interface (path); the first is the route's.
    let mut locals = vec![local_ip];
    for other in &args.ifaces[1..] {
        if let Some(a) = mptcp_datapath::xdp::interface_addresses(other)?
            .into_iter()
            .find(|a| a.is_ipv4() == peer.is_ipv4())
        {
            locals.push(a);
        }
    }
    // MP_JOIN subflows take the ports after the first.
    let (_reservation, port) = reserve_ports(&locals, CLIENT_PORTS)?;
    let local = SocketAddr::new(local_ip, port);
    let last_port = port + (CLIENT_PORTS - 1);
    let ownership = Ownership {
        addresses: locals.clone(),
        listen_ports: vec![],
        client_ports: Some(port..=last_port),
    };
    let (datapath, mut paths) = Datapath::open(&args.ifaces, &ownership, XskConfig::default())?;
    paths[0].neighbours.default = Some(mac);
    match args.engine {
        EngineKind::Tcp => {
            let cfg = tcp_config(&paths, peer.is_ipv6());
            let engine = TcpEndpoint::client(cfg, local, peer, Instant::ZERO);
            run_any(
                args,
                Worker::new(engine, paths),
                datapath,
                local,
                control,
                &[],
                None,
            )
        }
        EngineKind::Mptcp => {
            let mut cfg = mptcp_config(&paths, peer.is_ipv6(), &args.engine_opts);
            cfg.client_ports = CLIENT_PORTS;
            let (partial, why) = accept_partial(args.partial_checksum, &args.ifaces);
            cfg.accept_partial_checksum = partial;
            if !args.json {
                println!("partial TCP checksums {why}");
            }
            let addrs: Vec<mptcp_engine::mptcp::LocalAddr> = locals
                .iter()
                .enumerate()
                .map(|(path, ip)| mptcp_engine::mptcp::LocalAddr {
                    ip: *ip,
                    path,
                    signal: false,
                })
                .collect();
            let mut cache = VersionCache::load(args.version_cache.as_deref());
            let first = match args.mptcp_version {
                VersionChoice::V0 => Version::V0,
                VersionChoice::V1 => Version::V1,
                VersionChoice::Auto => cache.get(peer.ip()).unwrap_or(Version::V1),
            };
            cfg.client_version = first;
            let client = |cfg: &mptcp_engine::mptcp::MptcpConfig, now| {
                mptcp_engine::mptcp::MptcpEndpoint::client(cfg.clone(), &addrs, port, peer, now)
            };
            let mut worker = Worker::new(client(&cfg, Instant::ZERO), paths);
            let mut tried = vec![first.number()];
            if args.mptcp_version == VersionChoice::Auto {
                let took = handshake(&mut worker, Duration::from_secs(10));
                let took = match took {
                    Some(false) => {
                        // No MP_CAPABLE in the answer: reset, and try the
                        // other version on a fresh connection from the same port.
                        let other = match first {
                            Version::V0 => Version::V1,
                            Version::V1 => Version::V0,
                        };
                        if !args.json {
                            println!("MPTCP v{first} not taken by {}; trying v{other}", peer);
                        }
                        if let Some(c) = worker.engine.connection_mut() {
                            c.abort();
                        }
                        drain(&mut worker);
                        cfg.client_version = other;
                        tried.push(other.number());
                        let now = worker.now();
                        worker.replace_engine(client(&cfg, now));
                        handshake(&mut worker, Duration::from_secs(10))
                    }
                    other => other,
                };
                match took {
                    Some(true) => cache.set(peer.ip(), Some(cfg.client_version))?,
                    // Neither version: plain TCP; forget, so v1 goes first next time.
                    Some(false) => cache.set(peer.ip(), None)?,
                    None => {}
                }
            }
            if !args.json {
                println!("MPTCP version offered: {}", cfg.client_version);
            }
            // `ctl` steers this connection too (e.g. opens subflows by tuple).
            let (side, plane) = ControlPlane::start("connect", &ControlOptions::default())?;
            if !args.json {
                println!("control socket {}", plane.socket().display());
            }
            let r = run_any(
                args,
                worker,
                datapath,
                local,
                control,
                &tried,
                Some(Box::new(MptcpControl(side))),
            );
            drop(plane);
            r
        }
    }
}

/// Runs the worker until the connection is established (Some(true) when
/// in MPTCP, Some(false) when the server answered without MP_CAPABLE), or
/// None on timeout or signal.
fn handshake(
    worker: &mut Worker<mptcp_engine::mptcp::MptcpEndpoint>,
    limit: Duration,
) -> Option<bool> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        let (work, _) = worker.step(&mut NoApp);
        if let Some(c) = worker.engine.connection() {
            if c.is_established() {
                return Some(!c.is_fallback());
            }
            if c.is_fallback() {
                return Some(false);
            }
        }
        if work == 0 {
            worker.sleep();
        }
    }
    None
}

/// Sends what the engine has queued (the RST of an aborted attempt).
fn drain(worker: &mut Worker<mptcp_engine::mptcp::MptcpEndpoint>) {
    for _ in 0..8 {
        if worker.step(&mut NoApp).0 == 0 {
            break;
        }
    }
}

/// No application while the handshake runs.
struct NoApp;

impl<E> mptcp_engine::app::App<E> for NoApp {
    fn poll(&mut self, _now: Instant, _engine: &mut E) -> (usize, bool) {
        (0, false)
    }
}

/// One subflow in `connect`'s report: where it runs and the engine's figures.
#[derive(Clone, Debug)]
pub struct SubflowRow {
    pub id: u32,
    pub path: usize,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub stats: SubflowStats,
}

/// Per-subflow figures of an engine, for `connect`'s report.
pub trait Measured {
    fn subflow_report(&self) -> Vec<SubflowRow>;
    /// Bytes the peer acknowledged (at the data level for MPTCP): what the
    /// receiver got, where no control channel tells.
    fn data_acked(&self) -> u64;
    /// The MPTCP version the connection runs (None: plain TCP, or a fallback).
    fn mptcp_version(&self) -> Option<u8> {
        None
    }
    /// Subflows that can carry data now.
    fn usable_subflows(&self) -> usize {
        usize::from(!self.subflow_report().is_empty())
    }
    /// Resets the connection: RST, or MP_FASTCLOSE for MPTCP.
    fn abort(&mut self);
}

/// `connect --wait-subflows N`: runs the engine with no application data
/// until `n` subflows can carry it, for at most 10 s.
fn wait_for_subflows<E: mptcp_engine::io::Engine + ByteStream + Measured>(
    worker: &mut Worker<E>,
    n: usize,
    stop: &std::sync::atomic::AtomicBool,
) {
    struct Hold;
    impl<E> mptcp_engine::app::App<E> for Hold {
        fn poll(&mut self, _: Instant, _: &mut E) -> (usize, bool) {
            (0, false)
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while worker.engine.usable_subflows() < n && !stop.load(Ordering::Relaxed) {
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "connect: {} of {n} subflows usable after 10 s; sending anyway",
                worker.engine.usable_subflows()
            );
            return;
        }
        let (work, _) = worker.step(&mut Hold);
        if work == 0 {
            worker.sleep();
        }
    }
}

impl Measured for TcpEndpoint {
    fn subflow_report(&self) -> Vec<SubflowRow> {
        let Some(sf) = self.subflow() else {
            return Vec::new();
        };
        let t = sf.tuple();
        vec![SubflowRow {
            id: 0,
            path: self.path(),
            local: t.local,
            remote: t.remote,
            stats: sf.stats(),
        }]
    }
    fn data_acked(&self) -> u64 {
        self.subflow().map_or(0, |sf| sf.stats().bytes_acked)
    }
    fn abort(&mut self) {
        if let Some(sf) = self.subflow_mut() {
            sf.abort();
        }
    }
}

impl Measured for mptcp_engine::mptcp::MptcpEndpoint {
    fn mptcp_version(&self) -> Option<u8> {
        let c = self.connection()?;
        (c.is_established() && !c.is_fallback()).then(|| c.version().number())
    }

    fn usable_subflows(&self) -> usize {
        self.connection().map_or(0, |c| {
            c.subflows()
                .filter(|i| i.status == mptcp_engine::mptcp::SubflowStatus::FullyEstablished)
                .count()
        })
    }

    fn subflow_report(&self) -> Vec<SubflowRow> {
        let Some(c) = self.connection() else {
            return Vec::new();
        };
        c.subflows()
            .map(|i| SubflowRow {
                id: i.id,
                path: i.path,
                local: i.tuple.local,
                remote: i.tuple.remote,
                stats: c.subflow_stats(i.id).unwrap_or_default(),
            })
            .collect()
    }
    fn data_acked(&self) -> u64 {
        self.connection().map_or(0, |c| c.data_acked())
    }
    fn abort(&mut self) {
        if let Some(c) = self.connection_mut() {
            c.abort();
        }
    }
}

fn run_any<E: mptcp_engine::io::Engine + ByteStream + Measured>(
    args: &ConnectArgs,
    worker: Worker<E>,
    datapath: Datapath,
    local: SocketAddr,
    control: Option<super::iperf3_client::Control>,
    versions_tried: &[u8],
    plane: Option<Box<dyn Controlled<E>>>,
) -> Result<()> {
    match args.request_response {
        Some(size) => {
            let mut app = super::rr::RequestResponse::new(
                size,
                Duration::from_millis(args.interval.max(1)),
                Duration::from_secs_f64(args.time.unwrap_or(10.0).max(0.0)),
            )?;
            super::rr::run(&mut app, args.json, worker, datapath)
        }
        None => run_connect(
            args,
            worker,
            datapath,
            local,
            control,
            versions_tried,
            plane,
        ),
    }
}

/// The control plane's share of a pass, for the engines that have one.
pub trait Controlled<E> {
    fn poll(&mut self, worker: &mut Worker<E>, datapath: &Datapath) -> usize;
    fn wake_fd(&self) -> std::os::fd::RawFd;
}

struct MptcpControl(WorkerSide);

impl Controlled<MptcpEndpoint> for MptcpControl {
    fn poll(&mut self, worker: &mut Worker<MptcpEndpoint>, datapath: &Datapath) -> usize {
        self.0.poll(worker, datapath, 0)
    }
    fn wake_fd(&self) -> std::os::fd::RawFd {
        self.0.wake_fd()
    }
}

fn run_connect<E: mptcp_engine::io::Engine + ByteStream + Measured>(
    args: &ConnectArgs,
    mut worker: Worker<E>,
    mut datapath: Datapath,
    local: SocketAddr,
    control: Option<super::iperf3_client::Control>,
    versions_tried: &[u8],
    mut plane: Option<Box<dyn Controlled<E>>>,
) -> Result<()> {
    args.datapath_opts.apply(&mut worker)?;
    let stop = stop_on_signals();
    if let Some(control) = control {
        if args.wait_subflows > 1 {
            wait_for_subflows(&mut worker, args.wait_subflows, stop);
        }
        return super::iperf3_client::run(args, worker, datapath, local, control);
    }
    let total = args.bytes.unwrap_or(if args.time.is_some() {
        u64::MAX
    } else {
        64 << 20
    });
    let deadline = args
        .time
        .map(|s| worker.now() + Duration::from_secs_f64(s.max(0.0)));
    // Time-based runs send (or ask for) u64::MAX bytes: reverse::UNTIL_CLOSED.
    let transfer = if args.reverse {
        Transfer::Receive(PatternSink::new(total, deadline))
    } else {
        Transfer::Send(Source::new(total, deadline))
    };
    let mut source = ViaConvert::new(transfer, args.via_convert.map(|_| args.remote));
    if !args.json {
        println!(
            "connecting {local} -> {} over {} ({:?} engine)",
            args.remote,
            args.ifaces.join(", "),
            args.engine
        );
    }
    if args.wait_subflows > 1 {
        wait_for_subflows(&mut worker, args.wait_subflows, stop);
    }
    let started = std::time::Instant::now();
    let mut intervals: Vec<Interval> = Vec::new();
    let mut mark = (0.0f64, 0u64, 0u64);
    // Instances with a control socket answer `stats` through it.
    let stats_file = plane.is_none().then(StatsFile::create);
    let mut established_at = None;
    // Read once established: a closed connection no longer says.
    let mut mptcp_version = None;
    let mut last_subflows: Vec<SubflowRow> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let (mut work, done) = worker.step(&mut source);
        if let Some(c) = plane.as_mut() {
            work += c.poll(&mut worker, &datapath);
        }
        if established_at.is_none() && worker.engine.is_established() {
            established_at = Some(started.elapsed().as_secs_f64());
            mptcp_version = worker.engine.mptcp_version();
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
                    let before = last_subflows.iter().find(|p| p.id == sf.id);
                    let (moved, verb) = if source.is_reverse() {
                        let was = before.map_or(0, |p| p.stats.bytes_received);
                        (sf.stats.bytes_received - was, "received")
                    } else {
                        (
                            sf.stats.bytes_sent - before.map_or(0, |p| p.stats.bytes_sent),
                            "sent",
                        )
                    };
                    println!(
                        "     subflow {} path {} {} -> {}: {verb} {:>10} B {:7.3} Gbit/s",
                        sf.id,
                        sf.path,
                        sf.local,
                        sf.remote,
                        moved,
                        rate(moved, iv.end - iv.start) / 1e9
                    );
                }
            }
            last_subflows = subflows;
            mark = (t, source.sent(), source.received());
            intervals.push(iv);
            if let Some(f) = &stats_file {
                let engine = json!({"subflows": last_subflows.len()});
                f.write(&instance_stats("connect", &datapath, &worker, engine));
            }
        }
        if done {
            break;
        }
        if work == 0 {
            match &plane {
                Some(c) => worker.sleep_with(&[(c.wake_fd(), libc::POLLIN)]),
                None => worker.sleep(),
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    datapath.detach_all()?;
    if let Some(e) = &source.error {
        bail!("{e}");
    }
    // What the receiver got: ours in reverse; in the forward direction what
    // the server acknowledged (DATA_ACK), whatever it sends back.
    let receiver_got = if source.is_reverse() {
        source.received()
    } else {
        worker.engine.data_acked().min(source.sent())
    };
    let subflows = worker.engine.subflow_report();
    let retransmits: u64 = subflows.iter().map(|s| s.stats.retransmits).sum();
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
                "mptcp_version": mptcp_version,
                "mptcp_versions_tried": versions_tried,
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
                "sum_received": {"start": 0.0, "end": elapsed, "seconds": elapsed, "bytes": receiver_got,
                                  "bits_per_second": rate(receiver_got, elapsed)},
                "echoed_bytes": if reverse { None } else { Some(source.received()) },
                "subflows": subflows.iter().map(|sf| {
                    let st = &sf.stats;
                    let moved = if reverse { st.bytes_received } else { st.bytes_sent };
                    json!({
                        "id": sf.id, "path": sf.path, "interface": args.ifaces.get(sf.path),
                        "local": sf.local.to_string(), "remote": sf.remote.to_string(),
                        "bytes_sent": st.bytes_sent, "bytes_received": st.bytes_received,
                        "retransmits": st.retransmits, "bytes_reinjected": st.bytes_reinjected,
                        "bits_per_second": rate(moved, elapsed),
                    })
                }).collect::<Vec<_>>(),
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
