//! `mptcp-user decode --verify` against the Linux 6.18 kernel captures:
//! every check passes, every kind of check runs, and a flipped byte in a
//! key, an HMAC or checksummed payload is reported with a non-zero exit.
use mptcp_decode::{decode_bytes, Options, Report};
use mptcp_engine::pcap::PcapReader;
use serde_json::Value;
use std::process::Command;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/linux-6.18/"
);

fn load(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture present")
}

fn run(data: &[u8], json: bool, verify: bool) -> (Report, String) {
    let mut out = Vec::new();
    let report = decode_bytes(data, Options { json, verify }, &mut out).expect("decodes");
    (report, String::from_utf8(out).expect("utf-8"))
}

fn json_lines(data: &[u8]) -> Vec<Value> {
    let (_, text) = run(data, true, false);
    text.lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// Subtype entries of one frame's `mptcp` list.
fn entries<'a>(lines: &'a [Value], frame: u64, subtype: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["frame"] == frame)
        .flat_map(|l| l["mptcp"].as_array().into_iter().flatten())
        .filter(|e| e["subtype"] == subtype)
        .collect()
}

fn first_frame_with(lines: &[Value], pred: impl Fn(&Value) -> bool) -> (u64, Value) {
    for l in lines {
        for e in l["mptcp"].as_array().into_iter().flatten() {
            if pred(e) {
                return (l["frame"].as_u64().unwrap(), e.clone());
            }
        }
    }
    panic!("no suboption matches");
}

fn hex_to_bytes(s: &str) -> Vec<u8> {
    let s = s.trim_start_matches("0x");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Flips the last byte of the first occurrence of `pattern` inside frame
/// `frame`'s captured bytes; returns the modified file.
fn flip_in_frame(file: &[u8], frame: u64, pattern: &[u8]) -> Vec<u8> {
    let rec = PcapReader::new(file)
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| r.number == frame)
        .expect("frame exists");
    let base = rec.data.as_ptr() as usize - file.as_ptr() as usize;
    let pos = rec
        .data
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("pattern in frame");
    let mut out = file.to_vec();
    out[base + pos + pattern.len() - 1] ^= 0x01;
    out
}

/// Counts DSS mappings carrying a checksum, from the plain decode.
fn dss_checksums(lines: &[Value]) -> u64 {
    lines
        .iter()
        .flat_map(|l| l["mptcp"].as_array().into_iter().flatten())
        .filter(|e| e["subtype"] == "dss" && !e["checksum"].is_null())
        .count() as u64
}

fn assert_clean(name: &str, kinds: &[&str]) -> Report {
    let data = load(name);
    let (report, text) = run(&data, false, true);
    let s = report.verify.clone().unwrap();
    assert_eq!(s.mismatches(), 0, "{name}:\n{text}");
    assert!(report.clean());
    assert_eq!(report.malformed, 0);
    for k in kinds {
        assert!(s.count(k).0 > 0, "{name}: no {k} check ran\n{text}");
    }
    assert!(!text.contains(" MISMATCH ("), "{text}");
    assert!(text.contains(&format!("{} ok, 0 MISMATCH", s.ok())));
    report
}

const HANDSHAKE_KINDS: [&str; 6] = [
    "mp_capable_keys",
    "token",
    "idsn",
    "join_synack_hmac",
    "join_ack_hmac",
    "add_addr_hmac",
];

#[test]
fn handshake_join_addaddr_verifies() {
    let r = assert_clean("handshake-join-addaddr.pcap", &HANDSHAKE_KINDS);
    let s = r.verify.unwrap();
    // Two joins: each has a token, a SYN/ACK HMAC and an ACK HMAC.
    assert_eq!(s.count("token").0, s.count("join_synack_hmac").0);
    assert_eq!(s.count("token").0, s.count("join_ack_hmac").0);
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
}

#[test]
fn checksum_prio_rmaddr_verifies() {
    let mut kinds = HANDSHAKE_KINDS.to_vec();
    kinds.push("dss_checksum");
    let r = assert_clean("checksum-prio-rmaddr.pcap", &kinds);
    let s = r.verify.unwrap();
    // Every mapping with a checksum was checked, none skipped.
    let lines = json_lines(&load("checksum-prio-rmaddr.pcap"));
    assert_eq!(s.count("dss_checksum").0, dss_checksums(&lines));
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    let (_, prio) = first_frame_with(&lines, |e| e["subtype"] == "mp_prio");
    assert_eq!(prio["backup"], true);
    let (_, rm) = first_frame_with(&lines, |e| e["subtype"] == "remove_addr");
    assert_eq!(rm["address_ids"], serde_json::json!([1]));
}

#[test]
fn fastclose_verifies() {
    let mut kinds = HANDSHAKE_KINDS.to_vec();
    kinds.push("fastclose_key");
    let r = assert_clean("fastclose.pcap", &kinds);
    let lines = json_lines(&load("fastclose.pcap"));
    let fastcloses = lines
        .iter()
        .filter(|l| !entries(&lines, l["frame"].as_u64().unwrap(), "mp_fastclose").is_empty());
    assert_eq!(
        r.verify.unwrap().count("fastclose_key").0,
        fastcloses.count() as u64
    );
    let (_, rst) = first_frame_with(&lines, |e| e["subtype"] == "mp_tcprst");
    assert!(rst["reason"].is_u64());
}

fn assert_caught(data: &[u8], kind: &str) {
    let (report, text) = run(data, false, true);
    let s = report.verify.clone().unwrap();
    assert!(s.count(kind).1 > 0, "{kind} mismatch not reported:\n{text}");
    assert!(!report.clean());
    assert!(text
        .lines()
        .any(|l| l.contains(kind) && l.contains("MISMATCH")));
    // The binary exits non-zero on it.
    let path = std::env::temp_dir().join(format!(
        "mptcp-decode-flip-{kind}-{}.pcap",
        std::process::id()
    ));
    std::fs::write(&path, data).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
        .args(["decode", "--verify"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(out.status.code(), Some(1), "{kind}: exit status");
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISMATCH"));
}

#[test]
fn flipped_key_is_caught() {
    let file = load("handshake-join-addaddr.pcap");
    let lines = json_lines(&file);
    // The server's key in the SYN/ACK: the third ACK's echo no longer matches.
    let (frame, c) = first_frame_with(&lines, |e| {
        e["subtype"] == "mp_capable" && !e["sender_key"].is_null()
    });
    let flipped = flip_in_frame(
        &file,
        frame,
        &hex_to_bytes(c["sender_key"].as_str().unwrap()),
    );
    assert_caught(&flipped, "mp_capable_keys");
}

#[test]
fn flipped_join_token_is_caught() {
    let file = load("handshake-join-addaddr.pcap");
    let lines = json_lines(&file);
    let (frame, j) = first_frame_with(&lines, |e| {
        e["subtype"] == "mp_join" && !e["token"].is_null()
    });
    let flipped = flip_in_frame(&file, frame, &hex_to_bytes(j["token"].as_str().unwrap()));
    assert_caught(&flipped, "token");
}

#[test]
fn flipped_hmacs_are_caught() {
    let file = load("handshake-join-addaddr.pcap");
    let lines = json_lines(&file);
    let (f, j) = first_frame_with(&lines, |e| {
        e["subtype"] == "mp_join" && e["hmac"].as_str().is_some_and(|h| h.len() == 18)
    });
    assert_caught(
        &flip_in_frame(&file, f, &hex_to_bytes(j["hmac"].as_str().unwrap())),
        "join_synack_hmac",
    );
    let (f, j) = first_frame_with(&lines, |e| {
        e["subtype"] == "mp_join" && e["hmac"].as_str().is_some_and(|h| h.len() == 42)
    });
    assert_caught(
        &flip_in_frame(&file, f, &hex_to_bytes(j["hmac"].as_str().unwrap())),
        "join_ack_hmac",
    );
    let (f, a) = first_frame_with(&lines, |e| {
        e["subtype"] == "add_addr" && !e["hmac"].is_null()
    });
    assert_caught(
        &flip_in_frame(&file, f, &hex_to_bytes(a["hmac"].as_str().unwrap())),
        "add_addr_hmac",
    );
    // A flipped nonce breaks the HMAC computed from it.
    let (f, j) = first_frame_with(&lines, |e| {
        e["subtype"] == "mp_join" && !e["token"].is_null()
    });
    assert_caught(
        &flip_in_frame(&file, f, &hex_to_bytes(j["nonce"].as_str().unwrap())),
        "join_synack_hmac",
    );
}

#[test]
fn flipped_payload_byte_is_caught() {
    let file = load("checksum-prio-rmaddr.pcap");
    let lines = json_lines(&file);
    let line = lines
        .iter()
        .find(|l| l["len"].as_u64().unwrap() > 0)
        .expect("a data segment");
    let frame = line["frame"].as_u64().unwrap();
    let rec = PcapReader::new(&file)
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| r.number == frame)
        .unwrap();
    let base = rec.data.as_ptr() as usize - file.as_ptr() as usize;
    let mut flipped = file.clone();
    let last = base + rec.data.len() - 1; // the last payload byte
    flipped[last] ^= 0x80;
    assert_caught(&flipped, "dss_checksum");
}

#[test]
fn clean_capture_exits_zero() {
    for name in [
        "handshake-join-addaddr.pcap",
        "checksum-prio-rmaddr.pcap",
        "fastclose.pcap",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
            .args(["decode", "--verify", "--json"])
            .arg(format!("{FIXTURES}{name}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}");
        let text = String::from_utf8(out.stdout).unwrap();
        let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(summary["summary"]["mismatch"], 0);
        assert!(summary["summary"]["ok"].as_u64().unwrap() > 0);
    }
}
