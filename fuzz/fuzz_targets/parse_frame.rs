//! Ethernet/IP/TCP/MPTCP parsing on arbitrary bytes: never panics, and
//! whatever parses re-emits into something that parses to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mptcp_engine::wire::{emit_eth_ip_tcp, parse_eth_ip_tcp, parse_ip_tcp, Error, TcpOptions};

fuzz_target!(|data: &[u8]| {
    let _ = parse_ip_tcp(data);
    let _ = TcpOptions::parse(data);
    if let Ok((eth, ip, tcp)) = parse_eth_ip_tcp(data) {
        let mut buf = [0u8; 1600];
        match emit_eth_ip_tcp(&eth, &ip, &tcp, &mut buf) {
            Ok(n) => {
                let (eth2, ip2, tcp2) = parse_eth_ip_tcp(&buf[..n]).expect("re-emitted frame parses");
                assert_eq!(eth2, eth);
                assert_eq!((ip2.src(), ip2.dst()), (ip.src(), ip.dst()));
                assert_eq!(tcp2, tcp);
            }
            // Our option layout may need more room than a tightly packed
            // original, and a jumbo payload may not fit the buffer.
            Err(Error::Exhausted) => {}
            Err(e) => panic!("emit of a parsed frame failed: {e}"),
        }
    }
});
