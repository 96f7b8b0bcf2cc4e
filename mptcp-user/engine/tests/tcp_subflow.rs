//! The subflow state machine against itself over the in-test network.

mod tcp_harness;

use mptcp_engine::cc::CcAlgorithm;
use mptcp_engine::tcp::{CloseReason, Config, State, SubflowEvent};
use std::time::Duration;
use tcp_harness::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> Config {
    Config {
        time_wait: ms(500),
        ..Config::default()
    }
}

#[test]
fn handshake_negotiates_options() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 1);
    assert!(p.run_until(ms(100), |p| p.established()));
    // One RTT: the client is established when the SYN/ACK arrives at 10 ms.
    assert_eq!(p.client.state(), State::Established);
    assert_eq!(p.client.poll_event(), Some(SubflowEvent::Established));
    assert_eq!(p.server().poll_event(), Some(SubflowEvent::Established));
    let (sack, ts, ws) = p.client.negotiated();
    assert!(sack && ts);
    // 4 MiB buffers need a shift of 7 to fit 16 bits.
    assert_eq!(ws, Some((7, 7)));
    assert_eq!(p.server().negotiated(), (true, true, Some((7, 7))));
    assert_eq!(p.client.stats().srtt, ms(10));
}

#[test]
fn handshake_without_options() {
    let plain = Config {
        window_scaling: false,
        timestamps: false,
        sack: false,
        ..cfg()
    };
    let mut p = Pair::new(&cfg(), &plain, Link::delay_ms(1), 1);
    assert!(p.run_until(ms(100), |p| p.established()));
    assert_eq!(p.client.negotiated(), (false, false, None));
    assert_eq!(p.server().negotiated(), (false, false, None));
    // Without timestamps a full segment carries the whole MSS.
    assert_eq!(p.client.sender_mss(), 1460);
}

#[test]
fn clean_bulk_transfer_both_ways() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 2);
    let a = pattern(3 << 20, 1);
    let b = pattern(1 << 20, 2);
    let (got_b, got_a) = transfer(&mut p, &a, &b, Duration::from_secs(30));
    assert!(
        got_b == a,
        "client->server stream differs ({} of {} bytes)",
        got_b.len(),
        a.len()
    );
    assert!(
        got_a == b,
        "server->client stream differs ({} of {} bytes)",
        got_a.len(),
        b.len()
    );
    assert_eq!(p.client.stats().retransmits, 0);
    assert_eq!(p.client.stats().bytes_acked, a.len() as u64);
    assert_eq!(p.client.acked_offset(), a.len() as u64);
    assert_eq!(p.client.send_offset(), a.len() as u64);
    assert_eq!(p.client.unsent(), 0);
    assert_eq!(p.server().recv_offset(), a.len() as u64);
    assert_eq!(p.server().stats().bytes_received, a.len() as u64);
}

fn run_lossy(seed: u64, link: Link, cc: CcAlgorithm, size: usize) {
    let c = Config {
        congestion_control: cc,
        ..cfg()
    };
    let mut p = Pair::new(&c, &c, link, seed);
    let a = pattern(size, seed);
    let b = pattern(size / 2, seed + 1000);
    let (got_b, got_a) = transfer(&mut p, &a, &b, Duration::from_secs(600));
    assert!(
        got_b == a,
        "seed {seed}: client->server differs ({} of {})",
        got_b.len(),
        a.len()
    );
    assert!(
        got_a == b,
        "seed {seed}: server->client differs ({} of {})",
        got_a.len(),
        b.len()
    );
    assert!(
        matches!(p.client.state(), State::Closed | State::TimeWait),
        "seed {seed}"
    );
    assert!(
        matches!(p.server().state(), State::Closed | State::TimeWait),
        "seed {seed}"
    );
}

#[test]
fn lossy_reordering_duplicating_many_seeds() {
    let link = Link {
        delay: ms(5),
        jitter: ms(3),
        loss: 0.02,
        dup: 0.01,
        ..Default::default()
    };
    for seed in 0..24 {
        let cc = if seed % 2 == 0 {
            CcAlgorithm::Cubic
        } else {
            CcAlgorithm::NewReno
        };
        run_lossy(seed, link, cc, 256 << 10);
    }
}

/// `TCP_STRESS_SEEDS` (a soak run) or `default`. Zero or garbage is an
/// error: an empty seed loop would pass having checked nothing.
fn stress_seeds(default: u64) -> u64 {
    match std::env::var("TCP_STRESS_SEEDS") {
        Err(_) => default,
        Ok(s) => match s.parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("TCP_STRESS_SEEDS={s:?}: want a seed count of at least 1"),
        },
    }
}

#[test]
fn heavy_loss_with_bottleneck_many_seeds() {
    let link = Link {
        delay: ms(10),
        jitter: ms(1),
        loss: 0.05,
        dup: 0.02,
        rate: Some(50_000_000),
        queue: 200_000,
    };
    let seeds = stress_seeds(12);
    for seed in 100..100 + seeds {
        run_lossy(seed, link, CcAlgorithm::Cubic, 1 << 20);
    }
}

#[test]
fn without_sack_or_timestamps_still_exact() {
    let plain = Config {
        sack: false,
        timestamps: false,
        ..cfg()
    };
    let link = Link {
        delay: ms(5),
        jitter: ms(2),
        loss: 0.02,
        dup: 0.01,
        ..Default::default()
    };
    for seed in 200..208 {
        let mut p = Pair::new(&plain, &plain, link, seed);
        let a = pattern(256 << 10, seed);
        let (got_b, _) = transfer(&mut p, &a, &[], Duration::from_secs(600));
        assert!(got_b == a, "seed {seed}");
    }
}

/// Drops the first transmission of the client data segments starting at
/// the given stream offsets.
fn drop_first_transmissions(p: &mut Pair, offsets: &[u64]) {
    let iss = p.client.initial_send_seq();
    let mut pending: Vec<u32> = offsets
        .iter()
        .map(|o| iss.wrapping_add(1 + *o as u32))
        .collect();
    p.drop_hook = Some(Box::new(move |side, seg| {
        if side != Side::Client || seg.payload.is_empty() {
            return false;
        }
        if let Some(i) = pending.iter().position(|&s| s == seg.seq) {
            pending.swap_remove(i);
            return true;
        }
        false
    }));
}

#[test]
fn sack_recovers_several_losses_in_one_window_without_rto() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(10), 3);
    let mss = 1448;
    drop_first_transmissions(&mut p, &[40 * mss, 44 * mss, 45 * mss, 55 * mss]);
    let a = pattern(1 << 20, 3);
    let (got_b, _) = transfer(&mut p, &a, &[], Duration::from_secs(30));
    assert!(got_b == a);
    let st = p.client.stats();
    assert_eq!(st.timeouts, 0, "{st:?}");
    assert_eq!(st.fast_recoveries, 1, "{st:?}");
    assert_eq!(st.retransmits, 4, "{st:?}");
    assert_eq!(st.bytes_retransmitted, 4 * mss);
    // One reduction: CUBIC's beta.
    assert!(st.ssthresh < u64::MAX);
}

#[test]
fn newreno_without_sack_fast_retransmits() {
    let plain = Config {
        sack: false,
        congestion_control: CcAlgorithm::NewReno,
        ..cfg()
    };
    let mut p = Pair::new(&plain, &plain, Link::delay_ms(10), 4);
    drop_first_transmissions(&mut p, &[40 * 1448]);
    let a = pattern(1 << 20, 4);
    let (got_b, _) = transfer(&mut p, &a, &[], Duration::from_secs(30));
    assert!(got_b == a);
    let st = p.client.stats();
    assert_eq!(
        (st.timeouts, st.fast_recoveries, st.retransmits),
        (0, 1, 1),
        "{st:?}"
    );
}

#[test]
fn rto_backs_off_exponentially_then_gives_up() {
    let c = Config {
        max_retransmissions: 5,
        ..cfg()
    };
    let mut p = Pair::new(&c, &c, Link::delay_ms(5), 5);
    assert!(p.run_until(ms(100), |p| p.established()));
    p.record = true;
    // The server vanishes: nothing from the client gets through.
    p.drop_hook = Some(Box::new(|side, _| side == Side::Client));
    let data = pattern(10_000, 5);
    assert_eq!(p.client.send(&data), data.len());
    let iss = p.client.initial_send_seq();
    assert!(p.run_until(Duration::from_secs(60), |p| p.client.is_closed()));
    p.pump();
    let first: Vec<_> = p
        .log
        .iter()
        .filter(|s| {
            s.from == Side::Client && s.seg.seq == iss.wrapping_add(1) && !s.seg.payload.is_empty()
        })
        .map(|s| s.at)
        .collect();
    // The original plus five retransmissions.
    assert_eq!(first.len(), 6, "{first:?}");
    let gaps: Vec<Duration> = first.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[0], ms(200), "min RTO with a 10 ms RTT");
    for w in gaps.windows(2) {
        assert_eq!(w[1], w[0] * 2, "{gaps:?}");
    }
    assert_eq!(p.client.close_reason(), Some(CloseReason::TimedOut));
    assert_eq!(p.client.stats().timeouts, 5);
    // Giving up sends a RST.
    assert!(p
        .log
        .iter()
        .any(|s| s.from == Side::Client && s.seg.has(mptcp_engine::wire::tcp::TcpFlags::RST)));
}

/// A pair over a 5 ms link whose client's first SYN is lost, run until
/// established.
fn after_a_lost_syn(c: &Config) -> Pair {
    let mut p = Pair::new(c, c, Link::delay_ms(5), 6);
    let mut dropped = false;
    p.drop_hook = Some(Box::new(move |side, seg| {
        if side == Side::Client && seg.has(mptcp_engine::wire::tcp::TcpFlags::SYN) && !dropped {
            dropped = true;
            return true;
        }
        false
    }));
    assert!(p.run_until(Duration::from_secs(5), |p| p.established()));
    p
}

#[test]
fn lost_syn_is_retransmitted_after_initial_rto() {
    let p = after_a_lost_syn(&cfg());
    // SYN again at 1 s (initial RTO), then three one-way trips.
    assert_eq!(
        p.now,
        mptcp_engine::time::Instant::ZERO + Duration::from_secs(1) + ms(15)
    );
    // Karn's rule leaves no sample from the retransmitted SYN; the
    // timestamp the server echoed names the transmission (RFC 7323).
    assert_eq!(p.client.stats().srtt, ms(10));
}

#[test]
fn lost_syn_without_timestamps_gives_no_rtt_sample() {
    let mut c = cfg();
    c.timestamps = false;
    let p = after_a_lost_syn(&c);
    // Karn: which SYN the SYN/ACK answers is unknown.
    assert_eq!(p.client.stats().srtt, Duration::ZERO);
}

#[test]
fn zero_window_probe_then_resume() {
    let small = Config {
        recv_buffer: 16 << 10,
        ..cfg()
    };
    let mut p = Pair::new(&cfg(), &small, Link::delay_ms(5), 7);
    assert!(p.run_until(ms(100), |p| p.established()));
    p.record = true;
    let data = pattern(100 << 10, 7);
    let sent = p.client.send(&data);
    assert_eq!(sent, data.len());
    // The server application does not read for three seconds.
    let until = p.now + Duration::from_secs(3);
    p.run_until(Duration::from_secs(4), |p| p.now >= until);
    assert_eq!(p.client.stats().snd_wnd, 0);
    assert_eq!(p.server().readable(), 16 << 10);
    let iss = p.client.initial_send_seq();
    let probe_seq = iss.wrapping_add(1 + (16 << 10) as u32).wrapping_sub(1);
    let probes: Vec<_> = p
        .log
        .iter()
        .filter(|s| s.from == Side::Client && s.seg.payload.is_empty() && s.seg.seq == probe_seq)
        .map(|s| s.at)
        .collect();
    assert!(probes.len() >= 3, "{probes:?}");
    let gaps: Vec<Duration> = probes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|w| w[1] == w[0] * 2),
        "persist backoff {gaps:?}"
    );
    // Now the application reads everything.
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 4096];
    assert!(p.run_until(Duration::from_secs(30), |p| {
        loop {
            let n = p.server().recv(&mut tmp);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&tmp[..n]);
        }
        got.len() == data.len()
    }));
    assert!(got == data);
    // Probes are not retransmission timeouts, before or after the window opened.
    assert_eq!(p.client.stats().timeouts, 0);
    assert_eq!(p.client.stats().retransmits, 0);
}

#[test]
fn fin_handshake_and_time_wait() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 8);
    assert!(p.run_until(ms(100), |p| p.established()));
    p.client.close();
    assert_eq!(p.client.state(), State::FinWait1);
    assert!(p.run_until(ms(100), |p| p.server().state() == State::CloseWait));
    assert!(p.run_until(ms(100), |p| p.client.state() == State::FinWait2));
    assert!(p.server().is_read_closed());
    p.server().close();
    assert_eq!(p.server().state(), State::LastAck);
    assert!(p.run_until(ms(100), |p| p.client.state() == State::TimeWait));
    let entered = p.now;
    assert!(p.run_until(ms(100), |p| p.server().is_closed()));
    assert_eq!(p.server().close_reason(), Some(CloseReason::Normal));
    assert!(p.run_until(Duration::from_secs(2), |p| p.client.is_closed()));
    assert_eq!(p.now - entered, ms(500));
    let events: Vec<_> = std::iter::from_fn(|| p.client.poll_event()).collect();
    assert_eq!(
        events,
        [
            SubflowEvent::Established,
            SubflowEvent::PeerClosed,
            SubflowEvent::Closed(CloseReason::Normal)
        ]
    );
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 9);
    assert!(p.run_until(ms(100), |p| p.established()));
    p.client.close();
    p.server().close();
    let mut saw_closing = false;
    assert!(p.run_until(ms(200), |p| {
        saw_closing |= p.client.state() == State::Closing;
        p.client.state() == State::TimeWait && p.server().state() == State::TimeWait
    }));
    assert!(saw_closing);
}

#[test]
fn abort_resets_the_peer() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 10);
    assert!(p.run_until(ms(100), |p| p.established()));
    p.server().abort();
    assert_eq!(p.server().close_reason(), Some(CloseReason::Aborted));
    assert!(p.run_until(ms(100), |p| p.client.is_closed()));
    assert_eq!(p.client.close_reason(), Some(CloseReason::Reset));
}

fn last_from(p: &Pair, side: Side) -> OwnedSeg {
    p.log
        .iter()
        .rev()
        .find(|s| s.from == side)
        .unwrap()
        .seg
        .clone()
}

#[test]
fn rst_in_window_but_not_exact_gets_a_challenge_ack() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 11);
    p.record = true;
    assert!(p.run_until(ms(100), |p| p.established()));
    p.server().send(b"hi");
    assert!(p.run_until(ms(100), |p| p.client.readable() == 2));
    let mut rst = last_from(&p, Side::Server);
    assert_eq!(rst.payload, b"hi");
    let exact = rst.seq.wrapping_add(2);
    rst.payload.clear();
    rst.flags = mptcp_engine::wire::tcp::TcpFlags::RST;
    rst.options = Default::default();
    rst.seq = exact.wrapping_add(1000);
    assert_eq!(
        p.inject(Side::Client, &rst),
        mptcp_engine::tcp::Verdict::Dropped
    );
    assert!(p.client.is_established());
    let mut buf = [0u8; 1500];
    let challenge = p
        .client
        .poll_transmit(p.now, &mut buf)
        .expect("challenge ACK");
    assert!(challenge
        .flags
        .contains(mptcp_engine::wire::tcp::TcpFlags::ACK));
    assert!(challenge.payload.is_empty());
    // A SYN in a synchronized state gets a challenge ACK too (RFC 5961 4).
    let mut syn = last_from(&p, Side::Server);
    syn.flags = mptcp_engine::wire::tcp::TcpFlags::SYN;
    assert_eq!(
        p.inject(Side::Client, &syn),
        mptcp_engine::tcp::Verdict::Dropped
    );
    assert!(p.client.poll_transmit(p.now, &mut buf).is_some());
    assert!(p.client.is_established());
    rst.seq = exact;
    p.inject(Side::Client, &rst);
    assert_eq!(p.client.close_reason(), Some(CloseReason::Reset));
    // Whatever reaches a closed subflow is answered with RST.
    let mut data = last_from(&p, Side::Server);
    data.payload = vec![1, 2, 3];
    assert_eq!(
        p.inject(Side::Client, &data),
        mptcp_engine::tcp::Verdict::Dropped
    );
    let r = p.client.poll_transmit(p.now, &mut buf).expect("RST");
    assert!(r.flags.contains(mptcp_engine::wire::tcp::TcpFlags::RST));
    assert_eq!(r.seq, data.ack);
}

#[test]
fn refused_connection() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 12);
    let mut buf = [0u8; 1500];
    let syn = OwnedSeg::from_repr(&p.client.poll_transmit(p.now, &mut buf).unwrap());
    let mut rst = syn.clone();
    rst.flags = mptcp_engine::wire::tcp::TcpFlags::RST | mptcp_engine::wire::tcp::TcpFlags::ACK;
    rst.ack = syn.seq.wrapping_add(2); // not acceptable: ignored, answered by RST? no: dropped
    rst.seq = 0;
    p.inject(Side::Client, &rst);
    assert_eq!(p.client.state(), State::SynSent);
    rst.ack = syn.seq.wrapping_add(1);
    p.inject(Side::Client, &rst);
    assert_eq!(p.client.close_reason(), Some(CloseReason::Refused));
}

#[test]
fn paws_drops_old_timestamps() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 13);
    p.record = true;
    assert!(p.run_until(ms(100), |p| p.established()));
    p.server().send(b"hello");
    p.pump();
    let seg = last_from(&p, Side::Server);
    assert_eq!(seg.payload, b"hello");
    let mut old = seg.clone();
    let ts = old.options.timestamps.as_mut().unwrap();
    ts.tsval = ts.tsval.wrapping_sub(10_000);
    assert_eq!(
        p.inject(Side::Client, &old),
        mptcp_engine::tcp::Verdict::Dropped
    );
    assert_eq!(p.client.readable(), 0);
    assert_eq!(
        p.inject(Side::Client, &seg),
        mptcp_engine::tcp::Verdict::Accepted
    );
    assert_eq!(p.client.readable(), 5);
}

#[test]
fn window_scaling_lets_the_window_exceed_64k() {
    let fast = Link {
        delay: ms(10),
        rate: Some(1_000_000_000),
        queue: 10 << 20,
        ..Default::default()
    };
    for (scaling, expect_big) in [(true, true), (false, false)] {
        let c = Config {
            window_scaling: scaling,
            ..cfg()
        };
        let mut p = Pair::new(&c, &c, fast, 14);
        let data = pattern(8 << 20, 14);
        let mut sent = 0;
        let mut max_flight = 0;
        let mut sink = vec![0u8; 1 << 16];
        let mut got = 0;
        p.run_until(Duration::from_secs(60), |p| {
            sent += p.client.send(&data[sent..]);
            if let Some(s) = p.server.as_mut() {
                got += s.recv(&mut sink);
            }
            max_flight = max_flight.max(p.client.stats().in_flight);
            got == data.len()
        });
        assert_eq!(got, data.len());
        assert_eq!(
            max_flight > 65535,
            expect_big,
            "scaling {scaling}: max flight {max_flight}"
        );
    }
}

#[test]
fn delayed_ack_and_immediate_ack_rules() {
    let c = Config {
        quickack_segments: 0,
        ..cfg()
    };
    let mut p = Pair::new(&c, &c, Link::delay_ms(5), 15);
    assert!(p.run_until(ms(100), |p| p.established()));
    p.record = true;
    // A lone small segment: ACKed after the delayed-ACK timer.
    p.client.send(b"x");
    p.run_until(ms(200), |p| p.log.iter().any(|s| s.from == Side::Server));
    let data_at = p.log.iter().find(|s| s.from == Side::Client).unwrap().at;
    let ack_at = p.log.iter().find(|s| s.from == Side::Server).unwrap().at;
    assert_eq!(ack_at - data_at, ms(5) + ms(40));
    // Two full segments: ACKed at once.
    p.log.clear();
    p.client.send(&pattern(2 * 1448, 1));
    p.run_until(ms(200), |p| p.log.iter().any(|s| s.from == Side::Server));
    let data_at = p.log.iter().rfind(|s| s.from == Side::Client).unwrap().at;
    let ack_at = p.log.iter().find(|s| s.from == Side::Server).unwrap().at;
    assert_eq!(ack_at - data_at, ms(5));
    // Out of order: ACKed at once, with a SACK block.
    p.log.clear();
    let iss = p.client.initial_send_seq();
    let first = 1 + 1 + 2 * 1448;
    let target = iss.wrapping_add(first as u32);
    p.drop_hook = Some(Box::new(move |side, seg| {
        side == Side::Client && seg.seq == target && seg.payload.len() == 1448
    }));
    p.client.send(&pattern(2 * 1448, 2));
    p.run_until(ms(200), |p| p.log.iter().any(|s| s.from == Side::Server));
    let ack = &p.log.iter().find(|s| s.from == Side::Server).unwrap().seg;
    assert_eq!(ack.options.sack.len, 1);
    assert_eq!(ack.ack, target);
}

#[test]
fn lost_retransmission_is_detected_without_rto() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(10), 16);
    let iss = p.client.initial_send_seq();
    let target = iss.wrapping_add(1 + 40 * 1448);
    let mut drops = 0;
    // The original and its first retransmission are both lost.
    p.drop_hook = Some(Box::new(move |side, seg| {
        if side == Side::Client && seg.seq == target && !seg.payload.is_empty() && drops < 2 {
            drops += 1;
            return true;
        }
        false
    }));
    let a = pattern(2 << 20, 16);
    let (got_b, _) = transfer(&mut p, &a, &[], Duration::from_secs(30));
    assert!(got_b == a);
    let st = p.client.stats();
    assert_eq!((st.timeouts, st.retransmits), (0, 2), "{st:?}");
}

/// Finds an ISN secret that puts the client's ISN just below 2^32.
fn secret_near_wrap() -> [u8; 16] {
    let t = tuple();
    for i in 0u32.. {
        let mut secret = [0u8; 16];
        secret[..4].copy_from_slice(&i.to_be_bytes());
        let (isn, _) = mptcp_engine::tcp::initial_sequence(
            &secret,
            &t.local,
            &t.remote,
            mptcp_engine::time::Instant::ZERO,
        );
        if isn > u32::MAX - (1 << 20) {
            return secret;
        }
    }
    unreachable!()
}

#[test]
fn sequence_numbers_wrap_around() {
    let c = Config {
        isn_secret: secret_near_wrap(),
        ..cfg()
    };
    let link = Link {
        delay: ms(5),
        jitter: ms(2),
        loss: 0.01,
        ..Default::default()
    };
    let mut p = Pair::new(&c, &cfg(), link, 17);
    assert!(p.client.initial_send_seq() > u32::MAX - (1 << 20));
    let a = pattern(4 << 20, 17);
    let (got_b, _) = transfer(&mut p, &a, &[], Duration::from_secs(60));
    assert!(got_b == a);
}

#[test]
fn small_buffers_small_mss_heavy_reordering_and_loss() {
    let tiny = Config {
        mss: 536,
        send_buffer: 8 << 10,
        recv_buffer: 6 << 10,
        ..cfg()
    };
    let link = Link {
        delay: ms(5),
        jitter: ms(20),
        loss: 0.15,
        dup: 0.05,
        ..Default::default()
    };
    let seeds = stress_seeds(6);
    for seed in 300..300 + seeds {
        let mut p = Pair::new(&tiny, &tiny, link, seed);
        let a = pattern(100 << 10, seed);
        let b = pattern(50 << 10, seed + 1);
        let (got_b, got_a) = transfer(&mut p, &a, &b, Duration::from_secs(3600));
        assert!(got_b == a, "seed {seed}: {} of {}", got_b.len(), a.len());
        assert!(got_a == b, "seed {seed}");
    }
}

#[test]
fn a_coupled_controller_plugs_in_without_changing_the_trait() {
    use mptcp_engine::cc::{CouplingInfo, Lia};
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 18);
    p.client
        .set_congestion_control(Box::new(Lia::new(1000, 10)));
    assert_eq!(p.client.congestion_control().name(), "lia");
    // The connection pushes aggregate figures from every subflow's stats.
    let st = p.client.stats();
    let sibling = (st.cwnd * 3, ms(40));
    let info = CouplingInfo::from_subflows([(st.cwnd, ms(10)), sibling]);
    p.client.congestion_control_mut().on_coupling(&info);
    let lia = p
        .client
        .congestion_control_mut()
        .as_any_mut()
        .downcast_mut::<Lia>()
        .unwrap();
    assert!((lia.alpha() - info.lia_alpha()).abs() < 1e-12);
    // The MSS was handed to the new controller.
    assert_eq!(p.client.stats().cwnd, 10 * p.client.sender_mss() as u64);
    let a = pattern(1 << 20, 18);
    let (got_b, _) = transfer(&mut p, &a, &[], Duration::from_secs(30));
    assert!(got_b == a);
}

#[test]
fn reorder_timer_repairs_a_loss_in_a_lone_burst() {
    let mut p = Pair::new(&cfg(), &cfg(), Link::delay_ms(5), 19);
    assert!(p.run_until(ms(100), |p| p.established()));
    // Eight segments sent at one instant; the third is lost. Every SACK
    // names data sent at the same time as the hole, so only the reordering
    // window (min RTT / 4) stands between the SACKs and the retransmission.
    drop_first_transmissions(&mut p, &[2 * 1448]);
    let a = pattern(8 * 1448, 19);
    p.client.send(&a);
    let start = p.now;
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 1 << 16];
    assert!(p.run_until(Duration::from_secs(5), |p| {
        let n = p.server().recv(&mut tmp);
        got.extend_from_slice(&tmp[..n]);
        got.len() == a.len()
    }));
    assert!(got == a);
    let st = p.client.stats();
    assert_eq!(
        (st.timeouts, st.retransmits, st.fast_recoveries),
        (0, 1, 1),
        "{st:?}"
    );
    // One RTT to learn of the hole, 2.5 ms of reordering window, then the
    // retransmission's one-way trip: far below the 200 ms RTO.
    assert_eq!(p.now - start, ms(10) + Duration::from_micros(2_500) + ms(5));
}

/// TCP Fast Open without a cookie (RFC 8803 clients): with
/// `accept_syn_data` the SYN's payload is in-order data and the SYN/ACK
/// acknowledges it; without, it is ignored (the client sends it again).
#[test]
fn syn_data_is_taken_only_when_asked() {
    use mptcp_engine::tcp::Subflow;
    use mptcp_engine::time::Instant;
    use mptcp_engine::wire::tcp::{TcpFlags, TcpOptions};
    let syn = OwnedSeg {
        src_port: 40000,
        dst_port: 80,
        seq: 1000,
        ack: 0,
        flags: TcpFlags::SYN,
        window: 65535,
        options: TcpOptions::default(),
        payload: b"convert me".to_vec(),
    };
    let t = mptcp_engine::tcp::FourTuple {
        local: "10.0.0.2:80".parse().unwrap(),
        remote: "10.0.0.1:40000".parse().unwrap(),
    };
    let mut buf = vec![0u8; 2048];
    for (accept, ack, readable) in [(true, 1011, 10), (false, 1001, 0)] {
        let c = Config {
            accept_syn_data: accept,
            ..cfg()
        };
        let mut s = Subflow::accept(&c, t, Instant::ZERO, &syn.repr()).expect("accept");
        let synack = s.poll_transmit(Instant::ZERO, &mut buf).expect("SYN/ACK");
        assert!(synack.flags.contains(TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!(synack.ack, ack, "accept_syn_data={accept}");
        assert_eq!(s.readable(), readable);
        let mut got = [0u8; 32];
        let n = s.recv(&mut got);
        assert_eq!(&got[..n], &b"convert me"[..readable]);
    }
}
