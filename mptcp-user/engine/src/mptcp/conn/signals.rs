//! Address signals and their pending state: the addresses of both ends,
//! ADD_ADDR (and its retransmission, and the echo we owe), REMOVE_ADDR.

use super::{ConnState, ConnTimer};
use crate::mptcp::api::LocalAddr;
use crate::time::Instant;
use std::net::{IpAddr, SocketAddr};

/// An address the peer announced (id 0: the initial subflow's).
#[derive(Clone, Copy, Debug)]
pub(super) struct RemoteAddr {
    pub(super) id: u8,
    pub(super) addr: SocketAddr,
}

/// An ADD_ADDR we sent and the peer has not echoed yet.
#[derive(Clone, Copy, Debug)]
pub(super) struct AddAddrTx {
    pub(super) id: u8,
    pub(super) addr: IpAddr,
    /// Sent when joins go to another port than the client's initial one.
    pub(super) port: Option<u16>,
    pub(super) deadline: Instant,
    pub(super) tries: u32,
    /// To be sent on the next pure ACK.
    pub(super) due: bool,
}

/// The echo we owe for an ADD_ADDR the peer sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct AddAddrEcho {
    pub(super) id: u8,
    pub(super) addr: IpAddr,
    pub(super) port: Option<u16>,
}

#[derive(Debug)]
pub(super) struct Signals {
    /// Our addresses; the index is the address id.
    pub(super) locals: Vec<LocalAddr>,
    pub(super) remotes: Vec<RemoteAddr>,
    pub(super) add_addr: Vec<AddAddrTx>,
    pub(super) echo_pending: Vec<AddAddrEcho>,
    pub(super) remove_pending: Option<u8>,
    /// Address ids the peer removed, whose subflows are still to close.
    pub(super) peer_removed: Vec<u8>,
    /// Server: our SYN/ACK sets the C flag (behind a load balancer).
    pub(super) deny_join_initial: bool,
    /// Server behind a load balancer: the port our ADD_ADDRs carry (the
    /// one we listen on; the client knows only the balancer's).
    pub(super) announce_port: Option<u16>,
    /// Client: the peer's SYN/ACK set the C flag: no subflow to its
    /// initial address and port (remote id 0).
    pub(super) peer_denies_join_initial: bool,
}

impl Signals {
    pub(super) fn new(locals: Vec<LocalAddr>) -> Signals {
        Signals {
            locals,
            remotes: Vec::new(),
            add_addr: Vec::new(),
            echo_pending: Vec::new(),
            remove_pending: None,
            peer_removed: Vec::new(),
            deny_join_initial: false,
            announce_port: None,
            peer_denies_join_initial: false,
        }
    }
}

impl ConnState {
    /// Server: the ADD_ADDRs for our "signal" addresses.
    pub(super) fn queue_signals(&mut self, now: Instant) {
        let sig = &mut self.signals;
        for (id, l) in sig.locals.iter().enumerate().skip(1) {
            if l.signal && !sig.add_addr.iter().any(|t| t.id == id as u8) {
                sig.add_addr.push(AddAddrTx {
                    id: id as u8,
                    addr: l.ip,
                    port: sig.announce_port,
                    deadline: now + self.settings.add_addr_timeout,
                    tries: 0,
                    due: true,
                });
            }
        }
        self.rearm_add_addr();
    }

    /// Keeps the ADD_ADDR timer at the earliest pending retransmission.
    pub(super) fn rearm_add_addr(&mut self) {
        let next = self.signals.add_addr.iter().map(|t| t.deadline).min();
        self.timers.set(ConnTimer::AddAddr, next);
    }

    pub(super) fn remove_pending_ids_from_peer(&mut self, id: u8) {
        self.signals.peer_removed.push(id);
    }
}
