//! Keys, tokens and IDSNs of both ends (RFC 8684 3.1, 3.2).

use super::ConnState;
use crate::crypto;

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
    fn from_key(key: u64) -> KeyMaterial {
        KeyMaterial {
            key,
            token: crypto::token(key),
            idsn: crypto::idsn(key),
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
    pub(super) fn new(local_key: u64) -> Keys {
        Keys {
            local: KeyMaterial::from_key(local_key),
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
        self.keys.remote = Some(KeyMaterial::from_key(key));
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
