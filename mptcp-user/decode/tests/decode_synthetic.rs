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
        v0: false,
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

/// A v0 (RFC 6824) connection: keys in the SYN, SYN/ACK and third ACK,
/// SHA-1 token and IDSN, checksummed mappings, an ADD_ADDR in the v0 form
/// (IPVer, no HMAC), a client-opened join with HMAC-SHA1, MP_PRIO with an
/// address id, REMOVE_ADDR and MP_FASTCLOSE.
fn capture_v0() -> Vec<u8> {
    use crypto::Version::V0;
    let syn = TcpFlags::SYN;
    let ack = TcpFlags::ACK;
    let mut c = Capture {
        w: PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET).unwrap(),
        n: 0,
    };
    let mpc = MpCapable {
        version: 0,
        // H means HMAC-SHA1 in v0: the same bit as v1's HMAC-SHA256.
        flags: MpCapable::FLAG_CHECKSUM | MpCapable::FLAG_HMAC_SHA256,
        sender_key: Some(KC),
        ..Default::default()
    };
    let (isn_c, isn_s) = (1000u32, 5000u32);
    c.seg(C, S, syn, isn_c, 0, &[MptcpOption::MpCapable(mpc)], b"");
    let synack = MpCapable {
        sender_key: Some(KS),
        ..mpc
    };
    c.seg(
        S,
        C,
        syn | ack,
        isn_s,
        isn_c + 1,
        &[MptcpOption::MpCapable(synack)],
        b"",
    );
    let third = MpCapable {
        sender_key: Some(KC),
        receiver_key: Some(KS),
        ..mpc
    };
    c.seg(
        C,
        S,
        ack,
        isn_c + 1,
        isn_s + 1,
        &[MptcpOption::MpCapable(third)],
        b"",
    );
    // Client data: 64-bit DSN IDSN+1, checksummed.
    let hello = b"hello v0";
    let dsn_c = V0.idsn(KC).wrapping_add(1);
    let map = |dsn: u64, len: u16, ck: u16| Dss {
        data_ack: None,
        mapping: Some(DssMapping {
            dsn,
            dsn_wide: true,
            ssn: 1,
            data_len: len,
            checksum: Some(ck),
        }),
        ..Default::default()
    };
    let ck = crypto::dss_checksum(dsn_c, 1, hello.len() as u16, hello);
    c.seg(
        C,
        S,
        ack,
        isn_c + 1,
        isn_s + 1,
        &[MptcpOption::Dss(map(dsn_c, 8, ck))],
        hello,
    );
    // Server data, same shape with its own IDSN.
    let dsn_s = V0.idsn(KS).wrapping_add(1);
    let ck = crypto::dss_checksum(dsn_s, 1, 5, b"world");
    c.seg(
        S,
        C,
        ack,
        isn_s + 1,
        isn_c + 9,
        &[MptcpOption::Dss(map(dsn_s, 5, ck))],
        b"world",
    );
    // The server announces an address: v0 form, no HMAC.
    let add = AddAddr {
        v0: true,
        echo: false,
        addr_id: 1,
        addr: "192.0.2.3".parse().unwrap(),
        port: None,
        hmac: None,
    };
    c.seg(
        S,
        C,
        ack,
        isn_s + 6,
        isn_c + 9,
        &[MptcpOption::AddAddr(add)],
        b"",
    );
    // The client joins to it: token of the server's key (SHA-1).
    let (ra, rb) = (0x5555_6666u32, 0x7777_8888u32);
    let j = "192.0.2.1:1001";
    let syn_j = MpJoin::Syn {
        backup: false,
        addr_id: 0,
        token: V0.token(KS),
        nonce: ra,
    };
    c.seg(j, S2, syn, 3000, 0, &[MptcpOption::MpJoin(syn_j)], b"");
    let synack_j = MpJoin::SynAck {
        backup: false,
        addr_id: 1,
        hmac: V0.join_synack_hmac(KS, KC, rb, ra),
        nonce: rb,
    };
    c.seg(
        S2,
        j,
        syn | ack,
        8000,
        3001,
        &[MptcpOption::MpJoin(synack_j)],
        b"",
    );
    let ack_j = MpJoin::Ack {
        hmac: V0.join_ack_hmac(KC, KS, ra, rb),
    };
    c.seg(j, S2, ack, 3001, 8001, &[MptcpOption::MpJoin(ack_j)], b"");
    c.seg(
        j,
        S2,
        ack,
        3001,
        8001,
        &[MptcpOption::MpPrio {
            backup: true,
            addr_id: Some(1),
        }],
        b"",
    );
    c.seg(
        S,
        C,
        ack,
        isn_s + 6,
        isn_c + 9,
        &[MptcpOption::RemoveAddr(
            mptcp_engine::wire::mptcp::AddrIds::from_slice(&[1]).unwrap(),
        )],
        b"",
    );
    c.seg(
        C,
        S,
        ack,
        isn_c + 9,
        isn_s + 6,
        &[MptcpOption::MpFastclose { receiver_key: KS }],
        b"",
    );
    c.w.into_inner()
}

#[test]
fn v0_connection_verifies_with_sha1() {
    let (r, text) = verify(&capture_v0());
    let s = r.verify.clone().unwrap();
    assert_eq!(s.mismatches(), 0, "{text}");
    assert!(s.skipped.is_empty(), "{:?}\n{text}", s.skipped);
    let want = [
        ("mp_capable_keys", 2),
        ("dss_checksum", 2),
        ("idsn", 2),
        ("token", 1),
        ("join_synack_hmac", 1),
        ("join_ack_hmac", 1),
        ("fastclose_key", 1),
    ];
    for (k, n) in want {
        assert_eq!(s.count(k), (n, 0), "{k}\n{text}");
    }
    assert_eq!(s.versions.get(&0), Some(&1), "{text}");
    assert_eq!(s.versions.get(&1), None, "{text}");
    assert!(
        text.contains(&format!(
            "connection frame 1 {C} > {S} mptcp v0 client_key=0x{KC:016x} server_key=0x{KS:016x}"
        )),
        "{text}"
    );
    // The v1 capture says v1.
    let (r, _) = verify(&capture());
    assert_eq!(r.verify.unwrap().versions.get(&1), Some(&1));
}

#[test]
fn v0_capture_checked_as_v1_fails() {
    // The same bytes with the version nibble set to 1 in every MP_CAPABLE:
    // the SHA-256 derivations disagree, so the checks must fail (the v0
    // derivations are what made them pass above).
    let mut file = capture_v0();
    let mut n = 0;
    for i in 0..file.len() - 3 {
        if file[i] == 30
            && matches!(file[i + 1], 12 | 20)
            && file[i + 2] == 0x00
            && file[i + 3] == 0x81
        {
            file[i + 2] = 0x01;
            n += 1;
        }
    }
    assert_eq!(n, 3);
    let (r, text) = verify(&file);
    let s = r.verify.unwrap();
    assert!(s.count("token").1 == 1 && s.count("idsn").1 == 2, "{text}");
    assert_eq!(s.count("join_ack_hmac").0, 0, "{text}");
}

#[test]
fn v0_crypto_agrees_with_wireshark() {
    // Wireshark's MPTCP analysis derives tokens and IDSNs itself (SHA-1
    // for version 0): an oracle we did not write.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v0.pcap");
    std::fs::write(&path, capture_v0()).unwrap();
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-o",
            "mptcp.analyze_mptcp:TRUE",
        ])
        .args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"])
        .args([
            "-e",
            "frame.number",
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
    let mut tokens = std::collections::BTreeSet::new();
    let mut idsns = std::collections::BTreeSet::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        for t in cols
            .get(1)
            .unwrap_or(&"")
            .split(',')
            .filter(|s| !s.is_empty())
        {
            // tshark 4.0 prints tokens in decimal, later ones in hex.
            let t = match t.strip_prefix("0x") {
                Some(h) => u32::from_str_radix(h, 16).unwrap(),
                None => t.parse().unwrap(),
            };
            tokens.insert(t);
        }
        for t in cols
            .get(2)
            .unwrap_or(&"")
            .split(',')
            .filter(|s| !s.is_empty())
        {
            idsns.insert(t.parse::<u64>().unwrap());
        }
    }
    use crypto::Version::V0;
    let want_tokens: std::collections::BTreeSet<u32> = [V0.token(KC), V0.token(KS)].into();
    let want_idsns: std::collections::BTreeSet<u64> = [V0.idsn(KC), V0.idsn(KS)].into();
    assert_eq!(tokens, want_tokens, "tshark said:\n{text}");
    assert_eq!(idsns, want_idsns, "tshark said:\n{text}");
    // And it reads our v0 ADD_ADDR as RFC 6824's: IPVer 4, no echo flag.
    let out = std::process::Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-Y", "frame.number==6"])
        .args(["-T", "fields", "-e", "tcp.options.mptcp.ipver"])
        .args([
            "-e",
            "tcp.options.mptcp.ipv4",
            "-e",
            "tcp.options.mptcp.echo",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "4\t192.0.2.3\t\n");
}

/// A checksummed mapping of three segments whose middle one was lost and
/// comes last (a SACK retransmission), after a second mapping started:
/// both mappings are still checked, and nothing is skipped.
fn reordered_capture(flip: bool) -> Vec<u8> {
    let (syn, ack) = (TcpFlags::SYN, TcpFlags::ACK);
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
    let synack = MpCapable {
        sender_key: Some(KS),
        ..mpc
    };
    c.seg(
        S,
        C,
        syn | ack,
        isn_s,
        isn_c + 1,
        &[MptcpOption::MpCapable(synack)],
        b"",
    );
    let third = MpCapable {
        sender_key: Some(KC),
        receiver_key: Some(KS),
        ..mpc
    };
    c.seg(
        C,
        S,
        ack,
        isn_c + 1,
        isn_s + 1,
        &[MptcpOption::MpCapable(third)],
        b"",
    );
    let data: Vec<u8> = (0..4500u32).map(|i| (i * 13 + 5) as u8).collect();
    let base = crypto::idsn(KC).wrapping_add(1);
    let map = |off: u32, len: u16| {
        let dsn = base.wrapping_add(off as u64);
        let ck = crypto::dss_checksum(
            dsn,
            1 + off,
            len,
            &data[off as usize..off as usize + len as usize],
        );
        [MptcpOption::Dss(Dss {
            mapping: Some(DssMapping {
                dsn,
                dsn_wide: true,
                ssn: 1 + off,
                data_len: len,
                checksum: Some(ck),
            }),
            ..Default::default()
        })]
    };
    let (m1, m2) = (map(0, 3000), map(3000, 1500));
    let seq = |off: u32| isn_c + 1 + off;
    c.seg(C, S, ack, seq(0), isn_s + 1, &m1, &data[..1000]);
    c.seg(C, S, ack, seq(2000), isn_s + 1, &m1, &data[2000..3000]);
    c.seg(C, S, ack, seq(3000), isn_s + 1, &m2, &data[3000..4500]);
    let mut late = data[1000..2000].to_vec();
    if flip {
        late[10] ^= 1;
    }
    c.seg(C, S, ack, seq(1000), isn_s + 1, &m1, &late);
    // A retransmission of a checked mapping's first segment: not a new check.
    c.seg(C, S, ack, seq(0), isn_s + 1, &m1, &data[..1000]);
    c.w.into_inner()
}

#[test]
fn out_of_order_mapping_data_is_still_checked() {
    let (r, text) = verify(&reordered_capture(false));
    let s = r.verify.unwrap();
    assert_eq!(s.count("dss_checksum"), (2, 0), "{text}");
    assert!(s.skipped.is_empty(), "{:?}\n{text}", s.skipped);
    let (r, text) = verify(&reordered_capture(true));
    assert_eq!(r.verify.unwrap().count("dss_checksum"), (1, 1), "{text}");
}
