//! Runs one transfer between a client and a server engine over the
//! simulated paths: the client's application writes `bytes` of a
//! pseudo-random pattern, the server's reads and checks every byte.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::io::{ByteStream, Engine, PathId, PathStats};
use crate::time::Instant;

use super::net::{Delivery, LinkStats, Network, SendOutcome, Side};
use super::pattern::Pattern;
use super::spec::PathSpec;

/// What the runner needs from an endpoint beyond the sans-IO seam.
pub trait SimEndpoint: Engine + ByteStream {
    /// Figures per path this endpoint used (any order, at most one per path).
    fn path_stats(&self) -> Vec<PathStats>;
    /// Per-subflow figures for multipath engines; empty for plain TCP.
    fn subflow_stats(&self) -> Vec<SubflowStats> {
        Vec::new()
    }
}

/// One subflow's figures, for the per-subflow breakdown of a multipath run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubflowStats {
    pub id: u32,
    pub path: PathId,
    /// Payload bytes sent, retransmissions and reinjections included.
    pub bytes: u64,
    pub retransmits: u64,
    /// Bytes resent here after another subflow failed to deliver them.
    pub reinjected: u64,
}

/// The addresses of one path's two ends and the path MTU the engines should assume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathAddrs {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub mtu: usize,
}

/// Where the endpoints live: path `i` joins `paths[i].client` and `paths[i].server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub paths: Vec<PathAddrs>,
}

/// Port the simulated server listens on.
pub const SERVER_PORT: u16 = 5201;
/// Port of the client's first connection.
pub const CLIENT_PORT: u16 = 40000;

impl Topology {
    /// Path `i` runs between 10.`i`.0.1 (client) and 10.`i`.0.2 (server),
    /// with the MTU the path starts with.
    pub fn for_paths(paths: &[PathSpec]) -> Topology {
        Topology {
            paths: paths
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let net = (i % 256) as u8;
                    PathAddrs {
                        client: SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::new(10, net, 0, 1)),
                            CLIENT_PORT,
                        ),
                        server: SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::new(10, net, 0, 2)),
                            SERVER_PORT,
                        ),
                        mtu: spec.initial.mtu,
                    }
                })
                .collect(),
        }
    }
}

/// Builds the two endpoints of a run. The client connects from
/// `topology.paths[0].client` to `topology.paths[0].server`; the server
/// listens on every path's server address.
pub trait EndpointFactory {
    type Client: SimEndpoint;
    type Server: SimEndpoint;
    fn build(&mut self, topology: &Topology, seed: u64) -> (Self::Client, Self::Server);
}

/// Sees every packet the endpoints send and the network delivers (traces, plots).
pub trait Observer {
    fn on_send(
        &mut self,
        _now: Instant,
        _from: Side,
        _path: PathId,
        _packet: &[u8],
        _outcome: SendOutcome,
    ) {
    }
    fn on_deliver(&mut self, _delivery: &Delivery<'_>) {}
}

/// A snapshot for progress displays.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub now: Instant,
    pub received: u64,
    pub bytes: u64,
}

/// Optional hooks into a run.
#[derive(Default)]
pub struct Hooks<'a> {
    pub observer: Option<&'a mut dyn Observer>,
    /// Called every thousand steps or so; must not influence the run.
    pub progress: Option<&'a mut dyn FnMut(&Progress)>,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub paths: Vec<PathSpec>,
    /// Bytes the client's application sends.
    pub bytes: u64,
    pub seed: u64,
    /// Simulated time after which an unfinished run stops.
    pub time_limit: Duration,
}

impl SimConfig {
    pub fn new(paths: Vec<PathSpec>, bytes: u64, seed: u64) -> SimConfig {
        SimConfig {
            paths,
            bytes,
            seed,
            time_limit: Duration::from_secs(600),
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every byte arrived and the server saw the end of the stream.
    Complete,
    /// The simulated time limit passed first.
    TimeLimit,
    /// Nothing left to happen: no packet in flight and no timer set.
    Stalled,
    /// An endpoint kept asking to run at the same instant without progress.
    Livelock,
    /// The server's connection closed or was reset before the end.
    Closed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::TimeLimit => "time_limit",
            Outcome::Stalled => "stalled",
            Outcome::Livelock => "livelock",
            Outcome::Closed => "closed",
        }
    }
}

/// One path's share of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct PathReport {
    pub path: PathId,
    pub spec: PathSpec,
    /// Payload bytes the client sent on this path, retransmissions included.
    pub bytes: u64,
    /// Segments retransmitted on this path by either end.
    pub retransmits: u64,
    /// Payload bytes the server received in order on this path.
    pub received: u64,
    pub client: PathStats,
    pub server: PathStats,
    /// Client-to-server link.
    pub forward: LinkStats,
    /// Server-to-client link.
    pub reverse: LinkStats,
}

/// The result of a run. Everything in it is simulated, so a seed reproduces it exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    pub seed: u64,
    /// Bytes the application asked to send.
    pub bytes: u64,
    /// Bytes the server's application read.
    pub received: u64,
    /// The received stream is the sent one, complete and ended by the peer's close.
    pub byte_exact: bool,
    /// Stream offset of the first wrong byte, if any.
    pub first_mismatch: Option<u64>,
    /// The server saw the end of the stream (FIN or DATA_FIN).
    pub end_of_stream: bool,
    pub outcome: Outcome,
    /// Since the start of the run, when the client could carry data.
    pub established: Option<Duration>,
    /// Since the start of the run (the client's first SYN), when the server
    /// read the last byte; the end of the run when it never did.
    pub duration: Duration,
    /// Payload bits read by the server per second of `duration`.
    pub goodput_bps: f64,
    pub paths: Vec<PathReport>,
    pub subflows: Vec<SubflowStats>,
}

const APP_CHUNK: usize = 64 * 1024;
/// Largest packet an engine may write; bigger than any MTU so oversize packets reach the MTU check.
const MAX_PACKET: usize = 65_536;
/// Steps at one instant before the run counts as a livelock.
const MAX_STEPS_AT_ONE_INSTANT: u32 = 100_000;
const PROGRESS_EVERY: u64 = 1024;

/// Builds the endpoints with `factory` and runs.
pub fn run_with<F: EndpointFactory>(
    cfg: &SimConfig,
    factory: &mut F,
    hooks: Hooks<'_>,
) -> SimReport {
    let topology = Topology::for_paths(&cfg.paths);
    let (mut client, mut server) = factory.build(&topology, cfg.seed);
    run(cfg, &mut client, &mut server, hooks)
}

/// Runs the transfer to completion or to the time limit.
pub fn run<C: SimEndpoint, S: SimEndpoint>(
    cfg: &SimConfig,
    client: &mut C,
    server: &mut S,
    mut hooks: Hooks<'_>,
) -> SimReport {
    let mut net = Network::new(&cfg.paths, cfg.seed);
    let pattern = Pattern::new(cfg.seed);
    let limit = Instant::ZERO + cfg.time_limit;
    let mut now = Instant::ZERO;

    let mut packet = vec![0u8; MAX_PACKET];
    let mut chunk = vec![0u8; APP_CHUNK];
    // `chunk[chunk_pos..chunk_len]` holds stream bytes from offset `sent`.
    let (mut chunk_pos, mut chunk_len) = (0usize, 0usize);
    let mut sent = 0u64;
    let mut close_called = false;
    let mut rx = vec![0u8; APP_CHUNK];
    let mut received = 0u64;
    let mut first_mismatch: Option<u64> = None;
    let mut established: Option<Duration> = None;
    let mut completed: Option<Instant> = None;

    let mut steps_here = 0u32;
    let mut steps = 0u64;
    let outcome = loop {
        steps += 1;
        if steps.is_multiple_of(PROGRESS_EVERY) {
            if let Some(progress) = hooks.progress.as_mut() {
                progress(&Progress {
                    now,
                    received,
                    bytes: cfg.bytes,
                });
            }
        }

        let observer = &mut hooks.observer;
        net.process_until(now, |d| {
            if let Some(o) = observer.as_mut() {
                o.on_deliver(&d);
            }
            match d.to {
                Side::Client => client.handle_packet(d.at, d.path, d.packet),
                Side::Server => server.handle_packet(d.at, d.path, d.packet),
            }
        });
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }

        if established.is_none() && client.is_established() {
            established = Some(now - Instant::ZERO);
        }
        while sent < cfg.bytes {
            if chunk_pos == chunk_len {
                chunk_len = (cfg.bytes - sent).min(APP_CHUNK as u64) as usize;
                pattern.fill(sent, &mut chunk[..chunk_len]);
                chunk_pos = 0;
            }
            let n = client
                .send(&chunk[chunk_pos..chunk_len])
                .min(chunk_len - chunk_pos);
            if n == 0 {
                break;
            }
            chunk_pos += n;
            sent += n as u64;
        }
        // Closing before the handshake would abort the connection (RFC 9293, SYN-SENT).
        if sent == cfg.bytes && !close_called && client.is_established() {
            client.close();
            close_called = true;
        }
        loop {
            let n = server.recv(&mut rx).min(rx.len());
            if n == 0 {
                break;
            }
            if first_mismatch.is_none() {
                // Bytes past the end are wrong by definition.
                let expected = (cfg.bytes.saturating_sub(received)).min(n as u64) as usize;
                first_mismatch = pattern
                    .first_mismatch(received, &rx[..expected])
                    .map(|i| received + i as u64)
                    .or((expected < n).then_some(received + expected as u64));
            }
            received += n as u64;
            if received >= cfg.bytes && completed.is_none() {
                completed = Some(now);
            }
        }

        for (side, engine) in [
            (Side::Client, client as &mut dyn Engine),
            (Side::Server, server as &mut dyn Engine),
        ] {
            while let Some((path, len)) = engine.poll_transmit(now, &mut packet) {
                let bytes = &packet[..len.min(packet.len())];
                let outcome = net.send(now, side, path, bytes);
                if let Some(o) = hooks.observer.as_mut() {
                    o.on_send(now, side, path, bytes, outcome);
                }
            }
        }

        if received >= cfg.bytes && server.is_read_closed() {
            break Outcome::Complete;
        }
        if server.is_closed() || client.is_closed() {
            break Outcome::Closed;
        }
        let next = [
            net.next_event_time(),
            client.poll_timeout(),
            server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            None => break Outcome::Stalled,
            Some(t) if t > limit => break Outcome::TimeLimit,
            Some(t) if t <= now => {
                steps_here += 1;
                if steps_here > MAX_STEPS_AT_ONE_INSTANT {
                    break Outcome::Livelock;
                }
            }
            Some(t) => {
                steps_here = 0;
                now = t;
            }
        }
    };

    let end_of_stream = server.is_read_closed();
    let byte_exact = received == cfg.bytes && first_mismatch.is_none() && end_of_stream;
    let duration = completed.unwrap_or(now) - Instant::ZERO;
    let goodput_bps = if duration.is_zero() {
        0.0
    } else {
        received.min(cfg.bytes) as f64 * 8.0 / duration.as_secs_f64()
    };
    let client_stats = client.path_stats();
    let server_stats = server.path_stats();
    let stats_for = |all: &[PathStats], path: PathId| {
        all.iter()
            .find(|s| s.path == path)
            .cloned()
            .unwrap_or(PathStats {
                path,
                ..PathStats::default()
            })
    };
    let paths = (0..net.path_count())
        .map(|path| {
            let c = stats_for(&client_stats, path);
            let s = stats_for(&server_stats, path);
            PathReport {
                path,
                spec: net.spec(path).clone(),
                bytes: c.bytes_sent,
                retransmits: c.retransmits + s.retransmits,
                received: s.bytes_received,
                client: c,
                server: s,
                forward: net.link_stats(path, Side::Client).clone(),
                reverse: net.link_stats(path, Side::Server).clone(),
            }
        })
        .collect();
    let mut subflows = client.subflow_stats();
    subflows.sort_by_key(|s| (s.path, s.id));

    SimReport {
        seed: cfg.seed,
        bytes: cfg.bytes,
        received,
        byte_exact,
        first_mismatch,
        end_of_stream,
        outcome,
        established,
        duration,
        goodput_bps,
        paths,
        subflows,
    }
}
