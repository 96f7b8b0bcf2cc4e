//! The classifier's affinity maps seen from a worker: which worker owns a
//! subflow (TUPLES, by the 4-tuple its segments arrive with) and a
//! connection (TOKENS, by our token, for MP_JOIN SYNs). A worker writes them
//! when its engine files or forgets a tuple or a token: a syscall per
//! subflow or connection (per interface), never per packet.
//!
//! Raw `bpf(2)` on descriptors duplicated from each interface's classifier,
//! so every worker holds its own handle and the loaded objects stay with
//! their owner.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use mptcp_common::TupleKey;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// `union bpf_attr` for the element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf_elem(cmd: libc::c_long, fd: &OwnedFd, key: *const u8, value: *const u8) -> bool {
    let attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key as u64,
        value: value as u64,
        flags: 0, // BPF_ANY
    };
    // SAFETY: a valid attr for the command; key and value outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>() as u32,
        )
    };
    if r != 0 && std::env::var_os("MPTCP_DEBUG_AFFINITY").is_some() {
        eprintln!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    r == 0
}

/// The map key of a subflow with local address `local` and peer `remote`.
pub fn tuple_key(local: SocketAddr, remote: SocketAddr) -> TupleKey {
    let mut key = TupleKey {
        remote_port: remote.port(),
        local_port: local.port(),
        ..TupleKey::default()
    };
    match (remote.ip(), local.ip()) {
        (IpAddr::V4(r), IpAddr::V4(l)) => {
            key.family = 4;
            key.remote[..4].copy_from_slice(&r.octets());
            key.local[..4].copy_from_slice(&l.octets());
        }
        (r, l) => {
            key.family = 6;
            key.remote = match r {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            key.local = match l {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
        }
    }
    key
}

/// What the map writes did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityCounters {
    pub updates: u64,
    pub deletes: u64,
    /// Writes the kernel refused (a full map): that subflow's segments go
    /// to whichever worker receives them.
    pub failed: u64,
}

/// One worker's handles on the affinity maps of every interface.
pub struct AffinityMaps {
    /// (TUPLES, TOKENS) per interface.
    maps: Vec<(OwnedFd, OwnedFd)>,
    worker: u32,
    pub counters: AffinityCounters,
}

impl AffinityMaps {
    pub fn new(maps: Vec<(OwnedFd, OwnedFd)>, worker: u32) -> AffinityMaps {
        AffinityMaps {
            maps,
            worker,
            counters: AffinityCounters::default(),
        }
    }

    pub fn worker(&self) -> u32 {
        self.worker
    }

    fn write(&mut self, cmd: libc::c_long, tokens: bool, key: *const u8) {
        // The kernel wants every field past the key zero for a delete.
        let value = if cmd == BPF_MAP_DELETE_ELEM {
            std::ptr::null()
        } else {
            &self.worker as *const u32 as *const u8
        };
        for (t, k) in &self.maps {
            let fd = if tokens { k } else { t };
            let ok = bpf_elem(cmd, fd, key, value);
            match (ok, cmd) {
                (true, BPF_MAP_UPDATE_ELEM) => self.counters.updates += 1,
                (true, _) => self.counters.deletes += 1,
                // Deleting what another worker already replaced is fine.
                (false, BPF_MAP_DELETE_ELEM) => {}
                (false, _) => self.counters.failed += 1,
            }
        }
    }

    /// This worker owns the subflow `local` <- `remote`.
    pub fn own_tuple(&mut self, local: SocketAddr, remote: SocketAddr) {
        let key = tuple_key(local, remote);
        self.write(
            BPF_MAP_UPDATE_ELEM,
            false,
            &key as *const TupleKey as *const u8,
        );
    }

    pub fn forget_tuple(&mut self, local: SocketAddr, remote: SocketAddr) {
        let key = tuple_key(local, remote);
        self.write(
            BPF_MAP_DELETE_ELEM,
            false,
            &key as *const TupleKey as *const u8,
        );
    }

    /// This worker owns the connection whose token (ours) is `token`.
    pub fn own_token(&mut self, token: u32) {
        self.write(BPF_MAP_UPDATE_ELEM, true, &token as *const u32 as *const u8);
    }

    pub fn forget_token(&mut self, token: u32) {
        self.write(BPF_MAP_DELETE_ELEM, true, &token as *const u32 as *const u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_families_apart() {
        let v4 = tuple_key(
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:4000".parse().unwrap(),
        );
        assert_eq!(v4.family, 4);
        assert_eq!(&v4.local[..4], &[10, 0, 0, 1]);
        assert_eq!(&v4.remote[..4], &[10, 0, 0, 2]);
        assert_eq!(v4.local[4..], [0; 12]);
        assert_eq!((v4.local_port, v4.remote_port), (80, 4000));
        let v6 = tuple_key(
            "[fd00::1]:80".parse().unwrap(),
            "[fd00::2]:1".parse().unwrap(),
        );
        assert_eq!(v6.family, 6);
        assert_eq!(v6.remote[15], 2);
        assert_ne!(v4, v6);
    }
}
