//! The engine-core benchmark: the engine's own cost per packet, without veth,
//! AF_XDP or system calls.
//!
//! Two endpoints are joined in memory on one thread, driven the way the
//! AF_XDP worker drives them (batches of up to 64 packets each way, real
//! time handed in as the engine's clock): an MPTCP client and server over two
//! subflows, and the same for plain TCP. The client's application sends the
//! test pattern, the server's reads it out (and the bench checks every byte,
//! outside the timed parts). Each side's time is measured separately, so the
//! figures are per side: Gbit/s of payload per core, ns per packet (data
//! segments and ACKs, sent and received) and per data segment. A counting
//! global allocator counts allocations in steady state (must be 0).
//!
//! The second figure is the simulator's speed: simulated seconds per wall
//! second for a two-path MPTCP transfer.
//!
//! Figures, never asserts on a timing; the run fails only when a transfer
//! does not complete, the bytes differ, or steady state allocates.
//!
//! `cargo run --release -p mptcp-bench [-- --mib N --runs N --json]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant as WallInstant};

use mptcp_engine::io::{ByteStream, Engine, PathId};
use mptcp_engine::mptcp::{LocalAddr, MptcpConfig, MptcpEndpoint};
use mptcp_engine::tcp::{Config, TcpEndpoint};
use mptcp_engine::time::Instant;

// ---- allocations ----

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---- the in-memory pair ----

/// Packets per batch, as the AF_XDP worker (RX_BATCH / TX batch).
const BATCH: usize = 64;
/// Room per packet: MTU 1500 plus slack (the engine never writes more than its MSS allows).
const FRAME: usize = 2048;
/// Bytes handed to `send` at a time, and the period of the sender's buffer.
const CHUNK: usize = 64 << 10;
const PERIOD: usize = 1 << 20;

/// Up to BATCH packets in flight one way, written in place by `poll_transmit`.
struct Batch {
    frames: Vec<u8>,
    meta: Vec<(PathId, usize)>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            frames: vec![0u8; BATCH * FRAME],
            meta: Vec::with_capacity(BATCH),
        }
    }

    /// Pulls up to BATCH packets out of `e`.
    fn fill(&mut self, e: &mut impl Engine, now: Instant) {
        self.meta.clear();
        while self.meta.len() < BATCH {
            let i = self.meta.len();
            match e.poll_transmit(now, &mut self.frames[i * FRAME..(i + 1) * FRAME]) {
                Some(m) => self.meta.push(m),
                None => break,
            }
        }
    }

    /// Hands every packet to `e` on the path it left by (paths are symmetric here).
    fn deliver(&self, e: &mut impl Engine, now: Instant) {
        for (i, &(path, n)) in self.meta.iter().enumerate() {
            e.handle_packet(now, path, &self.frames[i * FRAME..i * FRAME + n]);
        }
    }

    fn payload(&self) -> usize {
        self.meta.len()
    }
}

/// CPU time of this process (one thread runs the pair).
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn timers(e: &mut impl Engine, now: Instant) {
    if e.poll_timeout().is_some_and(|t| t <= now) {
        e.handle_timeout(now);
    }
}

/// What one run measured (steady state only: after the warm-up).
#[derive(Clone, Debug, Default)]
struct PairFigures {
    payload_bytes: u64,
    /// Packets the client sent (data) and the server sent (mostly ACKs).
    data_packets: u64,
    ack_packets: u64,
    client_ns: u64,
    server_ns: u64,
    wall_ns: u64,
    /// Wall time asleep because neither side had anything to do (waiting for a timer).
    idle_ns: u64,
    /// CPU time of the process over the same span: with other jobs on the
    /// machine, wall time spent preempted is not the engine's cost.
    cpu_ns: u64,
    allocations: u64,
    /// Payload per subflow (sender's count), for the MPTCP run.
    subflow_bytes: Vec<u64>,
}

impl PairFigures {
    fn gbps(bytes: u64, ns: f64) -> f64 {
        bytes as f64 * 8.0 / ns.max(1.0)
    }
    /// Share of the busy wall time the process was on a CPU (1 on a quiet machine).
    fn on_cpu(&self) -> f64 {
        let busy = self.wall_ns.saturating_sub(self.idle_ns).max(1) as f64;
        (self.cpu_ns as f64 / busy).min(1.0)
    }
    /// A side's time, less the share it spent preempted.
    fn client_cpu_ns(&self) -> f64 {
        self.client_ns as f64 * self.on_cpu()
    }
    fn server_cpu_ns(&self) -> f64 {
        self.server_ns as f64 * self.on_cpu()
    }
    fn client_gbps(&self) -> f64 {
        Self::gbps(self.payload_bytes, self.client_cpu_ns())
    }
    fn server_gbps(&self) -> f64 {
        Self::gbps(self.payload_bytes, self.server_cpu_ns())
    }
    /// Both sides on one core.
    fn both_gbps(&self) -> f64 {
        Self::gbps(
            self.payload_bytes,
            self.client_cpu_ns() + self.server_cpu_ns(),
        )
    }
    fn packets(&self) -> u64 {
        self.data_packets + self.ack_packets
    }
    /// Each side handles every packet once (sends or receives it).
    fn client_ns_per_packet(&self) -> f64 {
        self.client_cpu_ns() / self.packets().max(1) as f64
    }
    fn server_ns_per_packet(&self) -> f64 {
        self.server_cpu_ns() / self.packets().max(1) as f64
    }
    fn client_ns_per_segment(&self) -> f64 {
        self.client_cpu_ns() / self.data_packets.max(1) as f64
    }
    fn server_ns_per_segment(&self) -> f64 {
        self.server_cpu_ns() / self.data_packets.max(1) as f64
    }
    fn allocations_per_packet(&self) -> f64 {
        self.allocations as f64 / self.packets().max(1) as f64
    }
}

/// Drives `client` -> `server` until `warmup + measured` payload bytes have
/// been read by the server; figures cover the last `measured` bytes.
fn run_pair<C, S>(
    mut client: C,
    mut server: S,
    warmup: u64,
    measured: u64,
) -> Result<(PairFigures, C, S), String>
where
    C: Engine + ByteStream,
    S: Engine + ByteStream,
{
    // One period of the test pattern, its start repeated after it: a window
    // of CHUNK bytes at any offset is the periodic stream's next bytes.
    let mut pattern = mptcp_engine::app::Pattern::STREAM.bytes(0, PERIOD);
    pattern.extend_from_within(..CHUNK);
    let mut sink = vec![0u8; 4 * CHUNK];
    let mut down = Batch::new();
    let mut up = Batch::new();
    let mut f = PairFigures::default();
    let total = warmup + measured;
    let (mut sent, mut received) = (0u64, 0u64);
    let start = WallInstant::now();
    let mut measuring_since = None;
    let mut idle_rounds = 0u32;
    let mut cpu_start = 0;
    let deadline = Duration::from_secs(120);
    while received < total {
        let wall = start.elapsed();
        if wall > deadline {
            return Err(format!(
                "stuck: {received} of {total} bytes after {deadline:?}"
            ));
        }
        let now = Instant::ZERO + wall;
        let measuring = measuring_since.is_some();

        // Client: the application writes, the engine emits a batch.
        let t0 = WallInstant::now();
        loop {
            let at = (sent % PERIOD as u64) as usize;
            let n = client.send(&pattern[at..at + CHUNK]);
            sent += n as u64;
            if n < CHUNK {
                break;
            }
        }
        timers(&mut client, now);
        down.fill(&mut client, now);
        let t1 = WallInstant::now();

        // Server: takes the batch, the application reads, the engine answers.
        down.deliver(&mut server, now);
        // The application reads into one buffer per round, checked below
        // outside the timed part.
        let mut got = 0usize;
        while got < sink.len() {
            let n = server.recv(&mut sink[got..]);
            if n == 0 {
                break;
            }
            got += n;
        }
        timers(&mut server, now);
        up.fill(&mut server, now);
        let t2 = WallInstant::now();

        // Client: takes the answers.
        up.deliver(&mut client, now);
        let t3 = WallInstant::now();

        let mut checked = 0;
        while checked < got {
            let at = ((received + checked as u64) % PERIOD as u64) as usize;
            let n = (got - checked).min(PERIOD - at);
            if sink[checked..checked + n] != pattern[at..at + n] {
                return Err(format!(
                    "the bytes read at offset {} differ from those sent",
                    received + checked as u64
                ));
            }
            checked += n;
        }
        received += got as u64;
        let active = down.payload() + up.payload() + got > 0;
        idle_rounds = if active { 0 } else { idle_rounds + 1 };
        if idle_rounds > 0 && idle_rounds.is_multiple_of(1024) {
            // Nothing moving (a timer is due later): let real time pass cheaply.
            let t = WallInstant::now();
            std::thread::sleep(Duration::from_micros(50));
            if measuring {
                f.idle_ns += t.elapsed().as_nanos() as u64;
            }
        }
        if measuring {
            f.client_ns += (t1 - t0 + (t3 - t2)).as_nanos() as u64;
            f.server_ns += (t2 - t1).as_nanos() as u64;
            f.data_packets += down.payload() as u64;
            f.ack_packets += up.payload() as u64;
            f.payload_bytes += got as u64;
        } else if received >= warmup {
            measuring_since = Some(WallInstant::now());
            cpu_start = process_cpu_ns();
            COUNTING.store(true, Relaxed);
            ALLOCATIONS.store(0, Relaxed);
        }
    }
    COUNTING.store(false, Relaxed);
    f.allocations = ALLOCATIONS.load(Relaxed);
    f.cpu_ns = process_cpu_ns().saturating_sub(cpu_start);
    f.wall_ns = measuring_since.map_or(0, |t| t.elapsed().as_nanos() as u64);
    Ok((f, client, server))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn mptcp_pair() -> (MptcpEndpoint, MptcpEndpoint) {
    let locals = |host: u8| -> Vec<LocalAddr> {
        (0..2)
            .map(|p| LocalAddr {
                ip: ip(&format!("10.0.{p}.{host}")),
                path: p,
                signal: false,
            })
            .collect()
    };
    let cfg = MptcpConfig::default();
    let client = MptcpEndpoint::client(
        cfg.clone(),
        &locals(1),
        40000,
        SocketAddr::new(ip("10.0.0.2"), 5201),
        Instant::ZERO,
    );
    let server = MptcpEndpoint::server(cfg, &locals(2), 5201);
    (client, server)
}

fn tcp_pair() -> (TcpEndpoint, TcpEndpoint) {
    let cfg = Config::default();
    let client = TcpEndpoint::client(
        cfg.clone(),
        SocketAddr::new(ip("10.0.0.1"), 40000),
        SocketAddr::new(ip("10.0.0.2"), 5201),
        Instant::ZERO,
    );
    let server = TcpEndpoint::listen(cfg, SocketAddr::new(ip("10.0.0.2"), 5201));
    (client, server)
}

fn run_mptcp(warmup: u64, measured: u64) -> Result<PairFigures, String> {
    let (c, s) = mptcp_pair();
    let (mut f, c, _s) = run_pair(c, s, warmup, measured)?;
    if let Some(conn) = c.connection() {
        let ids: Vec<_> = conn.subflows().map(|i| i.id).collect();
        f.subflow_bytes = ids
            .into_iter()
            .filter_map(|id| conn.subflow_stats(id).map(|s| s.bytes_sent))
            .collect();
    }
    Ok(f)
}

fn run_tcp(warmup: u64, measured: u64) -> Result<PairFigures, String> {
    let (c, s) = tcp_pair();
    run_pair(c, s, warmup, measured).map(|(f, _, _)| f)
}

// ---- primitives ----

/// ns per call of the per-segment primitives on 1460-byte payloads: the
/// Internet checksum, and a copy out of an 8 MiB ring (as from a send buffer
/// into a frame: the source is mostly not in L1/L2).
fn primitives() -> (f64, f64) {
    const PAYLOAD: usize = 1460;
    let ring = mptcp_engine::app::Pattern::STREAM.bytes(0, 8 << 20);
    let mut frame = [0u8; PAYLOAD];
    let n = 200_000usize;
    let start = WallInstant::now();
    let mut sum = 0u64;
    for i in 0..n {
        let at = (i * PAYLOAD) % (ring.len() - PAYLOAD);
        sum = sum.wrapping_add(mptcp_engine::wire::checksum::accumulate(
            0,
            std::hint::black_box(&ring[at..at + PAYLOAD]),
        ));
    }
    let checksum_ns = start.elapsed().as_nanos() as f64 / n as f64;
    std::hint::black_box(sum);
    let start = WallInstant::now();
    for i in 0..n {
        let at = (i * PAYLOAD) % (ring.len() - PAYLOAD);
        frame.copy_from_slice(std::hint::black_box(&ring[at..at + PAYLOAD]));
        std::hint::black_box(&mut frame);
    }
    let copy_ns = start.elapsed().as_nanos() as f64 / n as f64;
    (checksum_ns, copy_ns)
}

// ---- the simulator's speed ----

struct SimFigure {
    simulated_s: f64,
    wall_s: f64,
    goodput_bps: f64,
    bytes: u64,
    spec: String,
}

fn run_sim(bytes: u64) -> Result<SimFigure, String> {
    use mptcp_sim::runner::{run_with, Hooks, Outcome, SimConfig};
    use mptcp_sim::spec::parse_path_spec;
    let specs = ["rate=1gbit,delay=10ms", "rate=500mbit,delay=20ms"];
    let paths = specs
        .iter()
        .map(|s| parse_path_spec(s).map_err(|e| e.0))
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = SimConfig::new(paths, bytes, 1);
    let mut factory = mptcp_sim::MptcpFactory::default();
    let start = WallInstant::now();
    let report = run_with(&cfg, &mut factory, Hooks::default());
    let wall = start.elapsed();
    if report.outcome != Outcome::Complete || !report.byte_exact {
        return Err(format!(
            "simulated transfer {}: byte-exact {}",
            report.outcome.as_str(),
            report.byte_exact
        ));
    }
    Ok(SimFigure {
        simulated_s: report.duration.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        goodput_bps: report.goodput_bps,
        bytes,
        spec: specs.join(" + "),
    })
}

// ---- output ----

fn median_by(mut v: Vec<PairFigures>, key: impl Fn(&PairFigures) -> f64) -> Option<PairFigures> {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    (!v.is_empty()).then(|| v.swap_remove(v.len() / 2))
}

fn pair_json(f: &PairFigures) -> serde_json::Value {
    serde_json::json!({
        "payload_bytes": f.payload_bytes,
        "data_packets": f.data_packets,
        "ack_packets": f.ack_packets,
        "acks_per_data_packet": f.ack_packets as f64 / f.data_packets.max(1) as f64,
        "client_gbps_per_core": f.client_gbps(),
        "server_gbps_per_core": f.server_gbps(),
        "both_sides_one_core_gbps": f.both_gbps(),
        "client_ns_per_packet": f.client_ns_per_packet(),
        "server_ns_per_packet": f.server_ns_per_packet(),
        "client_ns_per_data_packet": f.client_ns_per_segment(),
        "server_ns_per_data_packet": f.server_ns_per_segment(),
        "on_cpu_share": f.on_cpu(),
        "idle_seconds": f.idle_ns as f64 / 1e9,
        "allocations": f.allocations,
        "allocations_per_packet": f.allocations_per_packet(),
        "subflow_bytes_sent": f.subflow_bytes,
    })
}

fn print_pair(name: &str, f: &PairFigures) {
    println!("{name}");
    println!(
        "  payload per core:   sender {:6.2} Gbit/s   receiver {:6.2} Gbit/s   (both on one core {:.2})",
        f.client_gbps(),
        f.server_gbps(),
        f.both_gbps()
    );
    println!(
        "  ns per packet:      sender {:6.0}          receiver {:6.0}          ({} data + {} ACK packets, {:.2} ACKs per data packet)",
        f.client_ns_per_packet(),
        f.server_ns_per_packet(),
        f.data_packets,
        f.ack_packets,
        f.ack_packets as f64 / f.data_packets.max(1) as f64
    );
    println!(
        "  ns per data packet: sender {:6.0}          receiver {:6.0}",
        f.client_ns_per_segment(),
        f.server_ns_per_segment()
    );
    println!(
        "  time:               on a CPU {:.0}% of the busy wall time (per-side figures count CPU time); {:.2} s idle waiting for timers",
        f.on_cpu() * 100.0,
        f.idle_ns as f64 / 1e9
    );
    println!(
        "  allocations:        {} in steady state ({:.4} per packet)",
        f.allocations,
        f.allocations_per_packet()
    );
    if !f.subflow_bytes.is_empty() {
        let total: u64 = f.subflow_bytes.iter().sum::<u64>().max(1);
        let shares: Vec<String> = f
            .subflow_bytes
            .iter()
            .map(|b| format!("{:.0}%", *b as f64 * 100.0 / total as f64))
            .collect();
        println!(
            "  subflows:           {} ({} of the whole run's payload)",
            f.subflow_bytes.len(),
            shares.join(" / ")
        );
    }
}

struct Args {
    mib: u64,
    runs: usize,
    sim_mib: u64,
    json: bool,
    /// Run only this pair ("mptcp" or "tcp"), e.g. to profile it.
    only: Option<String>,
}

const USAGE: &str = "usage: mptcp-bench [--mib N] [--runs N] [--sim-mib N] [--json]
  --mib N      payload MiB measured per run after a 64 MiB warm-up (default 1024)
  --runs N     runs per figure, alternating MPTCP and TCP; the median is shown (default 3)
  --sim-mib N  bytes of the simulated two-path transfer (default 256; 0 skips it)
  --only P     run only the mptcp or the tcp pair (to profile one)
  --json       one JSON object instead of the table";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mib: 1024,
        runs: 3,
        sim_mib: 256,
        json: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} wants a number\n{USAGE}"))
        };
        match arg.as_str() {
            "--mib" => a.mib = num("--mib")?.max(1),
            "--runs" => a.runs = num("--runs")?.max(1) as usize,
            "--sim-mib" => a.sim_mib = num("--sim-mib")?,
            "--json" => a.json = true,
            "--only" => match it.next().as_deref() {
                Some(w @ ("mptcp" | "tcp")) => a.only = Some(w.to_string()),
                _ => return Err(format!("--only wants mptcp or tcp\n{USAGE}")),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mptcp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let args = parse_args()?;
    if cfg!(debug_assertions) && !args.json {
        println!("(debug build: figures mean little; use --release)");
    }
    let warmup = 64u64 << 20;
    let measured = args.mib << 20;
    let (mut m, mut t) = (Vec::new(), Vec::new());
    let want = |p: &str| args.only.as_deref().is_none_or(|o| o == p);
    for _ in 0..args.runs {
        if want("tcp") {
            t.push(run_tcp(warmup, measured).map_err(|e| format!("TCP: {e}"))?);
        }
        if want("mptcp") {
            m.push(run_mptcp(warmup, measured).map_err(|e| format!("MPTCP: {e}"))?);
        }
    }
    let allocations: u64 = m.iter().chain(&t).map(|f| f.allocations).sum();
    // The median run by the receiver's rate (the side the targets name first).
    let m = median_by(m, PairFigures::server_gbps);
    let t = median_by(t, PairFigures::server_gbps);
    let (checksum_ns, copy_ns) = primitives();
    let sim = (args.sim_mib > 0)
        .then(|| run_sim(args.sim_mib << 20))
        .transpose()?;
    if args.json {
        let mut v = serde_json::json!({
            "runs": args.runs,
            "measured_bytes_per_run": measured,
            "mptcp_2_subflows": m.as_ref().map(pair_json),
            "tcp": t.as_ref().map(pair_json),
            "checksum_1460_bytes_ns": checksum_ns,
            "copy_1460_bytes_ns": copy_ns,
        });
        if let Some(s) = &sim {
            v["simulator"] = serde_json::json!({
                "paths": s.spec,
                "bytes": s.bytes,
                "simulated_seconds": s.simulated_s,
                "wall_seconds": s.wall_s,
                "simulated_seconds_per_wall_second": s.simulated_s / s.wall_s,
                "goodput_bps": s.goodput_bps,
            });
        }
        println!("{v}");
    } else {
        println!(
            "engine core: two endpoints in memory, one thread, batches of {BATCH}, MSS 1460 (MTU 1500); \
             {} MiB measured per run after a 64 MiB warm-up; median of {} runs",
            args.mib, args.runs
        );
        if let Some(m) = &m {
            print_pair("MPTCP, 2 subflows", m);
        }
        if let Some(t) = &t {
            print_pair("plain TCP", t);
        }
        println!(
            "primitives per 1460-byte segment: checksum {checksum_ns:.0} ns, copy out of an 8 MiB ring {copy_ns:.0} ns (wall time)"
        );
        if let Some(s) = &sim {
            println!(
                "simulator: {} MiB over {}: {:.2} simulated s in {:.2} wall s = {:.2} simulated s per wall s ({:.0} Mbit/s simulated goodput)",
                s.bytes >> 20,
                s.spec,
                s.simulated_s,
                s.wall_s,
                s.simulated_s / s.wall_s,
                s.goodput_bps / 1e6
            );
        }
    }
    if allocations > 0 {
        return Err(format!(
            "{allocations} allocations in steady state (must be 0)"
        ));
    }
    Ok(())
}
