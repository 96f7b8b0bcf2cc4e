//! `mptcp-user decode`: prints the TCP segments of a capture with every
//! MPTCP suboption, as text or JSON lines, and with `--verify` recomputes
//! tokens, HMACs and checksums (see [`verify`]).
//!
//! Text: one line per segment,
//! `FRAME TIME SRC > DST [FLAGS] seq N ack N len N | SUBTYPE field=value ...`
//! (TIME in seconds since the first frame, FLAGS tcpdump-style: `S.` is
//! SYN+ACK). `--json`: one object per segment with the keys `frame`,
//! `src`, `dst` (`ip:port`), `flags` (list of names: `"SYN"`, `"ACK"`...),
//! `seq`, `ack` (numbers as on the wire), `len` (payload bytes) and
//! `mptcp` (list of suboptions: `subtype` plus that subtype's fields,
//! absent ones `null`; keys, tokens, nonces, HMACs and checksums as
//! lowercase `0x` hex; DSNs, SSNs, DATA_ACKs and lengths as numbers).
//! A frame that is IP/TCP but malformed gives `{"frame", "error"}`.
//!
//! With `--verify`, each check follows the segment that completed it
//! (`  check frame N KIND ok|MISMATCH (detail)`, or in JSON
//! `{"frame", "check", "ok", "detail"}`), checks that need the whole
//! capture come after the last segment, and a summary ends the output
//! (`verify: ...`, or `{"summary": {"ok", "mismatch", "checks", "skipped"}}`).
pub mod fields;
pub mod verify;

use fields::{flag_names, suboption_fields, Field};
use mptcp_engine::pcap::PcapReader;
use mptcp_engine::wire::{mptcp, parse_ip_tcp, Error, TcpRepr};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::net::SocketAddr;
use verify::{Check, Summary, Verifier};

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub json: bool,
    pub verify: bool,
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// TCP segments decoded.
    pub segments: u64,
    /// Frames that were not TCP over IP (skipped silently).
    pub other_frames: u64,
    /// TCP/IP frames that failed to parse.
    pub malformed: u64,
    /// Present with `--verify`.
    pub verify: Option<Summary>,
}

impl Report {
    /// True when nothing failed (no malformed frame, no verify mismatch).
    pub fn clean(&self) -> bool {
        self.malformed == 0 && self.verify.as_ref().is_none_or(|s| s.mismatches() == 0)
    }
}

/// One decoded segment.
pub struct Segment<'a> {
    pub frame: u64,
    /// Seconds since the first frame of the capture.
    pub time: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub tcp: TcpRepr<'a>,
}

impl Segment<'_> {
    /// The `mptcp` list: one (subtype, fields) per suboption, unknown
    /// subtypes with their raw bytes.
    pub fn suboptions(&self) -> Vec<(&'static str, Vec<(&'static str, Field)>)> {
        let mut v: Vec<_> = self
            .tcp
            .options
            .mptcp
            .iter()
            .map(suboption_fields)
            .collect();
        for (kind, raw) in self.tcp.options.unknown.iter() {
            if kind == mptcp::OPTION_KIND {
                let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                v.push(("unknown", vec![("raw", Field::Hex(format!("0x{hex}")))]));
            }
        }
        v
    }

    pub fn to_json(&self) -> Value {
        let mptcp: Vec<Value> = self
            .suboptions()
            .into_iter()
            .map(|(name, fields)| {
                let mut m = Map::new();
                m.insert("subtype".into(), Value::from(name));
                for (k, f) in fields {
                    m.insert(k.into(), f.to_json());
                }
                Value::Object(m)
            })
            .collect();
        json!({
            "frame": self.frame,
            "src": self.src.to_string(),
            "dst": self.dst.to_string(),
            "flags": flag_names(self.tcp.flags),
            "seq": self.tcp.seq,
            "ack": self.tcp.ack,
            "len": self.tcp.payload.len(),
            "mptcp": mptcp,
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} {:.6} {} > {} [{}] seq {} ack {} len {}",
            self.frame,
            self.time,
            self.src,
            self.dst,
            self.tcp.flags,
            self.tcp.seq,
            self.tcp.ack,
            self.tcp.payload.len()
        );
        for (name, fields) in self.suboptions() {
            s.push_str(" | ");
            s.push_str(name);
            for (k, f) in fields {
                s.push(' ');
                s.push_str(k);
                s.push('=');
                s.push_str(&f.to_text());
            }
        }
        s
    }
}

fn check_line(c: &Check, json: bool) -> String {
    if json {
        json!({"frame": c.frame, "check": c.kind, "ok": c.ok, "detail": c.detail}).to_string()
    } else {
        format!(
            "  check frame {} {} {} ({})",
            c.frame,
            c.kind,
            if c.ok { "ok" } else { "MISMATCH" },
            c.detail
        )
    }
}

fn summary_lines(s: &Summary, json: bool) -> Vec<String> {
    if json {
        let counts: Map<String, Value> = s
            .counts
            .iter()
            .map(|(k, (ok, bad))| (k.to_string(), json!({"ok": ok, "mismatch": bad})))
            .collect();
        let skipped: Map<String, Value> = s
            .skipped
            .iter()
            .map(|(k, n)| (k.to_string(), Value::from(*n)))
            .collect();
        let v = json!({"summary": {"ok": s.ok(), "mismatch": s.mismatches(), "checks": counts, "skipped": skipped}});
        return vec![v.to_string()];
    }
    let mut lines = vec![format!(
        "verify: {} checks, {} ok, {} MISMATCH",
        s.ok() + s.mismatches(),
        s.ok(),
        s.mismatches()
    )];
    for (k, (ok, bad)) in &s.counts {
        lines.push(format!("  {k}: {ok} ok, {bad} mismatch"));
    }
    for (k, n) in &s.skipped {
        lines.push(format!("  skipped ({k}): {n}"));
    }
    lines
}

/// Decodes a capture held in memory, writing lines to `out`.
/// Errors are `std::io::Error`s: writing to `out` failed, or the capture is
/// not one (`InvalidData`, with the reason).
pub fn decode_bytes(data: &[u8], opts: Options, out: &mut dyn Write) -> std::io::Result<Report> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let reader = PcapReader::new(data).map_err(|e| invalid("not a pcap/pcapng capture", &e))?;
    let mut report = Report::default();
    let mut verifier = opts.verify.then(Verifier::new);
    let mut t0 = None;
    for rec in reader {
        let rec = rec.map_err(|e| invalid("capture ends badly", &e))?;
        let t0 = *t0.get_or_insert(rec.ts_nanos);
        let time = rec.ts_nanos.saturating_sub(t0) as f64 / 1e9;
        let Ok((_, ip_packet)) = rec.network() else {
            report.other_frames += 1;
            continue;
        };
        let (ip, tcp) = match parse_ip_tcp(ip_packet) {
            Ok(x) => x,
            Err(Error::Unsupported) => {
                report.other_frames += 1;
                continue;
            }
            Err(e) => {
                report.malformed += 1;
                if opts.json {
                    writeln!(
                        out,
                        "{}",
                        json!({"frame": rec.number, "error": e.to_string()})
                    )?;
                } else {
                    writeln!(out, "{} malformed: {e}", rec.number)?;
                }
                continue;
            }
        };
        let seg = Segment {
            frame: rec.number,
            time,
            src: SocketAddr::new(ip.src(), tcp.src_port),
            dst: SocketAddr::new(ip.dst(), tcp.dst_port),
            tcp,
        };
        report.segments += 1;
        if opts.json {
            writeln!(out, "{}", seg.to_json())?;
        } else {
            writeln!(out, "{}", seg.to_text())?;
        }
        if let Some(v) = verifier.as_mut() {
            for c in v.segment(seg.frame, seg.src, seg.dst, &seg.tcp) {
                writeln!(out, "{}", check_line(&c, opts.json))?;
            }
        }
    }
    if let Some(mut v) = verifier {
        for c in v.finish() {
            writeln!(out, "{}", check_line(&c, opts.json))?;
        }
        for l in summary_lines(&v.summary, opts.json) {
            writeln!(out, "{l}")?;
        }
        report.verify = Some(v.summary);
    }
    Ok(report)
}

/// Decodes a capture file.
pub fn decode_file(
    path: &std::path::Path,
    opts: Options,
    out: &mut dyn Write,
) -> std::io::Result<Report> {
    let data = std::fs::read(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    decode_bytes(&data, opts, out)
}
