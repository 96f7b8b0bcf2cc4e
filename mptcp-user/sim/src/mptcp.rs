//! The MPTCP engine in the simulator: [`MptcpFactory`] builds a client
//! with one local address per path and a server listening on every path.

use crate::rng::mix64;
use crate::{EndpointFactory, SimEndpoint, SubflowReport, Topology};
use mptcp_engine::io::PathStats;
use mptcp_engine::mptcp::{LocalAddr, MptcpConfig, MptcpEndpoint};
use mptcp_engine::time::Instant;

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

    fn subflow_stats(&self) -> Vec<SubflowReport> {
        let mut out = Vec::new();
        for c in self.connections() {
            for s in c.subflows() {
                if let Some(st) = c.subflow_stats(s.id) {
                    out.push(SubflowReport {
                        id: s.id,
                        path: s.path,
                        stats: st,
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
