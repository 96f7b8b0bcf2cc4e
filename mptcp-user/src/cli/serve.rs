//! `mptcp-user serve`: terminate MPTCP (and plain TCP, by fallback) on
//! interfaces through XDP + AF_XDP, with an application per connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use mptcp_control::stream::{bridge, RING};
use mptcp_control::{ControlOptions, ControlPlane, MptcpListener};
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
    #[arg(long)]
    pub announce: Vec<IpAddr>,
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
    /// Buffer memory (send and receive data) of the worker, e.g. 512M or
    /// 2G (MPTCP engine; 0 = no limit). Near the limit, advertised windows
    /// shrink so peers send less; nothing fails.
    #[arg(long, default_value = "0", value_parser = parse_size, value_name = "BYTES")]
    pub max_memory: u64,
    /// Handshakes in progress at most (MPTCP engine); beyond, SYNs are
    /// answered with SYN cookies. MP_JOIN SYNs never count.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub max_half_open: usize,
    /// Receive windows of all connections together, at most (MPTCP
    /// engine): what peers may send before hearing from us, so a burst of
    /// connections opening at once fits the AF_XDP RX ring. Each
    /// connection gets a fair share and one MSS at least. `auto`: half the
    /// RX ring in 1460-byte frames (24M); 0: no bound.
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
        let allow = AllowList::parse(&args.allow).map_err(anyhow::Error::msg)?;
        let mut socks5 = None;
        if args.mode == Mode::Socks5 {
            let users = match (&args.users, args.no_auth) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("--users {}: {e}", path.display()))?;
                    let users = Users::parse(&text)
                        .map_err(|e| anyhow::anyhow!("--users {}: {e}", path.display()))?;
                    eprintln!("socks5: {} user(s) from {}", users.len(), path.display());
                    Some(users)
                }
                (None, true) => {
                    eprintln!("socks5: no authentication (--no-auth)");
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
                eprintln!(
                    "{:?}: no --allow given: every destination will be refused (add --allow CIDR)",
                    args.mode
                );
            } else {
                eprintln!(
                    "{:?}: destinations allowed: {}",
                    args.mode,
                    args.allow.join(", ")
                );
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
    let mut owned: Vec<IpAddr> = Vec::new();
    for l in &args.listen {
        let ip = l.ip();
        if ip.is_unspecified() {
            // [::] is dual stack; 0.0.0.0 is IPv4 only.
            owned.extend(local_addrs.iter().filter(|a| ip.is_ipv6() || a.is_ipv4()));
        } else if local_addrs.contains(&ip) {
            owned.push(ip);
            owned.extend(args.announce.iter().copied());
        } else {
            bail!(
                "--listen {l}: address {ip} is not on {}",
                args.ifaces.join(" or ")
            );
        }
    }
    owned.sort();
    owned.dedup();
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
    // Each listener's port is kept from the kernel's own sockets meanwhile
    // (a socket bound to :: holds the IPv4 port too).
    let _reservations = args
        .listen
        .iter()
        .map(|l| reserve_port(*l))
        .collect::<Result<Vec<_>>>()?;
    let ctx = AppContext::new(args)?;
    if args.engine == EngineKind::Mptcp {
        return serve_mptcp(args, owned, &ctx);
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
}

impl PerConnection<'_> {
    fn poll_one(&mut self, now: Instant, engine: &mut MptcpEndpoint, h: ConnHandle) -> usize {
        let i = h.slot as usize;
        if self.apps.len() <= i {
            self.apps.resize_with(i + 1, || None);
        }
        let Some(conn) = engine.get_mut(h) else {
            // Gone (reaped after a reset) before its application saw it.
            if let Some(s) = self.apps[i].take_if(|s| s.gen == h.gen) {
                self.closed += u64::from(!s.done);
            }
            return 0;
        };
        let slot = match &mut self.apps[i] {
            Some(s) if s.gen == h.gen => s,
            other => {
                if other.as_ref().is_some_and(|s| !s.done) {
                    self.closed += 1;
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
        while let Some(h) = engine.poll_app_ready() {
            work += self.poll_one(now, engine, h);
        }
        // Closed connections give their slots (and buffers) back; a reused
        // slot has a new generation, so its new application starts fresh.
        engine.reap_closed();
        let enough = self.args.connections != 0 && self.closed >= self.args.connections;
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

fn serve_mptcp(args: &ServeArgs, owned: Vec<IpAddr>, ctx: &AppContext) -> Result<()> {
    let mut ports: Vec<u16> = args.listen.iter().map(|l| l.port()).collect();
    ports.sort();
    ports.dedup();
    let ownership = Ownership {
        addresses: owned.clone(),
        listen_ports: ports,
        client_ports: None,
    };
    let stop = stop_on_signals();
    let xsk = XskConfig::default();
    let (mut datapath, paths) = Datapath::open(&args.ifaces, &ownership, xsk)?;
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
            signal: args.announce.contains(ip),
        });
    }
    let mut cfg = mptcp_config(
        &paths,
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
    // The engine runs on this thread: its buffer pool is this thread's.
    mptcp_engine::tcp::pool::configure(args.max_memory, 16 << 10);
    // A burst of connections must fit the RX ring: their windows together
    // stay within a budget sized by it.
    let budget = args
        .window_budget
        .0
        .unwrap_or_else(|| xsk.rx_window_budget(1460));
    mptcp_engine::tcp::pool::set_window_budget(budget);
    let mut engine = MptcpEndpoint::new(cfg, &locals);
    for l in &args.listen {
        engine.listen(*l);
    }
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
        listeners(&args.listen),
        args.mode
    );
    // The control socket answers `stats`, `ctl` and /metrics from the
    // worker's own counters: no stats file for this instance.
    let (mut control, plane) = ControlPlane::start(
        "serve",
        &ControlOptions {
            socket: None,
            metrics: args.metrics,
        },
    )?;
    eprintln!("control socket {}", plane.socket().display());
    if let Some(m) = plane.metrics_addr() {
        eprintln!("metrics at http://{m}/metrics");
    }
    let mut worker = Worker::new(engine, paths);
    args.datapath_opts.apply(&mut worker)?;
    if args.mode == Mode::Forward {
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
    let mut app = PerConnection {
        args,
        ctx,
        apps: Vec::new(),
        with_fd: Vec::new(),
        closed: 0,
    };
    let mut last_trim = std::time::Instant::now();
    let mut wake = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let (mut work, done) = worker.step(&mut app);
        if done {
            break;
        }
        work += control.poll(&mut worker, &datapath, app.closed);
        if last_trim.elapsed() >= Duration::from_secs(1) {
            last_trim = std::time::Instant::now();
            control.apps = ctx.stats();
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
    drop(plane);
    datapath.detach_all()?;
    eprintln!("stopped; XDP detached from {}", args.ifaces.join(", "));
    Ok(())
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
