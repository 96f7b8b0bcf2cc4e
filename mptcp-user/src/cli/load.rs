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
    accept_partial, check_interfaces, mptcp_config, require_root, PartialChecksum, StatsFile,
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
    /// First local port; connection k uses FIRST + k * STRIDE, its joins
    /// the ports after it (STRIDE: the interfaces, or --subflows if more).
    /// Keep the range clear of the kernel's own ephemeral ports
    /// (net.ipv4.ip_local_port_range). With several workers, each takes
    /// its own connections (k = worker, worker + workers, ...).
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
    #[command(flatten)]
    pub worker_opts: super::datapath_opts::WorkerOptions,
}

/// The next port, from slot `*cursor` on, whose answers from `remote` the
/// NIC hashes to a queue of worker `worker` of `workers` (queue q belongs
/// to worker q % workers): a port belongs to one worker only, so workers
/// never clash. `None` when no slot maps to this worker.
fn rss_port(
    rss: &mptcp_datapath::rss::Rss,
    remote: SocketAddr,
    local: SocketAddr,
    (first, stride, slots): (u16, u16, u16),
    cursor: &mut u32,
    (worker, workers): (u32, u32),
) -> Option<u16> {
    for _ in 0..slots {
        let slot = *cursor % u32::from(slots.max(1));
        *cursor += 1;
        let p = (u32::from(first) + slot * u32::from(stride)) as u16;
        let q = rss.queue(remote, SocketAddr::new(local.ip(), p));
        if q.is_some_and(|q| q % workers == worker) {
            return Some(p);
        }
    }
    None
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
    /// First port, stride, slots.
    ports: (u16, u16, u16),
    next_port: u32,
    /// This worker's share of the slots: index `worker` of every `workers`.
    worker: u32,
    workers: u32,
    /// The first interface's RSS and address: ports are then chosen so
    /// that the server's answers land on a queue of this worker.
    rss: Option<(std::sync::Arc<mptcp_datapath::rss::Rss>, std::net::IpAddr)>,
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
    /// Connections by the number of subflows they ever had.
    subflows: std::collections::BTreeMap<u64, u64>,
    /// Connections in the order they opened, with their deadlines (one
    /// timeout for all: the front is always the next to expire).
    deadlines: std::collections::VecDeque<(Instant, ConnHandle)>,
    conn_timeout: Duration,
    chunk: Box<[u8]>,
}

impl Load {
    fn port(&mut self) -> u16 {
        let (first, stride, slots) = self.ports;
        if let Some((rss, local)) = &self.rss {
            let mine = (self.worker, self.workers);
            let at = SocketAddr::new(*local, 0);
            if let Some(p) = rss_port(rss, self.remote, at, self.ports, &mut self.next_port, mine) {
                return p;
            }
        }
        let mine = (slots as u32 / self.workers).max(1);
        let slot = (self.next_port % mine) * self.workers + self.worker;
        let p = first as u32 + slot * stride as u32;
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
            subflows,
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
            *subflows
                .entry(conn.info().subflows_total as u64)
                .or_default() += 1;
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
    let stride = (args.ifaces.len() as u16)
        .max(args.engine_opts.subflows.unwrap_or(1))
        .max(1);
    let slots = (65_535 - args.first_port as u32) / stride as u32;
    if (slots as usize) < args.concurrency {
        bail!(
            "ports {}..65535 hold {slots} connections of {stride} subflows, fewer than --concurrency {}",
            args.first_port,
            args.concurrency
        );
    }
    let workers = args.worker_opts.resolve(&args.ifaces)?;
    if args.concurrency < workers {
        bail!(
            "--concurrency {} is fewer than --workers {workers}: each worker needs one",
            args.concurrency
        );
    }
    let last = args.first_port as u32 + slots * stride as u32;
    let ownership = Ownership {
        addresses: locals.clone(),
        listen_ports: vec![],
        client_ports: Some(args.first_port..=last.min(65_535) as u16),
    };
    let (mut datapath, sets) =
        Datapath::open_workers(&args.ifaces, &ownership, XskConfig::default(), workers)?;
    // The joins leave by the other interfaces toward the same server
    // address: resolve it there too, up front (weak host model on the
    // server side answers for its address on every interface).
    let mut defaults = vec![Some(mac)];
    for iface in args.ifaces.iter().skip(1) {
        defaults.push(
            mptcp_datapath::route::resolve_neighbour(
                iface,
                args.remote.ip(),
                Duration::from_secs(1),
            )
            .ok(),
        );
    }
    let mut cfg = mptcp_config(&sets[0].paths, args.remote.is_ipv6(), &args.engine_opts);
    cfg.client_ports = stride;
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
    // A NIC that says how it hashes (ETHTOOL_GRSSH): each worker picks
    // ports whose answers land on its own queues. veth says nothing: the
    // frames that land elsewhere are handed off.
    let rss = (workers > 1)
        .then(|| mptcp_datapath::rss::read(&args.ifaces[0]))
        .flatten()
        .map(std::sync::Arc::new);
    if workers > 1 && !args.json {
        match &rss {
            Some(r) => println!(
                "RSS on {}: {}-entry indirection table; each worker picks ports its queues receive",
                args.ifaces[0],
                r.indir.len()
            ),
            None => println!(
                "no RSS key on {} (veth has none): frames landing on another worker's queue are handed off",
                args.ifaces[0]
            ),
        }
    }
    let mut runs = Vec::new();
    for (w, set) in sets.into_iter().enumerate() {
        let mut paths = set.paths;
        for (path, mac) in paths.iter_mut().zip(&defaults) {
            path.neighbours.default = *mac;
        }
        // Every engine its own secrets (distinct keys, tokens and ISNs).
        let mut cfg = cfg.clone();
        cfg.secret = mptcp_engine::secret::random();
        cfg.tcp.isn_secret = mptcp_engine::secret::random();
        let mut worker = Worker::new(MptcpEndpoint::new(cfg, &addrs), paths);
        if let Some(a) = set.affinity {
            worker.set_affinity(a);
        }
        let share = |n: u64| n / workers as u64 + u64::from((w as u64) < n % workers as u64);
        let app = Load {
            remote: args.remote,
            size: args.size,
            response: args.response,
            concurrency: share(args.concurrency as u64) as usize,
            total: share(total),
            rate: args.rate / workers as f64,
            ports: (args.first_port, stride, slots as u16),
            next_port: 0,
            worker: w as u32,
            workers: workers as u32,
            rss: rss.clone().map(|r| (r, locals[0])),
            opened: 0,
            finished: 0,
            exact: 0,
            failed: 0,
            mismatched: 0,
            started: None,
            conns: Vec::new(),
            active: 0,
            latencies: Vec::new(),
            subflows: Default::default(),
            deadlines: std::collections::VecDeque::new(),
            conn_timeout: Duration::from_secs_f64(args.conn_timeout.max(0.001)),
            chunk: vec![0u8; 64 << 10].into_boxed_slice(),
        };
        runs.push((worker, app));
    }
    if !args.json {
        println!(
            "load: {total} connections to {}, {} at once, {} each, over {}, {workers} worker(s)",
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
    // Each worker's latest snapshot, written once a second (off the packet path).
    let snapshots = std::sync::Mutex::new(vec![serde_json::Value::Null; workers]);
    let begun = std::time::Instant::now();
    // A worker whose connections are done keeps receiving (frames of the
    // others' connections land on its queues) until every worker is done.
    let running = std::sync::atomic::AtomicUsize::new(workers);
    let run = |worker: &mut Worker<MptcpEndpoint>, app: &mut Load, w: usize| {
        let mut last_dump = begun;
        let mut wake = Vec::new();
        let mut finished = false;
        while !stop.load(Ordering::Relaxed) && begun.elapsed().as_secs_f64() < args.timeout {
            let (work, done) = worker.step(app);
            if done && !finished {
                finished = true;
                running.fetch_sub(1, Ordering::AcqRel);
            }
            if running.load(Ordering::Acquire) == 0 {
                break;
            }
            if last_dump.elapsed() >= Duration::from_secs(1) {
                last_dump = std::time::Instant::now();
                let e =
                    json!({"opened": app.opened, "finished": app.finished, "active": app.active});
                let dp = (w == 0).then_some(&datapath);
                let v = serde_json::to_value(mptcp_control::snapshot::collect_worker(
                    "load", dp, worker, e,
                ))
                .unwrap_or_default();
                if let Ok(mut s) = snapshots.lock() {
                    s[w] = v;
                    if w == 0 {
                        stats_file.write(&mptcp_control::snapshot::merge(s.clone()));
                    }
                }
            }
            if work == 0 {
                wake.clear();
                worker.sleep_with(&wake);
            }
        }
    };
    let runs = std::thread::scope(|scope| {
        let mut runs = runs.into_iter();
        let first = runs.next();
        let handles: Vec<_> = runs
            .enumerate()
            .map(|(i, (mut worker, mut app))| {
                let run = &run;
                scope.spawn(move || {
                    run(&mut worker, &mut app, i + 1);
                    (worker, app)
                })
            })
            .collect();
        let mut done = Vec::new();
        if let Some((mut worker, mut app)) = first {
            run(&mut worker, &mut app, 0);
            done.push((worker, app));
        }
        // Joined before any worker (and its UMEM) is dropped.
        done.extend(handles.into_iter().filter_map(|h| h.join().ok()));
        done
    });
    let seconds = begun.elapsed().as_secs_f64();
    let mut runs = runs;
    // Frames the kernel dropped at our rings (XDP_STATISTICS).
    let ring_drops: u64 = runs
        .iter()
        .flat_map(|(w, _)| &w.paths)
        .flat_map(|p| std::iter::once(&p.socket).chain(&p.extra_rx))
        .filter_map(|s| s.kernel_stats().ok())
        .map(|k| k.rx_dropped + k.rx_ring_full + k.rx_fill_ring_empty_descs)
        .sum();
    // Whatever is still open is reset, so the server does not hold it.
    for (worker, _) in &mut runs {
        let live: Vec<ConnHandle> = worker.engine.handles().collect();
        for h in live {
            if let Some(c) = worker.engine.get_mut(h) {
                c.abort();
            }
        }
        for _ in 0..4 {
            worker.step(&mut Idle);
        }
    }
    datapath.detach_all()?;
    let resets_sent: u64 = runs
        .iter()
        .map(|(w, _)| w.engine.counters().resets_sent)
        .sum();
    let per_worker: Vec<serde_json::Value> = runs
        .iter()
        .enumerate()
        .map(|(i, (w, a))| {
            json!({"worker": i, "connections": a.opened, "exact": a.exact,
                   "rx_frames": w.stats.rx_frames, "handoffs": w.stats.handoffs_out,
                   "handoffs_in": w.stats.handoffs_in, "handoff_dropped": w.stats.handoff_dropped,
                   "unmatched": w.engine.counters().unmatched,
                   "resets_sent": w.engine.counters().resets_sent,
                   "affinity_updates": w.affinity().map_or(0, |a| a.maps.counters.updates),
                   "affinity_failed": w.affinity().map_or(0, |a| a.maps.counters.failed)})
        })
        .collect();
    let mut app = runs.pop().map(|(_, a)| a).expect("a worker");
    for (_, a) in runs {
        app.opened += a.opened;
        app.finished += a.finished;
        app.exact += a.exact;
        app.failed += a.failed;
        app.mismatched += a.mismatched;
        app.latencies.extend(a.latencies);
        for (k, n) in a.subflows {
            *app.subflows.entry(k).or_default() += n;
        }
    }
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
        "resets_sent": resets_sent, "ring_drops": ring_drops,
        "subflows": app.subflows.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "rss_ports": rss.is_some(),
        "workers": per_worker,
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

#[cfg(test)]
mod tests {
    use super::*;
    use mptcp_datapath::rss::Rss;

    #[test]
    fn rss_ports_land_on_their_workers_queues_and_never_clash() {
        let rss = Rss {
            key: (0..40u8)
                .map(|i| i.wrapping_mul(37).wrapping_add(11))
                .collect(),
            indir: (0..128).map(|i| i % 4).collect(),
        };
        let remote: SocketAddr = "10.0.0.2:5201".parse().unwrap();
        let local: SocketAddr = "10.0.0.1:0".parse().unwrap();
        let ports = (10_000, 4, 1000);
        let mut taken = std::collections::HashSet::new();
        for worker in 0..2 {
            let mut cursor = 0;
            for _ in 0..100 {
                let p = rss_port(&rss, remote, local, ports, &mut cursor, (worker, 2)).unwrap();
                let q = rss.queue(remote, SocketAddr::new(local.ip(), p)).unwrap();
                assert_eq!(q % 2, worker, "port {p} hashes to queue {q}");
                assert_eq!((p - 10_000) % 4, 0, "on a slot");
                assert!(taken.insert(p), "port {p} taken twice");
            }
        }
        // A worker with no queue in the table gets no port.
        let mut cursor = 0;
        assert_eq!(
            rss_port(&rss, remote, local, ports, &mut cursor, (4, 5)),
            None
        );
    }
}
