//! The front ends people deploy, as applications of the worker loop:
//!
//! - [`iperf3`]: an iperf3 server (`serve --mode iperf3`): the control
//!   connection, its cookie and state bytes, JSON framed by a 4-byte length,
//!   data streams associated by cookie, the results exchange.
//! - [`socks5`]: a SOCKS5 proxy (RFC 1928 CONNECT, RFC 1929 username and
//!   password), relaying over kernel TCP.
//! - [`convert`]: an RFC 8803 Transport Converter (0-RTT TCP Convert).
//! - [`relay`]: what the two proxies share: the allow list, the resolver
//!   thread, non-blocking connects to the destination.
//!
//! The protocol parts (parsers, state machines, message builders) are
//! sans-IO and unit-tested; the applications move bytes through
//! [`ByteStream`](mptcp_engine::io::ByteStream).

pub mod convert;
pub mod iperf3;
pub mod relay;
pub mod socks5;

use std::net::SocketAddr;

/// One subflow's figures, for reports (iperf3 results, logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubflowFigures {
    pub id: u32,
    pub path: usize,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
}

/// A connection that can tell its per-subflow figures (an MPTCP
/// connection has several subflows, a TCP connection one).
pub trait Subflows {
    /// Appends one row per subflow to `out`.
    fn subflow_figures(&self, _out: &mut Vec<SubflowFigures>) {}
}

impl Subflows for mptcp_engine::tcp::TcpEndpoint {
    fn subflow_figures(&self, out: &mut Vec<SubflowFigures>) {
        if let Some(sf) = self.subflow() {
            let s = sf.stats();
            let t = sf.tuple();
            out.push(SubflowFigures {
                id: 0,
                path: self.path(),
                local: t.local,
                remote: t.remote,
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                retransmits: s.retransmits,
            });
        }
    }
}

impl Subflows for mptcp_engine::mptcp::Connection {
    fn subflow_figures(&self, out: &mut Vec<SubflowFigures>) {
        for i in self.subflows() {
            let s = self.subflow_stats(i.id).unwrap_or_default();
            out.push(SubflowFigures {
                id: i.id,
                path: i.path,
                local: i.tuple.local,
                remote: i.tuple.remote,
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                retransmits: s.retransmits,
            });
        }
    }
}

/// An in-memory byte stream for the unit tests of the applications.
#[cfg(test)]
pub(crate) mod mem {
    use mptcp_engine::io::ByteStream;

    /// What the application sent is in `sent`; what it will read is in
    /// `incoming`. `cap` bounds what `send` accepts per call.
    #[derive(Default)]
    pub struct MemStream {
        pub incoming: Vec<u8>,
        pub sent: Vec<u8>,
        pub peer_closed: bool,
        pub closed: bool,
        pub cap: Option<usize>,
    }

    impl MemStream {
        pub fn take_sent(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.sent)
        }
    }

    impl ByteStream for MemStream {
        fn send(&mut self, data: &[u8]) -> usize {
            if self.closed {
                return 0;
            }
            let n = self.cap.map_or(data.len(), |c| c.min(data.len()));
            self.sent.extend_from_slice(&data[..n]);
            n
        }
        fn recv(&mut self, buf: &mut [u8]) -> usize {
            let n = buf.len().min(self.incoming.len());
            buf[..n].copy_from_slice(&self.incoming[..n]);
            self.incoming.drain(..n);
            n
        }
        fn close(&mut self) {
            self.closed = true;
        }
        fn is_established(&self) -> bool {
            true
        }
        fn is_read_closed(&self) -> bool {
            self.peer_closed && self.incoming.is_empty()
        }
        fn is_closed(&self) -> bool {
            self.closed && self.peer_closed && self.incoming.is_empty()
        }
    }

    impl super::Subflows for MemStream {}
}
