//! The engine survives whatever the network sends ("malformed packets are
//! counted and dropped, never panic"), checked through the harness the
//! cargo-fuzz targets use (`mptcp_engine::mptcp::fuzzing`):
//! - fuzzer inputs (`tests/robustness_inputs/TARGET/`) replay without a
//!   panic;
//! - bounded property tests: random programs of mutated, replayed and raw
//!   packets, timers and application calls never panic, garbage moves the
//!   drop counters, and afterwards a fresh client still connects and
//!   transfers byte-exact.

use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::mptcp::fuzzing::{self, ServerConn};
use mptcp_engine::mptcp::{MptcpConfig, MptcpCounters, MptcpEndpoint};
use mptcp_engine::time::Instant;
use proptest::prelude::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/robustness_inputs")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| {
                    let bytes = std::fs::read(e.path()).expect("readable input");
                    (e.file_name().to_string_lossy().into_owned(), bytes)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn expected(len: usize) -> Vec<u8> {
    (0..len).map(fuzzing::pattern).collect()
}

#[test]
fn replaying_the_recordings_reaches_the_recorded_end() {
    // The all-zero program replays the conversation unchanged, so the
    // fuzzer starts from a complete, valid exchange.
    let m = fuzzing::mptcp_recording();
    assert!(m.to_server.len() >= 6 && m.to_client.len() >= 6);
    let server = fuzzing::fuzz_mptcp_server(&[]);
    let c = server.connection().expect("accepted");
    assert!(c.is_read_closed());
    assert!(c.subflows().count() >= 2, "the join replays too");
    // Nothing refused or dropped: one connection accepted, its joins too.
    let sc = server.counters();
    assert_eq!(
        (sc.accepted, sc.join_accepted),
        (1, c.subflows().count() as u64 - 1)
    );
    assert_eq!(
        sc,
        &MptcpCounters {
            accepted: sc.accepted,
            join_accepted: sc.join_accepted,
            ..Default::default()
        }
    );
    let client = fuzzing::fuzz_mptcp_client(&[]);
    assert!(client.is_read_closed());
    assert_eq!(client.counters(), &MptcpCounters::default());
    // A first byte with the low bit set: the conversation with checksums.
    let server = fuzzing::fuzz_mptcp_server(&[1]);
    let c = server.connection().expect("accepted");
    assert!(c.checksum_enabled());
    assert!(c.is_read_closed());
    let client = fuzzing::fuzz_mptcp_client(&[1]);
    assert!(client.connection().is_some_and(|c| c.checksum_enabled()));
    assert!(client.is_read_closed());
    let tcp = fuzzing::fuzz_tcp_endpoint(&[]);
    assert!(tcp.is_read_closed());
    let tcp = fuzzing::fuzz_tcp_endpoint(&[1]);
    assert!(tcp.is_read_closed());
}

/// `tests/robustness_inputs/TARGET/`: fuzzer inputs, replayed through the
/// fuzz targets' own code: `crash-*` ones that once panicked, `corpus-*`
/// ones (the largest of the corpus, deep programs) as a smoke test.
#[test]
fn fuzz_inputs_replay_without_panic() {
    let mut n = 0;
    for (name, data) in inputs("mptcp_server") {
        eprintln!("mptcp_server/{name}");
        fuzzing::fuzz_mptcp_server(&data);
        n += 1;
    }
    for (name, data) in inputs("mptcp_client") {
        eprintln!("mptcp_client/{name}");
        fuzzing::fuzz_mptcp_client(&data);
        n += 1;
    }
    for (name, data) in inputs("tcp_endpoint") {
        eprintln!("tcp_endpoint/{name}");
        fuzzing::fuzz_tcp_endpoint(&data);
        n += 1;
    }
    assert!(n > 0, "the inputs are in tests/robustness_inputs");
}

/// Found by the first harness run: a SYN/ACK that acknowledges the ISN+1 of
/// a SYN still queued (not yet polled out) made the subflow established
/// with snd_una ahead of snd_max; the next transmit underflowed.
#[test]
fn syn_ack_before_our_syn_left_is_refused() {
    let rec = fuzzing::mptcp_recording();
    let mut client = fuzzing::new_mptcp_client(fuzzing::CLIENT_PORT, Instant::ZERO);
    let syn_ack = &rec.to_client[0];
    client.handle_packet(syn_ack.at, syn_ack.path, &syn_ack.bytes);
    assert!(!client.is_established());
    let mut buf = [0u8; 2048];
    let mut sent = 0;
    while client.poll_transmit(syn_ack.at, &mut buf).is_some() {
        sent += 1;
    }
    assert!(sent >= 1);

    let trec = fuzzing::tcp_recording();
    let mut tcp = fuzzing::new_tcp_client(fuzzing::CLIENT_PORT, Instant::ZERO);
    let syn_ack = &trec.to_client[0];
    tcp.handle_packet(syn_ack.at, syn_ack.path, &syn_ack.bytes);
    assert!(!tcp.is_established());
    while tcp.poll_transmit(syn_ack.at, &mut buf).is_some() {}
}

fn fresh_client_config() -> MptcpConfig {
    let mut cfg = fuzzing::mptcp_config();
    // Another host: other keys and ISNs than the recorded client's.
    cfg.secret = [0x17; 32];
    cfg.tcp.isn_secret = [0x17; 16];
    cfg
}

/// A new client (port `port`) transfers `len` bytes each way with `server`.
fn fresh_client_transfers(server: &mut MptcpEndpoint, port: u16, start: Instant, len: usize) {
    let mut client = MptcpEndpoint::client(
        fresh_client_config(),
        &fuzzing::client_locals(),
        port,
        SocketAddr::new(fuzzing::server_ip(0), fuzzing::SERVER_PORT),
        start,
    );
    let mut conn = ServerConn { ep: server, port };
    let t = fuzzing::exchange(&mut client, &mut conn, start, len, Duration::from_secs(120));
    assert_eq!(t.server_got.len(), len, "server read everything");
    assert!(t.server_got == expected(len), "server bytes exact");
    assert_eq!(t.client_got.len(), len, "client read everything");
    assert!(t.client_got == expected(len), "client bytes exact");
}

fn drops(c: &MptcpCounters) -> u64 {
    c.malformed + c.bad_checksum + c.unmatched + c.join_refused
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any program against a server: no panic, and afterwards a fresh
    /// client connects and transfers byte-exact.
    #[test]
    fn server_stays_usable_after_garbage(prog in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut server = fuzzing::new_mptcp_server();
        let st = fuzzing::run(&mut server, &fuzzing::mptcp_recording().to_server, &prog);
        fresh_client_transfers(&mut server, 41000, st.now + Duration::from_secs(1), 20_000);
    }

    /// Any program against a client: no panic, and afterwards (its own
    /// connection may be dead) it still counts and drops garbage: a
    /// recorded server packet with a byte changed and its checksum left
    /// stale moves bad_checksum (or malformed) by one, a packet too short
    /// for IP + TCP moves malformed by one, and nothing else moves.
    #[test]
    fn client_survives_garbage(
        prog in proptest::collection::vec(any::<u8>(), 0..300),
        k in 0usize..64,
        at in any::<u16>(),
        x in 1u8..=255,
        cut in 0usize..40,
    ) {
        let mut client = fuzzing::fuzz_mptcp_client(&prog);
        let rec = if prog.first().is_some_and(|b| b & 1 == 1) {
            &fuzzing::mptcp_checksum_recording().to_client
        } else {
            &fuzzing::mptcp_recording().to_client
        };
        let r = &rec[k % rec.len()];
        let now = Instant::from_nanos(3_600_000_000_000);
        let mut flipped = r.bytes.clone();
        let tcp_len = flipped.len() - 20;
        flipped[20 + at as usize % tcp_len] ^= x;
        let before = client.counters().clone();
        client.handle_packet(now, r.path, &flipped);
        let after = client.counters().clone();
        prop_assert_eq!(
            after.bad_checksum + after.malformed,
            before.bad_checksum + before.malformed + 1,
            "{:?} -> {:?}", before, after
        );
        prop_assert_eq!(drops(&after), drops(&before) + 1);
        client.handle_packet(now, r.path, &r.bytes[..cut]);
        prop_assert_eq!(
            client.counters(),
            &MptcpCounters { malformed: after.malformed + 1, ..after.clone() }
        );
        let mut buf = [0u8; 2048];
        for _ in 0..256 {
            if client.poll_transmit(now, &mut buf).is_none() {
                break;
            }
        }

        let mut tcp = fuzzing::fuzz_tcp_endpoint(&prog);
        let before = tcp.counters().clone();
        tcp.handle_packet(now, 0, &r.bytes[..cut]);
        prop_assert_eq!(tcp.counters().malformed, before.malformed + 1);
        prop_assert_eq!(
            (tcp.counters().bad_checksum, tcp.counters().unmatched),
            (before.bad_checksum, before.unmatched)
        );
    }

    /// Garbage is counted: a recorded packet with a byte of its segment
    /// changed (checksum left stale) is dropped as bad_checksum (or
    /// malformed), one cut short
    /// inside its headers as malformed; neither reaches a connection.
    #[test]
    fn garbage_moves_the_drop_counters(
        k in 0usize..64,
        at in any::<u16>(),
        x in 1u8..=255,
        cut in 0usize..40,
        raw in proptest::collection::vec(any::<u8>(), 0..60),
    ) {
        let rec = &fuzzing::mptcp_recording().to_server;
        let mut server = fuzzing::new_mptcp_server();
        // A live connection first (half the conversation).
        let half = fuzzing::run(&mut server, &rec[..rec.len() / 2], &[]);
        let now = half.now;
        let r = &rec[k % rec.len()];

        let mut flipped = r.bytes.clone();
        let tcp_len = flipped.len() - 20;
        flipped[20 + at as usize % tcp_len] ^= x;
        let before = server.counters().clone();
        server.handle_packet(now, r.path, &flipped);
        // A header byte changed may already fail parsing (data offset,
        // options): malformed then, bad_checksum otherwise.
        let after = server.counters();
        prop_assert_eq!(
            after.bad_checksum + after.malformed,
            before.bad_checksum + before.malformed + 1
        );
        prop_assert_eq!(drops(after), drops(&before) + 1);

        let before = server.counters().clone();
        server.handle_packet(now, r.path, &r.bytes[..cut]);
        prop_assert_eq!(server.counters().malformed, before.malformed + 1);

        // Short random bytes never parse as IPv4/IPv6 + TCP (< 40 bytes).
        let before = server.counters().clone();
        server.handle_packet(now, r.path, &raw[..raw.len().min(39)]);
        prop_assert_eq!(server.counters().malformed, before.malformed + 1);

        let mut buf = [0u8; 2048];
        while server.poll_transmit(now, &mut buf).is_some() {}
        prop_assert!(server.connection().is_some());
    }
}
