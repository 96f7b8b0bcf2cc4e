//! The MPTCP connection layer over the sans-IO subflow engine: version 1
//! (RFC 8684) and version 0 (RFC 6824), chosen per connection.
//!
//! - [`MptcpEndpoint`]: the driver seam ([`Engine`](crate::io::Engine)) and
//!   the application seam ([`ByteStream`](crate::io::ByteStream)); any
//!   number of connections (`connect`) and listeners (`listen`, `[::]` dual
//!   stack); demultiplexes by 4-tuple and by token for MP_JOIN SYNs.
//!   Event-driven (`endpoint.rs`): a slab of connections named by
//!   [`ConnHandle`], transmit and application ready queues, one timer heap
//!   entry per connection; bounded half-open queue, SYN cookies
//!   (`syncookie.rs`), queued and rate-limited RSTs, a connection limit.
//!   Buffers come from a per-thread pool of 4 KiB chunks
//!   ([`crate::tcp::pool`]) and go back when drained.
//! - [`Connection`] (`conn.rs`: lifecycle, fallback, segment dispatch,
//!   events, timers, the application and subflow-control API ([`api`])),
//!   split by concern as Linux's net/mptcp:
//!   - `conn/keys.rs`: keys, tokens, IDSNs; MP_CAPABLE and MP_JOIN (HMACs);
//!   - `conn/options.rs`: the parser of incoming options, one builder per
//!     outgoing suboption;
//!   - `conn/send.rs`: send buffer, mappings, scheduler hand-off,
//!     reinjection, DATA_FIN;
//!   - `conn/recv.rs`: received mappings, reassembly, DATA_ACK, window;
//!   - `conn/signals.rs`: ADD_ADDR (and retransmission), REMOVE_ADDR;
//!   - `conn/pm.rs`: when the path manager opens MP_JOIN subflows;
//!   - `conn/subflow.rs`: the MPTCP state of one subflow.
//!
//! Data sequence numbers are kept as 64-bit offsets from IDSN + 1 (the
//! first data byte at 0), converted where options enter and leave.
//!
//! A driver's view (the AF_XDP datapath, the simulator in the `mptcp-sim` crate):
//!
//! ```text
//! let mut cfg = MptcpConfig::default();
//! // keys, nonces and ISNs are random (crate::secret); tests and the
//! // simulator set `secret` and `tcp.isn_secret` from a seed instead
//! cfg.tcp = cfg.tcp.with_mtu(1500, false);             // MSS for the path MTU
//! cfg.accept_partial_checksum = true;                  // veth: CHECKSUM_PARTIAL
//! let locals = [LocalAddr { ip, path: 0, signal: false },
//!               LocalAddr { ip: ip2, path: 1, signal: true }];   // ADD_ADDR'd
//! let mut server = MptcpEndpoint::server(cfg.clone(), &locals, 8080);
//! let mut client = MptcpEndpoint::client(cfg, &locals, 40000, remote, now);
//! // per received IP packet (IPv4/IPv6 header first):
//! server.handle_packet(now, path, packet);
//! // until None: write packets into `buf` and send them on `path`:
//! while let Some((path, len)) = server.poll_transmit(now, &mut buf) { ... }
//! // timers:
//! if server.poll_timeout().is_some_and(|t| t <= now) { server.handle_timeout(now) }
//! // the application (ByteStream on the first connection, or by handle):
//! server.send(bytes); server.recv(&mut out); server.close();
//! while let Some(h) = server.poll_app_ready() {         // only those that changed
//!     let c = server.get_mut(h).unwrap(); c.recv(..); c.send(..); c.poll_event();
//! }
//! server.reap_closed();                                 // frees closed connections
//! ```
//!
//! Options go out as Linux 6.18 puts them (checked against its captures in
//! `tests/mptcp_conformance.rs`): 64-bit DSNs, a 64-bit DATA_ACK once the
//! peer used 64-bit DSNs, DATA_FIN on a pure ACK with SSN 0 and length 1,
//! ADD_ADDR alone on a pure ACK, MP_FASTCLOSE then MP_TCPRST on RSTs.
//!
//! Version 0 differs only in the handshake and a few options; everything
//! above them (scheduler, path manager, reassembly, fallback) is shared:
//! - the client's key rides on the SYN too, and the third ACK carries both
//!   keys but never data (the client sends its first data under a DSS
//!   mapping after that pure ACK); the server knows the client's key from
//!   the SYN, so a lost third ACK is no loss to it;
//! - tokens and IDSNs come from SHA-1, MP_JOIN HMACs are HMAC-SHA1
//!   ([`crate::crypto::Version`]);
//! - ADD_ADDR has its IPVer field, no HMAC and no echo (sent twice, as it
//!   is never acknowledged); MP_PRIO may name an address id, whose
//!   subflows change priority;
//! - no MP_TCPRST: RSTs carry no MPTCP option, and MP_FASTCLOSE goes on an
//!   ACK (RFC 6824 section 3.5), to which the peer answers with RSTs.
//!
//! A server answers a SYN in a version of [`MptcpConfig::server_versions`]
//! in that version and any other SYN with plain TCP (as Linux does with a
//! version it does not speak); a client offers [`MptcpConfig::client_version`].

pub mod api;
mod conn;
mod endpoint;
/// Robustness harness for the fuzz targets and tests (not an API).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod syncookie;

pub use crate::io::AffinityChange;
pub use api::{
    ConnectionInfo, ConnectionState, FallbackReason, LocalAddr, MonitorEvent, MonitorKind,
    MptcpEvent, SubflowCloseReason, SubflowId, SubflowInfo, SubflowOptions, SubflowStats,
    SubflowStatus,
};
pub use conn::Connection;
pub use endpoint::{ConnHandle, EndpointWork, MptcpCounters, MptcpEndpoint};

pub use crate::crypto::Version;
use crate::pm::PmKind;
use crate::sched::SchedulerKind;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

/// MP_TCPRST reason codes (RFC 8684 section 3.6).
pub mod reset_reason {
    pub const UNSPECIFIED: u8 = 0;
    pub const MPTCP_ERROR: u8 = 1;
    pub const LACK_OF_RESOURCES: u8 = 2;
    pub const ADMIN_PROHIBITED: u8 = 3;
    pub const TOO_MUCH_OUTSTANDING: u8 = 4;
    pub const UNACCEPTABLE_PERFORMANCE: u8 = 5;
    pub const MIDDLEBOX_INTERFERENCE: u8 = 6;
}

/// Values a replay test fixes in advance (keys, MP_JOIN nonces, ISNs),
/// consumed in order; when a queue runs dry the CSPRNG takes over.
/// Only for conformance tests replaying captures: compiled only for tests
/// and fuzzing (feature `fuzzing`), so production builds cannot set it.
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Clone, Debug, Default)]
pub struct ReplayInjection {
    pub keys: std::collections::VecDeque<u64>,
    pub nonces: std::collections::VecDeque<u32>,
    pub isns: std::collections::VecDeque<u32>,
}

/// The MPTCP versions a server answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    pub v0: bool,
    pub v1: bool,
}

impl Default for Versions {
    fn default() -> Self {
        Versions { v0: true, v1: true }
    }
}

impl Versions {
    pub fn contains(&self, v: Version) -> bool {
        match v {
            Version::V0 => self.v0,
            Version::V1 => self.v1,
        }
    }

    /// A comma-separated list such as `1,0`, `1` or `0`.
    pub fn parse(list: &str) -> Result<Versions, String> {
        let mut v = Versions {
            v0: false,
            v1: false,
        };
        for item in list.split(',').map(str::trim) {
            match item {
                "0" => v.v0 = true,
                "1" => v.v1 = true,
                other => {
                    return Err(format!(
                        "unknown MPTCP version {other:?} (the versions are 0, RFC 6824, and 1, RFC 8684)"
                    ))
                }
            }
        }
        if !v.v0 && !v.v1 {
            return Err("no MPTCP version left: give 1, 0 or 1,0".into());
        }
        Ok(v)
    }
}

/// Per-connection settings; every bound on memory is here.
#[derive(Clone, Debug)]
pub struct MptcpConfig {
    /// Settings of each subflow.
    pub tcp: crate::tcp::Config,
    /// Ask for DSS checksums (the peer may ask too; either side wins).
    pub checksum: bool,
    /// Server: the versions answered in (a SYN in another gets plain TCP).
    pub server_versions: Versions,
    /// Client: the version offered in the SYN.
    pub client_version: Version,
    /// Subflows per connection, the initial one included.
    pub max_subflows: usize,
    /// Client: local ports a connection may use, from its first subflow's
    /// on (the driver steers that range to the engine). Joins take the next
    /// ones and wrap around within them, so subflows re-created after
    /// failures never leave it.
    pub client_ports: u16,
    /// Data-level send buffer (bytes the application may queue).
    pub send_buffer: usize,
    /// Data-level receive buffer: the connection-level window.
    pub recv_buffer: usize,
    pub scheduler: SchedulerKind,
    pub path_manager: PmKind,
    /// Seed of the key/nonce generator (HMAC-SHA256 in counter mode):
    /// random by default ([`crate::secret::random`]); a test or the
    /// simulator sets it from a seed.
    pub secret: [u8; 32],
    /// Accept TCP checksums covering only the pseudo-header (Linux sends
    /// CHECKSUM_PARTIAL over veth; captures hold such packets). Off by
    /// default: such a packet is counted and dropped.
    pub accept_partial_checksum: bool,
    /// First ADD_ADDR retransmission interval (doubles each time).
    pub add_addr_timeout: Duration,
    pub add_addr_retries: u32,
    /// Reinject a subflow's unacknowledged data elsewhere after its RTO.
    pub reinject_on_rto: bool,
    /// Server behind a load balancer: the MP_CAPABLE SYN/ACK sets the C
    /// flag (RFC 8684 3.1; Linux's `allow_join_initial_addr_port=0`), so
    /// clients open no subflow to the balanced address, and every "signal"
    /// address is announced, the initial subflow's own one included (behind
    /// a DNAT balancer the client knows that one only as the VIP).
    pub deny_join_initial: bool,
    /// Deterministic keys/nonces/ISNs for replay tests.
    #[cfg(any(test, feature = "fuzzing"))]
    pub replay: Option<ReplayInjection>,
    /// Connections an endpoint holds at most; SYNs beyond are refused with
    /// a RST (MP_TCPRST "lack of resources") and counted.
    pub max_connections: usize,
    /// Accepted connections whose handshake is not complete, at most
    /// (MP_JOIN subflows do not count: they are bounded per connection).
    pub max_half_open: usize,
    /// RSTs queued at most, and sent per second at most (a token bucket
    /// with the queue's size as its burst); the rest are counted.
    pub reset_queue: usize,
    pub resets_per_second: u64,
    /// Answer SYNs with SYN cookies when the half-open queue is full
    /// (MP_CAPABLE too: the third ACK echoes both keys, as in Linux's
    /// net/mptcp/syncookies.c); off, such SYNs are dropped and counted.
    pub syn_cookies: bool,
    /// SYNs waiting for their cookie SYN/ACK at most (they are answered at
    /// the next `poll_transmit`); beyond, dropped and counted.
    pub syn_cookie_queue: usize,
    /// The SYN cookie secret, shared by the engines (workers) of one server
    /// so that whichever receives a cookie's ACK accepts it; `None`: derived
    /// from `secret`.
    pub cookie_secret: Option<[u8; 32]>,
}

impl Default for MptcpConfig {
    fn default() -> Self {
        let tcp = crate::tcp::Config {
            // A full DSS (64-bit DATA_ACK and DSN, checksum) is 28 bytes.
            option_reserve: 28,
            ..Default::default()
        };
        MptcpConfig {
            tcp,
            checksum: false,
            server_versions: Versions::default(),
            client_version: Version::V1,
            max_subflows: 8,
            client_ports: 1024,
            send_buffer: 8 << 20,
            recv_buffer: 8 << 20,
            scheduler: SchedulerKind::default(),
            path_manager: PmKind::default(),
            secret: crate::secret::random(),
            accept_partial_checksum: false,
            add_addr_timeout: Duration::from_secs(2),
            add_addr_retries: 4,
            reinject_on_rto: true,
            deny_join_initial: false,
            #[cfg(any(test, feature = "fuzzing"))]
            replay: None,
            max_connections: 1 << 20,
            max_half_open: 4096,
            reset_queue: 256,
            resets_per_second: 10_000,
            syn_cookies: true,
            syn_cookie_queue: 4096,
            cookie_secret: None,
        }
    }
}

/// Keys, nonces and ISNs: HMAC-SHA256(secret, counter), or replayed values.
#[derive(Debug)]
pub(crate) struct KeySource {
    secret: [u8; 32],
    counter: u64,
    #[cfg(any(test, feature = "fuzzing"))]
    replay: ReplayInjection,
}

impl KeySource {
    pub(crate) fn from_config(cfg: &MptcpConfig) -> KeySource {
        KeySource {
            secret: cfg.secret,
            counter: 0,
            #[cfg(any(test, feature = "fuzzing"))]
            replay: cfg.replay.clone().unwrap_or_default(),
        }
    }

    fn next(&mut self) -> [u8; 8] {
        self.counter += 1;
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes any key length"),
        };
        mac.update(&self.counter.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut b = [0u8; 8];
        b.copy_from_slice(&out[..8]);
        b
    }

    pub(crate) fn key(&mut self) -> u64 {
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(k) = self.replay.keys.pop_front() {
            return k;
        }
        u64::from_be_bytes(self.next())
    }

    pub(crate) fn nonce(&mut self) -> u32 {
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(n) = self.replay.nonces.pop_front() {
            return n;
        }
        let b = self.next();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Gives `sub` a replayed ISN (tests only; a no-op in production,
    /// where ISNs come from `tcp::Config::isn_secret`).
    pub(crate) fn replay_isn(&mut self, sub: &mut crate::tcp::Subflow) {
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(isn) = self.replay.isns.pop_front() {
            sub.set_initial_send_seq_for_replay(isn);
        }
        #[cfg(not(any(test, feature = "fuzzing")))]
        let _ = sub;
    }
}
