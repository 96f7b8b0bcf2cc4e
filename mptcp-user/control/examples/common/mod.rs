#![allow(dead_code)] // each example uses part of it
//! What the three examples share: options, the object download (ask for N
//! bytes with an 8-byte big-endian length; the server answers with the
//! length, then N bytes of the test pattern), and the JSON report.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{bail, Result};
use mptcp_control::run::{self, Instance, Options};
use mptcp_control::MptcpStream;
use mptcp_engine::app::Pattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug)]
pub struct Common {
    /// The server (it answers an 8-byte length N with the length and N bytes of the test pattern).
    pub remote: SocketAddr,
    /// Interfaces: the first carries the connection, the second is the other path.
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// Object size in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub bytes: u64,
}

impl Common {
    /// Connects with the manual path manager: subflows open only when the
    /// example asks.
    pub async fn connect(&self) -> Result<(Instance, MptcpStream)> {
        let ifaces: Vec<&str> = self.ifaces.iter().map(String::as_str).collect();
        let mut opts = Options::new(&ifaces);
        opts.manual = true;
        run::connect(self.remote, &opts).await
    }

    /// The address of interface `i` in the remote's family.
    pub fn local(&self, i: usize) -> Result<IpAddr> {
        let Some(iface) = self.ifaces.get(i) else {
            bail!("a second --iface is needed");
        };
        mptcp_datapath::xdp::interface_addresses(iface)?
            .into_iter()
            .find(|a| a.is_ipv4() == self.remote.is_ipv4())
            .ok_or_else(|| anyhow::anyhow!("no address of the remote's family on {iface}"))
    }
}

/// Asks for the object and returns its announced size.
pub async fn request(s: &mut MptcpStream, bytes: u64) -> Result<u64> {
    s.write_all(&bytes.to_be_bytes()).await?;
    let mut len = [0u8; 8];
    s.read_exact(&mut len).await?;
    Ok(u64::from_be_bytes(len))
}

/// Reads the object, checking every byte; `each` runs after every read
/// with the count so far. Returns (bytes, mismatched bytes). The stream
/// stays open: the report's subflows are taken before the caller shuts it
/// (the server closes its subflows once our DATA_FIN arrives).
pub async fn download(
    s: &mut MptcpStream,
    size: u64,
    mut each: impl AsyncFnMut(&MptcpStream, u64) -> Result<()>,
) -> Result<(u64, u64)> {
    let mut buf = vec![0u8; 256 << 10];
    let (mut got, mut bad) = (0u64, 0u64);
    while got < size {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        bad += buf[..n]
            .iter()
            .enumerate()
            .filter(|(i, b)| **b != Pattern::STREAM.byte(got + *i as u64))
            .count() as u64;
        got += n as u64;
        each(s, got).await?;
    }
    Ok((got, bad))
}

/// The subflows as the report lists them.
pub async fn subflows_json(s: &MptcpStream) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(s.subflows().await?)?)
}

pub fn seconds(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// Shuts our side (DATA_FIN) once the report is taken.
pub async fn finish(s: &mut MptcpStream) -> Result<()> {
    s.shutdown().await?;
    Ok(())
}
