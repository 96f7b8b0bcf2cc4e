//! Simulated-time goodput of one subflow on a clean 1 Gbit/s, 10 ms path
//! (deterministic: the figure depends on the code, not on the machine).

mod tcp_harness;

use mptcp_user::cc::CcAlgorithm;
use mptcp_user::tcp::Config;
use std::time::Duration;
use tcp_harness::*;

fn goodput(cc: CcAlgorithm, delay_ms: u64, queue: u64, bytes: usize) -> f64 {
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
    gp
}

#[test]
fn one_gbit_figures() {
    for d in [5, 10] {
        for queue in [2_500_000, 1_000_000, 250_000] {
            for cc in [CcAlgorithm::Cubic, CcAlgorithm::NewReno] {
                goodput(cc, d, queue, 64 << 20);
            }
        }
    }
}
