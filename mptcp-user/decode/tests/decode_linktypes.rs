//! Linux cooked captures (v1 and v2) and pcapng: the same connection
//! decodes identically from each and verifies clean, including an
//! MP_CAPABLE that carries data with a DSS checksum.
use mptcp_decode::{decode_bytes, Options};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");

fn decode(name: &str, json: bool, verify: bool) -> (mptcp_decode::Report, String) {
    let bytes = std::fs::read(format!("{DATA}{name}")).unwrap();
    let mut out = Vec::new();
    let r = decode_bytes(&bytes, Options { json, verify }, &mut out).unwrap();
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn cooked_and_pcapng_agree() {
    let (r1, v1) = decode("loopback-sll.pcap", true, false);
    let (_, v2) = decode("loopback-sll2.pcap", true, false);
    let (_, ng) = decode("loopback-sll2.pcapng", true, false);
    assert!(r1.segments >= 10, "{v1}");
    assert_eq!(r1.other_frames, 0);
    assert_eq!(v1, v2);
    assert_eq!(v1, ng);
}

#[test]
fn loopback_connection_verifies() {
    for name in [
        "loopback-sll.pcap",
        "loopback-sll2.pcap",
        "loopback-sll2.pcapng",
    ] {
        let (r, text) = decode(name, false, true);
        let s = r.verify.unwrap();
        assert_eq!(s.mismatches(), 0, "{name}\n{text}");
        // The MP_CAPABLE with data is checked, and so are the DSS mappings.
        assert!(
            text.contains("mp_capable version=1 checksum_required=true"),
            "{text}"
        );
        let mpc_data = text
            .lines()
            .position(|l| l.contains("data_len=2048 checksum=0x"))
            .expect("MP_CAPABLE with data");
        assert!(
            text.lines()
                .nth(mpc_data + 3)
                .unwrap()
                .contains("dss_checksum ok"),
            "{text}"
        );
        assert!(s.count("dss_checksum").0 >= 3, "{text}");
        assert_eq!(s.count("idsn"), (1, 0));
    }
}
