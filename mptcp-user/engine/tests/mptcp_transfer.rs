//! Byte-exact MPTCP transfers between two engines over simulated paths.

mod mptcp_harness;

use mptcp_engine::io::ByteStream;
use mptcp_engine::mptcp::{MptcpConfig, MptcpEvent, SubflowStatus};
use mptcp_harness::*;
use std::time::Duration;

fn cfg() -> MptcpConfig {
    let mut c = MptcpConfig::default();
    c.tcp.time_wait = Duration::from_millis(100);
    c
}

#[test]
fn two_paths_byte_exact_both_directions() {
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(10, 15, 0)],
        cfg(),
        cfg(),
        true,
        1,
    );
    let up = pattern(3 << 20, 1);
    let down = pattern(1 << 20, 2);
    let (gs, gc, ok) = transfer(&mut net, &up, &down, Duration::from_secs(60));
    assert!(
        ok,
        "transfer did not finish: server got {} client got {}",
        gs.len(),
        gc.len()
    );
    assert!(
        gs == up,
        "server got different bytes ({} vs {})",
        gs.len(),
        up.len()
    );
    assert!(gc == down);
    let c = net.client.connection().unwrap();
    let subs: Vec<_> = c.subflows().collect();
    assert!(subs.len() >= 2, "{subs:?}");
    let mut used = 0;
    for s in &subs {
        let st = c.subflow_stats(s.id).unwrap();
        if st.bytes_sent > 100_000 {
            used += 1;
        }
    }
    assert!(used >= 2, "both subflows should carry data");
    let closed = net.run_until(Duration::from_secs(10), |n| {
        n.client.is_closed() && n.server.is_closed()
    });
    for e in [&net.client, &net.server] {
        let c = e.connection().unwrap();
        eprintln!(
            "acked {} {:?}",
            c.data_acked(),
            c.subflows().map(|s| s.status).collect::<Vec<_>>()
        );
    }
    assert!(closed);
    let _ = SubflowStatus::Closed;
    let _ = MptcpEvent::Established;
}

fn check(net: &mut Net, up_len: usize, down_len: usize, seed: u64, limit: Duration) {
    let up = pattern(up_len, seed);
    let down = pattern(down_len, seed + 1000);
    let (gs, gc, ok) = transfer(net, &up, &down, limit);
    assert!(
        ok,
        "seed {seed}: not finished: server got {} of {}, client {} of {}",
        gs.len(),
        up.len(),
        gc.len(),
        down.len()
    );
    assert!(gs == up, "seed {seed}: server bytes differ");
    assert!(gc == down, "seed {seed}: client bytes differ");
}

#[test]
fn two_to_four_lossy_paths_many_seeds() {
    for seed in 1..=12u64 {
        let n = 2 + (seed % 3) as usize;
        let paths: Vec<PathSpec> = (0..n)
            .map(|p| {
                PathSpec::new(
                    5 + 10 * p as u64,
                    5 + 7 * p as u64 + seed % 5,
                    (seed as u32 % 4) * 5000,
                )
            })
            .collect();
        eprintln!("seed {seed}");
        let mut net = Net::new(&paths, cfg(), cfg(), true, seed);
        check(&mut net, 600_000, 200_000, seed, Duration::from_secs(120));
        let c = net.client.connection().unwrap();
        assert!(
            c.subflows().count() >= n,
            "seed {seed}: {} subflows",
            c.subflows().count()
        );
    }
}

#[test]
fn checksums_on_both_ways_many_seeds() {
    for seed in 1..=6u64 {
        let mut c = cfg();
        c.checksum = seed % 2 == 0;
        let mut s = cfg();
        s.checksum = seed % 2 == 1;
        let mut net = Net::new(
            &[PathSpec::new(20, 5, 3000), PathSpec::new(10, 20, 0)],
            c,
            s,
            true,
            seed,
        );
        check(&mut net, 500_000, 100_000, seed, Duration::from_secs(60));
        assert!(net.client.connection().unwrap().checksum_enabled());
        assert!(net.server.connection().unwrap().checksum_enabled());
        assert_eq!(net.server.connection().unwrap().checksum_failures(), 0);
    }
}

#[test]
fn path_down_mid_transfer_and_back() {
    path_down_and_back(4 << 20, 3 << 20, false);
}

/// Subflows send from the connection's buffer: the returning path's
/// subflow retransmits bytes the data level already acknowledged through
/// the reinjection, and they must still be the real bytes (the DSS
/// checksum covers the whole mapping).
#[test]
fn path_down_and_back_with_checksums() {
    path_down_and_back(4 << 20, 3 << 20, true);
}

/// Bytes the client's subflows on `path` have had acknowledged.
fn acked_on_path(net: &Net, path: usize) -> u64 {
    let c = net.client.connection().unwrap();
    c.subflows()
        .filter(|s| s.path == path)
        .map(|s| c.subflow_stats(s.id).unwrap().bytes_acked)
        .sum()
}

/// Sends `total`; path 1 goes down after 1 MiB arrived, comes back after `back_at`.
fn path_down_and_back(total: usize, back_at: usize, checksum: bool) {
    for seed in 1..=4u64 {
        let mut c = cfg();
        c.checksum = checksum;
        let mut net = Net::new(
            &[PathSpec::new(20, 5, 0), PathSpec::new(20, 10, 0)],
            c.clone(),
            c,
            true,
            seed,
        );
        let up = pattern(total, seed);
        let mut got = Vec::new();
        let mut sent = 0;
        let mut tmp = vec![0u8; 65536];
        let mut phase = 0;
        // Bytes path 1's subflows had carried (acknowledged) when it came back.
        let mut acked_at_up = 0;
        let ok = net.run_until(Duration::from_secs(120), |n| {
            if n.client.is_established() {
                sent += n.client.send(&up[sent..]);
                if sent == up.len() {
                    n.client.close();
                }
            }
            loop {
                let k = n.server.recv(&mut tmp);
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&tmp[..k]);
            }
            if phase == 0 && got.len() > (1 << 20) {
                n.set_up(1, false);
                phase = 1;
            } else if phase == 1 && got.len() > back_at {
                n.set_up(1, true);
                acked_at_up = acked_on_path(n, 1);
                phase = 2;
            }
            n.server.is_read_closed()
        });
        assert!(ok, "seed {seed}: got {} of {}", got.len(), up.len());
        assert!(got == up, "seed {seed}: bytes differ");
        // "and back": path 1 carried data again after it came up.
        let after = acked_on_path(&net, 1) - acked_at_up;
        assert!(after > 0, "seed {seed}: path 1 unused after it came back");
        let server = net.server.connection().unwrap();
        assert_eq!(server.checksum_enabled(), checksum);
        assert_eq!(server.checksum_failures(), 0, "seed {seed}");
    }
}

#[test]
fn fallback_to_tcp_when_options_are_stripped() {
    for seed in 1..=3u64 {
        let mut net = Net::new(
            &[PathSpec::new(20, 5, 2000), PathSpec::new(10, 10, 0)],
            cfg(),
            cfg(),
            true,
            seed,
        );
        // A middlebox strips MPTCP options from the SYN/ACK.
        net.tamper = Some(Box::new(|_, to_server, p| {
            if to_server {
                return true;
            }
            let (ip, mut tcp) = mptcp_engine::wire::ip::parse_ip_tcp(p).unwrap();
            if !tcp.flags.contains(mptcp_engine::wire::tcp::TcpFlags::SYN) {
                return true;
            }
            tcp.options.mptcp.clear();
            let ip = mptcp_engine::wire::ip::IpRepr::new_tcp(ip.src(), ip.dst()).unwrap();
            let mut out = vec![0u8; 2048];
            let n = mptcp_engine::wire::ip::emit_ip_tcp(&ip, &tcp, &mut out).unwrap();
            out.truncate(n);
            *p = out;
            true
        }));
        check(&mut net, 300_000, 100_000, seed, Duration::from_secs(60));
        let c = net.client.connection_mut().unwrap();
        assert_eq!(c.subflows().count(), 1);
        let mut fell_back = false;
        while let Some(e) = c.poll_event() {
            fell_back |= e == MptcpEvent::FellBackToTcp;
        }
        assert!(fell_back);
    }
}

#[test]
fn bad_join_hmac_is_refused_and_transfer_goes_on() {
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(10, 10, 0)],
        cfg(),
        cfg(),
        true,
        7,
    );
    // Corrupt the HMAC of every MP_JOIN SYN/ACK (a peer with a wrong key).
    net.tamper = Some(Box::new(|_, to_server, p| {
        if to_server {
            return true;
        }
        let (ip, mut tcp) = mptcp_engine::wire::ip::parse_ip_tcp(p).unwrap();
        let Some(&mptcp_engine::wire::mptcp::MpJoin::SynAck {
            backup,
            addr_id,
            hmac,
            nonce,
        }) = tcp.options.mptcp.mp_join()
        else {
            return true;
        };
        tcp.options.mptcp.clear();
        tcp.options
            .mptcp
            .push(mptcp_engine::wire::mptcp::MptcpOption::MpJoin(
                mptcp_engine::wire::mptcp::MpJoin::SynAck {
                    backup,
                    addr_id,
                    hmac: hmac ^ 1,
                    nonce,
                },
            ))
            .unwrap();
        let ip = mptcp_engine::wire::ip::IpRepr::new_tcp(ip.src(), ip.dst()).unwrap();
        let mut out = vec![0u8; 2048];
        let n = mptcp_engine::wire::ip::emit_ip_tcp(&ip, &tcp, &mut out).unwrap();
        out.truncate(n);
        *p = out;
        true
    }));
    check(&mut net, 400_000, 50_000, 7, Duration::from_secs(60));
    let c = net.client.connection().unwrap();
    assert!(c.bad_hmacs() >= 1);
    let established = c
        .subflows()
        .filter(|s| s.id != 0 && c.subflow_stats(s.id).unwrap().bytes_sent > 0)
        .count();
    assert_eq!(established, 0, "no joined subflow carried data");
    // The server saw RSTs for the half-open joins and kept only the initial subflow busy.
    let s = net.server.connection().unwrap();
    assert!(
        s.subflows()
            .filter(|f| f.status == SubflowStatus::Closed)
            .count()
            >= 1
    );
}

/// Rewrites a packet through the codecs (fixing the TCP checksum).
fn reemit(p: &mut Vec<u8>, edit: impl FnOnce(&mut mptcp_engine::wire::tcp::TcpRepr, &mut Vec<u8>)) {
    let (ip, tcp) = mptcp_engine::wire::ip::parse_ip_tcp(p).unwrap();
    let mut payload = tcp.payload.to_vec();
    let mut tcp = tcp.clone();
    let mut pl = std::mem::take(&mut payload);
    edit(&mut tcp, &mut pl);
    tcp.payload = &pl;
    let ip = mptcp_engine::wire::ip::IpRepr::new_tcp(ip.src(), ip.dst()).unwrap();
    let mut out = vec![0u8; 2048];
    let n = mptcp_engine::wire::ip::emit_ip_tcp(&ip, &tcp, &mut out).unwrap();
    out.truncate(n);
    *p = out;
}

#[test]
fn dss_checksum_catches_a_payload_rewriting_middlebox() {
    let mut c = cfg();
    c.checksum = true;
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(20, 8, 0)],
        c.clone(),
        c,
        false,
        11,
    );
    // Path 1 rewrites one payload byte of one data packet and fixes the TCP
    // checksum, as a normalising middlebox would.
    let mut done = false;
    net.tamper = Some(Box::new(move |path, to_server, p| {
        if path == 1 && to_server && !done && p.len() > 1000 {
            done = true;
            reemit(p, |_, pl| pl[100] ^= 0xff);
        }
        true
    }));
    check(&mut net, 2 << 20, 10_000, 11, Duration::from_secs(60));
    let s = net.server.connection().unwrap();
    assert_eq!(s.checksum_failures(), 1);
    let c = net.client.connection().unwrap();
    assert!(c.subflows().any(|f| f.status == SubflowStatus::Closed));
}

#[test]
fn fastclose_aborts_every_subflow_with_the_key() {
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(20, 8, 0)],
        cfg(),
        cfg(),
        true,
        12,
    );
    let data = pattern(4 << 20, 12);
    let mut sent = 0;
    let mut got = 0usize;
    let mut tmp = vec![0u8; 65536];
    let ok = net.run_until(Duration::from_secs(30), |n| {
        if n.client.is_established() {
            sent += n.client.send(&data[sent..]);
        }
        loop {
            let k = n.server.recv(&mut tmp);
            if k == 0 {
                break;
            }
            got += k;
        }
        if got > (1 << 20) {
            n.server.connection_mut().unwrap().abort();
        }
        n.client.is_closed()
    });
    assert!(ok, "client saw the fast close");
    let c = net.client.connection_mut().unwrap();
    assert!(c.subflows().count() >= 2);
    assert!(c.subflows().all(|f| f.status == SubflowStatus::Closed));
    let mut fast = false;
    let mut reasons = 0;
    while let Some(e) = c.poll_event() {
        match e {
            MptcpEvent::FastClosed => fast = true,
            MptcpEvent::SubflowClosed {
                reason: mptcp_engine::mptcp::SubflowCloseReason::Reset(Some(0)),
                ..
            } => reasons += 1,
            _ => {}
        }
    }
    assert!(fast);
    assert!(reasons >= 1, "MP_TCPRST reason reached the API");
}

#[test]
fn lost_third_acks_are_recovered() {
    for seed in 1..=3u64 {
        let mut net = Net::new(
            &[PathSpec::new(20, 5, 0), PathSpec::new(10, 10, 0)],
            cfg(),
            cfg(),
            true,
            seed,
        );
        // Drop the first MP_CAPABLE third ACK and the first MP_JOIN third ACK.
        let (mut mpc_dropped, mut join_dropped) = (false, false);
        net.tamper = Some(Box::new(move |_, to_server, p| {
            if !to_server {
                return true;
            }
            let (_, tcp) = mptcp_engine::wire::ip::parse_ip_tcp(p).unwrap();
            if tcp.flags.contains(mptcp_engine::wire::tcp::TcpFlags::SYN) {
                return true;
            }
            let third_mpc = tcp
                .options
                .mptcp
                .mp_capable()
                .is_some_and(|c| c.receiver_key.is_some());
            let third_join = matches!(
                tcp.options.mptcp.mp_join(),
                Some(mptcp_engine::wire::mptcp::MpJoin::Ack { .. })
            );
            if third_mpc && !mpc_dropped && tcp.payload.is_empty() {
                mpc_dropped = true;
                return false;
            }
            if third_join && !join_dropped {
                join_dropped = true;
                return false;
            }
            true
        }));
        // Long enough for the server's SYN/ACK retransmission (1 s).
        check(&mut net, 6 << 20, 300_000, seed, Duration::from_secs(60));
        let server = net.server.connection().unwrap();
        // Every server subflow, the one whose third ACK was lost included,
        // received data.
        assert!(server.subflows().count() >= 2);
        for f in server.subflows() {
            let st = server.subflow_stats(f.id).unwrap();
            assert!(
                st.bytes_received > 0,
                "seed {seed}: subflow {} got nothing",
                f.id
            );
        }
    }
}

#[test]
fn server_reaps_closed_connections_and_accepts_the_same_tuple_again() {
    let mut net = Net::new(&[PathSpec::new(20, 5, 0)], cfg(), cfg(), false, 13);
    check(&mut net, 100_000, 100_000, 13, Duration::from_secs(30));
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.server.is_closed()
            && n.client.is_closed())
    );
    assert_eq!(net.server.reap_closed(), 1);
    assert!(net.server.connection().is_none());
    // The same client address and port connect again.
    let locals = [mptcp_engine::mptcp::LocalAddr {
        ip: client_ip(0),
        path: 0,
        signal: false,
    }];
    let mut c = cfg();
    c.secret = [7; 32];
    net.client = mptcp_engine::mptcp::MptcpEndpoint::client(
        c,
        &locals,
        40000,
        std::net::SocketAddr::new(server_ip(0), PORT),
        net.now,
    );
    check(&mut net, 200_000, 50_000, 14, Duration::from_secs(30));
    assert_eq!(net.server.connections().count(), 1);
}

#[test]
fn ipv6_two_paths_byte_exact() {
    use mptcp_engine::io::Engine;
    use mptcp_engine::mptcp::{LocalAddr, MptcpEndpoint};
    use mptcp_engine::time::Instant;
    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let clocals = [
        LocalAddr {
            ip: ip("fd00:0::1"),
            path: 0,
            signal: false,
        },
        LocalAddr {
            ip: ip("fd00:1::1"),
            path: 1,
            signal: false,
        },
    ];
    let slocals = [
        LocalAddr {
            ip: ip("fd00:0::2"),
            path: 0,
            signal: false,
        },
        LocalAddr {
            ip: ip("fd00:1::2"),
            path: 1,
            signal: true,
        },
    ];
    let mut now = Instant::ZERO;
    let mut client = MptcpEndpoint::client(
        cfg(),
        &clocals,
        40000,
        "[fd00:0::2]:8080".parse().unwrap(),
        now,
    );
    let mut server = MptcpEndpoint::server(cfg(), &slocals, 8080);
    let up = pattern(1 << 20, 21);
    let (mut sent, mut got, mut closed) = (0, Vec::new(), false);
    let mut queue: std::collections::VecDeque<(Instant, bool, usize, Vec<u8>)> = Default::default();
    let mut buf = vec![0u8; 2048];
    let mut tmp = vec![0u8; 65536];
    let delay = Duration::from_millis(3);
    for _ in 0..2_000_000 {
        if client.is_established() && !closed {
            sent += client.send(&up[sent..]);
            if sent == up.len() {
                client.close();
                closed = true;
            }
        }
        while let Some((p, n)) = client.poll_transmit(now, &mut buf) {
            queue.push_back((now + delay, true, p, buf[..n].to_vec()));
        }
        while let Some((p, n)) = server.poll_transmit(now, &mut buf) {
            queue.push_back((now + delay, false, p, buf[..n].to_vec()));
        }
        loop {
            let k = server.recv(&mut tmp);
            if k == 0 {
                break;
            }
            got.extend_from_slice(&tmp[..k]);
        }
        if server.is_read_closed() {
            break;
        }
        let next = [
            queue.front().map(|q| q.0),
            client.poll_timeout(),
            server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("something to do");
        now = now.max(next);
        while queue.front().is_some_and(|q| q.0 <= now) {
            let (_, to_server, p, pkt) = queue.pop_front().unwrap();
            if to_server {
                server.handle_packet(now, p, &pkt);
            } else {
                client.handle_packet(now, p, &pkt);
            }
        }
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
    }
    assert!(got == up, "got {} of {}", got.len(), up.len());
    let c = client.connection().unwrap();
    assert!(c.subflows().count() >= 2);
    assert!(c.subflows().all(|s| s.tuple.local.is_ipv6()));
}

#[test]
fn checksum_failure_on_the_only_subflow_falls_back_with_an_infinite_mapping() {
    for seed in 1..=3u64 {
        let mut c = cfg();
        c.checksum = true;
        c.path_manager = mptcp_engine::pm::PmKind::Manual;
        let mut net = Net::new(&[PathSpec::new(20, 5, 0)], c.clone(), c, false, seed);
        let mut n = 0;
        let victim = 20 + seed as usize * 7;
        net.tamper = Some(Box::new(move |_, to_server, p| {
            if to_server && p.len() > 1000 {
                n += 1;
                if n == victim {
                    reemit(p, |_, pl| pl[10] ^= 0x55);
                }
            }
            true
        }));
        check(&mut net, 1 << 20, 200_000, seed, Duration::from_secs(60));
        let s = net.server.connection_mut().unwrap();
        assert_eq!(s.checksum_failures(), 1, "seed {seed}");
        let mut fell_back = false;
        while let Some(e) = s.poll_event() {
            fell_back |= e == MptcpEvent::FellBackToTcp;
        }
        assert!(
            fell_back,
            "seed {seed}: the server followed the infinite mapping"
        );
        let c = net.client.connection_mut().unwrap();
        let mut fell_back = false;
        while let Some(e) = c.poll_event() {
            fell_back |= e == MptcpEvent::FellBackToTcp;
        }
        assert!(
            fell_back,
            "seed {seed}: the client sent an infinite mapping"
        );
    }
}

#[test]
fn data_on_the_third_ack_carries_mp_capable_with_data_len() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    for checksum in [false, true] {
        let mut c = cfg();
        c.checksum = checksum;
        let mut net = Net::new(&[PathSpec::new(20, 5, 0)], c, cfg(), false, 3);
        // Linux falls back to TCP on a data segment whose MP_CAPABLE has no
        // data_len (it takes it for a bare third ACK).
        let with_len = Arc::new(AtomicUsize::new(0));
        let without_len = Arc::new(AtomicUsize::new(0));
        let (w, wo) = (with_len.clone(), without_len.clone());
        net.tamper = Some(Box::new(move |_, to_server, p| {
            let Ok((_, tcp)) = mptcp_engine::wire::ip::parse_ip_tcp(p) else {
                return true;
            };
            if to_server && !tcp.payload.is_empty() {
                if let Some(mpc) = tcp.options.mptcp.mp_capable() {
                    let n = if mpc.data_len.is_some() { &w } else { &wo };
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
            true
        }));
        check(&mut net, 200_000, 10_000, 3, Duration::from_secs(30));
        assert!(with_len.load(Ordering::Relaxed) >= 1);
        assert_eq!(without_len.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn decode_verify_checks_an_mp_capable_mapping_spanning_segments() {
    use std::sync::{Arc, Mutex};
    let mut c = cfg();
    c.checksum = true;
    let mut net = Net::new(&[PathSpec::new(20, 5, 0)], c.clone(), c, false, 5);
    let packets: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let log = packets.clone();
    net.tamper = Some(Box::new(move |_, _, p| {
        log.lock().unwrap().push(p.clone());
        true
    }));
    check(&mut net, 100_000, 10_000, 5, Duration::from_secs(30));
    let mut w = mptcp_engine::pcap::PcapWriter::new(Vec::new(), 101).unwrap();
    let packets = packets.lock().unwrap();
    let mut spanning = 0;
    for (i, p) in packets.iter().enumerate() {
        w.write(i as u64 * 1000, p).unwrap();
        let (_, tcp) = mptcp_engine::wire::ip::parse_ip_tcp(p).unwrap();
        if let Some(len) = tcp.options.mptcp.mp_capable().and_then(|m| m.data_len) {
            spanning += usize::from(usize::from(len) > tcp.payload.len());
        }
    }
    // The engine's first mapping rides on several segments, as Linux's does.
    assert!(spanning >= 2, "{spanning}");
    let mut out = Vec::new();
    let report = mptcp_decode::decode_bytes(
        &w.into_inner(),
        mptcp_decode::Options {
            json: false,
            verify: true,
        },
        &mut out,
    )
    .unwrap();
    let s = report.verify.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(s.mismatches(), 0, "{text}");
    assert!(s.count("dss_checksum").0 > 10, "{text}");
}

fn v0_cfg(checksum: bool) -> MptcpConfig {
    MptcpConfig {
        client_version: mptcp_engine::crypto::Version::V0,
        checksum,
        ..cfg()
    }
}

fn mptcp_options(p: &[u8]) -> (mptcp_engine::wire::tcp::TcpFlags, Vec<MptcpOption>) {
    let (_, tcp) = mptcp_engine::wire::ip::parse_ip_tcp(p).unwrap();
    (tcp.flags, tcp.options.mptcp.iter().copied().collect())
}

use mptcp_engine::wire::mptcp::MptcpOption;
use mptcp_engine::wire::tcp::TcpFlags;

#[test]
fn v0_transfers_byte_exact_with_and_without_checksums() {
    for (seed, checksum) in [(1u64, true), (2, false), (3, true)] {
        let mut net = Net::new(
            &[PathSpec::new(20, 5, 2000), PathSpec::new(10, 10, 0)],
            v0_cfg(checksum),
            cfg(),
            true,
            seed,
        );
        check(&mut net, 2 << 20, 300_000, seed, Duration::from_secs(60));
        for c in [
            net.client.connection().unwrap(),
            net.server.connection().unwrap(),
        ] {
            assert_eq!(c.version(), mptcp_engine::crypto::Version::V0);
            assert!(!c.is_fallback());
            assert_eq!(c.checksum_enabled(), checksum);
            assert_eq!(c.bad_hmacs(), 0);
            assert!(c.subflows().count() >= 2, "seed {seed}: a join");
        }
    }
}

#[test]
fn v0_lost_third_ack_costs_nothing() {
    // The server has the client's key from the SYN: when the pure third
    // ACK is lost, the first DSS segment completes the handshake.
    let mut net = Net::new(&[PathSpec::new(20, 5, 0)], v0_cfg(true), cfg(), false, 4);
    let mut dropped = false;
    let synacks = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let counted = synacks.clone();
    net.tamper = Some(Box::new(move |_, to_server, p| {
        let (flags, opts) = mptcp_options(p);
        if !to_server && flags.contains(TcpFlags::SYN | TcpFlags::ACK) {
            counted.set(counted.get() + 1);
        }
        let third = to_server
            && !flags.contains(TcpFlags::SYN)
            && opts
                .iter()
                .any(|o| matches!(o, MptcpOption::MpCapable(c) if c.receiver_key.is_some()));
        if third && !dropped {
            dropped = true;
            return false;
        }
        true
    }));
    check(&mut net, 1 << 20, 10_000, 4, Duration::from_secs(30));
    let s = net.server.connection().unwrap();
    assert!(!s.is_fallback());
    assert_eq!(s.version(), mptcp_engine::crypto::Version::V0);
    // Not recovered by the SYN/ACK's retransmission (as v1 must be).
    assert_eq!(synacks.get(), 1, "the server retransmitted its SYN/ACK");
}

#[test]
fn v0_fastclose_rides_an_ack_and_aborts_every_subflow() {
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(20, 8, 0)],
        v0_cfg(false),
        cfg(),
        true,
        12,
    );
    let seen = std::rc::Rc::new(std::cell::RefCell::new((0u32, 0u32, 0u32)));
    let s2 = seen.clone();
    net.tamper = Some(Box::new(move |_, to_server, p| {
        let (flags, opts) = mptcp_options(p);
        let mut s = s2.borrow_mut();
        if !to_server
            && opts
                .iter()
                .any(|o| matches!(o, MptcpOption::MpFastclose { .. }))
        {
            if flags.contains(TcpFlags::RST) {
                s.1 += 1;
            } else {
                s.0 += 1;
            }
        }
        if opts
            .iter()
            .any(|o| matches!(o, MptcpOption::MpTcpRst { .. }))
        {
            s.2 += 1;
        }
        true
    }));
    let data = pattern(4 << 20, 12);
    let mut sent = 0;
    let mut got = 0usize;
    let mut tmp = vec![0u8; 65536];
    let ok = net.run_until(Duration::from_secs(30), |n| {
        if n.client.is_established() {
            sent += n.client.send(&data[sent..]);
        }
        loop {
            let k = n.server.recv(&mut tmp);
            if k == 0 {
                break;
            }
            got += k;
        }
        if got > (1 << 20) {
            n.server.connection_mut().unwrap().abort();
        }
        n.client.is_closed()
    });
    assert!(ok, "client saw the fast close");
    let c = net.client.connection_mut().unwrap();
    assert!(c.subflows().count() >= 2);
    assert!(c.subflows().all(|f| f.status == SubflowStatus::Closed));
    let mut fast = false;
    while let Some(e) = c.poll_event() {
        fast |= e == MptcpEvent::FastClosed;
    }
    assert!(fast);
    let (on_ack, on_rst, tcprst) = *seen.borrow();
    assert_eq!(
        (on_ack, on_rst, tcprst),
        (1, 0, 0),
        "v0: MP_FASTCLOSE on one ACK, no MP_TCPRST"
    );
}

#[test]
fn v0_mp_prio_with_an_address_id_changes_that_address_subflows() {
    // The client marks its initial subflow backup; on the way the MP_PRIO
    // is rewritten to name address id 1 (the client's second address), as
    // a v0 host may: the server then marks the subflows from that address,
    // not the one the option came on.
    let mut c = v0_cfg(false);
    c.max_subflows = 4;
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(20, 8, 0)],
        c,
        cfg(),
        true,
        5,
    );
    net.tamper = Some(Box::new(move |_, to_server, p| {
        let (_, opts) = mptcp_options(p);
        if to_server && opts.iter().any(|o| matches!(o, MptcpOption::MpPrio { .. })) {
            reemit(p, |tcp, _| {
                let mut o = mptcp_engine::wire::mptcp::MptcpOptions::default();
                for x in tcp.options.mptcp.iter() {
                    let x = match *x {
                        MptcpOption::MpPrio { backup, .. } => MptcpOption::MpPrio {
                            backup,
                            addr_id: Some(1),
                        },
                        other => other,
                    };
                    o.push(x).unwrap();
                }
                tcp.options.mptcp = o;
            });
        }
        true
    }));
    let ok = net.run_until(Duration::from_secs(10), |n| {
        n.server.connection().is_some_and(|c| {
            c.subflows().filter(|f| f.remote_addr_id == 1).count() >= 1
                && c.subflows()
                    .all(|f| f.status != SubflowStatus::Establishing)
        })
    });
    assert!(ok, "joins from the second address");
    let id0 = net
        .client
        .connection()
        .unwrap()
        .subflows()
        .next()
        .unwrap()
        .id;
    net.client.connection_mut().unwrap().set_subflow_options(
        id0,
        mptcp_engine::mptcp::SubflowOptions {
            backup: Some(true),
            dscp: None,
        },
    );
    let ok = net.run_until(Duration::from_secs(5), |n| {
        n.server.connection().is_some_and(|c| {
            c.subflows()
                .filter(|f| f.remote_addr_id == 1)
                .all(|f| f.peer_backup)
        })
    });
    assert!(ok, "subflows from address 1 became backup");
    let s = net.server.connection().unwrap();
    assert!(
        s.subflows()
            .filter(|f| f.remote_addr_id == 0)
            .all(|f| !f.peer_backup),
        "the subflow the MP_PRIO rode on kept its priority"
    );
}

/// A DATA_FIN rides on a pure ACK. When the application writes its last
/// bytes and closes at once, the data segment that goes out first must not
/// swallow the ACK the DATA_FIN waits for: the peer sees the end within a
/// round trip, not after the DATA_FIN's retransmission timer (500 ms).
#[test]
fn data_fin_follows_the_last_data_without_its_timer() {
    let mut net = Net::new(
        &[PathSpec::new(100, 10, 0), PathSpec::new(100, 10, 0)],
        cfg(),
        cfg(),
        true,
        7,
    );
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.server.is_established()
            && n.client.is_established())
    );
    let down = pattern(10_000, 3);
    assert_eq!(net.server.send(&down), down.len());
    net.server.close();
    let start = net.now;
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 65536];
    let ok = net.run_until(Duration::from_secs(5), |n| {
        loop {
            let k = n.client.recv(&mut tmp);
            if k == 0 {
                break;
            }
            got.extend_from_slice(&tmp[..k]);
        }
        n.client.is_read_closed()
    });
    assert!(ok && got == down, "{} of {} bytes", got.len(), down.len());
    let took = net.now - start;
    assert!(
        took < Duration::from_millis(100),
        "the DATA_FIN took {took:?}"
    );
}

/// Linux may take data into its connection only after the subflow's ACK
/// went out, and then sends no other ACK while its window is wide: the
/// sender must send again at the data level to hear the DATA_ACK (Linux's
/// `mptcp_retransmit_timer`), or a sender waiting for it waits for ever.
#[test]
fn a_data_ack_the_last_subflow_ack_left_behind_is_drawn_out() {
    use mptcp_engine::wire::mptcp::MptcpOption;
    let mut net = Net::new(&[PathSpec::new(100, 5, 0)], cfg(), cfg(), false, 21);
    // Every DATA_ACK from the server arrives one ACK late.
    let mut previous: Option<u64> = None;
    net.tamper = Some(Box::new(move |_, to_server, p| {
        if to_server {
            return true;
        }
        let (_, tcp) = mptcp_engine::wire::ip::parse_ip_tcp(p).unwrap();
        let Some(dss) = tcp.options.mptcp.dss().copied() else {
            return true;
        };
        let Some(ack) = dss.data_ack else {
            return true;
        };
        let late = previous.replace(ack).unwrap_or(ack);
        reemit(p, |tcp, _| {
            let others: Vec<MptcpOption> = tcp
                .options
                .mptcp
                .iter()
                .filter(|o| !matches!(o, MptcpOption::Dss(_)))
                .cloned()
                .collect();
            tcp.options.mptcp.clear();
            for o in others {
                tcp.options.mptcp.push(o).unwrap();
            }
            let late = mptcp_engine::wire::mptcp::Dss {
                data_ack: Some(late),
                ..dss
            };
            tcp.options.mptcp.push(MptcpOption::Dss(late)).unwrap();
        });
        true
    }));
    let data = pattern(200_000, 21);
    let mut sent = 0;
    let mut got = 0;
    let mut tmp = vec![0u8; 65536];
    // Sent and never closed: no DATA_FIN comes to the rescue.
    let done = net.run_until(Duration::from_secs(5), |n| {
        if n.client.is_established() {
            sent += n.client.send(&data[sent..]);
        }
        got += n.server.recv(&mut tmp);
        n.client.connection().unwrap().data_acked() == data.len() as u64
    });
    let c = net.client.connection().unwrap();
    assert!(
        done,
        "DATA_ACK stuck at {} of {} (server read {got})",
        c.data_acked(),
        data.len()
    );
    let id = c.subflows().next().unwrap().id;
    let again = c.subflow_stats(id).unwrap().bytes_reinjected;
    assert!(
        (1..=65535).contains(&again),
        "{again} bytes sent again to draw the DATA_ACK"
    );
}
