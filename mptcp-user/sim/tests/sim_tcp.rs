//! The real TCP engine over the simulated network: byte-exact transfers
//! over adverse paths with several seeds, and the goodput of a clean
//! 1 Gbit/s path (simulated time, so the figure is exact and repeatable).

use mptcp_sim::tcp::TcpFactory;
use mptcp_sim::{parse_path_spec, run_with, Hooks, Outcome, SimConfig, SimReport};

const MIB: u64 = 1 << 20;

/// Seeds per adverse profile: 3, or `SIM_SEEDS` for a soak run.
fn seeds() -> std::ops::RangeInclusive<u64> {
    let n = match std::env::var("SIM_SEEDS") {
        Err(_) => 3,
        Ok(s) => match s.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => panic!("SIM_SEEDS={s:?}: want a seed count of at least 1"),
        },
    };
    1..=n
}

fn transfer(spec: &str, bytes: u64, seed: u64) -> SimReport {
    let cfg = SimConfig::new(vec![parse_path_spec(spec).unwrap()], bytes, seed);
    run_with(&cfg, &mut TcpFactory::default(), Hooks::default())
}

fn assert_exact_over_seeds(spec: &str, seeds: std::ops::RangeInclusive<u64>) -> Vec<SimReport> {
    seeds
        .map(|seed| {
            let r = transfer(spec, 16 * MIB, seed);
            println!(
                "{spec} seed {seed}: {:.1} Mbit/s, {} retransmits",
                r.goodput_bps / 1e6,
                r.paths[0].retransmits
            );
            assert_eq!(r.outcome, Outcome::Complete, "{spec} seed {seed}:\n{r}");
            assert!(r.byte_exact, "{spec} seed {seed}:\n{r}");
            assert_eq!(r.received, 16 * MIB);
            r
        })
        .collect()
}

#[test]
fn clean_path() {
    let runs = assert_exact_over_seeds("rate=100mbit,delay=10ms", seeds());
    // Nothing but the queue to lose packets; goodput close to the link.
    assert!(runs
        .iter()
        .all(|r| r.goodput_bps > 80e6 && r.goodput_bps < 100e6));
}

#[test]
fn lossy_paths() {
    let runs = assert_exact_over_seeds("rate=100mbit,delay=10ms,loss=1%", seeds());
    assert!(runs
        .iter()
        .all(|r| r.paths[0].retransmits > 0 && r.paths[0].forward.dropped_loss > 0));
    assert_exact_over_seeds("rate=50mbit,delay=10ms,loss=5%", seeds());
}

#[test]
fn reordering_path() {
    let runs = assert_exact_over_seeds("rate=100mbit,delay=10ms,reorder=3%", seeds());
    assert!(runs.iter().all(|r| r.paths[0].forward.reordered > 0));
}

#[test]
fn duplicating_path() {
    let runs = assert_exact_over_seeds("rate=100mbit,delay=10ms,dup=3%", seeds());
    assert!(runs.iter().all(|r| r.paths[0].forward.duplicated > 0));
}

#[test]
fn jittery_path() {
    assert_exact_over_seeds("rate=100mbit,delay=20ms,jitter=10ms", seeds());
}

#[test]
fn everything_at_once_with_an_outage() {
    let spec =
        "rate=100mbit,delay=10ms,loss=1%,reorder=1%,dup=1%,jitter=2ms;at=500ms,down;at=1500ms,up";
    let runs = assert_exact_over_seeds(spec, seeds());
    assert!(runs.iter().all(|r| r.paths[0].forward.dropped_down > 0));
}

#[test]
fn same_seed_same_run() {
    let spec = "rate=100mbit,delay=10ms,loss=1%,reorder=1%,dup=1%,jitter=2ms";
    let a = transfer(spec, 4 * MIB, 7);
    assert!(a.byte_exact);
    assert_eq!(a, transfer(spec, 4 * MIB, 7));
    assert_ne!(a, transfer(spec, 4 * MIB, 8));
}

#[test]
fn one_gbit_ten_ms_reaches_85_percent_of_the_link() {
    let r = transfer("rate=1gbit,delay=10ms", 64 * MIB, 1);
    println!("1 Gbit/s, 10 ms RTT, 64 MiB: {r}");
    println!(
        "goodput {:.1} Mbit/s = {:.1}% of the link",
        r.goodput_bps / 1e6,
        r.goodput_bps / 1e7
    );
    assert!(r.byte_exact);
    assert!(
        r.goodput_bps >= 0.85e9,
        "goodput {:.1} Mbit/s",
        r.goodput_bps / 1e6
    );
}

#[test]
fn empty_and_tiny_transfers_complete() {
    for bytes in [0, 1, 1000, 1448, 1449] {
        let r = transfer("rate=10mbit,delay=10ms", bytes, 1);
        assert_eq!(r.outcome, Outcome::Complete, "{bytes} bytes:\n{r}");
        assert!(r.byte_exact, "{bytes} bytes:\n{r}");
        assert_eq!(r.received, bytes);
    }
}

#[test]
fn small_mtu_paths_carry_the_stream() {
    let r = transfer("rate=10mbit,delay=40ms,mtu=576", MIB, 2);
    assert!(r.byte_exact, "{r}");
    assert_eq!(r.paths[0].forward.dropped_mtu, 0);
    // 536-byte segments at most, so at least 1 MiB / 536 data packets.
    assert!(r.paths[0].forward.offered_packets >= MIB / 536);
}
