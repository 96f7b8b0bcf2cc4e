//! Use case 2 of the enhanced socket API paper: a second subflow costs a
//! handshake and state, so open it only when the object is larger than a
//! threshold (small objects finish on the first path).
//!
//! `delayed 10.0.0.2:5201 --iface eth0 --iface eth1 --bytes 16777216 --threshold 1048576`

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
    /// Open the second subflow only for objects larger than this.
    #[arg(long, default_value_t = 1 << 20)]
    threshold: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let started = std::time::Instant::now();
    let (_instance, mut s) = args.common.connect().await?;
    let size = common::request(&mut s, args.common.bytes).await?;
    let mut opened = None;
    if size > args.threshold {
        let local = SocketAddr::new(args.common.local(1)?, 0);
        opened = Some(s.open_subflow(local, args.common.remote).await?);
        eprintln!(
            "object of {size} bytes > {}: second subflow",
            args.threshold
        );
    }
    let (got, bad) = common::download(&mut s, size, async |_, _| Ok(())).await?;
    let report = json!({
        "bytes": got, "size": size, "byte_exact": got == size && bad == 0,
        "mismatched_bytes": bad, "threshold": args.threshold, "opened": opened,
        "seconds": common::seconds(started),
        "subflows": common::subflows_json(&s).await?,
    });
    common::finish(&mut s).await?;
    println!("{report}");
    Ok(())
}
