//! A kernel MPTCP connection over IPv6 (Linux cooked v2 capture): the
//! ADD_ADDR HMAC over a 16-byte address, MP_JOIN over IPv6, and a flipped
//! address byte caught by the HMAC.
use mptcp_decode::{decode_bytes, Options, Report};
use mptcp_engine::pcap::PcapReader;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/ipv6-join-sll2.pcap"
);

fn verify(bytes: &[u8]) -> (Report, String) {
    let mut out = Vec::new();
    let r = decode_bytes(
        bytes,
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
fn ipv6_connection_verifies() {
    let (r, text) = verify(&std::fs::read(FILE).unwrap());
    let s = r.verify.unwrap();
    assert_eq!(s.mismatches(), 0, "{text}");
    for k in [
        "mp_capable_keys",
        "token",
        "idsn",
        "join_synack_hmac",
        "join_ack_hmac",
        "add_addr_hmac",
    ] {
        assert!(s.count(k).0 > 0, "{k}\n{text}");
    }
    assert!(
        text.contains("add_addr echo=false address_id=1 addr=2001:db8:2::2"),
        "{text}"
    );
    assert!(text.contains("[2001:db8:2::1]:"), "{text}");
}

#[test]
fn flipped_ipv6_address_in_add_addr_is_caught() {
    let file = std::fs::read(FILE).unwrap();
    let addr: std::net::Ipv6Addr = "2001:db8:2::2".parse().unwrap();
    // The ADD_ADDR option: kind 30, length 28, subtype 3 (no echo), id 1, address.
    let mut pattern = vec![30u8, 28, 0x30, 1];
    pattern.extend_from_slice(&addr.octets());
    let rec = PcapReader::new(&file)
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| r.data.windows(pattern.len()).any(|w| w == pattern))
        .expect("ADD_ADDR frame");
    let base = rec.data.as_ptr() as usize - file.as_ptr() as usize;
    let at = base
        + rec
            .data
            .windows(pattern.len())
            .position(|w| w == pattern)
            .unwrap();
    let mut bad = file.clone();
    bad[at + pattern.len() - 1] ^= 0x01; // 2001:db8:2::3
    let (r, text) = verify(&bad);
    assert_eq!(r.verify.unwrap().count("add_addr_hmac"), (0, 1), "{text}");
}
