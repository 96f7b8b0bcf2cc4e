//! Path managers: which subflows a connection opens (client side).
//!
//! The connection calls [`PathManager::wanted`] whenever addresses or
//! subflows change; the manager lists the (local address, remote address)
//! pairs it wants a subflow on, and the connection opens those it does not
//! have yet (up to its subflow limit).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::time::Instant;

/// First wait before a pair whose subflow failed or closed is tried again.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two tries (the wait doubles after each failure).
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a path manager sees.
#[derive(Debug)]
pub struct PmView<'a> {
    /// Our addresses (the first is the initial subflow's).
    pub local: &'a [IpAddr],
    /// The peer's addresses: the initial one (not when the peer's MP_CAPABLE
    /// set the C flag: no subflow may go there), then those learnt from ADD_ADDR.
    pub remote: &'a [SocketAddr],
    /// Live subflows: (local address, remote address), opening ones included.
    pub subflows: &'a [(IpAddr, SocketAddr)],
    /// Those of them that are established and may carry data.
    pub working: &'a [(IpAddr, SocketAddr)],
    pub now: Instant,
}

/// One subflow a path manager asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubflowRequest {
    pub local: IpAddr,
    pub remote: SocketAddr,
}

pub trait PathManager: core::fmt::Debug + Send {
    fn name(&self) -> &'static str;
    /// Appends the subflows to open now.
    fn wanted(&mut self, view: &PmView, out: &mut Vec<SubflowRequest>);
    /// When the manager wants to be asked again (a retry is due), if ever.
    fn next_wakeup(&self) -> Option<Instant> {
        None
    }
    /// A path came back (the driver saw its link, address or route return):
    /// pairs waiting for a retry are tried at `now`, their wait starting over.
    fn retry_now(&mut self, _now: Instant) {}
    /// Whether it opens lost subflows again by itself (a connection may
    /// then drop a subflow rather than nurse it).
    fn reopens_lost_subflows(&self) -> bool {
        true
    }
}

/// A subflow for each local/remote address pair of the same family. A pair
/// whose subflow fails to open or closes is tried again after 1 s, then
/// after twice as long each time (at most 30 s), until one lives: a path that
/// comes back gets its subflow again.
#[derive(Debug, Default)]
pub struct FullMesh {
    tried: Vec<Attempt>,
}

#[derive(Debug)]
struct Attempt {
    pair: (IpAddr, SocketAddr),
    /// Not live: when to try again (None: not scheduled yet).
    retry_at: Option<Instant>,
    wait: Duration,
}

impl PathManager for FullMesh {
    fn name(&self) -> &'static str {
        "fullmesh"
    }
    fn wanted(&mut self, view: &PmView, out: &mut Vec<SubflowRequest>) {
        // Pairs seen live (the initial one too) are known; a working one
        // resets its wait (a join that keeps being refused backs off).
        for p in view.subflows {
            match self.tried.iter_mut().find(|a| a.pair == *p) {
                Some(a) => {
                    a.retry_at = None;
                    if view.working.contains(p) {
                        a.wait = RETRY_FIRST;
                    }
                }
                None => self.tried.push(Attempt {
                    pair: *p,
                    retry_at: None,
                    wait: RETRY_FIRST,
                }),
            }
        }
        for &l in view.local {
            for &r in view.remote {
                if l.is_ipv4() != r.is_ipv4() {
                    continue;
                }
                let pair = (l, r);
                if view.subflows.contains(&pair) {
                    continue;
                }
                let open = match self.tried.iter_mut().find(|a| a.pair == pair) {
                    None => {
                        self.tried.push(Attempt {
                            pair,
                            retry_at: None,
                            wait: RETRY_FIRST,
                        });
                        true
                    }
                    // Tried (or lived) and gone: schedule the next try.
                    Some(a) => match a.retry_at {
                        None => {
                            a.retry_at = Some(view.now + a.wait);
                            a.wait = (a.wait * 2).min(RETRY_MAX);
                            false
                        }
                        Some(t) if t <= view.now => {
                            a.retry_at = None;
                            true
                        }
                        Some(_) => false,
                    },
                };
                if open {
                    out.push(SubflowRequest {
                        local: l,
                        remote: r,
                    });
                }
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        self.tried.iter().filter_map(|a| a.retry_at).min()
    }

    fn retry_now(&mut self, now: Instant) {
        // Live pairs are set back to `None` by the next `wanted`.
        for a in self.tried.iter_mut() {
            a.retry_at = Some(now);
            a.wait = RETRY_FIRST;
        }
    }
}

/// N subflows over the initial address pair (different source ports).
#[derive(Debug)]
pub struct NDiffPorts {
    pub n: usize,
    opened: usize,
}

impl NDiffPorts {
    pub fn new(n: usize) -> NDiffPorts {
        NDiffPorts { n, opened: 1 }
    }
}

impl PathManager for NDiffPorts {
    fn name(&self) -> &'static str {
        "ndiffports"
    }
    fn wanted(&mut self, view: &PmView, out: &mut Vec<SubflowRequest>) {
        let (Some(&l), Some(&r)) = (view.local.first(), view.remote.first()) else {
            return;
        };
        while self.opened < self.n {
            self.opened += 1;
            out.push(SubflowRequest {
                local: l,
                remote: r,
            });
        }
    }
}

/// Only what the subflow-control API asks for.
#[derive(Debug, Default)]
pub struct Manual;

impl PathManager for Manual {
    fn name(&self) -> &'static str {
        "manual"
    }
    fn wanted(&mut self, _view: &PmView, _out: &mut Vec<SubflowRequest>) {}
    fn reopens_lost_subflows(&self) -> bool {
        false
    }
}

/// The built-in path managers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PmKind {
    #[default]
    FullMesh,
    NDiffPorts(usize),
    Manual,
}

impl PmKind {
    pub fn build(self) -> Box<dyn PathManager> {
        match self {
            PmKind::FullMesh => Box::new(FullMesh::default()),
            PmKind::NDiffPorts(n) => Box::new(NDiffPorts::new(n)),
            PmKind::Manual => Box::new(Manual),
        }
    }
    /// "fullmesh", "ndiffports" (with `n`), "manual".
    pub fn from_name(name: &str, n: usize) -> Option<PmKind> {
        match name {
            "fullmesh" => Some(PmKind::FullMesh),
            "ndiffports" => Some(PmKind::NDiffPorts(n.max(1))),
            "manual" => Some(PmKind::Manual),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fullmesh_pairs_each_once() {
        let l: [IpAddr; 2] = ["10.0.0.1".parse().unwrap(), "10.0.1.1".parse().unwrap()];
        let r: [SocketAddr; 2] = [
            "10.0.0.2:80".parse().unwrap(),
            "10.0.1.2:80".parse().unwrap(),
        ];
        let live = [(l[0], r[0])];
        let mut pm = FullMesh::default();
        let mut out = Vec::new();
        pm.wanted(
            &PmView {
                local: &l,
                remote: &r,
                subflows: &live,
                working: &live,
                now: Instant::ZERO,
            },
            &mut out,
        );
        assert_eq!(out.len(), 3);
        out.clear();
        pm.wanted(
            &PmView {
                local: &l,
                remote: &r,
                subflows: &live,
                working: &live,
                now: Instant::ZERO,
            },
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn fullmesh_retries_a_lost_pair_with_a_growing_wait() {
        let l: [IpAddr; 2] = ["10.0.0.1".parse().unwrap(), "10.0.1.1".parse().unwrap()];
        let r: [SocketAddr; 1] = ["10.0.0.2:80".parse().unwrap()];
        let first = [(l[0], r[0])];
        let both = [(l[0], r[0]), (l[1], r[0])];
        let mut pm = FullMesh::default();
        let mut out = Vec::new();
        let at = |s: u64| Instant::ZERO + Duration::from_secs(s);
        let mut ask = |pm: &mut FullMesh, live: &[(IpAddr, SocketAddr)], working, t| {
            out.clear();
            pm.wanted(
                &PmView {
                    local: &l,
                    remote: &r,
                    subflows: live,
                    working,
                    now: t,
                },
                &mut out,
            );
            out.len()
        };
        assert_eq!(ask(&mut pm, &first, &first, at(0)), 1); // opens the second pair
                                                            // Its join fails (never worked): retried after 1 s, then 2 s, then 4 s.
        assert_eq!(ask(&mut pm, &first, &first, at(10)), 0);
        assert_eq!(pm.next_wakeup(), Some(at(11)));
        assert_eq!(ask(&mut pm, &first, &first, at(11)), 1);
        assert_eq!(ask(&mut pm, &first, &first, at(20)), 0);
        assert_eq!(pm.next_wakeup(), Some(at(22)));
        assert_eq!(ask(&mut pm, &first, &first, at(22)), 1);
        // It works this time; when it is lost later, the wait starts over at 1 s.
        assert_eq!(ask(&mut pm, &both, &both, at(30)), 0);
        assert_eq!(ask(&mut pm, &first, &first, at(40)), 0);
        assert_eq!(pm.next_wakeup(), Some(at(41)));
        // The wait never exceeds 30 s.
        let mut t = 41;
        for _ in 0..10 {
            assert_eq!(ask(&mut pm, &first, &first, at(t)), 1);
            assert_eq!(ask(&mut pm, &first, &first, at(t + 1)), 0);
            let next = pm.next_wakeup().unwrap();
            assert!(next <= at(t + 1 + 30));
            t = next.as_nanos() / 1_000_000_000;
        }
    }

    #[test]
    fn ndiffports_opens_n_minus_one_more() {
        let l: [IpAddr; 1] = ["10.0.0.1".parse().unwrap()];
        let r: [SocketAddr; 1] = ["10.0.0.2:80".parse().unwrap()];
        let mut pm = NDiffPorts::new(4);
        let mut out = Vec::new();
        pm.wanted(
            &PmView {
                local: &l,
                remote: &r,
                subflows: &[],
                working: &[],
                now: Instant::ZERO,
            },
            &mut out,
        );
        assert_eq!(out.len(), 3);
    }
}
