//! Checks of a trace directory shared by the simulator's tests and the
//! front end's `sim --trace` tests.
#![allow(dead_code)]

use std::path::Path;

/// A CSV file as its header and rows of cells.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn read(path: &Path) -> Table {
        let text = std::fs::read_to_string(path).expect("read csv");
        let mut lines = text.lines();
        let header = lines
            .next()
            .expect("header line")
            .split(',')
            .map(String::from)
            .collect::<Vec<_>>();
        let rows = lines
            .map(|l| l.split(',').map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>();
        for r in &rows {
            assert_eq!(r.len(), header.len(), "{}: row {r:?}", path.display());
        }
        Table { header, rows }
    }

    pub fn col(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.header))
    }

    pub fn f64s(&self, name: &str) -> Vec<f64> {
        let c = self.col(name);
        self.rows
            .iter()
            .map(|r| r[c].parse().expect("number"))
            .collect()
    }

    /// Non-empty cells of an integer column.
    pub fn u64s(&self, name: &str) -> Vec<u64> {
        let c = self.col(name);
        self.rows
            .iter()
            .filter(|r| !r[c].is_empty())
            .map(|r| r[c].parse().expect("integer"))
            .collect()
    }
}

pub fn assert_monotone(t: &Table, what: &str) {
    let times = t.f64s("time_s");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "{what}: time goes backwards"
    );
}

/// Tags balance (a small check that the SVG is well-formed XML).
pub fn assert_well_formed(svg: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("");
        if tag.starts_with('/') {
            assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
        } else {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed tags {stack:?}");
}

pub fn read_svg(dir: &Path, name: &str) -> String {
    let svg = std::fs::read_to_string(dir.join(name)).expect("read svg");
    assert!(
        svg.trim_start().starts_with("<svg"),
        "{name} does not start with <svg"
    );
    assert!(svg.trim_end().ends_with("</svg>"), "{name} not closed");
    assert!(svg.len() < 2_000_000, "{name} is {} bytes", svg.len());
    assert_well_formed(&svg);
    svg
}

/// What every complete single-path TCP trace must show; returns the retransmission rows.
pub fn check_tcp_trace(dir: &Path, bytes: u64) -> usize {
    let seq = Table::read(&dir.join("sequence.csv"));
    assert_eq!(
        seq.header,
        [
            "time_s",
            "subflow",
            "path",
            "dsn_start",
            "dsn_end",
            "retransmission"
        ]
    );
    assert_monotone(&seq, "sequence.csv");
    let starts = seq.u64s("dsn_start");
    let ends = seq.u64s("dsn_end");
    let retrans = seq.u64s("retransmission");
    assert!(seq.u64s("subflow").iter().all(|&s| s == 0));
    // First transmissions tile the stream from 0 to the end, in order.
    let mut next = 0;
    for i in 0..starts.len() {
        assert!(starts[i] < ends[i] && ends[i] <= bytes, "row {i}");
        if retrans[i] == 0 {
            assert_eq!(starts[i], next, "row {i}: first transmission out of order");
            next = ends[i];
        } else {
            assert!(starts[i] < next, "row {i}: retransmission of unsent data");
        }
    }
    assert_eq!(next, bytes);

    let acks = Table::read(&dir.join("acks.csv"));
    assert_eq!(
        acks.header,
        ["time_s", "subflow", "path", "data_ack", "subflow_ack"]
    );
    assert_monotone(&acks, "acks.csv");
    let data_acks = acks.u64s("data_ack");
    // The run stops when the server has read everything, so the acks of the
    // last round trip may still be on their way: the trace ends short of
    // `bytes` by what is outstanding then, and unacked.csv says exactly that.
    let highest_ack = data_acks.iter().max().copied().unwrap_or(0);
    assert!(
        highest_ack <= bytes && highest_ack >= bytes / 2,
        "{highest_ack}"
    );
    assert_eq!(data_acks.last().copied(), Some(highest_ack));

    let unacked = Table::read(&dir.join("unacked.csv"));
    assert_eq!(
        unacked.header,
        [
            "time_s",
            "subflow",
            "unacked_bytes",
            "subflow_unacked_bytes"
        ]
    );
    assert_monotone(&unacked, "unacked.csv");
    assert_eq!(
        unacked.u64s("unacked_bytes").last().copied(),
        Some(bytes - highest_ack)
    );
    assert!(unacked.u64s("unacked_bytes").iter().any(|&u| u > 0));

    let goodput = Table::read(&dir.join("goodput.csv"));
    assert_eq!(
        goodput.header,
        [
            "time_s",
            "interval_s",
            "total_bps",
            "average_bps",
            "subflow0_bps"
        ]
    );
    assert_monotone(&goodput, "goodput.csv");
    let interval = goodput.f64s("interval_s")[0];
    let delivered: f64 = goodput
        .f64s("total_bps")
        .iter()
        .map(|bps| bps * interval / 8.0)
        .sum();
    // Rates are rounded to whole bits per second per row.
    let slack = goodput.rows.len() as f64 * interval;
    assert!(
        (delivered - highest_ack as f64).abs() <= slack + 1.0,
        "goodput rows add up to {delivered} bytes, not {highest_ack}"
    );

    let sequence_svg = read_svg(dir, "sequence.svg");
    for text in [
        "time (s)",
        "data sequence number",
        "subflow 0",
        "retransmission",
    ] {
        assert!(sequence_svg.contains(text), "sequence.svg lacks {text}");
    }
    assert!(sequence_svg.matches("<circle").count() > 100);
    let goodput_svg = read_svg(dir, "goodput.svg");
    for text in ["time (s)", "goodput (", "bit/s", "average"] {
        assert!(goodput_svg.contains(text), "goodput.svg lacks {text}");
    }
    assert!(goodput_svg.contains("<polyline"));
    let unacked_svg = read_svg(dir, "unacked.svg");
    for text in ["time (s)", "unacknowledged data (", "TCP level"] {
        assert!(unacked_svg.contains(text), "unacked.svg lacks {text}");
    }
    retrans.iter().filter(|&&r| r == 1).count()
}
