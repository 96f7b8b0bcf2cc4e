//! The neighbour table of one path: IP -> MAC, learnt from every received
//! frame (weak host model: replies go back to the neighbour a subflow came
//! from) and from the kernel's tables (netlink) for connections we open.

use std::net::IpAddr;

use mptcp_engine::wire::ethernet::MacAddr;

/// Neighbours remembered per path; beyond that the oldest is overwritten.
const NEIGHBOURS: usize = 64;

/// IP -> MAC for one path, learnt from received frames and netlink.
#[derive(Clone, Debug, Default)]
pub struct NeighbourTable {
    entries: Vec<(IpAddr, MacAddr)>,
    next_victim: usize,
    /// Used when a destination was never heard from (the resolved next hop).
    pub default: Option<MacAddr>,
    /// A destination we had a packet for but no MAC (resolved off the fast path).
    pub missing: Option<IpAddr>,
    pub(crate) last_resolution: Option<std::time::Instant>,
}

impl NeighbourTable {
    pub fn new() -> NeighbourTable {
        NeighbourTable {
            entries: Vec::with_capacity(NEIGHBOURS),
            next_victim: 0,
            default: None,
            missing: None,
            last_resolution: None,
        }
    }

    pub fn learn(&mut self, ip: IpAddr, mac: MacAddr) {
        if let Some(e) = self.entries.iter_mut().find(|(i, _)| *i == ip) {
            e.1 = mac;
        } else if self.entries.len() < NEIGHBOURS {
            self.entries.push((ip, mac));
        } else {
            self.entries[self.next_victim] = (ip, mac);
            self.next_victim = (self.next_victim + 1) % NEIGHBOURS;
        }
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<MacAddr> {
        self.entries
            .iter()
            .find(|(i, _)| *i == ip)
            .map(|(_, m)| *m)
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
        for i in 0..NEIGHBOURS as u32 {
            t.learn(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)), MacAddr([3; 6]));
        }
        assert_eq!(t.entries.len(), NEIGHBOURS);
        // The first entry was overwritten: falls back to the default.
        assert_eq!(t.lookup(a), Some(MacAddr([9; 6])));
    }
}
