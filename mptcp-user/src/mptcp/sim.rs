//! The MPTCP engine in the simulator: [`MptcpFactory`] builds a client
//! with one local address per path and a server listening on every path.

use super::{LocalAddr, MptcpConfig, MptcpEndpoint};
use crate::io::PathStats;
use crate::sim::rng::mix64;
use crate::sim::{EndpointFactory, SimEndpoint, SubflowStats, Topology};
use crate::time::Instant;

impl SimEndpoint for MptcpEndpoint {
    fn path_stats(&self) -> Vec<PathStats> {
        let mut out: Vec<PathStats> = Vec::new();
        for c in self.connections() {
            for s in c.subflows() {
                let Some(st) = c.subflow_stats(s.id) else {
                    continue;
                };
                let p = match out.iter_mut().find(|p| p.path == s.path) {
                    Some(p) => p,
                    None => {
                        out.push(PathStats {
                            path: s.path,
                            ..Default::default()
                        });
                        out.last_mut().expect("just pushed")
                    }
                };
                p.bytes_sent += st.bytes_sent;
                p.bytes_received += st.bytes_received;
                p.retransmits += st.retransmits;
            }
        }
        out
    }

    fn subflow_stats(&self) -> Vec<SubflowStats> {
        let mut out = Vec::new();
        for c in self.connections() {
            for s in c.subflows() {
                if let Some(st) = c.subflow_stats(s.id) {
                    out.push(SubflowStats {
                        id: s.id,
                        path: s.path,
                        bytes: st.bytes_sent,
                        retransmits: st.retransmits,
                        reinjected: st.bytes_reinjected,
                    });
                }
            }
        }
        out
    }
}

/// Builds an MPTCP client (local address `i` on path `i`) and server; the
/// client's path manager opens the extra subflows. Keys and ISNs derive
/// from the run's seed, so a seed reproduces a run.
#[derive(Clone, Debug, Default)]
pub struct MptcpFactory {
    pub config: MptcpConfig,
    /// The server announces its other addresses (ADD_ADDR).
    pub signal: bool,
}

impl EndpointFactory for MptcpFactory {
    type Client = MptcpEndpoint;
    type Server = MptcpEndpoint;

    fn build(&mut self, topology: &Topology, seed: u64) -> (MptcpEndpoint, MptcpEndpoint) {
        let first = &topology.paths[0];
        let mtu = topology.paths.iter().map(|p| p.mtu).min().unwrap_or(1500);
        let mtu = mtu.min(u16::MAX as usize) as u16;
        let mut base = self.config.clone();
        base.tcp = base.tcp.with_mtu(mtu, first.client.is_ipv6());
        let with_seed = |salt: u64| {
            let mut c = base.clone();
            for (i, chunk) in c.secret.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&mix64(seed ^ salt ^ (i as u64) << 8).to_le_bytes());
            }
            let mut isn = [0u8; 16];
            isn[..8].copy_from_slice(&mix64(seed ^ salt ^ 0x15).to_le_bytes());
            isn[8..].copy_from_slice(&mix64(seed ^ salt ^ 0x16).to_le_bytes());
            c.tcp.isn_secret = isn;
            c
        };
        let clocals: Vec<LocalAddr> = topology
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| LocalAddr {
                ip: p.client.ip(),
                path: i,
                signal: false,
            })
            .collect();
        let slocals: Vec<LocalAddr> = topology
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| LocalAddr {
                ip: p.server.ip(),
                path: i,
                signal: self.signal && i > 0,
            })
            .collect();
        let client = MptcpEndpoint::client(
            with_seed(0xc1),
            &clocals,
            first.client.port(),
            first.server,
            Instant::ZERO,
        );
        let server = MptcpEndpoint::server(with_seed(0x5e), &slocals, first.server.port());
        (client, server)
    }
}

/// The MPTCP flags of `mptcp-user sim`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MptcpArgs {
    /// Packet scheduler: default (lowest RTT with room), roundrobin, redundant.
    #[arg(long, value_name = "NAME")]
    pub scheduler: Option<String>,
    /// Congestion control per subflow: cubic, newreno, lia, olia.
    #[arg(long, value_name = "NAME")]
    pub cc: Option<String>,
    /// Path manager: fullmesh, ndiffports, manual.
    #[arg(long, value_name = "NAME")]
    pub pm: Option<String>,
    /// Ask for DSS checksums.
    #[arg(long)]
    pub checksum: bool,
    /// Subflow limit per connection (and ndiffports' count).
    #[arg(long, value_name = "N")]
    pub subflows: Option<usize>,
    /// MPTCP version the client offers: 1 (RFC 8684) or 0 (RFC 6824); the
    /// server answers in either.
    #[arg(long, value_name = "V", value_parser = parse_version)]
    pub mptcp_version: Option<crate::crypto::Version>,
    /// The server announces its addresses on paths 2.. (ADD_ADDR).
    #[arg(long)]
    pub signal: bool,
}

/// `0` or `1`.
pub fn parse_version(s: &str) -> Result<crate::crypto::Version, String> {
    s.parse::<u8>()
        .ok()
        .and_then(crate::crypto::Version::from_wire)
        .ok_or_else(|| format!("unknown MPTCP version {s:?}: 0 (RFC 6824) or 1 (RFC 8684)"))
}

impl MptcpArgs {
    /// Whether any MPTCP flag was given (then even one path runs MPTCP).
    pub fn requested(&self) -> bool {
        self.scheduler.is_some()
            || self.cc.is_some()
            || self.pm.is_some()
            || self.checksum
            || self.subflows.is_some()
            || self.mptcp_version.is_some()
            || self.signal
    }

    /// The factory these flags describe.
    pub fn factory(&self) -> anyhow::Result<MptcpFactory> {
        let mut config = MptcpConfig::default();
        if let Some(s) = &self.scheduler {
            config.scheduler = crate::sched::SchedulerKind::from_name(s)
                .ok_or_else(|| anyhow::anyhow!("unknown scheduler {s:?}"))?;
        }
        if let Some(c) = &self.cc {
            config.tcp.congestion_control = crate::cc::CcAlgorithm::from_name(c)
                .ok_or_else(|| anyhow::anyhow!("unknown congestion control {c:?}"))?;
        }
        let n = self.subflows.unwrap_or(config.max_subflows);
        config.max_subflows = n.max(1);
        if let Some(p) = &self.pm {
            config.path_manager = crate::pm::PmKind::from_name(p, n)
                .ok_or_else(|| anyhow::anyhow!("unknown path manager {p:?}"))?;
        }
        config.checksum = self.checksum;
        if let Some(v) = self.mptcp_version {
            config.client_version = v;
        }
        Ok(MptcpFactory {
            config,
            signal: self.signal,
        })
    }
}
