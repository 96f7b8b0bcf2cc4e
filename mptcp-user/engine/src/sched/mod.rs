//! Packet schedulers: which subflow carries the next chunk of data.
//!
//! The connection builds one [`SubflowView`] per subflow and asks the
//! scheduler to pick; it then hands the chosen subflow as much as its
//! `room` allows. Backup subflows carry data only when no regular subflow
//! is usable (RFC 8684 section 3.3.8).

use std::time::Duration;

/// What a scheduler sees of one subflow.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubflowView {
    /// Can carry data now (fully established, not closing).
    pub usable: bool,
    pub backup: bool,
    pub srtt: Duration,
    /// Bytes it could take now without exceeding its congestion window.
    pub room: u64,
    pub mss: u32,
    /// Bytes handed to it and not yet acknowledged (in flight or queued).
    pub queued: u64,
    pub cwnd: u64,
    /// Breaks ties between idle subflows, lowest first: the order of
    /// creation, as Linux's list order (see `MptcpSubflow::rank`).
    pub rank: u32,
}

impl SubflowView {
    /// How long its queue takes to drain at cwnd/srtt, in nanoseconds (0
    /// when idle): Linux's "linger time", so idle subflows tie and the
    /// lowest rank wins, and busy ones compare by RTT.
    pub fn linger(&self) -> u128 {
        if self.queued == 0 {
            return 0;
        }
        self.queued as u128 * self.srtt.as_nanos().max(1) / self.cwnd.max(1) as u128
    }
}

/// Chooses subflows for the next chunk.
pub trait Scheduler: core::fmt::Debug + Send {
    fn name(&self) -> &'static str;
    /// Index into `views` of the subflow to send on, or `None` to wait.
    fn pick(&mut self, views: &[SubflowView]) -> Option<usize>;
    /// Whether every chunk goes on every usable subflow (redundant).
    fn redundant(&self) -> bool {
        false
    }
    /// `bytes` were handed to subflow `index` after a `pick`.
    fn sent(&mut self, _index: usize, _bytes: u64) {}
    /// Everything the application wrote has been handed to subflows.
    fn drained(&mut self) {}
}

/// The candidates: regular usable subflows, or the backups when there is no
/// regular one at all.
fn use_backups(views: &[SubflowView]) -> bool {
    !views.iter().any(|v| v.usable && !v.backup)
}

fn eligible(v: &SubflowView, backups: bool) -> bool {
    v.usable && v.backup == backups && v.room > 0
}

/// Bytes sent on one subflow before the choice is made again (Linux's
/// MPTCP_SEND_BURST_SIZE): small writes stay on one subflow.
pub const SEND_BURST: u64 = 65428;

/// Lowest smoothed RTT among subflows with room (Linux's default), kept
/// for a burst of [`SEND_BURST`] bytes while the subflow has room.
#[derive(Debug, Default)]
pub struct LowestRtt {
    last: Option<usize>,
    burst_left: u64,
}

impl LowestRtt {
    fn lowest(views: &[SubflowView]) -> Option<usize> {
        let backups = use_backups(views);
        views
            .iter()
            .enumerate()
            .filter(|(_, v)| eligible(v, backups))
            .min_by_key(|(_, v)| (v.linger(), v.rank))
            .map(|(i, _)| i)
    }
}

impl Scheduler for LowestRtt {
    fn name(&self) -> &'static str {
        "default"
    }
    fn pick(&mut self, views: &[SubflowView]) -> Option<usize> {
        let backups = use_backups(views);
        if let Some(i) = self.last {
            if self.burst_left > 0 && views.get(i).is_some_and(|v| eligible(v, backups)) {
                return Some(i);
            }
        }
        let i = LowestRtt::lowest(views)?;
        if self.last != Some(i) || self.burst_left == 0 {
            self.last = Some(i);
            self.burst_left = SEND_BURST;
        }
        Some(i)
    }
    fn sent(&mut self, index: usize, bytes: u64) {
        if self.last == Some(index) {
            self.burst_left = self.burst_left.saturating_sub(bytes);
        }
    }
    /// A burst lasts while data is backlogged (as Linux's, per push): the
    /// next write chooses afresh, so a small request after a failover goes
    /// back to the preferred subflow as soon as it works again.
    fn drained(&mut self) {
        self.burst_left = 0;
    }
}

/// Each subflow with room in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "roundrobin"
    }
    fn pick(&mut self, views: &[SubflowView]) -> Option<usize> {
        let backups = use_backups(views);
        let n = views.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if eligible(&views[i], backups) {
                self.next = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }
}

/// Every chunk on every usable subflow; the first copy to arrive counts.
#[derive(Debug, Default)]
pub struct Redundant;

impl Scheduler for Redundant {
    fn name(&self) -> &'static str {
        "redundant"
    }
    fn pick(&mut self, views: &[SubflowView]) -> Option<usize> {
        LowestRtt::lowest(views)
    }
    fn redundant(&self) -> bool {
        true
    }
}

/// The built-in schedulers by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchedulerKind {
    #[default]
    LowestRtt,
    RoundRobin,
    Redundant,
}

impl SchedulerKind {
    pub fn build(self) -> Box<dyn Scheduler> {
        match self {
            SchedulerKind::LowestRtt => Box::new(LowestRtt::default()),
            SchedulerKind::RoundRobin => Box::new(RoundRobin::default()),
            SchedulerKind::Redundant => Box::new(Redundant),
        }
    }
    pub fn from_name(name: &str) -> Option<SchedulerKind> {
        match name {
            "default" | "lowest-rtt" | "minrtt" => Some(SchedulerKind::LowestRtt),
            "roundrobin" | "round-robin" | "rr" => Some(SchedulerKind::RoundRobin),
            "redundant" => Some(SchedulerKind::Redundant),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(usable: bool, backup: bool, rtt_ms: u64, room: u64) -> SubflowView {
        SubflowView {
            usable,
            backup,
            srtt: Duration::from_millis(rtt_ms),
            room,
            mss: 1400,
            queued: 1000,
            cwnd: 10000,
            rank: 0,
        }
    }

    #[test]
    fn lowest_rtt_with_room() {
        let views = [
            v(true, false, 40, 5000),
            v(true, false, 10, 0),
            v(true, false, 20, 10),
        ];
        assert_eq!(LowestRtt::default().pick(&views), Some(2));
    }

    #[test]
    fn backup_only_when_no_regular_subflow() {
        let views = [v(true, false, 40, 0), v(true, true, 10, 5000)];
        assert_eq!(LowestRtt::default().pick(&views), None);
        let views = [v(false, false, 40, 0), v(true, true, 10, 5000)];
        assert_eq!(LowestRtt::default().pick(&views), Some(1));
    }

    #[test]
    fn a_burst_ends_when_the_backlog_is_drained() {
        let mut s = LowestRtt::default();
        let mut views = [v(true, false, 10, 5000), v(true, false, 40, 5000)];
        views[0].usable = false;
        assert_eq!(s.pick(&views), Some(1));
        s.sent(1, 200);
        views[0].usable = true;
        // Within the burst the choice sticks; after the backlog, it does not.
        assert_eq!(s.pick(&views), Some(1));
        s.drained();
        assert_eq!(s.pick(&views), Some(0));
    }

    #[test]
    fn round_robin_rotates_and_skips_full() {
        let mut rr = RoundRobin::default();
        let views = [
            v(true, false, 1, 10),
            v(true, false, 1, 0),
            v(true, false, 1, 10),
        ];
        assert_eq!(rr.pick(&views), Some(0));
        assert_eq!(rr.pick(&views), Some(2));
        assert_eq!(rr.pick(&views), Some(0));
    }
}
