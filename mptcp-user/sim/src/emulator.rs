//! The path emulator's model: the simulator's links ([`Network`]) carrying
//! real Ethernet frames, each direction of each path with its own profile.
//!
//! Sans-IO like the rest: the driver (`mptcp-user emulate`, AF_PACKET) hands
//! in frames with the time they arrived and asks which frames are due and
//! when the next one is. Time is [`Instant`] since the emulator started, so
//! `;at=` changes count from then, as they count from the start of a `sim`
//! run. Rates, MTUs and statistics count IP bytes (the Ethernet header is
//! carried but not charged), as in `sim`.

use mptcp_engine::io::PathId;
use mptcp_engine::time::Instant;

use super::net::{LinkStats, Network, SendOutcome, Side};
use super::spec::{parse_path_spec, PathSpec, SpecError};

/// Ethernet header bytes carried in front of each IP packet.
pub const ETHERNET_HEADER: usize = 14;

/// One direction of an emulated path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client side to server side (`cli<i>` towards `srv<i>` in the lab).
    Up,
    /// Server side to client side.
    Down,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Up => 0,
            Direction::Down => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// The profiles of one emulated path, one per direction.
#[derive(Clone, Debug, PartialEq)]
pub struct EmulatedPath {
    pub up: PathSpec,
    pub down: PathSpec,
}

impl core::str::FromStr for EmulatedPath {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<EmulatedPath, SpecError> {
        parse_emulated_path(s)
    }
}

/// `SPEC` (both directions) or `UP_SPEC/DOWN_SPEC` (asymmetric; `/` is in
/// no spec value). `delay` stays a round-trip figure in both forms: half of
/// each direction's `delay` is applied one way, so `delay=40ms/delay=20ms`
/// gives 20 ms up and 10 ms down, a 30 ms ping.
pub fn parse_emulated_path(s: &str) -> Result<EmulatedPath, SpecError> {
    match s.split_once('/') {
        None => {
            let spec = parse_path_spec(s)?;
            Ok(EmulatedPath {
                up: spec.clone(),
                down: spec,
            })
        }
        Some((up, down)) => {
            if down.contains('/') {
                return Err(SpecError(format!(
                    "`{s}` has more than one `/`; expected SPEC or UP_SPEC/DOWN_SPEC"
                )));
            }
            let with_side = |side: &str, e: SpecError| SpecError(format!("{side} spec: {e}"));
            Ok(EmulatedPath {
                up: parse_path_spec(up).map_err(|e| with_side("up", e))?,
                down: parse_path_spec(down).map_err(|e| with_side("down", e))?,
            })
        }
    }
}

/// A frame that is due on `path`, travelling in `direction`.
#[derive(Debug)]
pub struct Due<'a> {
    pub at: Instant,
    pub path: PathId,
    pub direction: Direction,
    pub frame: &'a [u8],
}

/// Every emulated path, both directions, over one [`Network`].
pub struct Emulator {
    /// Network path `2 * path + direction` carries one direction of one
    /// emulated path, always sent from its client side: each direction gets
    /// its own profile, random stream and `;at=` schedule.
    net: Network,
    paths: usize,
}

impl Emulator {
    pub fn new(paths: &[EmulatedPath], seed: u64) -> Emulator {
        let specs: Vec<PathSpec> = paths
            .iter()
            .flat_map(|p| [p.up.clone(), p.down.clone()])
            .collect();
        Emulator {
            net: Network::with_header(&specs, seed, ETHERNET_HEADER),
            paths: paths.len(),
        }
    }

    pub fn path_count(&self) -> usize {
        self.paths
    }

    /// Hands in a frame that arrived at `now` on one side of `path`.
    pub fn offer(
        &mut self,
        now: Instant,
        path: PathId,
        direction: Direction,
        frame: &[u8],
    ) -> SendOutcome {
        let net_path = if path < self.paths {
            2 * path + direction.index()
        } else {
            2 * self.paths // no such link: dropped as "down", counted nowhere
        };
        self.net.send(now, Side::Client, net_path, frame)
    }

    /// Hands every frame due at or before `now` to `out`, in order.
    pub fn poll_due(&mut self, now: Instant, mut out: impl FnMut(Due<'_>)) {
        self.net.process_until(now, |d| {
            out(Due {
                at: d.at,
                path: d.path / 2,
                direction: if d.path % 2 == 0 {
                    Direction::Up
                } else {
                    Direction::Down
                },
                frame: d.packet,
            })
        });
    }

    /// When the next frame is due or the next `;at=` change happens.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.net.next_event_time()
    }

    pub fn stats(&self, path: PathId, direction: Direction) -> &LinkStats {
        self.net
            .link_stats(2 * path + direction.index(), Side::Client)
    }

    /// Frames on their way (queued or propagating).
    pub fn in_flight(&self) -> usize {
        self.net.in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(len: usize) -> Vec<u8> {
        vec![0xab; len]
    }

    fn drain(e: &mut Emulator) -> Vec<(u64, PathId, Direction, usize)> {
        let mut out = Vec::new();
        while let Some(t) = e.next_deadline() {
            e.poll_due(t, |d| {
                out.push((d.at.as_nanos(), d.path, d.direction, d.frame.len()))
            });
        }
        out
    }

    #[test]
    fn symmetric_and_asymmetric_specs() {
        let p = parse_emulated_path("rate=10mbit,delay=20ms").unwrap();
        assert_eq!(p.up, p.down);
        let p = parse_emulated_path("delay=40ms,loss=1%/delay=20ms").unwrap();
        assert_eq!(p.up.initial.delay, Duration::from_millis(40));
        assert_eq!(p.up.initial.loss, 0.01);
        assert_eq!(p.down.initial.delay, Duration::from_millis(20));
        assert_eq!(p.down.initial.loss, 0.0);
        let e = parse_emulated_path("delay=1ms/bogus=1").unwrap_err();
        assert!(e.0.starts_with("down spec: unknown key `bogus`"), "{e}");
        assert!(parse_emulated_path("a/b/c").is_err());
    }

    #[test]
    fn rate_counts_ip_bytes_and_delay_is_half_the_round_trip() {
        // 12 Mbit/s: 1500 IP bytes take 1 ms; the 14-byte Ethernet header is free.
        let p = parse_emulated_path("rate=12mbit,delay=10ms/delay=4ms").unwrap();
        let mut e = Emulator::new(&[p], 1);
        for _ in 0..3 {
            e.offer(Instant::ZERO, 0, Direction::Up, &frame(1514));
        }
        e.offer(Instant::ZERO, 0, Direction::Down, &frame(100));
        let got = drain(&mut e);
        let ms: Vec<(u64, Direction)> = got.iter().map(|g| (g.0 / 1_000_000, g.2)).collect();
        assert_eq!(
            ms,
            vec![
                (2, Direction::Down),
                (6, Direction::Up),
                (7, Direction::Up),
                (8, Direction::Up)
            ]
        );
        assert!(got
            .iter()
            .filter(|g| g.2 == Direction::Up)
            .all(|g| g.3 == 1514));
        assert_eq!(e.stats(0, Direction::Up).delivered_bytes, 3 * 1500);
        assert_eq!(e.stats(0, Direction::Down).delivered_packets, 1);
    }

    #[test]
    fn mtu_applies_to_the_ip_packet() {
        let p = parse_emulated_path("mtu=1280").unwrap();
        let mut e = Emulator::new(&[p], 1);
        assert!(matches!(
            e.offer(Instant::ZERO, 0, Direction::Up, &frame(1280 + 14)),
            SendOutcome::Queued { .. }
        ));
        assert!(matches!(
            e.offer(Instant::ZERO, 0, Direction::Up, &frame(1281 + 14)),
            SendOutcome::Dropped(_)
        ));
        // Frames shorter than a header, and unknown paths, are dropped or carried without panic.
        e.offer(Instant::ZERO, 0, Direction::Down, &frame(3));
        assert!(matches!(
            e.offer(Instant::ZERO, 5, Direction::Up, &frame(60)),
            SendOutcome::Dropped(_)
        ));
        assert_eq!(drain(&mut e).len(), 2);
    }

    #[test]
    fn changes_apply_per_direction() {
        let p = parse_emulated_path("delay=2ms;at=1s,down/delay=2ms").unwrap();
        let mut e = Emulator::new(&[p], 1);
        let late = Instant::ZERO + Duration::from_secs(2);
        e.poll_due(late, |_| {});
        assert!(matches!(
            e.offer(late, 0, Direction::Up, &frame(60)),
            SendOutcome::Dropped(_)
        ));
        assert!(matches!(
            e.offer(late, 0, Direction::Down, &frame(60)),
            SendOutcome::Queued { .. }
        ));
        assert_eq!(e.stats(0, Direction::Up).dropped_down, 1);
    }
}
