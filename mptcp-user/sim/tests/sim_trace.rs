//! `sim --trace DIR`: the sender-side trace, from real simulated TCP runs and
//! from hand-built MPTCP segments on two subflows.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use mptcp_engine::time::Instant;
use mptcp_engine::wire::mptcp::{Dss, DssMapping, MpCapable};
use mptcp_engine::wire::{emit_ip_tcp, IpRepr, MptcpOption, TcpFlags, TcpOptions, TcpRepr};
use mptcp_sim::tcp::TcpFactory;
use mptcp_sim::trace::{Trace, TraceSummary};
use mptcp_sim::{
    parse_path_spec, run_with, Delivery, Hooks, Observer, SendOutcome, Side, SimConfig, SimReport,
};

mod trace_checks;
use trace_checks::*;

fn traced_tcp_run(spec: &str, bytes: u64, seed: u64, dir: &Path) -> (TraceSummary, SimReport) {
    let cfg = SimConfig::new(vec![parse_path_spec(spec).expect("spec")], bytes, seed);
    let mut trace = Trace::create(dir).expect("create trace");
    let report = run_with(
        &cfg,
        &mut TcpFactory::default(),
        Hooks {
            observer: Some(&mut trace),
            progress: None,
        },
    );
    assert!(report.byte_exact, "{spec}: {:?}", report.outcome);
    (trace.finish().expect("finish trace"), report)
}

#[test]
fn lossy_tcp_run_traces_retransmissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = 2 << 20;
    let (summary, report) = traced_tcp_run("rate=20mbit,delay=20ms,loss=2%", bytes, 3, dir.path());
    assert_eq!(summary.subflows, 1);
    assert_eq!(summary.unparsed, 0);
    assert_eq!(summary.files.len(), 7);
    let retransmissions = check_tcp_trace(dir.path(), bytes);
    assert!(retransmissions > 0);
    // The engine's own count, seen from the outside.
    assert_eq!(retransmissions as u64, report.paths[0].client.retransmits);
    let text = summary.to_string();
    assert!(text.starts_with("trace: wrote "), "{text}");
    assert!(text.contains("sequence.csv (") && text.contains("unacked.svg ("));
}

#[test]
fn clean_tcp_run_has_no_retransmissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = 1 << 20;
    // A queue deep enough that slow start never overflows it.
    let (summary, report) =
        traced_tcp_run("rate=50mbit,delay=10ms,queue=4MiB", bytes, 1, dir.path());
    assert_eq!(summary.subflows, 1);
    assert_eq!(report.paths[0].forward.dropped_queue, 0);
    assert_eq!(check_tcp_trace(dir.path(), bytes), 0);
}

#[test]
fn long_transfer_keeps_plots_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = 24 << 20;
    traced_tcp_run("rate=1gbit,delay=2ms,loss=0.1%", bytes, 5, dir.path());
    let rows = Table::read(&dir.path().join("sequence.csv")).rows.len();
    assert!(rows as u64 >= bytes / 1460, "{rows} rows");
    let svg = read_svg(dir.path(), "sequence.svg");
    assert!(svg.matches("<circle").count() < 13_000);
}
// Hand-built MPTCP: the client (sender) on two subflows, the server acking.

const CLIENT_KEY: u64 = 0x0123_4567_89ab_cdef;
const ISN: [u32; 2] = [1000, 0xffff_fff0];

fn client(sf: usize) -> (IpAddr, u16) {
    (
        IpAddr::V4(Ipv4Addr::new(10, 0, sf as u8, 1)),
        40000 + sf as u16,
    )
}

fn server(sf: usize) -> (IpAddr, u16) {
    (IpAddr::V4(Ipv4Addr::new(10, 0, sf as u8, 2)), 5201)
}

fn packet(
    from: (IpAddr, u16),
    to: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    mptcp: Option<MptcpOption>,
    payload: &[u8],
) -> Vec<u8> {
    let mut options = TcpOptions::default();
    if let Some(o) = mptcp {
        options.mptcp.push(o).expect("option fits");
    }
    let tcp = TcpRepr {
        src_port: from.1,
        dst_port: to.1,
        seq,
        ack,
        flags,
        window: 65535,
        urgent: 0,
        options,
        payload,
    };
    let ip = IpRepr::new_tcp(from.0, to.0).expect("same family");
    let mut buf = vec![0u8; 2048];
    let n = emit_ip_tcp(&ip, &tcp, &mut buf).expect("emit");
    buf.truncate(n);
    buf
}

struct Feeder {
    trace: Trace,
    idsn: u64,
    t_ms: u64,
}

impl Feeder {
    fn at(&mut self, ms: u64) -> Instant {
        self.t_ms = self.t_ms.max(ms);
        Instant::from_nanos(ms * 1_000_000)
    }

    fn send(&mut self, ms: u64, sf: usize, pkt: Vec<u8>) {
        let now = self.at(ms);
        self.trace.on_send(
            now,
            Side::Client,
            sf,
            &pkt,
            SendOutcome::Queued { duplicated: false },
        );
    }

    fn deliver(&mut self, ms: u64, sf: usize, pkt: Vec<u8>) {
        let at = self.at(ms);
        self.trace.on_deliver(&Delivery {
            at,
            to: Side::Client,
            path: sf,
            packet: &pkt,
        });
    }

    /// A data segment on `sf` at relative subflow seq `ssn` (1 = first byte), with an optional mapping.
    fn data(
        &mut self,
        ms: u64,
        sf: usize,
        ssn: u32,
        len: usize,
        mapping: Option<(u64, u32, u16, bool)>,
    ) {
        let dss = mapping.map(|(dsn_rel, map_ssn, data_len, wide)| {
            let dsn = self.idsn.wrapping_add(1).wrapping_add(dsn_rel);
            MptcpOption::Dss(Dss {
                data_fin: false,
                data_ack: Some(1),
                data_ack_wide: false,
                mapping: Some(DssMapping {
                    dsn: if wide { dsn } else { dsn & 0xffff_ffff },
                    dsn_wide: wide,
                    ssn: map_ssn,
                    data_len,
                    checksum: None,
                }),
            })
        });
        let payload = vec![0x5a; len];
        let pkt = packet(
            client(sf),
            server(sf),
            ISN[sf].wrapping_add(ssn),
            1,
            TcpFlags::ACK,
            dss,
            &payload,
        );
        self.send(ms, sf, pkt);
    }

    /// The server acks `sub_ack` bytes on `sf` and data up to `data_ack` (relative).
    fn ack(&mut self, ms: u64, sf: usize, sub_ack: u32, data_ack: u64) {
        let dss = MptcpOption::Dss(Dss {
            data_fin: false,
            data_ack: Some(self.idsn.wrapping_add(1).wrapping_add(data_ack)),
            data_ack_wide: true,
            mapping: None,
        });
        let pkt = packet(
            server(sf),
            client(sf),
            1,
            ISN[sf].wrapping_add(1).wrapping_add(sub_ack),
            TcpFlags::ACK,
            Some(dss),
            &[],
        );
        self.deliver(ms, sf, pkt);
    }
}

#[test]
fn two_mptcp_subflows_map_dss_to_data_sequence_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = Feeder {
        trace: Trace::create(dir.path()).expect("trace"),
        idsn: mptcp_engine::crypto::idsn(CLIENT_KEY),
        t_ms: 0,
    };
    // MP_CAPABLE SYN on subflow 0 gives the key (and so the IDSN); an MP_JOIN-less SYN on 1 its ISN.
    let syn0 = packet(
        client(0),
        server(0),
        ISN[0],
        0,
        TcpFlags::SYN,
        Some(MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: MpCapable::FLAG_HMAC_SHA256,
            sender_key: Some(CLIENT_KEY),
            ..Default::default()
        })),
        &[],
    );
    f.send(0, 0, syn0);
    let syn1 = packet(client(1), server(1), ISN[1], 0, TcpFlags::SYN, None, &[]);
    f.send(5, 1, syn1);

    // Subflow 0: one mapping of 2000 bytes over two segments (the second carries no DSS).
    f.data(10, 0, 1, 1000, Some((0, 1, 2000, true)));
    f.data(10, 0, 1001, 1000, None);
    // Subflow 1: data 2000..3000 with a 32-bit DSN; its subflow seq wraps past 2^32.
    f.data(11, 1, 1, 1000, Some((2000, 1, 1000, false)));
    // Subflow 0 again: data 3000..4000, lost; later reinjected on subflow 1.
    f.data(12, 0, 2001, 1000, Some((3000, 2001, 1000, true)));
    f.ack(30, 0, 2000, 2000);
    f.ack(31, 1, 1000, 3000);
    f.data(40, 1, 1001, 1000, Some((3000, 1001, 1000, true)));
    f.ack(60, 1, 2000, 4000);
    // A DATA_ACK beyond anything sent is ignored.
    f.ack(61, 1, 2000, 9000);

    let summary = f.trace.finish().expect("finish");
    assert_eq!(summary.subflows, 2);
    assert_eq!(summary.unparsed, 0);
    assert_eq!(summary.unmapped, 0);

    let seq = Table::read(&dir.path().join("sequence.csv"));
    let rows: Vec<(u64, u64, u64, u64)> = seq
        .rows
        .iter()
        .map(|r| {
            (
                r[1].parse().expect("subflow"),
                r[3].parse().expect("start"),
                r[4].parse().expect("end"),
                r[5].parse().expect("retransmission"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (0, 0, 1000, 0),
            (0, 1000, 2000, 0),
            (1, 2000, 3000, 0),
            (0, 3000, 4000, 0),
            (1, 3000, 4000, 1),
        ]
    );

    let acks = Table::read(&dir.path().join("acks.csv"));
    let data_acks = acks.u64s("data_ack");
    assert_eq!(data_acks, [2000, 3000, 4000]);
    let sub_acks: Vec<(u64, u64)> = acks
        .rows
        .iter()
        .map(|r| (r[1].parse().expect("sf"), r[4].parse().expect("sub ack")))
        .collect();
    // The last row's DATA_ACK (beyond what was sent) is left empty.
    assert_eq!(sub_acks, [(0, 2000), (1, 1000), (1, 2000), (1, 2000)]);

    let unacked = Table::read(&dir.path().join("unacked.csv"));
    let data_unacked = unacked.u64s("unacked_bytes");
    assert_eq!(data_unacked.iter().max().copied(), Some(4000));
    assert_eq!(data_unacked.last().copied(), Some(0));
    // Subflow 0 still has its lost 1000 bytes outstanding at the TCP level.
    let last_sf0 = unacked
        .rows
        .iter()
        .rev()
        .find(|r| r[1] == "0")
        .map(|r| r[3].clone());
    assert_eq!(last_sf0.as_deref(), Some("1000"));

    let goodput = Table::read(&dir.path().join("goodput.csv"));
    assert_eq!(
        goodput.header,
        [
            "time_s",
            "interval_s",
            "total_bps",
            "average_bps",
            "subflow0_bps",
            "subflow1_bps"
        ]
    );
    let interval = goodput.f64s("interval_s")[0];
    let bytes_of =
        |col: &str| -> f64 { goodput.f64s(col).iter().map(|b| b * interval / 8.0).sum() };
    assert!((bytes_of("total_bps") - 4000.0).abs() < 1.0);
    assert!((bytes_of("subflow0_bps") - 2000.0).abs() < 1.0);
    assert!((bytes_of("subflow1_bps") - 2000.0).abs() < 1.0);

    let svg = read_svg(dir.path(), "sequence.svg");
    assert!(svg.contains("subflow 1 (path 1)"));
    read_svg(dir.path(), "goodput.svg");
    read_svg(dir.path(), "unacked.svg");
}

#[test]
fn data_fin_does_not_count_as_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = Feeder {
        trace: Trace::create(dir.path()).expect("trace"),
        idsn: mptcp_engine::crypto::idsn(CLIENT_KEY),
        t_ms: 0,
    };
    let syn = packet(
        client(0),
        server(0),
        ISN[0],
        0,
        TcpFlags::SYN,
        Some(MptcpOption::MpCapable(MpCapable {
            version: 1,
            sender_key: Some(CLIENT_KEY),
            ..Default::default()
        })),
        &[],
    );
    f.send(0, 0, syn);
    // 500 bytes and the DATA_FIN in one mapping of length 501.
    let dss = MptcpOption::Dss(Dss {
        data_fin: true,
        data_ack: None,
        data_ack_wide: false,
        mapping: Some(DssMapping {
            dsn: f.idsn.wrapping_add(1),
            dsn_wide: true,
            ssn: 1,
            data_len: 501,
            checksum: None,
        }),
    });
    let seg = packet(
        client(0),
        server(0),
        ISN[0] + 1,
        1,
        TcpFlags::ACK,
        Some(dss),
        &[7; 500],
    );
    f.send(10, 0, seg);
    f.ack(30, 0, 500, 501);
    let summary = f.trace.finish().expect("finish");
    assert_eq!(summary.subflows, 1);
    let acks = Table::read(&dir.path().join("acks.csv"));
    assert_eq!(acks.u64s("data_ack"), [500]);
    let seq = Table::read(&dir.path().join("sequence.csv"));
    assert_eq!(seq.u64s("dsn_end"), [500]);
}
#[test]
fn retransmissions_are_rings_under_the_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    traced_tcp_run("rate=20mbit,delay=20ms,loss=2%", 2 << 20, 3, dir.path());
    let svg = read_svg(dir.path(), "sequence.svg");
    // plotters writes #RRGGBB in upper case; the retransmission colour is (214, 39, 40).
    let red = "stroke=\"#D62728\"";
    let rings: Vec<usize> = svg
        .match_indices("<circle")
        .filter(|(i, _)| svg[*i..].split('>').next().is_some_and(|c| c.contains(red)))
        .map(|(i, _)| i)
        .collect();
    assert!(rings.len() > 5, "{} retransmission markers", rings.len());
    for &i in &rings {
        let tag = svg[i..].split('>').next().unwrap();
        assert!(
            tag.contains("fill=\"none\""),
            "a filled marker hides the line: {tag}"
        );
    }
    // Drawn before (under) the first segment dot of the subflow; only the
    // legend's ring comes after.
    let first_dot = svg
        .match_indices("<circle")
        .map(|(i, _)| i)
        .find(|i| !rings.contains(i))
        .expect("segment dots");
    let under = rings.iter().filter(|r| **r < first_dot).count();
    assert_eq!(under, rings.len() - 1);
}
