//! Robustness harness shared by the cargo-fuzz targets (`fuzz/`) and the
//! regression and property tests (`tests/engine_robustness.rs`): one
//! implementation, so a crash found by the fuzzer replays as a plain test.
//!
//! A valid conversation between two in-process endpoints is recorded once;
//! the fuzz input is then read as a program of operations on a fresh copy of
//! the endpoint under test: deliver the next recorded packet as is, or with
//! a byte flipped or a header field rewritten (checksum fixed so it gets
//! past the checksum check), replay an old packet, inject raw bytes, let
//! time pass (timers), and drive the application side. Every output is
//! drained. With an all-zero input the recorded conversation replays
//! unchanged, so the fuzzer starts deep inside a connection.

use super::{LocalAddr, MptcpConfig, MptcpEndpoint};
use crate::io::{ByteStream, Engine, PathId};
use crate::tcp::TcpEndpoint;
use crate::time::Instant;
use crate::wire::checksum;
use crate::wire::ip::{emit_ip_tcp, parse_ip_tcp};
use crate::wire::mptcp::{Dss, DssMapping, MptcpOption, MptcpOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

/// One packet of a recorded conversation, as it reached its receiver.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub at: Instant,
    pub path: PathId,
    pub bytes: Vec<u8>,
}

/// Both directions of a recorded conversation.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub to_server: Vec<Recorded>,
    pub to_client: Vec<Recorded>,
}

pub const SERVER_PORT: u16 = 8080;
pub const CLIENT_PORT: u16 = 40000;

pub fn client_ip(path: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, path as u8, 1))
}

pub fn server_ip(path: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, path as u8, 2))
}

/// Small buffers keep each fuzz execution cheap; fixed secrets make the
/// recorded conversations replayable; everything else default.
pub fn mptcp_config() -> MptcpConfig {
    let mut cfg = MptcpConfig {
        send_buffer: 64 << 10,
        recv_buffer: 64 << 10,
        secret: [0x6d; 32],
        ..Default::default()
    };
    cfg.tcp.send_buffer = 64 << 10;
    cfg.tcp.recv_buffer = 64 << 10;
    cfg.tcp.isn_secret = [0x42; 16];
    cfg
}

pub fn tcp_config() -> crate::tcp::Config {
    crate::tcp::Config {
        send_buffer: 64 << 10,
        recv_buffer: 64 << 10,
        isn_secret: [0x42; 16],
        ..Default::default()
    }
}

/// Two paths; the server announces its second address (ADD_ADDR), so the
/// client's full-mesh path manager joins a second subflow.
pub fn client_locals() -> Vec<LocalAddr> {
    (0..2)
        .map(|p| LocalAddr {
            ip: client_ip(p),
            path: p,
            signal: false,
        })
        .collect()
}

pub fn server_locals() -> Vec<LocalAddr> {
    (0..2)
        .map(|p| LocalAddr {
            ip: server_ip(p),
            path: p,
            signal: p > 0,
        })
        .collect()
}

pub fn new_mptcp_server() -> MptcpEndpoint {
    MptcpEndpoint::server(mptcp_config(), &server_locals(), SERVER_PORT)
}

pub fn new_mptcp_client(port: u16, now: Instant) -> MptcpEndpoint {
    new_mptcp_client_with(mptcp_config(), port, now)
}

/// The same with DSS checksums asked for (the client's SYN carries the
/// flag; either side asking turns them on).
fn checksum_config() -> MptcpConfig {
    MptcpConfig {
        checksum: true,
        ..mptcp_config()
    }
}

pub fn new_mptcp_client_with(cfg: MptcpConfig, port: u16, now: Instant) -> MptcpEndpoint {
    MptcpEndpoint::client(
        cfg,
        &client_locals(),
        port,
        SocketAddr::new(server_ip(0), SERVER_PORT),
        now,
    )
}

pub fn new_tcp_server() -> TcpEndpoint {
    TcpEndpoint::listen(tcp_config(), SocketAddr::new(server_ip(0), SERVER_PORT))
}

pub fn new_tcp_client(port: u16, now: Instant) -> TcpEndpoint {
    TcpEndpoint::client(
        tcp_config(),
        SocketAddr::new(client_ip(0), port),
        SocketAddr::new(server_ip(0), SERVER_PORT),
        now,
    )
}

/// The payload byte at stream offset `i` (recognisable, not constant).
pub fn pattern(i: usize) -> u8 {
    crate::app::Pattern::STREAM.byte(i as u64)
}

/// The outcome of a lossless exchange: bytes each side read.
#[derive(Debug, Default)]
pub struct Transfer {
    pub recording: Recording,
    pub server_got: Vec<u8>,
    pub client_got: Vec<u8>,
}

/// Runs `client` against `server` over a lossless zero-delay network
/// until both have read `len` bytes from the other and the closes went
/// through (or simulated `limit` passes). Each side sends `pattern` bytes
/// and closes when done. Every packet is recorded.
pub fn exchange<C, S>(
    client: &mut C,
    server: &mut S,
    start: Instant,
    len: usize,
    limit: Duration,
) -> Transfer
where
    C: Engine + ByteStream,
    S: Engine + ByteStream,
{
    let mut out = Transfer::default();
    let mut now = start;
    let end = start + limit;
    let mut buf = vec![0u8; 2048];
    let mut rd = vec![0u8; 4096];
    let (mut c_sent, mut s_sent) = (0usize, 0usize);
    let (mut c_closed, mut s_closed) = (false, false);
    while now < end {
        let mut moved = false;
        while let Some((path, n)) = client.poll_transmit(now, &mut buf) {
            let bytes = buf[..n].to_vec();
            server.handle_packet(now, path, &bytes);
            out.recording.to_server.push(Recorded {
                at: now,
                path,
                bytes,
            });
            moved = true;
        }
        while let Some((path, n)) = server.poll_transmit(now, &mut buf) {
            let bytes = buf[..n].to_vec();
            client.handle_packet(now, path, &bytes);
            out.recording.to_client.push(Recorded {
                at: now,
                path,
                bytes,
            });
            moved = true;
        }
        if client.is_established() && c_sent < len {
            let chunk: Vec<u8> = (c_sent..len.min(c_sent + 4096)).map(pattern).collect();
            let n = client.send(&chunk);
            c_sent += n;
            moved |= n > 0;
        }
        if server.is_established() && s_sent < len {
            let chunk: Vec<u8> = (s_sent..len.min(s_sent + 4096)).map(pattern).collect();
            let n = server.send(&chunk);
            s_sent += n;
            moved |= n > 0;
        }
        if c_sent == len && !c_closed {
            client.close();
            c_closed = true;
            moved = true;
        }
        if s_sent == len && !s_closed && out.server_got.len() == len {
            server.close();
            s_closed = true;
            moved = true;
        }
        loop {
            let n = server.recv(&mut rd);
            out.server_got.extend_from_slice(&rd[..n]);
            moved |= n > 0;
            if n == 0 {
                break;
            }
        }
        loop {
            let n = client.recv(&mut rd);
            out.client_got.extend_from_slice(&rd[..n]);
            moved |= n > 0;
            if n == 0 {
                break;
            }
        }
        let done = out.server_got.len() >= len
            && out.client_got.len() >= len
            && client.is_read_closed()
            && server.is_read_closed();
        if done {
            break;
        }
        if !moved {
            // Nothing in flight: jump to the next timer (at least 1 ms).
            let next = [client.poll_timeout(), server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_millis(1));
            now = next.max(now + Duration::from_millis(1));
            client.handle_timeout(now);
            server.handle_timeout(now);
        }
    }
    out
}

/// Bytes each side sends in the recorded conversations.
pub const RECORDED_LEN: usize = 6000;

fn record<C, S>(mut client: C, mut server: S) -> Recording
where
    C: Engine + ByteStream,
    S: Engine + ByteStream,
{
    exchange(
        &mut client,
        &mut server,
        Instant::ZERO,
        RECORDED_LEN,
        Duration::from_secs(30),
    )
    .recording
}

/// The reference MPTCP conversation (two subflows, data both ways, DATA_FINs).
pub fn mptcp_recording() -> &'static Recording {
    static REC: OnceLock<Recording> = OnceLock::new();
    REC.get_or_init(|| {
        record(
            new_mptcp_client(CLIENT_PORT, Instant::ZERO),
            new_mptcp_server(),
        )
    })
}

/// The reference MPTCP conversation with DSS checksums.
pub fn mptcp_checksum_recording() -> &'static Recording {
    static REC: OnceLock<Recording> = OnceLock::new();
    REC.get_or_init(|| {
        record(
            new_mptcp_client_with(checksum_config(), CLIENT_PORT, Instant::ZERO),
            new_mptcp_server(),
        )
    })
}

/// The reference plain TCP conversation.
pub fn tcp_recording() -> &'static Recording {
    static REC: OnceLock<Recording> = OnceLock::new();
    REC.get_or_init(|| record(new_tcp_client(CLIENT_PORT, Instant::ZERO), new_tcp_server()))
}

/// Reads the fuzz input; past its end every read is zero, which means
/// "replay the next recorded packet unchanged".
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The TCP segment's range inside an IPv4 packet, if the header allows.
fn tcp_range(p: &[u8]) -> Option<std::ops::Range<usize>> {
    let ihl = (*p.first()? as usize & 0x0f) * 4;
    let total = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]) as usize;
    (ihl >= 20 && ihl + 20 <= total && total <= p.len()).then_some(ihl..total)
}

/// Recomputes the TCP checksum of an IPv4 packet (any data offset), so a
/// mutated segment reaches the engine instead of the checksum check.
pub fn fix_tcp_checksum(p: &mut [u8]) {
    let Some(r) = tcp_range(p) else { return };
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let seg = &mut p[r];
    seg[16] = 0;
    seg[17] = 0;
    let ph = checksum::pseudo_header_v4(src, dst, 6, seg.len() as u32);
    let c = !checksum::fold(checksum::accumulate(ph, seg));
    seg[16..18].copy_from_slice(&c.to_be_bytes());
}

/// What the harness did, for tests that check the counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub delivered: u64,
    pub transmitted: u64,
    pub now: Instant,
}

/// Runs the fuzz program `data` against `ep`, fed packets derived from
/// `rec` (the packets its peer sent in the reference conversation).
pub fn run<E: Engine + ByteStream>(ep: &mut E, rec: &[Recorded], data: &[u8]) -> Stats {
    let mut input = Input { data };
    let mut st = Stats::default();
    let mut cursor = 0usize;
    let mut buf = vec![0u8; 2048];
    let mut rd = vec![0u8; 4096];
    let mut pkt: Vec<u8> = Vec::with_capacity(2048);
    let mut app_sent = 0usize;
    let mut app_read = 0usize;
    let mut app_closed = false;
    // The first SYN goes out before anything arrives (client role).
    while ep.poll_transmit(st.now, &mut buf).is_some() {
        st.transmitted += 1;
    }
    // A bound on the program keeps each execution short.
    for _ in 0..512 {
        if input.is_empty() && cursor >= rec.len() {
            break;
        }
        let op = input.u8();
        let mut path = 0;
        let mut deliver = true;
        pkt.clear();
        match op % 14 {
            // The next recorded packet, unchanged (the all-zero program).
            0..=3 => {
                let Some(r) = rec.get(cursor) else { continue };
                cursor += 1;
                st.now = st.now.max(r.at);
                path = r.path;
                pkt.extend_from_slice(&r.bytes);
            }
            // The next recorded packet with bytes of its segment XORed.
            4 => {
                let Some(r) = rec.get(cursor) else { continue };
                cursor += 1;
                st.now = st.now.max(r.at);
                path = r.path;
                pkt.extend_from_slice(&r.bytes);
                let flips = 1 + input.u8() % 4;
                for _ in 0..flips {
                    let at = input.u16() as usize;
                    let x = input.u8();
                    if let Some(range) = tcp_range(&pkt) {
                        let i = range.start + at % range.len();
                        pkt[i] ^= x;
                    }
                }
                fix_tcp_checksum(&mut pkt);
            }
            // The next recorded packet with one header field rewritten.
            5 => {
                let Some(r) = rec.get(cursor) else { continue };
                cursor += 1;
                st.now = st.now.max(r.at);
                path = r.path;
                pkt.extend_from_slice(&r.bytes);
                if let Some(range) = tcp_range(&pkt) {
                    let s = range.start;
                    let field = input.u8();
                    let v = input.u32();
                    let add32 = |p: &mut [u8], at: usize, v: u32| {
                        let old = u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
                        p[at..at + 4].copy_from_slice(&old.wrapping_add(v).to_be_bytes());
                    };
                    match field % 6 {
                        0 => add32(&mut pkt, s + 4, v),
                        1 => add32(&mut pkt, s + 8, v),
                        2 => pkt[s + 13] = v as u8,
                        3 => pkt[s + 14..s + 16].copy_from_slice(&(v as u16).to_be_bytes()),
                        4 => pkt[s + 12] = (pkt[s + 12] & 0x0f) | ((v as u8) << 4),
                        _ => {
                            // Overwrite option/payload bytes with input bytes.
                            let at = s + 20 + (v as usize % range.len().saturating_sub(20).max(1));
                            let n = (input.u8() % 16) as usize;
                            let end = (at + n).min(range.end);
                            let src = input.bytes(end.saturating_sub(at));
                            let k = src.len();
                            if at + k <= range.end {
                                pkt[at..at + k].copy_from_slice(src);
                            }
                        }
                    }
                }
                fix_tcp_checksum(&mut pkt);
            }
            // An earlier (or later) recorded packet: duplicates, reordering.
            6 => {
                if rec.is_empty() {
                    continue;
                }
                let r = &rec[input.u16() as usize % rec.len()];
                path = r.path;
                pkt.extend_from_slice(&r.bytes);
            }
            // A segment of input bytes in a recorded packet's IPv4 header.
            7 => {
                let Some(r) = rec.get(cursor.min(rec.len().saturating_sub(1))) else {
                    continue;
                };
                let n = input.u8() as usize;
                let seg = input.bytes(n);
                path = r.path;
                pkt.extend_from_slice(r.bytes.get(..20).unwrap_or(&[]));
                pkt.extend_from_slice(seg);
                if pkt.len() >= 20 {
                    let total = (pkt.len() as u16).to_be_bytes();
                    pkt[0] = 0x45;
                    pkt[2..4].copy_from_slice(&total);
                    pkt[10] = 0;
                    pkt[11] = 0;
                    let c = checksum::checksum(&pkt[..20]);
                    pkt[10..12].copy_from_slice(&c.to_be_bytes());
                }
                fix_tcp_checksum(&mut pkt);
            }
            // Raw input bytes as a packet (mostly malformed).
            8 => {
                let n = input.u8() as usize;
                pkt.extend_from_slice(input.bytes(n));
                path = (input.u8() % 3) as usize;
            }
            // Time passes; timers fire.
            9 => {
                deliver = false;
                let b = input.u8();
                let step = if b & 0x80 != 0 {
                    Duration::from_secs((b & 0x7f) as u64)
                } else {
                    Duration::from_millis(b as u64 * 4)
                };
                st.now = st.now + step;
                if ep.poll_timeout().is_some_and(|t| t <= st.now) {
                    ep.handle_timeout(st.now);
                }
            }
            // The application.
            10 => {
                deliver = false;
                match input.u8() % 4 {
                    0 => {
                        let n = input.u16() as usize % 20_000;
                        let chunk: Vec<u8> = (app_sent..app_sent + n).map(pattern).collect();
                        app_sent += ep.send(&chunk);
                    }
                    1 => app_read += drain_recv(ep, &mut rd),
                    2 => ep.close(),
                    _ => {
                        let _ = (ep.is_established(), ep.is_read_closed(), ep.is_closed());
                    }
                }
            }
            // The next recorded packet with its DSS rewritten through the
            // codec (valid syntax, fuzzed DSN/SSN/length/DATA_ACK/flags).
            12 => {
                let Some(r) = rec.get(cursor) else { continue };
                cursor += 1;
                st.now = st.now.max(r.at);
                path = r.path;
                rewrite_dss(&r.bytes, &mut input, &mut pkt);
            }
            // Timers fire late: whatever is due by the next deadline.
            _ => {
                deliver = false;
                if let Some(t) = ep.poll_timeout() {
                    st.now = st.now.max(t);
                    ep.handle_timeout(st.now);
                }
            }
        }
        if deliver {
            ep.handle_packet(st.now, path, &pkt);
            st.delivered += 1;
        }
        // The application of the recorded conversation: send the pattern
        // once established, close once it is sent and the peer's is read.
        app_read += drain_recv(ep, &mut rd);
        if ep.is_established() && app_sent < RECORDED_LEN {
            let chunk: Vec<u8> = (app_sent..RECORDED_LEN).map(pattern).collect();
            app_sent += ep.send(&chunk);
        }
        if app_sent >= RECORDED_LEN && app_read >= RECORDED_LEN && !app_closed {
            ep.close();
            app_closed = true;
        }
        // Drain (bounded: a misbehaving engine must not hang the fuzzer).
        for _ in 0..256 {
            match ep.poll_transmit(st.now, &mut buf) {
                Some(_) => st.transmitted += 1,
                None => break,
            }
        }
    }
    st
}

/// Re-emits `packet` with each DSS (or a new one when it has none)
/// changed as the input says; leaves `out` empty if it no longer fits.
fn rewrite_dss(packet: &[u8], input: &mut Input, out: &mut Vec<u8>) {
    let Ok((ip, mut seg)) = parse_ip_tcp(packet) else {
        return;
    };
    let sel = input.u8();
    let v = input.u32();
    let mask = |x: u64, wide: bool| if wide { x } else { x & 0xffff_ffff };
    let change = |mut d: Dss| {
        if let Some(m) = d.mapping.as_mut() {
            if sel & 0x80 != 0 {
                m.dsn_wide = !m.dsn_wide;
            }
            if sel & 0x01 != 0 {
                m.dsn = mask(m.dsn.wrapping_add(v as u64), m.dsn_wide);
            }
            m.dsn = mask(m.dsn, m.dsn_wide);
            if sel & 0x02 != 0 {
                m.ssn = m.ssn.wrapping_add(v);
            }
            if sel & 0x04 != 0 {
                m.data_len = (v >> 8) as u16;
            }
            if sel & 0x20 != 0 {
                m.checksum = m.checksum.xor(Some(v as u16));
            }
        } else if sel & 0x40 != 0 {
            d.mapping = Some(DssMapping {
                dsn: v as u64,
                dsn_wide: false,
                ssn: v.rotate_left(8),
                data_len: v as u16,
                checksum: None,
            });
        }
        if sel & 0x08 != 0 {
            d.data_fin = !d.data_fin;
        }
        if sel & 0x10 != 0 {
            let a = d.data_ack.unwrap_or(0).wrapping_add(v as u64);
            d.data_ack = Some(mask(a, d.data_ack_wide));
        }
        d
    };
    let mut opts = MptcpOptions::default();
    let mut had_dss = false;
    for o in seg.options.mptcp.as_slice() {
        let o = match *o {
            MptcpOption::Dss(d) => {
                had_dss = true;
                MptcpOption::Dss(change(d))
            }
            o => o,
        };
        let _ = opts.push(o);
    }
    if !had_dss {
        let _ = opts.push(MptcpOption::Dss(change(Dss::default())));
    }
    seg.options.mptcp = opts;
    let mut buf = [0u8; 2048];
    if let Ok(n) = emit_ip_tcp(&ip, &seg, &mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
}

fn drain_recv<E: ByteStream>(ep: &mut E, rd: &mut [u8]) -> usize {
    let mut total = 0;
    loop {
        let n = ep.recv(rd);
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// Fuzz target `mptcp_server`: a listening MPTCP endpoint fed mutated
/// client packets. A first input byte with its low bit set picks the
/// conversation with DSS checksums.
pub fn fuzz_mptcp_server(data: &[u8]) -> MptcpEndpoint {
    let mut ep = new_mptcp_server();
    match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => run(&mut ep, &mptcp_checksum_recording().to_server, rest),
        _ => run(
            &mut ep,
            &mptcp_recording().to_server,
            data.get(1..).unwrap_or(&[]),
        ),
    };
    ep
}

/// Fuzz target `mptcp_client`: an MPTCP client fed mutated server packets
/// (first byte as for the server).
pub fn fuzz_mptcp_client(data: &[u8]) -> MptcpEndpoint {
    match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => {
            let mut ep = new_mptcp_client_with(checksum_config(), CLIENT_PORT, Instant::ZERO);
            run(&mut ep, &mptcp_checksum_recording().to_client, rest);
            ep
        }
        _ => {
            let mut ep = new_mptcp_client(CLIENT_PORT, Instant::ZERO);
            run(
                &mut ep,
                &mptcp_recording().to_client,
                data.get(1..).unwrap_or(&[]),
            );
            ep
        }
    }
}

/// Fuzz target `tcp_endpoint`: a plain TCP listener fed mutated client
/// packets (the first input byte's low bit picks the client side instead).
pub fn fuzz_tcp_endpoint(data: &[u8]) -> TcpEndpoint {
    let rec = tcp_recording();
    match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => {
            let mut ep = new_tcp_client(CLIENT_PORT, Instant::ZERO);
            run(&mut ep, &rec.to_client, rest);
            ep
        }
        _ => {
            let mut ep = new_tcp_server();
            run(&mut ep, &rec.to_server, data.get(1..).unwrap_or(&[]));
            ep
        }
    }
}

/// A server endpoint whose application side is the connection accepted
/// from the client port `port` (others keep running underneath): lets a
/// test talk to one fresh connection on a server that already holds others.
pub struct ServerConn<'a> {
    pub ep: &'a mut MptcpEndpoint,
    pub port: u16,
}

impl ServerConn<'_> {
    fn conn(&self) -> Option<&super::Connection> {
        let port = self.port;
        self.ep
            .connections()
            .find(|c| c.subflows().any(|s| s.tuple.remote.port() == port))
    }
    fn conn_mut(&mut self) -> Option<&mut super::Connection> {
        let port = self.port;
        self.ep
            .connections_mut()
            .find(|c| c.subflows().any(|s| s.tuple.remote.port() == port))
    }
}

impl Engine for ServerConn<'_> {
    fn handle_packet(&mut self, now: Instant, path: PathId, packet: &[u8]) {
        self.ep.handle_packet(now, path, packet)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, usize)> {
        self.ep.poll_transmit(now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.ep.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now)
    }
}

impl ByteStream for ServerConn<'_> {
    fn send(&mut self, data: &[u8]) -> usize {
        self.conn_mut().map_or(0, |c| c.send(data))
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.conn_mut().map_or(0, |c| c.recv(buf))
    }
    fn close(&mut self) {
        if let Some(c) = self.conn_mut() {
            c.close();
        }
    }
    fn is_established(&self) -> bool {
        self.conn().is_some_and(super::Connection::is_established)
    }
    fn is_read_closed(&self) -> bool {
        self.conn().is_some_and(super::Connection::is_read_closed)
    }
    fn is_closed(&self) -> bool {
        self.conn().is_some_and(super::Connection::is_closed)
    }
}
