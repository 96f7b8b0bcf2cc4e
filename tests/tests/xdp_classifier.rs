//! The XDP classifier run by the kernel on crafted frames (BPF_PROG_TEST_RUN).
//! Every test loads its own program instance, so counters start at zero.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mptcp_datapath::xdp::{Classifier, Counters, Ownership, Verdict};
use mptcp_tests::{
    frames::{self, mptcp, TcpFrame, ACK, FIN, SYN},
    require_root,
};

const OWNED_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const OTHER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
const PEER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const OWNED_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
const OTHER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3));
const PEER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
const LISTEN: u16 = 443;
const OTHER_PORT: u16 = 22;
const CLIENT_PORTS: std::ops::RangeInclusive<u16> = 40000..=40999;

/// Sets the one kind counter a segment should increment.
type KindSetter = fn(&mut Counters);

fn classifier() -> Option<Classifier> {
    if !require_root() {
        return None;
    }
    let mut c = Classifier::load().expect("load classifier");
    c.set_ownership(&Ownership {
        addresses: vec![OWNED_V4, OWNED_V6],
        listen_ports: vec![8080, LISTEN],
        client_ports: Some(CLIENT_PORTS),
    })
    .expect("write config");
    Some(c)
}

fn to_owned(dst: IpAddr) -> TcpFrame {
    let src = if dst.is_ipv4() { PEER_V4 } else { PEER_V6 };
    TcpFrame::new(src, dst, 50000, LISTEN)
}

/// Counters after exactly one owned segment of the given kind that fell back
/// to the kernel (no AF_XDP socket is bound in these tests).
fn one_owned(kind: KindSetter) -> Counters {
    let mut c = Counters {
        seen: 1,
        passed: 1,
        owned: 1,
        owned_no_socket: 1,
        ..Counters::default()
    };
    kind(&mut c);
    c
}

fn one_passed() -> Counters {
    Counters {
        seen: 1,
        passed: 1,
        ..Counters::default()
    }
}

fn one_malformed() -> Counters {
    Counters {
        seen: 1,
        passed: 1,
        malformed: 1,
        ..Counters::default()
    }
}

fn check_with(c: &mut Classifier, frame: &[u8], expected: Counters) {
    c.reset_counters().expect("reset counters");
    let verdict = c.test_run(frame).expect("test run");
    assert_eq!(verdict, Verdict::Pass, "frame {frame:02x?}");
    assert_eq!(
        c.counters().expect("counters"),
        expected,
        "frame {frame:02x?}"
    );
}

#[test]
fn config_map_round_trips() {
    let Some(c) = classifier() else { return };
    let back = Ownership::from_config(&c.config().expect("read config"));
    assert_eq!(back.addresses, vec![OWNED_V4, OWNED_V6]);
    assert_eq!(back.listen_ports, vec![8080, LISTEN]);
    assert_eq!(back.client_ports, Some(CLIENT_PORTS));
}

#[test]
fn owned_segments_of_each_kind_are_steered_ipv4_ipv6_and_vlan() {
    let Some(mut c) = classifier() else { return };
    let cases: [(&[u8], u8, KindSetter); 7] = [
        (&[], ACK, |c| c.plain_tcp = 1),
        (&mptcp::MP_CAPABLE_SYN, SYN, |c| c.mp_capable_syn = 1),
        (&mptcp::MP_JOIN_SYN, SYN, |c| c.mp_join_syn = 1),
        (&mptcp::DSS_ACK, ACK, |c| c.dss = 1),
        (&mptcp::MP_CAPABLE_ACK, ACK, |c| c.other_mptcp = 1),
        (&mptcp::ADD_ADDR, ACK, |c| c.other_mptcp = 1),
        (&mptcp::MP_PRIO, ACK | FIN, |c| c.other_mptcp = 1),
    ];
    for dst in [OWNED_V4, OWNED_V6] {
        for vlan in [None, Some(7)] {
            for (options, flags, kind) in cases {
                let mut frame = to_owned(dst).flags(flags).options(options);
                frame.vlan = vlan;
                check_with(&mut c, &frame.build(), one_owned(kind));
            }
        }
    }
}

#[test]
fn mptcp_kind_precedence_and_option_walk() {
    let Some(mut c) = classifier() else { return };
    // SYN kinds win over DSS, DSS over other subtypes, whatever the order.
    let mut opts = mptcp::DSS_ACK.to_vec();
    opts.extend_from_slice(&mptcp::MP_JOIN_SYN);
    check_with(
        &mut c,
        &to_owned(OWNED_V4).flags(SYN).options(&opts).build(),
        one_owned(|c| c.mp_join_syn = 1),
    );
    let mut opts = mptcp::MP_PRIO.to_vec();
    opts.extend_from_slice(&mptcp::DSS_ACK);
    check_with(
        &mut c,
        &to_owned(OWNED_V4).options(&opts).build(),
        one_owned(|c| c.dss = 1),
    );
    // MP_CAPABLE without SYN is not a SYN kind.
    check_with(
        &mut c,
        &to_owned(OWNED_V4).options(&mptcp::MP_CAPABLE_SYN).build(),
        one_owned(|c| c.other_mptcp = 1),
    );
    // Common options before MPTCP: MSS, SACK permitted, timestamps, window scale.
    let mut opts = vec![
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    opts.extend_from_slice(&mptcp::MP_CAPABLE_SYN);
    check_with(
        &mut c,
        &to_owned(OWNED_V4).flags(SYN).options(&opts).build(),
        one_owned(|c| c.mp_capable_syn = 1),
    );
    // The walk reaches the last option of a full 40-byte area.
    let mut opts = vec![1u8; 32];
    opts.extend_from_slice(&mptcp::DSS_ACK);
    assert_eq!(opts.len(), 40);
    check_with(
        &mut c,
        &to_owned(OWNED_V6).options(&opts).build(),
        one_owned(|c| c.dss = 1),
    );
    // Nothing after EOL counts.
    let mut opts = vec![1, 0, 0, 0];
    opts.extend_from_slice(&mptcp::DSS_ACK);
    check_with(
        &mut c,
        &to_owned(OWNED_V4).options(&opts).build(),
        one_owned(|c| c.plain_tcp = 1),
    );
}

#[test]
fn client_port_range_is_owned_inclusive() {
    let Some(mut c) = classifier() else { return };
    for port in [*CLIENT_PORTS.start(), 40500, *CLIENT_PORTS.end(), 8080] {
        let frame = TcpFrame::new(PEER_V4, OWNED_V4, LISTEN, port).build();
        check_with(&mut c, &frame, one_owned(|c| c.plain_tcp = 1));
    }
    for port in [
        CLIENT_PORTS.start() - 1,
        CLIENT_PORTS.end() + 1,
        OTHER_PORT,
        0,
        65535,
    ] {
        let frame = TcpFrame::new(PEER_V4, OWNED_V4, LISTEN, port).build();
        check_with(&mut c, &frame, one_passed());
    }
}

#[test]
fn other_addresses_ports_and_protocols_pass_unchanged() {
    let Some(mut c) = classifier() else { return };
    let mut frames_to_pass = vec![
        TcpFrame::new(PEER_V4, OTHER_V4, 50000, LISTEN)
            .options(&mptcp::MP_CAPABLE_SYN)
            .flags(SYN)
            .build(),
        TcpFrame::new(PEER_V6, OTHER_V6, 50000, LISTEN)
            .flags(SYN)
            .build(),
        TcpFrame::new(PEER_V4, OWNED_V4, 50000, OTHER_PORT).build(),
        TcpFrame::new(PEER_V6, OWNED_V6, 50000, OTHER_PORT)
            .vlan(3)
            .build(),
        // Source matches, destination does not: direction matters.
        TcpFrame::new(OWNED_V4, PEER_V4, LISTEN, 50000).build(),
        frames::arp(),
    ];
    // UDP and ICMP to an owned address and port.
    for protocol in [17u8, 1] {
        let mut f = to_owned(OWNED_V4);
        f.protocol = protocol;
        frames_to_pass.push(f.build());
        let mut f = to_owned(OWNED_V6);
        f.protocol = protocol;
        frames_to_pass.push(f.build());
    }
    // Fragments: first (MF), middle and last (offset) go to the kernel for reassembly.
    for frag in [0x2000u16, 0x2010, 0x0010] {
        let mut f = to_owned(OWNED_V4);
        f.frag = frag;
        frames_to_pass.push(f.build());
    }
    // IPv6 extension headers (hop-by-hop, routing, fragment) are the kernel's.
    for next_header in [0u8, 43, 44] {
        let mut f = to_owned(OWNED_V6);
        f.protocol = next_header;
        frames_to_pass.push(f.build());
    }
    // Two VLAN tags (QinQ inside 802.1Q): only one tag is parsed.
    let mut qinq = frames::ethernet(Some(5), frames::ETH_P_8021Q);
    qinq.extend_from_slice(&to_owned(OWNED_V4).build()[12..]);
    frames_to_pass.push(qinq);
    for frame in &frames_to_pass {
        check_with(&mut c, frame, one_passed());
    }
}

#[test]
fn passed_frames_are_not_modified() {
    let Some(c) = classifier() else { return };
    // The verdict alone does not prove it; compare the bytes that come back.
    let frame = to_owned(OWNED_V4)
        .options(&mptcp::DSS_ACK)
        .payload(b"hello")
        .build();
    let out = c.test_run_output(&frame).expect("test run");
    assert_eq!(out.0, Verdict::Pass);
    assert_eq!(out.1, frame);
}

#[test]
fn every_header_truncation_is_malformed() {
    let Some(mut c) = classifier() else { return };
    let full_frames = [
        to_owned(OWNED_V4)
            .flags(SYN)
            .options(&mptcp::MP_CAPABLE_SYN)
            .build(),
        to_owned(OWNED_V6).options(&mptcp::DSS_ACK).build(),
        to_owned(OWNED_V4)
            .vlan(9)
            .options(&mptcp::MP_JOIN_SYN)
            .build(),
        to_owned(OWNED_V6).vlan(9).build(),
        {
            let mut f = to_owned(OWNED_V4).options(&mptcp::DSS_ACK);
            f.ihl = 15;
            f.build()
        },
    ];
    for full in &full_frames {
        c.reset_counters().expect("reset");
        assert_eq!(c.test_run(full).expect("run"), Verdict::Pass);
        let whole = c.counters().expect("counters");
        assert_eq!(
            (whole.owned, whole.malformed),
            (1, 0),
            "untruncated {full:02x?}"
        );
        // The kernel refuses XDP test runs shorter than an Ethernet header.
        for len in 14..full.len() {
            check_with(&mut c, &full[..len], one_malformed());
        }
    }
}

#[test]
fn malformed_tcp_options_pass_to_the_kernel() {
    let Some(mut c) = classifier() else { return };
    let bad_options: [&[u8]; 7] = [
        &[30, 0, 0x20, 0],             // length 0
        &[2, 1, 0, 0],                 // length 1
        &[8, 10, 0, 0],                // length past the header
        &[1, 1, 1, 30],                // kind in the last byte, no length byte
        &[30, 2, 1, 1],                // MPTCP without a subtype
        &[1, 1, 30, 7, 0x20, 1, 0, 0], // MPTCP option running past the header
        &[30, 255, 0x20, 0],           // length 255
    ];
    for opts in bad_options {
        let mut f = to_owned(OWNED_V4).options(opts);
        f.raw_data_offset = Some(((20 + opts.len()) / 4) as u8);
        check_with(&mut c, &f.build(), one_malformed());
        let mut f = to_owned(OWNED_V6).vlan(1).options(opts);
        f.raw_data_offset = Some(((20 + opts.len()) / 4) as u8);
        check_with(&mut c, &f.build(), one_malformed());
    }
}

#[test]
fn bad_header_lengths_are_malformed() {
    let Some(mut c) = classifier() else { return };
    // TCP data offset below 5 words, and past the end of the IP payload.
    for offset in [0u8, 4, 6, 15] {
        let mut f = to_owned(OWNED_V4);
        f.raw_data_offset = Some(offset);
        check_with(&mut c, &f.build(), one_malformed());
        let mut f = to_owned(OWNED_V6);
        f.raw_data_offset = Some(offset);
        check_with(&mut c, &f.build(), one_malformed());
    }
    // TCP is only parsed for owned addresses: a bad data offset elsewhere is the kernel's.
    let mut f = TcpFrame::new(PEER_V4, OTHER_V4, 50000, LISTEN);
    f.raw_data_offset = Some(4);
    check_with(&mut c, &f.build(), one_passed());
    // IPv4 IHL below 5 words.
    for ihl in [0u8, 4] {
        let mut f = to_owned(OWNED_V4);
        f.ihl = ihl;
        check_with(&mut c, &f.build(), one_malformed());
    }
    // IP version not matching the EtherType.
    let mut v4 = to_owned(OWNED_V4).build();
    v4[14] = 0x65;
    check_with(&mut c, &v4, one_malformed());
    let mut v6 = to_owned(OWNED_V6).build();
    v6[14] = 0x40;
    check_with(&mut c, &v6, one_malformed());
    // IPv4 total length shorter than its header.
    let mut short = to_owned(OWNED_V4).build();
    short[16..18].copy_from_slice(&19u16.to_be_bytes());
    check_with(&mut c, &short, one_malformed());
    // Ethernet padding after the IP packet is fine.
    let mut padded = to_owned(OWNED_V4).build();
    padded.extend_from_slice(&[0; 6]);
    check_with(&mut c, &padded, one_owned(|c| c.plain_tcp = 1));
}

#[test]
fn empty_config_owns_nothing() {
    if !require_root() {
        return;
    }
    let mut c = Classifier::load().expect("load");
    for frame in [
        to_owned(OWNED_V4)
            .flags(SYN)
            .options(&mptcp::MP_CAPABLE_SYN)
            .build(),
        to_owned(OWNED_V6).options(&mptcp::DSS_ACK).build(),
    ] {
        check_with(&mut c, &frame, one_passed());
    }
}

#[test]
fn counters_accumulate_across_runs() {
    let Some(c) = classifier() else { return };
    let owned = to_owned(OWNED_V4).options(&mptcp::DSS_ACK).build();
    let other = TcpFrame::new(PEER_V4, OTHER_V4, 1, 2).build();
    for _ in 0..5 {
        assert_eq!(c.test_run(&owned).expect("run"), Verdict::Pass);
    }
    for _ in 0..3 {
        assert_eq!(c.test_run(&other).expect("run"), Verdict::Pass);
        assert_eq!(c.test_run(&owned[..30]).expect("run"), Verdict::Pass);
    }
    let expected = Counters {
        seen: 11,
        passed: 11,
        owned: 5,
        owned_no_socket: 5,
        malformed: 3,
        dss: 5,
        ..Counters::default()
    };
    assert_eq!(c.counters().expect("counters"), expected);
}

/// Several workers: a segment of a subflow in TUPLES, and a MP_JOIN SYN
/// whose token is in TOKENS, carry their owner in the XDP metadata; other
/// segments (and everything with one worker) are not tagged.
#[test]
fn owners_from_the_affinity_maps_tag_frames() {
    use mptcp_datapath::xdp::{affinity::AffinityMaps, META_MAGIC};
    let Some(mut c) = classifier() else { return };
    let mut maps = AffinityMaps::new(vec![c.affinity_fds().expect("map fds")], 1);
    let local = std::net::SocketAddr::new(OWNED_V4, LISTEN);
    maps.own_tuple(local, std::net::SocketAddr::new(PEER_V4, 50000));
    maps.own_token(0xdeadbeef);
    let local6 = std::net::SocketAddr::new(OWNED_V6, LISTEN);
    maps.own_tuple(local6, std::net::SocketAddr::new(PEER_V6, 50000));
    assert_eq!(maps.counters.updates, 3);
    assert_eq!(maps.counters.failed, 0);
    let ack = to_owned(OWNED_V4).options(&mptcp::DSS_ACK).build();
    let join = TcpFrame::new(PEER_V4, OWNED_V4, 50001, LISTEN)
        .flags(SYN)
        .options(&mptcp::MP_JOIN_SYN)
        .build();
    // Our own join answered: a SYN/ACK with MP_JOIN (HMAC, no token) on a known subflow.
    let join_synack = to_owned(OWNED_V4)
        .flags(SYN | ACK)
        .options(&[30, 16, 0x10, 1, 9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3, 4])
        .build();
    let stranger = TcpFrame::new(PEER_V4, OWNED_V4, 50002, LISTEN)
        .options(&mptcp::DSS_ACK)
        .build();
    let run = |c: &mut Classifier, frame: &[u8]| {
        c.reset_counters().expect("reset");
        let (verdict, out) = c.test_run_output(frame).expect("test run");
        assert_eq!(verdict, Verdict::Pass);
        (c.counters().expect("counters").owner_tagged, out)
    };
    // One worker: no lookups, nothing tagged.
    assert_eq!(run(&mut c, &ack), (0, ack.clone()));
    c.set_workers(2).expect("workers");
    let ack6 = to_owned(OWNED_V6).options(&mptcp::DSS_ACK).build();
    for frame in [&ack, &join, &join_synack, &ack6] {
        let (tagged, out) = run(&mut c, frame);
        assert_eq!(tagged, 1);
        // The test run returns the frame from its metadata on.
        assert_eq!(out.len(), frame.len() + 8, "{out:02x?}");
        let word = |i: usize| u32::from_ne_bytes(out[i..i + 4].try_into().unwrap());
        assert_eq!((word(0), word(4)), (META_MAGIC, 1));
        assert_eq!(&out[8..], &frame[..]);
    }
    assert_eq!(run(&mut c, &stranger), (0, stranger.clone()));
    // Forgotten: no longer tagged.
    maps.forget_tuple(local, std::net::SocketAddr::new(PEER_V4, 50000));
    maps.forget_token(0xdeadbeef);
    maps.forget_tuple(local6, std::net::SocketAddr::new(PEER_V6, 50000));
    assert_eq!(maps.counters.deletes, 3);
    assert_eq!(run(&mut c, &ack).0, 0);
    assert_eq!(run(&mut c, &join).0, 0);
    assert_eq!(run(&mut c, &ack6).0, 0);
}
