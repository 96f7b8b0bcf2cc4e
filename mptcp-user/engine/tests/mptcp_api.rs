//! The subflow-control API and its use cases (Hesmans and Bonaventure's
//! enhanced socket API): refresh the subflow every N bytes, open a second
//! subflow only for large transfers, add a subflow when a deadline is at
//! risk; plus REMOVE_ADDR, MP_PRIO/backup and events.

mod mptcp_harness;

use mptcp_engine::io::ByteStream;
use mptcp_engine::mptcp::{
    MptcpConfig, MptcpEvent, SubflowCloseReason, SubflowOptions, SubflowStatus,
};
use mptcp_engine::pm::PmKind;
use mptcp_harness::*;
use std::net::SocketAddr;
use std::time::Duration;

fn manual() -> MptcpConfig {
    let mut c = MptcpConfig {
        path_manager: PmKind::Manual,
        ..Default::default()
    };
    c.tcp.time_wait = Duration::from_millis(100);
    c
}

fn server_addr(path: usize) -> SocketAddr {
    SocketAddr::new(server_ip(path), PORT)
}

/// Sends `data` from the client; `each` runs at every step with the bytes
/// the server has read so far. Returns what the server read.
fn upload(
    net: &mut Net,
    data: &[u8],
    limit: Duration,
    mut each: impl FnMut(&mut Net, usize),
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut sent = 0;
    let mut tmp = vec![0u8; 65536];
    let ok = net.run_until(limit, |n| {
        if n.client.is_established() {
            sent += n.client.send(&data[sent..]);
            if sent == data.len() {
                n.client.close();
            }
        }
        loop {
            let k = n.server.recv(&mut tmp);
            if k == 0 {
                break;
            }
            got.extend_from_slice(&tmp[..k]);
        }
        each(n, got.len());
        n.server.is_read_closed()
    });
    assert!(ok, "upload unfinished: {} of {}", got.len(), data.len());
    got
}

#[test]
fn refresh_subflow_every_n_bytes() {
    const N: usize = 256 << 10;
    for seed in 1..=3 {
        let mut net = Net::new(
            &[PathSpec::new(20, 5, 2000), PathSpec::new(20, 8, 0)],
            manual(),
            manual(),
            false,
            seed,
        );
        let data = pattern(2 << 20, seed);
        let mut next_refresh = N;
        let mut refreshes = 0;
        let got = upload(&mut net, &data, Duration::from_secs(60), |n, read| {
            if read < next_refresh {
                return;
            }
            next_refresh += N;
            let now = n.now;
            let c = n.client.connection().unwrap();
            let live: Vec<_> = c
                .subflows()
                .filter(|s| s.status == SubflowStatus::FullyEstablished)
                .collect();
            if live.len() != 1 {
                return;
            }
            // Open a fresh subflow on the same addresses, then close the old one.
            let old = live[0];
            let local = SocketAddr::new(old.tuple.local.ip(), 0);
            if n.client
                .open_subflow(now, local, old.tuple.remote)
                .is_some()
            {
                n.client.connection_mut().unwrap().close_subflow(old.id);
                refreshes += 1;
            }
        });
        assert!(got == data, "seed {seed}: bytes differ");
        assert!(refreshes >= 4, "seed {seed}: {refreshes} refreshes");
        let c = net.client.connection().unwrap();
        assert!(c.subflows().count() > refreshes);
        let closed = c
            .subflows()
            .filter(|s| s.status == SubflowStatus::Closed || s.status == SubflowStatus::Closing)
            .count();
        assert!(closed >= refreshes);
    }
}

#[test]
fn second_subflow_only_above_size_threshold() {
    const THRESHOLD: usize = 1 << 20;
    for (size, want) in [(200_000usize, 1usize), (4 << 20, 2)] {
        let mut net = Net::new(
            &[PathSpec::new(20, 5, 0), PathSpec::new(20, 5, 0)],
            manual(),
            manual(),
            false,
            1,
        );
        let data = pattern(size, 9);
        let mut opened = false;
        let got = upload(&mut net, &data, Duration::from_secs(60), |n, _| {
            if !opened && size > THRESHOLD && n.client.is_established() {
                let now = n.now;
                opened = n
                    .client
                    .open_subflow(now, SocketAddr::new(client_ip(1), 0), server_addr(0))
                    .is_some();
            }
        });
        assert!(got == data);
        let c = net.client.connection().unwrap();
        let carrying = c
            .subflows()
            .filter(|s| c.subflow_stats(s.id).unwrap().bytes_sent > 0)
            .count();
        assert_eq!(carrying, want, "size {size}");
    }
}

#[test]
fn add_subflow_when_deadline_at_risk() {
    // 3 MiB must arrive within 1.5 s; path 0 alone (10 Mbit/s) cannot.
    let deadline = Duration::from_millis(1500);
    let size = 3 << 20;
    let mut net = Net::new(
        &[PathSpec::new(10, 10, 0), PathSpec::new(30, 10, 0)],
        manual(),
        manual(),
        false,
        4,
    );
    let data = pattern(size, 4);
    let mut added_at = None;
    let got = upload(&mut net, &data, Duration::from_secs(60), |n, read| {
        let t = n.now.as_nanos() as f64 / 1e9;
        if added_at.is_some() || t < 0.2 {
            return;
        }
        // Projected finish at the current rate.
        let rate = read as f64 / t;
        if rate > 0.0 && t + (size - read) as f64 / rate > deadline.as_secs_f64() {
            let now = n.now;
            if n.client
                .open_subflow(now, SocketAddr::new(client_ip(1), 0), server_addr(0))
                .is_some()
            {
                added_at = Some(t);
            }
        }
    });
    assert!(got == data);
    assert!(added_at.is_some(), "the deadline was at risk");
    assert!(
        net.now.as_nanos() <= deadline.as_nanos() as u64,
        "finished at {:?}",
        net.now
    );
}

#[test]
fn backup_subflow_carries_nothing_while_the_regular_one_works() {
    let mut cfg = manual();
    cfg.path_manager = PmKind::FullMesh;
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(50, 5, 0)],
        cfg.clone(),
        manual(),
        false,
        2,
    );
    let data = pattern(3 << 20, 2);
    let mut marked = false;
    let mut failed = false;
    // Checked at every step from the marking to the failover, not just at both ends.
    let mut steps_watched = 0u64;
    let got = upload(&mut net, &data, Duration::from_secs(120), |n, read| {
        let c = n.client.connection_mut().unwrap();
        if marked && !failed {
            assert_eq!(
                c.subflow_stats(1).unwrap().bytes_sent,
                0,
                "the backup carried data while the regular subflow worked ({read} bytes read)"
            );
            steps_watched += 1;
        }
        if !marked {
            let second = c
                .subflows()
                .find(|s| s.id == 1 && s.status == SubflowStatus::FullyEstablished);
            if let Some(s) = second {
                // Mark the second subflow backup before it carries data (MP_PRIO to the peer).
                assert_eq!(c.subflow_stats(s.id).unwrap().bytes_sent, 0);
                c.set_subflow_options(
                    s.id,
                    SubflowOptions {
                        backup: Some(true),
                        dscp: Some(10),
                    },
                );
                marked = true;
            }
        }
        if marked && !failed && read > (1 << 20) {
            // The regular path dies: the backup takes over.
            n.set_up(0, false);
            failed = true;
        }
    });
    assert!(got == data);
    assert!(
        failed && steps_watched > 100,
        "{steps_watched} steps watched"
    );
    let c = net.client.connection().unwrap();
    let b = c.subflows().find(|s| s.id == 1).unwrap();
    assert!(b.backup && b.dscp == 10);
    assert!(
        c.subflow_stats(1).unwrap().bytes_sent > 0,
        "backup carried data once alone"
    );
    // The server learnt the priority through MP_PRIO.
    let s = net.server.connection().unwrap();
    assert!(s.subflows().any(|f| f.peer_backup));
}

#[test]
fn remove_addr_closes_the_subflow_and_data_moves_over() {
    let mut ccfg = manual();
    ccfg.path_manager = PmKind::FullMesh;
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(20, 5, 0)],
        ccfg,
        manual(),
        true,
        3,
    );
    let data = pattern(4 << 20, 3);
    let mut removed = false;
    let got = upload(&mut net, &data, Duration::from_secs(60), |n, read| {
        if !removed && read > (1 << 20) {
            // The server withdraws its announced address (id 1).
            n.server.connection_mut().unwrap().remove_local_address(1);
            removed = true;
        }
    });
    assert!(got == data);
    let c = net.client.connection_mut().unwrap();
    let mut announced = false;
    let mut removed_ev = false;
    let mut closed_by_remove = false;
    while let Some(e) = c.poll_event() {
        match e {
            MptcpEvent::AddressAnnounced { addr_id: 1, .. } => announced = true,
            MptcpEvent::AddressRemoved { addr_id: 1 } => removed_ev = true,
            MptcpEvent::SubflowClosed {
                reason: SubflowCloseReason::AddressRemoved,
                ..
            } => closed_by_remove = true,
            _ => {}
        }
    }
    assert!(
        announced && removed_ev,
        "announced {announced} removed {removed_ev}"
    );
    let to_removed: Vec<_> = c.subflows().filter(|s| s.remote_addr_id == 1).collect();
    assert!(!to_removed.is_empty());
    assert!(to_removed
        .iter()
        .all(|s| matches!(s.status, SubflowStatus::Closed | SubflowStatus::Closing)));
    assert!(
        closed_by_remove,
        "no SubflowClosed {{ reason: AddressRemoved }} event"
    );
}

#[test]
fn events_report_establishment_and_rto() {
    let mut net = Net::new(&[PathSpec::new(20, 5, 0)], manual(), manual(), false, 5);
    let data = pattern(1 << 20, 5);
    let mut cut = false;
    let got = upload(&mut net, &data, Duration::from_secs(60), |n, read| {
        if !cut && read > 100_000 {
            n.set_up(0, false);
            cut = true;
        } else if cut && n.now.as_nanos() > 3_000_000_000 {
            n.set_up(0, true);
        }
    });
    assert!(got == data);
    let c = net.client.connection_mut().unwrap();
    let mut ev = Vec::new();
    while let Some(e) = c.poll_event() {
        ev.push(e);
    }
    assert_eq!(ev.first(), Some(&MptcpEvent::Established));
    assert!(ev.contains(&MptcpEvent::SubflowEstablished { id: 0 }));
    assert!(ev.contains(&MptcpEvent::RetransmissionTimeout { id: 0 }));
    let st = c.subflow_stats(0).unwrap();
    assert!(st.bytes_retransmitted > 0 && st.srtt > Duration::ZERO && st.cwnd > 0);
}

/// The operator's view: the monitor stream names events as `ip mptcp
/// monitor` does, in order, with addresses and reasons; per-connection
/// counts survive a subflow closing; a backup change is an SF_PRIO on both
/// sides.
#[test]
fn monitor_events_and_connection_info() {
    use mptcp_engine::mptcp::{ConnectionState, MonitorKind};
    let mut net = Net::new(
        &[PathSpec::new(20, 5, 0), PathSpec::new(20, 5, 0)],
        manual(),
        manual(),
        false,
        7,
    );
    let data = pattern(2 << 20, 7);
    let (mut opened, mut prio, mut closed) = (None, false, false);
    let got = upload(&mut net, &data, Duration::from_secs(60), |n, read| {
        let now = n.now;
        if opened.is_none() && n.client.is_established() && read > 0 {
            opened = n
                .client
                .open_subflow(now, SocketAddr::new(client_ip(1), 0), server_addr(0));
        }
        if !prio && read > (512 << 10) {
            let c = n.server.connection_mut().unwrap();
            prio = c.set_subflow_options(
                1,
                SubflowOptions {
                    backup: Some(true),
                    dscp: None,
                },
            );
        }
        if !closed && read > (1 << 20) {
            closed = n.client.connection_mut().unwrap().close_subflow(0);
        }
    });
    assert!(got == data);
    assert_eq!(opened, Some(1));
    let kinds: Vec<(MonitorKind, Option<u32>)> = std::iter::from_fn(|| net.server.poll_monitor())
        .map(|e| (e.kind, e.subflow))
        .collect();
    let pos = |k: (MonitorKind, Option<u32>)| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k:?} missing from {kinds:?}"))
    };
    assert_eq!(kinds[0], (MonitorKind::Created, None));
    assert!(pos((MonitorKind::Established, None)) < pos((MonitorKind::SfEstablished, Some(1))));
    assert!(pos((MonitorKind::SfEstablished, Some(1))) < pos((MonitorKind::SfPrio, Some(1))));
    assert!(pos((MonitorKind::SfPrio, Some(1))) < pos((MonitorKind::SfClosed, Some(0))));
    // The client saw the server's MP_PRIO.
    let client_events: Vec<_> = std::iter::from_fn(|| net.client.poll_monitor()).collect();
    let p = client_events
        .iter()
        .find(|e| e.kind == MonitorKind::SfPrio)
        .expect("SF_PRIO at the client");
    assert!(p.backup && p.subflow == Some(1));
    assert_eq!(p.local.map(|a| a.ip()), Some(client_ip(1)));
    let sc = client_events
        .iter()
        .find(|e| e.kind == MonitorKind::SfClosed)
        .expect("SF_CLOSED at the client");
    assert_eq!(sc.subflow, Some(0));
    assert!(sc.close_reason.is_some());
    // Counts are data-level and include the closed subflow's share.
    let info = net.server.connection().unwrap().info();
    assert_eq!(info.bytes_received, data.len() as u64);
    assert_eq!(info.subflows_total, 2);
    assert!(info.subflows <= 1, "{info:?}");
    assert_eq!(info.fallback, None);
    assert_ne!(info.state, ConnectionState::Connecting);
    let token = info.token;
    let h = net.server.handle_of_token(token).unwrap();
    assert_eq!(net.server.get(h).map(|c| c.token()), Some(token));
}
