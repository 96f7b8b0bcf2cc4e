//! Address signals and their pending state: ADD_ADDR (and its
//! retransmission), REMOVE_ADDR.

use super::Shared;
use crate::time::Instant;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug)]
pub(super) struct AddAddrTx {
    pub(super) id: u8,
    pub(super) addr: IpAddr,
    pub(super) deadline: Instant,
    pub(super) tries: u32,
    pub(super) due: bool,
}

impl Shared {
    /// Server: the ADD_ADDRs for our "signal" addresses.
    pub(super) fn queue_signals(&mut self, now: Instant) {
        for (id, l) in self.locals.iter().enumerate().skip(1) {
            if l.signal && !self.add_addr.iter().any(|t| t.id == id as u8) {
                self.add_addr.push(AddAddrTx {
                    id: id as u8,
                    addr: l.ip,
                    deadline: now + self.add_addr_timeout,
                    tries: 0,
                    due: true,
                });
            }
        }
    }

    pub(super) fn remove_pending_ids_from_peer(&mut self, id: u8) {
        self.peer_removed.push(id);
    }
}
