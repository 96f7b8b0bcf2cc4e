//! The path manager's hand: when and which MP_JOIN subflows to open.

use super::subflow::Kind;
use super::{Connection, KeySource, Role};
use crate::mptcp::api::*;
use crate::pm::PmView;
use crate::tcp::{FourTuple, Subflow};
use crate::time::Instant;
use std::net::{IpAddr, SocketAddr};

impl Connection {
    pub(super) fn run_pm(&mut self, now: Instant, keys: &mut KeySource) {
        let s = &self.s;
        if !s.pm_dirty
            || s.role != Role::Client
            || !s.established
            || s.fallback
            || s.subflows_closed
            || (s.close_requested && s.snd_una == s.snd_written)
            || s.reset
            || !self
                .sfs
                .iter()
                .any(|f| f.kind == Kind::Capable && f.mpc_confirmed)
        {
            return;
        }
        self.s.pm_dirty = false;
        let local: Vec<IpAddr> = self.s.locals.iter().map(|l| l.ip).collect();
        let remote: Vec<SocketAddr> = self.s.remotes.iter().map(|r| r.1).collect();
        let live: Vec<(IpAddr, SocketAddr)> = self
            .sfs
            .iter()
            .filter(|f| f.close_reason.is_none())
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
            .sfs
            .iter()
            .any(|f| f.kind == Kind::Capable && f.mpc_confirmed);
        if self.s.fallback
            || !confirmed
            || !self.s.remote_key_known
            || self.live_subflows() >= self.s.max_subflows
        {
            return None;
        }
        let li = self.s.locals.iter().position(|l| l.ip == local)?;
        let path = self.s.locals[li].path;
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
            .remotes
            .iter()
            .find(|r| r.1 == remote)
            .map_or(0, |r| r.0);
        let tuple = FourTuple {
            local: SocketAddr::new(local, port),
            remote,
        };
        if self
            .sfs
            .iter()
            .any(|f| f.sub.tuple() == tuple && !f.sub.is_closed())
        {
            return None;
        }
        let sub = Subflow::connect(&self.s.tcp, tuple, now);
        let kind = Kind::Join {
            local_nonce: keys.nonce(),
            remote_nonce: 0,
        };
        let i = self.add_sf(sub, path, kind, li as u8, remote_id);
        Some(self.sfs[i].id)
    }
}
