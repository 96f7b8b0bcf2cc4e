//! Plain TCP in the simulator: one [`TcpEndpoint`] client on path 0 and one
//! listening [`TcpEndpoint`] server.

use mptcp_engine::io::PathStats;
use mptcp_engine::tcp::{Config, TcpEndpoint};
use mptcp_engine::time::Instant;

use super::rng::mix64;
use super::runner::{EndpointFactory, SimEndpoint, Topology};

impl SimEndpoint for TcpEndpoint {
    fn path_stats(&self) -> Vec<PathStats> {
        vec![TcpEndpoint::path_stats(self)]
    }
}

/// Builds a plain TCP client and server from a base [`Config`]; the MSS
/// comes from path 0's MTU and the ISN secret from the run's seed.
#[derive(Clone, Debug, Default)]
pub struct TcpFactory {
    pub config: Config,
}

impl EndpointFactory for TcpFactory {
    type Client = TcpEndpoint;
    type Server = TcpEndpoint;

    fn build(&mut self, topology: &Topology, seed: u64) -> (TcpEndpoint, TcpEndpoint) {
        let path = &topology.paths[0];
        let mtu = path.mtu.min(u16::MAX as usize) as u16;
        let mut cfg = self.config.clone().with_mtu(mtu, path.client.is_ipv6());
        let mut secret = [0u8; 16];
        secret[..8].copy_from_slice(&mix64(seed ^ 0x15).to_le_bytes());
        secret[8..].copy_from_slice(&mix64(seed ^ 0x16).to_le_bytes());
        cfg.isn_secret = secret;
        let client = TcpEndpoint::client(cfg.clone(), path.client, path.server, Instant::ZERO);
        let server = TcpEndpoint::listen(cfg, path.server);
        (client, server)
    }
}
