//! Keys, tokens and IDSNs of both ends, and the handshakes that carry
//! and check them: MP_CAPABLE and MP_JOIN with its HMACs (RFC 8684 3.1,
//! 3.2).

use super::recv::RxMapping;
use super::subflow::{MptcpSubflow, SubflowKind};
use super::{reset_reason, ConnState, Connection, Fallback};
use crate::crypto::Version;
use crate::mptcp::api::{FallbackReason, MptcpEvent, SubflowCloseReason};
use crate::tcp::State;
use crate::time::Instant;
use crate::wire::mptcp::{MpCapable, MpJoin};
use crate::wire::tcp::{TcpFlags, TcpRepr};

/// A key and what derives from it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct KeyMaterial {
    pub(super) key: u64,
    /// Names the connection in MP_JOIN SYNs.
    pub(super) token: u32,
    /// Initial data sequence number: data offset 0 is IDSN + 1.
    pub(super) idsn: u64,
}

impl KeyMaterial {
    fn from_key(version: Version, key: u64) -> KeyMaterial {
        KeyMaterial {
            key,
            token: version.token(key),
            idsn: version.idsn(key),
        }
    }

    /// The 64-bit data sequence number of data offset `off`.
    pub(super) fn dsn(&self, off: u64) -> u64 {
        self.idsn.wrapping_add(1).wrapping_add(off)
    }
}

#[derive(Debug)]
pub(super) struct Keys {
    pub(super) local: KeyMaterial,
    /// The peer's, once its MP_CAPABLE carried it.
    pub(super) remote: Option<KeyMaterial>,
}

impl Keys {
    pub(super) fn new(version: Version, local_key: u64) -> Keys {
        Keys {
            local: KeyMaterial::from_key(version, local_key),
            remote: None,
        }
    }

    /// The peer's key material, zeros until it is known (HMACs computed
    /// with it then fail to verify, as before the key arrived).
    pub(super) fn remote(&self) -> KeyMaterial {
        self.remote.unwrap_or_default()
    }
}

impl ConnState {
    pub(super) fn set_remote_key(&mut self, key: u64) {
        self.keys.remote = Some(KeyMaterial::from_key(self.version, key));
    }
}

/// The 64-bit value nearest `near` whose low 32 bits are `v` (a DSN or
/// DATA_ACK sent in 32 bits), or `v` itself when `wide`.
pub(super) fn expand_dsn(v: u64, wide: bool, near: u64) -> u64 {
    if wide {
        return v;
    }
    let cand = (near & !0xffff_ffff) | (v & 0xffff_ffff);
    [cand, cand.wrapping_add(1 << 32), cand.wrapping_sub(1 << 32)]
        .into_iter()
        .min_by_key(|c| c.wrapping_sub(near).min(near.wrapping_sub(*c)))
        .unwrap_or(cand)
}

impl Connection {
    /// The handshake options of a segment on a subflow still handshaking:
    /// keys, MP_JOIN HMACs, fallback. Returns whether the segment still
    /// goes to the TCP subflow (false when already fed or dropped).
    pub(super) fn handshake_in(
        s: &mut ConnState,
        sf: &mut MptcpSubflow,
        seg: &TcpRepr,
        now: Instant,
    ) -> bool {
        let f = seg.flags;
        let opts = &seg.options.mptcp;
        let mut feed = true;
        let state = sf.sub.state();
        match (state, sf.kind) {
            (State::SynSent, SubflowKind::Initial) if f.contains(TcpFlags::SYN | TcpFlags::ACK) => {
                match opts.mp_capable() {
                    Some(mpc)
                        if mpc.version == s.version.number()
                            && mpc.sender_key.is_some()
                            && !s.fallback.is_tcp() =>
                    {
                        s.set_remote_key(mpc.sender_key.unwrap_or(0));
                        s.checksum = s.settings.checksum_wanted || mpc.checksum_required();
                        // v0 (RFC 6824) has no C flag: the bit is reserved.
                        s.signals.peer_denies_join_initial = s.version == Version::V1
                            && mpc.flags & MpCapable::FLAG_NO_MORE_SUBFLOWS != 0;
                        sf.signals.third_ack = true;
                    }
                    _ => {
                        if !s.fallback.is_tcp() {
                            s.fallback = Fallback::Tcp;
                            s.fall_back(FallbackReason::SynAckWithoutMpCapable);
                            sf.sub.set_option_reserve(0);
                            s.push_event(MptcpEvent::FellBackToTcp);
                        }
                    }
                }
            }
            (State::SynSent, SubflowKind::Join { local_nonce, .. })
                if f.contains(TcpFlags::SYN | TcpFlags::ACK) =>
            {
                let ok = match opts.mp_join() {
                    Some(&MpJoin::SynAck {
                        backup,
                        addr_id,
                        hmac,
                        nonce,
                    }) => {
                        let want = s.version.join_synack_hmac(
                            s.keys.remote().key,
                            s.keys.local.key,
                            nonce,
                            local_nonce,
                        );
                        if want == hmac {
                            sf.kind = SubflowKind::Join {
                                local_nonce,
                                remote_nonce: nonce,
                            };
                            sf.peer_backup = backup;
                            sf.remote_addr_id = addr_id;
                            sf.signals.third_ack = true;
                            true
                        } else {
                            false
                        }
                    }
                    _ => false,
                };
                if !ok {
                    s.bad_hmac += 1;
                    sf.sub.on_segment(now, seg);
                    sf.end.rst_reason = Some(reset_reason::MPTCP_ERROR);
                    sf.end.reason = Some(SubflowCloseReason::BadHmac);
                    sf.sub.abort();
                    feed = false;
                }
            }
            (State::SynReceived, SubflowKind::Initial)
                if f.contains(TcpFlags::ACK) && !s.fallback.is_tcp() =>
            {
                match opts.mp_capable() {
                    // v0: the client's key came in the SYN and must not change.
                    Some(mpc)
                        if mpc.sender_key.is_some()
                            && mpc.receiver_key == Some(s.keys.local.key)
                            && (s.version == Version::V1
                                || mpc.sender_key == s.keys.remote.map(|r| r.key)) =>
                    {
                        s.set_remote_key(mpc.sender_key.unwrap_or(0));
                        sf.fully_established = true;
                        if let Some(len) = mpc.data_len.filter(|&l| l > 0) {
                            // MP_CAPABLE with data: DSN IDSN+1, SSN 1.
                            sf.rx_maps.push_back(RxMapping {
                                off: s.recv.syn_len,
                                dsn: 0,
                                len: len as u64,
                                csum: mpc.checksum,
                                fin: false,
                            });
                        }
                    }
                    // v0: the third ACK was lost, and this (a DSS) is
                    // the client's next segment; we have its key already.
                    None if s.version == Version::V0 && opts.dss().is_some() => {
                        sf.fully_established = true;
                    }
                    // The third ACK was lost and this segment is not the
                    // first data one: wait for that one's retransmission.
                    _ if !opts.is_empty() => {
                        feed = false;
                    }
                    _ => {
                        // The third ACK lost its option: go on as plain TCP.
                        s.fallback = Fallback::Tcp;
                        s.fall_back(FallbackReason::AckWithoutMpCapable);
                        sf.sub.set_option_reserve(0);
                        s.push_event(MptcpEvent::FellBackToTcp);
                    }
                }
            }
            (
                State::SynReceived,
                SubflowKind::Join {
                    local_nonce,
                    remote_nonce,
                },
            ) if f.contains(TcpFlags::ACK) => {
                let want = s.version.join_ack_hmac(
                    s.keys.remote().key,
                    s.keys.local.key,
                    remote_nonce,
                    local_nonce,
                );
                match opts.mp_join() {
                    Some(MpJoin::Ack { hmac }) if *hmac == want => {
                        sf.sub.on_segment(now, seg);
                        // RFC 8684 3.2: the third ACK is acknowledged.
                        sf.sub.request_ack();
                        sf.fully_established = true;
                        feed = false;
                    }
                    _ => {
                        s.bad_hmac += 1;
                        sf.sub.on_segment(now, seg);
                        sf.end.rst_reason = Some(reset_reason::MPTCP_ERROR);
                        sf.end.reason = Some(SubflowCloseReason::BadHmac);
                        sf.end.announced_established = true;
                        sf.end.announced_closed = true;
                        sf.sub.abort();
                        feed = false;
                    }
                }
            }
            _ => {}
        }
        feed
    }
}
