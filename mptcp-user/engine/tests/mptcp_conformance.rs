//! Conformance with Linux 6.18: the engine's server side is driven with the
//! client packets of handshake-join-addaddr.pcap, with its key, MP_JOIN
//! nonces and ISNs fixed to the kernel server's; every token, HMAC and
//! DATA_ACK it produces must equal what the kernel sent.

use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::mptcp::{LocalAddr, MptcpConfig, MptcpEndpoint, ReplayInjection};
use mptcp_engine::pcap::PcapReader;
use mptcp_engine::time::Instant;
use mptcp_engine::wire::ip::parse_ip_tcp;
use mptcp_engine::wire::mptcp::{MpJoin, MptcpOption};
use std::net::IpAddr;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/linux-6.18/"
);

/// The security-relevant values of one server segment.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Signal {
    CapableKey(u64),
    JoinSynAck {
        addr_id: u8,
        hmac: u64,
        nonce: u32,
    },
    AddAddr {
        addr_id: u8,
        addr: IpAddr,
        hmac: Option<u64>,
    },
    DataAck(u64),
    /// A DSS mapping (DATA_FIN included) with its checksum.
    Mapping {
        fin: bool,
        dsn: u64,
        ssn: u32,
        len: u16,
        csum: Option<u16>,
    },
    RemoveAddr(Vec<u8>),
    Fastclose(u64),
    TcpRst(u8),
    /// A RST's sequence and acknowledgment numbers.
    Rst(u32, u32),
}

fn signals(packet: &[u8], out: &mut Vec<Signal>) {
    let Ok((_, tcp)) = parse_ip_tcp(packet) else {
        return;
    };
    if tcp.flags.contains(mptcp_engine::wire::tcp::TcpFlags::RST) {
        out.push(Signal::Rst(tcp.seq, tcp.ack));
    }
    for o in &tcp.options.mptcp {
        let s = match *o {
            MptcpOption::MpFastclose { receiver_key } => Signal::Fastclose(receiver_key),
            MptcpOption::MpTcpRst { reason, .. } => Signal::TcpRst(reason),
            MptcpOption::MpCapable(c) => match c.sender_key {
                Some(k) if c.receiver_key.is_none() => Signal::CapableKey(k),
                _ => continue,
            },
            MptcpOption::MpJoin(MpJoin::SynAck {
                addr_id,
                hmac,
                nonce,
                ..
            }) => Signal::JoinSynAck {
                addr_id,
                hmac,
                nonce,
            },
            MptcpOption::AddAddr(a) if !a.echo => Signal::AddAddr {
                addr_id: a.addr_id,
                addr: a.addr,
                hmac: a.hmac,
            },
            MptcpOption::Dss(d) => {
                if let Some(m) = d.mapping {
                    let s = Signal::Mapping {
                        fin: d.data_fin,
                        dsn: m.dsn,
                        ssn: m.ssn,
                        len: m.data_len,
                        csum: m.checksum,
                    };
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
                match d.data_ack {
                    Some(a) => Signal::DataAck(a),
                    None => continue,
                }
            }
            MptcpOption::RemoveAddr(ids) => Signal::RemoveAddr(ids.as_slice().to_vec()),
            _ => continue,
        };
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
}

fn is_server(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if a.octets()[3] == 2)
}

/// Replays `fixture`; `remove_at` is the capture time (ns) at which the
/// server application withdraws address id 1.
fn replay(
    fixture: &str,
    remove_at: Option<u64>,
    abort: bool,
) -> (Vec<Signal>, Vec<Signal>, MptcpEndpoint) {
    let file = std::fs::read(format!("{FIXTURES}{fixture}")).expect("fixture");
    let mut packets = Vec::new();
    for r in PcapReader::new(&file).unwrap() {
        let r = r.unwrap();
        let (_, ip) = r.network().unwrap();
        packets.push((r.ts_nanos, ip.to_vec()));
    }
    let first_ts = packets[0].0;
    // The kernel server's values: key, MP_JOIN nonces, ISNs (in order).
    let mut kernel = Vec::new();
    let mut replay = ReplayInjection::default();
    for (_, p) in &packets {
        let (ip, tcp) = parse_ip_tcp(p).unwrap();
        if !is_server(ip.src()) {
            continue;
        }
        signals(p, &mut kernel);
        if tcp.flags.contains(mptcp_engine::wire::tcp::TcpFlags::SYN) {
            replay.isns.push_back(tcp.seq);
            for o in &tcp.options.mptcp {
                match *o {
                    MptcpOption::MpCapable(c) => replay.keys.extend(c.sender_key),
                    MptcpOption::MpJoin(MpJoin::SynAck { nonce, .. }) => {
                        replay.nonces.push_back(nonce)
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(replay.keys.len(), 1);
    assert_eq!(replay.nonces.len(), 2);

    let cfg = MptcpConfig {
        accept_partial_checksum: true,
        replay: Some(replay),
        ..Default::default()
    };
    let locals = [
        LocalAddr {
            ip: "10.1.1.2".parse().unwrap(),
            path: 0,
            signal: false,
        },
        LocalAddr {
            ip: "10.1.2.2".parse().unwrap(),
            path: 1,
            signal: true,
        },
    ];
    let mut server = MptcpEndpoint::server(cfg, &locals, 8080);
    let mut ours = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut echo = Vec::new();
    let mut echoed = 0;
    let mut removed = false;
    let mut closed = false;
    let mut tmp = [0u8; 4096];
    let mut drain = |server: &mut MptcpEndpoint, now: Instant, ours: &mut Vec<Signal>| {
        while let Some((_, n)) = server.poll_transmit(now, &mut buf) {
            signals(&buf[..n], ours);
        }
    };
    for (ts, p) in &packets {
        let (ip, _) = parse_ip_tcp(p).unwrap();
        if is_server(ip.src()) {
            continue;
        }
        let now = Instant::from_nanos(ts - first_ts + 1_000_000);
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        drain(&mut server, now, &mut ours);
        let path = if ip.dst() == "10.1.1.2".parse::<IpAddr>().unwrap() {
            0
        } else {
            1
        };
        server.handle_packet(now, path, p);
        // The application echoes what it reads, then closes.
        loop {
            let k = server.recv(&mut tmp);
            if k == 0 {
                break;
            }
            echo.extend_from_slice(&tmp[..k]);
        }
        if echo.len() > echoed {
            assert_eq!(server.send(&echo[echoed..]), echo.len() - echoed);
            echoed = echo.len();
        }
        if remove_at.is_some_and(|t| ts - first_ts >= t) && !removed {
            server.connection_mut().unwrap().remove_local_address(1);
            removed = true;
        }
        if server.is_read_closed() && !closed {
            server.close();
            closed = true;
        }
        drain(&mut server, now, &mut ours);
    }
    if abort {
        // The application aborts (SO_LINGER 0) after the last client packet.
        let now = Instant::from_nanos(packets.last().map_or(0, |p| p.0) - first_ts + 2_000_000);
        server.connection_mut().unwrap().abort();
        drain(&mut server, now, &mut ours);
    }
    (kernel, ours, server)
}

#[test]
fn server_side_matches_linux() {
    let (kernel, ours, server) = replay("handshake-join-addaddr.pcap", None, false);
    assert_eq!(server.counters().bad_checksum, 0);
    let conn = server.connection().expect("connection accepted");
    assert_eq!(conn.bad_hmacs(), 0, "client HMACs verify");
    assert_eq!(conn.subflows().count(), 3);
    // Compare the signals present in both, in order (delayed-ACK timing may
    // add or merge pure ACKs, never change a value).
    let kernel_keys: Vec<_> = kernel
        .iter()
        .filter(|s| !matches!(s, Signal::DataAck(_) | Signal::Mapping { .. }))
        .collect();
    let our_keys: Vec<_> = ours
        .iter()
        .filter(|s| !matches!(s, Signal::DataAck(_) | Signal::Mapping { .. }))
        .collect();
    assert_eq!(
        our_keys, kernel_keys,
        "keys, MP_JOIN HMACs/nonces, ADD_ADDR HMAC"
    );
    let mut kernel_acks: Vec<_> = kernel
        .iter()
        .filter(|s| matches!(s, Signal::DataAck(_)))
        .collect();
    let mut our_acks: Vec<_> = ours
        .iter()
        .filter(|s| matches!(s, Signal::DataAck(_)))
        .collect();
    kernel_acks.dedup();
    our_acks.dedup();
    assert_eq!(our_acks, kernel_acks, "DATA_ACK values");
    assert!(kernel_acks.len() >= 3);
    assert_eq!(kernel_keys.len(), 4, "{kernel_keys:?}");
}

fn mappings(s: &[Signal]) -> Vec<&Signal> {
    s.iter()
        .filter(|s| matches!(s, Signal::Mapping { .. }))
        .collect()
}

#[test]
fn server_mappings_match_linux() {
    let (kernel, ours, _) = replay("handshake-join-addaddr.pcap", None, false);
    assert_eq!(mappings(&ours), mappings(&kernel));
}

/// DSS checksums on (the client asks), MP_PRIO from the client, REMOVE_ADDR
/// from the server: every checksum, HMAC, DATA_ACK and mapping as Linux.
#[test]
fn checksums_prio_and_remove_addr_match_linux() {
    let (kernel, ours, server) = replay("checksum-prio-rmaddr.pcap", Some(806_000_000), false);
    let conn = server.connection().unwrap();
    assert!(conn.checksum_enabled());
    assert_eq!(
        conn.checksum_failures(),
        0,
        "the kernel's DSS checksums verify"
    );
    assert_eq!(conn.bad_hmacs(), 0);
    assert!(conn.subflows().any(|s| s.peer_backup), "MP_PRIO applied");
    let strip = |v: &[Signal]| -> Vec<Signal> {
        let mut acks: Vec<Signal> = v
            .iter()
            .filter(|s| matches!(s, Signal::DataAck(_)))
            .cloned()
            .collect();
        acks.dedup();
        let mut rest: Vec<Signal> = v
            .iter()
            .filter(|s| !matches!(s, Signal::DataAck(_)))
            .cloned()
            .collect();
        rest.append(&mut acks);
        rest
    };
    let (k, o) = (strip(&kernel), strip(&ours));
    assert!(k
        .iter()
        .any(|s| matches!(s, Signal::Mapping { csum: Some(_), .. })));
    assert_eq!(o, k);
}

/// The server aborts: MP_FASTCLOSE with the client's key, then MP_TCPRST,
/// on a RST with Linux's sequence numbers, on every subflow.
#[test]
fn fastclose_matches_linux() {
    let (kernel, ours, _) = replay("fastclose.pcap", None, true);
    let pick = |v: &[Signal]| -> Vec<Signal> {
        let mut r: Vec<Signal> = v
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Signal::Fastclose(_) | Signal::TcpRst(_) | Signal::Rst(..)
                )
            })
            .cloned()
            .collect();
        r.sort_by_key(|s| format!("{s:?}"));
        r
    };
    let k = pick(&kernel);
    assert_eq!(k.len(), 9, "{k:?}");
    assert_eq!(pick(&ours), k);
    // Keys, HMACs, mappings and DATA_ACKs up to the abort match too (ACK
    // timing may merge a pure ACK into a data segment, never change a value).
    let rest = |v: &[Signal]| -> (Vec<Signal>, Vec<Signal>) {
        let (mut acks, other): (Vec<Signal>, Vec<Signal>) = v
            .iter()
            .filter(|s| {
                !matches!(
                    s,
                    Signal::Fastclose(_) | Signal::TcpRst(_) | Signal::Rst(..)
                )
            })
            .cloned()
            .partition(|s| matches!(s, Signal::DataAck(_)));
        acks.dedup();
        (other, acks)
    };
    assert_eq!(rest(&ours), rest(&kernel));
}
