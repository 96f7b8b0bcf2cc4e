//! The codecs on real Linux 6.18 frames: every frame parses, re-emits to
//! the same TCP header and options, and its checksum is recognised.
use mptcp_engine::pcap::PcapReader;
use mptcp_engine::wire::tcp::ChecksumState;
use mptcp_engine::wire::{parse_eth_ip_tcp, TcpPacket, TcpRepr};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/linux-6.18/"
);
const FILES: [&str; 3] = [
    "handshake-join-addaddr.pcap",
    "checksum-prio-rmaddr.pcap",
    "fastclose.pcap",
];

#[test]
fn kernel_frames_roundtrip() {
    let mut frames = 0;
    for name in FILES {
        let file = std::fs::read(format!("{FIXTURES}{name}")).unwrap();
        for rec in PcapReader::new(&file).unwrap() {
            let rec = rec.unwrap();
            let (eth, ip, tcp) = parse_eth_ip_tcp(rec.data).unwrap();
            assert_eq!(eth.vlan, None);
            // Re-emitting gives a segment that parses to the same value.
            let mut buf = vec![0u8; 65536];
            let n = tcp
                .emit(&mut buf, ip.src(), ip.dst())
                .unwrap_or_else(|e| panic!("{name} frame {}: {e} {:?}", rec.number, tcp.options));
            assert_eq!(
                TcpRepr::parse(&buf[..n]).unwrap(),
                tcp,
                "{name} frame {}",
                rec.number
            );
            assert_eq!(
                TcpPacket::new_checked(&buf[..n])
                    .unwrap()
                    .checksum_state(ip.src(), ip.dst()),
                ChecksumState::Valid
            );
            frames += 1;
        }
    }
    assert_eq!(frames, 40 + 47 + 20);
}

#[test]
fn kernel_checksums_are_valid_or_offload_partial() {
    let (mut valid, mut partial) = (0, 0);
    for name in FILES {
        let file = std::fs::read(format!("{FIXTURES}{name}")).unwrap();
        for rec in PcapReader::new(&file).unwrap() {
            let rec = rec.unwrap();
            let (_, ip, _) = parse_eth_ip_tcp(rec.data).unwrap();
            let seg_at = 14 + ip.header_len();
            let seg = &rec.data[seg_at..seg_at + ip.payload_len()];
            let state = TcpPacket::new_checked(seg)
                .unwrap()
                .checksum_state(ip.src(), ip.dst());
            match state {
                ChecksumState::Valid => {
                    valid += 1;
                    // A flipped byte in a fully checksummed segment is caught.
                    let mut bad = seg.to_vec();
                    let last = bad.len() - 1;
                    bad[last] ^= 0x5a;
                    let st = TcpPacket::new_checked(&bad[..])
                        .unwrap()
                        .checksum_state(ip.src(), ip.dst());
                    assert_eq!(st, ChecksumState::Bad);
                }
                ChecksumState::Partial => partial += 1,
                ChecksumState::Bad => panic!("{name} frame {}: bad TCP checksum", rec.number),
            }
        }
    }
    // veth hands the capture CHECKSUM_PARTIAL segments; one ACK is complete.
    assert!(
        valid >= 1 && partial >= 100,
        "valid {valid} partial {partial}"
    );
}
