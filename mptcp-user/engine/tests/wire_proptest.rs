//! Property tests for the codecs: emit then parse gives the same value for
//! every Repr and every option; truncations and arbitrary bytes give
//! errors, never panics.
use mptcp_decode::{decode_bytes, Options};
use mptcp_engine::pcap::{PcapReader, PcapWriter, LINKTYPE_ETHERNET};
use mptcp_engine::wire::mptcp::{
    AddAddr, AddrIds, Dss, DssMapping, MpCapable, MpJoin, MptcpOption,
};
use mptcp_engine::wire::tcp::{RawOptions, SackBlocks, Timestamps};
use mptcp_engine::wire::{
    emit_eth_ip_tcp, parse_eth_ip_tcp, parse_ip_tcp, EthernetFrame, EthernetRepr, IpRepr,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, MacAddr, TcpFlags, TcpOptions, TcpPacket, TcpRepr,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}
fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}
fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![ipv4().prop_map(IpAddr::V4), ipv6().prop_map(IpAddr::V6)]
}

/// A 64-bit value, or one that fits 32 bits when `wide` is false.
fn var_width() -> impl Strategy<Value = (u64, bool)> {
    prop_oneof![
        any::<u64>().prop_map(|v| (v, true)),
        any::<u32>().prop_map(|v| (v as u64, false))
    ]
}

fn mp_capable() -> impl Strategy<Value = MpCapable> {
    (
        0u8..16,
        any::<u8>(),
        0usize..5,
        any::<u64>(),
        any::<u64>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(version, flags, shape, sk, rk, len, ck)| MpCapable {
            version,
            flags,
            sender_key: (shape >= 1).then_some(sk),
            receiver_key: (shape >= 2).then_some(rk),
            data_len: (shape >= 3).then_some(len),
            checksum: (shape >= 4).then_some(ck),
        })
}

fn mp_join() -> impl Strategy<Value = MpJoin> {
    prop_oneof![
        (any::<bool>(), any::<u8>(), any::<u32>(), any::<u32>()).prop_map(
            |(backup, addr_id, token, nonce)| MpJoin::Syn {
                backup,
                addr_id,
                token,
                nonce
            }
        ),
        (any::<bool>(), any::<u8>(), any::<u64>(), any::<u32>()).prop_map(
            |(backup, addr_id, hmac, nonce)| MpJoin::SynAck {
                backup,
                addr_id,
                hmac,
                nonce
            }
        ),
        any::<[u8; 20]>().prop_map(|hmac| MpJoin::Ack { hmac }),
    ]
}

fn dss() -> impl Strategy<Value = Dss> {
    (
        any::<bool>(),
        proptest::option::of(var_width()),
        proptest::option::of((
            var_width(),
            any::<u32>(),
            any::<u16>(),
            proptest::option::of(any::<u16>()),
        )),
    )
        .prop_map(|(data_fin, ack, map)| Dss {
            data_fin,
            data_ack: ack.map(|a| a.0),
            data_ack_wide: ack.is_some_and(|a| a.1),
            mapping: map.map(|((dsn, dsn_wide), ssn, data_len, checksum)| DssMapping {
                dsn,
                dsn_wide,
                ssn,
                data_len,
                checksum,
            }),
        })
}

fn mptcp_option() -> impl Strategy<Value = MptcpOption> {
    prop_oneof![
        mp_capable().prop_map(MptcpOption::MpCapable),
        mp_join().prop_map(MptcpOption::MpJoin),
        dss().prop_map(MptcpOption::Dss),
        (
            any::<bool>(),
            any::<u8>(),
            ip(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(echo, addr_id, addr, port, hmac)| MptcpOption::AddAddr(AddAddr {
                    echo,
                    addr_id,
                    addr,
                    port,
                    hmac
                })
            ),
        proptest::collection::vec(any::<u8>(), 1..=37)
            .prop_map(|ids| MptcpOption::RemoveAddr(AddrIds::from_slice(&ids).unwrap())),
        (any::<bool>(), proptest::option::of(any::<u8>()))
            .prop_map(|(backup, addr_id)| MptcpOption::MpPrio { backup, addr_id }),
        any::<u64>().prop_map(|dsn| MptcpOption::MpFail { dsn }),
        any::<u64>().prop_map(|receiver_key| MptcpOption::MpFastclose { receiver_key }),
        (0u8..16, any::<u8>()).prop_map(|(flags, reason)| MptcpOption::MpTcpRst { flags, reason }),
    ]
}

fn raw_options() -> impl Strategy<Value = RawOptions> {
    // Kinds no codec claims (MPTCP's 30 excluded), data up to 6 bytes.
    proptest::collection::vec(
        (
            prop_oneof![9u8..30, 31u8..=255],
            proptest::collection::vec(any::<u8>(), 0..6),
        ),
        0..3,
    )
    .prop_map(|opts| {
        let mut raw = RawOptions::default();
        for (kind, data) in opts {
            let mut o = vec![kind, (2 + data.len()) as u8];
            o.extend(data);
            raw.push(&o).unwrap();
        }
        raw
    })
}

fn tcp_options() -> impl Strategy<Value = TcpOptions> {
    (
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u8>()),
        any::<bool>(),
        proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=4),
        proptest::option::of((any::<u32>(), any::<u32>())),
        proptest::collection::vec(mptcp_option(), 0..=2),
        raw_options(),
    )
        .prop_map(
            |(mss, window_scale, sack_permitted, sack, ts, mptcp, unknown)| {
                let mut o = TcpOptions {
                    mss,
                    window_scale,
                    sack_permitted,
                    timestamps: ts.map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
                    unknown,
                    ..Default::default()
                };
                let mut blocks = SackBlocks::default();
                for (l, r) in sack {
                    blocks.push(l, r);
                }
                o.sack = blocks;
                for m in mptcp {
                    o.mptcp.push(m).unwrap();
                }
                o
            },
        )
        // Only what fits the 40-byte option space can be emitted.
        .prop_filter("fits in 40 bytes", |o| o.wire_len().is_ok_and(|n| n <= 40))
}

fn tcp_fields() -> impl Strategy<Value = TcpFields> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
    )
}

fn ip_pair() -> impl Strategy<Value = IpRepr> {
    prop_oneof![
        (ipv4(), ipv4(), any::<u8>(), any::<u16>(), any::<u8>()).prop_map(
            |(src, dst, ttl, ident, dscp_ecn)| {
                IpRepr::V4(Ipv4Repr {
                    src,
                    dst,
                    ttl,
                    ident,
                    dscp_ecn,
                    ..Default::default()
                })
            }
        ),
        (ipv6(), ipv6(), any::<u8>(), 0u32..0x10_0000, any::<u8>()).prop_map(
            |(src, dst, hop_limit, flow_label, traffic_class)| {
                IpRepr::V6(Ipv6Repr {
                    src,
                    dst,
                    hop_limit,
                    flow_label,
                    traffic_class,
                    ..Default::default()
                })
            }
        ),
    ]
}

type TcpFields = (u16, u16, u32, u32, u8, u16, u16);
type Frame = (EthernetRepr, IpRepr, TcpOptions, TcpFields, Vec<u8>);

fn frame() -> impl Strategy<Value = Frame> {
    (
        (
            any::<[u8; 6]>(),
            any::<[u8; 6]>(),
            proptest::option::of(any::<u16>()),
        )
            .prop_map(|(d, s, vlan)| EthernetRepr {
                dst: MacAddr(d),
                src: MacAddr(s),
                vlan,
                ethertype: 0,
            }),
        ip_pair(),
        tcp_options(),
        tcp_fields(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
}

fn tcp_repr<'a>(
    f: (u16, u16, u32, u32, u8, u16, u16),
    options: TcpOptions,
    payload: &'a [u8],
) -> TcpRepr<'a> {
    TcpRepr {
        src_port: f.0,
        dst_port: f.1,
        seq: f.2,
        ack: f.3,
        flags: TcpFlags(f.4),
        window: f.5,
        urgent: f.6,
        options,
        payload,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mptcp_option_roundtrip(o in mptcp_option()) {
        let mut buf = [0u8; 40];
        let n = o.emit(&mut buf).unwrap();
        prop_assert_eq!(n, o.wire_len().unwrap());
        prop_assert_eq!(MptcpOption::parse(&buf[..n]).unwrap(), Some(o));
        for cut in 0..n {
            prop_assert!(MptcpOption::parse(&buf[..cut]).is_err());
        }
        prop_assert_eq!(o.emit(&mut buf[..n - 1]).unwrap_err(), mptcp_engine::wire::Error::Exhausted);
    }

    #[test]
    fn tcp_options_roundtrip(o in tcp_options()) {
        let mut buf = [0u8; 40];
        let n = o.emit(&mut buf).unwrap();
        prop_assert_eq!(n % 4, 0);
        prop_assert_eq!(TcpOptions::parse(&buf[..n]).unwrap(), o);
    }

    #[test]
    fn ethernet_roundtrip(d in any::<[u8; 6]>(), s in any::<[u8; 6]>(), vlan in proptest::option::of(any::<u16>()), et in any::<u16>()) {
        prop_assume!(et != 0x8100);
        let r = EthernetRepr { dst: MacAddr(d), src: MacAddr(s), vlan, ethertype: et };
        let mut buf = [0u8; 18];
        let n = r.emit(&mut buf).unwrap();
        prop_assert_eq!(n, r.header_len());
        let f = EthernetFrame::new_checked(&buf[..n]).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&f).unwrap(), r);
        for cut in 0..n {
            prop_assert!(EthernetFrame::new_checked(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn ip_roundtrip(ip in ip_pair(), len in 0u16..100, more_frags in any::<bool>(), frag_offset in 0u16..0x2000, dont_frag in any::<bool>()) {
        let mut buf = [0u8; 160];
        match ip {
            IpRepr::V4(mut r) => {
                r.payload_len = len;
                r.more_frags = more_frags;
                r.frag_offset = frag_offset;
                r.dont_frag = dont_frag;
                r.emit(&mut buf).unwrap();
                let p = Ipv4Packet::new_checked(&buf[..r.buffer_len()]).unwrap();
                prop_assert!(p.verify_checksum());
                prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), r);
                for cut in 0..r.buffer_len() {
                    prop_assert!(Ipv4Packet::new_checked(&buf[..cut]).is_err());
                }
            }
            IpRepr::V6(mut r) => {
                r.payload_len = len;
                r.emit(&mut buf).unwrap();
                let p = Ipv6Packet::new_checked(&buf[..r.buffer_len()]).unwrap();
                prop_assert_eq!(Ipv6Repr::parse(&p).unwrap(), r);
                for cut in 0..r.buffer_len() {
                    prop_assert!(Ipv6Packet::new_checked(&buf[..cut]).is_err());
                }
            }
        }
    }

    #[test]
    fn frame_roundtrip_and_truncation((eth, ip, opts, f, payload) in frame()) {
        let tcp = tcp_repr(f, opts, &payload);
        let mut buf = [0u8; 400];
        let n = emit_eth_ip_tcp(&eth, &ip, &tcp, &mut buf).unwrap();
        let (eth2, ip2, tcp2) = parse_eth_ip_tcp(&buf[..n]).unwrap();
        prop_assert_eq!(eth2.vlan, eth.vlan);
        prop_assert_eq!(ip2.src(), ip.src());
        prop_assert_eq!(ip2.dst(), ip.dst());
        prop_assert_eq!(&tcp2, &tcp);
        let hl = eth.header_len();
        prop_assert!(TcpPacket::new_checked(&buf[hl + ip.header_len()..n]).unwrap().verify_checksum(ip.src(), ip.dst()));
        // Re-emitting the parsed segment gives the same bytes.
        let mut again = [0u8; 400];
        prop_assert_eq!(emit_eth_ip_tcp(&eth2, &ip2, &tcp2, &mut again).unwrap(), n);
        prop_assert_eq!(&again[..n], &buf[..n]);
        for cut in 0..n {
            prop_assert!(parse_eth_ip_tcp(&buf[..cut]).is_err(), "cut {}", cut);
        }
        prop_assert!(emit_eth_ip_tcp(&eth, &ip, &tcp, &mut again[..n - 1]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = parse_ip_tcp(&bytes);
        let _ = parse_eth_ip_tcp(&bytes);
        let _ = TcpOptions::parse(&bytes);
        let _ = MptcpOption::parse(&bytes);
        let _ = TcpRepr::parse(&bytes);
        if let Ok(r) = PcapReader::new(&bytes) {
            for rec in r.take(100).flatten() {
                let _ = rec.network();
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic_the_decoder(
        frames in proptest::collection::vec(frame(), 1..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
    ) {
        // Valid frames with a few bytes changed, through the whole decode --verify path.
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET).unwrap();
        for (i, (eth, ip, opts, f, payload)) in frames.into_iter().enumerate() {
            let tcp = tcp_repr(f, opts, &payload);
            let mut buf = [0u8; 400];
            let n = emit_eth_ip_tcp(&eth, &ip, &tcp, &mut buf).unwrap();
            for &(at, x) in &flips {
                buf[at % n] ^= x;
            }
            w.write(i as u64 * 1000, &buf[..n]).unwrap();
        }
        let file = w.into_inner();
        for json in [true, false] {
            let mut out = Vec::new();
            let r = decode_bytes(&file, Options { json, verify: true }, &mut out);
            prop_assert!(r.is_ok());
            prop_assert!(!out.is_empty());
        }
    }
}
