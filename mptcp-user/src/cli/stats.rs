//! `mptcp-user stats`: the counters of every running instance. Instances
//! with a control socket (`serve` and `connect` with the MPTCP engine) are
//! asked through it, so `stats`, `ctl stats` and `/metrics` read the same
//! figures; the others leave a JSON file built by the same code.

use anyhow::{bail, Context, Result};

use super::STATS_DIR;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Raw JSON, one object per instance.
    #[arg(long)]
    pub json: bool,
}

pub fn stats(args: &StatsArgs) -> Result<()> {
    let mut values = Vec::new();
    for pid in mptcp_control::client::instances() {
        match super::ctl::instance_stats(pid) {
            Ok(v) => values.push(v),
            Err(e) => eprintln!("instance {pid}: {e:#}"),
        }
    }
    for entry in std::fs::read_dir(STATS_DIR).into_iter().flatten().flatten() {
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if ext != Some("json") && ext != Some("sock") {
            continue;
        }
        let pid: Option<u32> = path.file_stem().and_then(|s| s.to_str()?.parse().ok());
        // A file or socket left by a killed instance (SIGKILL): its process is gone.
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if ext != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        values.push(serde_json::from_str(&text).with_context(|| format!("{path:?}"))?);
    }
    if values.is_empty() {
        bail!("no running mptcp-user instance ({STATS_DIR} has neither control sockets nor stats files)");
    }
    for value in values {
        if args.json {
            println!("{value}");
        } else {
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}
