//! Use case 3 of the enhanced socket API paper: deadline streaming. The
//! download of SIZE bytes must end within DEADLINE; while the rate so far
//! falls short of size / deadline, open a subflow on the second path.
//!
//! `deadline 10.0.0.2:5201 --iface eth0 --iface eth1 --bytes 16777216 --deadline 4`

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: common::Common,
    /// Seconds the download may take.
    #[arg(long, default_value_t = 4.0)]
    deadline: f64,
    /// Judge the rate after this much of the deadline has passed.
    #[arg(long, default_value_t = 0.1)]
    grace: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (_instance, mut s) = args.common.connect().await?;
    let size = common::request(&mut s, args.common.bytes).await?;
    let started = Instant::now();
    let needed = size as f64 / args.deadline;
    let second = SocketAddr::new(args.common.local(1)?, 0);
    let remote = args.common.remote;
    let mut opened: Option<(u32, u64, f64)> = None;
    let grace = Duration::from_secs_f64(args.deadline * args.grace);
    let (got, bad) = common::download(&mut s, size, async |s, got| {
        let t = started.elapsed();
        if opened.is_some() || t < grace {
            return Ok(());
        }
        let rate = got as f64 / t.as_secs_f64();
        if rate < needed {
            let id = s.open_subflow(second, remote).await?;
            eprintln!("{rate:.0} B/s < {needed:.0} B/s needed: subflow {id} on the second path");
            opened = Some((id, got, t.as_secs_f64()));
        }
        Ok(())
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let report = json!({
        "bytes": got, "size": size, "byte_exact": got == size && bad == 0,
        "mismatched_bytes": bad, "deadline": args.deadline, "seconds": elapsed,
        "met": elapsed <= args.deadline, "needed_bytes_per_second": needed,
        "opened": opened.map(|(id, at, t)| json!({"id": id, "at_bytes": at, "at_seconds": t})),
        "subflows": common::subflows_json(&s).await?,
    });
    common::finish(&mut s).await?;
    println!("{report}");
    Ok(())
}
