//! Use case 1 of the enhanced socket API paper: replace the subflow every
//! X bytes received (a fresh 4-tuple: new port, same addresses), so no
//! one path or middlebox state carries the whole download.
//!
//! `refresh 10.0.0.2:5201 --iface eth0 --bytes 16777216 --every 4194304`
//! prints a JSON report. Needs root (XDP, AF_XDP).

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;

use anyhow::Result;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: common::Common,
    /// Replace the subflow every this many bytes received.
    #[arg(long, default_value_t = 4 << 20)]
    every: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let started = std::time::Instant::now();
    let (_instance, mut s) = args.common.connect().await?;
    let size = common::request(&mut s, args.common.bytes).await?;
    let mut next = args.every;
    let mut refreshes = 0u64;
    // Make before break: the old subflow closes once its successor is up.
    let mut pending: Option<(u32, u32)> = None;
    let remote = args.common.remote;
    let (got, bad) = common::download(&mut s, size, async |s, got| {
        if let Some((old, new)) = pending {
            let rows = s.subflows().await?;
            match rows.iter().find(|r| r.id == new).map(|r| r.state.as_str()) {
                Some("established") => {
                    s.close_subflow(old).await?;
                    eprintln!("at {got} bytes: subflow {old} replaced by {new}");
                    refreshes += 1;
                    pending = None;
                }
                Some("establishing") => {}
                _ => {
                    eprintln!("at {got} bytes: subflow {new} failed; {old} stays");
                    pending = None;
                }
            }
            return Ok(());
        }
        if got < next {
            return Ok(());
        }
        next += args.every;
        // The subflow in use: the newest established one.
        let rows = s.subflows().await?;
        let Some(old) = rows.iter().rev().find(|r| r.state == "established") else {
            return Ok(());
        };
        let local = SocketAddr::new(old.local.ip(), 0);
        let new = s.open_subflow(local, remote).await?;
        pending = Some((old.id, new));
        Ok(())
    })
    .await?;
    let report = json!({
        "bytes": got, "size": size, "byte_exact": got == size && bad == 0,
        "mismatched_bytes": bad, "refreshes": refreshes, "seconds": common::seconds(started),
        "subflows": common::subflows_json(&s).await?,
    });
    common::finish(&mut s).await?;
    println!("{report}");
    Ok(())
}
