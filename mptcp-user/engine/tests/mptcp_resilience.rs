//! Paths that die and come back, between two engines over simulated paths:
//! backup subflows, shared fate of subflows on one dead link, and the
//! driver's link events (`path_down`, `path_up`).

mod mptcp_harness;

use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::mptcp::{MonitorKind, MptcpConfig, MptcpEndpoint, SubflowOptions, SubflowStatus};
use mptcp_engine::pm::PmKind;
use mptcp_engine::time::Instant;
use mptcp_harness::*;
use std::net::SocketAddr;
use std::time::Duration;

fn cfg(pm: PmKind) -> MptcpConfig {
    let mut c = MptcpConfig::default();
    c.tcp.time_wait = Duration::from_millis(100);
    c.path_manager = pm;
    c
}

/// Payload bytes the endpoint's subflows on `path` sent (retransmissions included).
fn sent_on(e: &MptcpEndpoint, path: usize) -> u64 {
    let c = e.connection().expect("connection");
    c.subflows()
        .filter(|s| s.path == path)
        .map(|s| c.subflow_stats(s.id).expect("stats").bytes_sent)
        .sum()
}

/// Both sides send as fast as they can and read everything, for `d`.
fn bulk_for(net: &mut Net, d: Duration) {
    let chunk = vec![0x5au8; 64 << 10];
    let mut sink = vec![0u8; 64 << 10];
    let end = net.now + d;
    net.run_until(d + Duration::from_millis(1), |n| {
        for e in [&mut n.client, &mut n.server] {
            while e.send(&chunk) > 0 {}
            while e.recv(&mut sink) > 0 {}
        }
        n.now >= end
    });
}

/// (client, server) bytes sent on `path` during `d` of bulk transfer both ways.
fn sent_during(net: &mut Net, path: usize, d: Duration) -> (u64, u64) {
    let before = (sent_on(&net.client, path), sent_on(&net.server, path));
    bulk_for(net, d);
    (
        sent_on(&net.client, path) - before.0,
        sent_on(&net.server, path) - before.1,
    )
}

/// A manual path manager's join from the client's path 1 to `remote`,
/// once the connection allows one; returns its id.
fn open_manual_join(net: &mut Net, remote: SocketAddr) -> mptcp_engine::mptcp::SubflowId {
    // The join may go out once the server confirmed the keys (its first
    // segment after the handshake: the answer to some data).
    let mut id = None;
    let mut said_hello = false;
    assert!(net.run_until(Duration::from_secs(2), |n| {
        if n.client.is_established() && !said_hello {
            said_hello = n.client.send(b"hello") == 5;
        }
        let now = n.now;
        id = n
            .client
            .open_subflow(now, SocketAddr::new(client_ip(1), 0), remote);
        id.is_some()
    }));
    id.unwrap()
}

#[test]
fn a_backup_subflow_carries_data_only_while_no_regular_subflow_works() {
    for seed in 1..=3u64 {
        let mut net = Net::new(
            &[PathSpec::new(20, 10, 0), PathSpec::new(20, 10, 0)],
            cfg(PmKind::Manual),
            cfg(PmKind::FullMesh),
            false,
            seed,
        );
        let id = open_manual_join(&mut net, SocketAddr::new(server_ip(1), PORT));
        // The backup flag goes to the server with MP_PRIO: both sides treat it as backup.
        let c = net.client.connection_mut().unwrap();
        assert!(c.set_subflow_options(
            id,
            SubflowOptions {
                backup: Some(true),
                dscp: None
            }
        ));
        let backup_on_both = |n: &mut Net| {
            [&n.client, &n.server].iter().all(|e| {
                e.connection().unwrap().subflows().any(|s| {
                    s.path == 1 && s.status == SubflowStatus::Backup && (s.backup || s.peer_backup)
                })
            })
        };
        assert!(
            net.run_until(Duration::from_secs(2), backup_on_both),
            "seed {seed}: backup not agreed"
        );
        bulk_for(&mut net, Duration::from_millis(500));

        // The regular subflow works: the backup carries nothing.
        let (c, s) = sent_during(&mut net, 1, Duration::from_secs(2));
        assert_eq!(
            (c, s),
            (0, 0),
            "seed {seed}: backup used while path 0 works"
        );
        let (c0, s0) = sent_during(&mut net, 0, Duration::from_millis(100));
        assert!(c0 > 0 && s0 > 0, "seed {seed}: path 0 idle");

        // Path 0 dies: the backup takes the data, both ways.
        net.set_up(0, false);
        let (c, s) = sent_during(&mut net, 1, Duration::from_secs(1));
        assert!(
            c > 500_000 && s > 500_000,
            "seed {seed}: backup carried {c} and {s} bytes while path 0 was down"
        );

        // Path 0 comes back: within a probe interval the regular subflow
        // works again, and the backup falls idle.
        net.set_up(0, true);
        bulk_for(&mut net, Duration::from_secs(1));
        let (c, s) = sent_during(&mut net, 1, Duration::from_secs(2));
        assert_eq!(
            (c, s),
            (0, 0),
            "seed {seed}: backup still used after path 0 came back"
        );
        let (c0, s0) = sent_during(&mut net, 0, Duration::from_millis(500));
        assert!(
            c0 > 500_000 && s0 > 500_000,
            "seed {seed}: path 0 unused after it came back"
        );
    }
}

/// The client sends a 200-byte request every 100 ms, the server echoes it;
/// `event(net, t)` runs before each request. Returns the longest gap
/// between two answers at the client after `from`.
fn request_response(
    net: &mut Net,
    run: Duration,
    from: Duration,
    mut event: impl FnMut(&mut Net, Duration),
) -> Duration {
    assert!(net.run_until(Duration::from_secs(2), |n| n.client.is_established()));
    // Let the joins settle.
    net.run_until(Duration::from_millis(500), |_| false);
    let start = net.now;
    let req = [0x42u8; 200];
    let mut buf = [0u8; 4096];
    let mut answered = 0usize;
    let mut last: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    let mut k = 0u32;
    while net.now < start + run {
        let due = start + Duration::from_millis(100) * k;
        let limit = due.saturating_duration_since(net.now);
        let finished = net.run_until(limit, |n| {
            loop {
                let m = n.server.recv(&mut buf);
                if m == 0 {
                    break;
                }
                assert_eq!(n.server.send(&buf[..m]), m, "echo buffer full");
            }
            loop {
                let m = n.client.recv(&mut buf);
                if m == 0 {
                    break;
                }
                let before = answered / 200;
                answered += m;
                for _ in before..answered / 200 {
                    let t = n.now;
                    if let Some(l) = last {
                        if l - start >= from {
                            longest = longest.max(t - l);
                        }
                    }
                    last = Some(t);
                }
            }
            n.now >= due
        });
        if !finished {
            // Nothing happens before the next request is due: the harness
            // knows no application timers, so time moves there.
            net.now = due;
        }
        let elapsed = net.now - start;
        event(net, elapsed);
        assert_eq!(net.client.send(&req), 200);
        k += 1;
    }
    longest
}

/// The client's link of `path` goes down or up, and its driver says so.
fn client_link(n: &mut Net, path: usize, up: bool) {
    n.set_up(path, up);
    let now = n.now;
    if up {
        n.client.path_up(now, path);
    } else {
        n.client.path_down(now, path);
    }
}

/// The client's link of `path` goes down at `from` and comes back at
/// `to`, its driver saying so; `tick` runs at every request.
struct Outage {
    path: usize,
    from: Duration,
    to: Duration,
    down: bool,
    back: bool,
}

impl Outage {
    fn new(path: usize, from: Duration, to: Duration) -> Outage {
        Outage {
            path,
            from,
            to,
            down: false,
            back: false,
        }
    }

    /// Makes the events due at `t`; true on the tick the link came back.
    fn tick(&mut self, n: &mut Net, t: Duration) -> bool {
        if t >= self.from && !self.down {
            self.down = true;
            client_link(n, self.path, false);
        }
        if t >= self.to && !self.back {
            self.back = true;
            client_link(n, self.path, true);
            return true;
        }
        false
    }
}

fn four_subflows() -> Net {
    // The server announces its second address: four subflows, two from
    // each client address (two of them share path 0's link on the client).
    Net::new(
        &[PathSpec::new(20, 20, 0), PathSpec::new(20, 30, 0)],
        cfg(PmKind::FullMesh),
        cfg(PmKind::FullMesh),
        true,
        1,
    )
}

#[test]
fn data_of_a_dead_link_is_not_reinjected_onto_a_sibling_through_the_same_link() {
    // Path 0 dies at 3 s for good. Without shared fate the first
    // reinjection may go to the client's other subflow from 10.0.0.1 (just
    // as dead) and wait for its timeout too: a gap of two timeouts.
    let mut net = four_subflows();
    let gap = request_response(
        &mut net,
        Duration::from_secs(8),
        Duration::from_secs(1),
        |n, t| {
            if t >= Duration::from_secs(3) {
                n.set_up(0, false);
            }
        },
    );
    let c = net.client.connection().unwrap();
    assert!(
        c.subflows().count() >= 3,
        "{:?}",
        c.subflows().collect::<Vec<_>>()
    );
    eprintln!("longest gap {gap:?}");
    assert!(gap < Duration::from_millis(300), "longest gap {gap:?}");
}

#[test]
fn a_link_down_event_makes_its_subflows_stale_at_once() {
    // The client's link of path 0 goes down at 3 s and the driver says so:
    // its requests go out on path 1 without waiting for a timeout.
    let gap_with = |events: bool| {
        let mut net = four_subflows();
        let mut down = false;
        request_response(
            &mut net,
            Duration::from_secs(8),
            Duration::from_secs(1),
            |n, t| {
                if t >= Duration::from_secs(3) && !down {
                    down = true;
                    n.set_up(0, false);
                    if events {
                        let now = n.now;
                        n.client.path_down(now, 0);
                    }
                }
            },
        )
    };
    let (with, without) = (gap_with(true), gap_with(false));
    eprintln!("longest gap {with:?} with the link event, {without:?} without");
    assert!(
        with + Duration::from_millis(20) < without,
        "{with:?} with the event, {without:?} without"
    );
}

#[test]
fn a_link_up_event_reopens_a_lost_subflow_without_waiting_for_its_backoff() {
    // Path 1 is down for the first 10 s: its join gives up (two SYN
    // retries) and the path manager's backoff grows. When the driver says
    // the link is back, the join is tried at once.
    let first_use_of_path_1 = |events: bool| {
        let mut ccfg = cfg(PmKind::FullMesh);
        ccfg.tcp.max_syn_retransmissions = 2;
        let mut net = Net::new(
            &[PathSpec::new(20, 20, 0), PathSpec::new(20, 20, 0)],
            ccfg,
            cfg(PmKind::FullMesh),
            false,
            1,
        );
        net.set_up(1, false);
        let back = Instant::ZERO + Duration::from_secs(10);
        let mut up = false;
        let chunk = vec![0x5au8; 64 << 10];
        let mut sink = vec![0u8; 64 << 10];
        let mut when = None;
        net.run_until(Duration::from_secs(30), |n| {
            if !up && n.now >= back {
                up = true;
                n.set_up(1, true);
                if events {
                    let now = n.now;
                    n.client.path_up(now, 1);
                }
            }
            while n.client.send(&chunk) > 0 {}
            while n.server.recv(&mut sink) > 0 {}
            if up && sent_on(&n.client, 1) > 0 {
                when = Some(n.now - back);
                return true;
            }
            false
        });
        when.expect("path 1 never carried data")
    };
    let (with, without) = (first_use_of_path_1(true), first_use_of_path_1(false));
    eprintln!(
        "path 1 carried data {with:?} after it came back with the event, {without:?} without"
    );
    assert!(with < Duration::from_millis(500), "{with:?}");
    assert!(
        with < without,
        "{with:?} with the event, {without:?} without"
    );
}

#[test]
fn a_subflow_back_from_a_dead_link_asks_the_peer_to_hold_off_until_it_shows_no_hole() {
    // The client's link of path 0 is down from 3 s to 6 s. Its path
    // manager is manual, so its subflow there stays (an automatic one would
    // remove the address and re-create the subflow on the link's return).
    // On the return the client's subflow there asks the server (MP_PRIO) to
    // treat it as backup, so the server's data does not wait on a subflow
    // that may be in retransmission backoff on its side; once the server's
    // segments show it lost nothing there, the client takes the request back.
    let mut net = Net::new(
        &[PathSpec::new(20, 20, 0), PathSpec::new(20, 30, 0)],
        cfg(PmKind::Manual),
        cfg(PmKind::FullMesh),
        false,
        1,
    );
    open_manual_join(&mut net, SocketAddr::new(server_ip(0), PORT));
    let mut outage = Outage::new(0, Duration::from_secs(3), Duration::from_secs(6));
    let mut held_now = false;
    // The server's MP_PRIO events (`ip mptcp monitor`'s SF_PRIORITY):
    // quick, so counted as they come, not sampled.
    let (mut prio_before, mut prio_after) = (0, 0);
    request_response(
        &mut net,
        Duration::from_secs(9),
        Duration::from_secs(1),
        |n, t| {
            outage.tick(n, t);
            while let Some(ev) = n.server.poll_monitor() {
                if ev.kind == MonitorKind::SfPrio {
                    *if outage.back {
                        &mut prio_after
                    } else {
                        &mut prio_before
                    } += 1;
                }
            }
            let c = n.server.connection().expect("connection");
            held_now = c.subflows().any(|s| s.peer_backup);
        },
    );
    assert_eq!(prio_before, 0, "MP_PRIO before the link came back");
    assert!(
        prio_after >= 2,
        "{prio_after} MP_PRIO after the link came back (a hold and its release)"
    );
    assert!(!held_now, "the hold was never released");
}

#[test]
fn a_client_that_hears_its_link_die_removes_its_address_there() {
    // The client's link of path 0 is down from 3 s to 6 s, and its driver
    // says so. The REMOVE_ADDR it sends on path 1 has the server close its
    // subflows to that address at once (and send their data again), rather
    // than wait for its own timers; on the link's return the client opens
    // new subflows there, and they carry its requests again.
    let mut net = four_subflows();
    let mut outage = Outage::new(0, Duration::from_secs(3), Duration::from_secs(6));
    let mut closed_after: Option<Duration> = None;
    let mut sent_at_return = 0;
    let gap = request_response(
        &mut net,
        Duration::from_secs(9),
        Duration::from_secs(1),
        |n, t| {
            if outage.tick(n, t) {
                sent_at_return = sent_on(&n.client, 0);
            }
            let c = n.server.connection().expect("connection");
            let open_on_0 = c
                .subflows()
                .any(|s| s.path == 0 && s.status != SubflowStatus::Closed);
            if outage.down && !outage.back && !open_on_0 && closed_after.is_none() {
                closed_after = Some(t - Duration::from_secs(3));
            }
        },
    );
    let closed_after = closed_after.expect("the server kept its subflows on the dead path");
    eprintln!("server closed path 0's subflows {closed_after:?} after the link event; longest gap {gap:?}");
    assert!(
        closed_after <= Duration::from_millis(200),
        "{closed_after:?}"
    );
    let c = net.client.connection().expect("connection");
    assert!(
        c.subflows()
            .any(|s| s.path == 0 && s.status == SubflowStatus::FullyEstablished),
        "{:?}",
        c.subflows().collect::<Vec<_>>()
    );
    assert!(
        sent_on(&net.client, 0) > sent_at_return,
        "no request on path 0 after its return"
    );
}

#[test]
fn subflows_re_created_after_many_link_losses_keep_to_the_port_range() {
    // The client's link of path 0 goes down and up six times; each loss
    // costs two subflows and their return two new ones. The driver steers
    // only the connection's ports to the engine: the joins wrap around
    // within them, and path 0 still carries requests at the end.
    let mut ccfg = cfg(PmKind::FullMesh);
    ccfg.client_ports = 4;
    let mut net = Net::new(
        &[PathSpec::new(20, 20, 0), PathSpec::new(20, 30, 0)],
        ccfg,
        cfg(PmKind::FullMesh),
        true,
        1,
    );
    let mut flaps = 0;
    let mut sent_at_last_return = 0;
    request_response(
        &mut net,
        Duration::from_secs(14),
        Duration::from_secs(1),
        |n, t| {
            let ms = t.as_millis();
            if (1000..13_000).contains(&ms) && ms % 2000 == 0 {
                client_link(n, 0, false);
            }
            if (2000..14_000).contains(&ms) && ms % 2000 == 1000 {
                client_link(n, 0, true);
                flaps += 1;
                sent_at_last_return = sent_on(&n.client, 0);
            }
        },
    );
    assert_eq!(flaps, 6);
    let c = net.client.connection().expect("connection");
    let ports: Vec<u16> = c.subflows().map(|s| s.tuple.local.port()).collect();
    assert!(c.subflows().count() >= 4 + 2 * 6, "{ports:?}");
    assert!(
        ports.iter().all(|p| (40000..40004).contains(p)),
        "ports outside 40000..40004: {ports:?}"
    );
    assert!(
        sent_on(&net.client, 0) > sent_at_last_return,
        "no request on path 0 after its last return"
    );
}
