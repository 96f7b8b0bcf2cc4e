//! An RFC 8803 Transport Converter (0-RTT TCP Convert Protocol): a client
//! (typically MPTCP) opens a connection to the converter whose first bytes
//! are a Convert message (in the SYN with TFO, or right after it); the
//! converter connects to the destination it names and relays, answering
//! with a Convert message of its own before the destination's bytes.
//!
//! Wire format (RFC 8803 section 5): a 4-byte header (Version = 1, Total
//! Length in 32-bit words including the header, 16 unassigned bits), then
//! TLVs (Type, Length in 32-bit words including Type and Length, Value).
//! Served here: Info (answered with Supported TCP Extensions), Connect
//! (port, IPv6 address with IPv4 as v4-mapped, TCP options), Cookie
//! (ignored: none is required); answered on success with an Extended TCP
//! Header TLV carrying the options of the destination's SYN-ACK, and on
//! failure with an Error TLV, after which the converter closes.
//!
//! The kernel does not hand the SYN-ACK's options to a socket; they are
//! rebuilt from TCP_INFO (MSS, SACK permitted, timestamps, window scale).

use std::cell::RefCell;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use mptcp_engine::app::App;
use mptcp_engine::io::ByteStream;
use mptcp_engine::time::Instant;

use super::relay::{AllowList, ConnectError, Connecting};
use super::{SubflowFigures, Subflows};
use crate::forward::Forward;

pub const VERSION: u8 = 1;

/// TLV types (RFC 8803 section 8.2).
pub mod tlv {
    pub const INFO: u8 = 0x01;
    pub const CONNECT: u8 = 0x0a;
    pub const EXTENDED_TCP_HEADER: u8 = 0x14;
    pub const SUPPORTED_TCP_EXTENSIONS: u8 = 0x15;
    pub const COOKIE: u8 = 0x16;
    pub const ERROR: u8 = 0x1e;
}

/// Error codes (RFC 8803 section 8.3).
pub mod error {
    pub const UNSUPPORTED_VERSION: u8 = 0;
    pub const MALFORMED_MESSAGE: u8 = 1;
    pub const UNSUPPORTED_MESSAGE: u8 = 2;
    pub const MISSING_COOKIE: u8 = 3;
    pub const NOT_AUTHORIZED: u8 = 32;
    pub const UNSUPPORTED_TCP_OPTION: u8 = 33;
    pub const RESOURCE_EXCEEDED: u8 = 64;
    pub const NETWORK_FAILURE: u8 = 65;
    pub const CONNECTION_RESET: u8 = 96;
    pub const DESTINATION_UNREACHABLE: u8 = 97;
}

/// TCP option kinds this converter offers to convert (MPTCP on the client
/// side; the rest are what the kernel uses towards the destination).
pub const SUPPORTED_EXTENSIONS: &[u8] = &[2, 3, 4, 8, 30];

/// One TLV of a Convert message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tlv {
    Info,
    Connect {
        to: SocketAddr,
        options: Vec<u8>,
    },
    ExtendedTcpHeader(Vec<u8>),
    SupportedExtensions(Vec<u8>),
    Cookie(Vec<u8>),
    Error {
        code: u8,
        value: u8,
    },
    /// A type this converter does not know.
    Unknown(u8),
}

/// Outcome of parsing the Convert message at the front of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Incomplete,
    /// The TLVs and the message's length in bytes.
    Done(Vec<Tlv>, usize),
    /// The Error TLV code (and value) to answer with.
    Bad(u8, u8),
}

/// IPv4 addresses travel as v4-mapped IPv6.
fn to_wire(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn from_wire(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// Parses a Convert message (RFC 8803 section 5).
pub fn parse(b: &[u8]) -> Parsed {
    let Some(&version) = b.first() else {
        return Parsed::Incomplete;
    };
    if version != VERSION {
        return Parsed::Bad(error::UNSUPPORTED_VERSION, VERSION);
    }
    let Some(&words) = b.get(1) else {
        return Parsed::Incomplete;
    };
    let total = words as usize * 4;
    if total < 4 {
        return Parsed::Bad(error::MALFORMED_MESSAGE, 1);
    }
    if b.len() < total {
        return Parsed::Incomplete;
    }
    let mut tlvs = Vec::new();
    let mut at = 4;
    while at < total {
        let (Some(&ty), Some(&len)) = (b.get(at), b.get(at + 1)) else {
            return Parsed::Bad(error::MALFORMED_MESSAGE, at as u8);
        };
        let len = len as usize * 4;
        if len < 4 || at + len > total {
            return Parsed::Bad(error::MALFORMED_MESSAGE, at as u8);
        }
        let v = &b[at + 2..at + len];
        let t = match ty {
            tlv::INFO if len == 4 => Tlv::Info,
            tlv::CONNECT if len >= 20 => {
                let port = u16::from_be_bytes([v[0], v[1]]);
                let ip: [u8; 16] = v[2..18].try_into().expect("16 bytes");
                Tlv::Connect {
                    to: SocketAddr::new(from_wire(ip), port),
                    options: v[18..].to_vec(),
                }
            }
            tlv::EXTENDED_TCP_HEADER => Tlv::ExtendedTcpHeader(v[2..].to_vec()),
            tlv::SUPPORTED_TCP_EXTENSIONS => {
                Tlv::SupportedExtensions(v[2..].iter().copied().filter(|k| *k != 0).collect())
            }
            tlv::COOKIE => Tlv::Cookie(v[2..].to_vec()),
            tlv::ERROR => Tlv::Error {
                code: v[0],
                value: v[1],
            },
            tlv::INFO | tlv::CONNECT => return Parsed::Bad(error::MALFORMED_MESSAGE, at as u8),
            other => Tlv::Unknown(other),
        };
        tlvs.push(t);
        at += len;
    }
    Parsed::Done(tlvs, total)
}

/// Appends one TLV, padded to 32 bits.
fn push_tlv(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    let len = (2 + value.len()).div_ceil(4) * 4;
    out.push(ty);
    out.push((len / 4) as u8);
    out.extend_from_slice(value);
    out.resize(out.len() + len - 2 - value.len(), 0);
}

/// Encodes a Convert message (header and TLVs).
pub fn encode(tlvs: &[Tlv]) -> Vec<u8> {
    let mut out = vec![VERSION, 0, 0, 0];
    for t in tlvs {
        match t {
            Tlv::Info => push_tlv(&mut out, tlv::INFO, &[0, 0]),
            Tlv::Connect { to, options } => {
                let mut v = to.port().to_be_bytes().to_vec();
                v.extend_from_slice(&to_wire(to.ip()));
                v.extend_from_slice(options);
                push_tlv(&mut out, tlv::CONNECT, &v);
            }
            Tlv::ExtendedTcpHeader(h) => {
                let mut v = vec![0, 0];
                v.extend_from_slice(h);
                push_tlv(&mut out, tlv::EXTENDED_TCP_HEADER, &v);
            }
            Tlv::SupportedExtensions(kinds) => {
                let mut v = vec![0, 0];
                v.extend_from_slice(kinds);
                push_tlv(&mut out, tlv::SUPPORTED_TCP_EXTENSIONS, &v);
            }
            Tlv::Cookie(c) => {
                let mut v = vec![0, 0];
                v.extend_from_slice(c);
                push_tlv(&mut out, tlv::COOKIE, &v);
            }
            Tlv::Error { code, value } => push_tlv(&mut out, tlv::ERROR, &[*code, *value]),
            Tlv::Unknown(ty) => push_tlv(&mut out, *ty, &[0, 0]),
        }
    }
    out[1] = (out.len() / 4) as u8;
    out
}

/// An error reply.
pub fn error_message(code: u8, value: u8) -> Vec<u8> {
    encode(&[Tlv::Error { code, value }])
}

/// The error code for a failed connect to the destination.
pub fn connect_error(e: ConnectError) -> u8 {
    match e {
        // The destination answered the SYN with RST.
        ConnectError::Refused => error::CONNECTION_RESET,
        ConnectError::HostUnreachable | ConnectError::TimedOut => error::DESTINATION_UNREACHABLE,
        ConnectError::NetworkUnreachable | ConnectError::Other => error::NETWORK_FAILURE,
        ConnectError::Resources => error::RESOURCE_EXCEEDED,
    }
}

/// TCP options a client may ask for in a Connect TLV: the kernel applies
/// MSS, window scale, SACK and timestamps by itself; padding is fine.
fn options_supported(opts: &[u8]) -> bool {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return true,
            1 => i += 1,
            kind @ (2 | 3 | 4 | 8) => {
                let Some(&len) = opts.get(i + 1) else {
                    return false;
                };
                let _ = kind;
                if len < 2 {
                    return false;
                }
                i += len as usize;
            }
            _ => return false,
        }
    }
    true
}

/// The options of the destination's SYN-ACK, rebuilt from TCP_INFO.
pub fn syn_ack_options(stream: &std::net::TcpStream) -> Vec<u8> {
    // SAFETY: zeroed tcp_info is valid; getsockopt writes at most len bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    let mut mss: libc::c_int = 0;
    let mut mlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int for TCP_MAXSEG.
    let m = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            &mut mss as *mut _ as *mut libc::c_void,
            &mut mlen,
        )
    };
    let mut out = Vec::new();
    if m == 0 && mss > 0 {
        out.extend_from_slice(&[2, 4]);
        out.extend_from_slice(&(mss.min(u16::MAX as i32) as u16).to_be_bytes());
    }
    if r == 0 {
        const TIMESTAMPS: u8 = 1;
        const SACK: u8 = 2;
        const WSCALE: u8 = 4;
        if info.tcpi_options & SACK != 0 {
            out.extend_from_slice(&[4, 2]);
        }
        if info.tcpi_options & TIMESTAMPS != 0 {
            // The destination's clock is not known here: zero values.
            out.extend_from_slice(&[8, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        if info.tcpi_options & WSCALE != 0 {
            out.extend_from_slice(&[1, 3, 3, info.tcpi_snd_rcv_wscale & 0x0f]);
        }
    }
    out
}

/// Counters of the converter (JSON numbers in `stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertCounters {
    pub connections: u64,
    /// Unsupported version, malformed or unsupported messages.
    pub malformed: u64,
    pub info: u64,
    pub not_authorized: u64,
    pub connect_failed: u64,
    pub relayed: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// What the connections of one worker share.
pub struct Converter {
    pub allow: AllowList,
    pub counters: ConvertCounters,
}

impl Converter {
    pub fn shared(allow: AllowList) -> Rc<RefCell<Converter>> {
        Rc::new(RefCell::new(Converter {
            allow,
            counters: ConvertCounters::default(),
        }))
    }

    pub fn connection(conv: &Rc<RefCell<Converter>>) -> ConvertConn {
        conv.borrow_mut().counters.connections += 1;
        ConvertConn {
            conv: Rc::clone(conv),
            state: State::Reading,
            inbuf: Vec::new(),
            out: Vec::new(),
            client: None,
            dest: None,
            outcome: None,
            logged: false,
        }
    }
}

enum State {
    Reading,
    Connecting(Box<Connecting>),
    Relay(Box<Forward>),
    /// A reply is queued; close after it.
    Closing,
}

/// One client connection of the converter.
pub struct ConvertConn {
    conv: Rc<RefCell<Converter>>,
    state: State,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    client: Option<SocketAddr>,
    dest: Option<SocketAddr>,
    outcome: Option<String>,
    logged: bool,
}

/// A Convert message is at most 255 words.
const MAX_MESSAGE: usize = 255 * 4;

impl ConvertConn {
    fn fail(&mut self, code: u8, value: u8, why: &str) {
        self.out.extend(error_message(code, value));
        self.outcome = Some(format!("error {code} ({why})"));
        self.state = State::Closing;
    }

    fn on_message(&mut self, now: Instant, tlvs: Vec<Tlv>) {
        let mut connect = None;
        let mut info = false;
        for t in tlvs {
            match t {
                Tlv::Connect { to, options } if connect.is_none() => connect = Some((to, options)),
                Tlv::Info => info = true,
                Tlv::Cookie(_) => {}
                _ => {
                    self.conv.borrow_mut().counters.malformed += 1;
                    return self.fail(error::UNSUPPORTED_MESSAGE, 0, "unsupported TLV");
                }
            }
        }
        match connect {
            Some((to, options)) => {
                self.dest = Some(to);
                if !options_supported(&options) {
                    self.conv.borrow_mut().counters.malformed += 1;
                    return self.fail(error::UNSUPPORTED_TCP_OPTION, 0, "TCP option");
                }
                if !self.conv.borrow().allow.allows(to.ip()) {
                    self.conv.borrow_mut().counters.not_authorized += 1;
                    return self.fail(error::NOT_AUTHORIZED, 0, "destination not allowed");
                }
                match Connecting::start(to, now) {
                    Ok(c) => self.state = State::Connecting(Box::new(c)),
                    Err(e) => self.connect_failed(e),
                }
            }
            None if info => {
                self.conv.borrow_mut().counters.info += 1;
                self.out.extend(encode(&[Tlv::SupportedExtensions(
                    SUPPORTED_EXTENSIONS.to_vec(),
                )]));
                self.outcome = Some("info".into());
                self.state = State::Closing;
            }
            None => {
                self.conv.borrow_mut().counters.malformed += 1;
                self.fail(error::MALFORMED_MESSAGE, 0, "neither Connect nor Info");
            }
        }
    }

    fn connect_failed(&mut self, e: ConnectError) {
        self.conv.borrow_mut().counters.connect_failed += 1;
        self.fail(connect_error(e), 0, &format!("connect: {e:?}"));
    }

    fn log(&mut self, relayed: Option<(u64, u64)>) {
        if self.logged {
            return;
        }
        self.logged = true;
        let client = self.client.map_or("?".into(), |c| c.to_string());
        let dest = self.dest.map_or("-".into(), |d| d.to_string());
        match relayed {
            Some((up, down)) => {
                eprintln!("convert {client} -> {dest}: relayed {up} bytes up, {down} bytes down")
            }
            None => eprintln!(
                "convert {client} -> {dest}: {}",
                self.outcome
                    .as_deref()
                    .unwrap_or("closed before a Convert message")
            ),
        }
    }
}

impl<E: ByteStream + Subflows> App<E> for ConvertConn {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        if self.client.is_none() && engine.is_established() {
            let mut f: Vec<SubflowFigures> = Vec::new();
            engine.subflow_figures(&mut f);
            self.client = f.first().map(|f| f.remote);
        }
        if matches!(self.state, State::Reading) {
            // Read only up to the message's end: what follows is for the
            // destination and stays in the engine until the relay starts.
            let want = match self.inbuf.get(1) {
                Some(&w) => (w as usize * 4).max(4),
                None => 4,
            };
            if self.inbuf.len() < want {
                let mut tmp = [0u8; MAX_MESSAGE];
                let n = engine.recv(&mut tmp[..want - self.inbuf.len()]);
                self.inbuf.extend_from_slice(&tmp[..n]);
                work += n;
            }
            match parse(&self.inbuf) {
                Parsed::Incomplete => {
                    if engine.is_read_closed() || engine.is_closed() {
                        if !self.inbuf.is_empty() {
                            self.conv.borrow_mut().counters.malformed += 1;
                            self.fail(error::MALFORMED_MESSAGE, 0, "truncated message");
                        } else {
                            self.state = State::Closing;
                        }
                    }
                    // Otherwise wait: with the header in, the next poll
                    // reads the body (work > 0 brings it at once).
                }
                Parsed::Done(tlvs, used) => {
                    debug_assert_eq!(used, self.inbuf.len());
                    self.on_message(now, tlvs);
                    work += 1;
                }
                Parsed::Bad(code, value) => {
                    self.conv.borrow_mut().counters.malformed += 1;
                    self.fail(code, value, "bad message");
                    work += 1;
                }
            }
        }
        if let State::Connecting(c) = &mut self.state {
            match c.poll(now) {
                None => {}
                Some(Ok(stream)) => {
                    let opts = syn_ack_options(&stream);
                    match Forward::new(stream) {
                        Ok(f) => {
                            self.out.extend(encode(&[Tlv::ExtendedTcpHeader(opts)]));
                            self.conv.borrow_mut().counters.relayed += 1;
                            self.state = State::Relay(Box::new(f));
                        }
                        Err(e) => self.connect_failed(ConnectError::from_io(&e)),
                    }
                }
                Some(Err(e)) => self.connect_failed(e),
            }
            work += 1;
        }
        if !self.out.is_empty() {
            let n = engine.send(&self.out);
            self.out.drain(..n);
            work += n;
            if !self.out.is_empty() {
                return (work, engine.is_closed());
            }
        }
        match &mut self.state {
            State::Relay(f) => {
                let (up0, down0) = (f.forwarded, f.returned);
                let (w, done) = f.poll(now, engine);
                let mut c = self.conv.borrow_mut();
                c.counters.bytes_up += f.forwarded - up0;
                c.counters.bytes_down += f.returned - down0;
                drop(c);
                if done {
                    let figures = (f.forwarded, f.returned);
                    self.log(Some(figures));
                }
                (work + w, done)
            }
            State::Closing => {
                engine.close();
                // Nothing after a refused message reaches any destination.
                engine.consume(usize::MAX);
                if engine.is_closed() {
                    self.log(None);
                }
                (work, engine.is_closed())
            }
            _ => {
                if engine.is_closed() {
                    self.log(None);
                }
                (work, engine.is_closed())
            }
        }
    }

    fn wake_fds(&self, out: &mut Vec<(std::os::fd::RawFd, i16)>) {
        match &self.state {
            State::Connecting(c) => out.push((c.fd(), libc::POLLOUT)),
            State::Relay(f) => App::<E>::wake_fds(f.as_ref(), out),
            _ => {}
        }
    }
}

/// The client side: builds the Connect message and reads the converter's
/// answer at the front of the stream.
pub mod client {
    use super::*;

    /// The first bytes a client sends to reach `to` through a converter.
    pub fn connect_message(to: SocketAddr) -> Vec<u8> {
        encode(&[Tlv::Connect {
            to,
            options: Vec::new(),
        }])
    }

    /// The converter's answer: `Ok(None)` while incomplete; `Ok(Some(len))`
    /// on success (the answer's length); `Err` with the error code.
    pub fn answer(b: &[u8]) -> Result<Option<usize>, String> {
        match parse(b) {
            Parsed::Incomplete => Ok(None),
            Parsed::Bad(code, _) => Err(format!("unreadable answer from the converter ({code})")),
            Parsed::Done(tlvs, len) => {
                for t in &tlvs {
                    if let Tlv::Error { code, value } = t {
                        return Err(format!(
                            "the converter refused: error {code} ({}), value {value}",
                            error_name(*code)
                        ));
                    }
                }
                Ok(Some(len))
            }
        }
    }

    /// An application behind a converter: sends the Connect message first,
    /// reads the converter's answer off the front of the stream, then runs
    /// `inner` (which sees only the destination's bytes). Without a
    /// destination it is `inner` alone.
    pub struct ViaConvert<A> {
        pub inner: A,
        request: Vec<u8>,
        sent: usize,
        answer: Vec<u8>,
        answered: bool,
        /// The converter refused, or answered nonsense.
        pub error: Option<String>,
    }

    impl<A> ViaConvert<A> {
        pub fn new(inner: A, to: Option<SocketAddr>) -> ViaConvert<A> {
            ViaConvert {
                inner,
                request: to.map(connect_message).unwrap_or_default(),
                sent: 0,
                answer: Vec::new(),
                answered: to.is_none(),
                error: None,
            }
        }
    }

    impl<A> std::ops::Deref for ViaConvert<A> {
        type Target = A;
        fn deref(&self) -> &A {
            &self.inner
        }
    }

    impl<E: ByteStream, A: App<E>> App<E> for ViaConvert<A> {
        fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
            if self.answered {
                return self.inner.poll(now, engine);
            }
            if self.error.is_some() || (!engine.is_established() && !engine.is_closed()) {
                return (0, engine.is_closed());
            }
            let mut work = 0;
            if self.sent < self.request.len() {
                let n = engine.send(&self.request[self.sent..]);
                self.sent += n;
                work += n;
            }
            // Read exactly the answer: its header first, then its length.
            let want = match self.answer.get(1) {
                Some(&w) => (w as usize * 4).max(4),
                None => 4,
            };
            if self.answer.len() < want {
                let mut tmp = [0u8; MAX_MESSAGE];
                let n = engine.recv(&mut tmp[..want - self.answer.len()]);
                self.answer.extend_from_slice(&tmp[..n]);
                work += n;
            }
            match answer(&self.answer) {
                Ok(Some(_)) => {
                    self.answered = true;
                    let (w, done) = self.inner.poll(now, engine);
                    return (work + w + 1, done);
                }
                Ok(None) if engine.is_read_closed() || engine.is_closed() => {
                    self.error = Some("the converter closed before answering".into());
                    engine.close();
                }
                Ok(None) => {}
                Err(e) => {
                    self.error = Some(e);
                    engine.close();
                    work += 1;
                }
            }
            (work, engine.is_closed())
        }

        fn wake_fds(&self, out: &mut Vec<(std::os::fd::RawFd, i16)>) {
            self.inner.wake_fds(out)
        }
    }

    pub fn error_name(code: u8) -> &'static str {
        match code {
            error::UNSUPPORTED_VERSION => "unsupported version",
            error::MALFORMED_MESSAGE => "malformed message",
            error::UNSUPPORTED_MESSAGE => "unsupported message",
            error::MISSING_COOKIE => "missing cookie",
            error::NOT_AUTHORIZED => "not authorized",
            error::UNSUPPORTED_TCP_OPTION => "unsupported TCP option",
            error::RESOURCE_EXCEEDED => "resource exceeded",
            error::NETWORK_FAILURE => "network failure",
            error::CONNECTION_RESET => "connection reset",
            error::DESTINATION_UNREACHABLE => "destination unreachable",
            _ => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mem::MemStream;
    use super::*;

    #[test]
    fn messages_round_trip_and_ipv4_is_v4_mapped() {
        let to: SocketAddr = "10.200.0.2:8080".parse().unwrap();
        let m = client::connect_message(to);
        assert_eq!(m.len(), 24);
        assert_eq!(&m[..4], &[1, 6, 0, 0]);
        assert_eq!(&m[4..8], &[tlv::CONNECT, 5, 0x1f, 0x90]);
        assert_eq!(
            &m[8..24],
            &"::ffff:10.200.0.2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            parse(&m),
            Parsed::Done(
                vec![Tlv::Connect {
                    to,
                    options: vec![]
                }],
                24
            )
        );
        for cut in 0..m.len() {
            assert_eq!(parse(&m[..cut]), Parsed::Incomplete, "{cut}");
        }
        let all = vec![
            Tlv::Info,
            Tlv::Connect {
                to: "[fd00::1]:443".parse().unwrap(),
                options: vec![2, 4, 5, 0xb4],
            },
            Tlv::ExtendedTcpHeader(vec![2, 4, 5, 0xb4, 4, 2, 0, 0]),
            Tlv::SupportedExtensions(vec![30]),
            Tlv::Cookie(vec![1, 2, 3, 4, 5, 6]),
            Tlv::Error { code: 97, value: 0 },
        ];
        let m = encode(&all);
        assert_eq!(m.len() % 4, 0);
        let Parsed::Done(back, n) = parse(&m) else {
            panic!("parse");
        };
        assert_eq!(n, m.len());
        // Padding shows up in variable-length values; the rest round-trips.
        assert_eq!(back[..2], all[..2]);
        assert_eq!(back[3], all[3]);
        assert_eq!(back[5], all[5]);
        assert_eq!(error_message(1, 0), vec![1, 2, 0, 0, tlv::ERROR, 1, 1, 0]);
    }

    #[test]
    fn connect_failures_map_to_the_rfc_codes() {
        assert_eq!(
            connect_error(ConnectError::Refused),
            error::CONNECTION_RESET
        );
        assert_eq!(
            connect_error(ConnectError::TimedOut),
            error::DESTINATION_UNREACHABLE
        );
        assert_eq!(
            connect_error(ConnectError::HostUnreachable),
            error::DESTINATION_UNREACHABLE
        );
        assert_eq!(
            connect_error(ConnectError::NetworkUnreachable),
            error::NETWORK_FAILURE
        );
        assert_eq!(
            connect_error(ConnectError::Resources),
            error::RESOURCE_EXCEEDED
        );
    }

    #[test]
    fn malformed_messages_get_the_right_error() {
        assert_eq!(
            parse(&[2, 1, 0, 0]),
            Parsed::Bad(error::UNSUPPORTED_VERSION, 1)
        );
        assert_eq!(
            parse(&[1, 0, 0, 0]),
            Parsed::Bad(error::MALFORMED_MESSAGE, 1)
        );
        // A TLV of length 0, a TLV past the message, a short Connect.
        assert!(matches!(
            parse(&[1, 2, 0, 0, 10, 0, 0, 0]),
            Parsed::Bad(1, _)
        ));
        assert!(matches!(
            parse(&[1, 2, 0, 0, 10, 5, 0, 0]),
            Parsed::Bad(1, _)
        ));
        assert!(matches!(
            parse(&[1, 2, 0, 0, 10, 1, 0, 0]),
            Parsed::Bad(1, _)
        ));
        assert!(matches!(
            parse(&[1, 3, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0]),
            Parsed::Bad(1, _)
        ));
        assert_eq!(
            parse(&[1, 2, 0, 0, 99, 1, 0, 0]),
            Parsed::Done(vec![Tlv::Unknown(99)], 8)
        );
        assert!(options_supported(&[1, 1, 2, 4, 5, 0xb4, 0, 0]));
        assert!(!options_supported(&[30, 4, 0, 0]));
        assert!(!options_supported(&[2]));
    }

    fn converter(allow: &[&str]) -> Rc<RefCell<Converter>> {
        Converter::shared(
            AllowList::parse(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
        )
    }

    fn answer_of(conv: &Rc<RefCell<Converter>>, incoming: &[u8]) -> MemStream {
        let mut app = Converter::connection(conv);
        let mut s = MemStream {
            incoming: incoming.to_vec(),
            ..Default::default()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !s.closed && s.sent.len() < 4 {
            app.poll(Instant::ZERO, &mut s);
            assert!(std::time::Instant::now() < deadline);
        }
        s
    }

    #[test]
    fn info_unauthorised_and_malformed_are_answered_and_closed() {
        let conv = converter(&["127.0.0.1"]);
        let s = answer_of(&conv, &encode(&[Tlv::Info]));
        let Parsed::Done(t, _) = parse(&s.sent) else {
            panic!("{:?}", s.sent);
        };
        assert_eq!(
            t,
            vec![Tlv::SupportedExtensions(SUPPORTED_EXTENSIONS.to_vec())]
        );
        assert!(s.closed);
        let mut msg = client::connect_message("10.9.9.9:80".parse().unwrap());
        msg.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        let s = answer_of(&conv, &msg);
        assert_eq!(s.sent, error_message(error::NOT_AUTHORIZED, 0));
        assert!(s.closed && s.incoming.is_empty(), "the data is dropped");
        let s = answer_of(&conv, &[1, 2, 0, 0, 10, 0, 0, 0, 9, 9]);
        assert_eq!(s.sent, error_message(error::MALFORMED_MESSAGE, 4));
        let s = answer_of(&conv, &[7, 2, 0, 0, 10, 0, 0, 0, 9, 9]);
        assert_eq!(s.sent, error_message(error::UNSUPPORTED_VERSION, 1));
        let c = conv.borrow().counters.clone();
        assert_eq!((c.info, c.not_authorized, c.malformed), (1, 1, 2));
    }

    #[test]
    fn connect_relays_after_the_extended_header_and_keeps_early_data() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let conv = converter(&["127.0.0.0/8"]);
        let mut app = Converter::connection(&conv);
        let mut s = MemStream {
            incoming: client::connect_message(to),
            ..Default::default()
        };
        s.incoming.extend_from_slice(b"early bytes");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.sent.is_empty() {
            app.poll(Instant::ZERO, &mut s);
            assert!(std::time::Instant::now() < deadline);
        }
        let len = client::answer(&s.sent).unwrap().unwrap();
        assert_eq!(len, s.sent.len());
        let Parsed::Done(t, _) = parse(&s.sent) else {
            panic!()
        };
        let Tlv::ExtendedTcpHeader(opts) = &t[0] else {
            panic!("{t:?}")
        };
        assert_eq!(opts[0], 2, "MSS first: {opts:?}");
        s.sent.clear();
        let (mut backend, _) = listener.accept().unwrap();
        let mut got = [0u8; 11];
        while !s.incoming.is_empty() {
            app.poll(Instant::ZERO, &mut s);
        }
        backend.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"early bytes");
        backend.write_all(b"answer").unwrap();
        while s.sent.len() < 6 {
            app.poll(Instant::ZERO, &mut s);
            assert!(std::time::Instant::now() < deadline);
        }
        assert_eq!(s.sent, b"answer");
        // A refused destination: Connection Reset.
        drop(listener);
        let s = answer_of(&conv, &client::connect_message(to));
        assert_eq!(s.sent, error_message(error::CONNECTION_RESET, 0));
        assert!(client::answer(&s.sent)
            .unwrap_err()
            .contains("connection reset"));
    }
}
