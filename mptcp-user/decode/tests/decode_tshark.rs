//! Cross-checks `decode --json` against Wireshark's MPTCP dissector on the
//! kernel captures: every suboption field tshark knows must agree.
//! tshark is a test dependency (installed by the project's setup).
use mptcp_decode::{decode_bytes, Options};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/linux-6.18/"
);

/// tshark field -> how to render ours in tshark's format.
const FIELDS: [&str; 22] = [
    "tcp.options.mptcp.subtype",
    "tcp.options.mptcp.sendkey",
    "tcp.options.mptcp.recvkey",
    "tcp.options.mptcp.recvtok",
    "tcp.options.mptcp.sendrand",
    "tcp.options.mptcp.sendtrunchmac",
    "tcp.options.mptcp.sendhmac",
    "tcp.options.mptcp.addaddrtrunchmac",
    "tcp.options.mptcp.rawdataack",
    "tcp.options.mptcp.rawdataseqno",
    "tcp.options.mptcp.subflowseqno",
    "tcp.options.mptcp.datalvllen",
    "tcp.options.mptcp.addrid",
    "tcp.options.mptcp.ipv4",
    "tcp.options.mptcp.ipv6",
    "tcp.options.mptcp.rst_reason",
    "tcp.options.mptcp.backup.flag",
    "tcp.options.mptcp.echo",
    "tcp.options.mptcp.datafin.flag",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.len",
];

fn hex_num(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    Some(
        u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .ok()?
            .to_string(),
    )
}

fn num(v: &Value) -> Option<String> {
    v.as_u64().map(|n| n.to_string())
}

fn flag(v: &Value) -> Option<String> {
    v.as_bool().map(|b| (b as u8).to_string())
}

/// Our decode of one frame rendered as tshark would print each field.
fn ours(line: &Value) -> BTreeMap<&'static str, String> {
    let mut f: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut push = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            f.entry(k).or_default().push(v);
        }
    };
    for e in line["mptcp"].as_array().unwrap() {
        let st = e["subtype"].as_str().unwrap();
        let code = [
            "mp_capable",
            "mp_join",
            "dss",
            "add_addr",
            "remove_addr",
            "mp_prio",
            "mp_fail",
            "mp_fastclose",
            "mp_tcprst",
        ]
        .iter()
        .position(|s| *s == st)
        .unwrap();
        push("tcp.options.mptcp.subtype", Some(code.to_string()));
        match st {
            "mp_capable" => {
                push("tcp.options.mptcp.sendkey", hex_num(&e["sender_key"]));
                push("tcp.options.mptcp.recvkey", hex_num(&e["receiver_key"]));
                push("tcp.options.mptcp.datalvllen", num(&e["data_len"]));
            }
            "mp_join" => {
                push("tcp.options.mptcp.recvtok", hex_num(&e["token"]));
                push("tcp.options.mptcp.sendrand", hex_num(&e["nonce"]));
                push("tcp.options.mptcp.addrid", num(&e["address_id"]));
                push("tcp.options.mptcp.backup.flag", flag(&e["backup"]));
                let h = e["hmac"].as_str().unwrap_or("");
                if h.len() == 18 {
                    push("tcp.options.mptcp.sendtrunchmac", hex_num(&e["hmac"]));
                } else if h.len() == 42 {
                    push("tcp.options.mptcp.sendhmac", Some(h[2..].to_string()));
                }
            }
            "dss" => {
                push("tcp.options.mptcp.rawdataack", num(&e["data_ack"]));
                push("tcp.options.mptcp.rawdataseqno", num(&e["dsn"]));
                push("tcp.options.mptcp.subflowseqno", num(&e["ssn"]));
                push("tcp.options.mptcp.datalvllen", num(&e["data_len"]));
                push("tcp.options.mptcp.datafin.flag", flag(&e["data_fin"]));
            }
            "add_addr" => {
                push("tcp.options.mptcp.addrid", num(&e["address_id"]));
                let addr = e["addr"].as_str().unwrap().to_string();
                let field = if addr.contains(':') {
                    "tcp.options.mptcp.ipv6"
                } else {
                    "tcp.options.mptcp.ipv4"
                };
                push(field, Some(addr));
                push("tcp.options.mptcp.addaddrtrunchmac", hex_num(&e["hmac"]));
                push("tcp.options.mptcp.echo", flag(&e["echo"]));
            }
            "remove_addr" => {
                for id in e["address_ids"].as_array().unwrap() {
                    push("tcp.options.mptcp.addrid", num(id));
                }
            }
            "mp_prio" => push("tcp.options.mptcp.backup.flag", flag(&e["backup"])),
            "mp_fastclose" => push("tcp.options.mptcp.recvkey", hex_num(&e["receiver_key"])),
            "mp_tcprst" => push("tcp.options.mptcp.rst_reason", num(&e["reason"])),
            _ => {}
        }
    }
    push("tcp.seq_raw", num(&line["seq"]));
    push("tcp.ack_raw", num(&line["ack"]));
    push("tcp.len", num(&line["len"]));
    f.into_iter().map(|(k, v)| (k, v.join(","))).collect()
}

fn tshark(path: &str) -> BTreeMap<u64, BTreeMap<&'static str, String>> {
    let mut cmd = Command::new("tshark");
    cmd.args([
        "-r",
        path,
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
        "-e",
        "frame.number",
    ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark is installed (the project's setup installs it)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut frames = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let frame: u64 = cols[0].parse().unwrap();
        let mut m = BTreeMap::new();
        for (i, f) in FIELDS.iter().enumerate() {
            let v = cols.get(i + 1).copied().unwrap_or("");
            if v.is_empty() {
                continue;
            }
            // tshark prints the reset reason in hex ("0x00").
            let v = match v.strip_prefix("0x") {
                Some(h) if *f == "tcp.options.mptcp.rst_reason" => {
                    u64::from_str_radix(h, 16).unwrap().to_string()
                }
                _ => v.to_string(),
            };
            m.insert(*f, v);
        }
        frames.insert(frame, m);
    }
    frames
}

#[test]
fn decode_agrees_with_tshark() {
    let mut compared = 0;
    for name in [
        "handshake-join-addaddr.pcap",
        "checksum-prio-rmaddr.pcap",
        "fastclose.pcap",
    ] {
        let path = format!("{FIXTURES}{name}");
        let theirs = tshark(path.as_str());
        let mut out = Vec::new();
        decode_bytes(
            &std::fs::read(&path).unwrap(),
            Options {
                json: true,
                verify: false,
            },
            &mut out,
        )
        .unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), theirs.len(), "{name}: segment count");
        for line in &lines {
            let frame = line["frame"].as_u64().unwrap();
            let mine = ours(line);
            let t = &theirs[&frame];
            // tshark leaves some flag fields unset where we print false;
            // compare every field tshark printed, and all of ours it has.
            for (k, v) in t {
                assert_eq!(mine.get(k), Some(v), "{name} frame {frame} field {k}");
                compared += 1;
            }
            for (k, v) in &mine {
                if !t.contains_key(k) {
                    assert!(
                        v.chars().all(|c| c == '0' || c == ','),
                        "{name} frame {frame}: {k}={v} unknown to tshark"
                    );
                }
            }
        }
    }
    assert!(compared > 500, "only {compared} fields compared");
}
