//! `mptcp-user stats`: the counters of every running instance.

use anyhow::{bail, Context, Result};

use super::STATS_DIR;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Raw JSON, one object per instance.
    #[arg(long)]
    pub json: bool,
}

pub fn stats(args: &StatsArgs) -> Result<()> {
    let dir = match std::fs::read_dir(STATS_DIR) {
        Ok(d) => d,
        Err(_) => bail!("no running mptcp-user instance ({STATS_DIR} is empty)"),
    };
    let mut found = 0;
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let pid: Option<u32> = path.file_stem().and_then(|s| s.to_str()?.parse().ok());
        // A file left by a killed instance: its process is gone.
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("{path:?}"))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{path:?}"))?;
        found += 1;
        if args.json {
            println!("{value}");
        } else {
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    if found == 0 {
        bail!("no running mptcp-user instance");
    }
    Ok(())
}
