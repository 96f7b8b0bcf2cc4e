//! Reports the CPU cost of the whole per-packet path (codecs, checksums,
//! subflow, endpoint) in both directions. A figure, not a timed assert:
//! run `cargo test --release --test tcp_cost -- --nocapture` to see it.

use mptcp_engine::io::{ByteStream, Engine};
use mptcp_engine::tcp::{Config, TcpEndpoint};
use mptcp_engine::time::Instant;
use std::time::Duration;

#[test]
fn per_packet_cost_figure() {
    let cfg = Config::default();
    let mut a = TcpEndpoint::client(
        cfg.clone(),
        "192.0.2.1:40000".parse().unwrap(),
        "192.0.2.2:80".parse().unwrap(),
        Instant::ZERO,
    );
    let mut b = TcpEndpoint::listen(cfg, "192.0.2.2:80".parse().unwrap());
    let data = vec![0x3cu8; 1 << 16];
    let mut sink = vec![0u8; 1 << 16];
    let mut frame = vec![0u8; 1500];
    let mut now = Instant::ZERO;
    let total: u64 = if cfg!(debug_assertions) {
        32 << 20
    } else {
        512 << 20
    };
    let (mut received, mut packets, mut checksum) = (0u64, 0u64, 0u64);
    let started = std::time::Instant::now();
    while received < total {
        a.send(&data);
        while let Some((_, n)) = a.poll_transmit(now, &mut frame) {
            packets += 1;
            b.handle_packet(now, 0, &frame[..n]);
        }
        while let Some((_, n)) = b.poll_transmit(now, &mut frame) {
            packets += 1;
            a.handle_packet(now, 0, &frame[..n]);
        }
        loop {
            let n = b.recv(&mut sink);
            if n == 0 {
                break;
            }
            checksum += sink[..n].iter().map(|&x| x as u64).sum::<u64>();
            received += n as u64;
        }
        now = now + Duration::from_micros(20);
        for e in [&mut a as &mut dyn Engine, &mut b] {
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(checksum, received * 0x3c);
    println!(
        "{} MiB in {} packets: {:.0} ns per packet (both ends), {:.2} Gbit/s of payload on one core",
        received >> 20,
        packets,
        elapsed.as_nanos() as f64 / packets as f64,
        received as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
    );
}
