//! Text and JSON renderings of a [`SimReport`].

use core::fmt::{self, Write};
use std::time::Duration;

use serde_json::{json, Value};

use super::net::LinkStats;
use super::runner::{Outcome, SimReport};

/// `1536` -> `1.5 KiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `94_300_000.0` -> `94.30 Mbit/s`.
pub fn human_rate(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} Gbit/s", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.2} Mbit/s", bps / 1e6)
    } else if bps >= 1e3 {
        format!("{:.2} kbit/s", bps / 1e3)
    } else {
        format!("{bps:.0} bit/s")
    }
}

/// `Duration::from_micros(1500)` -> `1.500 ms`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.3} us", s * 1e6)
    }
}

fn link_json(l: &LinkStats) -> Value {
    json!({
        "offered_packets": l.offered_packets,
        "offered_bytes": l.offered_bytes,
        "delivered_packets": l.delivered_packets,
        "delivered_bytes": l.delivered_bytes,
        "dropped_loss": l.dropped_loss,
        "dropped_queue": l.dropped_queue,
        "dropped_mtu": l.dropped_mtu,
        "dropped_down": l.dropped_down,
        "duplicated": l.duplicated,
        "reordered": l.reordered,
        "max_queue_bytes": l.max_queue_bytes,
    })
}

impl SimReport {
    /// One JSON object; the keys of the single-path output stay as paths grow.
    pub fn to_json(&self) -> Value {
        let paths: Vec<Value> = self
            .paths
            .iter()
            .map(|p| {
                json!({
                    "path": p.path,
                    "spec": p.spec.source,
                    "bytes": p.bytes,
                    "retransmits": p.retransmits,
                    "received": p.received,
                    "client_retransmits": p.client.retransmits,
                    "server_retransmits": p.server.retransmits,
                    "link": {
                        "forward": link_json(&p.forward),
                        "reverse": link_json(&p.reverse),
                    },
                })
            })
            .collect();
        let subflows: Vec<Value> = self
            .subflows
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "path": s.path,
                    "bytes": s.stats.bytes_sent,
                    "retransmits": s.stats.retransmits,
                    "reinjected": s.stats.bytes_reinjected,
                })
            })
            .collect();
        json!({
            "bytes": self.bytes,
            "received": self.received,
            "duration_s": self.duration.as_secs_f64(),
            "goodput_bps": self.goodput_bps,
            "byte_exact": self.byte_exact,
            "first_mismatch": self.first_mismatch,
            "end_of_stream": self.end_of_stream,
            "outcome": self.outcome.as_str(),
            "established_s": self.established.map(|d| d.as_secs_f64()),
            "seed": self.seed,
            "paths": paths,
            "subflows": subflows,
        })
    }
}

fn link_line(out: &mut String, name: &str, l: &LinkStats) -> fmt::Result {
    write!(
        out,
        "    {name}: {} packets, {} delivered",
        l.offered_packets,
        human_bytes(l.delivered_bytes)
    )?;
    for (count, what) in [
        (l.dropped_loss, "lost"),
        (l.dropped_queue, "queue drops"),
        (l.dropped_mtu, "over MTU"),
        (l.dropped_down, "dropped while down"),
        (l.duplicated, "duplicated"),
        (l.reordered, "reordered"),
    ] {
        if count > 0 {
            write!(out, ", {count} {what}")?;
        }
    }
    writeln!(out)
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let n = self.paths.len();
        writeln!(
            out,
            "{} over {n} path{} (seed {}): {}, {}",
            human_bytes(self.bytes),
            if n == 1 { "" } else { "s" },
            self.seed,
            self.outcome.as_str().replace('_', " "),
            if self.byte_exact {
                "byte-exact".to_string()
            } else {
                match self.first_mismatch {
                    Some(at) => format!("NOT byte-exact (first wrong byte at offset {at})"),
                    None => format!(
                        "NOT byte-exact ({} of {} received{})",
                        human_bytes(self.received),
                        human_bytes(self.bytes),
                        if self.end_of_stream {
                            ""
                        } else {
                            ", no end of stream"
                        }
                    ),
                }
            }
        )?;
        if self.outcome == Outcome::Complete {
            write!(out, "  completion {}", human_duration(self.duration))?;
        } else {
            write!(out, "  stopped after {}", human_duration(self.duration))?;
        }
        if let Some(e) = self.established {
            write!(out, " (established after {})", human_duration(e))?;
        }
        writeln!(out, ", goodput {}", human_rate(self.goodput_bps))?;
        for p in &self.paths {
            writeln!(
                out,
                "  path {} [{}]: sent {}, {} retransmits, received {}",
                p.path,
                p.spec.source,
                human_bytes(p.bytes),
                p.retransmits,
                human_bytes(p.received)
            )?;
            link_line(&mut out, "forward", &p.forward)?;
            link_line(&mut out, "reverse", &p.reverse)?;
        }
        for s in &self.subflows {
            writeln!(
                out,
                "  subflow {} on path {}: sent {}, {} retransmits, {} reinjected",
                s.id,
                s.path,
                human_bytes(s.stats.bytes_sent),
                s.stats.retransmits,
                human_bytes(s.stats.bytes_reinjected)
            )?;
        }
        f.write_str(out.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_rate(94_300_000.0), "94.30 Mbit/s");
        assert_eq!(human_rate(1.2e9), "1.20 Gbit/s");
        assert_eq!(human_rate(800.0), "800 bit/s");
        assert_eq!(human_duration(Duration::from_micros(1500)), "1.500 ms");
        assert_eq!(human_duration(Duration::from_millis(2500)), "2.500 s");
    }
}
