//! The path manager's hand: when and which MP_JOIN subflows to open.

use super::send::DataFin;
use super::subflow::{MptcpSubflow, SubflowKind};
use super::{Connection, KeySource, Lifecycle, Role};
use crate::mptcp::api::*;
use crate::pm::PmView;
use crate::tcp::{FourTuple, Subflow};
use crate::time::Instant;
use std::net::{IpAddr, SocketAddr};

impl Connection {
    /// The path manager may open subflows now (client, established, not closing).
    pub(super) fn pm_may_run(&self) -> bool {
        let s = &self.s;
        s.role == Role::Client
            && s.lifecycle == Lifecycle::Established
            && !s.fallback.is_tcp()
            && !(s.send.data_fin != DataFin::NotRequested && s.send.una == s.send.written)
            && self
                .subflows
                .iter()
                .any(|f| f.kind == SubflowKind::Initial && f.handshake.mpc_confirmed)
    }

    pub(super) fn run_pm(&mut self, now: Instant, keys: &mut KeySource) {
        if !self.s.pending.path_manager || !self.pm_may_run() {
            return;
        }
        self.s.pending.path_manager = false;
        let local: Vec<IpAddr> = self.s.signals.locals.iter().map(|l| l.ip).collect();
        // The peer's C flag: its initial address takes no more subflows
        // (a load balancer there may send them to another server).
        let deny0 = self.s.signals.peer_denies_join_initial;
        let remote: Vec<SocketAddr> = self
            .s
            .signals
            .remotes
            .iter()
            .filter(|r| !(deny0 && r.id == 0))
            .map(|r| r.addr)
            .collect();
        // A pair the peer refused (a join limit, a bad HMAC, a removed
        // address) stays as if live: the path manager does not try it again.
        // Pairs lost otherwise (timed out, closed or reset after working) are
        // tried again with a backoff.
        let refused = |f: &MptcpSubflow| match f.end.reason {
            Some(SubflowCloseReason::Refused)
            | Some(SubflowCloseReason::BadHmac)
            | Some(SubflowCloseReason::AddressRemoved) => true,
            Some(SubflowCloseReason::Reset(_)) => !f.fully_established,
            _ => false,
        };
        let live: Vec<(IpAddr, SocketAddr)> = self
            .subflows
            .iter()
            .filter(|f| f.end.reason.is_none() || refused(f))
            .map(|f| (f.sub.tuple().local.ip(), f.sub.tuple().remote))
            .collect();
        let working: Vec<(IpAddr, SocketAddr)> = self
            .subflows
            .iter()
            .filter(|f| f.end.reason.is_none() && f.fully_established)
            .map(|f| (f.sub.tuple().local.ip(), f.sub.tuple().remote))
            .collect();
        self.pm_out.clear();
        self.pm.wanted(
            &PmView {
                local: &local,
                remote: &remote,
                subflows: &live,
                working: &working,
                now,
            },
            &mut self.pm_out,
        );
        let reqs = std::mem::take(&mut self.pm_out);
        for r in &reqs {
            let _ = self.open_join(now, keys, r.local, None, r.remote);
        }
        self.pm_out = reqs;
    }

    /// The port a join from `local` to `remote` takes: the next one in the
    /// connection's range, wrapping around, skipping one a listed subflow
    /// of the pair holds (a closed one may linger at the peer), and if all
    /// are, one no live subflow of the pair holds.
    fn next_join_port(&mut self, local: IpAddr, remote: SocketAddr) -> Option<u16> {
        let (first, span) = (self.s.first_port, self.s.settings.client_ports);
        let held = |p: u16, live_only: bool| {
            let t = FourTuple {
                local: SocketAddr::new(local, p),
                remote,
            };
            self.subflows
                .iter()
                .any(|f| f.sub.tuple() == t && !(live_only && f.sub.is_closed()))
        };
        let start = self.s.next_port.wrapping_sub(first) % span;
        let ports = (0..span).map(|k| first.wrapping_add((start + k) % span));
        let p = ports
            .clone()
            .find(|&p| !held(p, false))
            .or_else(|| ports.clone().find(|&p| !held(p, true)))?;
        self.s.next_port = first.wrapping_add((p.wrapping_sub(first) + 1) % span);
        Some(p)
    }

    /// Opens an MP_JOIN subflow (client role). `port` 0/None picks one.
    pub(crate) fn open_join(
        &mut self,
        now: Instant,
        keys: &mut KeySource,
        local: IpAddr,
        port: Option<u16>,
        remote: SocketAddr,
    ) -> Option<SubflowId> {
        let confirmed = self
            .subflows
            .iter()
            .any(|f| f.kind == SubflowKind::Initial && f.handshake.mpc_confirmed);
        if self.s.fallback.is_tcp()
            || !confirmed
            || self.s.keys.remote.is_none()
            || self.live_subflows() >= self.s.settings.max_subflows
        {
            return None;
        }
        let initial = self.s.signals.remotes.iter().find(|r| r.id == 0);
        if self.s.signals.peer_denies_join_initial && initial.is_some_and(|r| r.addr == remote) {
            return None;
        }
        let li = self.s.signals.locals.iter().position(|l| l.ip == local)?;
        let path = self.s.signals.locals[li].path;
        let port = match port {
            Some(p) if p != 0 => p,
            _ => self.next_join_port(local, remote)?,
        };
        let remote_id = self
            .s
            .signals
            .remotes
            .iter()
            .find(|r| r.addr == remote)
            .map_or(0, |r| r.id);
        let tuple = FourTuple {
            local: SocketAddr::new(local, port),
            remote,
        };
        if self
            .subflows
            .iter()
            .any(|f| f.sub.tuple() == tuple && !f.sub.is_closed())
        {
            return None;
        }
        let mut sub = Subflow::connect(&self.s.settings.tcp, tuple, now);
        keys.replay_isn(&mut sub);
        let kind = SubflowKind::Join {
            local_nonce: keys.nonce(),
            remote_nonce: 0,
        };
        let lost = self
            .subflows
            .iter()
            .find(|f| {
                f.end.reason.is_some()
                    && f.sub.tuple().local.ip() == local
                    && f.sub.tuple().remote == remote
            })
            .map(|f| f.rank);
        let i = self.add_subflow(sub, path, kind, li as u8, remote_id);
        if let Some(rank) = lost {
            self.subflows[i].rank = rank;
        }
        Some(self.subflows[i].id)
    }
}
