//! `mptcp-user serve`: terminate MPTCP (and plain TCP, by fallback) on
//! interfaces through XDP + AF_XDP, with an application per connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use mptcp_control::stream::{bridge, RING};
use mptcp_control::{ControlOptions, ControlPlane, MptcpListener, WorkerSide};
use mptcp_datapath::afxdp::XskConfig;
use mptcp_datapath::apps::convert::{ConvertConn, Converter};
use mptcp_datapath::apps::iperf3::{Iperf3Conn, Iperf3Server};
use mptcp_datapath::apps::relay::{AllowList, Users};
use mptcp_datapath::apps::socks5::{Socks5Conn, Socks5Proxy};
use mptcp_datapath::apps::{SubflowFigures, Subflows};
use mptcp_datapath::forward::Forward;
use mptcp_datapath::signals::stop_on_signals;
use mptcp_datapath::worker::Worker;
use mptcp_datapath::xdp::Ownership;
use mptcp_datapath::Datapath;
use mptcp_engine::app::{App, Discard, Echo, PatternSource};
use mptcp_engine::io::ByteStream;
use mptcp_engine::mptcp::{ConnHandle, Connection, LocalAddr, MptcpEndpoint};
use mptcp_engine::tcp::TcpEndpoint;
use mptcp_engine::time::Instant;

use super::engine_opts::EngineOptions;
use super::{
    accept_partial, check_interfaces, instance_stats, mptcp_config, require_root, reserve_port,
    tcp_config, EngineKind, PartialChecksum, StatsFile,
};

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
    /// An iperf3 server: a stock `iperf3 -c` (under `mptcpize run`, or
    /// iperf3 3.19's `-m`) measures the engine: -R, -P, --bidir, -t, -n,
    /// --json; per-subflow figures in the results' `mptcp_subflows` (and
    /// in `server_output_json` with --get-server-output).
    Iperf3,
    /// A SOCKS5 proxy (RFC 1928 CONNECT to IPv4, IPv6 and names; RFC 1929
    /// username/password from --users, or --no-auth), relaying to the
    /// destinations --allow lists over kernel TCP.
    Socks5,
    /// An RFC 8803 Transport Converter: each connection starts with a
    /// Convert message (in the SYN with TFO, or after it) naming the
    /// destination; relays to destinations --allow lists over kernel TCP.
    Convert,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Interfaces to serve on (repeat for several paths).
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// Address and port to accept connections on; repeat for several.
    /// `[::]:PORT` takes IPv4 and IPv6 clients on every address of the
    /// interfaces (as a Linux socket bound to :: does), `0.0.0.0:PORT`
    /// IPv4 ones only, a specific address only itself.
    #[arg(long, required = true, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Further local addresses to announce to MPTCP clients (ADD_ADDR).
    /// With --behind-lb, every address of the interfaces by default.
    #[arg(long)]
    pub announce: Vec<IpAddr>,
    /// This server is one of many behind an L4 load balancer with this
    /// virtual address (repeat for several; PORT defaults to each --listen
    /// port). Connections to the VIP are accepted as they arrive from a
    /// direct-server-return balancer (IPVS-DR, Katran: the VIP is the
    /// destination) and, through --listen, from a DNAT one (IPVS-NAT,
    /// netfilter, cloud balancers: the destination is rewritten to this
    /// server). The MP_CAPABLE SYN/ACK sets the C flag (RFC 8684 3.1), so
    /// clients open no subflow to the VIP (the balancer could send it to
    /// another server); instead they join the addresses this server
    /// announces with ADD_ADDR (--announce; by default every address of
    /// the interfaces, which must be reachable from the clients directly).
    /// See docs/behind-lb.md.
    #[arg(long, value_name = "VIP[:PORT]", value_parser = parse_vip)]
    pub behind_lb: Vec<Vip>,
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: Mode,
    /// Backend for --mode forward.
    #[arg(long)]
    pub to: Option<SocketAddr>,
    #[command(flatten)]
    pub engine_opts: EngineOptions,
    /// MPTCP versions to answer in: a client's SYN in one of them gets that
    /// version (1: RFC 8684; 0: RFC 6824, older iOS, Linux 0.9x and
    /// OpenMPTCProuter clients), any other plain TCP.
    #[arg(long, value_name = "LIST", default_value = "1,0", value_parser = mptcp_engine::mptcp::Versions::parse)]
    pub mptcp_versions: mptcp_engine::mptcp::Versions,
    #[command(flatten)]
    pub datapath_opts: super::datapath_opts::DatapathOptions,
    #[command(flatten)]
    pub worker_opts: super::datapath_opts::WorkerOptions,
    /// MPTCP by default (plain TCP clients are served by fallback).
    #[arg(long, value_enum, default_value = "mptcp")]
    pub engine: EngineKind,
    /// Partial TCP checksums (MPTCP engine): accepted on veth by default.
    #[arg(long, value_enum, default_value = "auto")]
    pub partial_checksum: PartialChecksum,
    /// Credentials for --mode socks5: one `user:password` a line.
    #[arg(long, value_name = "FILE")]
    pub users: Option<std::path::PathBuf>,
    /// --mode socks5 without authentication (anyone who reaches the port
    /// may use the proxy, within --allow).
    #[arg(long, conflicts_with = "users")]
    pub no_auth: bool,
    /// Destinations the proxies may connect to (repeat; `10.0.0.0/8`,
    /// `fd00::/8`, or one address). None: every destination is refused.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,
    /// Stop after this many connections (0 = serve until signalled).
    #[arg(long, default_value_t = 0)]
    pub connections: u64,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (MPTCP engine):
    /// the counters of `stats`, plus connection and subflow gauges.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Connections held at most (MPTCP engine); SYNs beyond are answered
    /// with a RST (MP_TCPRST "lack of resources") and counted.
    #[arg(long, default_value_t = 1 << 20, value_name = "N")]
    pub max_connections: usize,
    /// Buffer memory (send and receive data) of the instance, e.g. 512M or
    /// 2G (MPTCP engine; 0 = no limit), shared equally by the workers. Near
    /// the limit, advertised windows shrink so peers send less; nothing fails.
    #[arg(long, default_value = "0", value_parser = parse_size, value_name = "BYTES")]
    pub max_memory: u64,
    /// Handshakes in progress at most (MPTCP engine); beyond, SYNs are
    /// answered with SYN cookies. MP_JOIN SYNs never count.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub max_half_open: usize,
    /// Receive windows of all connections together, at most (MPTCP
    /// engine): what peers may send before hearing from us, so a burst of
    /// connections opening at once fits the AF_XDP RX ring. Each
    /// connection gets a fair share and one MSS at least. `auto`: half of
    /// each worker's RX ring in 1460-byte frames (24M a worker); a number
    /// is shared out among the workers; 0: no bound.
    #[arg(long, default_value = "auto", value_parser = parse_budget, value_name = "BYTES")]
    pub window_budget: WindowBudget,
}

/// `--window-budget`: sized from the RX ring (`auto`), or given.
#[derive(Clone, Copy, Debug)]
pub struct WindowBudget(Option<u64>);

fn parse_budget(s: &str) -> std::result::Result<WindowBudget, String> {
    if s == "auto" {
        return Ok(WindowBudget(None));
    }
    parse_size(s)
        .map(|b| WindowBudget(Some(b)))
        .map_err(|e| format!("{e}, or auto (half the RX ring)"))
}

/// A load balancer's virtual address; no port: each --listen port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vip {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// `10.0.0.100`, `10.0.0.100:80`, `fd00::100` or `[fd00::100]:80`.
pub fn parse_vip(s: &str) -> std::result::Result<Vip, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Vip { ip, port: None });
    }
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(Vip {
            ip: a.ip(),
            port: Some(a.port()),
        }),
        _ => Err(format!(
            "{s:?} is not VIP or VIP:PORT (10.0.0.100, 10.0.0.100:80, [fd00::100]:80)"
        )),
    }
}

impl Vip {
    /// The VIP on `port`, or on every port of `listen`.
    fn sockets(&self, listen: &[SocketAddr]) -> Vec<SocketAddr> {
        match self.port {
            Some(p) => vec![SocketAddr::new(self.ip, p)],
            None => listen
                .iter()
                .map(|l| SocketAddr::new(self.ip, l.port()))
                .collect(),
        }
    }
}

/// A byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 65536, 512K, 64M or 2G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
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
    Discard(Discard),
    Forward(Box<Forward>),
    Source(PatternSource),
    Iperf3(Box<Iperf3Conn>),
    Socks5(Box<Socks5Conn>),
    Convert(Box<ConvertConn>),
    /// The backend refused: the connection is closed at once.
    Refused,
}

impl<E: ByteStream + Subflows> App<E> for ServeApp {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        match self {
            ServeApp::Echo(a) => a.poll(now, engine),
            ServeApp::Discard(a) => a.poll(now, engine),
            ServeApp::Forward(a) => a.poll(now, engine),
            ServeApp::Source(a) => a.poll(now, engine),
            ServeApp::Iperf3(a) => a.poll(now, engine),
            ServeApp::Socks5(a) => a.poll(now, engine),
            ServeApp::Convert(a) => a.poll(now, engine),
            ServeApp::Refused => {
                engine.close();
                (0, engine.is_closed())
            }
        }
    }
    fn wake_fds(&self, out: &mut Vec<(std::os::fd::RawFd, i16)>) {
        match self {
            ServeApp::Forward(a) => App::<E>::wake_fds(a.as_ref(), out),
            ServeApp::Socks5(a) => App::<E>::wake_fds(a.as_ref(), out),
            ServeApp::Convert(a) => App::<E>::wake_fds(a.as_ref(), out),
            _ => {}
        }
    }
}

/// What the connections of one worker share (the iperf3 test in progress).
struct AppContext {
    iperf3: std::rc::Rc<std::cell::RefCell<Iperf3Server>>,
    socks5: Option<std::rc::Rc<std::cell::RefCell<Socks5Proxy>>>,
    convert: std::rc::Rc<std::cell::RefCell<Converter>>,
}

impl AppContext {
    /// Checks the front end's options and says at start-up what it will do.
    fn new(args: &ServeArgs) -> Result<AppContext> {
        AppContext::build(args, false)
    }

    /// `quiet`: the options were checked and announced already (workers after the first).
    fn build(args: &ServeArgs, quiet: bool) -> Result<AppContext> {
        let say = |m: String| {
            if !quiet {
                eprintln!("{m}");
            }
        };
        let allow = AllowList::parse(&args.allow).map_err(anyhow::Error::msg)?;
        let mut socks5 = None;
        if args.mode == Mode::Socks5 {
            let users = match (&args.users, args.no_auth) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("--users {}: {e}", path.display()))?;
                    let users = Users::parse(&text)
                        .map_err(|e| anyhow::anyhow!("--users {}: {e}", path.display()))?;
                    say(format!(
                        "socks5: {} user(s) from {}",
                        users.len(),
                        path.display()
                    ));
                    Some(users)
                }
                (None, true) => {
                    say("socks5: no authentication (--no-auth)".into());
                    None
                }
                (None, false) => {
                    bail!("--mode socks5 needs --users FILE (user:password lines) or --no-auth")
                }
            };
            socks5 = Some(Socks5Proxy::shared(allow.clone(), users)?);
        }
        if matches!(args.mode, Mode::Socks5 | Mode::Convert) {
            if allow.is_empty() {
                say(format!(
                    "{:?}: no --allow given: every destination will be refused (add --allow CIDR)",
                    args.mode
                ));
            } else {
                say(format!(
                    "{:?}: destinations allowed: {}",
                    args.mode,
                    args.allow.join(", ")
                ));
            }
        }
        Ok(AppContext {
            iperf3: Iperf3Server::shared(),
            socks5,
            convert: Converter::shared(allow),
        })
    }

    /// The front ends' counters, for the stats file.
    fn stats(&self) -> serde_json::Value {
        let i = self.iperf3.borrow().counters.clone();
        let mut v = json!({"iperf3": {
            "tests": i.tests, "aborted": i.aborted, "refused": i.refused,
            "bytes_received": i.bytes_received, "bytes_sent": i.bytes_sent,
        }});
        if let Some(p) = &self.socks5 {
            let c = p.borrow().counters.clone();
            v["socks5"] = json!({
                "connections": c.connections, "auth_failed": c.auth_failed,
                "malformed": c.malformed, "not_allowed": c.not_allowed,
                "resolve_failed": c.resolve_failed, "connect_failed": c.connect_failed,
                "resolver_busy": c.resolver_busy, "relayed": c.relayed,
                "bytes_up": c.bytes_up, "bytes_down": c.bytes_down,
            });
        }
        let c = self.convert.borrow().counters.clone();
        v["convert"] = json!({
            "connections": c.connections, "malformed": c.malformed, "info": c.info,
            "not_authorized": c.not_authorized, "connect_failed": c.connect_failed,
            "relayed": c.relayed, "bytes_up": c.bytes_up, "bytes_down": c.bytes_down,
        });
        v
    }
}

fn new_app(args: &ServeArgs, ctx: &AppContext) -> ServeApp {
    match args.mode {
        Mode::Iperf3 => ServeApp::Iperf3(Box::new(Iperf3Server::connection(&ctx.iperf3))),
        Mode::Socks5 => match &ctx.socks5 {
            Some(p) => ServeApp::Socks5(Box::new(Socks5Proxy::connection(p))),
            None => ServeApp::Refused,
        },
        Mode::Convert => ServeApp::Convert(Box::new(Converter::connection(&ctx.convert))),
        Mode::Echo => ServeApp::Echo(Echo::default()),
        Mode::Discard => ServeApp::Discard(Discard::default()),
        Mode::Source => ServeApp::Source(PatternSource::default()),
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
    let vips: Vec<IpAddr> = args.behind_lb.iter().map(|v| v.ip).collect();
    let announce = announced(args, &local_addrs, &vips)?;
    let mut owned: Vec<IpAddr> = Vec::new();
    for l in &args.listen {
        let ip = l.ip();
        if ip.is_unspecified() {
            // [::] is dual stack; 0.0.0.0 is IPv4 only.
            owned.extend(local_addrs.iter().filter(|a| ip.is_ipv6() || a.is_ipv4()));
        } else if local_addrs.contains(&ip) {
            owned.push(ip);
            owned.extend(announce.iter().copied());
        } else {
            bail!(
                "--listen {l}: address {ip} is not on {} (a load balancer's VIP goes in --behind-lb {l})",
                args.ifaces.join(" or ")
            );
        }
    }
    if owned.is_empty() {
        bail!("no address of that family on {}", args.ifaces.join(", "));
    }
    // A DSR balancer delivers with the VIP as destination (usually not on
    // our interfaces: no kernel port to reserve there).
    owned.extend(vips.iter().copied());
    owned.sort();
    owned.dedup();
    // Each listener's port is kept from the kernel's own sockets meanwhile
    // (a socket bound to :: holds the IPv4 port too).
    let _reservations = args
        .listen
        .iter()
        .map(|l| reserve_port(*l))
        .collect::<Result<Vec<_>>>()?;
    let ctx = AppContext::new(args)?;
    if args.engine == EngineKind::Tcp && args.worker_opts.workers.is_some_and(|n| n > 1) {
        bail!("--engine tcp serves one connection at a time on one worker: drop --workers");
    }
    if args.engine == EngineKind::Mptcp {
        return serve_mptcp(args, owned, &announce, &ctx);
    }
    if !args.behind_lb.is_empty() {
        bail!("--behind-lb needs the MPTCP engine (drop --engine tcp)");
    }
    let [listen] = args.listen[..] else {
        bail!("the plain TCP engine serves one --listen (the MPTCP engine serves several)");
    };
    let ownership = Ownership {
        addresses: owned,
        listen_ports: vec![listen.port()],
        client_ports: None,
    };
    let stop = stop_on_signals();
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
        listen, args.mode
    );
    let mut cfg = tcp_config(&paths, listen.is_ipv6());
    cfg.accept_syn_data = args.mode == Mode::Convert;
    let mut worker = Worker::new(TcpEndpoint::listen(cfg.clone(), listen), paths);
    args.datapath_opts.apply(&mut worker)?;
    let stats_file = StatsFile::create();
    let mut connections = 0u64;
    let mut app: Option<ServeApp> = None;
    let mut last_dump = std::time::Instant::now() - Duration::from_secs(2);
    let mut wake = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // The backend is dialled when a client arrives, not before.
        if app.is_none() && worker.engine.subflow().is_some() {
            app = Some(new_app(args, &ctx));
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
            worker.replace_engine(TcpEndpoint::listen(cfg.clone(), listen));
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
            wake.clear();
            if let Some(a) = app.as_ref() {
                App::<TcpEndpoint>::wake_fds(a, &mut wake);
            }
            worker.sleep_with(&wake);
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

/// One connection of the endpoint seen as a byte stream.
struct ConnStream<'a>(&'a mut Connection);

impl Subflows for ConnStream<'_> {
    fn subflow_figures(&self, out: &mut Vec<SubflowFigures>) {
        self.0.subflow_figures(out)
    }
}

impl ByteStream for ConnStream<'_> {
    fn send(&mut self, data: &[u8]) -> usize {
        self.0.send(data)
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.0.recv(buf)
    }
    fn consume(&mut self, max: usize) -> usize {
        self.0.consume(max)
    }
    fn can_read_slices(&self) -> bool {
        true
    }
    fn read_slices(&mut self, f: &mut dyn FnMut(&[std::io::IoSlice<'_>]) -> usize) -> usize {
        self.0.read_slices(f)
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
    ctx: &'a AppContext,
    apps: Vec<Option<Slot>>,
    /// Connections whose application waits on more than its connection,
    /// polled every step: a descriptor (a backend socket: forward, socks5,
    /// convert), a resolver's answer or a connect deadline (the proxies),
    /// or the test state the connections of an iperf3 test share.
    with_fd: Vec<ConnHandle>,
    closed: u64,
    /// Connections closed by every worker (for --connections).
    total: &'a AtomicU64,
}

impl PerConnection<'_> {
    fn closed_one(&mut self) {
        self.closed += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn poll_one(&mut self, now: Instant, engine: &mut MptcpEndpoint, h: ConnHandle) -> usize {
        let i = h.slot as usize;
        if self.apps.len() <= i {
            self.apps.resize_with(i + 1, || None);
        }
        let Some(conn) = engine.get_mut(h) else {
            // Gone (reaped after a reset) before its application saw it.
            if let Some(s) = self.apps[i].take_if(|s| s.gen == h.gen) {
                if !s.done {
                    self.closed_one();
                }
            }
            return 0;
        };
        let slot = match &mut self.apps[i] {
            Some(s) if s.gen == h.gen => s,
            other => {
                if other.as_ref().is_some_and(|s| !s.done) {
                    self.closed += 1;
                    self.total.fetch_add(1, Ordering::Relaxed);
                }
                let app = new_app(self.args, self.ctx);
                if !matches!(
                    app,
                    ServeApp::Echo(_)
                        | ServeApp::Discard(_)
                        | ServeApp::Source(_)
                        | ServeApp::Refused
                ) {
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
            let n = self.total.fetch_add(1, Ordering::Relaxed) + 1;
            eprintln!("connection {n} closed");
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
        while let Some(h) = engine.poll_app_ready() {
            work += self.poll_one(now, engine, h);
        }
        // Closed connections give their slots (and buffers) back; a reused
        // slot has a new generation, so its new application starts fresh.
        engine.reap_closed();
        let enough = self.args.connections != 0
            && self.total.load(Ordering::Relaxed) >= self.args.connections;
        (work, enough)
    }

    /// Every forwarded connection's backend wakes the worker, not just the first.
    fn wake_fds(&self, out: &mut Vec<(std::os::fd::RawFd, i16)>) {
        for h in &self.with_fd {
            if let Some(Some(slot)) = self.apps.get(h.slot as usize) {
                App::<ConnStream<'_>>::wake_fds(&slot.app, out);
            }
        }
    }
}

/// The listeners for messages: `10.0.0.1:80, [::]:8080`.
fn listeners(l: &[SocketAddr]) -> String {
    l.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The addresses to announce: --announce, checked; behind a load balancer
/// every interface address (not a VIP) when none is given.
fn announced(args: &ServeArgs, local_addrs: &[IpAddr], vips: &[IpAddr]) -> Result<Vec<IpAddr>> {
    for a in &args.announce {
        if !local_addrs.contains(a) {
            bail!(
                "--announce {a}: address is not on {}",
                args.ifaces.join(" or ")
            );
        }
        if vips.contains(a) {
            bail!(
                "--announce {a}: that is the --behind-lb VIP; announce this server's own address"
            );
        }
    }
    if !args.announce.is_empty() || vips.is_empty() {
        return Ok(args.announce.clone());
    }
    let all: Vec<IpAddr> = local_addrs
        .iter()
        .copied()
        .filter(|a| !vips.contains(a) && !a.is_loopback() && !is_link_local(a))
        .collect();
    if all.is_empty() {
        bail!(
            "--behind-lb: no address of {} to announce; clients join this server at its own address (give --announce)",
            args.ifaces.join(", ")
        );
    }
    Ok(all)
}

/// fe80::/10: not reachable from clients behind a router.
fn is_link_local(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

fn serve_mptcp(
    args: &ServeArgs,
    owned: Vec<IpAddr>,
    announce: &[IpAddr],
    ctx: &AppContext,
) -> Result<()> {
    // Forward mode relays through one worker's stream API: one by default.
    let workers = match (args.mode, args.worker_opts.workers) {
        (Mode::Forward, None) => 1,
        _ => args.worker_opts.resolve(&args.ifaces)?,
    };
    if args.mode == Mode::Forward && workers > 1 {
        bail!("--mode forward relays through one worker's stream API: add --workers 1");
    }
    let vip_listen: Vec<SocketAddr> = args
        .behind_lb
        .iter()
        .flat_map(|v| v.sockets(&args.listen))
        .collect();
    let mut ports: Vec<u16> = args
        .listen
        .iter()
        .chain(&vip_listen)
        .map(|l| l.port())
        .collect();
    ports.sort();
    ports.dedup();
    let ownership = Ownership {
        addresses: owned.clone(),
        listen_ports: ports,
        client_ports: None,
    };
    let stop = stop_on_signals();
    let xsk = XskConfig::default();
    let (mut datapath, sets) = Datapath::open_workers(&args.ifaces, &ownership, xsk, workers)?;
    let mut locals = Vec::new();
    for ip in &owned {
        let path = args
            .ifaces
            .iter()
            .position(|i| mptcp_datapath::xdp::interface_addresses(i).is_ok_and(|a| a.contains(ip)))
            .unwrap_or(0);
        locals.push(LocalAddr {
            ip: *ip,
            path,
            signal: announce.contains(ip),
        });
    }
    let mut cfg = mptcp_config(
        &sets[0].paths,
        args.listen.iter().any(|l| l.is_ipv6()),
        &args.engine_opts,
    );
    cfg.server_versions = args.mptcp_versions;
    let (partial, partial_why) = accept_partial(args.partial_checksum, &args.ifaces);
    cfg.accept_partial_checksum = partial;
    // RFC 8803 clients put their Convert message in the SYN (TFO, no cookie).
    cfg.tcp.accept_syn_data = args.mode == Mode::Convert;
    cfg.max_connections = args.max_connections;
    cfg.max_half_open = args.max_half_open;
    cfg.deny_join_initial = !args.behind_lb.is_empty();
    // One SYN cookie secret and one ISN secret (ISNs and timestamp offsets
    // are hashed per tuple) for every worker: a cookie's ACK may reach
    // another worker's queue than its SYN did, and that worker must agree
    // with the SYN/ACK's sequence and timestamps.
    cfg.cookie_secret = Some(mptcp_engine::secret::random());
    cfg.tcp.isn_secret = mptcp_engine::secret::random();
    let new_engine = || {
        // Every engine its own key source: two workers drawing the same keys
        // would hand out the same tokens (and a join would reach the wrong one).
        let mut cfg = cfg.clone();
        cfg.secret = mptcp_engine::secret::random();
        let mut engine = MptcpEndpoint::new(cfg, &locals);
        for l in args.listen.iter().chain(&vip_listen) {
            engine.listen(*l);
        }
        engine
    };
    for (i, (p, m)) in sets[0].paths.iter().zip(&datapath.attach_modes).enumerate() {
        let queues: usize = sets.iter().map(|s| 1 + s.paths[i].extra_rx.len()).sum();
        eprintln!(
            "{}: XDP {:?} mode, AF_XDP {:?} mode, {} queue(s), MTU {}",
            p.iface,
            m,
            p.socket.mode(),
            queues,
            p.mtu
        );
    }
    eprintln!(
        "serving {} ({:?}) with the MPTCP engine on {workers} worker(s), partial TCP checksums {partial_why}; Ctrl-C to stop",
        listeners(&args.listen),
        args.mode
    );
    if !vip_listen.is_empty() {
        eprintln!(
            "behind a load balancer: VIP {}; SYN/ACKs set the C flag; clients join at {}",
            listeners(&vip_listen),
            announce
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // The control socket answers `stats`, `ctl` and /metrics from the
    // workers' own counters: no stats file for this instance.
    let (sides, plane) = ControlPlane::start_workers(
        "serve",
        &ControlOptions {
            socket: None,
            metrics: args.metrics,
        },
        workers,
    )?;
    eprintln!("control socket {}", plane.socket().display());
    if let Some(m) = plane.metrics_addr() {
        eprintln!("metrics at http://{m}/metrics");
    }
    // Workers are built here, so a bad option fails before any thread runs.
    let mut built = Vec::new();
    for set in sets {
        let mut worker = Worker::new(new_engine(), set.paths);
        if let Some(a) = set.affinity {
            worker.set_affinity(a);
        }
        args.datapath_opts.apply(&mut worker)?;
        built.push(worker);
    }
    // Each engine runs on its own thread: so does its buffer pool.
    let memory = args.max_memory / workers as u64;
    // A burst of connections must fit each worker's RX ring: their windows
    // together stay within a budget sized by it (a given one is shared out).
    let window_budget = match args.window_budget.0 {
        Some(total) => total / workers as u64,
        None => xsk.rx_window_budget(1460),
    };
    if args.mode == Mode::Forward {
        mptcp_engine::tcp::pool::configure(memory, 16 << 10);
        mptcp_engine::tcp::pool::set_window_budget(window_budget);
        let (Some(mut worker), Some(mut control)) = (built.pop(), sides.into_iter().next()) else {
            bail!("no worker");
        };
        // Backends are tokio TCP connections on a thread of their own,
        // never dialled or read inside the packet loop.
        let (mut bridge, listener) = bridge(plane.handle(), RING);
        let to = args
            .to
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let relays = spawn_relays(listener, to)?;
        let mut wake = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let (mut work, _) = worker.step(&mut bridge);
            work += control.poll(&mut worker, &datapath, bridge.closed);
            if args.connections != 0 && bridge.closed >= args.connections {
                break;
            }
            if work == 0 {
                wake.clear();
                wake.push((control.wake_fd(), libc::POLLIN));
                worker.sleep_with(&wake);
            }
        }
        drop(plane);
        drop(relays);
        datapath.detach_all()?;
        eprintln!("stopped; XDP detached from {}", args.ifaces.join(", "));
        return Ok(());
    }
    let total = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let shared = Shared {
        args,
        new_engine: &new_engine,
        total: &total,
        done: &done,
        stop,
        memory,
        window_budget,
        fault: fault_injection(),
    };
    let mut pairs = built.into_iter().zip(sides);
    let first = pairs.next();
    let finished = std::thread::scope(|scope| -> Result<Vec<Worker<MptcpEndpoint>>> {
        let mut handles = Vec::new();
        for (worker, side) in pairs {
            let shared = &shared;
            let name = format!("worker{}", side.index());
            let h = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    let ctx = AppContext::build(shared.args, true);
                    match ctx {
                        Ok(ctx) => run_worker(shared, worker, side, None, &ctx),
                        Err(e) => {
                            eprintln!("worker {}: {e:#}", side.index());
                            shared.done.store(true, Ordering::Relaxed);
                            worker
                        }
                    }
                })?;
            handles.push(h);
        }
        let mut finished = Vec::new();
        if let Some((worker, side)) = first {
            finished.push(run_worker(&shared, worker, side, Some(&datapath), ctx));
        }
        done.store(true, Ordering::Relaxed);
        // Every worker is joined before any socket goes: a frame one lent
        // another lives in the lender's UMEM.
        for h in handles {
            match h.join() {
                Ok(w) => finished.push(w),
                Err(_) => eprintln!("a worker thread died outside its restart loop"),
            }
        }
        Ok(finished)
    })?;
    drop(finished);
    drop(plane);
    datapath.detach_all()?;
    eprintln!("stopped; XDP detached from {}", args.ifaces.join(", "));
    Ok(())
}

/// What every worker of `serve` shares.
struct Shared<'a> {
    args: &'a ServeArgs,
    new_engine: &'a (dyn Fn() -> MptcpEndpoint + Sync),
    total: &'a AtomicU64,
    /// Set when --connections were served or a worker could not start.
    done: &'a AtomicBool,
    stop: &'a AtomicBool,
    /// Buffer memory per worker.
    memory: u64,
    /// Receive windows of a worker's connections together, at most.
    window_budget: u64,
    fault: Option<usize>,
}

/// `MPTCP_USER_FAULT_PANIC_WORKER=W`: worker W panics once, as soon as it
/// holds a connection (for tests of the restart; never set in production).
fn fault_injection() -> Option<usize> {
    std::env::var("MPTCP_USER_FAULT_PANIC_WORKER")
        .ok()?
        .parse()
        .ok()
}

/// One worker of `serve`: its loop, restarted with a fresh engine (its
/// connections reset) if it panics; the other workers go on. Returns the
/// worker, to be dropped once every worker has stopped.
fn run_worker(
    shared: &Shared<'_>,
    mut worker: Worker<MptcpEndpoint>,
    mut control: WorkerSide,
    datapath: Option<&Datapath>,
    ctx: &AppContext,
) -> Worker<MptcpEndpoint> {
    mptcp_engine::tcp::pool::configure(shared.memory, 16 << 10);
    mptcp_engine::tcp::pool::set_window_budget(shared.window_budget);
    let index = control.index();
    let mut fault = shared.fault == Some(index);
    loop {
        let mut app = PerConnection {
            args: shared.args,
            ctx,
            apps: Vec::new(),
            with_fd: Vec::new(),
            closed: 0,
            total: shared.total,
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve_loop(
                shared,
                &mut worker,
                &mut app,
                &mut control,
                datapath,
                &mut fault,
            )
        }));
        let Err(panic) = run else {
            return worker;
        };
        control.panics += 1;
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // Reset what can be reset (the engine may be inconsistent: a
        // second panic just skips to the fresh engine, whose answer to
        // the old connections' next segments is a RST).
        let reset = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let live: Vec<ConnHandle> = worker.engine.handles().collect();
            for h in &live {
                if let Some(c) = worker.engine.get_mut(*h) {
                    c.abort();
                }
            }
            // Send the RSTs, but take nothing new into this engine.
            worker.send_pending();
            live.len()
        }));
        eprintln!(
            "worker {index} panicked ({what}); {} of its connections reset, the worker starts afresh, the others go on",
            reset.map_or_else(|_| "none".to_string(), |n| n.to_string())
        );
        drop(app);
        worker.replace_engine((shared.new_engine)());
    }
}

fn serve_loop(
    shared: &Shared<'_>,
    worker: &mut Worker<MptcpEndpoint>,
    app: &mut PerConnection<'_>,
    control: &mut WorkerSide,
    datapath: Option<&Datapath>,
    fault: &mut bool,
) {
    let mut last_trim = std::time::Instant::now();
    let mut wake = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) && !shared.done.load(Ordering::Relaxed) {
        let (mut work, done) = worker.step(app);
        if done {
            shared.done.store(true, Ordering::Relaxed);
            break;
        }
        if *fault && worker.engine.connection_count() > 0 {
            *fault = false;
            panic!("fault injected by MPTCP_USER_FAULT_PANIC_WORKER");
        }
        work += control.poll_worker(worker, datapath, app.closed);
        if last_trim.elapsed() >= Duration::from_secs(1) {
            last_trim = std::time::Instant::now();
            control.apps = app.ctx.stats();
            // Give freed buffer memory back to the system (a burst of
            // connections may have taken much more than the pool keeps).
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        if work == 0 {
            wake.clear();
            app.wake_fds(&mut wake);
            wake.push((control.wake_fd(), libc::POLLIN));
            worker.sleep_with(&wake);
        }
    }
}

/// The tokio side of `--mode forward`: each accepted stream is relayed to
/// a TCP connection to `to` (copy both ways, half-closes passed on); a
/// refused backend closes the connection. Runs until the listener ends.
fn spawn_relays(
    mut listener: MptcpListener,
    to: SocketAddr,
) -> Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || {
            runtime.block_on(async move {
                while let Some(mut stream) = listener.accept().await {
                    tokio::spawn(async move {
                        let dial = tokio::time::timeout(
                            Duration::from_secs(5),
                            tokio::net::TcpStream::connect(to),
                        );
                        match dial.await {
                            Ok(Ok(mut backend)) => {
                                let _ = backend.set_nodelay(true);
                                if let Err(e) =
                                    tokio::io::copy_bidirectional(&mut stream, &mut backend).await
                                {
                                    eprintln!("connection {}: {e}", stream.token());
                                }
                            }
                            Ok(Err(e)) => eprintln!("backend {to}: {e}"),
                            Err(_) => eprintln!("backend {to}: no answer in 5 s"),
                        }
                    });
                }
            })
        })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_with_and_without_port() {
        let v = parse_vip("10.0.0.100").unwrap();
        assert_eq!((v.ip.to_string(), v.port), ("10.0.0.100".into(), None));
        let v = parse_vip("[fd00::100]:80").unwrap();
        assert_eq!((v.ip.to_string(), v.port), ("fd00::100".into(), Some(80)));
        assert!(parse_vip("fd00::100").unwrap().port.is_none());
        for bad in ["10.0.0.100:0", "vip", "10.0.0.100:x", ""] {
            let e = parse_vip(bad).unwrap_err();
            assert!(e.contains("VIP:PORT"), "{bad}: {e}");
        }
        // No port: the VIP on every --listen port.
        let listen: Vec<SocketAddr> =
            vec!["10.0.0.2:80".parse().unwrap(), "[::]:443".parse().unwrap()];
        let socks = parse_vip("10.0.0.100").unwrap().sockets(&listen);
        assert_eq!(
            socks,
            vec![
                "10.0.0.100:80".parse::<SocketAddr>().unwrap(),
                "10.0.0.100:443".parse().unwrap()
            ]
        );
        let socks = parse_vip("10.0.0.100:8080").unwrap().sockets(&listen);
        assert_eq!(
            socks,
            vec!["10.0.0.100:8080".parse::<SocketAddr>().unwrap()]
        );
    }
}
