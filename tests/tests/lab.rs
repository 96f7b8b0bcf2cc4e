//! The lab itself: addresses, shaping, MPTCP endpoints, and clean removal.
use std::{net::IpAddr, path::Path};

use mptcp_tests::{lab_transfer, require_root, Lab, LabConfig};

#[test]
fn lab_comes_up_shaped_and_goes_away() {
    if !require_root() {
        return;
    }
    let mut config = LabConfig::unique(2);
    config.qdisc = vec![
        Some("tbf rate 100mbit burst 32kbit latency 50ms".to_string()),
        None,
    ];
    let lab = Lab::up(&config).expect("lab up");
    let names = [lab.client.name().to_string(), lab.server.name().to_string()];
    let shaped = lab
        .server
        .exec("tc", &["qdisc", "show", "dev", "srv0"])
        .expect("tc");
    assert!(
        shaped.contains("tbf") && shaped.contains("100Mbit"),
        "{shaped}"
    );
    let unshaped = lab
        .server
        .exec("tc", &["qdisc", "show", "dev", "srv1"])
        .expect("tc");
    assert!(!unshaped.contains("tbf"), "{unshaped}");
    let addrs = lab
        .server
        .ip(&["-br", "addr", "show", "dev", "srv1"])
        .expect("ip");
    assert!(
        addrs.contains("10.100.1.2/24") && addrs.contains("fd00:100:1::2/64"),
        "{addrs}"
    );
    let endpoints = lab
        .client
        .ip(&["mptcp", "endpoint", "show"])
        .expect("ip mptcp");
    assert!(
        endpoints.contains("10.100.1.1") && endpoints.contains("subflow"),
        "{endpoints}"
    );
    // Every server address answers kernel MPTCP, in both families.
    for (i, p) in lab.paths.iter().enumerate() {
        for dst in [IpAddr::V4(p.server_v4), IpAddr::V6(p.server_v6)] {
            let port = 7000 + i as u16;
            let n = lab_transfer(&lab, dst, port, 10_000, false).expect("transfer on the path");
            assert_eq!(n, 10_000);
        }
    }
    drop(lab);
    for name in names {
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "{name} left behind"
        );
    }
}

#[test]
fn a_failed_lab_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let mut config = LabConfig::unique(1);
    config.qdisc = vec![Some("no-such-qdisc".to_string())];
    let err = Lab::up(&config).expect_err("a bad qdisc must fail");
    assert!(format!("{err:#}").contains("no-such-qdisc"), "{err:#}");
    for name in [
        Lab::client_ns_name(&config.prefix),
        Lab::server_ns_name(&config.prefix),
    ] {
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "{name} left behind"
        );
    }
}
