//! MPTCP v0 (RFC 6824) end to end in the simulator: engine client to
//! engine server with DSS checksums, an ADD_ADDR-learnt path and joins;
//! the capture verifies with `decode --verify`, and Wireshark's own v0
//! derivations (tshark's MPTCP analysis) agree with the engine's keys.
//! Version negotiation: each side falls back to TCP on a version it does
//! not take.
use mptcp_decode::{decode_bytes, Options};
use mptcp_engine::crypto::Version;
use mptcp_engine::mptcp::{MptcpConfig, Versions};
use mptcp_engine::pcap::PcapReader;
use mptcp_engine::wire::parse_ip_tcp;
use mptcp_engine::wire::tcp::TcpFlags;
use mptcp_sim::{
    parse_path_spec, run_with, Hooks, MptcpFactory, PcapObserver, SimConfig, SimReport,
};
use serde_json::Value;

const PATHS: [&str; 2] = ["rate=40mbit,delay=10ms,loss=0.3%", "rate=20mbit,delay=30ms"];

/// Runs a transfer and returns its report and capture (delivered packets).
fn run(config: MptcpConfig, signal: bool, bytes: u64, seed: u64) -> (SimReport, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.pcap");
    let mut pcap = PcapObserver::create(&path).unwrap();
    let paths = PATHS.iter().map(|p| parse_path_spec(p).unwrap()).collect();
    let cfg = SimConfig::new(paths, bytes, seed);
    let r = run_with(
        &cfg,
        &mut MptcpFactory { config, signal },
        Hooks {
            observer: Some(&mut pcap),
            progress: None,
        },
    );
    pcap.finish().unwrap();
    (r, std::fs::read(&path).unwrap())
}

fn v0_config() -> MptcpConfig {
    MptcpConfig {
        client_version: Version::V0,
        checksum: true,
        ..Default::default()
    }
}

/// `decode --verify --json` lines.
fn verify_json(capture: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    decode_bytes(
        capture,
        Options {
            json: true,
            verify: true,
        },
        &mut out,
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The MP_CAPABLE version on the SYN and on the SYN/ACK of the first
/// connection (None: no MP_CAPABLE).
fn handshake_versions(capture: &[u8]) -> (Option<u8>, Option<u8>) {
    let mut syn = None;
    let mut synack = None;
    for rec in PcapReader::new(capture).unwrap() {
        let rec = rec.unwrap();
        let (_, tcp) = parse_ip_tcp(rec.network().unwrap().1).unwrap();
        if !tcp.flags.contains(TcpFlags::SYN) || tcp.options.mptcp.mp_join().is_some() {
            continue;
        }
        let v = tcp.options.mptcp.mp_capable().map(|c| c.version);
        if tcp.flags.contains(TcpFlags::ACK) {
            synack.get_or_insert(v);
        } else {
            syn.get_or_insert(v);
        }
    }
    (syn.flatten(), synack.flatten())
}

#[test]
fn v0_engine_to_engine_with_checksums_join_and_add_addr() {
    for seed in 1..=3 {
        let (r, capture) = run(v0_config(), true, 3 << 20, seed);
        assert!(r.byte_exact, "seed {seed}: {:?}", r.outcome);
        assert_eq!(handshake_versions(&capture), (Some(0), Some(0)));
        let lines = verify_json(&capture);
        let summary = &lines.last().unwrap()["summary"];
        assert_eq!(summary["mismatch"], 0, "seed {seed}: {summary}");
        assert_eq!(summary["versions"]["0"], 1, "{summary}");
        for k in [
            "dss_checksum",
            "token",
            "join_synack_hmac",
            "join_ack_hmac",
            "idsn",
        ] {
            assert!(
                summary["checks"][k]["ok"].as_u64().unwrap_or(0) > 0,
                "seed {seed}: no {k} check: {summary}"
            );
        }
        // The server's second address came only by ADD_ADDR (v0 form),
        // and subflows went to it and carried data.
        let add = lines.iter().find(|l| {
            l["mptcp"]
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o["subtype"] == "add_addr"))
        });
        let add = add.expect("an ADD_ADDR")["mptcp"][0].clone();
        assert_eq!(add["ipver"], 4, "{add}");
        assert!(add["hmac"].is_null() && add["echo"] == false, "{add}");
        let learnt = add["addr"].as_str().unwrap().to_string();
        let to_learnt = lines.iter().any(|l| {
            l["dst"].as_str().is_some_and(|d| d.starts_with(&learnt))
                && l["len"].as_u64().unwrap_or(0) > 0
        });
        assert!(to_learnt, "seed {seed}: no data to {learnt}");
        // No MP_TCPRST in v0.
        assert!(!lines.iter().any(|l| l["mptcp"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["subtype"] == "mp_tcprst"))));
    }
}

#[test]
fn v0_crypto_agrees_with_wireshark_on_an_engine_capture() {
    let (r, capture) = run(v0_config(), true, 1 << 20, 7);
    assert!(r.byte_exact);
    let lines = verify_json(&capture);
    let conn = lines
        .iter()
        .find_map(|l| l.get("connection"))
        .expect("a connection line")
        .clone();
    assert_eq!(conn["version"], 0);
    let key = |k: &str| u64::from_str_radix(&conn[k].as_str().unwrap()[2..], 16).unwrap();
    let (kc, ks) = (key("client_key"), key("server_key"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v0.pcap");
    std::fs::write(&path, &capture).unwrap();
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-o",
            "mptcp.analyze_mptcp:TRUE",
        ])
        .args(["-Y", "mptcp.expected_token || mptcp.expected_idsn"])
        .args(["-T", "fields", "-E", "occurrence=f"])
        .args([
            "-e",
            "tcp.srcport",
            "-e",
            "mptcp.expected_token",
            "-e",
            "mptcp.expected_idsn",
        ])
        .output()
        .expect("tshark is installed (the project's setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Per sender (client port 40000 / server port 5201): tshark's token and IDSN.
    let mut seen = std::collections::BTreeMap::new();
    for line in text.lines() {
        let c: Vec<&str> = line.split('\t').collect();
        if c.len() < 3 || c[1].is_empty() {
            continue;
        }
        let token: u32 = match c[1].strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).unwrap(),
            None => c[1].parse().unwrap(),
        };
        seen.insert(c[0].to_string(), (token, c[2].parse::<u64>().unwrap()));
    }
    let want_c = (Version::V0.token(kc), Version::V0.idsn(kc));
    let want_s = (Version::V0.token(ks), Version::V0.idsn(ks));
    let client_port = conn["client"].as_str().unwrap().rsplit(':').next().unwrap();
    let server_port = conn["server"].as_str().unwrap().rsplit(':').next().unwrap();
    assert_eq!(seen.get(client_port), Some(&want_c), "tshark:\n{text}");
    assert_eq!(seen.get(server_port), Some(&want_s), "tshark:\n{text}");
    // And they are not the v1 (SHA-256) values.
    assert_ne!(want_c.0, Version::V1.token(kc));
}

#[test]
fn server_answers_each_version_in_kind_and_refuses_disabled_ones() {
    let cases = [
        // (client offers, server takes, expected SYN/ACK version)
        (Version::V0, Versions::default(), Some(0)),
        (Version::V1, Versions::default(), Some(1)),
        (
            Version::V0,
            Versions {
                v0: false,
                v1: true,
            },
            None,
        ),
        (
            Version::V1,
            Versions {
                v0: true,
                v1: false,
            },
            None,
        ),
    ];
    for (offer, takes, want) in cases {
        let config = MptcpConfig {
            client_version: offer,
            server_versions: takes,
            ..Default::default()
        };
        let (r, capture) = run(config, false, 256 << 10, 1);
        assert!(r.byte_exact, "{offer:?} to {takes:?}: {:?}", r.outcome);
        let (syn, synack) = handshake_versions(&capture);
        assert_eq!(syn, Some(offer.number()));
        assert_eq!(synack, want, "{offer:?} to {takes:?}");
    }
}

#[test]
fn versions_parse() {
    assert_eq!(Versions::parse("1,0"), Ok(Versions { v0: true, v1: true }));
    assert_eq!(
        Versions::parse("0"),
        Ok(Versions {
            v0: true,
            v1: false
        })
    );
    assert!(Versions::parse("2").is_err());
    assert!(Versions::parse("").is_err());
}
