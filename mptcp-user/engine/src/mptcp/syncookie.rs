//! SYN cookies (RFC 4987) for plain TCP and MP_CAPABLE: when the half-open
//! queue is full, the SYN/ACK's sequence number carries what the SYN said
//! (MSS class, window scale, SACK) under a keyed hash of the 4-tuple, the
//! client's ISN and a 64-second time slot, and nothing is kept. The third
//! ACK proves the client got the SYN/ACK (it acknowledges the cookie) and,
//! for MPTCP, echoes both keys, so the connection can be built from it
//! alone (as Linux does, net/mptcp/syncookies.c; that our key comes back
//! from the client is fine: it only names the client's own connection,
//! and a token already in use is refused).
//!
//! Layout of the 32-bit cookie: 22 bits of hash, 2 bits of time slot, 2
//! bits of MSS class, 4 bits of window scale (15: none), 1 bit of SACK,
//! 1 spare bit (0).

use crate::tcp::FourTuple;
use crate::time::Instant;
use crate::wire::mptcp::{MpCapable, MptcpOption};
use crate::wire::tcp::{TcpFlags, TcpOptions, TcpRepr, Timestamps};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

/// MSS classes a cookie can say (the largest not above the client's).
const MSS_TABLE: [u16; 4] = [536, 1220, 1440, 1460];
const SLOT_NANOS: u64 = 64_000_000_000;
const NO_WSCALE: u8 = 15;

/// What a SYN said that the connection needs, recovered from its cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CookieSyn {
    pub mss: u16,
    pub window_scale: Option<u8>,
    pub sack: bool,
}

/// A SYN waiting for its cookie SYN/ACK: what is needed to answer it.
#[derive(Clone, Debug)]
pub(crate) struct PendingCookie {
    pub path: crate::io::PathId,
    pub tuple: FourTuple,
    pub seq: u32,
    pub window: u16,
    pub options: TcpOptions,
}

impl PendingCookie {
    pub fn from_syn(path: crate::io::PathId, tuple: FourTuple, syn: &TcpRepr) -> PendingCookie {
        PendingCookie {
            path,
            tuple,
            seq: syn.seq,
            window: syn.window,
            options: syn.options.clone(),
        }
    }

    /// The SYN again (options as received), to build a throwaway
    /// connection that writes the SYN/ACK.
    pub fn syn(&self) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.tuple.remote.port(),
            dst_port: self.tuple.local.port(),
            seq: self.seq,
            ack: 0,
            flags: TcpFlags::SYN,
            window: self.window,
            urgent: 0,
            options: self.options.clone(),
            payload: &[],
        }
    }
}

/// The cookie secret, derived from the endpoint's.
pub(crate) fn secret(endpoint_secret: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mptcp-user syn cookie");
    h.update(endpoint_secret);
    h.finalize().into()
}

fn feed(h: &mut Sha256, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => h.update(ip.octets()),
        IpAddr::V6(ip) => h.update(ip.octets()),
    }
    h.update(a.port().to_be_bytes());
}

fn hash22(secret: &[u8; 32], tuple: &FourTuple, client_isn: u32, slot: u64, bits: u8) -> u32 {
    let mut h = Sha256::new();
    h.update(secret);
    feed(&mut h, &tuple.local);
    feed(&mut h, &tuple.remote);
    h.update(client_isn.to_be_bytes());
    h.update(slot.to_be_bytes());
    h.update([bits]);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) >> 10
}

fn slot_of(now: Instant) -> u64 {
    now.as_nanos() / SLOT_NANOS
}

/// The cookie (our ISN) answering a SYN with sequence `client_isn` and
/// these options.
pub(crate) fn make(
    secret: &[u8; 32],
    tuple: &FourTuple,
    client_isn: u32,
    opts: &TcpOptions,
    now: Instant,
) -> u32 {
    let mss = opts.mss.unwrap_or(536);
    let class = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u8;
    let ws = opts.window_scale.map_or(NO_WSCALE, |w| w.min(14));
    let bits = (class << 6) | (ws << 2) | ((opts.sack_permitted as u8) << 1);
    let slot = slot_of(now);
    (hash22(secret, tuple, client_isn, slot, bits) << 10) | (((slot & 3) as u32) << 8) | bits as u32
}

/// Checks the cookie an ACK acknowledges (`ack - 1`) for a SYN whose
/// sequence was `seq - 1`; valid for the current and the previous slot.
pub(crate) fn check(
    secret: &[u8; 32],
    tuple: &FourTuple,
    ack_seg: &TcpRepr,
    now: Instant,
) -> Option<CookieSyn> {
    let cookie = ack_seg.ack.wrapping_sub(1);
    let client_isn = ack_seg.seq.wrapping_sub(1);
    let bits = (cookie & 0xff) as u8;
    if bits & 1 != 0 {
        return None;
    }
    let low = ((cookie >> 8) & 3) as u64;
    let now_slot = slot_of(now);
    let slot = [now_slot, now_slot.wrapping_sub(1)]
        .into_iter()
        .find(|s| s & 3 == low)?;
    if hash22(secret, tuple, client_isn, slot, bits) != cookie >> 10 {
        return None;
    }
    let ws = (bits >> 2) & 0xf;
    Some(CookieSyn {
        mss: MSS_TABLE[(bits >> 6) as usize],
        window_scale: (ws != NO_WSCALE).then_some(ws),
        sack: bits & 2 != 0,
    })
}

/// The SYN as the cookie and the third ACK describe it, to build the
/// connection from: MP_CAPABLE (with the checksum flag the ACK carries)
/// when the ACK echoes both keys, plain TCP otherwise.
pub(crate) fn rebuild_syn(ack_seg: &TcpRepr, c: CookieSyn) -> TcpRepr<'static> {
    let mut options = TcpOptions {
        mss: Some(c.mss),
        window_scale: c.window_scale,
        sack_permitted: c.sack,
        timestamps: ack_seg.options.timestamps.map(|t| Timestamps {
            tsval: t.tsval,
            tsecr: 0,
        }),
        ..Default::default()
    };
    if let Some(m) = ack_seg.options.mptcp.mp_capable() {
        if m.sender_key.is_some() && m.receiver_key.is_some() {
            let _ = options.mptcp.push(MptcpOption::MpCapable(MpCapable {
                version: m.version,
                flags: m.flags & (MpCapable::FLAG_CHECKSUM | 1),
                ..Default::default()
            }));
        }
    }
    TcpRepr {
        src_port: ack_seg.src_port,
        dst_port: ack_seg.dst_port,
        seq: ack_seg.seq.wrapping_sub(1),
        ack: 0,
        flags: TcpFlags::SYN,
        window: ack_seg.window,
        urgent: 0,
        options,
        payload: &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_checks_only_for_its_syn_and_time() {
        let s = secret(&[7; 32]);
        let t = FourTuple {
            local: "10.0.0.2:80".parse().unwrap(),
            remote: "10.0.0.1:4000".parse().unwrap(),
        };
        let opts = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            ..Default::default()
        };
        let now = Instant::from_nanos(100 * SLOT_NANOS + 5);
        let isn = 0xdead_beef;
        let cookie = make(&s, &t, isn, &opts, now);
        let ack = TcpRepr {
            src_port: 4000,
            dst_port: 80,
            seq: isn.wrapping_add(1),
            ack: cookie.wrapping_add(1),
            flags: TcpFlags::ACK,
            window: 500,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        };
        let want = CookieSyn {
            mss: 1460,
            window_scale: Some(7),
            sack: true,
        };
        assert_eq!(check(&s, &t, &ack, now), Some(want));
        // Still good in the next slot, not two slots later.
        let later = Instant::from_nanos(101 * SLOT_NANOS + 5);
        assert_eq!(check(&s, &t, &ack, later), Some(want));
        let too_late = Instant::from_nanos(102 * SLOT_NANOS + 5);
        assert_eq!(check(&s, &t, &ack, too_late), None);
        // Another tuple, another client ISN, another secret, a flipped bit.
        let other = FourTuple {
            remote: "10.0.0.1:4001".parse().unwrap(),
            ..t
        };
        assert_eq!(check(&s, &other, &ack, now), None);
        let mut a2 = ack.clone();
        a2.seq = a2.seq.wrapping_add(1);
        assert_eq!(check(&s, &t, &a2, now), None);
        assert_eq!(check(&secret(&[8; 32]), &t, &ack, now), None);
        for bit in 0..32 {
            let mut a3 = ack.clone();
            a3.ack ^= 1 << bit;
            assert_eq!(check(&s, &t, &a3, now), None, "bit {bit}");
        }
        // No window scale and an odd MSS round down to a class.
        let opts = TcpOptions {
            mss: Some(1400),
            ..Default::default()
        };
        let mut a4 = ack.clone();
        a4.ack = make(&s, &t, isn, &opts, now).wrapping_add(1);
        let got = check(&s, &t, &a4, now).unwrap();
        assert_eq!((got.mss, got.window_scale, got.sack), (1220, None, false));
    }
}
