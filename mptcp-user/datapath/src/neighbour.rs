//! The neighbour table of one path: IP -> MAC, learnt from every received
//! frame (weak host model: replies go back to the neighbour a subflow came
//! from) and from the kernel's tables (netlink) for connections we open.

use std::collections::HashMap;
use std::net::IpAddr;

use mptcp_engine::wire::ethernet::MacAddr;

/// Neighbours remembered per generation. A server hears from thousands of
/// clients (and a SYN flood from thousands of spoofed sources): lookups are
/// O(1), and the table is bounded by two generations: when the current one
/// fills, it becomes the previous one and the oldest is forgotten, so a
/// neighbour heard from recently is always found.
const NEIGHBOURS: usize = 4096;

/// Packets held while their next hop is resolved, per path (the kernel's
/// `unres_qlen`): the first SYN of a subflow towards a neighbour never
/// heard from leaves once ARP/NDP answers, not a retransmission timeout
/// (1 s) later. Beyond this, packets are dropped and counted.
pub const PENDING: usize = 8;

/// IP -> MAC for one path, learnt from received frames and netlink.
#[derive(Clone, Debug, Default)]
pub struct NeighbourTable {
    current: HashMap<IpAddr, MacAddr>,
    previous: HashMap<IpAddr, MacAddr>,
    /// Used when a destination was never heard from (the resolved next hop).
    pub default: Option<MacAddr>,
    pub(crate) last_resolution: Option<std::time::Instant>,
    pub(crate) last_probe: Option<std::time::Instant>,
    /// IP packets waiting for their next hop's MAC (resolved off the fast path).
    pub(crate) pending: Vec<(IpAddr, std::time::Instant, Vec<u8>)>,
}

impl NeighbourTable {
    pub fn new() -> NeighbourTable {
        NeighbourTable {
            current: HashMap::with_capacity(NEIGHBOURS),
            previous: HashMap::with_capacity(NEIGHBOURS),
            default: None,
            last_resolution: None,
            last_probe: None,
            pending: Vec::new(),
        }
    }

    /// True while packets wait for a next hop to be resolved.
    pub fn resolving(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Holds the IP packet `ip` for `dst` until its MAC is known; false
    /// when the queue is full (the packet is dropped).
    pub fn hold(&mut self, dst: IpAddr, ip: &[u8]) -> bool {
        if self.pending.len() >= PENDING {
            return false;
        }
        // Off the steady-state path: only while a next hop is unresolved.
        self.pending
            .push((dst, std::time::Instant::now(), ip.to_vec()));
        true
    }

    pub fn learn(&mut self, ip: IpAddr, mac: MacAddr) {
        if let Some(m) = self.current.get_mut(&ip) {
            *m = mac;
            return;
        }
        if self.current.len() >= NEIGHBOURS {
            // Capacities are kept: no allocation once both are warm.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(ip, mac);
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<MacAddr> {
        self.current
            .get(&ip)
            .or_else(|| self.previous.get(&ip))
            .copied()
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn neighbour_table_learns_updates_and_evicts() {
        let mut t = NeighbourTable::new();
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        assert_eq!(t.lookup(a), None);
        t.default = Some(MacAddr([9; 6]));
        assert_eq!(t.lookup(a), Some(MacAddr([9; 6])));
        t.learn(a, MacAddr([1; 6]));
        assert_eq!(t.lookup(a), Some(MacAddr([1; 6])));
        t.learn(a, MacAddr([2; 6]));
        assert_eq!(t.lookup(a), Some(MacAddr([2; 6])));
        // A full generation later it is still known (previous generation)...
        for i in 0..NEIGHBOURS as u32 - 1 {
            t.learn(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)), MacAddr([3; 6]));
        }
        assert_eq!(t.lookup(a), Some(MacAddr([2; 6])));
        // ...heard from again, it is current; never heard from, forgotten.
        t.learn(a, MacAddr([4; 6]));
        for i in 0..2 * NEIGHBOURS as u32 {
            t.learn(IpAddr::V4(Ipv4Addr::from(0x0c00_0000 + i)), MacAddr([3; 6]));
        }
        assert_eq!(t.lookup(a), Some(MacAddr([9; 6])));
        assert!(t.current.len() <= NEIGHBOURS && t.previous.len() <= NEIGHBOURS);
    }

    #[test]
    fn packets_wait_for_their_next_hop_in_a_bounded_queue() {
        let mut t = NeighbourTable::new();
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        for i in 0..PENDING {
            assert!(t.hold(a, &[i as u8; 40]), "packet {i}");
        }
        assert!(t.resolving());
        assert!(!t.hold(a, &[0; 40]), "the queue is bounded");
        assert_eq!(t.pending.len(), PENDING);
    }
}
