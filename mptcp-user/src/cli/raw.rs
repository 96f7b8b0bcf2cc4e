//! `mptcp-user raw-ceiling` (hidden; `cargo xtask bench` runs it): the raw
//! ceiling of a topology. The same worker loop, XDP classifier and AF_XDP
//! sockets as `serve`/`connect`, with no protocol: the sender writes
//! MTU-sized IPv4/TCP frames (a fixed header and one copy of the payload into
//! the UMEM frame, as the engine copies from its send buffer) round the paths
//! in bursts; the receiver counts what arrives. What the engine reaches
//! divided by this is its efficiency.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use mptcp_datapath::afxdp::XskConfig;
use mptcp_datapath::signals::stop_on_signals;
use mptcp_datapath::worker::Worker;
use mptcp_datapath::xdp::Ownership;
use mptcp_datapath::Datapath;
use mptcp_engine::app::App;
use mptcp_engine::io::{Engine, PathId};
use mptcp_engine::time::Instant;
use mptcp_engine::wire::checksum;

use super::{check_interfaces, require_root};

#[derive(clap::Args, Debug)]
pub struct RawArgs {
    /// Interfaces (one path each).
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// Send to this address, one per interface in the same order; without
    /// --to, receive on --port until SIGINT/SIGTERM, then print the figures.
    #[arg(long = "to")]
    pub to: Vec<SocketAddr>,
    /// Port the receiver owns.
    #[arg(long, default_value_t = 5330)]
    pub port: u16,
    /// Seconds to send for.
    #[arg(long, default_value_t = 5.0)]
    pub time: f64,
    /// Frames sent on one path before moving to the next (the worker's TX batch).
    #[arg(long, default_value_t = 64)]
    pub burst: u32,
    #[command(flatten)]
    pub datapath_opts: super::datapath_opts::DatapathOptions,
}

const IP_TCP: usize = 40;

/// Sends frames of one fixed IPv4/TCP header per path and a payload copy.
struct RawSource {
    headers: Vec<[u8; IP_TCP]>,
    payload: Vec<u8>,
    burst: u32,
    count: u64,
    until: Instant,
    bytes: u64,
}

impl RawSource {
    fn new(
        paths: &[(IpAddr, SocketAddr)],
        mtu: u16,
        burst: u32,
        until: Instant,
    ) -> Result<RawSource> {
        let len = usize::from(mtu);
        let mut headers = Vec::new();
        for (src, dst) in paths {
            let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst.ip()) else {
                bail!("raw-ceiling speaks IPv4 only");
            };
            let mut h = [0u8; IP_TCP];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = 64;
            h[9] = 6;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let sum = checksum::checksum(&h[..20]);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            h[20..22].copy_from_slice(&40000u16.to_be_bytes());
            h[22..24].copy_from_slice(&dst.port().to_be_bytes());
            h[32] = 5 << 4;
            h[33] = 0x10; // ACK
            h[34..36].copy_from_slice(&u16::MAX.to_be_bytes());
            headers.push(h);
        }
        Ok(RawSource {
            headers,
            payload: mptcp_engine::app::Pattern::STREAM.bytes(0, len - IP_TCP),
            burst: burst.max(1),
            count: 0,
            until,
            bytes: 0,
        })
    }
}

impl Engine for RawSource {
    fn handle_packet(&mut self, _now: Instant, _path: PathId, _packet: &[u8]) {}
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, usize)> {
        if now >= self.until {
            return None;
        }
        let n = IP_TCP + self.payload.len();
        if buf.len() < n {
            return None;
        }
        let path = ((self.count / u64::from(self.burst)) % self.headers.len() as u64) as usize;
        buf[..IP_TCP].copy_from_slice(&self.headers[path]);
        buf[IP_TCP..n].copy_from_slice(&self.payload);
        self.count += 1;
        self.bytes += self.payload.len() as u64;
        Some((path, n))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.until)
    }
    fn handle_timeout(&mut self, _now: Instant) {}
}

/// Counts what arrives.
#[derive(Default)]
struct RawSink {
    frames: u64,
    bytes: u64,
    first: Option<Instant>,
    last: Instant,
}

impl Engine for RawSink {
    fn handle_packet(&mut self, now: Instant, _path: PathId, packet: &[u8]) {
        self.frames += 1;
        self.bytes += packet.len().saturating_sub(IP_TCP) as u64;
        self.first.get_or_insert(now);
        self.last = now;
    }
    fn poll_transmit(&mut self, _now: Instant, _buf: &mut [u8]) -> Option<(PathId, usize)> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
}

/// The sender is done when its time is up; the receiver runs until signalled.
struct Until;

impl App<RawSource> for Until {
    fn poll(&mut self, now: Instant, engine: &mut RawSource) -> (usize, bool) {
        (0, now >= engine.until)
    }
}

impl App<RawSink> for Until {
    fn poll(&mut self, _now: Instant, _engine: &mut RawSink) -> (usize, bool) {
        (0, false)
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub fn raw_ceiling(args: &RawArgs) -> Result<()> {
    require_root("raw-ceiling")?;
    let local_addrs = check_interfaces(&args.ifaces)?;
    let stop = stop_on_signals();
    if args.to.is_empty() {
        let ownership = Ownership {
            addresses: local_addrs.into_iter().filter(IpAddr::is_ipv4).collect(),
            listen_ports: vec![args.port],
            client_ports: None,
        };
        let (_datapath, paths) = Datapath::open(&args.ifaces, &ownership, XskConfig::default())?;
        eprintln!("raw-ceiling: receiving on port {}", args.port);
        let mut worker = Worker::new(RawSink::default(), paths);
        args.datapath_opts.apply(&mut worker)?;
        let cpu0 = cpu_seconds();
        worker.run(&mut Until, stop);
        let e = &worker.engine;
        let span = e
            .first
            .map_or(0.0, |f| e.last.saturating_duration_since(f).as_secs_f64());
        let drops: u64 = worker
            .paths
            .iter()
            .filter_map(|p| p.socket.kernel_stats().ok())
            .map(|s| s.rx_dropped + s.rx_ring_full)
            .sum();
        println!(
            "{}",
            json!({
                "role": "receiver",
                "frames": e.frames,
                "payload_bytes": e.bytes,
                "seconds": span,
                "frames_per_second": e.frames as f64 / span.max(1e-9),
                "payload_bits_per_second": e.bytes as f64 * 8.0 / span.max(1e-9),
                "rx_dropped": drops,
                "cpu_seconds": cpu_seconds() - cpu0,
            })
        );
        return Ok(());
    }
    if args.to.len() != args.ifaces.len() {
        bail!("give one --to per --iface (path i sends to --to i)");
    }
    let mut pairs = Vec::new();
    let mut macs = Vec::new();
    for (iface, to) in args.ifaces.iter().zip(&args.to) {
        let src = mptcp_datapath::xdp::interface_addresses(iface)?
            .into_iter()
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| anyhow!("no IPv4 address on {iface}"))?;
        macs.push(mptcp_datapath::route::resolve_neighbour(
            iface,
            to.ip(),
            Duration::from_secs(3),
        )?);
        pairs.push((src, *to));
    }
    let ownership = Ownership {
        addresses: pairs.iter().map(|p| p.0).collect(),
        listen_ports: vec![args.port],
        client_ports: None,
    };
    let (_datapath, mut paths) = Datapath::open(&args.ifaces, &ownership, XskConfig::default())?;
    for (p, mac) in paths.iter_mut().zip(macs) {
        p.neighbours.default = Some(mac);
    }
    let mtu = paths.iter().map(|p| p.mtu).min().unwrap_or(1500);
    // The worker's clock starts at zero when it is created, just below.
    let until = Instant::ZERO + Duration::from_secs_f64(args.time);
    let source = RawSource::new(&pairs, mtu, args.burst, until)?;
    let mut worker = Worker::new(source, paths);
    args.datapath_opts.apply(&mut worker)?;
    let cpu0 = cpu_seconds();
    let started = std::time::Instant::now();
    worker.run(&mut Until, stop);
    let secs = started.elapsed().as_secs_f64();
    let e = &worker.engine;
    println!(
        "{}",
        json!({
            "role": "sender",
            "frames": e.count,
            "payload_bytes": e.bytes,
            "seconds": secs,
            "frames_per_second": e.count as f64 / secs.max(1e-9),
            "payload_bits_per_second": e.bytes as f64 * 8.0 / secs.max(1e-9),
            "tx_ring_full": worker.stats.tx_ring_full,
            "cpu_seconds": cpu_seconds() - cpu0,
        })
    );
    Ok(())
}
