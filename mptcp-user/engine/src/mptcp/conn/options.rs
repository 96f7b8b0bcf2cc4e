//! MPTCP options: the parser of every option on an incoming segment and
//! the builder of the options on an outgoing one.

use super::recv::RxMapping;
use super::send::DataFin;
use super::signals::{AddAddrEcho, RemoteAddr};
use super::subflow::{MptcpSubflow, SubflowKind};
use super::{reset_reason, ConnState, Connection, Lifecycle, Role};
use crate::crypto::{self, Version};
use crate::mptcp::api::*;
use crate::time::Instant;
use crate::wire::mptcp::{Dss, MptcpOption};
use crate::wire::tcp::{TcpFlags, TcpRepr};
use std::net::SocketAddr;

pub(super) const MAX_OPTIONS: usize = 40;

impl Connection {
    /// DSS, address signals and MP_PRIO/MP_FAIL on an established subflow.
    pub(super) fn options_in(
        s: &mut ConnState,
        sf: &mut MptcpSubflow,
        seg: &TcpRepr,
        _now: Instant,
    ) {
        let window = match sf.sub.window_scale() {
            Some(ws) => (seg.window as u64) << ws.send,
            None => seg.window as u64,
        };
        let opts = &seg.options.mptcp;
        if sf.kind == SubflowKind::Initial
            && s.role == Role::Client
            && !sf.handshake.mpc_confirmed
            && !opts.is_empty()
            && opts.mp_capable().is_none()
        {
            // Fully established: the server has our key, so MP_JOINs will
            // find the token (RFC 8684 3.1).
            sf.handshake.mpc_confirmed = true;
            s.pending.path_manager = true;
        }
        for o in opts {
            match *o {
                MptcpOption::Dss(d) => {
                    if let Some(a) = d.data_ack {
                        s.on_data_ack(a, d.data_ack_wide, window);
                    }
                    if let Some(m) = d.mapping {
                        Self::mapping_in(s, sf, &d, &m);
                    }
                }
                MptcpOption::AddAddr(a) => {
                    // Each version takes its own form only: v0's has no HMAC.
                    if a.v0 != (s.version == Version::V0) {
                        s.bad_hmac += 1;
                        continue;
                    }
                    if a.echo {
                        for t in s.signals.add_addr.iter_mut() {
                            if t.id == a.addr_id {
                                t.tries = u32::MAX;
                                t.due = false;
                            }
                        }
                        s.signals.add_addr.retain(|t| t.tries != u32::MAX);
                        s.rearm_add_addr();
                        continue;
                    }
                    if !a.v0 {
                        let want = crypto::add_addr_hmac(
                            s.keys.remote().key,
                            s.keys.local.key,
                            a.addr_id,
                            a.addr,
                            a.port,
                        );
                        if a.hmac != Some(want) {
                            s.bad_hmac += 1;
                            continue;
                        }
                    }
                    let port = a
                        .port
                        .unwrap_or_else(|| s.signals.remotes.first().map_or(0, |r| r.addr.port()));
                    let sa = SocketAddr::new(a.addr, port);
                    if !s.signals.remotes.iter().any(|r| r.id == a.addr_id) {
                        s.signals.remotes.push(RemoteAddr {
                            id: a.addr_id,
                            addr: sa,
                        });
                        s.push_event(MptcpEvent::AddressAnnounced {
                            addr_id: a.addr_id,
                            addr: sa,
                        });
                        s.pending.path_manager = true;
                    }
                    if !a.v0 {
                        s.signals.echo_pending.push(AddAddrEcho {
                            id: a.addr_id,
                            addr: a.addr,
                            port: a.port,
                        });
                        sf.sub.request_ack();
                    }
                }
                MptcpOption::RemoveAddr(ids) => {
                    for &id in ids.as_slice() {
                        if s.signals.remotes.iter().any(|r| r.id == id) {
                            s.signals.remotes.retain(|r| r.id != id || id == 0);
                            s.push_event(MptcpEvent::AddressRemoved { addr_id: id });
                            s.remove_pending_ids_from_peer(id);
                        }
                    }
                }
                MptcpOption::MpCapable(mpc)
                    if sf.kind == SubflowKind::Initial && s.role == Role::Server =>
                {
                    // MP_CAPABLE with data after the handshake (the client
                    // had not heard from us yet): the first mapping.
                    if let Some(len) = mpc.data_len.filter(|&l| l > 0) {
                        let first = s.recv.syn_len;
                        if !sf.rx_maps.iter().any(|r| r.off == first)
                            && sf.sub.recv_offset() == first
                        {
                            sf.rx_maps.push_front(RxMapping {
                                off: first,
                                dsn: 0,
                                len: len as u64,
                                csum: mpc.checksum,
                                fin: false,
                            });
                        }
                    }
                }
                // v0 may name the (peer's) address whose subflows change.
                MptcpOption::MpPrio {
                    backup,
                    addr_id: Some(id),
                } if s.version == Version::V0 => s.pending.peer_prio.push((id, backup)),
                MptcpOption::MpPrio { backup, .. } if sf.peer_backup != backup => {
                    sf.peer_backup = backup;
                    s.push_monitor(super::Mon::Prio(sf.id));
                }
                MptcpOption::MpFastclose { receiver_key }
                    if receiver_key == s.keys.local.key && s.keys.remote.is_some() =>
                {
                    // On an ACK (v0, or RFC 8684's option A): the caller resets.
                    s.pending.fast_close = true;
                }
                MptcpOption::MpFail { .. } => {
                    // The peer found a bad checksum: with one subflow go on
                    // as plain TCP (infinite mapping), else drop this one.
                    s.pending.fall_back_send = true;
                }
                _ => {}
            }
        }
    }

    /// The MPTCP options of an outgoing segment: which suboptions go
    /// (and the pending signals they consume); [`build`] makes each one.
    pub(super) fn options_out(s: &mut ConnState, sf: &mut MptcpSubflow, seg: &mut TcpRepr) {
        let f = seg.flags;
        let push = |seg: &mut TcpRepr, o: MptcpOption| {
            let _ = seg.options.mptcp.push(o);
        };
        if f.contains(TcpFlags::RST) && s.version == Version::V0 {
            // v0 has no MP_TCPRST, and MP_FASTCLOSE goes on an ACK: the
            // first subflow to send its RST sends that ACK instead (the
            // peer answers with RSTs), the others plain RSTs.
            if s.lifecycle == (Lifecycle::Reset { by_peer: false })
                && !s.fastclose_sent
                && !s.fallback.is_tcp()
            {
                if let Some(peer) = s.keys.remote {
                    s.fastclose_sent = true;
                    seg.flags = TcpFlags::ACK;
                    push(seg, build::mp_fastclose(peer.key));
                }
            }
            return;
        }
        if f.contains(TcpFlags::RST) {
            // As Linux: MP_FASTCLOSE (when we abort the connection), then
            // MP_TCPRST with the reason.
            let reset = matches!(s.lifecycle, Lifecycle::Reset { .. }) && !s.fallback.is_tcp();
            if s.lifecycle == (Lifecycle::Reset { by_peer: false }) && reset {
                if let Some(peer) = s.keys.remote {
                    push(seg, build::mp_fastclose(peer.key));
                }
            }
            let reason = sf
                .end
                .rst_reason
                .or(reset.then_some(reset_reason::UNSPECIFIED));
            if let Some(r) = reason {
                push(seg, build::mp_tcprst(r));
            }
            return;
        }
        if f.contains(TcpFlags::SYN) {
            // The SYN's window (never scaled) is the peer's first flight:
            // within the receive-window budget too.
            let free = s.recv.free().min(u16::MAX as u64);
            seg.window = seg.window.min(free as u16);
            s.recv.advertise(u64::from(seg.window));
            if !s.fallback.is_tcp() {
                let o = match sf.kind {
                    SubflowKind::Initial => build::mp_capable_syn(s, f.contains(TcpFlags::ACK)),
                    SubflowKind::Join { .. } if f.contains(TcpFlags::ACK) => {
                        build::mp_join_synack(s, sf)
                    }
                    SubflowKind::Join { .. } => build::mp_join_syn(s, sf),
                };
                push(seg, o);
            }
            return;
        }
        if s.fallback.is_tcp() {
            return;
        }
        if let Some(linear) = s.fallback.linear_send() {
            let off = sf.sub.send_offset_of(seg.seq);
            let data_ack = s.fallback.linear_recv().is_none().then(|| s.data_ack_abs());
            if !seg.payload.is_empty() && off.is_some_and(|o| o >= linear.subflow_off) {
                // The infinite mapping on the first segment of the linear
                // part (and its retransmissions); nothing but a DATA_ACK
                // (while the peer's direction is mapped) on the others.
                let mapping =
                    (off == Some(linear.subflow_off)).then(|| build::infinite_mapping(s, linear));
                if mapping.is_some() || data_ack.is_some() {
                    let dss = Dss {
                        data_fin: false,
                        data_ack,
                        data_ack_wide: true,
                        mapping,
                    };
                    push(seg, MptcpOption::Dss(dss));
                }
                return;
            }
            if seg.payload.is_empty() && data_ack.is_none() {
                return;
            }
        }
        if sf.kind == SubflowKind::Initial
            && s.role == Role::Client
            && s.version == Version::V1
            && !sf.handshake.mpc_confirmed
            && !seg.payload.is_empty()
            && sf
                .sub
                .send_offset_of(seg.seq)
                .is_some_and(|o| o < sf.tx_maps.front().map_or(0, |m| m.len))
            && sf.tx_maps.front().is_some_and(|m| m.off == 0)
        {
            // When data rides on the third ACK, this is that ACK: Linux falls
            // back to TCP on a data segment whose MP_CAPABLE lacks data_len.
            sf.signals.third_ack = false;
            push(seg, build::mp_capable_ack(s, Some(&sf.tx_maps[0])));
            return;
        }
        // Until the peer shows it has the handshake (any MPTCP option from
        // it), our pure ACKs repeat the third-ACK option, as Linux does: a
        // lost third ACK is recovered by the peer's SYN/ACK retransmission.
        let unconfirmed = s.role == Role::Client
            && seg.payload.is_empty()
            && match sf.kind {
                SubflowKind::Initial => !sf.handshake.mpc_confirmed,
                SubflowKind::Join { .. } => sf.handshake.join_ack_sent && !sf.fully_established,
            };
        if sf.signals.third_ack || unconfirmed {
            sf.signals.third_ack = false;
            let o = match sf.kind {
                SubflowKind::Initial => {
                    if seg.payload.is_empty() {
                        // v0: data waits for this pure third ACK.
                        sf.fully_established = true;
                    }
                    build::mp_capable_ack(s, None)
                }
                SubflowKind::Join { .. } => {
                    sf.handshake.join_ack_sent = true;
                    build::mp_join_ack(s, sf)
                }
            };
            push(seg, o);
            return;
        }
        if s.keys.remote.is_none() {
            return;
        }
        // A DATA_FIN rides on a pure ACK: when this segment takes the ACK
        // it waits for (data, an address signal), ask for another, or it
        // would wait for its retransmission timer.
        let signal_first = !f.contains(TcpFlags::FIN)
            && (!s.signals.echo_pending.is_empty() || s.signals.add_addr.iter().any(|t| t.due));
        if sf.signals.data_fin
            && s.send.data_fin == DataFin::Pending
            && (!seg.payload.is_empty() || signal_first)
        {
            sf.sub.request_ack();
        }
        if sf.signals.mp_prio && !seg.payload.is_empty() {
            // MP_PRIO rides on a pure ACK: ask for one right after.
            sf.sub.request_ack();
        }
        if seg.payload.is_empty() && !f.contains(TcpFlags::FIN) {
            // Address signals ride alone on pure ACKs, as Linux does.
            if let Some(echo) = s.signals.echo_pending.pop() {
                push(seg, build::add_addr_echo(echo));
                return;
            }
            if let Some(t) = s.signals.add_addr.iter_mut().find(|t| t.due) {
                t.due = false;
                let t = *t;
                push(seg, build::add_addr(s, &t));
                return;
            }
            if let Some(id) = s.signals.remove_pending.take() {
                if let Some(o) = build::remove_addr(id) {
                    push(seg, o);
                }
            }
            if std::mem::take(&mut sf.signals.mp_prio) {
                push(seg, build::mp_prio(sf.backup || sf.peer_held));
            }
            if let Some(dsn) = sf.signals.mp_fail.take() {
                push(seg, build::mp_fail(dsn));
            }
        }
        let mut dss = build::data_ack(s);
        if !seg.payload.is_empty() {
            let off = sf.sub.send_offset_of(seg.seq);
            // Mappings are in subflow order: a binary search, not a walk
            // over all in flight.
            let m = off.and_then(|o| {
                let i = sf.tx_maps.partition_point(|m| m.off + m.len <= o);
                sf.tx_maps.get(i).filter(|m| m.off <= o)
            });
            dss.mapping = m.map(|m| build::mapping(s, m));
        } else if sf.signals.data_fin && s.send.data_fin == DataFin::Pending {
            sf.signals.data_fin = false;
            dss.data_fin = true;
            dss.mapping = Some(build::data_fin_mapping(s));
        }
        push(seg, MptcpOption::Dss(dss));
        // The connection-level window, relative to the DATA_ACK.
        let free = s.recv.free();
        let (scaled, shift) = match sf.sub.window_scale() {
            Some(ws) => (free >> ws.recv, ws.recv),
            None => (free, 0),
        };
        let offered = (u64::from(seg.window).min(scaled)) << shift;
        // The last edge sent (it may have shrunk under a memory limit).
        s.recv.advertise(offered);
        seg.window = seg.window.min(scaled.min(u16::MAX as u64) as u16);
        while seg.options.wire_len().map_or(true, |l| l > MAX_OPTIONS) && seg.options.sack.len > 0 {
            seg.options.sack.len -= 1;
        }
    }
}

/// One builder per suboption we send.
mod build {
    use super::super::keys::KeyMaterial;
    use super::super::send::TxMapping;
    use super::super::signals::{AddAddrEcho, AddAddrTx};
    use super::super::subflow::{MptcpSubflow, SubflowKind};
    use super::super::{ConnState, Linear};
    use crate::crypto::{self, Version};
    use crate::wire::mptcp::{AddAddr, AddrIds, Dss, DssMapping, MpCapable, MpJoin, MptcpOption};

    fn mpc_flags(s: &ConnState) -> u8 {
        MpCapable::FLAG_HMAC_SHA256
            | if s.checksum {
                MpCapable::FLAG_CHECKSUM
            } else {
                0
            }
    }

    /// MP_CAPABLE on the SYN (no key in v1; v0's carries the client's
    /// key already) or the SYN/ACK (ours).
    pub(super) fn mp_capable_syn(s: &ConnState, synack: bool) -> MptcpOption {
        // C: "no more subflows to this address and port" (RFC 8684 3.1).
        let deny = if synack && s.signals.deny_join_initial && s.version == Version::V1 {
            MpCapable::FLAG_NO_MORE_SUBFLOWS
        } else {
            0
        };
        MptcpOption::MpCapable(MpCapable {
            version: s.version.number(),
            flags: mpc_flags(s) | deny,
            sender_key: (synack || s.version == Version::V0).then_some(s.keys.local.key),
            ..Default::default()
        })
    }

    /// MP_CAPABLE on the third ACK: both keys, and the first mapping when
    /// data rides on it.
    pub(super) fn mp_capable_ack(s: &ConnState, data: Option<&TxMapping>) -> MptcpOption {
        MptcpOption::MpCapable(MpCapable {
            version: s.version.number(),
            flags: mpc_flags(s),
            sender_key: Some(s.keys.local.key),
            receiver_key: Some(s.keys.remote().key),
            data_len: data.map(|m| m.len as u16),
            checksum: data.and_then(|m| s.checksum.then_some(m.csum)),
        })
    }

    fn nonces(sf: &MptcpSubflow) -> (u32, u32) {
        match sf.kind {
            SubflowKind::Join {
                local_nonce,
                remote_nonce,
            } => (local_nonce, remote_nonce),
            SubflowKind::Initial => (0, 0),
        }
    }

    pub(super) fn mp_join_syn(s: &ConnState, sf: &MptcpSubflow) -> MptcpOption {
        MptcpOption::MpJoin(MpJoin::Syn {
            backup: sf.backup,
            addr_id: sf.local_addr_id,
            token: s.keys.remote().token,
            nonce: nonces(sf).0,
        })
    }

    pub(super) fn mp_join_synack(s: &ConnState, sf: &MptcpSubflow) -> MptcpOption {
        let (local_nonce, remote_nonce) = nonces(sf);
        let (ours, theirs) = (s.keys.local, s.keys.remote());
        MptcpOption::MpJoin(MpJoin::SynAck {
            backup: sf.backup,
            addr_id: sf.local_addr_id,
            hmac: s
                .version
                .join_synack_hmac(ours.key, theirs.key, local_nonce, remote_nonce),
            nonce: local_nonce,
        })
    }

    pub(super) fn mp_join_ack(s: &ConnState, sf: &MptcpSubflow) -> MptcpOption {
        let (local_nonce, remote_nonce) = nonces(sf);
        let (ours, theirs): (KeyMaterial, KeyMaterial) = (s.keys.local, s.keys.remote());
        MptcpOption::MpJoin(MpJoin::Ack {
            hmac: s
                .version
                .join_ack_hmac(ours.key, theirs.key, local_nonce, remote_nonce),
        })
    }

    /// A DSS with our DATA_ACK, 64 bits once the peer sent 64-bit DSNs.
    pub(super) fn data_ack(s: &ConnState) -> Dss {
        let wide = s.recv.peer_dsn64;
        Dss {
            data_fin: false,
            data_ack: Some(s.data_ack_abs() & if wide { u64::MAX } else { 0xffff_ffff }),
            data_ack_wide: wide,
            mapping: None,
        }
    }

    /// The mapping of data handed to the subflow.
    pub(super) fn mapping(s: &ConnState, m: &TxMapping) -> DssMapping {
        DssMapping {
            dsn: s.keys.local.dsn(m.dsn),
            dsn_wide: true,
            ssn: (m.off + 1) as u32,
            data_len: m.len as u16,
            checksum: s.checksum.then_some(m.csum),
        }
    }

    /// DATA_FIN alone, as Linux sends it: SSN 0, length 1.
    pub(super) fn data_fin_mapping(s: &ConnState) -> DssMapping {
        let dsn = s.keys.local.dsn(s.send.written);
        DssMapping {
            dsn,
            dsn_wide: true,
            ssn: 0,
            data_len: 1,
            checksum: s.checksum.then(|| crypto::dss_checksum(dsn, 0, 1, &[])),
        }
    }

    /// The infinite mapping (RFC 8684 3.7): length 0 from `linear` on.
    pub(super) fn infinite_mapping(s: &ConnState, linear: Linear) -> DssMapping {
        DssMapping {
            dsn: s.keys.local.dsn(linear.data_off),
            dsn_wide: true,
            ssn: (linear.subflow_off + 1) as u32,
            data_len: 0,
            checksum: s.checksum.then_some(0),
        }
    }

    pub(super) fn add_addr(s: &ConnState, t: &AddAddrTx) -> MptcpOption {
        let (ours, theirs) = (s.keys.local, s.keys.remote());
        let v0 = s.version == Version::V0;
        let hmac = (!v0).then(|| crypto::add_addr_hmac(ours.key, theirs.key, t.id, t.addr, t.port));
        MptcpOption::AddAddr(AddAddr {
            v0,
            echo: false,
            addr_id: t.id,
            addr: t.addr,
            port: t.port,
            hmac,
        })
    }

    pub(super) fn add_addr_echo(e: AddAddrEcho) -> MptcpOption {
        MptcpOption::AddAddr(AddAddr {
            v0: false,
            echo: true,
            addr_id: e.id,
            addr: e.addr,
            port: e.port,
            hmac: None,
        })
    }

    pub(super) fn remove_addr(id: u8) -> Option<MptcpOption> {
        AddrIds::from_slice(&[id]).ok().map(MptcpOption::RemoveAddr)
    }

    pub(super) fn mp_prio(backup: bool) -> MptcpOption {
        MptcpOption::MpPrio {
            backup,
            addr_id: None,
        }
    }

    pub(super) fn mp_fail(dsn: u64) -> MptcpOption {
        MptcpOption::MpFail { dsn }
    }

    pub(super) fn mp_fastclose(receiver_key: u64) -> MptcpOption {
        MptcpOption::MpFastclose { receiver_key }
    }

    pub(super) fn mp_tcprst(reason: u8) -> MptcpOption {
        MptcpOption::MpTcpRst { flags: 0, reason }
    }
}
