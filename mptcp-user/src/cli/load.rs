//! `mptcp-user load`: the engine as a load generator. N concurrent MPTCP
//! connections from one endpoint (each with its subflows: the path manager
//! joins the other interfaces), each echoing SIZE bytes of the test pattern
//! (checked byte for byte) or sending a request and reading a response of a
//! given size (`serve --mode source` answers those), at a bounded rate of
//! new connections, with a latency histogram.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use mptcp_datapath::afxdp::XskConfig;
use mptcp_datapath::signals::stop_on_signals;
use mptcp_datapath::worker::Worker;
use mptcp_datapath::xdp::Ownership;
use mptcp_datapath::Datapath;
use mptcp_engine::app::{App, Pattern};
use mptcp_engine::mptcp::{ConnHandle, LocalAddr, MptcpEndpoint};
use mptcp_engine::time::Instant;

use super::engine_opts::EngineOptions;
use super::{
    accept_partial, check_interfaces, instance_stats, mptcp_config, require_root, PartialChecksum,
    StatsFile,
};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The server (`serve --mode echo`, or `--mode source` with --response,
    /// or any MPTCP echo server).
    pub remote: SocketAddr,
    /// Interfaces: the first carries each connection, the others its
    /// MP_JOIN subflows.
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// Connections open at once.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub concurrency: usize,
    /// Connections in all [default: --concurrency].
    #[arg(long, value_name = "N")]
    pub connections: Option<u64>,
    /// Bytes each connection sends (and, echoed, reads back).
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    pub size: u64,
    /// Request/response instead of echo: each connection sends an 8-byte
    /// request for this many bytes (big-endian, as `serve --mode source`
    /// reads it) and reads them.
    #[arg(long, value_name = "BYTES", conflicts_with = "size")]
    pub response: Option<u64>,
    /// New connections per second at most (0: as fast as they fit).
    #[arg(long, default_value_t = 0.0, value_name = "PER_SECOND")]
    pub rate: f64,
    /// First local port; connection k uses FIRST + k * (interfaces), its
    /// joins the ports after it. Keep the range clear of the kernel's own
    /// ephemeral ports (net.ipv4.ip_local_port_range).
    #[arg(long, default_value_t = 10_000, value_name = "PORT")]
    pub first_port: u16,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Abort (RST) a connection not done after this many seconds; it counts
    /// as failed.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub conn_timeout: f64,
    /// One JSON object at the end instead of text.
    #[arg(long)]
    pub json: bool,
    /// Partial TCP checksums: accepted on veth by default.
    #[arg(long, value_enum, default_value = "auto")]
    pub partial_checksum: PartialChecksum,
    #[command(flatten)]
    pub engine_opts: EngineOptions,
}

/// One connection's progress.
struct Conn {
    h: ConnHandle,
    started: Instant,
    sent: u64,
    received: u64,
    expect: u64,
    closing: bool,
}

/// The load: opens connections, moves their bytes, records latencies.
struct Load {
    remote: SocketAddr,
    size: u64,
    response: Option<u64>,
    concurrency: usize,
    total: u64,
    rate: f64,
    ports: (u16, u16, u16),
    next_port: u32,
    opened: u64,
    finished: u64,
    exact: u64,
    failed: u64,
    mismatched: u64,
    started: Option<Instant>,
    /// Live connections by slot.
    conns: Vec<Option<Conn>>,
    active: usize,
    /// Connect-to-last-byte latencies, microseconds.
    latencies: Vec<u64>,
    /// Connections in the order they opened, with their deadlines (one
    /// timeout for all: the front is always the next to expire).
    deadlines: std::collections::VecDeque<(Instant, ConnHandle)>,
    conn_timeout: Duration,
    chunk: Box<[u8]>,
}

impl Load {
    fn port(&mut self) -> u16 {
        let (first, stride, slots) = self.ports;
        let p = first as u32 + (self.next_port % slots as u32) * stride as u32;
        self.next_port += 1;
        p as u16
    }

    fn open(&mut self, now: Instant, ep: &mut MptcpEndpoint) {
        let start = *self.started.get_or_insert(now);
        while self.active < self.concurrency && self.opened < self.total {
            if self.rate > 0.0 {
                let allowed = now.saturating_duration_since(start).as_secs_f64() * self.rate;
                if self.opened as f64 >= allowed + 1.0 {
                    break;
                }
            }
            let port = self.port();
            let h = ep.connect(port, self.remote, now);
            let i = h.slot as usize;
            if self.conns.len() <= i {
                self.conns.resize_with(i + 1, || None);
            }
            let expect = self.response.unwrap_or(self.size);
            self.conns[i] = Some(Conn {
                h,
                started: now,
                sent: 0,
                received: 0,
                expect,
                closing: false,
            });
            self.opened += 1;
            self.active += 1;
            self.deadlines.push_back((now + self.conn_timeout, h));
        }
    }

    /// Moves one connection's bytes; true when it is finished.
    fn step(&mut self, now: Instant, ep: &mut MptcpEndpoint, h: ConnHandle) -> (usize, bool) {
        let Load {
            conns,
            chunk,
            response,
            size,
            mismatched,
            latencies,
            ..
        } = self;
        let Some(Some(c)) = conns.get_mut(h.slot as usize) else {
            return (0, false);
        };
        if c.h != h {
            return (0, false);
        }
        let Some(conn) = ep.get_mut(h) else {
            return (0, true);
        };
        let mut work = 0;
        if conn.is_established() {
            let to_send = match *response {
                Some(_) => 8,
                None => *size,
            };
            while c.sent < to_send {
                let n = (to_send - c.sent).min(chunk.len() as u64) as usize;
                match *response {
                    Some(r) => {
                        let req = r.to_be_bytes();
                        chunk[..n].copy_from_slice(&req[c.sent as usize..c.sent as usize + n]);
                    }
                    None => Pattern::STREAM.fill(c.sent, &mut chunk[..n]),
                }
                let k = conn.send(&chunk[..n]);
                c.sent += k as u64;
                work += k;
                if k < n {
                    break;
                }
            }
        }
        loop {
            let n = conn.recv(chunk);
            if n == 0 {
                break;
            }
            if Pattern::STREAM.mismatches(c.received, &chunk[..n]) > 0 {
                *mismatched += 1;
            }
            c.received += n as u64;
            work += n;
        }
        if c.received >= c.expect && !c.closing {
            c.closing = true;
            conn.close();
            let us = now.saturating_duration_since(c.started).as_micros() as u64;
            latencies.push(us);
        }
        (work, conn.is_closed())
    }

    fn finish(&mut self, h: ConnHandle) {
        if let Some(c) = self.conns.get_mut(h.slot as usize).and_then(Option::take) {
            self.active -= 1;
            self.finished += 1;
            if c.closing && c.received == c.expect {
                self.exact += 1;
            } else {
                self.failed += 1;
            }
        }
    }
}

impl App<MptcpEndpoint> for Load {
    fn poll(&mut self, now: Instant, ep: &mut MptcpEndpoint) -> (usize, bool) {
        // Overdue connections are aborted; the endpoint reports them closed.
        while let Some(&(t, h)) = self.deadlines.front() {
            if t > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(c) = ep.get_mut(h) {
                if !c.is_closed() {
                    c.abort();
                }
            }
        }
        self.open(now, ep);
        let mut work = 0;
        while let Some(h) = ep.poll_app_ready() {
            let (w, done) = self.step(now, ep, h);
            work += w;
            if done {
                self.finish(h);
            }
        }
        // Connections whose slot was reaped before we saw them close.
        ep.reap_closed();
        (work, self.finished >= self.total)
    }
}

/// Nothing to do (the last passes that send the RSTs).
struct Idle;

impl App<MptcpEndpoint> for Idle {
    fn poll(&mut self, _now: Instant, _ep: &mut MptcpEndpoint) -> (usize, bool) {
        (0, false)
    }
}

/// The latency at quantile `q` (0..=1) of sorted microseconds, in ms.
fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub fn load(args: &LoadArgs) -> Result<()> {
    require_root("load")?;
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let local_addrs = check_interfaces(&args.ifaces)?;
    let family = |a: &std::net::IpAddr| a.is_ipv4() == args.remote.is_ipv4();
    let mut locals = Vec::new();
    for iface in &args.ifaces {
        let a = mptcp_datapath::xdp::interface_addresses(iface)?
            .into_iter()
            .find(|a| family(a) && local_addrs.contains(a))
            .ok_or_else(|| anyhow!("no address of {}'s family on {iface}", args.remote))?;
        locals.push(a);
    }
    let route = mptcp_datapath::route::route_get(args.remote.ip())?;
    let next_hop = route.next_hop(args.remote.ip());
    let mac = mptcp_datapath::route::resolve_neighbour(
        &args.ifaces[0],
        next_hop,
        Duration::from_secs(3),
    )?;
    let total = args.connections.unwrap_or(args.concurrency as u64);
    let stride = args.ifaces.len().max(1) as u16;
    let slots = (65_535 - args.first_port as u32) / stride as u32;
    if (slots as usize) < args.concurrency {
        bail!(
            "ports {}..65535 hold {slots} connections of {stride} subflows, fewer than --concurrency {}",
            args.first_port,
            args.concurrency
        );
    }
    let last = args.first_port as u32 + slots * stride as u32;
    let ownership = Ownership {
        addresses: locals.clone(),
        listen_ports: vec![],
        client_ports: Some(args.first_port..=last.min(65_535) as u16),
    };
    let (mut datapath, mut paths) = Datapath::open(&args.ifaces, &ownership, XskConfig::default())?;
    paths[0].neighbours.default = Some(mac);
    // The joins leave by the other interfaces toward the same server
    // address: resolve it there too, up front (weak host model on the
    // server side answers for its address on every interface).
    for (path, iface) in paths.iter_mut().zip(&args.ifaces).skip(1) {
        if let Ok(mac) = mptcp_datapath::route::resolve_neighbour(
            iface,
            args.remote.ip(),
            Duration::from_secs(1),
        ) {
            path.neighbours.default = Some(mac);
        }
    }
    let mut cfg = mptcp_config(&paths, args.remote.is_ipv6(), &args.engine_opts);
    cfg.accept_partial_checksum = accept_partial(args.partial_checksum, &args.ifaces).0;
    let addrs: Vec<LocalAddr> = locals
        .iter()
        .enumerate()
        .map(|(path, ip)| LocalAddr {
            ip: *ip,
            path,
            signal: false,
        })
        .collect();
    let engine = MptcpEndpoint::new(cfg, &addrs);
    let mut worker = Worker::new(engine, paths);
    let mut app = Load {
        remote: args.remote,
        size: args.size,
        response: args.response,
        concurrency: args.concurrency,
        total,
        rate: args.rate,
        ports: (args.first_port, stride, slots as u16),
        next_port: 0,
        opened: 0,
        finished: 0,
        exact: 0,
        failed: 0,
        mismatched: 0,
        started: None,
        conns: Vec::new(),
        active: 0,
        latencies: Vec::new(),
        deadlines: std::collections::VecDeque::new(),
        conn_timeout: Duration::from_secs_f64(args.conn_timeout.max(0.001)),
        chunk: vec![0u8; 64 << 10].into_boxed_slice(),
    };
    if !args.json {
        println!(
            "load: {total} connections to {}, {} at once, {} each, over {}",
            args.remote,
            args.concurrency,
            match args.response {
                Some(r) => format!("request/response of {r} B"),
                None => format!("echo of {} B", args.size),
            },
            args.ifaces.join(", ")
        );
    }
    let stop = stop_on_signals();
    let stats_file = StatsFile::create();
    let begun = std::time::Instant::now();
    let mut last_dump = begun;
    let mut wake = Vec::new();
    while !stop.load(Ordering::Relaxed) && begun.elapsed().as_secs_f64() < args.timeout {
        let (work, done) = worker.step(&mut app);
        if done {
            break;
        }
        if last_dump.elapsed() >= Duration::from_secs(1) {
            last_dump = std::time::Instant::now();
            let e = json!({"opened": app.opened, "finished": app.finished, "active": app.active});
            stats_file.write(&instance_stats("load", &datapath, &worker, e));
        }
        if work == 0 {
            wake.clear();
            worker.sleep_with(&wake);
        }
    }
    let seconds = begun.elapsed().as_secs_f64();
    // Frames the kernel dropped at our rings (XDP_STATISTICS).
    let ring_drops: u64 = worker
        .paths
        .iter()
        .flat_map(|p| std::iter::once(&p.socket).chain(&p.extra_rx))
        .filter_map(|s| s.kernel_stats().ok())
        .map(|k| k.rx_dropped + k.rx_ring_full + k.rx_fill_ring_empty_descs)
        .sum();
    // Whatever is still open is reset, so the server does not hold it.
    let live: Vec<ConnHandle> = worker.engine.handles().collect();
    for h in live {
        if let Some(c) = worker.engine.get_mut(h) {
            c.abort();
        }
    }
    for _ in 0..4 {
        worker.step(&mut Idle);
    }
    datapath.detach_all()?;
    let counters = worker.engine.counters().clone();
    let mut lat = std::mem::take(&mut app.latencies);
    lat.sort_unstable();
    // A log2 histogram of latencies, in milliseconds.
    let mut hist: Vec<(f64, u64)> = Vec::new();
    for us in &lat {
        let ms = (*us as f64 / 1000.0).max(0.001);
        let edge = 2f64.powi(ms.log2().ceil() as i32);
        match hist.last_mut() {
            Some((e, n)) if *e == edge => *n += 1,
            _ => hist.push((edge, 1)),
        }
    }
    let report = json!({
        "connections": total, "opened": app.opened, "finished": app.finished,
        "exact": app.exact, "failed": app.failed, "mismatched": app.mismatched,
        "seconds": seconds, "connections_per_second": app.finished as f64 / seconds,
        "latency_ms": { "p50": quantile(&lat, 0.5), "p90": quantile(&lat, 0.9),
                        "p99": quantile(&lat, 0.99), "max": quantile(&lat, 1.0) },
        "histogram_ms": hist.iter().map(|(e, n)| json!({"le": e, "count": n})).collect::<Vec<_>>(),
        "resets_sent": counters.resets_sent, "ring_drops": ring_drops,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} of {total} connections finished in {seconds:.2} s ({:.0}/s): {} exact, {} failed, {} with mismatched bytes",
            app.finished,
            app.finished as f64 / seconds,
            app.exact,
            app.failed,
            app.mismatched
        );
        println!("frames dropped at our AF_XDP rings: {ring_drops}");
        println!(
            "latency (connect to last byte): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            quantile(&lat, 0.5),
            quantile(&lat, 0.9),
            quantile(&lat, 0.99),
            quantile(&lat, 1.0)
        );
        for (edge, n) in &hist {
            println!("  <= {edge:>8.3} ms {n:>8}");
        }
    }
    if app.finished < total || app.exact < total {
        bail!("{} of {total} connections completed exactly", app.exact);
    }
    Ok(())
}
