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

/// IP -> MAC for one path, learnt from received frames and netlink.
#[derive(Clone, Debug, Default)]
pub struct NeighbourTable {
    current: HashMap<IpAddr, MacAddr>,
    previous: HashMap<IpAddr, MacAddr>,
    /// Used when a destination was never heard from (the resolved next hop).
    pub default: Option<MacAddr>,
    /// A destination we had a packet for but no MAC (resolved off the fast path).
    pub missing: Option<IpAddr>,
    pub(crate) last_resolution: Option<std::time::Instant>,
}

impl NeighbourTable {
    pub fn new() -> NeighbourTable {
        NeighbourTable {
            current: HashMap::with_capacity(NEIGHBOURS),
            previous: HashMap::with_capacity(NEIGHBOURS),
            default: None,
            missing: None,
            last_resolution: None,
        }
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
}
