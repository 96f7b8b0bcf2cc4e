//! `mptcp-user sim --trace DIR`: a sender-side trace of one connection, the
//! graphs mptcptrace draws (sequence numbers over time per subflow, goodput,
//! unacknowledged data at the MPTCP and the TCP level) as CSV and SVG.
//!
//! The trace is an [`Observer`] that reads packets with the wire codecs only,
//! never engine state, so it traces any engine (plain TCP or MPTCP) the same
//! way a capture on the sender would.
//!
//! Direction: only the bulk direction is traced. The simulator's transfer is
//! one way (the client's application writes, the server's reads), so the
//! data sender is the client by default: its segments give the sequence
//! numbers and the packets delivered to it give the acknowledgements.
//!
//! Sequence numbers are relative, 0 for the first data byte: data sequence
//! numbers (DSN) minus the sender's IDSN + 1 when the packets carry DSS
//! mappings, else TCP sequence numbers minus the ISN + 1 (plain TCP is one
//! subflow whose data level is its subflow level). FIN and DATA_FIN take no
//! room: acknowledgements are capped at the end of the data.
//!
//! Files (each CSV has a header line; times in seconds since the run started):
//! - `sequence.csv`: `time_s,subflow,path,dsn_start,dsn_end,retransmission`,
//!   one row per data segment sent; `retransmission` is 1 when some of its
//!   data-level bytes were sent before, on any subflow (a subflow
//!   retransmission or a reinjection). Data sent out of order because each
//!   subflow's mapping was handed out ahead (round robin) is not.
//! - `acks.csv`: `time_s,subflow,path,data_ack,subflow_ack`, one row per
//!   acknowledgement the sender receives (`data_ack` empty when the packet
//!   carries none).
//! - `goodput.csv`: `time_s,interval_s,total_bps,average_bps,subflow0_bps,...`:
//!   newly acknowledged bytes per interval (data level for `total`, subflow
//!   level per subflow), and the average since the start.
//! - `unacked.csv`: `time_s,subflow,unacked_bytes,subflow_unacked_bytes`, one
//!   row per event: data-level bytes sent and not yet acknowledged, and the
//!   same at the TCP level for the subflow the event happened on.
//! - `sequence.svg`, `goodput.svg`, `unacked.svg`: the plots.
//!
//! The trace sees what reached the sender while the run went on: a run stops
//! when the server has read everything, so the acknowledgements of the last
//! round trip are usually still in flight and the trace ends with that much
//! data unacknowledged (as a capture stopped at that moment would).
//!
//! Memory stays bounded: CSV rows stream to disk, plot series are decimated
//! as they grow, goodput buckets merge when there are too many.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use mptcp_engine::io::PathId;
use mptcp_engine::time::Instant;
use mptcp_engine::wire::mptcp::{DssMapping, MptcpOption};
use mptcp_engine::wire::{parse_ip_tcp, TcpFlags, TcpRepr};

use super::net::{Delivery, SendOutcome, Side};
use super::runner::Observer;

/// Points kept per plot series while the run goes on.
const SERIES_CAP: usize = 4096;
/// Points drawn over all series of one plot, so an SVG stays well under 2 MB.
const PLOT_BUDGET: usize = 12_000;
/// Goodput buckets kept while running; ten merge into one beyond this.
const MAX_BUCKETS: usize = 4096;
/// Goodput rows written at most; the interval is the smallest of 1, 2, 5 x 10^k ms that fits.
const GOODPUT_ROWS: usize = 100;
const FIRST_BUCKET_NS: u64 = 1_000_000;

/// A file the trace wrote, with its number of data rows (CSV) or drawn points (SVG).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceFile {
    pub path: PathBuf,
    pub rows: u64,
}

/// What [`Trace::finish`] wrote.
#[derive(Clone, Debug, Default)]
pub struct TraceSummary {
    pub files: Vec<TraceFile>,
    pub subflows: usize,
    /// Packets from or to the sender the codecs could not parse (not traced).
    pub unparsed: u64,
    /// Data segments with MPTCP options but no mapping that covers them.
    pub unmapped: u64,
}

impl std::fmt::Display for TraceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("trace: wrote ")?;
        for (i, file) in self.files.iter().enumerate() {
            let unit = if file.path.extension().is_some_and(|e| e == "svg") {
                "points"
            } else {
                "rows"
            };
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ({} {unit})", file.path.display(), file.rows)?;
        }
        if self.unparsed > 0 || self.unmapped > 0 {
            write!(
                f,
                "; {} unparsed packets, {} unmapped segments",
                self.unparsed, self.unmapped
            )?;
        }
        Ok(())
    }
}

/// A CSV file streamed through a buffer.
struct Csv {
    path: PathBuf,
    out: BufWriter<File>,
    rows: u64,
    /// First write error; later rows are dropped and `finish` reports it.
    error: Option<io::Error>,
}

impl Csv {
    fn create(dir: &Path, name: &str, header: &str) -> io::Result<Csv> {
        let path = dir.join(name);
        let file = File::create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut out = BufWriter::new(file);
        writeln!(out, "{header}")?;
        Ok(Csv {
            path,
            out,
            rows: 0,
            error: None,
        })
    }

    fn row(&mut self, args: std::fmt::Arguments<'_>) {
        if self.error.is_some() {
            return;
        }
        match self
            .out
            .write_fmt(args)
            .and_then(|()| self.out.write_all(b"\n"))
        {
            Ok(()) => self.rows += 1,
            Err(e) => self.error = Some(e),
        }
    }

    fn finish(mut self) -> io::Result<TraceFile> {
        if let Some(e) = self.error.take() {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.path.display()),
            ));
        }
        self.out.flush()?;
        Ok(TraceFile {
            path: self.path,
            rows: self.rows,
        })
    }
}

/// Keeps every `stride`-th point, doubling the stride when full, so a series
/// stays evenly thinned over time with bounded memory.
#[derive(Clone, Debug, Default)]
struct Decimated {
    points: Vec<(f64, f64)>,
    seen: u64,
    stride: u64,
}

impl Decimated {
    fn push(&mut self, x: f64, y: f64) {
        let stride = self.stride.max(1);
        if self.seen.is_multiple_of(stride) {
            self.points.push((x, y));
            if self.points.len() > SERIES_CAP {
                let mut i = 0;
                self.points.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride = stride * 2;
            }
        }
        self.seen += 1;
    }

    /// At most `n` points, evenly spread.
    fn thinned(&self, n: usize) -> impl Iterator<Item = (f64, f64)> + '_ {
        let step = self.points.len().div_ceil(n.max(1)).max(1);
        self.points.iter().copied().step_by(step)
    }
}

/// Acknowledged bytes per time bucket; buckets merge by ten when there are
/// too many, so intervals stay round (1 ms, 10 ms, 100 ms...).
#[derive(Clone, Debug)]
struct Buckets {
    width_ns: u64,
    /// `per[0]` is the data level, `per[1 + i]` subflow `i`.
    per: Vec<Vec<u64>>,
    len: usize,
}

impl Buckets {
    fn new() -> Buckets {
        Buckets {
            width_ns: FIRST_BUCKET_NS,
            per: vec![Vec::new()],
            len: 0,
        }
    }

    fn add(&mut self, series: usize, now_ns: u64, bytes: u64) {
        let mut index = (now_ns / self.width_ns) as usize;
        while index >= MAX_BUCKETS {
            self.merge_tens();
            index = (now_ns / self.width_ns) as usize;
        }
        if self.per.len() <= series {
            self.per.resize(series + 1, Vec::new());
        }
        let v = &mut self.per[series];
        if v.len() <= index {
            v.resize(index + 1, 0);
        }
        v[index] += bytes;
        self.len = self.len.max(index + 1);
    }

    fn merge_tens(&mut self) {
        for v in &mut self.per {
            *v = v.chunks(10).map(|c| c.iter().sum()).collect();
        }
        self.len = self.len.div_ceil(10);
        self.width_ns *= 10;
    }

    /// The buckets coarsened to at most `rows`: (interval, one row of sums per series).
    fn rows(&self, rows: usize) -> (u64, Vec<Vec<u64>>) {
        let group = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
            .into_iter()
            .find(|g| self.len.div_ceil(*g) <= rows.max(1))
            .unwrap_or(self.len.max(1));
        let count = self.len.div_ceil(group);
        let table = (0..count)
            .map(|r| {
                self.per
                    .iter()
                    .map(|v| v.iter().skip(r * group).take(group).sum())
                    .collect()
            })
            .collect();
        (self.width_ns * group as u64, table)
    }
}

/// What the trace knows of one subflow (sender's view).
#[derive(Clone, Debug)]
struct Subflow {
    /// Sender's address and the receiver's.
    local: SocketAddr,
    remote: SocketAddr,
    path: PathId,
    /// The sender's initial sequence number, from its SYN (or guessed from the first segment).
    isn: Option<u32>,
    /// Current mapping with its DSN made 64-bit and absolute.
    mapping: Option<DssMapping>,
    /// Relative subflow sequence space (0 = first data byte).
    snd_max: u64,
    snd_una: u64,
    fin: Option<u64>,
    seq_points: Decimated,
    ack_points: Decimated,
    unacked_points: Decimated,
}

/// The per-connection trace; create it before the run, pass it as the
/// run's observer, then call [`Trace::finish`].
pub struct Trace {
    dir: PathBuf,
    sender: Side,
    subflows: Vec<Subflow>,
    /// Absolute DSN of data byte 0: the sender's IDSN + 1, once known.
    dsn_base: Option<u64>,
    /// Some packet carried a DSS option: the data level is the DSN space
    /// (else plain TCP, or MPTCP that fell back before any data).
    dss_seen: bool,
    data_snd_max: u64,
    /// Data-level ranges sent at or above `data_una` (start -> end), merged.
    sent: std::collections::BTreeMap<u64, u64>,
    data_una: u64,
    data_fin: Option<u64>,
    sequence: Csv,
    acks: Csv,
    unacked: Csv,
    goodput: Buckets,
    retrans_points: Decimated,
    data_unacked_points: Decimated,
    last_ns: u64,
    unparsed: u64,
    unmapped: u64,
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The 64-bit value with these low 32 bits nearest to `reference`.
fn expand32(low: u32, reference: u64) -> u64 {
    let candidate = (reference & !0xffff_ffff) | u64::from(low);
    let up = candidate.wrapping_add(1 << 32);
    let down = candidate.wrapping_sub(1 << 32);
    [candidate, up, down]
        .into_iter()
        .min_by_key(|c| c.wrapping_sub(reference).min(reference.wrapping_sub(*c)))
        .unwrap_or(candidate)
}

impl Trace {
    /// Creates `dir` and the CSV files; fails before any run if it cannot.
    pub fn create(dir: &Path) -> io::Result<Trace> {
        Trace::for_sender(dir, Side::Client)
    }

    /// A trace of the data `sender` sends (the simulator's client by default).
    pub fn for_sender(dir: &Path, sender: Side) -> io::Result<Trace> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        Ok(Trace {
            dir: dir.to_path_buf(),
            sender,
            subflows: Vec::new(),
            dsn_base: None,
            dss_seen: false,
            data_snd_max: 0,
            sent: std::collections::BTreeMap::new(),
            data_una: 0,
            data_fin: None,
            sequence: Csv::create(
                dir,
                "sequence.csv",
                "time_s,subflow,path,dsn_start,dsn_end,retransmission",
            )?,
            acks: Csv::create(dir, "acks.csv", "time_s,subflow,path,data_ack,subflow_ack")?,
            unacked: Csv::create(
                dir,
                "unacked.csv",
                "time_s,subflow,unacked_bytes,subflow_unacked_bytes",
            )?,
            goodput: Buckets::new(),
            retrans_points: Decimated::default(),
            data_unacked_points: Decimated::default(),
            last_ns: 0,
            unparsed: 0,
            unmapped: 0,
        })
    }

    /// Subflows seen so far.
    pub fn subflow_count(&self) -> usize {
        self.subflows.len()
    }

    fn subflow_index(&mut self, local: SocketAddr, remote: SocketAddr, path: PathId) -> usize {
        if let Some(i) = self
            .subflows
            .iter()
            .position(|s| s.local == local && s.remote == remote)
        {
            return i;
        }
        self.subflows.push(Subflow {
            local,
            remote,
            path,
            isn: None,
            mapping: None,
            snd_max: 0,
            snd_una: 0,
            fin: None,
            seq_points: Decimated::default(),
            ack_points: Decimated::default(),
            unacked_points: Decimated::default(),
        });
        self.subflows.len() - 1
    }

    /// Learns the sender's key (its IDSN) from any MP_CAPABLE it sends.
    fn learn_key(&mut self, tcp: &TcpRepr<'_>) {
        if let Some(key) = tcp.options.mptcp.mp_capable().and_then(|m| m.sender_key) {
            if self.dsn_base.is_none() {
                self.dsn_base = Some(mptcp_engine::crypto::idsn(key).wrapping_add(1));
            }
        }
    }

    fn record_sent(
        &mut self,
        now_ns: u64,
        path: PathId,
        local: SocketAddr,
        remote: SocketAddr,
        tcp: &TcpRepr<'_>,
    ) {
        self.learn_key(tcp);
        let sf = self.subflow_index(local, remote, path);
        let syn = tcp.flags.contains(TcpFlags::SYN);
        if syn {
            self.subflows[sf].isn = Some(tcp.seq);
            return;
        }
        let len = tcp.payload.len() as u64;
        let isn = *self.subflows[sf].isn.get_or_insert(tcp.seq.wrapping_sub(1));
        // Subflow level, relative to ISN + 1.
        let s = &mut self.subflows[sf];
        let sub_start = expand32(tcp.seq.wrapping_sub(isn).wrapping_sub(1), s.snd_max);
        let sub_end = sub_start + len;
        if tcp.flags.contains(TcpFlags::FIN) {
            s.fin = Some(sub_end);
        }

        if let Some(m) = self.mapping_of(tcp) {
            self.subflows[sf].mapping = Some(m);
        }
        let data = if self.dss_seen {
            self.data_range(sf, tcp, isn, len)
        } else {
            Some((sub_start, sub_end))
        };
        if data.is_none() && len > 0 {
            self.unmapped += 1;
        }
        let s = &mut self.subflows[sf];
        s.snd_max = s.snd_max.max(sub_end);
        let Some((start, end)) = data.filter(|(a, b)| b > a) else {
            return;
        };
        let retransmission = self.note_sent(start, end);
        self.data_snd_max = self.data_snd_max.max(end);
        let t = seconds(now_ns);
        self.sequence.row(format_args!(
            "{t:.6},{sf},{path},{start},{end},{}",
            u8::from(retransmission)
        ));
        let s = &mut self.subflows[sf];
        s.seq_points.push(t, start as f64);
        if retransmission {
            self.retrans_points.push(t, start as f64);
        }
        self.unacked_row(now_ns, sf);
    }

    /// Records `[start, end)` as sent; true when any of it was sent before.
    /// Ranges wholly below the data ACK are dropped, so the map holds only the
    /// gaps of data in flight.
    fn note_sent(&mut self, start: u64, end: u64) -> bool {
        let mut seen = start < self.data_una;
        let (mut lo, mut hi) = (start.max(self.data_una), end);
        if lo >= hi {
            return seen;
        }
        // Merge with every range that overlaps or touches [lo, hi).
        let touching: Vec<(u64, u64)> = self
            .sent
            .range(..=hi)
            .rev()
            .take_while(|(_, e)| **e >= lo)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            if s < hi && e > lo {
                seen = true;
            }
            self.sent.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.sent.insert(lo, hi);
        seen
    }

    /// The mapping this segment carries, DSN made absolute and 64-bit.
    fn mapping_of(&mut self, tcp: &TcpRepr<'_>) -> Option<DssMapping> {
        for opt in tcp.options.mptcp.iter() {
            match opt {
                MptcpOption::Dss(dss) => {
                    self.dss_seen = true;
                    let m = dss.mapping?;
                    let base = match self.dsn_base {
                        Some(b) => b,
                        None if m.dsn_wide => *self.dsn_base.get_or_insert(m.dsn),
                        None => *self.dsn_base.get_or_insert(m.dsn & 0xffff_ffff),
                    };
                    let dsn = if m.dsn_wide {
                        m.dsn
                    } else {
                        expand32(m.dsn as u32, base.wrapping_add(self.data_snd_max))
                    };
                    if dss.data_fin && m.data_len > 0 {
                        let fin = dsn
                            .wrapping_add(u64::from(m.data_len) - 1)
                            .wrapping_sub(base);
                        self.data_fin = Some(fin);
                    }
                    return Some(DssMapping { dsn, ..m });
                }
                // Data on the third ACK: the implicit mapping of RFC 8684 section 3.1.
                MptcpOption::MpCapable(c) if !tcp.payload.is_empty() => {
                    let len = c.data_len?;
                    let base = self.dsn_base?;
                    self.dss_seen = true;
                    return Some(DssMapping {
                        dsn: base,
                        dsn_wide: true,
                        ssn: 1,
                        data_len: len,
                        checksum: None,
                    });
                }
                _ => {}
            }
        }
        None
    }

    /// Relative data-level range of this segment's payload under the subflow's mapping.
    fn data_range(&self, sf: usize, tcp: &TcpRepr<'_>, isn: u32, len: u64) -> Option<(u64, u64)> {
        let m = self.subflows[sf].mapping?;
        let base = self.dsn_base?;
        let offset = u64::from(tcp.seq.wrapping_sub(isn).wrapping_sub(m.ssn));
        // data_len 0 is an infinite mapping (fallback).
        let covered = if m.data_len == 0 {
            len
        } else {
            u64::from(m.data_len).checked_sub(offset)?.min(len)
        };
        let start = m.dsn.wrapping_add(offset).wrapping_sub(base);
        // A start far beyond what was sent means a stale mapping.
        if start > self.data_snd_max.saturating_add(1 << 31) {
            return None;
        }
        Some((start, start + covered))
    }

    fn record_ack(
        &mut self,
        now_ns: u64,
        path: PathId,
        local: SocketAddr,
        remote: SocketAddr,
        tcp: &TcpRepr<'_>,
    ) {
        if tcp.options.mptcp.dss().is_some() {
            self.dss_seen = true;
        }
        let sf = self.subflow_index(local, remote, path);
        if !tcp.flags.contains(TcpFlags::ACK) {
            return;
        }
        let Some(isn) = self.subflows[sf].isn else {
            return;
        };
        let s = &mut self.subflows[sf];
        let mut sub_ack = expand32(tcp.ack.wrapping_sub(isn).wrapping_sub(1), s.snd_max);
        if let Some(fin) = s.fin {
            sub_ack = sub_ack.min(fin);
        }
        if sub_ack > s.snd_max {
            // Acknowledges the SYN only (relative -1 wraps) or is bogus.
            return;
        }
        let sub_acked = sub_ack.saturating_sub(s.snd_una);
        s.snd_una = s.snd_una.max(sub_ack);

        let data_ack = if self.dss_seen {
            self.data_ack_of(tcp)
        } else {
            Some(sub_ack)
        };
        let data_acked = match data_ack {
            Some(a) if a > self.data_una => {
                let d = a - self.data_una;
                self.data_una = a;
                // Forget what the peer has: the map stays as small as the data in flight.
                while let Some((&s, &e)) = self.sent.first_key_value() {
                    if e > a {
                        break;
                    }
                    self.sent.remove(&s);
                }
                d
            }
            _ => 0,
        };
        if sub_acked > 0 {
            self.goodput.add(1 + sf, now_ns, sub_acked);
        }
        if data_acked > 0 {
            self.goodput.add(0, now_ns, data_acked);
        }
        let t = seconds(now_ns);
        match data_ack {
            Some(a) => {
                self.acks
                    .row(format_args!("{t:.6},{sf},{path},{a},{sub_ack}"));
                self.subflows[sf].ack_points.push(t, a as f64);
            }
            None => self.acks.row(format_args!("{t:.6},{sf},{path},,{sub_ack}")),
        }
        self.unacked_row(now_ns, sf);
    }

    /// Relative DATA_ACK of this packet, capped at the end of the data.
    fn data_ack_of(&self, tcp: &TcpRepr<'_>) -> Option<u64> {
        let dss = tcp.options.mptcp.dss()?;
        let ack = dss.data_ack?;
        let base = self.dsn_base?;
        let absolute = if dss.data_ack_wide {
            ack
        } else {
            expand32(ack as u32, base.wrapping_add(self.data_una))
        };
        let rel = absolute.wrapping_sub(base);
        let rel = match self.data_fin {
            Some(fin) => rel.min(fin),
            None => rel,
        };
        (rel <= self.data_snd_max).then_some(rel)
    }

    fn unacked_row(&mut self, now_ns: u64, sf: usize) {
        let t = seconds(now_ns);
        let data = self.data_snd_max.saturating_sub(self.data_una);
        let s = &mut self.subflows[sf];
        let sub = s.snd_max.saturating_sub(s.snd_una);
        s.unacked_points.push(t, sub as f64);
        self.data_unacked_points.push(t, data as f64);
        self.unacked.row(format_args!("{t:.6},{sf},{data},{sub}"));
    }

    /// Writes the goodput table and the plots, flushes everything; the files written.
    pub fn finish(self) -> io::Result<TraceSummary> {
        let Trace {
            dir,
            subflows,
            sequence,
            acks,
            unacked,
            goodput,
            retrans_points,
            data_unacked_points,
            last_ns,
            unparsed,
            unmapped,
            ..
        } = self;
        let mut files = vec![sequence.finish()?, acks.finish()?];
        files.push(write_goodput(&dir, &goodput, subflows.len())?);
        files.push(unacked.finish()?);
        let end_s = seconds(last_ns);
        files.push(plot_sequence(&dir, &subflows, &retrans_points, end_s)?);
        files.push(plot_goodput(&dir, &goodput, subflows.len(), end_s)?);
        files.push(plot_unacked(&dir, &subflows, &data_unacked_points, end_s)?);
        Ok(TraceSummary {
            files,
            subflows: subflows.len(),
            unparsed,
            unmapped,
        })
    }
}

/// The sender's 4-tuple of a parsed packet, as (sender, receiver).
fn endpoints(src: SocketAddr, dst: SocketAddr, from_sender: bool) -> (SocketAddr, SocketAddr) {
    if from_sender {
        (src, dst)
    } else {
        (dst, src)
    }
}

impl Observer for Trace {
    fn on_send(
        &mut self,
        now: Instant,
        from: Side,
        path: PathId,
        packet: &[u8],
        _outcome: SendOutcome,
    ) {
        if from != self.sender {
            return;
        }
        let now_ns = now.as_nanos();
        self.last_ns = self.last_ns.max(now_ns);
        let Ok((ip, tcp)) = parse_ip_tcp(packet) else {
            self.unparsed += 1;
            return;
        };
        let src = SocketAddr::new(ip.src(), tcp.src_port);
        let dst = SocketAddr::new(ip.dst(), tcp.dst_port);
        let (local, remote) = endpoints(src, dst, true);
        self.record_sent(now_ns, path, local, remote, &tcp);
    }

    fn on_deliver(&mut self, d: &Delivery<'_>) {
        if d.to != self.sender {
            return;
        }
        let now_ns = d.at.as_nanos();
        self.last_ns = self.last_ns.max(now_ns);
        let Ok((ip, tcp)) = parse_ip_tcp(d.packet) else {
            self.unparsed += 1;
            return;
        };
        let src = SocketAddr::new(ip.src(), tcp.src_port);
        let dst = SocketAddr::new(ip.dst(), tcp.dst_port);
        let (local, remote) = endpoints(src, dst, false);
        self.record_ack(now_ns, d.path, local, remote, &tcp);
    }
}

fn write_goodput(dir: &Path, buckets: &Buckets, subflows: usize) -> io::Result<TraceFile> {
    let mut header = String::from("time_s,interval_s,total_bps,average_bps");
    for i in 0..subflows {
        header.push_str(&format!(",subflow{i}_bps"));
    }
    let mut csv = Csv::create(dir, "goodput.csv", &header)?;
    let (interval_ns, table) = buckets.rows(GOODPUT_ROWS);
    let interval_s = seconds(interval_ns);
    let mut total_bytes = 0u64;
    let mut line = String::new();
    for (r, row) in table.iter().enumerate() {
        let start = seconds(interval_ns * r as u64);
        let end = start + interval_s;
        let total = row.first().copied().unwrap_or(0);
        total_bytes += total;
        line.clear();
        line.push_str(&format!(
            "{start:.6},{interval_s:.6},{:.0},{:.0}",
            total as f64 * 8.0 / interval_s,
            total_bytes as f64 * 8.0 / end
        ));
        for i in 0..subflows {
            let bytes = row.get(1 + i).copied().unwrap_or(0);
            line.push_str(&format!(",{:.0}", bytes as f64 * 8.0 / interval_s));
        }
        csv.row(format_args!("{line}"));
    }
    csv.finish()
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];
const RETRANSMISSION: RGBColor = RGBColor(214, 39, 40);

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// A divisor and unit name that keep byte values readable.
fn byte_unit(max: f64) -> (f64, &'static str) {
    if max >= 4.0 * 1024.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0 * 1024.0, "GiB")
    } else if max >= 4.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0, "MiB")
    } else if max >= 4.0 * 1024.0 {
        (1024.0, "KiB")
    } else {
        (1.0, "bytes")
    }
}

fn rate_unit(max: f64) -> (f64, &'static str) {
    if max >= 1e9 {
        (1e9, "Gbit/s")
    } else if max >= 1e6 {
        (1e6, "Mbit/s")
    } else if max >= 1e3 {
        (1e3, "kbit/s")
    } else {
        (1.0, "bit/s")
    }
}

fn plot_error<E: std::error::Error + Send + Sync>(
    path: &Path,
    e: DrawingAreaErrorKind<E>,
) -> io::Error {
    io::Error::other(format!("{}: {e}", path.display()))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws into `name` and returns the file with the number of points drawn.
fn with_svg(
    dir: &Path,
    name: &str,
    draw: impl FnOnce(&Area<'_>) -> Result<u64, DrawingAreaErrorKind<std::io::Error>>,
) -> io::Result<TraceFile> {
    let path = dir.join(name);
    let points = {
        let root = SVGBackend::new(&path, (1024, 640)).into_drawing_area();
        let points = draw(&root).map_err(|e| plot_error(&path, e))?;
        root.present().map_err(|e| plot_error(&path, e))?;
        points
    };
    Ok(TraceFile { path, rows: points })
}

type TimeChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The frame every trace plot shares: white background, a caption, time in
/// seconds along x (0..x_end), `y_desc` up to `y_end`.
fn time_chart<'a, 'b>(
    root: &'a Area<'b>,
    caption: &str,
    x_end: f64,
    y_end: f64,
    y_desc: &str,
) -> Result<TimeChart<'a, 'b>, DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_end, 0.0..y_end)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(y_desc)
        .draw()?;
    Ok(chart)
}

fn axis_end(max: f64) -> f64 {
    if max > 0.0 {
        max * 1.05
    } else {
        1.0
    }
}

fn plot_sequence(
    dir: &Path,
    subflows: &[Subflow],
    retrans: &Decimated,
    end_s: f64,
) -> io::Result<TraceFile> {
    let max_seq = subflows
        .iter()
        .flat_map(|s| s.seq_points.points.iter().chain(&s.ack_points.points))
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let (div, unit) = byte_unit(max_seq);
    let series = (2 * subflows.len() + 1).max(1);
    let budget = PLOT_BUDGET / series;
    with_svg(dir, "sequence.svg", |root| {
        let mut chart = time_chart(
            root,
            "Data sequence numbers over time",
            axis_end(end_s),
            axis_end(max_seq / div),
            &format!("data sequence number ({unit})"),
        )?;
        let mut points = 0u64;
        // Retransmissions first, as thin rings around the segment's dot: the
        // subflow's own line stays visible through them.
        let rtx: Vec<_> = retrans.thinned(budget).map(|(x, y)| (x, y / div)).collect();
        points += rtx.len() as u64;
        chart
            .draw_series(
                rtx.into_iter()
                    .map(|p| Circle::new(p, 4, RETRANSMISSION.stroke_width(1))),
            )?
            .label("retransmission / reinjection")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RETRANSMISSION.stroke_width(1)));
        for (i, s) in subflows.iter().enumerate() {
            let c = colour(i);
            let segs: Vec<_> = s
                .seq_points
                .thinned(budget)
                .map(|(x, y)| (x, y / div))
                .collect();
            points += segs.len() as u64;
            chart
                .draw_series(segs.into_iter().map(|p| Circle::new(p, 2, c.filled())))?
                .label(format!("subflow {i} (path {}) segments", s.path))
                .legend(move |(x, y)| Circle::new((x + 10, y), 3, c.filled()));
            let acks: Vec<_> = s
                .ack_points
                .thinned(budget)
                .map(|(x, y)| (x, y / div))
                .collect();
            points += acks.len() as u64;
            let light = c.mix(0.6);
            chart
                .draw_series(LineSeries::new(acks, light.stroke_width(2)))?
                .label(format!("subflow {i} data acks"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], light.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(points)
    })
}

fn plot_goodput(
    dir: &Path,
    buckets: &Buckets,
    subflows: usize,
    end_s: f64,
) -> io::Result<TraceFile> {
    let (interval_ns, table) = buckets.rows(GOODPUT_ROWS);
    let interval_s = seconds(interval_ns);
    let bps = |bytes: u64| bytes as f64 * 8.0 / interval_s;
    let max = table
        .iter()
        .flat_map(|row| row.iter().copied())
        .map(bps)
        .fold(0.0, f64::max);
    let (div, unit) = rate_unit(max);
    // Each point at the middle of its interval.
    let at = |r: usize| (r as f64 + 0.5) * interval_s;
    let x_end = axis_end(end_s.max(table.len() as f64 * interval_s));
    with_svg(dir, "goodput.svg", |root| {
        let mut chart = time_chart(
            root,
            "Goodput (acknowledged data)",
            x_end,
            axis_end(max / div),
            &format!("goodput ({unit}), per {:.0} ms", interval_s * 1e3),
        )?;
        let mut points = 0u64;
        for i in 0..subflows {
            let c = colour(i);
            let line: Vec<_> = table
                .iter()
                .enumerate()
                .map(|(r, row)| (at(r), bps(row.get(1 + i).copied().unwrap_or(0)) / div))
                .collect();
            points += line.len() as u64;
            chart
                .draw_series(LineSeries::new(line, c.stroke_width(2)))?
                .label(format!("subflow {i}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        let total: Vec<_> = table
            .iter()
            .enumerate()
            .map(|(r, row)| (at(r), bps(row.first().copied().unwrap_or(0)) / div))
            .collect();
        let mut sum = 0u64;
        let average: Vec<_> = table
            .iter()
            .enumerate()
            .map(|(r, row)| {
                sum += row.first().copied().unwrap_or(0);
                let t = (r + 1) as f64 * interval_s;
                (t, sum as f64 * 8.0 / t / div)
            })
            .collect();
        points += (total.len() + average.len()) as u64;
        chart
            .draw_series(LineSeries::new(total, BLACK.stroke_width(2)))?
            .label("connection (data level)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(average, grey.stroke_width(3)))?
            .label("connection average since start")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(3))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(points)
    })
}

fn plot_unacked(
    dir: &Path,
    subflows: &[Subflow],
    data: &Decimated,
    end_s: f64,
) -> io::Result<TraceFile> {
    let max = subflows
        .iter()
        .flat_map(|s| s.unacked_points.points.iter())
        .chain(&data.points)
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let (div, unit) = byte_unit(max);
    let budget = PLOT_BUDGET / (subflows.len() + 1);
    with_svg(dir, "unacked.svg", |root| {
        let mut chart = time_chart(
            root,
            "Unacknowledged data at the sender",
            axis_end(end_s),
            axis_end(max / div),
            &format!("unacknowledged data ({unit})"),
        )?;
        let mut points = 0u64;
        for (i, s) in subflows.iter().enumerate() {
            let c = colour(i);
            let line: Vec<_> = s
                .unacked_points
                .thinned(budget)
                .map(|(x, y)| (x, y / div))
                .collect();
            points += line.len() as u64;
            chart
                .draw_series(LineSeries::new(line, c.stroke_width(1)))?
                .label(format!("subflow {i} (TCP level)"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        let line: Vec<_> = data.thinned(budget).map(|(x, y)| (x, y / div)).collect();
        points += line.len() as u64;
        chart
            .draw_series(LineSeries::new(line, BLACK.stroke_width(2)))?
            .label("connection (data level)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(points)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand32_picks_the_nearest_wrap() {
        assert_eq!(expand32(5, 0), 5);
        assert_eq!(expand32(0xffff_fff0, 0x1_0000_0010), 0xffff_fff0);
        assert_eq!(expand32(0x10, 0xffff_fff0), 0x1_0000_0010);
        assert_eq!(expand32(0xffff_ffff, 0), 0xffff_ffff_ffff_ffff);
    }

    #[test]
    fn decimated_series_stay_bounded_and_spread() {
        let mut d = Decimated::default();
        for i in 0..100_000 {
            d.push(i as f64, 0.0);
        }
        assert!(d.points.len() <= SERIES_CAP);
        assert!(d.points.len() > SERIES_CAP / 2);
        let last = d.points.last().map(|p| p.0).unwrap_or(0.0);
        assert!(last > 90_000.0, "last kept point {last}");
        assert!(d.thinned(100).count() <= 100);
    }

    #[test]
    fn buckets_merge_and_keep_totals() {
        let mut b = Buckets::new();
        let mut total = 0;
        for ms in 0..20_000u64 {
            b.add(0, ms * 1_000_000, 10);
            b.add(2, ms * 1_000_000, 1);
            total += 10;
        }
        assert!(b.len <= MAX_BUCKETS);
        let (interval, rows) = b.rows(GOODPUT_ROWS);
        assert!(rows.len() <= GOODPUT_ROWS);
        // 20 s in at most 100 rows: the round interval of 200 ms.
        assert_eq!(interval, 200_000_000);
        let sum: u64 = rows.iter().map(|r| r[0]).sum();
        assert_eq!(sum, total);
        let sum2: u64 = rows.iter().map(|r| r[2]).sum();
        assert_eq!(sum2, 20_000);
        assert!(rows.iter().all(|r| r[1] == 0));
    }
}
