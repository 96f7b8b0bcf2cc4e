//! Engine to engine, where no kernel plays either role, judged from the
//! outside: both paths run through a middle namespace that bridges them,
//! tcpdump captures there, and Wireshark's MPTCP analysis
//! (`mptcp.analyze_mappings`, `mptcp.analyze_mptcp`) checks the keys, the
//! token linking each MP_JOIN to its connection, the IDSN and every DSS
//! mapping, next to our own decoder (`decode --verify`).
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use mptcp_tests::capture::{tshark_fields, Capture};
use mptcp_tests::cli::{binary, mptcp_user, output_text, Server};
use mptcp_tests::{require_root, unique_name, wait_until, Netns};

/// Client, middle and server namespaces; path i: client `ci` <-> bridge
/// `bri` (middle) <-> server `si`, 10.102.i.1 and 10.102.i.2.
struct BridgedLab {
    client: Netns,
    middle: Netns,
    server: Netns,
}

impl BridgedLab {
    fn up(paths: usize) -> BridgedLab {
        let lab = BridgedLab {
            client: Netns::create(&unique_name("mpbc")).expect("netns"),
            middle: Netns::create(&unique_name("mpbm")).expect("netns"),
            server: Netns::create(&unique_name("mpbs")).expect("netns"),
        };
        for i in 0..paths {
            let br = format!("br{i}");
            lab.middle
                .ip(&["link", "add", &br, "type", "bridge"])
                .expect("bridge");
            for (ns, end, side) in [
                (&lab.client, format!("c{i}"), 1),
                (&lab.server, format!("s{i}"), 2),
            ] {
                let port = format!("m{end}");
                ns.ip(&[
                    "link",
                    "add",
                    &end,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    lab.middle.name(),
                ])
                .expect("veth");
                lab.middle
                    .ip(&["link", "set", &port, "master", &br, "up"])
                    .expect("bridge port");
                ns.ip(&["addr", "add", &format!("10.102.{i}.{side}/24"), "dev", &end])
                    .expect("addr");
                ns.ip(&["link", "set", &end, "up"]).expect("up");
            }
            lab.middle.ip(&["link", "set", &br, "up"]).expect("up");
        }
        lab
    }
}

#[test]
fn engine_to_engine_over_two_paths_passes_wiresharks_mptcp_analysis() {
    if !require_root() {
        return;
    }
    let lab = BridgedLab::up(2);
    let dir = std::env::temp_dir().join(unique_name("mptcp-tshark"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("e2e.pcapng").to_string_lossy().into_owned();
    let part = |i: usize| {
        dir.join(format!("br{i}.pcap"))
            .to_string_lossy()
            .into_owned()
    };
    let captures = [
        Capture::start(&lab.middle, "br0", &part(0)),
        Capture::start(&lab.middle, "br1", &part(1)),
    ];

    let listen: SocketAddr = "10.102.0.2:5350".parse().unwrap();
    let mut serve = mptcp_user(lab.server.name());
    serve
        .args(["serve", "--iface", "s0", "--iface", "s1"])
        .args(["--listen", &listen.to_string(), "--announce", "10.102.1.2"])
        .stdout(Stdio::null());
    let _server = Server(serve.spawn().expect("serve"));
    assert!(
        wait_until(Duration::from_secs(15), || ["s0", "s1"].iter().all(|i| lab
            .server
            .ip(&["link", "show", i])
            .is_ok_and(|s| s.contains("xdp")))),
        "serve never attached XDP"
    );
    let bytes: u64 = 4 << 20;
    let out = Command::new("ip")
        .args(["netns", "exec", lab.client.name(), "timeout", "120"])
        .arg(binary())
        .args([
            "connect",
            &listen.to_string(),
            "--iface",
            "c0",
            "--iface",
            "c1",
        ])
        .args([
            "--wait-subflows",
            "2",
            "--bytes",
            &bytes.to_string(),
            "--json",
        ])
        .output()
        .expect("connect");
    assert!(out.status.success(), "{}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["end"]["sum_received"]["bytes"], bytes, "{report}");
    for (i, c) in captures.into_iter().enumerate() {
        c.stop_after_marker(&lab.client, &format!("10.102.{i}.2"));
    }
    let merged = Command::new("mergecap")
        .args(["-w", &file, &part(0), &part(1)])
        .output()
        .expect("mergecap");
    assert!(merged.status.success(), "{}", output_text(&merged));

    // Wireshark's MPTCP experts: a wrong echoed key, a missing or unknown
    // algorithm, a fallback to an infinite mapping. None may fire.
    let experts = tshark_fields(
        &file,
        "mptcp.connection.echoed_key_mismatch || mptcp.connection.missing_algorithm \
         || mptcp.connection.unsupported_algorithm || mptcp.dss.infinite_mapping",
        &["frame.number", "_ws.expert.message"],
    );
    assert!(experts.is_empty(), "Wireshark's MPTCP experts: {experts:?}");
    // Every segment with data lies under a DSS mapping Wireshark accepted
    // (it flags pure ACKs without one even in Linux's own traffic, so only
    // segments with payload count).
    let unmapped = tshark_fields(
        &file,
        "tcp.len > 0 && (mptcp.dss.missing_mapping || !mptcp.related_mapping)",
        &["frame.number", "tcp.stream", "tcp.len"],
    );
    assert!(
        unmapped.is_empty(),
        "segments without a mapping: {unmapped:?}"
    );
    let data_frames = tshark_fields(
        &file,
        "tcp.len > 0 && mptcp.related_mapping",
        &["frame.number"],
    );
    assert!(
        data_frames.len() as u64 >= 2 * bytes / 1500,
        "{} data frames",
        data_frames.len()
    );

    // Wireshark linked every MP_JOIN to the connection by its token (its
    // own SHA-256 of the key): one MPTCP stream, several TCP subflows, each
    // carrying data.
    let streams = tshark_fields(&file, "mptcp.stream", &["mptcp.stream", "tcp.stream"]);
    let mptcp_streams: BTreeSet<&str> = streams.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(mptcp_streams.len(), 1, "{mptcp_streams:?}");
    let mut per_subflow: BTreeMap<String, usize> = BTreeMap::new();
    for row in tshark_fields(
        &file,
        "tcp.len > 0 && mptcp.related_mapping",
        &["tcp.stream"],
    ) {
        *per_subflow.entry(row[0].clone()).or_default() += 1;
    }
    eprintln!("data frames per TCP subflow: {per_subflow:?}");
    assert!(per_subflow.len() >= 2, "{per_subflow:?}");
    assert!(per_subflow.values().all(|n| *n >= 100), "{per_subflow:?}");

    // Wireshark's data-level view, per side (client addresses end in .1,
    // the server's in .2): the IDSN it derives from the side's key in the
    // MP_CAPABLE handshake, the DSN it gives each data segment from the
    // mapping it lies under, and the DATA_ACKs.
    let side = |ip: &str| if ip.ends_with(".1") { 0 } else { 1 };
    let mut idsn = [None::<u64>; 2];
    for row in tshark_fields(
        &file,
        "tcp.options.mptcp.subtype == 0 && mptcp.expected_idsn",
        &["ip.src", "mptcp.expected_idsn"],
    ) {
        let v: u64 = row[1].parse().expect("IDSN");
        let slot = &mut idsn[side(&row[0])];
        assert!(slot.is_none_or(|s| s == v), "two IDSNs for {}", row[0]);
        *slot = Some(v);
    }
    let idsn = idsn.map(|v| v.expect("an MP_CAPABLE key from each side"));
    let mut spans: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for row in tshark_fields(
        &file,
        "tcp.len > 0 && mptcp.rawdsn64",
        &["ip.src", "mptcp.rawdsn64", "tcp.len"],
    ) {
        let dsn: u64 = row[1].parse().expect("DSN");
        let len: u64 = row[2].parse().expect("len");
        spans[side(&row[0])].push((dsn, dsn + len));
    }
    for (s, name) in [(0, "client"), (1, "server")] {
        // Every byte of the stream lies under some mapping, from IDSN + 1
        // on, with no gap (retransmissions and reinjections overlap).
        let mut v = std::mem::take(&mut spans[s]);
        v.sort_unstable();
        let start = idsn[s].wrapping_add(1);
        let mut end = start;
        for (a, b) in v {
            assert!(
                a <= end,
                "{name}: no data mapped at DSN {end} (next at {a})"
            );
            assert!(
                a >= start,
                "{name}: data mapped at {a}, before IDSN + 1 = {start}"
            );
            end = end.max(b);
        }
        assert_eq!(end - start, bytes, "{name}: mapped data-level bytes");
    }
    // DATA_ACKs: the server's echo carries acknowledgments of all the
    // client's data (it echoes only what it received); neither side ever
    // acknowledges data (or a DATA_FIN) the other did not send. (How much
    // of the echo the client acknowledges depends on when `connect` exits:
    // it leaves once the echo is in, without closing the connection.)
    let mut acked = [0u64; 2];
    for row in tshark_fields(&file, "mptcp.ack", &["ip.src", "mptcp.ack"]) {
        let a: u64 = row[1].parse().expect("DATA_ACK");
        let s = side(&row[0]);
        acked[s] = acked[s].max(a.wrapping_sub(idsn[1 - s]));
    }
    eprintln!(
        "highest DATA_ACKs from the peer's IDSN: client {}, server {}",
        acked[0], acked[1]
    );
    assert!(
        (1 + bytes..=1 + bytes + 1).contains(&acked[1]),
        "server's highest DATA_ACK {} from the client IDSN",
        acked[1]
    );
    assert!(
        (1..=1 + bytes + 1).contains(&acked[0]),
        "client's highest DATA_ACK {} from the server IDSN",
        acked[0]
    );

    // Our decoder verifies the same capture: tokens, HMACs, checksums.
    let out = Command::new(binary())
        .args(["decode", "--verify", &file])
        .output()
        .expect("decode");
    assert!(out.status.success(), "{}", output_text(&out));
    // Kept for a look when an assertion above fails.
    let _ = std::fs::remove_dir_all(&dir);
}
