//! Runs one transfer between a client and a server engine over the
//! simulated paths: the client's application writes `bytes` of a
//! pseudo-random pattern, the server's reads and checks every byte.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mptcp_engine::io::{ByteStream, Engine, PathId, PathStats};
use mptcp_engine::tcp::SubflowStats;
use mptcp_engine::time::Instant;

use super::net::{Delivery, LinkStats, Network, SendOutcome, Side};
use super::spec::PathSpec;
use mptcp_engine::app::pattern::Pattern;

/// What the runner needs from an endpoint beyond the sans-IO seam.
pub trait SimEndpoint: Engine + ByteStream {
    /// Figures per path this endpoint used (any order, at most one per path).
    fn path_stats(&self) -> Vec<PathStats>;
    /// Per-subflow figures for multipath engines; empty for plain TCP.
    fn subflow_stats(&self) -> Vec<SubflowReport> {
        Vec::new()
    }
}

/// One subflow's figures (the engine's own statistics type), for the
/// per-subflow breakdown of a multipath run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubflowReport {
    pub id: u32,
    pub path: PathId,
    pub stats: SubflowStats,
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
    /// Path `i` runs between 10.`i / 256`.`i % 256`.1 (client) and .2 (server),
    /// with the MTU the path starts with.
    pub fn for_paths(paths: &[PathSpec]) -> Topology {
        Topology {
            paths: paths
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let (hi, lo) = ((i >> 8) as u8, i as u8);
                    PathAddrs {
                        client: SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::new(10, hi, lo, 1)),
                            CLIENT_PORT,
                        ),
                        server: SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::new(10, hi, lo, 2)),
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
    /// Not over yet (a report taken mid-run).
    Running,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::TimeLimit => "time_limit",
            Outcome::Stalled => "stalled",
            Outcome::Livelock => "livelock",
            Outcome::Closed => "closed",
            Outcome::Running => "running",
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
    pub subflows: Vec<SubflowReport>,
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
    let (client, server) = factory.build(&topology, cfg.seed);
    run(cfg, client, server, hooks)
}

/// Runs the transfer to completion or to the time limit.
pub fn run<C: SimEndpoint, S: SimEndpoint>(
    cfg: &SimConfig,
    client: C,
    server: S,
    mut hooks: Hooks<'_>,
) -> SimReport {
    let mut sim = Simulation::new(cfg, client, server);
    sim.run(&mut hooks);
    sim.report()
}

/// One transfer, step by step: tests (and the subflow-control use cases)
/// can act on the endpoints between steps; [`run`] just steps to the end.
pub struct Simulation<C, S> {
    pub client: C,
    pub server: S,
    cfg: SimConfig,
    net: Network,
    pattern: Pattern,
    limit: Instant,
    now: Instant,
    /// Scratch for one packet, handed to `poll_transmit`.
    packet: Vec<u8>,
    /// `chunk[chunk_pos..chunk_len]` holds stream bytes from offset `sent`.
    chunk: Vec<u8>,
    chunk_pos: usize,
    chunk_len: usize,
    sent: u64,
    close_called: bool,
    rx: Vec<u8>,
    received: u64,
    first_mismatch: Option<u64>,
    established: Option<Duration>,
    completed: Option<Instant>,
    steps: u64,
    steps_here: u32,
    outcome: Option<Outcome>,
}

impl<C: SimEndpoint, S: SimEndpoint> Simulation<C, S> {
    pub fn new(cfg: &SimConfig, client: C, server: S) -> Simulation<C, S> {
        Simulation {
            client,
            server,
            net: Network::new(&cfg.paths, cfg.seed),
            pattern: Pattern::new(cfg.seed),
            limit: Instant::ZERO + cfg.time_limit,
            cfg: cfg.clone(),
            now: Instant::ZERO,
            packet: vec![0u8; MAX_PACKET],
            chunk: vec![0u8; APP_CHUNK],
            chunk_pos: 0,
            chunk_len: 0,
            sent: 0,
            close_called: false,
            rx: vec![0u8; APP_CHUNK],
            received: 0,
            first_mismatch: None,
            established: None,
            completed: None,
            steps: 0,
            steps_here: 0,
            outcome: None,
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Bytes the client's application handed to its engine so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes the server's application read so far (all checked).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// How the run ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Steps until the run ends.
    pub fn run(&mut self, hooks: &mut Hooks<'_>) -> Outcome {
        loop {
            if let Some(outcome) = self.step(hooks) {
                return outcome;
            }
        }
    }

    /// Steps until simulated time reaches `until` or the run ends; returns the outcome if it ended.
    pub fn run_until(&mut self, until: Instant, hooks: &mut Hooks<'_>) -> Option<Outcome> {
        while self.now < until {
            if let Some(outcome) = self.step(hooks) {
                return Some(outcome);
            }
        }
        self.outcome
    }

    /// Handles everything due now (arrivals, timers, both applications,
    /// transmissions), then moves time to the next event. Returns the
    /// outcome once the run is over; later calls do nothing.
    pub fn step(&mut self, hooks: &mut Hooks<'_>) -> Option<Outcome> {
        if self.outcome.is_some() {
            return self.outcome;
        }
        let now = self.now;
        self.steps += 1;
        if self.steps.is_multiple_of(PROGRESS_EVERY) {
            if let Some(progress) = hooks.progress.as_mut() {
                progress(&Progress {
                    now,
                    received: self.received,
                    bytes: self.cfg.bytes,
                });
            }
        }

        let (client, server, observer) = (&mut self.client, &mut self.server, &mut hooks.observer);
        self.net.process_until(now, |d| {
            if let Some(o) = observer.as_mut() {
                o.on_deliver(&d);
            }
            match d.to {
                Side::Client => client.handle_packet(d.at, d.path, d.packet),
                Side::Server => server.handle_packet(d.at, d.path, d.packet),
            }
        });
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }

        if self.established.is_none() && self.client.is_established() {
            self.established = Some(now - Instant::ZERO);
        }
        self.client_app();
        self.server_app();
        self.transmit(hooks);

        let outcome = self.finished().or_else(|| self.advance());
        self.outcome = outcome;
        outcome
    }

    /// The client's application writes as much of the pattern as its engine takes.
    fn client_app(&mut self) {
        let bytes = self.cfg.bytes;
        while self.sent < bytes {
            if self.chunk_pos == self.chunk_len {
                self.chunk_len = (bytes - self.sent).min(APP_CHUNK as u64) as usize;
                self.pattern
                    .fill(self.sent, &mut self.chunk[..self.chunk_len]);
                self.chunk_pos = 0;
            }
            let n = self
                .client
                .send(&self.chunk[self.chunk_pos..self.chunk_len])
                .min(self.chunk_len - self.chunk_pos);
            if n == 0 {
                break;
            }
            self.chunk_pos += n;
            self.sent += n as u64;
        }
        // Closing before the handshake would abort the connection (RFC 9293, SYN-SENT).
        if self.sent == bytes && !self.close_called && self.client.is_established() {
            self.client.close();
            self.close_called = true;
        }
    }

    /// The server's application reads everything readable and checks it against the pattern.
    fn server_app(&mut self) {
        loop {
            let n = self.server.recv(&mut self.rx).min(self.rx.len());
            if n == 0 {
                break;
            }
            let received = self.received;
            if self.first_mismatch.is_none() {
                // Bytes past the end are wrong by definition.
                let expected = (self.cfg.bytes.saturating_sub(received)).min(n as u64) as usize;
                self.first_mismatch = self
                    .pattern
                    .first_mismatch(received, &self.rx[..expected])
                    .map(|i| received + i as u64)
                    .or((expected < n).then_some(received + expected as u64));
            }
            self.received += n as u64;
            if self.received >= self.cfg.bytes && self.completed.is_none() {
                self.completed = Some(self.now);
            }
        }
    }

    fn transmit(&mut self, hooks: &mut Hooks<'_>) {
        let now = self.now;
        for (side, engine) in [
            (Side::Client, &mut self.client as &mut dyn Engine),
            (Side::Server, &mut self.server as &mut dyn Engine),
        ] {
            while let Some((path, len)) = engine.poll_transmit(now, &mut self.packet) {
                let bytes = &self.packet[..len.min(self.packet.len())];
                let outcome = self.net.send(now, side, path, bytes);
                if let Some(o) = hooks.observer.as_mut() {
                    o.on_send(now, side, path, bytes, outcome);
                }
            }
        }
    }

    fn finished(&self) -> Option<Outcome> {
        if self.received >= self.cfg.bytes && self.server.is_read_closed() {
            Some(Outcome::Complete)
        } else if self.server.is_closed() || self.client.is_closed() {
            Some(Outcome::Closed)
        } else {
            None
        }
    }

    /// Moves time to the next event; the outcome when there is none in time.
    fn advance(&mut self) -> Option<Outcome> {
        let next = [
            self.net.next_event_time(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            None => Some(Outcome::Stalled),
            Some(t) if t > self.limit => Some(Outcome::TimeLimit),
            Some(t) if t <= self.now => {
                self.steps_here += 1;
                (self.steps_here > MAX_STEPS_AT_ONE_INSTANT).then_some(Outcome::Livelock)
            }
            Some(t) => {
                self.steps_here = 0;
                self.now = t;
                None
            }
        }
    }

    /// The figures of the run so far (final once [`Simulation::outcome`] is set).
    pub fn report(&self) -> SimReport {
        let (net, cfg) = (&self.net, &self.cfg);
        let end_of_stream = self.server.is_read_closed();
        let received = self.received;
        let byte_exact = received == cfg.bytes && self.first_mismatch.is_none() && end_of_stream;
        let duration = self.completed.unwrap_or(self.now) - Instant::ZERO;
        let goodput_bps = if duration.is_zero() {
            0.0
        } else {
            received.min(cfg.bytes) as f64 * 8.0 / duration.as_secs_f64()
        };
        let client_stats = self.client.path_stats();
        let server_stats = self.server.path_stats();
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
        let mut subflows = self.client.subflow_stats();
        subflows.sort_by_key(|s| (s.path, s.id));

        SimReport {
            seed: cfg.seed,
            bytes: cfg.bytes,
            received,
            byte_exact,
            first_mismatch: self.first_mismatch,
            end_of_stream,
            outcome: self.outcome.unwrap_or(Outcome::Running),
            established: self.established,
            duration,
            goodput_bps,
            paths,
            subflows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_addresses_are_unique_per_path() {
        let paths = vec![PathSpec::default(); 300];
        let t = Topology::for_paths(&paths);
        let mut clients: Vec<_> = t.paths.iter().map(|p| p.client).collect();
        clients.sort();
        clients.dedup();
        assert_eq!(clients.len(), 300);
        assert_eq!(t.paths[0].client, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(t.paths[1].server, "10.0.1.2:5201".parse().unwrap());
        assert_eq!(t.paths[299].mtu, 1500);
    }
}
