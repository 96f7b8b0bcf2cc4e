//! The `decode --json` output contract: keys, types and formats.
use mptcp_decode::{decode_bytes, Options};
use serde_json::Value;
use std::collections::BTreeSet;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/linux-6.18/"
);

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(|k| k.as_str()).collect()
}

fn set(k: &[&'static str]) -> BTreeSet<&'static str> {
    k.iter().copied().collect()
}

fn is_hex(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() > 2
            && s.starts_with("0x")
            && s[2..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

#[test]
fn every_line_follows_the_contract() {
    let mut seen = BTreeSet::new();
    for name in [
        "handshake-join-addaddr.pcap",
        "checksum-prio-rmaddr.pcap",
        "fastclose.pcap",
    ] {
        let data = std::fs::read(format!("{FIXTURES}{name}")).unwrap();
        let mut out = Vec::new();
        let report = decode_bytes(
            &data,
            Options {
                json: true,
                verify: false,
            },
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count() as u64, report.segments);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                keys(&v),
                set(&["frame", "src", "dst", "flags", "seq", "ack", "len", "mptcp"])
            );
            assert!(
                v["frame"].is_u64() && v["seq"].is_u64() && v["ack"].is_u64() && v["len"].is_u64()
            );
            assert!(v["src"]
                .as_str()
                .unwrap()
                .parse::<std::net::SocketAddr>()
                .is_ok());
            assert!(v["dst"]
                .as_str()
                .unwrap()
                .parse::<std::net::SocketAddr>()
                .is_ok());
            assert!(v["flags"].as_array().unwrap().iter().all(|f| f.is_string()));
            for e in v["mptcp"].as_array().unwrap() {
                let st = e["subtype"].as_str().unwrap();
                seen.insert(st.to_string());
                let (fields, hex): (&[&str], &[&str]) = match st {
                    "mp_capable" => (
                        &[
                            "version",
                            "checksum_required",
                            "sender_key",
                            "receiver_key",
                            "data_len",
                            "checksum",
                        ],
                        &["sender_key", "receiver_key", "checksum"],
                    ),
                    "mp_join" => (
                        &["backup", "address_id", "token", "nonce", "hmac"],
                        &["token", "nonce", "hmac"],
                    ),
                    "dss" => (
                        &["data_fin", "data_ack", "dsn", "ssn", "data_len", "checksum"],
                        &["checksum"],
                    ),
                    "add_addr" => (&["echo", "address_id", "addr", "port", "hmac"], &["hmac"]),
                    "remove_addr" => (&["address_ids"], &[]),
                    "mp_prio" => (&["backup"], &[]),
                    "mp_fail" => (&["dsn"], &[]),
                    "mp_fastclose" => (&["receiver_key"], &["receiver_key"]),
                    "mp_tcprst" => (&["reason"], &[]),
                    other => panic!("unexpected subtype {other}"),
                };
                let mut want = set(fields);
                want.insert("subtype");
                assert_eq!(keys(e), want, "{line}");
                for h in hex {
                    assert!(e[*h].is_null() || is_hex(&e[*h]), "{h} in {line}");
                }
                if st == "dss" {
                    for n in ["data_ack", "dsn", "ssn", "data_len"] {
                        assert!(e[n].is_null() || e[n].is_u64(), "{n} in {line}");
                    }
                }
            }
        }
    }
    let all = [
        "mp_capable",
        "mp_join",
        "dss",
        "add_addr",
        "remove_addr",
        "mp_prio",
        "mp_fastclose",
        "mp_tcprst",
    ];
    assert_eq!(seen, all.iter().map(|s| s.to_string()).collect());
}
