//! A single-connection plain TCP endpoint (client or listener) over IPv4 or
//! IPv6: frames a [`Subflow`] with the wire codecs and implements the
//! driver seam ([`Engine`]) and the application seam ([`ByteStream`]).

use super::{Config, FourTuple, Subflow, SubflowStats};
use crate::io::{ByteStream, Engine, PathId, PathStats};
use crate::time::Instant;
use crate::wire::ip::{emit_ip_tcp, parse_ip_tcp, IpRepr};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::{TcpFlags, TcpOptions, TcpPacket, TcpRepr};
use std::net::{IpAddr, SocketAddr};

/// The fixed TCP header, without options.
const TCP_HEADER: usize = 20;

/// Packets the endpoint refused, by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Could not be parsed as IPv4/IPv6 + TCP.
    pub malformed: u64,
    pub bad_checksum: u64,
    /// Not for this endpoint's address and port or connection.
    pub unmatched: u64,
    /// Resets sent in answer to unmatched segments.
    pub resets_sent: u64,
    /// Segments the codec could not emit (buffer too small).
    pub emit_failed: u64,
}

#[derive(Debug)]
enum Role {
    Client,
    Listener,
}

/// One TCP connection seen as an engine: `TcpEndpoint::client` connects,
/// `TcpEndpoint::listen` accepts the first SYN to its address and port.
#[derive(Debug)]
pub struct TcpEndpoint {
    cfg: Config,
    role: Role,
    local: SocketAddr,
    path: PathId,
    conn: Option<Subflow>,
    /// The application closed before the connection existed (listener).
    close_requested: bool,
    /// A RST for a segment that matched nothing: (to, reply header).
    pending_reset: Option<(SocketAddr, SocketAddr, u32, u32, bool)>,
    /// Payload staging, allocated once.
    scratch: Box<[u8]>,
    counters: EndpointCounters,
}

impl TcpEndpoint {
    /// An endpoint that connects from `local` to `remote` over path 0.
    pub fn client(cfg: Config, local: SocketAddr, remote: SocketAddr, now: Instant) -> TcpEndpoint {
        let conn = Subflow::connect(&cfg, FourTuple { local, remote }, now);
        TcpEndpoint::new(cfg, Role::Client, local, Some(conn))
    }

    /// An endpoint that accepts one connection on `local`; an unspecified
    /// IP (0.0.0.0 or ::) matches any destination address of its family.
    pub fn listen(cfg: Config, local: SocketAddr) -> TcpEndpoint {
        TcpEndpoint::new(cfg, Role::Listener, local, None)
    }

    fn new(cfg: Config, role: Role, local: SocketAddr, conn: Option<Subflow>) -> TcpEndpoint {
        let scratch = vec![0u8; cfg.mss as usize + 64].into_boxed_slice();
        TcpEndpoint {
            cfg,
            role,
            local,
            path: 0,
            conn,
            close_requested: false,
            pending_reset: None,
            scratch,
            counters: EndpointCounters::default(),
        }
    }

    /// Sends on `path` (client; a listener answers on the SYN's path).
    pub fn set_path(&mut self, path: PathId) {
        self.path = path;
    }

    pub fn path(&self) -> PathId {
        self.path
    }

    pub fn subflow(&self) -> Option<&Subflow> {
        self.conn.as_ref()
    }

    pub fn subflow_mut(&mut self) -> Option<&mut Subflow> {
        self.conn.as_mut()
    }

    /// cwnd, RTT, RTO and byte counters of the connection.
    pub fn subflow_stats(&self) -> Option<SubflowStats> {
        self.conn.as_ref().map(Subflow::stats)
    }

    pub fn path_stats(&self) -> PathStats {
        let s = self.subflow_stats().unwrap_or_default();
        PathStats {
            path: self.path,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            retransmits: s.retransmits,
        }
    }

    pub fn counters(&self) -> &EndpointCounters {
        &self.counters
    }

    fn local_matches(&self, dst: SocketAddr) -> bool {
        if dst.port() != self.local.port() {
            return false;
        }
        let ip = self.local.ip();
        ip == dst.ip() || (ip.is_unspecified() && ip.is_ipv4() == dst.ip().is_ipv4())
    }

    fn refuse(&mut self, src: SocketAddr, dst: SocketAddr, seg: &TcpRepr) {
        self.counters.unmatched += 1;
        if seg.flags.contains(TcpFlags::RST) || self.pending_reset.is_some() {
            return;
        }
        let reply = if seg.flags.contains(TcpFlags::ACK) {
            (seg.ack, 0, false)
        } else {
            let len = seg.segment_len() as u32;
            (0, seg.seq.wrapping_add(len), true)
        };
        self.pending_reset = Some((dst, src, reply.0, reply.1, reply.2));
    }
}

/// The TCP bytes of an IP packet that `parse_ip_tcp` accepted.
fn tcp_bytes<'a>(packet: &'a [u8], ip: &IpRepr) -> Option<&'a [u8]> {
    match ip {
        IpRepr::V4(_) => {
            let p = Ipv4Packet::new_checked(packet).ok()?;
            packet.get(p.header_len()..p.total_len())
        }
        IpRepr::V6(r) => packet.get(40..40 + r.payload_len as usize),
    }
}

fn emit(ip_src: IpAddr, ip_dst: IpAddr, seg: &TcpRepr, buf: &mut [u8]) -> Option<usize> {
    let ip = IpRepr::new_tcp(ip_src, ip_dst)?;
    emit_ip_tcp(&ip, seg, buf).ok()
}

impl Engine for TcpEndpoint {
    fn handle_packet(&mut self, now: Instant, path: PathId, packet: &[u8]) {
        let Ok((ip, seg)) = parse_ip_tcp(packet) else {
            self.counters.malformed += 1;
            return;
        };
        let valid = tcp_bytes(packet, &ip)
            .and_then(|b| TcpPacket::new_checked(b).ok())
            .is_some_and(|p| p.verify_checksum(ip.src(), ip.dst()));
        if !valid {
            self.counters.bad_checksum += 1;
            return;
        }
        let src = SocketAddr::new(ip.src(), seg.src_port);
        let dst = SocketAddr::new(ip.dst(), seg.dst_port);
        if let Some(conn) = self.conn.as_mut() {
            let t = conn.tuple();
            if t.local == dst && t.remote == src {
                conn.on_segment(now, &seg);
                return;
            }
        } else if matches!(self.role, Role::Listener) && self.local_matches(dst) {
            let tuple = FourTuple {
                local: dst,
                remote: src,
            };
            if let Some(mut conn) = Subflow::accept(&self.cfg, tuple, now, &seg) {
                if self.close_requested {
                    conn.close();
                }
                self.conn = Some(conn);
                self.path = path;
                return;
            }
        }
        self.refuse(src, dst, &seg);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, usize)> {
        if let Some((from, to, seq, ack, with_ack)) = self.pending_reset.take() {
            let flags = if with_ack {
                TcpFlags::RST | TcpFlags::ACK
            } else {
                TcpFlags::RST
            };
            let rst = TcpRepr {
                src_port: from.port(),
                dst_port: to.port(),
                seq,
                ack,
                flags,
                window: 0,
                urgent: 0,
                options: TcpOptions::default(),
                payload: &[],
            };
            if let Some(n) = emit(from.ip(), to.ip(), &rst, buf) {
                self.counters.resets_sent += 1;
                return Some((self.path, n));
            }
        }
        let conn = self.conn.as_mut()?;
        let ip_header = if conn.tuple().local.is_ipv4() { 20 } else { 40 };
        let headers = ip_header + TCP_HEADER + conn.option_space_needed();
        let room = buf.len().saturating_sub(headers).min(self.scratch.len());
        loop {
            let seg = conn.poll_transmit(now, &mut self.scratch[..room])?;
            let t = conn.tuple();
            match emit(t.local.ip(), t.remote.ip(), &seg, buf) {
                Some(n) => return Some((self.path, n)),
                // Lost as if on the wire; retransmission repairs it.
                None => self.counters.emit_failed += 1,
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.conn.as_ref().and_then(Subflow::poll_timeout)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(conn) = self.conn.as_mut() {
            conn.on_timeout(now);
        }
    }
}

impl ByteStream for TcpEndpoint {
    fn send(&mut self, data: &[u8]) -> usize {
        self.conn.as_mut().map_or(0, |c| c.send(data))
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.conn.as_mut().map_or(0, |c| c.recv(buf))
    }
    fn close(&mut self) {
        match self.conn.as_mut() {
            Some(c) => c.close(),
            None => self.close_requested = true,
        }
    }
    fn is_established(&self) -> bool {
        self.conn.as_ref().is_some_and(Subflow::is_established)
    }
    fn is_read_closed(&self) -> bool {
        self.conn.as_ref().is_some_and(Subflow::is_read_closed)
    }
    /// Closed, reset, or in TIME_WAIT (which no longer concerns the
    /// application).
    fn is_closed(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.is_closed() || c.state() == super::State::TimeWait)
    }
}
