//! Arbitrary segments never panic a subflow (debug builds check overflow),
//! whatever its state, and it keeps answering sensibly afterwards.

mod tcp_harness;

use mptcp_engine::tcp::{Config, State};
use mptcp_engine::wire::tcp::{SackBlocks, TcpFlags, TcpOptions, Timestamps};
use std::time::Duration;
use tcp_harness::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn near(&mut self, base: u32) -> u32 {
        // Mostly near the live sequence space, sometimes anywhere.
        match self.next() % 4 {
            0 => self.next() as u32,
            _ => base
                .wrapping_add((self.next() % 200_000) as u32)
                .wrapping_sub(100_000),
        }
    }
}

fn random_segment(rng: &mut Rng, template: &OwnedSeg) -> OwnedSeg {
    let mut s = template.clone();
    s.flags = TcpFlags(rng.next() as u8);
    s.seq = rng.near(template.seq);
    s.ack = rng.near(template.ack);
    s.window = rng.next() as u16;
    let mut sack = SackBlocks::default();
    for _ in 0..rng.next() % 5 {
        let l = rng.near(template.ack);
        sack.push(l, l.wrapping_add((rng.next() % 20_000) as u32));
    }
    s.options = TcpOptions {
        mss: rng.next().is_multiple_of(3).then(|| rng.next() as u16),
        window_scale: rng.next().is_multiple_of(3).then(|| rng.next() as u8),
        sack_permitted: rng.next().is_multiple_of(2),
        sack,
        timestamps: rng.next().is_multiple_of(2).then(|| Timestamps {
            tsval: rng.near(template.options.timestamps.map_or(0, |t| t.tsval)),
            tsecr: rng.next() as u32,
        }),
        ..Default::default()
    };
    s.payload = vec![0x5a; (rng.next() % 3000) as usize];
    s
}

#[test]
fn random_segments_in_every_state_do_not_panic() {
    let cfg = Config {
        recv_buffer: 64 << 10,
        send_buffer: 64 << 10,
        time_wait: Duration::from_millis(50),
        ..Config::default()
    };
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut states_seen = std::collections::HashSet::new();
    for round in 0..60u64 {
        let mut p = Pair::new(&cfg, &cfg, Link::delay_ms(2), round);
        p.record = true;
        // Drive to a varied state: some data, maybe a close on either side.
        p.client.send(&pattern(30_000, round));
        match round % 10 {
            // The client in SYN-SENT: only its SYN went out.
            0 => p.pump(),
            // The server in SYN-RECEIVED: the SYN arrived, nothing more.
            5 => {
                p.run_until(Duration::from_secs(1), |p| p.server.is_some());
                p.pump();
            }
            _ => {
                let stop_after = Duration::from_millis(rng.next() % 40);
                let until = p.now + stop_after;
                p.run_until(Duration::from_secs(1), |p| p.now >= until);
                if round % 3 == 1 {
                    p.client.close();
                }
                if round % 5 == 2 {
                    if let Some(s) = p.server.as_mut() {
                        s.close();
                    }
                }
                p.run_until(Duration::from_millis(rng.next() % 10), |_| false);
            }
        }
        // Odd rounds hit the server (passive side), even ones the client.
        let (target, from) = if (round % 2 == 1 || round % 10 == 5) && p.server.is_some() {
            (Side::Server, Side::Client)
        } else {
            (Side::Client, Side::Server)
        };
        // A segment from the peer, or (before it ever sent) our own, reversed.
        let template = match p.log.iter().rev().find(|s| s.from == from) {
            Some(s) => s.seg.clone(),
            None => {
                let mut own = p.log.iter().find(|s| s.from == target).unwrap().seg.clone();
                std::mem::swap(&mut own.src_port, &mut own.dst_port);
                std::mem::swap(&mut own.seq, &mut own.ack);
                own
            }
        };
        for _ in 0..3_000 {
            let seg = random_segment(&mut rng, &template);
            let sub = match target {
                Side::Client => &mut p.client,
                Side::Server => p.server.as_mut().unwrap(),
            };
            states_seen.insert(format!("{:?}", sub.state()));
            let now = p.now;
            sub.on_segment(now, &seg.repr());
            let mut buf = [0u8; 1500];
            let mut sent = 0;
            while sub.poll_transmit(now, &mut buf).is_some() {
                sent += 1;
                assert!(sent < 10_000, "poll_transmit never ends");
            }
            if rng.next().is_multiple_of(16) {
                p.now = p.now + Duration::from_millis(rng.next() % 500);
                let now = p.now;
                match target {
                    Side::Client => p.client.on_timeout(now),
                    Side::Server => p.server.as_mut().unwrap().on_timeout(now),
                }
            }
        }
        let st = p.client.stats();
        assert!(st.in_flight <= 64 << 10, "{st:?}");
    }
    // The storm reached many states, Closed (by RST) among them.
    assert!(states_seen.len() >= 4, "{states_seen:?}");
    for st in [
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::Closed,
    ] {
        assert!(
            states_seen.contains(&format!("{st:?}")),
            "{st:?} not reached: {states_seen:?}"
        );
    }
}
