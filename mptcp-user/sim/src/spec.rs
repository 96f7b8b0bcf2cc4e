//! Path specifications: `rate=100mbit,delay=10ms,loss=0.5%;at=5s,down;at=7s,up`.
//!
//! A spec is a base profile (comma-separated `key=value` items) optionally
//! followed by `;at=TIME,...` segments that change the path at that simulated
//! time. Every error names the offending key or value and the expected form.
//!
//! Semantics (both directions of a path share the profile):
//! - `rate`: link rate counted on IP packet bytes, each direction; absent or
//!   `unlimited` means no serialization delay and no queue.
//! - `delay`: round-trip propagation delay, half applied in each direction
//!   (what `ping` over the path shows when it is idle, like one netem qdisc).
//! - `jitter`: each packet's one-way delay varies uniformly within
//!   `±jitter/2` (never below zero), so the round trip varies within about `±jitter`. Jitter
//!   never reorders: a link delivers in order unless `reorder` says otherwise.
//! - `loss`, `dup`, `reorder`: per-packet probabilities, each direction.
//!   A reordered packet is held back by an extra delay drawn uniformly in
//!   `(0, reorder_delay]` (default: the larger of 1 ms and four MTU-sized
//!   packets at the link rate) so the packets behind it overtake it.
//! - `mtu`: larger packets are dropped and counted.
//! - `queue`: drop-tail queue limit in front of the rate limiter, as bytes
//!   (`256KiB`), packets (`100pkt`) or bandwidth-delay products (`1bdp`, the
//!   default, never less than 32 MTU-sized packets).
//! - `down` / `up`: a down path drops everything, including packets in flight.

use core::fmt;
use std::time::Duration;

/// Queue limit of a rate-limited link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QueueLimit {
    Bytes(u64),
    Packets(u64),
    /// Multiples of the bandwidth-delay product (rate x `delay`).
    Bdp(f64),
}

/// The state of a path at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkProfile {
    /// Bits per second on each direction; `None` for unlimited.
    pub rate_bps: Option<u64>,
    /// Round-trip propagation delay, half in each direction.
    pub delay: Duration,
    pub jitter: Duration,
    /// Probabilities in `[0, 1]`.
    pub loss: f64,
    pub reorder: f64,
    pub dup: f64,
    /// Extra hold-back of reordered packets; `None` for the default.
    pub reorder_delay: Option<Duration>,
    pub mtu: usize,
    pub queue: QueueLimit,
    pub up: bool,
}

impl Default for LinkProfile {
    fn default() -> Self {
        LinkProfile {
            rate_bps: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            dup: 0.0,
            reorder_delay: None,
            mtu: 1500,
            queue: QueueLimit::Bdp(1.0),
            up: true,
        }
    }
}

/// Fewest MTU-sized packets a `Bdp` queue holds, so slow links still buffer a burst.
pub const MIN_QUEUE_PACKETS: u64 = 32;

impl LinkProfile {
    /// The queue limit in bytes for this profile.
    pub fn queue_limit_bytes(&self) -> u64 {
        let mtu = self.mtu as u64;
        match self.queue {
            QueueLimit::Bytes(b) => b,
            QueueLimit::Packets(p) => p.saturating_mul(mtu),
            QueueLimit::Bdp(k) => {
                let bdp = self.bdp_bytes() as f64 * k;
                (bdp as u64).max(MIN_QUEUE_PACKETS * mtu)
            }
        }
    }

    /// Rate times round-trip delay, in bytes (zero when unlimited).
    pub fn bdp_bytes(&self) -> u64 {
        match self.rate_bps {
            Some(rate) => (rate as u128 * self.delay.as_nanos() / 8 / 1_000_000_000)
                .min(u64::MAX as u128) as u64,
            None => 0,
        }
    }

    /// Hold-back of a reordered packet, explicit or the default.
    pub fn effective_reorder_delay(&self) -> Duration {
        if let Some(d) = self.reorder_delay {
            return d;
        }
        let four_packets = match self.rate_bps {
            Some(rate) if rate > 0 => {
                Duration::from_nanos((4 * self.mtu as u64 * 8).saturating_mul(1_000_000_000) / rate)
            }
            _ => Duration::ZERO,
        };
        four_packets.max(Duration::from_millis(1))
    }

    /// Applies the fields a change sets.
    pub fn apply(&mut self, p: &ProfilePatch) {
        if let Some(v) = p.rate_bps {
            self.rate_bps = v;
        }
        if let Some(v) = p.delay {
            self.delay = v;
        }
        if let Some(v) = p.jitter {
            self.jitter = v;
        }
        if let Some(v) = p.loss {
            self.loss = v;
        }
        if let Some(v) = p.reorder {
            self.reorder = v;
        }
        if let Some(v) = p.dup {
            self.dup = v;
        }
        if let Some(v) = p.reorder_delay {
            self.reorder_delay = Some(v);
        }
        if let Some(v) = p.mtu {
            self.mtu = v;
        }
        if let Some(v) = p.queue {
            self.queue = v;
        }
        if let Some(v) = p.up {
            self.up = v;
        }
    }
}

/// The fields one `key=value` list sets; `None` leaves a field as it was.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfilePatch {
    /// `Some(None)` sets the rate to unlimited.
    pub rate_bps: Option<Option<u64>>,
    pub delay: Option<Duration>,
    pub jitter: Option<Duration>,
    pub loss: Option<f64>,
    pub reorder: Option<f64>,
    pub dup: Option<f64>,
    pub reorder_delay: Option<Duration>,
    pub mtu: Option<usize>,
    pub queue: Option<QueueLimit>,
    pub up: Option<bool>,
}

/// A change of the path at simulated time `at` (since the start of the run).
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileChange {
    pub at: Duration,
    pub patch: ProfilePatch,
}

/// A parsed `--path` spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PathSpec {
    /// The text it was parsed from (empty when built in code).
    pub source: String,
    pub initial: LinkProfile,
    /// Sorted by time; changes at the same time keep their order.
    pub changes: Vec<ProfileChange>,
}

impl PathSpec {
    /// Largest MTU of the path over its whole life.
    pub fn max_mtu(&self) -> usize {
        self.changes
            .iter()
            .filter_map(|c| c.patch.mtu)
            .fold(self.initial.mtu, usize::max)
    }
}

/// A spec that does not parse; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

const KEYS: &str = "rate, delay, jitter, loss, reorder, dup, reorder_delay, mtu, queue, down, up \
                    (and at= in a ;-segment)";

impl core::str::FromStr for PathSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<PathSpec, SpecError> {
        parse_path_spec(s)
    }
}

/// Parses a whole spec: base items, then `;at=...` segments.
pub fn parse_path_spec(spec: &str) -> Result<PathSpec, SpecError> {
    let mut segments = spec.split(';');
    let base = segments.next().unwrap_or("");
    let (at, patch) = parse_items(base)?;
    if at.is_some() {
        return Err(SpecError(format!(
            "`at=` belongs in a `;`-segment after the base profile, as in \
             `rate=10mbit;at=5s,down` (in path spec `{spec}`)"
        )));
    }
    let mut initial = LinkProfile::default();
    initial.apply(&patch);
    check_profile(&initial, spec)?;

    let mut changes = Vec::new();
    for seg in segments {
        let (at, patch) = parse_items(seg)?;
        let Some(at) = at else {
            return Err(SpecError(format!(
                "segment `{seg}` has no `at=TIME`; expected e.g. `;at=5s,loss=10%` (in path spec `{spec}`)"
            )));
        };
        if patch == ProfilePatch::default() {
            return Err(SpecError(format!(
                "segment `{seg}` changes nothing; add e.g. `,down` or `,delay=100ms` (in path spec `{spec}`)"
            )));
        }
        changes.push(ProfileChange { at, patch });
    }
    // Stable: changes at the same time apply in the order written.
    changes.sort_by_key(|c| c.at);

    // Every intermediate profile must make sense too (e.g. an MTU change).
    let mut p = initial.clone();
    for c in &changes {
        p.apply(&c.patch);
        check_profile(&p, spec)?;
    }
    Ok(PathSpec {
        source: spec.to_string(),
        initial,
        changes,
    })
}

fn check_profile(p: &LinkProfile, spec: &str) -> Result<(), SpecError> {
    if p.rate_bps == Some(0) {
        return Err(SpecError(format!(
            "rate must be positive (use `down` to cut a path or `rate=unlimited`) in path spec `{spec}`"
        )));
    }
    Ok(())
}

/// Parses `key=value,...` items; returns the `at` value if present.
fn parse_items(list: &str) -> Result<(Option<Duration>, ProfilePatch), SpecError> {
    let mut patch = ProfilePatch::default();
    let mut at = None;
    for raw in list.split(',') {
        let item = raw.trim();
        if item.is_empty() {
            continue;
        }
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (item.to_ascii_lowercase(), None),
        };
        let need = || {
            value.ok_or_else(|| {
                SpecError(format!(
                    "`{key}` needs a value, as in `{key}={}`",
                    example_for(&key)
                ))
            })
        };
        let dup_key = |set: bool| {
            if set {
                Err(SpecError(format!("`{key}` given twice in `{list}`")))
            } else {
                Ok(())
            }
        };
        match key.as_str() {
            "down" | "up" => {
                if value.is_some() {
                    return Err(SpecError(format!(
                        "`{key}` takes no value; write `{key}` alone, as in `;at=3s,down;at=5s,up`"
                    )));
                }
                dup_key(patch.up.is_some())?;
                patch.up = Some(key == "up");
            }
            "at" => {
                dup_key(at.is_some())?;
                at = Some(parse_duration(need()?).map_err(|e| bad("at", value, &e))?);
            }
            "rate" => {
                dup_key(patch.rate_bps.is_some())?;
                patch.rate_bps = Some(parse_rate(need()?).map_err(|e| bad("rate", value, &e))?);
            }
            "delay" => {
                dup_key(patch.delay.is_some())?;
                patch.delay = Some(parse_duration(need()?).map_err(|e| bad("delay", value, &e))?);
            }
            "jitter" => {
                dup_key(patch.jitter.is_some())?;
                patch.jitter = Some(parse_duration(need()?).map_err(|e| bad("jitter", value, &e))?);
            }
            "reorder_delay" => {
                dup_key(patch.reorder_delay.is_some())?;
                let d = parse_duration(need()?).map_err(|e| bad("reorder_delay", value, &e))?;
                if d.is_zero() {
                    return Err(bad(
                        "reorder_delay",
                        value,
                        "expected a positive duration like 2ms",
                    ));
                }
                patch.reorder_delay = Some(d);
            }
            "loss" => {
                dup_key(patch.loss.is_some())?;
                patch.loss = Some(parse_percent(need()?).map_err(|e| bad("loss", value, &e))?);
            }
            "reorder" => {
                dup_key(patch.reorder.is_some())?;
                patch.reorder =
                    Some(parse_percent(need()?).map_err(|e| bad("reorder", value, &e))?);
            }
            "dup" => {
                dup_key(patch.dup.is_some())?;
                patch.dup = Some(parse_percent(need()?).map_err(|e| bad("dup", value, &e))?);
            }
            "mtu" => {
                dup_key(patch.mtu.is_some())?;
                patch.mtu = Some(parse_mtu(need()?).map_err(|e| bad("mtu", value, &e))?);
            }
            "queue" => {
                dup_key(patch.queue.is_some())?;
                patch.queue = Some(parse_queue(need()?).map_err(|e| bad("queue", value, &e))?);
            }
            "" => {
                return Err(SpecError(format!(
                    "empty key in `{item}`; expected one of {KEYS}"
                )))
            }
            _ => {
                return Err(SpecError(format!(
                    "unknown key `{key}` in `{item}`; expected one of {KEYS}"
                )))
            }
        }
    }
    Ok((at, patch))
}

fn example_for(key: &str) -> &'static str {
    match key {
        "rate" => "100mbit",
        "delay" | "jitter" | "reorder_delay" => "10ms",
        "at" => "5s",
        "loss" | "reorder" | "dup" => "0.5%",
        "mtu" => "1500",
        "queue" => "1bdp",
        _ => "VALUE",
    }
}

fn bad(key: &str, value: Option<&str>, expected: &str) -> SpecError {
    SpecError(format!(
        "bad value `{}` for `{key}`: {expected}",
        value.unwrap_or("")
    ))
}

/// Splits `12.5mbit` into (12.5, "mbit"); the number must be finite and >= 0.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    if num.is_empty() || num == "." {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some((n, unit.trim()))
}

/// A rate: `100mbit`, `1.5gbit`, `64kbit`, `800bit`, or `k`/`m`/`g` shorthands
/// (decimal, bits per second); `unlimited` (or `inf`) for no limit.
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    const EXPECTED: &str =
        "expected a rate like 100mbit (units bit, kbit, mbit, gbit, or k, m, g) or `unlimited`";
    let lower = s.trim().to_ascii_lowercase();
    if lower == "unlimited" || lower == "inf" {
        return Ok(None);
    }
    let (n, unit) = split_number(&lower).ok_or(EXPECTED)?;
    let mult = match unit {
        "bit" | "bps" | "" => 1.0,
        "k" | "kbit" | "kbps" => 1e3,
        "m" | "mbit" | "mbps" => 1e6,
        "g" | "gbit" | "gbps" => 1e9,
        _ => return Err(EXPECTED.into()),
    };
    let bps = (n * mult).round();
    if !(1.0..=1e15).contains(&bps) {
        return Err(format!("{EXPECTED}; between 1bit and 1000000gbit"));
    }
    Ok(Some(bps as u64))
}

/// A duration: `10ms`, `1.5s`, `250us`, `100ns`; a bare `0` is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration like 10ms (units ns, us, ms, s)";
    let (n, unit) = split_number(s).ok_or(EXPECTED)?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "" if n == 0.0 => 0.0,
        _ => return Err(EXPECTED.into()),
    };
    let nanos = (n * mult).round();
    // A day of simulated time is far beyond any run.
    if nanos > 86_400e9 {
        return Err(format!("{EXPECTED}; at most one day"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// A percentage `0.5%` in `[0%, 100%]`, returned as a probability.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    const EXPECTED: &str = "expected a percentage like 0.5% (0% to 100%)";
    let (n, unit) = split_number(s).ok_or(EXPECTED)?;
    if unit != "%" || n > 100.0 {
        return Err(EXPECTED.into());
    }
    Ok(n / 100.0)
}

fn parse_mtu(s: &str) -> Result<usize, String> {
    const EXPECTED: &str = "expected an MTU in bytes between 68 and 65535, like 1500";
    let v: usize = s.trim().parse().map_err(|_| EXPECTED)?;
    if !(68..=65535).contains(&v) {
        return Err(EXPECTED.into());
    }
    Ok(v)
}

fn parse_queue(s: &str) -> Result<QueueLimit, String> {
    const EXPECTED: &str = "expected a queue limit like 256KiB, 100pkt or 1bdp";
    let lower = s.trim().to_ascii_lowercase();
    if let Some(num) = lower.strip_suffix("bdp") {
        let (k, rest) = split_number(num).ok_or(EXPECTED)?;
        if !rest.is_empty() || k <= 0.0 || k > 1e6 {
            return Err(EXPECTED.into());
        }
        return Ok(QueueLimit::Bdp(k));
    }
    for suffix in ["pkts", "pkt", "p"] {
        if let Some(num) = lower.strip_suffix(suffix) {
            let p: u64 = num.trim().parse().map_err(|_| EXPECTED)?;
            if p == 0 {
                return Err(EXPECTED.into());
            }
            return Ok(QueueLimit::Packets(p));
        }
    }
    let b = parse_size(s).map_err(|_| EXPECTED)?;
    if b == 0 {
        return Err(EXPECTED.into());
    }
    Ok(QueueLimit::Bytes(b))
}

/// A byte count: `1000`, `16MiB`, `64M` (K/M/G alone are binary, as in
/// iperf and dd), `1.5GB` (KB/MB/GB are decimal), `4KiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    const EXPECTED: &str =
        "expected a size like 16MiB or 64M (units B, K/KiB, M/MiB, G/GiB binary; KB, MB, GB decimal)";
    let (n, unit) = split_number(s).ok_or(EXPECTED)?;
    let mult: f64 = match unit {
        "" | "B" | "b" => 1.0,
        "K" | "k" | "KiB" | "kiB" => 1024.0,
        "M" | "m" | "MiB" => 1024.0 * 1024.0,
        "G" | "g" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "t" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return Err(EXPECTED.into()),
    };
    let v = (n * mult).round();
    if v > 1e18 {
        return Err(format!("{EXPECTED}; too large"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn parses_the_issue_example() {
        let p = parse_path_spec(
            "rate=100mbit,delay=10ms,loss=0.5%,jitter=1ms,reorder=0.1%,dup=0.1%,mtu=1500",
        )
        .unwrap();
        assert_eq!(p.initial.rate_bps, Some(100_000_000));
        assert_eq!(p.initial.delay, ms(10));
        assert_eq!(p.initial.jitter, ms(1));
        assert!((p.initial.loss - 0.005).abs() < 1e-12);
        assert!((p.initial.reorder - 0.001).abs() < 1e-12);
        assert!((p.initial.dup - 0.001).abs() < 1e-12);
        assert_eq!(p.initial.mtu, 1500);
        assert!(p.initial.up);
        assert!(p.changes.is_empty());
    }

    #[test]
    fn parses_segments_sorted_with_down_and_up() {
        let p =
            parse_path_spec("rate=10mbit;at=5s,up;at=3s,down;at=4s,delay=100ms,loss=10%").unwrap();
        let times: Vec<_> = p.changes.iter().map(|c| c.at).collect();
        assert_eq!(times, vec![ms(3000), ms(4000), ms(5000)]);
        assert_eq!(p.changes[0].patch.up, Some(false));
        assert_eq!(p.changes[1].patch.delay, Some(ms(100)));
        assert_eq!(p.changes[1].patch.loss, Some(0.1));
        assert_eq!(p.changes[1].patch.up, None);
        assert_eq!(p.changes[2].patch.up, Some(true));
    }

    #[test]
    fn defaults_and_empty_base() {
        let p = parse_path_spec("").unwrap();
        assert_eq!(p.initial, LinkProfile::default());
        let p = parse_path_spec(";at=1s,down").unwrap();
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.initial.rate_bps, None);
    }

    #[test]
    fn rate_units() {
        assert_eq!(parse_rate("800bit").unwrap(), Some(800));
        assert_eq!(parse_rate("64kbit").unwrap(), Some(64_000));
        assert_eq!(parse_rate("1.5gbit").unwrap(), Some(1_500_000_000));
        assert_eq!(parse_rate("10M").unwrap(), Some(10_000_000));
        assert_eq!(parse_rate("2g").unwrap(), Some(2_000_000_000));
        assert_eq!(parse_rate("5k").unwrap(), Some(5_000));
        assert_eq!(parse_rate("1000").unwrap(), Some(1000));
        assert_eq!(parse_rate("unlimited").unwrap(), None);
        assert!(parse_rate("10mb/s").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-5mbit").is_err());
    }

    #[test]
    fn duration_units() {
        assert_eq!(parse_duration("10ms").unwrap(), ms(10));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10min").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("1e3ms").is_err());
        assert!(parse_duration("100000s").is_err());
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("0%").unwrap(), 0.0);
        assert_eq!(parse_percent("100%").unwrap(), 1.0);
        assert!((parse_percent("0.5%").unwrap() - 0.005).abs() < 1e-15);
        assert!(parse_percent("0.5").is_err());
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("%").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5MB").unwrap(), 1_500_000);
        assert_eq!(parse_size("10KB").unwrap(), 10_000);
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999TB").is_err());
    }

    #[test]
    fn queue_forms() {
        let q =
            |s: &str| parse_path_spec(&format!("rate=10mbit,queue={s}")).map(|p| p.initial.queue);
        assert_eq!(q("256KiB").unwrap(), QueueLimit::Bytes(256 * 1024));
        assert_eq!(q("100pkt").unwrap(), QueueLimit::Packets(100));
        assert_eq!(q("0.5bdp").unwrap(), QueueLimit::Bdp(0.5));
        assert!(q("0pkt").is_err());
        assert!(q("lots").is_err());
    }

    #[test]
    fn queue_limit_defaults_to_a_bdp_with_a_floor() {
        let p = parse_path_spec("rate=1gbit,delay=10ms").unwrap().initial;
        assert_eq!(p.bdp_bytes(), 1_250_000);
        assert_eq!(p.queue_limit_bytes(), 1_250_000);
        let slow = parse_path_spec("rate=1mbit,delay=1ms").unwrap().initial;
        assert_eq!(slow.queue_limit_bytes(), MIN_QUEUE_PACKETS * 1500);
    }

    #[test]
    fn reorder_delay_default_scales_with_rate() {
        let fast = parse_path_spec("rate=1gbit").unwrap().initial;
        assert_eq!(fast.effective_reorder_delay(), ms(1));
        let slow = parse_path_spec("rate=1mbit").unwrap().initial;
        assert_eq!(slow.effective_reorder_delay(), ms(48));
        let set = parse_path_spec("reorder_delay=3ms").unwrap().initial;
        assert_eq!(set.effective_reorder_delay(), ms(3));
    }

    #[test]
    fn errors_name_the_key_and_the_form() {
        let e = parse_path_spec("rate=100mbit,dleay=10ms").unwrap_err().0;
        assert!(
            e.contains("unknown key `dleay`") && e.contains("delay"),
            "{e}"
        );
        let e = parse_path_spec("delay=10").unwrap_err().0;
        assert!(
            e.contains("`10`") && e.contains("`delay`") && e.contains("10ms"),
            "{e}"
        );
        let e = parse_path_spec("loss=2").unwrap_err().0;
        assert!(e.contains("`loss`") && e.contains("0.5%"), "{e}");
        let e = parse_path_spec("rate").unwrap_err().0;
        assert!(e.contains("`rate` needs a value"), "{e}");
        let e = parse_path_spec("mtu=20").unwrap_err().0;
        assert!(e.contains("`mtu`") && e.contains("68"), "{e}");
        let e = parse_path_spec("rate=1mbit;delay=5ms").unwrap_err().0;
        assert!(e.contains("at=TIME"), "{e}");
        let e = parse_path_spec("at=1s,down").unwrap_err().0;
        assert!(e.contains("`at=`"), "{e}");
        let e = parse_path_spec("loss=1%,loss=2%").unwrap_err().0;
        assert!(e.contains("twice"), "{e}");
        let e = parse_path_spec("down=yes").unwrap_err().0;
        assert!(e.contains("takes no value"), "{e}");
        let e = parse_path_spec("rate=1mbit;at=2s").unwrap_err().0;
        assert!(e.contains("changes nothing"), "{e}");
    }

    #[test]
    fn max_mtu_covers_changes() {
        let p = parse_path_spec("mtu=1280;at=1s,mtu=9000;at=2s,mtu=1500").unwrap();
        assert_eq!(p.max_mtu(), 9000);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            ";",
            ";;",
            ",,,",
            "=",
            "==",
            "rate==",
            "at=;",
            "rate=.",
            "delay=.ms",
            "loss=.%",
            "mtu=99999999999999999999",
            "queue=bdp",
            "queue=pkt",
            "rate=1e999",
            "\u{0}",
            "é=ü",
        ] {
            let _ = parse_path_spec(s);
        }
        assert!(parse_path_spec("rate=.").is_err());
    }
}
