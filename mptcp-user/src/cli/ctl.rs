//! `mptcp-user ctl`: see and steer the live connections of a running
//! `serve` or `connect` through its control socket.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};
use serde_json::Value;

use mptcp_control::client;
use mptcp_control::protocol::{ConnectionRow, Request, SubflowRow, Token};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Tokens are 8 hex digits, as `ctl connections` and `ip mptcp monitor` show them; subflow ids are \
stable within their connection and never reused.

Examples:
  mptcp-user ctl connections
  mptcp-user ctl subflows 5f3c2a1b
  mptcp-user ctl close 5f3c2a1b 1
  mptcp-user ctl prio 5f3c2a1b 0 backup
  mptcp-user ctl open 5f3c2a1b 10.0.1.1:0 10.0.0.2:5201     (client role: `connect`)
  mptcp-user ctl --json stats
  mptcp-user ctl monitor")]
pub struct CtlArgs {
    /// The instance (its pid); needed when several run.
    #[arg(long, value_name = "PID")]
    pub instance: Option<u32>,
    /// JSON for scripts (every counter a number; tokens as hex strings).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// Use only when no regular subflow can send (MP_PRIO with B=1).
    Backup,
    Normal,
}

#[derive(clap::Subcommand, Debug)]
pub enum CtlCommand {
    /// Every connection: token, addresses, state, fallback and why, bytes each way, subflows,
    /// and the worker that owns it (`serve --workers`).
    Connections,
    /// The subflows of a connection, with their TCP figures (closed ones included).
    Subflows { token: Token },
    /// Open a subflow from LOCAL to REMOTE (IP:PORT; port 0 picks one). Client role only:
    /// Linux accepts MP_JOIN only on a listener.
    Open {
        token: Token,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// Close a subflow (FIN); its unacknowledged data moves to the others.
    Close { token: Token, id: u32 },
    /// Set a subflow's priority (MP_PRIO to the peer).
    Prio {
        token: Token,
        id: u32,
        #[arg(value_enum)]
        priority: Priority,
    },
    /// Set the DSCP (0-63) of the packets a subflow sends.
    Dscp { token: Token, id: u32, dscp: u8 },
    /// Announce one of this instance's addresses on a connection (ADD_ADDR).
    Announce { token: Token, addr: IpAddr },
    /// Withdraw an address from a connection (REMOVE_ADDR); its subflows close.
    Remove { token: Token, addr: IpAddr },
    /// Without arguments the instance's counters (what `stats` shows); with TOKEN ID one subflow's.
    Stats {
        token: Option<Token>,
        #[arg(requires = "token")]
        id: Option<u32>,
    },
    /// Print connection and subflow events as they happen (`ip mptcp monitor` names).
    Monitor {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Columns aligned to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn ms(us: u64) -> String {
    format!("{:.1}ms", us as f64 / 1000.0)
}

fn subflow_rows(rows: &[SubflowRow]) {
    let header = [
        "ID",
        "LOCAL",
        "REMOTE",
        "IF",
        "STATE",
        "BACKUP",
        "CWND",
        "SRTT",
        "RTTVAR",
        "RTO",
        "SENT",
        "ACKED",
        "RETRANS",
        "RECEIVED",
        "REINJECTED",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let backup = match (r.backup, r.peer_backup) {
                (true, true) => "both",
                (true, false) => "ours",
                (false, true) => "peer",
                (false, false) => "-",
            };
            vec![
                r.id.to_string(),
                r.local.to_string(),
                r.remote.to_string(),
                r.interface.clone(),
                r.state.clone(),
                backup.into(),
                r.cwnd.to_string(),
                ms(r.srtt_us),
                ms(r.rttvar_us),
                ms(r.rto_us),
                r.bytes_sent.to_string(),
                r.bytes_acked.to_string(),
                r.bytes_retransmitted.to_string(),
                r.bytes_received.to_string(),
                r.bytes_reinjected.to_string(),
            ]
        })
        .collect();
    table(&header, &cells);
}

pub fn ctl(args: &CtlArgs) -> Result<()> {
    let pid = client::pick_instance(args.instance)?;
    let req = match &args.command {
        CtlCommand::Connections => Request::Connections,
        CtlCommand::Subflows { token } => Request::Subflows { token: *token },
        CtlCommand::Open {
            token,
            local,
            remote,
        } => Request::Open {
            token: *token,
            local: *local,
            remote: *remote,
        },
        CtlCommand::Close { token, id } => Request::Close {
            token: *token,
            id: *id,
        },
        CtlCommand::Prio {
            token,
            id,
            priority,
        } => Request::Prio {
            token: *token,
            id: *id,
            backup: *priority == Priority::Backup,
        },
        CtlCommand::Dscp { token, id, dscp } => Request::Dscp {
            token: *token,
            id: *id,
            dscp: *dscp,
        },
        CtlCommand::Announce { token, addr } => Request::Announce {
            token: *token,
            addr: *addr,
        },
        CtlCommand::Remove { token, addr } => Request::Remove {
            token: *token,
            addr: *addr,
        },
        CtlCommand::Stats { token: Some(t), id } => Request::SubflowStats {
            token: *t,
            id: id.context("ctl stats TOKEN ID: the subflow id is missing")?,
        },
        CtlCommand::Stats { token: None, .. } => Request::Stats,
        CtlCommand::Monitor { count } => return monitor(pid, args.json, *count),
    };
    let result = client::request(pid, &req)?;
    if args.json {
        println!("{result}");
        return Ok(());
    }
    match &args.command {
        CtlCommand::Connections => {
            let rows: Vec<ConnectionRow> = serde_json::from_value(result)?;
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.token.to_string(),
                        r.local.to_string(),
                        r.remote.to_string(),
                        r.state.clone(),
                        r.fallback_reason.clone().unwrap_or_else(|| "-".into()),
                        r.bytes_sent.to_string(),
                        r.bytes_received.to_string(),
                        format!("{}/{}", r.subflows, r.subflows_total),
                        r.worker.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "TOKEN", "LOCAL", "REMOTE", "STATE", "FALLBACK", "SENT", "RECEIVED",
                    "SUBFLOWS", "WORKER",
                ],
                &cells,
            );
        }
        CtlCommand::Subflows { .. } => {
            subflow_rows(&serde_json::from_value::<Vec<SubflowRow>>(result)?)
        }
        CtlCommand::Stats { token: Some(_), .. } => {
            subflow_rows(&[serde_json::from_value(result)?])
        }
        CtlCommand::Stats { token: None, .. } => {
            println!("{}", serde_json::to_string_pretty(&result)?)
        }
        CtlCommand::Open { .. } => println!("opened subflow {}", result["id"]),
        CtlCommand::Close { id, .. } => println!("closing subflow {id}"),
        CtlCommand::Prio { id, priority, .. } => {
            println!("subflow {id}: {priority:?} (MP_PRIO sent)")
        }
        CtlCommand::Dscp { id, dscp, .. } => println!("subflow {id}: DSCP {dscp}"),
        CtlCommand::Announce { addr, .. } => {
            println!("announcing {addr} as address id {}", result["addr_id"])
        }
        CtlCommand::Remove { addr, .. } => {
            println!("removing {addr} (address id {})", result["addr_id"])
        }
        CtlCommand::Monitor { .. } => {}
    }
    Ok(())
}

fn monitor(pid: u32, json: bool, count: Option<u64>) -> Result<()> {
    let mut seen = 0u64;
    let mut out = std::io::stdout();
    // On stderr, so scripts (and tests) know when events start to count.
    let subscribed = || eprintln!("monitoring instance {pid}");
    client::monitor(pid, subscribed, |e| {
        let line = if json {
            serde_json::to_string(&e).unwrap_or_default()
        } else {
            e.to_string()
        };
        // Flushed per event: a script reading a pipe sees each at once.
        let ok = writeln!(out, "{line}").and_then(|_| out.flush()).is_ok();
        seen += 1;
        ok && count.is_none_or(|c| seen < c)
    })
}

/// The counters of instance `pid` from its control socket (what `stats` shows).
pub fn instance_stats(pid: u32) -> Result<Value> {
    client::request(pid, &Request::Stats)
}
