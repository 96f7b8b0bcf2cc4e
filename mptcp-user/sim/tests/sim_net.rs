//! The simulated network on its own: numbered packets in, statistics out,
//! checked against the configured profile.

use std::time::Duration;

use mptcp_engine::time::Instant;
use mptcp_sim::{parse_path_spec, Network, SendOutcome, Side};

/// One packet as the receiver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Arrival {
    at: Instant,
    to: Side,
    path: usize,
    id: u64,
    sent: Instant,
}

fn packet(id: u64, sent: Instant, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(16)];
    p[..8].copy_from_slice(&id.to_le_bytes());
    p[8..16].copy_from_slice(&sent.as_nanos().to_le_bytes());
    p
}

fn word(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Sends `count` packets of `size` bytes from `from` on path 0, one every
/// `gap`, and collects every arrival.
fn stream(net: &mut Network, from: Side, count: u64, gap: Duration, size: usize) -> Vec<Arrival> {
    let mut out = Vec::new();
    let mut collect = |d: mptcp_sim::Delivery<'_>| {
        out.push(Arrival {
            at: d.at,
            to: d.to,
            path: d.path,
            id: word(d.packet, 0),
            sent: Instant::from_nanos(word(d.packet, 8)),
        })
    };
    let mut now = Instant::ZERO;
    for id in 0..count {
        // Everything due before this send happens first, as in the runner.
        while let Some(t) = net.next_event_time().filter(|&t| t <= now) {
            net.process_until(t, &mut collect);
        }
        net.send(now, from, 0, &packet(id, now, size));
        now = now + gap;
    }
    while let Some(t) = net.next_event_time() {
        net.process_until(t, &mut collect);
    }
    out
}

fn one_path(spec: &str, seed: u64) -> Network {
    Network::new(&[parse_path_spec(spec).unwrap()], seed)
}

/// `observed` is within five standard deviations of a binomial(n, p) mean.
fn assert_binomial(observed: u64, n: u64, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (observed as f64 - mean).abs() <= 5.0 * sd + 1.0,
        "{what}: observed {observed}, expected {mean:.0} +- {:.0}",
        5.0 * sd
    );
}

const US: Duration = Duration::from_micros(1);

#[test]
fn loss_matches_its_probability_both_ways() {
    let n = 100_000;
    for (from, to) in [(Side::Client, Side::Server), (Side::Server, Side::Client)] {
        let mut net = one_path("delay=10ms,loss=5%", 11);
        let got = stream(&mut net, from, n, 10 * US, 100);
        assert!(got.iter().all(|a| a.to == to && a.path == 0));
        let lost = n - got.len() as u64;
        assert_binomial(lost, n, 0.05, "lost");
        assert_eq!(net.link_stats(0, from).dropped_loss, lost);
        assert_eq!(net.link_stats(0, to).offered_packets, 0);
    }
}

#[test]
fn duplicates_match_their_probability() {
    let n = 100_000;
    let mut net = one_path("rate=1gbit,delay=2ms,dup=2%", 5);
    let got = stream(&mut net, Side::Client, n, 10 * US, 100);
    let extra = got.len() as u64 - n;
    assert_binomial(extra, n, 0.02, "duplicated");
    assert_eq!(net.link_stats(0, Side::Client).duplicated, extra);
    // Each packet arrives once or twice, never more, never lost.
    let mut seen = vec![0u8; n as usize];
    for a in &got {
        seen[a.id as usize] += 1;
    }
    assert!(seen.iter().all(|&c| c == 1 || c == 2));
}

/// Packets that arrive after a later-numbered one.
fn late_arrivals(got: &[Arrival]) -> u64 {
    let mut highest = None;
    let mut late = 0;
    for a in got {
        if highest.is_some_and(|h| a.id < h) {
            late += 1;
        }
        highest = highest.max(Some(a.id));
    }
    late
}

#[test]
fn reordering_matches_its_probability_and_jitter_alone_never_reorders() {
    let n = 50_000;
    // 100 us between packets, 1 ms hold-back: every held packet is overtaken.
    let mut net = one_path("rate=100mbit,delay=10ms,reorder=1%,reorder_delay=1ms", 3);
    let got = stream(&mut net, Side::Client, n, 100 * US, 1000);
    assert_eq!(got.len() as u64, n);
    let held = net.link_stats(0, Side::Client).reordered;
    assert_binomial(held, n, 0.01, "held back");
    // A packet held for less than the 100 us gap is not overtaken: 10% of them.
    let late = late_arrivals(&got);
    assert!(late <= held);
    assert_binomial(late, n, 0.009, "overtaken");

    let mut net = one_path("rate=100mbit,delay=10ms,jitter=5ms", 3);
    let got = stream(&mut net, Side::Client, n, 100 * US, 1000);
    assert_eq!(got.len() as u64, n);
    assert_eq!(late_arrivals(&got), 0);
}

#[test]
fn jitter_stays_within_its_bounds_and_uses_them() {
    let mut net = one_path("delay=20ms,jitter=4ms", 8);
    // Packets 10 ms apart, so in-order delivery never stretches a delay.
    let got = stream(&mut net, Side::Client, 2000, Duration::from_millis(10), 100);
    let delays: Vec<u64> = got
        .iter()
        .map(|a| (a.at - a.sent).as_micros() as u64)
        .collect();
    let (min, max) = (*delays.iter().min().unwrap(), *delays.iter().max().unwrap());
    // One way: 10 ms +- 2 ms.
    assert!(min >= 8_000 && max <= 12_000, "{min}..{max}");
    assert!(
        min < 8_100 && max > 11_900,
        "jitter range barely used: {min}..{max}"
    );
}

#[test]
fn rate_limits_throughput_and_the_queue_overflows() {
    // Offer 24 Mbit/s of 1500-byte packets to a 12 Mbit/s link for one second.
    let mut net = one_path("rate=12mbit,delay=10ms,queue=20pkt", 1);
    let got = stream(&mut net, Side::Client, 2000, 500 * US, 1500);
    let stats = net.link_stats(0, Side::Client).clone();
    assert_eq!(stats.delivered_packets, got.len() as u64);
    assert_eq!(stats.dropped_queue + stats.delivered_packets, 2000);
    // 1 ms per packet: about 1000 fit in the second plus the 20 queued at the end.
    let last = got.last().unwrap().at;
    assert!((1015..=1025).contains(&got.len()), "{}", got.len());
    let spacing: Vec<u64> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_micros() as u64)
        .collect();
    assert!(
        spacing.iter().skip(25).all(|&s| s == 1000),
        "packets leave 1 ms apart once the queue is full"
    );
    assert!(last.as_nanos() > 1_000_000_000);
    assert_eq!(stats.max_queue_bytes, 20 * 1500);
}

#[test]
fn down_loses_queued_and_in_flight_packets_and_up_restores() {
    let mut net = one_path("delay=10ms;at=1s,down;at=2s,up", 1);
    let got = stream(&mut net, Side::Client, 3000, Duration::from_millis(1), 100);
    let ids: Vec<u64> = got.iter().map(|a| a.id).collect();
    // 5 ms one way: packets sent from 995 ms on are still in flight at the cut.
    let expected: Vec<u64> = (0..995).chain(2000..3000).collect();
    assert_eq!(ids, expected);
    assert_eq!(net.link_stats(0, Side::Client).dropped_down, 1005);
    assert!(net.profile(0).up);
}

#[test]
fn profile_changes_apply_at_their_time() {
    let mut net = one_path(
        "delay=10ms,mtu=1500;at=1s,delay=100ms,mtu=1000;at=2s,loss=100%,mtu=1500",
        1,
    );
    let got = stream(&mut net, Side::Client, 3000, Duration::from_millis(1), 1200);
    let delay_of = |id: u64| {
        got.iter()
            .find(|a| a.id == id)
            .map(|a| (a.at - a.sent).as_millis())
    };
    assert_eq!(delay_of(999), Some(5));
    // Over the new 1000-byte MTU: dropped and counted.
    assert_eq!(delay_of(1000), None);
    assert_eq!(net.link_stats(0, Side::Client).dropped_mtu, 1000);
    assert_eq!(net.link_stats(0, Side::Client).dropped_loss, 1000);
    assert_eq!(got.len(), 1000);

    let mut net = one_path("delay=10ms;at=1s,delay=100ms", 1);
    let got = stream(&mut net, Side::Client, 2000, Duration::from_millis(1), 100);
    let delay_of = |id: u64| {
        got.iter()
            .find(|a| a.id == id)
            .map(|a| (a.at - a.sent).as_millis())
    };
    assert_eq!(delay_of(999), Some(5));
    assert_eq!(delay_of(1000), Some(50));
}

#[test]
fn queue_drops_count_oversized_bursts_exactly() {
    let mut net = one_path("rate=10mbit,mtu=1500", 1);
    assert_eq!(
        net.send(Instant::ZERO, Side::Client, 0, &[0; 1501]),
        SendOutcome::Dropped(mptcp_sim::DropReason::Mtu)
    );
    assert_eq!(
        net.send(Instant::ZERO, Side::Client, 0, &[0; 1500]),
        SendOutcome::Queued { duplicated: false }
    );
}

fn adverse(seed: u64) -> Vec<Arrival> {
    let spec = "rate=50mbit,delay=20ms,jitter=3ms,loss=2%,reorder=2%,dup=1%,queue=30pkt;at=300ms,down;at=400ms,up";
    let mut net = one_path(spec, seed);
    let mut got = stream(&mut net, Side::Client, 20_000, 150 * US, 600);
    got.extend(stream(&mut net, Side::Server, 1000, 50 * US, 80));
    got
}

#[test]
fn same_seed_same_run_bit_for_bit() {
    let a = adverse(42);
    let b = adverse(42);
    assert!(a.len() > 10_000);
    assert_eq!(a, b);
    assert_ne!(a, adverse(43));
}

#[test]
fn paths_are_independent() {
    let specs = [
        parse_path_spec("delay=10ms").unwrap(),
        parse_path_spec("delay=40ms,loss=100%").unwrap(),
    ];
    let mut net = Network::new(&specs, 1);
    net.send(
        Instant::ZERO,
        Side::Client,
        0,
        &packet(1, Instant::ZERO, 64),
    );
    net.send(
        Instant::ZERO,
        Side::Client,
        1,
        &packet(2, Instant::ZERO, 64),
    );
    net.send(
        Instant::ZERO,
        Side::Server,
        1,
        &packet(3, Instant::ZERO, 64),
    );
    let mut got = Vec::new();
    while let Some(t) = net.next_event_time() {
        net.process_until(t, |d| got.push((d.at, d.path, word(d.packet, 0))));
    }
    assert_eq!(got, vec![(Instant::from_nanos(5_000_000), 0, 1)]);
    assert_eq!(net.link_stats(1, Side::Client).dropped_loss, 1);
    assert_eq!(net.link_stats(1, Side::Server).dropped_loss, 1);
}
