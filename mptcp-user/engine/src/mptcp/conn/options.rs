//! MPTCP options: the parser of every option on an incoming segment and
//! the builder of the options on an outgoing one.

use super::recv::RxMap;
use super::subflow::{Kind, Sf};
use super::{reset_reason, Connection, Role, Shared};
use crate::crypto;
use crate::mptcp::api::*;
use crate::time::Instant;
use crate::wire::mptcp::{AddAddr, AddrIds, Dss, DssMapping, MpCapable, MpJoin, MptcpOption};
use crate::wire::tcp::{TcpFlags, TcpRepr};
use std::net::SocketAddr;

pub(super) const MAX_OPTIONS: usize = 40;

impl Connection {
    /// DSS, address signals and MP_PRIO/MP_FAIL on an established subflow.
    pub(super) fn options_in(s: &mut Shared, sf: &mut Sf, seg: &TcpRepr, _now: Instant) {
        let window = match sf.sub.negotiated().2 {
            Some((snd_ws, _)) => (seg.window as u64) << snd_ws,
            None => seg.window as u64,
        };
        let opts = &seg.options.mptcp;
        if sf.kind == Kind::Capable
            && s.role == Role::Client
            && !sf.mpc_confirmed
            && !opts.is_empty()
            && opts.mp_capable().is_none()
        {
            // Fully established: the server has our key, so MP_JOINs will
            // find the token (RFC 8684 3.1).
            sf.mpc_confirmed = true;
            s.pm_dirty = true;
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
                    if a.echo {
                        for t in s.add_addr.iter_mut() {
                            if t.id == a.addr_id {
                                t.tries = u32::MAX;
                                t.due = false;
                            }
                        }
                        s.add_addr.retain(|t| t.tries != u32::MAX);
                        continue;
                    }
                    let want =
                        crypto::add_addr_hmac(s.remote_key, s.local_key, a.addr_id, a.addr, a.port);
                    if a.hmac != Some(want) {
                        s.bad_hmac += 1;
                        continue;
                    }
                    let port = a
                        .port
                        .unwrap_or_else(|| s.remotes.first().map_or(0, |r| r.1.port()));
                    let sa = SocketAddr::new(a.addr, port);
                    if !s.remotes.iter().any(|r| r.0 == a.addr_id) {
                        s.remotes.push((a.addr_id, sa));
                        s.push_event(MptcpEvent::AddressAnnounced {
                            addr_id: a.addr_id,
                            addr: sa,
                        });
                        s.pm_dirty = true;
                    }
                    s.echo_pending.push((a.addr_id, a.addr, a.port));
                    sf.sub.request_ack();
                }
                MptcpOption::RemoveAddr(ids) => {
                    for &id in ids.as_slice() {
                        if s.remotes.iter().any(|r| r.0 == id) {
                            s.remotes.retain(|r| r.0 != id || id == 0);
                            s.push_event(MptcpEvent::AddressRemoved { addr_id: id });
                            s.remove_pending_ids_from_peer(id);
                        }
                    }
                }
                MptcpOption::MpCapable(mpc)
                    if sf.kind == Kind::Capable && s.role == Role::Server =>
                {
                    // MP_CAPABLE with data after the handshake (the client
                    // had not heard from us yet): the first mapping.
                    if let Some(len) = mpc.data_len.filter(|&l| l > 0) {
                        if !sf.rx.iter().any(|r| r.off == 0) && sf.sub.recv_offset() == 0 {
                            sf.rx.push_front(RxMap {
                                off: 0,
                                dsn: 0,
                                len: len as u64,
                                csum: mpc.checksum,
                                fin: false,
                            });
                        }
                    }
                }
                MptcpOption::MpPrio { backup, .. } if sf.peer_backup != backup => {
                    sf.peer_backup = backup;
                    s.push_monitor(super::Mon::Prio(sf.id));
                }
                MptcpOption::MpFail { .. } => {
                    // The peer found a bad checksum: with one subflow go on
                    // as plain TCP (infinite mapping), else drop this one.
                    s.fail_received = true;
                }
                _ => {}
            }
        }
    }

    pub(super) fn options_out(s: &mut Shared, sf: &mut Sf, seg: &mut TcpRepr) {
        let f = seg.flags;
        let push = |seg: &mut TcpRepr, o: MptcpOption| {
            let _ = seg.options.mptcp.push(o);
        };
        if f.contains(TcpFlags::RST) {
            // As Linux: MP_FASTCLOSE (when we abort the connection), then
            // MP_TCPRST with the reason.
            if s.reset && !s.fast_closed && s.remote_key_known && !s.fallback {
                push(
                    seg,
                    MptcpOption::MpFastclose {
                        receiver_key: s.remote_key,
                    },
                );
            }
            let reason = sf
                .rst_reason
                .or((s.reset && !s.fallback).then_some(reset_reason::UNSPECIFIED));
            if let Some(r) = reason {
                push(
                    seg,
                    MptcpOption::MpTcpRst {
                        flags: 0,
                        reason: r,
                    },
                );
            }
            return;
        }
        let flags = MpCapable::FLAG_HMAC_SHA256
            | if s.checksum {
                MpCapable::FLAG_CHECKSUM
            } else {
                0
            };
        if f.contains(TcpFlags::SYN) {
            if s.fallback {
                return;
            }
            let synack = f.contains(TcpFlags::ACK);
            let o = match (sf.kind, synack) {
                (Kind::Capable, false) => MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags,
                    ..Default::default()
                }),
                (Kind::Capable, true) => MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags,
                    sender_key: Some(s.local_key),
                    ..Default::default()
                }),
                (Kind::Join { local_nonce, .. }, false) => MptcpOption::MpJoin(MpJoin::Syn {
                    backup: sf.backup,
                    addr_id: sf.local_id,
                    token: s.remote_token,
                    nonce: local_nonce,
                }),
                (
                    Kind::Join {
                        local_nonce,
                        remote_nonce,
                    },
                    true,
                ) => MptcpOption::MpJoin(MpJoin::SynAck {
                    backup: sf.backup,
                    addr_id: sf.local_id,
                    hmac: crypto::join_synack_hmac(
                        s.local_key,
                        s.remote_key,
                        local_nonce,
                        remote_nonce,
                    ),
                    nonce: local_nonce,
                }),
            };
            push(seg, o);
            return;
        }
        if s.fallback {
            return;
        }
        if let Some((_, fsub, fdsn)) = s.tx_fb {
            let off = sf.sub.send_offset_of(seg.seq);
            let data_ack = s.rx_fb.is_none().then(|| s.data_ack_abs());
            if !seg.payload.is_empty() && off.is_some_and(|o| o >= fsub) {
                // The infinite mapping on the first segment of the linear
                // part (and its retransmissions); nothing but a DATA_ACK
                // (while the peer's direction is mapped) on the others.
                let mapping = (off == Some(fsub)).then(|| DssMapping {
                    dsn: s.local_idsn.wrapping_add(1).wrapping_add(fdsn),
                    dsn_wide: true,
                    ssn: (fsub + 1) as u32,
                    data_len: 0,
                    checksum: s.checksum.then_some(0),
                });
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
        if sf.kind == Kind::Capable
            && s.role == Role::Client
            && !sf.mpc_confirmed
            && !seg.payload.is_empty()
            && sf
                .sub
                .send_offset_of(seg.seq)
                .is_some_and(|o| o < sf.tx.front().map_or(0, |m| m.len))
            && sf.tx.front().is_some_and(|m| m.off == 0)
        {
            // When data rides on the third ACK, this is that ACK: Linux falls
            // back to TCP on a data segment whose MP_CAPABLE lacks data_len.
            sf.third_ack_pending = false;
            let m = sf.tx[0];
            push(
                seg,
                MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags,
                    sender_key: Some(s.local_key),
                    receiver_key: Some(s.remote_key),
                    data_len: Some(m.len as u16),
                    checksum: s.checksum.then_some(m.csum),
                }),
            );
            return;
        }
        // Until the peer shows it has the handshake (any MPTCP option from
        // it), our pure ACKs repeat the third-ACK option, as Linux does: a
        // lost third ACK is recovered by the peer's SYN/ACK retransmission.
        let unconfirmed = s.role == Role::Client
            && seg.payload.is_empty()
            && match sf.kind {
                Kind::Capable => !sf.mpc_confirmed,
                Kind::Join { .. } => sf.join_ack_sent && !sf.fully,
            };
        if sf.third_ack_pending || unconfirmed {
            sf.third_ack_pending = false;
            let o = match sf.kind {
                Kind::Capable => MptcpOption::MpCapable(MpCapable {
                    version: 1,
                    flags,
                    sender_key: Some(s.local_key),
                    receiver_key: Some(s.remote_key),
                    ..Default::default()
                }),
                Kind::Join {
                    local_nonce,
                    remote_nonce,
                } => {
                    sf.join_ack_sent = true;
                    MptcpOption::MpJoin(MpJoin::Ack {
                        hmac: crypto::join_ack_hmac(
                            s.local_key,
                            s.remote_key,
                            local_nonce,
                            remote_nonce,
                        ),
                    })
                }
            };
            push(seg, o);
            return;
        }
        if !s.remote_key_known {
            return;
        }
        if seg.payload.is_empty() && !f.contains(TcpFlags::FIN) {
            // Address signals ride alone on pure ACKs, as Linux does.
            if let Some((id, addr, port)) = s.echo_pending.pop() {
                push(
                    seg,
                    MptcpOption::AddAddr(AddAddr {
                        echo: true,
                        addr_id: id,
                        addr,
                        port,
                        hmac: None,
                    }),
                );
                return;
            }
            if let Some(t) = s.add_addr.iter_mut().find(|t| t.due) {
                t.due = false;
                let hmac = crypto::add_addr_hmac(s.local_key, s.remote_key, t.id, t.addr, None);
                push(
                    seg,
                    MptcpOption::AddAddr(AddAddr {
                        echo: false,
                        addr_id: t.id,
                        addr: t.addr,
                        port: None,
                        hmac: Some(hmac),
                    }),
                );
                return;
            }
            if let Some(id) = s.remove_pending.take() {
                if let Ok(ids) = AddrIds::from_slice(&[id]) {
                    push(seg, MptcpOption::RemoveAddr(ids));
                }
            }
            if sf.prio_pending {
                sf.prio_pending = false;
                push(
                    seg,
                    MptcpOption::MpPrio {
                        backup: sf.backup,
                        addr_id: None,
                    },
                );
            }
            if let Some(dsn) = sf.fail_pending.take() {
                push(seg, MptcpOption::MpFail { dsn });
            }
        }
        let mut dss = Dss {
            data_fin: false,
            data_ack: Some(s.data_ack_abs() & if s.peer_dsn64 { u64::MAX } else { 0xffff_ffff }),
            data_ack_wide: s.peer_dsn64,
            mapping: None,
        };
        if !seg.payload.is_empty() {
            let off = sf.sub.send_offset_of(seg.seq);
            let m = off.and_then(|o| {
                sf.tx
                    .iter()
                    .find(|m| m.off <= o && o < m.off + m.len)
                    .copied()
            });
            if let Some(m) = m {
                dss.mapping = Some(DssMapping {
                    dsn: s.local_idsn.wrapping_add(1).wrapping_add(m.dsn),
                    dsn_wide: true,
                    ssn: (m.off + 1) as u32,
                    data_len: m.len as u16,
                    checksum: s.checksum.then_some(m.csum),
                });
            }
        } else if sf.data_fin_pending && s.close_requested && !s.data_fin_acked {
            sf.data_fin_pending = false;
            let dsn = s.local_idsn.wrapping_add(1).wrapping_add(s.snd_written);
            dss.data_fin = true;
            dss.mapping = Some(DssMapping {
                dsn,
                dsn_wide: true,
                ssn: 0,
                data_len: 1,
                checksum: s.checksum.then(|| crypto::dss_checksum(dsn, 0, 1, &[])),
            });
        }
        push(seg, MptcpOption::Dss(dss));
        // The connection-level window, relative to the DATA_ACK.
        let free = s.rcv_free();
        let scaled = match sf.sub.negotiated().2 {
            Some((_, rcv_ws)) => free >> rcv_ws,
            None => free,
        };
        seg.window = seg.window.min(scaled.min(u16::MAX as u64) as u16);
        while seg.options.wire_len().map_or(true, |l| l > MAX_OPTIONS) && seg.options.sack.len > 0 {
            seg.options.sack.len -= 1;
        }
    }
}
