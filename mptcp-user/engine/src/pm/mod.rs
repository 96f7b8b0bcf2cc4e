//! Path managers: which subflows a connection opens (client side).
//!
//! The connection calls [`PathManager::wanted`] whenever addresses or
//! subflows change; the manager lists the (local address, remote address)
//! pairs it wants a subflow on, and the connection opens those it does not
//! have yet (up to its subflow limit).

use std::net::{IpAddr, SocketAddr};

/// What a path manager sees.
#[derive(Debug)]
pub struct PmView<'a> {
    /// Our addresses (the first is the initial subflow's).
    pub local: &'a [IpAddr],
    /// The peer's addresses: the initial one, then those learnt from ADD_ADDR.
    pub remote: &'a [SocketAddr],
    /// Live subflows: (local address, remote address).
    pub subflows: &'a [(IpAddr, SocketAddr)],
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
}

/// A subflow for each local/remote address pair of the same family, each
/// pair tried once.
#[derive(Debug, Default)]
pub struct FullMesh {
    tried: Vec<(IpAddr, SocketAddr)>,
}

impl PathManager for FullMesh {
    fn name(&self) -> &'static str {
        "fullmesh"
    }
    fn wanted(&mut self, view: &PmView, out: &mut Vec<SubflowRequest>) {
        // Pairs seen live once (the initial one) are not reopened either.
        for p in view.subflows {
            if !self.tried.contains(p) {
                self.tried.push(*p);
            }
        }
        for &l in view.local {
            for &r in view.remote {
                if l.is_ipv4() != r.is_ipv4() {
                    continue;
                }
                let pair = (l, r);
                if view.subflows.contains(&pair) || self.tried.contains(&pair) {
                    continue;
                }
                self.tried.push(pair);
                out.push(SubflowRequest {
                    local: l,
                    remote: r,
                });
            }
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
            },
            &mut out,
        );
        assert!(out.is_empty());
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
            },
            &mut out,
        );
        assert_eq!(out.len(), 3);
    }
}
