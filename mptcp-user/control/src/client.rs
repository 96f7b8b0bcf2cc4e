//! The synchronous client of the control socket (`mptcp-user ctl`, `stats`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::protocol::{EventRow, Reply, Request};

/// Pids of the running instances that have a control socket, oldest first
/// (sockets of dead processes are skipped).
pub fn instances() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir(crate::RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("sock") {
                return None;
            }
            p.file_stem()?.to_str()?.parse().ok()
        })
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    pids.sort_unstable();
    pids
}

/// The one instance to talk to: `pid`, or the only one running.
pub fn pick_instance(pid: Option<u32>) -> Result<u32> {
    if let Some(p) = pid {
        return Ok(p);
    }
    match instances().as_slice() {
        [] => bail!(
            "no running mptcp-user instance with a control socket in {}",
            crate::RUN_DIR
        ),
        [one] => Ok(*one),
        many => bail!(
            "{} instances run ({}): say which with --instance PID",
            many.len(),
            many.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn open(pid: u32) -> Result<(UnixStream, PathBuf)> {
    let path = crate::socket_path(pid);
    let s = UnixStream::connect(&path).with_context(|| {
        format!("connecting to {path:?} (is instance {pid} running, and are you root?)")
    })?;
    Ok((s, path))
}

/// Sends one request and returns its result (an error answer is an error).
pub fn request(pid: u32, req: &Request) -> Result<Value> {
    let (mut s, path) = open(pid)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line).with_context(|| format!("{path:?}"))?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    let reply: Reply =
        serde_json::from_str(&answer).with_context(|| format!("answer {answer:?}"))?;
    if reply.ok {
        Ok(reply.result.unwrap_or(Value::Null))
    } else {
        Err(anyhow!(reply.error.unwrap_or_else(|| "failed".into())))
    }
}

/// Streams monitor events to `each` until it returns false or the instance
/// stops; `subscribed` runs once the instance confirmed the subscription
/// (events from then on are not missed).
pub fn monitor(
    pid: u32,
    subscribed: impl FnOnce(),
    mut each: impl FnMut(EventRow) -> bool,
) -> Result<()> {
    let (mut s, _) = open(pid)?;
    let mut line = serde_json::to_vec(&Request::Monitor)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut r = BufReader::new(&s);
    let mut text = String::new();
    r.read_line(&mut text)?;
    let reply: Reply = serde_json::from_str(&text).with_context(|| format!("answer {text:?}"))?;
    if !reply.ok {
        bail!(reply.error.unwrap_or_default());
    }
    subscribed();
    loop {
        text.clear();
        if r.read_line(&mut text)? == 0 {
            return Ok(());
        }
        // Other lines (`{"lagged": N}`) say events were lost.
        match serde_json::from_str::<EventRow>(&text) {
            Ok(e) => {
                if !each(e) {
                    return Ok(());
                }
            }
            Err(_) => eprintln!("monitor: {}", text.trim()),
        }
    }
}
