//! The classifier attached in driver mode to the server side of a two-path
//! lab, with the kernel's own MPTCP as client and server.
use std::net::IpAddr;

use mptcp_tests::{lab_transfer, require_root, Lab, LabConfig};
use mptcp_user::xdp::{AttachMode, Classifier, Counters, Ownership};

const OWNED_PORT: u16 = 8080;
const OTHER_PORT: u16 = 9090;
const BYTES: usize = 1 << 20;

fn transfer(lab: &Lab, server: IpAddr, port: u16, await_join: bool) -> u64 {
    lab_transfer(lab, server, port, BYTES, await_join).expect("transfer")
}

#[test]
fn driver_mode_classifier_counts_real_kernel_mptcp() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&LabConfig::unique(2)).expect("lab up");
    let mut classifier = Classifier::load().expect("load");
    classifier
        .set_ownership(&Ownership {
            addresses: lab.server_addresses(),
            listen_ports: vec![OWNED_PORT],
            client_ports: None,
        })
        .expect("config");
    // XDP programs attach by name in the caller's namespace: attach from inside.
    let server_ifs: Vec<String> = lab.paths.iter().map(|p| p.server_if.clone()).collect();
    lab.server
        .enter(|| {
            for ifname in &server_ifs {
                classifier
                    .attach_with_mode(ifname, AttachMode::Driver)
                    .expect("driver-mode attach on veth");
            }
        })
        .expect("enter server ns");
    let v4 = IpAddr::V4(lab.paths[0].server_v4);
    let v6 = IpAddr::V6(lab.paths[0].server_v6);

    // Not owned: the program sees it and passes every frame.
    let before = classifier.counters().expect("counters");
    assert_eq!(transfer(&lab, v4, OTHER_PORT, false), BYTES as u64);
    let other = classifier.counters().expect("counters").since(&before);
    assert!(other.seen > 0, "{other:?}");
    assert_eq!(other.seen, other.passed, "{other:?}");
    assert_eq!(other.owned, 0, "{other:?}");
    assert_eq!(other.malformed, 0, "{other:?}");

    // Owned, over IPv4 with a second subflow: steered, and since no AF_XDP
    // socket is bound every segment falls back to the kernel intact.
    let before = classifier.counters().expect("counters");
    assert_eq!(transfer(&lab, v4, OWNED_PORT, true), BYTES as u64);
    let owned = classifier.counters().expect("counters").since(&before);
    assert_invariants(&owned);
    assert!(owned.mp_capable_syn >= 1, "{owned:?}");
    assert!(owned.mp_join_syn >= 1, "{owned:?}");
    // 1 MiB in MTU-sized segments, each with a DSS mapping or DATA_ACK.
    assert!(owned.dss >= (BYTES / 1500) as u64, "{owned:?}");
    assert_eq!(owned.redirected, 0, "{owned:?}");
    assert_eq!(owned.owned, owned.owned_no_socket, "{owned:?}");

    // Owned over IPv6.
    let before = classifier.counters().expect("counters");
    assert_eq!(transfer(&lab, v6, OWNED_PORT, false), BYTES as u64);
    let owned6 = classifier.counters().expect("counters").since(&before);
    assert_invariants(&owned6);
    assert!(owned6.mp_capable_syn >= 1, "{owned6:?}");
    assert!(owned6.dss >= (BYTES / 1500) as u64, "{owned6:?}");

    // Detached: the program no longer sees anything.
    classifier.detach_all().expect("detach");
    let before = classifier.counters().expect("counters");
    assert_eq!(transfer(&lab, v4, OWNED_PORT, false), BYTES as u64);
    assert_eq!(classifier.counters().expect("counters"), before);
}

fn assert_invariants(c: &Counters) {
    assert_eq!(c.seen, c.redirected + c.passed, "{c:?}");
    assert_eq!(c.owned, c.redirected + c.owned_no_socket, "{c:?}");
    assert_eq!(
        c.owned,
        c.mp_capable_syn + c.mp_join_syn + c.dss + c.other_mptcp + c.plain_tcp,
        "{c:?}"
    );
    assert_eq!(c.malformed, 0, "{c:?}");
}
