//! `decode --verify` on a capture built here from the crypto functions,
//! covering what the kernel captures do not: a checksummed mapping split
//! over two segments at an odd offset, 32-bit DSNs, MP_CAPABLE carrying
//! data, an IPv6 ADD_ADDR with a port, and a join opened by the server.
use mptcp_decode::{decode_bytes, Options, Report};
use mptcp_engine::crypto;
use mptcp_engine::pcap::{PcapWriter, LINKTYPE_ETHERNET};
use mptcp_engine::wire::mptcp::{AddAddr, Dss, DssMapping, MpCapable, MpJoin, MptcpOption};
use mptcp_engine::wire::{emit_eth_ip_tcp, EthernetRepr, IpRepr, TcpFlags, TcpOptions, TcpRepr};
use std::net::{IpAddr, SocketAddr};

const KC: u64 = 0x0123_4567_89ab_cdef;
const KS: u64 = 0xfedc_ba98_7654_3210;

struct Capture {
    w: PcapWriter<Vec<u8>>,
    n: u64,
}

impl Capture {
    #[allow(clippy::too_many_arguments)] // a segment is its header fields
    fn seg(
        &mut self,
        src: &str,
        dst: &str,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        opts: &[MptcpOption],
        payload: &[u8],
    ) {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let mut options = TcpOptions::default();
        for o in opts {
            options.mptcp.push(*o).unwrap();
        }
        let tcp = TcpRepr {
            src_port: s.port(),
            dst_port: d.port(),
            seq,
            ack,
            flags,
            window: 1000,
            urgent: 0,
            options,
            payload,
        };
        let ip = IpRepr::new_tcp(s.ip(), d.ip()).unwrap();
        let mut buf = [0u8; 2000];
        let n = emit_eth_ip_tcp(&EthernetRepr::default(), &ip, &tcp, &mut buf).unwrap();
        self.n += 1;
        self.w.write(self.n * 1000, &buf[..n]).unwrap();
    }
}

const C: &str = "192.0.2.1:1000";
const S: &str = "192.0.2.2:80";
const S2: &str = "192.0.2.3:5000";

/// Builds the capture file.
fn capture() -> Vec<u8> {
    let syn = TcpFlags::SYN;
    let ack = TcpFlags::ACK;
    let mut c = Capture {
        w: PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET).unwrap(),
        n: 0,
    };
    let mpc = MpCapable {
        version: 1,
        flags: MpCapable::FLAG_CHECKSUM | MpCapable::FLAG_HMAC_SHA256,
        ..Default::default()
    };
    let (isn_c, isn_s) = (1000u32, 5000u32);
    c.seg(C, S, syn, isn_c, 0, &[MptcpOption::MpCapable(mpc)], b"");
    c.seg(
        S,
        C,
        syn | ack,
        isn_s,
        isn_c + 1,
        &[MptcpOption::MpCapable(MpCapable {
            sender_key: Some(KS),
            ..mpc
        })],
        b"",
    );
    // Third ACK with data: the checksum covers IDSN+1, SSN 1, length 5.
    let hello = b"hello";
    let ck = crypto::dss_checksum(crypto::idsn(KC).wrapping_add(1), 1, 5, hello);
    let third = MpCapable {
        sender_key: Some(KC),
        receiver_key: Some(KS),
        data_len: Some(5),
        checksum: Some(ck),
        ..mpc
    };
    c.seg(
        C,
        S,
        ack,
        isn_c + 1,
        isn_s + 1,
        &[MptcpOption::MpCapable(third)],
        hello,
    );
    // The server's first mapping: 1001 bytes, 32-bit DSN, split 501 + 500.
    let data: Vec<u8> = (0..1001u32).map(|i| (i * 31 + 7) as u8).collect();
    let dsn = crypto::idsn(KS).wrapping_add(1);
    let ck = crypto::dss_checksum(dsn, 1, 1001, &data);
    let map = Dss {
        mapping: Some(DssMapping {
            dsn: dsn & 0xffff_ffff,
            dsn_wide: false,
            ssn: 1,
            data_len: 1001,
            checksum: Some(ck),
        }),
        ..Default::default()
    };
    c.seg(
        S,
        C,
        ack,
        isn_s + 1,
        isn_c + 6,
        &[MptcpOption::Dss(map)],
        &data[..501],
    );
    c.seg(S, C, ack, isn_s + 502, isn_c + 6, &[], &data[501..]);
    // IPv6 address announced with a port.
    let addr: IpAddr = "2001:db8::7".parse().unwrap();
    let hmac = crypto::add_addr_hmac(KS, KC, 7, addr, Some(8080));
    let add = AddAddr {
        echo: false,
        addr_id: 7,
        addr,
        port: Some(8080),
        hmac: Some(hmac),
    };
    c.seg(
        S,
        C,
        ack,
        isn_s + 1002,
        isn_c + 6,
        &[MptcpOption::AddAddr(add)],
        b"",
    );
    // A join opened by the server (host A) to the client (host B).
    let (ra, rb) = (0x1111_2222u32, 0x3333_4444u32);
    let join_syn = MpJoin::Syn {
        backup: true,
        addr_id: 3,
        token: crypto::token(KC),
        nonce: ra,
    };
    c.seg(S2, C, syn, 9000, 0, &[MptcpOption::MpJoin(join_syn)], b"");
    let h = crypto::join_synack_hmac(KC, KS, rb, ra);
    c.seg(
        C,
        S2,
        syn | ack,
        7000,
        9001,
        &[MptcpOption::MpJoin(MpJoin::SynAck {
            backup: false,
            addr_id: 0,
            hmac: h,
            nonce: rb,
        })],
        b"",
    );
    let h = crypto::join_ack_hmac(KS, KC, ra, rb);
    c.seg(
        S2,
        C,
        ack,
        9001,
        7001,
        &[MptcpOption::MpJoin(MpJoin::Ack { hmac: h })],
        b"",
    );
    c.seg(
        C,
        S,
        ack | TcpFlags::RST,
        isn_c + 6,
        isn_s + 1002,
        &[MptcpOption::MpFastclose { receiver_key: KS }],
        b"",
    );
    c.w.into_inner()
}

fn verify(data: &[u8]) -> (Report, String) {
    let mut out = Vec::new();
    let r = decode_bytes(
        data,
        Options {
            json: false,
            verify: true,
        },
        &mut out,
    )
    .unwrap();
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn synthetic_connection_verifies() {
    let (r, text) = verify(&capture());
    let s = r.verify.clone().unwrap();
    assert_eq!(s.mismatches(), 0, "{text}");
    assert!(s.skipped.is_empty(), "{:?}\n{text}", s.skipped);
    let want = [
        ("mp_capable_keys", 1),
        ("dss_checksum", 2),
        ("idsn", 1),
        ("add_addr_hmac", 1),
        ("token", 1),
        ("join_synack_hmac", 1),
        ("join_ack_hmac", 1),
        ("fastclose_key", 1),
    ];
    for (k, n) in want {
        assert_eq!(s.count(k), (n, 0), "{k}\n{text}");
    }
}

#[test]
fn second_half_of_split_mapping_is_checked() {
    let file = capture();
    // Flip the last payload byte of frame 5, the mapping's second half.
    let rec = mptcp_engine::pcap::PcapReader::new(&file)
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| r.number == 5)
        .unwrap();
    let end = rec.data.as_ptr() as usize - file.as_ptr() as usize + rec.data.len();
    let mut bad = file.clone();
    bad[end - 1] ^= 0x10;
    let (r, text) = verify(&bad);
    assert_eq!(r.verify.unwrap().count("dss_checksum"), (1, 1), "{text}");
    assert!(
        text.contains("check frame 4 dss_checksum MISMATCH"),
        "{text}"
    );
}

#[test]
fn wrong_key_order_in_join_is_caught() {
    // A server-opened join must use the server's key first: an HMAC
    // computed the other way round is a mismatch.
    let file = capture();
    let good = crypto::join_ack_hmac(KS, KC, 0x1111_2222, 0x3333_4444);
    let wrong = crypto::join_ack_hmac(KC, KS, 0x3333_4444, 0x1111_2222);
    assert_ne!(good, wrong);
    let pos = file.windows(20).position(|w| w == good).unwrap();
    let mut bad = file.clone();
    bad[pos..pos + 20].copy_from_slice(&wrong);
    let (r, _) = verify(&bad);
    assert_eq!(r.verify.unwrap().count("join_ack_hmac"), (0, 1));
}
