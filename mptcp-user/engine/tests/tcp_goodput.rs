//! Simulated-time goodput of one subflow on a clean 1 Gbit/s, 10 ms path
//! (deterministic: the figure depends on the code, not on the machine).

mod tcp_harness;

use mptcp_engine::cc::CcAlgorithm;
use mptcp_engine::tcp::Config;
use std::time::Duration;
use tcp_harness::*;

fn goodput(cc: CcAlgorithm, delay_ms: u64, queue: u64, bytes: usize) -> (f64, u64) {
    let link = Link {
        delay: Duration::from_millis(delay_ms),
        rate: Some(1_000_000_000),
        queue,
        ..Default::default()
    };
    let c = Config {
        congestion_control: cc,
        ..Config::default()
    };
    let mut p = Pair::new(&c, &c, link, 1);
    let data = pattern(1 << 20, 9);
    let mut sent = 0usize;
    let mut got = 0usize;
    let mut sink = vec![0u8; 1 << 16];
    let mut ok = true;
    assert!(p.run_until(Duration::from_secs(120), |p| {
        while sent < bytes {
            let off = sent % data.len();
            let n = p.client.send(&data[off..]);
            if n == 0 {
                break;
            }
            sent += n;
        }
        if let Some(s) = p.server.as_mut() {
            loop {
                let n = s.recv(&mut sink);
                if n == 0 {
                    break;
                }
                let off = got % data.len();
                let first = n.min(data.len() - off);
                ok &= sink[..first] == data[off..off + first];
                ok &= sink[first..n] == data[..n - first];
                got += n;
            }
        }
        got == bytes
    }));
    assert!(ok, "stream corrupted");
    let st = p.client.stats();
    let secs = p.now.as_nanos() as f64 / 1e9;
    let gp = bytes as f64 * 8.0 / secs;
    println!(
        "{:?} one-way {} ms, queue {} B: {:.1} Mbit/s in {:.3} s, retransmits {}, recoveries {}, timeouts {}, cwnd {}",
        cc, delay_ms, queue, gp / 1e6, secs, st.retransmits, st.fast_recoveries, st.timeouts, st.cwnd
    );
    (gp, st.timeouts)
}

/// With a 10 ms RTT and a queue of two BDPs, HyStart++ leaves slow start
/// before the queue overflows and the transfer reaches 85% of the link.
#[test]
fn ten_ms_rtt_reaches_85_percent_with_cubic() {
    let (gp, timeouts) = goodput(CcAlgorithm::Cubic, 5, 2_500_000, 64 << 20);
    assert!(gp >= 0.85e9, "{gp}");
    assert_eq!(timeouts, 0);
}

/// With a 20 ms RTT, IW10 slow start alone needs about 7.4 RTTs to fill the
/// pipe; with the handshake and 52 header bytes per 1448 payload bytes
/// (goodput at most 96.5% of the link), a 64 MiB transfer is capped near
/// 78% of 1 Gbit/s whatever a standard sender does.
#[test]
fn twenty_ms_rtt_is_close_to_the_slow_start_bound() {
    let (gp, timeouts) = goodput(CcAlgorithm::Cubic, 10, 2_500_000, 64 << 20);
    assert!(gp >= 0.74e9, "{gp}");
    assert_eq!(timeouts, 0);
}

/// Shallow queues make slow start overshoot into a burst of losses; SACK
/// recovery with PRR and lost-retransmission detection repairs it without
/// a retransmission timeout.
#[test]
fn slow_start_overshoot_recovers_without_rto() {
    for (cc, delay, queue) in [
        (CcAlgorithm::Cubic, 5, 1_000_000),
        (CcAlgorithm::NewReno, 5, 1_000_000),
        (CcAlgorithm::Cubic, 10, 250_000),
        (CcAlgorithm::NewReno, 10, 250_000),
    ] {
        let (_, timeouts) = goodput(cc, delay, queue, 16 << 20);
        assert_eq!(timeouts, 0, "{cc:?} {delay} ms {queue} B");
    }
}

/// Jitter of 1 ms at 1 Gbit/s reorders dozens of segments; the reordering
/// window keeps that from passing for loss.
#[test]
fn reordering_jitter_is_not_mistaken_for_loss() {
    let link = Link {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(1),
        rate: Some(1_000_000_000),
        queue: 2_500_000,
        ..Default::default()
    };
    let c = Config::default();
    let mut p = Pair::new(&c, &c, link, 3);
    let data = pattern(16 << 20, 3);
    let (got, _) = transfer(&mut p, &data, &[], Duration::from_secs(60));
    assert!(got == data);
    let st = p.client.stats();
    let segments = data.len() as u64 / 1448;
    println!("jitter 1 ms: {st:?}");
    assert!(
        st.retransmits * 100 < segments,
        "{} spurious retransmissions",
        st.retransmits
    );
    assert_eq!(st.timeouts, 0);
}
