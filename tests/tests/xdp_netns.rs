//! The classifier attached in driver mode to the server side of a two-path
//! lab, with the kernel's own MPTCP as client and server.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use mptcp_datapath::xdp::{AttachMode, Classifier, Counters, Ownership};
use mptcp_tests::{
    lab_transfer, mptcp_connect, mptcp_connect_start, mptcp_listen, require_root, send_and_count,
    serve_count_once, unique_name, wait_until,
    xsk::{ifindex, MinimalXsk},
    Lab, LabConfig, Netns,
};

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

#[test]
fn falls_back_to_generic_mode_where_the_driver_has_no_xdp() {
    if !require_root() {
        return;
    }
    // Loopback has no native XDP: attach() must fall back and say so.
    let ns = Netns::create(&unique_name("mpgen")).expect("netns");
    let mut classifier = Classifier::load().expect("load");
    let port = 7777;
    classifier
        .set_ownership(&Ownership {
            addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            listen_ports: vec![port],
            client_ports: None,
        })
        .expect("config");
    let mode = ns
        .enter(|| classifier.attach("lo"))
        .expect("enter netns")
        .expect("attach");
    assert_eq!(mode, AttachMode::Generic);
    assert_eq!(
        classifier.attachments(),
        vec![("lo".to_string(), AttachMode::Generic)]
    );
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let received = ns
        .enter(|| -> anyhow::Result<u64> {
            let served = serve_count_once(mptcp_listen(addr)?);
            let stream = mptcp_connect(addr, Duration::from_secs(10))?;
            let echoed = send_and_count(stream, BYTES)?;
            let received = served
                .join()
                .map_err(|_| anyhow::anyhow!("server panicked"))??;
            assert_eq!(echoed, received);
            Ok(received)
        })
        .expect("enter netns")
        .expect("transfer over loopback");
    assert_eq!(received, BYTES as u64);
    let c = classifier.counters().expect("counters");
    assert_invariants(&c);
    // Both directions cross lo; only the segments to the listening port are owned.
    assert!(c.mp_capable_syn >= 1, "{c:?}");
    assert!(c.owned < c.seen, "{c:?}");
    assert!(c.dss >= 1, "{c:?}");
    classifier.detach("lo").expect("detach");
    assert!(classifier.attachments().is_empty());
}

#[test]
fn owned_segments_go_to_a_bound_af_xdp_socket_not_the_kernel() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&LabConfig::unique(1)).expect("lab up");
    let path = lab.paths[0].clone();
    let mut classifier = Classifier::load().expect("load");
    classifier
        .set_ownership(&Ownership {
            addresses: lab.server_addresses(),
            listen_ports: vec![OWNED_PORT],
            client_ports: None,
        })
        .expect("config");
    let xsk = lab
        .server
        .enter(|| -> anyhow::Result<MinimalXsk> {
            classifier.attach_with_mode(&path.server_if, AttachMode::Driver)?;
            // A veth has one queue: everything arrives on queue 0.
            MinimalXsk::bind(ifindex(&path.server_if)?, 0)
        })
        .expect("enter server ns")
        .expect("attach and bind AF_XDP");
    classifier.register_xsk(0, &xsk).expect("XSKMAP entry");
    // A kernel MPTCP listener on the owned port: a SYN that reached the
    // server's kernel would move MPCapableSYNRX (counted by the listener;
    // with nothing listening the kernel answers RST and counts nothing)
    // and be answered.
    let addr = SocketAddr::new(IpAddr::V4(path.server_v4), OWNED_PORT);
    let _listener = lab
        .server
        .enter(|| mptcp_listen(addr))
        .expect("enter server ns")
        .expect("kernel MPTCP listener");
    let server_syns = || lab.server.nstat("MPTcpExtMPCapableSYNRX").expect("nstat");
    assert_eq!(server_syns(), 0);

    // The kernel client retransmits its SYN until something answers; only
    // the kernel listener could, and the SYNs must never reach it.
    let client = lab
        .client
        .enter(|| mptcp_connect_start(addr))
        .expect("enter client ns")
        .expect("connect");
    // The first SYN and its first retransmission (1 s later) both diverted.
    assert!(
        wait_until(Duration::from_secs(5), || classifier
            .counters()
            .is_ok_and(|c| c.redirected >= 2)),
        "no SYN retransmission was redirected: {:?}",
        classifier.counters()
    );
    let c = classifier.counters().expect("counters");
    assert_invariants(&c);
    assert_eq!(c.owned_no_socket, 0, "{c:?}");
    assert_eq!(c.redirected, c.mp_capable_syn, "{c:?}");
    // ARP still reached the kernel (the client found the server's MAC);
    // the SYN did not.
    assert!(c.passed >= 1, "{c:?}");
    assert_eq!(server_syns(), 0, "the server's kernel saw an owned SYN");
    // And so the connection never completed.
    assert!(
        client.peer_addr().is_err(),
        "the kernel listener answered an owned SYN"
    );
}
