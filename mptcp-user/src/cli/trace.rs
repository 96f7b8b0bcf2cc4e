//! `mptcp-user trace FILE.pcap --out DIR`: what mptcptrace does, for real
//! captures: the sequence, goodput and unacked CSVs and SVG plots that
//! `sim --trace` draws (`sim::trace`), for one MPTCP connection of a
//! capture, kernel or engine, either direction.
//!
//! The connection is the first one whose MP_CAPABLE SYN is in the capture;
//! its subflows are the MP_JOINs that carry either end's token (both keys
//! come from the MP_CAPABLE handshake). A capture without an MP_CAPABLE
//! SYN (started mid-connection, or plain TCP) is traced as one connection
//! of all its TCP packets. The data direction is the one that carried more
//! payload unless `--direction` says otherwise; `both` writes
//! `DIR/client-to-server` and `DIR/server-to-client`.
//!
//! Times are seconds since the connection's first packet. Acknowledgements
//! are taken when the capture saw them: a capture on the sender gives the
//! sender's view (as `sim --trace`); one on the receiver shifts the data
//! half a round trip later.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use mptcp_engine::pcap::PcapReader;
use mptcp_engine::time::Instant;
use mptcp_engine::wire::mptcp::MpJoin;
use mptcp_engine::wire::{parse_ip_tcp, TcpFlags};
use mptcp_sim::trace::{Trace, TraceSummary};
use mptcp_sim::{Delivery, SendOutcome, Side};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceDirection {
    /// The direction that carried more data.
    Auto,
    /// Data sent by the client (the side of the MP_CAPABLE SYN).
    Client,
    /// Data sent by the server.
    Server,
    /// Both, in DIR/client-to-server and DIR/server-to-client.
    Both,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example: capture a transfer in the lab, then trace it:
  ip netns exec mptcp-lab-server tcpdump -i any -s 200 -w /tmp/x.pcap tcp &
  ... run the transfer, stop tcpdump ...
  mptcp-user trace /tmp/x.pcap --out /tmp/x-trace
Files (as `sim --trace`): sequence.csv, acks.csv, goodput.csv, unacked.csv and
sequence.svg, goodput.svg, unacked.svg.")]
pub struct TraceArgs {
    /// A pcap or pcapng capture (Ethernet, Linux cooked v1/v2, raw IP); headers suffice (-s 200).
    pub file: PathBuf,
    /// Directory for the CSV files and plots (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Which data direction to trace.
    #[arg(long, value_enum, default_value = "auto")]
    pub direction: TraceDirection,
}

type Tuple = (SocketAddr, SocketAddr);

/// The connection picked in the capture.
struct Connection {
    client: Option<IpAddr>,
    /// Subflows as (client address, server address).
    subflows: Vec<Tuple>,
    /// False: every TCP packet belongs (no MP_CAPABLE SYN seen).
    mptcp: bool,
    /// Payload bytes sent by the client and by the server.
    bytes: [u64; 2],
    first_ns: Option<u64>,
}

impl Connection {
    /// Client-to-server orientation of a packet of this connection, or None.
    fn orient(&mut self, src: SocketAddr, dst: SocketAddr) -> Option<(Tuple, bool)> {
        if self.subflows.contains(&(src, dst)) {
            return Some(((src, dst), true));
        }
        if self.subflows.contains(&(dst, src)) {
            return Some(((dst, src), false));
        }
        if self.mptcp {
            return None;
        }
        // Plain capture: the first packet's sender is taken as the client.
        let client = *self.client.get_or_insert(src.ip());
        let t = if src.ip() == client {
            (src, dst)
        } else {
            (dst, src)
        };
        self.subflows.push(t);
        Some((t, src.ip() == client))
    }
}

/// Calls `f` with the time and the IP packet of every frame. A frame cut
/// short by the capture's snap length is padded with zeros to its original
/// length: headers are all the trace reads, and `-s 200` captures stay small.
fn for_each_packet(data: &[u8], mut f: impl FnMut(u64, &[u8])) -> Result<()> {
    let mut padded = Vec::new();
    for rec in PcapReader::new(data)? {
        let Ok(rec) = rec else { break };
        let Ok((_, ip)) = rec.network() else { continue };
        let missing = (rec.orig_len as usize).saturating_sub(rec.data.len());
        if missing == 0 {
            f(rec.ts_nanos, ip);
        } else {
            padded.clear();
            padded.extend_from_slice(ip);
            padded.resize(ip.len() + missing, 0);
            f(rec.ts_nanos, &padded);
        }
    }
    Ok(())
}

/// Pass one: the connection, its subflows and how much each side sent.
fn find_connection(data: &[u8]) -> Result<Connection> {
    let mut conn = Connection {
        client: None,
        subflows: Vec::new(),
        mptcp: false,
        bytes: [0; 2],
        first_ns: None,
    };
    let mut mpc: Option<Tuple> = None;
    let mut tokens: Vec<u32> = Vec::new();
    PcapReader::new(data).context("not a pcap or pcapng capture")?;
    for_each_packet(data, |_, ip| {
        let Ok((ipr, tcp)) = parse_ip_tcp(ip) else {
            return;
        };
        let src = SocketAddr::new(ipr.src(), tcp.src_port);
        let dst = SocketAddr::new(ipr.dst(), tcp.dst_port);
        let syn = tcp.flags.contains(TcpFlags::SYN);
        let ack = tcp.flags.contains(TcpFlags::ACK);
        if mpc.is_none() && syn && !ack && tcp.options.mptcp.mp_capable().is_some() {
            mpc = Some((src, dst));
            conn.mptcp = true;
            conn.client = Some(src.ip());
            conn.subflows.push((src, dst));
        }
        let Some(first) = mpc else { return };
        // Keys from the MP_CAPABLE handshake give the tokens joins carry.
        if (src, dst) == first || (dst, src) == first {
            if let Some(m) = tcp.options.mptcp.mp_capable() {
                for key in [m.sender_key, m.receiver_key].into_iter().flatten() {
                    let t = mptcp_engine::crypto::token(key);
                    if !tokens.contains(&t) {
                        tokens.push(t);
                    }
                }
            }
        }
        if let Some(MpJoin::Syn { token, .. }) = tcp.options.mptcp.mp_join() {
            if syn && !ack && tokens.contains(token) && !conn.subflows.contains(&(src, dst)) {
                // The join's initiator is on the client side unless it is the server's address.
                conn.subflows.push((src, dst));
            }
        }
    })?;
    // Second pass counts bytes and the first packet (also for plain captures).
    for_each_packet(data, |ts_nanos, ip| {
        let Ok((ipr, tcp)) = parse_ip_tcp(ip) else {
            return;
        };
        let src = SocketAddr::new(ipr.src(), tcp.src_port);
        let dst = SocketAddr::new(ipr.dst(), tcp.dst_port);
        if let Some((_, from_client)) = conn.orient(src, dst) {
            conn.first_ns.get_or_insert(ts_nanos);
            conn.bytes[usize::from(!from_client)] += tcp.payload.len() as u64;
        }
    })?;
    if conn.first_ns.is_none() {
        bail!("no TCP packets in the capture");
    }
    Ok(conn)
}

/// Pass two: feeds one direction to a [`Trace`] as the simulator does.
fn trace_direction(
    data: &[u8],
    conn: &mut Connection,
    client_sends: bool,
    out: &Path,
) -> Result<TraceSummary> {
    let mut trace = Trace::for_sender(out, Side::Client)
        .with_context(|| format!("cannot write to {}", out.display()))?;
    let first = conn.first_ns.unwrap_or(0);
    let mut paths: HashMap<(IpAddr, IpAddr), usize> = HashMap::new();
    for_each_packet(data, |ts_nanos, ip| {
        let Ok((ipr, tcp)) = parse_ip_tcp(ip) else {
            return;
        };
        let src = SocketAddr::new(ipr.src(), tcp.src_port);
        let dst = SocketAddr::new(ipr.dst(), tcp.dst_port);
        let Some((tuple, from_client)) = conn.orient(src, dst) else {
            return;
        };
        // A path is a pair of addresses, numbered as they appear.
        let n = paths.len();
        let path = *paths.entry((tuple.0.ip(), tuple.1.ip())).or_insert(n);
        let at = Instant::from_nanos(ts_nanos.saturating_sub(first));
        if from_client == client_sends {
            mptcp_sim::runner::Observer::on_send(
                &mut trace,
                at,
                Side::Client,
                path,
                ip,
                SendOutcome::Queued { duplicated: false },
            );
        } else {
            mptcp_sim::runner::Observer::on_deliver(
                &mut trace,
                &Delivery {
                    at,
                    to: Side::Client,
                    path,
                    packet: ip,
                },
            );
        }
    })?;
    Ok(trace.finish()?)
}

pub fn trace(args: &TraceArgs) -> Result<()> {
    let data = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut conn = find_connection(&data)?;
    println!(
        "trace: {} with {} subflow(s); client sent {} B, server sent {} B",
        if conn.mptcp {
            "an MPTCP connection"
        } else {
            "a connection (no MP_CAPABLE SYN in the capture: all TCP packets)"
        },
        conn.subflows.len(),
        conn.bytes[0],
        conn.bytes[1]
    );
    let jobs: Vec<(bool, PathBuf)> = match args.direction {
        TraceDirection::Auto => vec![(conn.bytes[0] >= conn.bytes[1], args.out.clone())],
        TraceDirection::Client => vec![(true, args.out.clone())],
        TraceDirection::Server => vec![(false, args.out.clone())],
        TraceDirection::Both => vec![
            (true, args.out.join("client-to-server")),
            (false, args.out.join("server-to-client")),
        ],
    };
    for (client_sends, dir) in jobs {
        let summary = trace_direction(&data, &mut conn, client_sends, &dir)?;
        println!(
            "{} data: {summary}",
            if client_sends {
                "client-to-server"
            } else {
                "server-to-client"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_that_is_not_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.pcap");
        std::fs::write(&f, b"hello").unwrap();
        let e = trace(&TraceArgs {
            file: f,
            out: dir.path().join("out"),
            direction: TraceDirection::Auto,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("not a pcap"), "{e:#}");
    }
}
