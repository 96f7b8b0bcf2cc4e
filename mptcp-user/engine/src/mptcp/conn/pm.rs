//! The path manager's hand: when and which MP_JOIN subflows to open.

use super::send::DataFin;
use super::subflow::SubflowKind;
use super::{Connection, KeySource, Lifecycle, Role};
use crate::mptcp::api::*;
use crate::pm::PmView;
use crate::tcp::{FourTuple, Subflow};
use crate::time::Instant;
use std::net::{IpAddr, SocketAddr};

impl Connection {
    pub(super) fn run_pm(&mut self, now: Instant, keys: &mut KeySource) {
        let s = &self.s;
        if !s.pending.path_manager
            || s.role != Role::Client
            || s.lifecycle != Lifecycle::Established
            || s.fallback.is_tcp()
            || (s.send.data_fin != DataFin::NotRequested && s.send.una == s.send.written)
            || !self
                .subflows
                .iter()
                .any(|f| f.kind == SubflowKind::Initial && f.handshake.mpc_confirmed)
        {
            return;
        }
        self.s.pending.path_manager = false;
        let local: Vec<IpAddr> = self.s.signals.locals.iter().map(|l| l.ip).collect();
        let remote: Vec<SocketAddr> = self.s.signals.remotes.iter().map(|r| r.addr).collect();
        let live: Vec<(IpAddr, SocketAddr)> = self
            .subflows
            .iter()
            .filter(|f| f.end.reason.is_none())
            .map(|f| (f.sub.tuple().local.ip(), f.sub.tuple().remote))
            .collect();
        self.pm_out.clear();
        self.pm.wanted(
            &PmView {
                local: &local,
                remote: &remote,
                subflows: &live,
            },
            &mut self.pm_out,
        );
        let reqs = std::mem::take(&mut self.pm_out);
        for r in &reqs {
            let _ = self.open_join(now, keys, r.local, None, r.remote);
        }
        self.pm_out = reqs;
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
        let li = self.s.signals.locals.iter().position(|l| l.ip == local)?;
        let path = self.s.signals.locals[li].path;
        let port = match port {
            Some(p) if p != 0 => p,
            _ => {
                let p = self.s.next_port;
                self.s.next_port = p.wrapping_add(1).max(1024);
                p
            }
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
        let i = self.add_subflow(sub, path, kind, li as u8, remote_id);
        Some(self.subflows[i].id)
    }
}
