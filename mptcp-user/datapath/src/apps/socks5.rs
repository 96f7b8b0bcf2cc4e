//! A SOCKS5 proxy (RFC 1928, CONNECT only) with username/password
//! authentication (RFC 1929), as MPTCP operators deploy in front of TCP
//! services: the client's connection ends in the engine, the destination is
//! reached over kernel TCP ([`Forward`]).
//!
//! Destinations must be on the allow list; names are resolved by the
//! [`Resolver`] threads, connects are non-blocking: the worker never waits.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

use mptcp_engine::app::App;
use mptcp_engine::io::ByteStream;
use mptcp_engine::time::Instant;

use super::relay::{AllowList, ConnectError, Connecting, Resolver, Users};
use super::{SubflowFigures, Subflows};
use crate::forward::Forward;

pub const VERSION: u8 = 5;
/// Authentication methods.
pub const NO_AUTH: u8 = 0x00;
pub const USER_PASS: u8 = 0x02;
pub const NO_ACCEPTABLE: u8 = 0xff;
/// Commands.
pub const CONNECT: u8 = 1;
/// Address types.
pub const ATYP_V4: u8 = 1;
pub const ATYP_NAME: u8 = 3;
pub const ATYP_V6: u8 = 4;

/// Reply codes (RFC 1928 section 6).
pub mod reply {
    pub const SUCCEEDED: u8 = 0;
    pub const GENERAL_FAILURE: u8 = 1;
    pub const NOT_ALLOWED: u8 = 2;
    pub const NETWORK_UNREACHABLE: u8 = 3;
    pub const HOST_UNREACHABLE: u8 = 4;
    pub const CONNECTION_REFUSED: u8 = 5;
    pub const TTL_EXPIRED: u8 = 6;
    pub const COMMAND_NOT_SUPPORTED: u8 = 7;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;
}

/// Outcome of parsing a message at the front of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes needed.
    Incomplete,
    /// The message and how many bytes it took.
    Done(T, usize),
    /// Not a valid message.
    Bad(&'static str),
}

/// The client's greeting: the methods it offers.
pub fn parse_greeting(b: &[u8]) -> Parsed<Vec<u8>> {
    let Some(&ver) = b.first() else {
        return Parsed::Incomplete;
    };
    if ver != VERSION {
        return Parsed::Bad("not SOCKS version 5");
    }
    let Some(&n) = b.get(1) else {
        return Parsed::Incomplete;
    };
    if n == 0 {
        return Parsed::Bad("no authentication method offered");
    }
    match b.get(2..2 + n as usize) {
        Some(m) => Parsed::Done(m.to_vec(), 2 + n as usize),
        None => Parsed::Incomplete,
    }
}

/// RFC 1929: user and password.
pub fn parse_user_pass(b: &[u8]) -> Parsed<(Vec<u8>, Vec<u8>)> {
    let Some(&ver) = b.first() else {
        return Parsed::Incomplete;
    };
    if ver != 1 {
        return Parsed::Bad("not username/password version 1");
    }
    let Some(&ulen) = b.get(1) else {
        return Parsed::Incomplete;
    };
    let u_end = 2 + ulen as usize;
    let Some(&plen) = b.get(u_end) else {
        return Parsed::Incomplete;
    };
    let p_end = u_end + 1 + plen as usize;
    if b.len() < p_end {
        return Parsed::Incomplete;
    }
    Parsed::Done((b[2..u_end].to_vec(), b[u_end + 1..p_end].to_vec()), p_end)
}

/// Where the client wants to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Ip(SocketAddr),
    Name(String, u16),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Ip(a) => write!(f, "{a}"),
            Destination::Name(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// A request, or the reply code that refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Connect(Destination),
    Refuse(u8),
}

/// The request (VER CMD RSV ATYP DST.ADDR DST.PORT).
pub fn parse_request(b: &[u8]) -> Parsed<Request> {
    if b.len() < 4 {
        return if b.first().is_some_and(|v| *v != VERSION) {
            Parsed::Bad("not SOCKS version 5")
        } else {
            Parsed::Incomplete
        };
    }
    if b[0] != VERSION {
        return Parsed::Bad("not SOCKS version 5");
    }
    let (cmd, atyp) = (b[1], b[3]);
    let (addr_len, addr_start) = match atyp {
        ATYP_V4 => (4, 4),
        ATYP_V6 => (16, 4),
        ATYP_NAME => match b.get(4) {
            Some(&n) => (n as usize, 5),
            None => return Parsed::Incomplete,
        },
        // The length of an unknown address is unknown: refuse at once.
        _ => return Parsed::Done(Request::Refuse(reply::ADDRESS_TYPE_NOT_SUPPORTED), b.len()),
    };
    let end = addr_start + addr_len + 2;
    if b.len() < end {
        return Parsed::Incomplete;
    }
    let addr = &b[addr_start..addr_start + addr_len];
    let port = u16::from_be_bytes([b[end - 2], b[end - 1]]);
    if cmd != CONNECT {
        return Parsed::Done(Request::Refuse(reply::COMMAND_NOT_SUPPORTED), end);
    }
    let dest = match atyp {
        ATYP_V4 => {
            let a: [u8; 4] = addr.try_into().expect("4 bytes");
            Destination::Ip(SocketAddr::new(Ipv4Addr::from(a).into(), port))
        }
        ATYP_V6 => {
            let a: [u8; 16] = addr.try_into().expect("16 bytes");
            Destination::Ip(SocketAddr::new(Ipv6Addr::from(a).into(), port))
        }
        _ => match std::str::from_utf8(addr) {
            Ok(name) if !name.is_empty() => match name.parse::<IpAddr>() {
                Ok(ip) => Destination::Ip(SocketAddr::new(ip, port)),
                Err(_) => Destination::Name(name.to_string(), port),
            },
            _ => return Parsed::Done(Request::Refuse(reply::HOST_UNREACHABLE), end),
        },
    };
    Parsed::Done(Request::Connect(dest), end)
}

/// A reply with the bound address (or 0.0.0.0:0).
pub fn encode_reply(code: u8, bound: Option<SocketAddr>, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, code, 0]);
    match bound {
        Some(SocketAddr::V6(a)) => {
            out.push(ATYP_V6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(SocketAddr::V4(a)) => {
            out.push(ATYP_V4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        None => out.extend_from_slice(&[ATYP_V4, 0, 0, 0, 0, 0, 0]),
    }
}

/// The reply code for a failed connect.
pub fn connect_reply(e: ConnectError) -> u8 {
    match e {
        ConnectError::Refused => reply::CONNECTION_REFUSED,
        ConnectError::NetworkUnreachable => reply::NETWORK_UNREACHABLE,
        ConnectError::HostUnreachable | ConnectError::TimedOut => reply::HOST_UNREACHABLE,
        ConnectError::Resources | ConnectError::Other => reply::GENERAL_FAILURE,
    }
}

/// Counters of the proxy (JSON numbers in `stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Socks5Counters {
    pub connections: u64,
    pub auth_failed: u64,
    /// Malformed greetings, authentications or requests.
    pub malformed: u64,
    /// Destinations not on the allow list.
    pub not_allowed: u64,
    pub resolve_failed: u64,
    pub connect_failed: u64,
    /// Lookups refused because the resolver queue was full.
    pub resolver_busy: u64,
    pub relayed: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// What the connections of one worker share.
pub struct Socks5Proxy {
    pub allow: AllowList,
    /// `None`: no authentication (`--no-auth`).
    pub users: Option<Users>,
    pub resolver: Resolver,
    pub counters: Socks5Counters,
}

impl Socks5Proxy {
    pub fn shared(
        allow: AllowList,
        users: Option<Users>,
    ) -> std::io::Result<Rc<RefCell<Socks5Proxy>>> {
        Ok(Rc::new(RefCell::new(Socks5Proxy {
            allow,
            users,
            resolver: Resolver::new()?,
            counters: Socks5Counters::default(),
        })))
    }

    pub fn connection(proxy: &Rc<RefCell<Socks5Proxy>>) -> Socks5Conn {
        proxy.borrow_mut().counters.connections += 1;
        Socks5Conn {
            proxy: Rc::clone(proxy),
            state: State::Greeting,
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
    Greeting,
    Auth,
    Request,
    Resolving(u64, u16),
    Connecting(Box<Connecting>, Vec<SocketAddr>),
    Relay(Box<Forward>),
    /// A reply (or method refusal) is queued; close after it.
    Closing,
}

/// One client connection of the proxy.
pub struct Socks5Conn {
    proxy: Rc<RefCell<Socks5Proxy>>,
    state: State,
    /// Handshake bytes not yet parsed (then bytes for the destination).
    inbuf: Vec<u8>,
    out: Vec<u8>,
    client: Option<SocketAddr>,
    dest: Option<Destination>,
    outcome: Option<String>,
    logged: bool,
}

/// Handshake messages are short: more than this unparsed is an attack.
const MAX_HANDSHAKE: usize = 1024;

impl Socks5Conn {
    fn fail(&mut self, code: u8, why: &str) {
        encode_reply(code, None, &mut self.out);
        self.outcome = Some(format!("refused ({why}, reply {code})"));
        self.state = State::Closing;
    }

    /// Starts connecting to the next allowed address.
    fn connect_next(
        &mut self,
        now: Instant,
        mut addrs: Vec<SocketAddr>,
        last: Option<ConnectError>,
    ) {
        while !addrs.is_empty() {
            let to = addrs.remove(0);
            match Connecting::start(to, now) {
                Ok(c) => {
                    self.state = State::Connecting(Box::new(c), addrs);
                    return;
                }
                Err(e) => {
                    if addrs.is_empty() {
                        return self.connect_failed(e);
                    }
                }
            }
        }
        self.connect_failed(last.unwrap_or(ConnectError::Other));
    }

    fn connect_failed(&mut self, e: ConnectError) {
        self.proxy.borrow_mut().counters.connect_failed += 1;
        self.fail(connect_reply(e), &format!("connect: {e:?}"));
    }

    /// Allowed addresses of a destination, or the refusal.
    fn allowed(&mut self, addrs: Vec<SocketAddr>) -> Option<Vec<SocketAddr>> {
        let mut proxy = self.proxy.borrow_mut();
        let ok: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| proxy.allow.allows(a.ip()))
            .collect();
        if ok.is_empty() {
            proxy.counters.not_allowed += 1;
            drop(proxy);
            self.fail(reply::NOT_ALLOWED, "destination not allowed");
            return None;
        }
        Some(ok)
    }

    fn handshake(&mut self, now: Instant) -> usize {
        let mut work = 0;
        loop {
            let before = self.inbuf.len();
            match self.state {
                State::Greeting => match parse_greeting(&self.inbuf) {
                    Parsed::Done(methods, used) => {
                        self.inbuf.drain(..used);
                        let want = if self.proxy.borrow().users.is_some() {
                            USER_PASS
                        } else {
                            NO_AUTH
                        };
                        if methods.contains(&want) {
                            self.out.extend_from_slice(&[VERSION, want]);
                            self.state = if want == USER_PASS {
                                State::Auth
                            } else {
                                State::Request
                            };
                        } else {
                            self.out.extend_from_slice(&[VERSION, NO_ACCEPTABLE]);
                            self.proxy.borrow_mut().counters.auth_failed += 1;
                            self.outcome = Some("refused (no acceptable method)".into());
                            self.state = State::Closing;
                        }
                    }
                    Parsed::Incomplete => break,
                    Parsed::Bad(why) => return work + self.malformed(why),
                },
                State::Auth => match parse_user_pass(&self.inbuf) {
                    Parsed::Done((user, pass), used) => {
                        self.inbuf.drain(..used);
                        let mut proxy = self.proxy.borrow_mut();
                        let ok = proxy.users.as_ref().is_some_and(|u| u.check(&user, &pass));
                        self.out.extend_from_slice(&[1, if ok { 0 } else { 1 }]);
                        if ok {
                            self.state = State::Request;
                        } else {
                            proxy.counters.auth_failed += 1;
                            self.outcome = Some(format!(
                                "refused (bad credentials for user {:?})",
                                String::from_utf8_lossy(&user)
                            ));
                            self.state = State::Closing;
                        }
                    }
                    Parsed::Incomplete => break,
                    Parsed::Bad(why) => return work + self.malformed(why),
                },
                State::Request => match parse_request(&self.inbuf) {
                    Parsed::Done(req, used) => {
                        self.inbuf.drain(..used);
                        match req {
                            Request::Refuse(code) => {
                                self.proxy.borrow_mut().counters.malformed += 1;
                                self.fail(code, "unsupported request");
                            }
                            Request::Connect(Destination::Ip(a)) => {
                                self.dest = Some(Destination::Ip(a));
                                if let Some(ok) = self.allowed(vec![a]) {
                                    self.connect_next(now, ok, None);
                                }
                            }
                            Request::Connect(Destination::Name(h, port)) => {
                                let id = self.proxy.borrow_mut().resolver.lookup(&h, port);
                                self.dest = Some(Destination::Name(h, port));
                                match id {
                                    Some(id) => self.state = State::Resolving(id, port),
                                    None => {
                                        self.proxy.borrow_mut().counters.resolver_busy += 1;
                                        self.fail(reply::GENERAL_FAILURE, "resolver busy");
                                    }
                                }
                            }
                        }
                    }
                    Parsed::Incomplete => break,
                    Parsed::Bad(why) => return work + self.malformed(why),
                },
                _ => break,
            }
            // Every parsed message consumed bytes: the loop ends.
            debug_assert!(self.inbuf.len() < before);
            work += 1;
        }
        if self.inbuf.len() > MAX_HANDSHAKE
            && matches!(self.state, State::Greeting | State::Auth | State::Request)
        {
            work += self.malformed("handshake too long");
        }
        work
    }

    fn malformed(&mut self, why: &str) -> usize {
        self.proxy.borrow_mut().counters.malformed += 1;
        self.outcome = Some(format!("refused (malformed: {why})"));
        self.state = State::Closing;
        1
    }

    fn log(&mut self, relayed: Option<(u64, u64, Option<std::io::ErrorKind>)>) {
        if self.logged {
            return;
        }
        self.logged = true;
        let client = self.client.map_or("?".to_string(), |c| c.to_string());
        let dest = self
            .dest
            .as_ref()
            .map_or("-".to_string(), ToString::to_string);
        match relayed {
            Some((up, down, error)) => eprintln!(
                "socks5 {client} -> {dest}: relayed {up} bytes up, {down} bytes down{}",
                error.map_or(String::new(), |e| format!(" (backend {e:?})"))
            ),
            None => eprintln!(
                "socks5 {client} -> {dest}: {}",
                self.outcome.as_deref().unwrap_or("closed before a request")
            ),
        }
    }
}

impl<E: ByteStream + Subflows> App<E> for Socks5Conn {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        if self.client.is_none() && engine.is_established() {
            let mut f: Vec<SubflowFigures> = Vec::new();
            engine.subflow_figures(&mut f);
            self.client = f.first().map(|f| f.remote);
        }
        if matches!(self.state, State::Greeting | State::Auth | State::Request) {
            let mut tmp = [0u8; 512];
            let n = engine.recv(&mut tmp);
            self.inbuf.extend_from_slice(&tmp[..n]);
            work += n;
            if n > 0 {
                work += self.handshake(now);
            } else if engine.is_read_closed() || engine.is_closed() {
                self.outcome
                    .get_or_insert("client left during the handshake".into());
                self.state = State::Closing;
            }
        }
        if let State::Resolving(id, _port) = self.state {
            let answer = self.proxy.borrow_mut().resolver.take(id);
            match answer {
                Some(Ok(addrs)) if !addrs.is_empty() => {
                    if let Some(ok) = self.allowed(addrs) {
                        self.connect_next(now, ok, None);
                    }
                }
                Some(_) => {
                    self.proxy.borrow_mut().counters.resolve_failed += 1;
                    self.fail(reply::HOST_UNREACHABLE, "name did not resolve");
                }
                None if engine.is_closed() => {
                    self.proxy.borrow_mut().resolver.cancel(id);
                    self.state = State::Closing;
                }
                None => {}
            }
            work += 1;
        }
        if let State::Connecting(c, rest) = &mut self.state {
            match c.poll(now) {
                None => {}
                Some(Ok(stream)) => {
                    let bound = stream.local_addr().ok();
                    match Forward::new(stream) {
                        Ok(mut f) => {
                            encode_reply(reply::SUCCEEDED, bound, &mut self.out);
                            // Bytes the client sent after its request go first.
                            if !self.inbuf.is_empty() {
                                f.prepend_to_backend(&self.inbuf);
                                self.inbuf.clear();
                            }
                            self.proxy.borrow_mut().counters.relayed += 1;
                            self.state = State::Relay(Box::new(f));
                        }
                        Err(e) => {
                            let e = ConnectError::from_io(&e);
                            self.connect_failed(e);
                        }
                    }
                }
                Some(Err(e)) => {
                    let rest = std::mem::take(rest);
                    if rest.is_empty() {
                        self.connect_failed(e);
                    } else {
                        self.connect_next(now, rest, Some(e));
                    }
                }
            }
            work += 1;
        }
        // The reply goes out before any relayed byte.
        if !self.out.is_empty() {
            let n = engine.send(&self.out);
            self.out.drain(..n);
            work += n;
        }
        if !self.out.is_empty() {
            return (work, engine.is_closed());
        }
        match &mut self.state {
            State::Relay(f) => {
                let (before_up, before_down) = (f.forwarded, f.returned);
                let (w, done) = f.poll(now, engine);
                let mut proxy = self.proxy.borrow_mut();
                proxy.counters.bytes_up += f.forwarded - before_up;
                proxy.counters.bytes_down += f.returned - before_down;
                drop(proxy);
                if done {
                    let figures = (f.forwarded, f.returned, f.error);
                    self.log(Some(figures));
                }
                (work + w, done)
            }
            State::Closing => {
                engine.close();
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
            State::Resolving(..) => {
                out.push((self.proxy.borrow().resolver.wake_fd(), libc::POLLIN))
            }
            State::Connecting(c, _) => out.push((c.fd(), libc::POLLOUT)),
            State::Relay(f) => App::<E>::wake_fds(f.as_ref(), out),
            _ => {}
        }
    }
}

impl Drop for Socks5Conn {
    fn drop(&mut self) {
        if let State::Resolving(id, _) = self.state {
            if let Ok(mut p) = self.proxy.try_borrow_mut() {
                p.resolver.cancel(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_and_credentials_parse_byte_by_byte() {
        let g = [5, 2, 0, 2, 99];
        for cut in 0..4 {
            assert_eq!(parse_greeting(&g[..cut]), Parsed::Incomplete, "{cut}");
        }
        assert_eq!(parse_greeting(&g), Parsed::Done(vec![0, 2], 4));
        assert!(matches!(parse_greeting(&[4, 1, 0]), Parsed::Bad(_)));
        assert!(matches!(parse_greeting(&[5, 0]), Parsed::Bad(_)));
        let a = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        for cut in 0..a.len() {
            assert_eq!(parse_user_pass(&a[..cut]), Parsed::Incomplete, "{cut}");
        }
        assert_eq!(
            parse_user_pass(&a),
            Parsed::Done((b"bob".to_vec(), b"pw".to_vec()), 8)
        );
        assert!(matches!(parse_user_pass(&[5, 0, 0]), Parsed::Bad(_)));
    }

    #[test]
    fn requests_for_each_address_type() {
        let v4 = [5, 1, 0, 1, 10, 0, 0, 1, 0x1f, 0x90];
        for cut in 0..v4.len() {
            assert_eq!(parse_request(&v4[..cut]), Parsed::Incomplete, "{cut}");
        }
        assert_eq!(
            parse_request(&v4),
            Parsed::Done(
                Request::Connect(Destination::Ip("10.0.0.1:8080".parse().unwrap())),
                10
            )
        );
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse_request(&v6),
            Parsed::Done(
                Request::Connect(Destination::Ip("[fd00::2]:80".parse().unwrap())),
                22
            )
        );
        let mut name = vec![5, 1, 0, 3, 11];
        name.extend_from_slice(b"example.org");
        name.extend_from_slice(&[1, 187]);
        assert_eq!(
            parse_request(&name),
            Parsed::Done(
                Request::Connect(Destination::Name("example.org".into(), 443)),
                18
            )
        );
        // A literal address sent as a name needs no lookup.
        let mut lit = vec![5, 1, 0, 3, 8];
        lit.extend_from_slice(b"10.0.0.9");
        lit.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse_request(&lit),
            Parsed::Done(
                Request::Connect(Destination::Ip("10.0.0.9:80".parse().unwrap())),
                15
            )
        );
        let bind = [5, 2, 0, 1, 10, 0, 0, 1, 0, 80];
        assert_eq!(
            parse_request(&bind),
            Parsed::Done(Request::Refuse(reply::COMMAND_NOT_SUPPORTED), 10)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 9, 1, 2]),
            Parsed::Done(Request::Refuse(reply::ADDRESS_TYPE_NOT_SUPPORTED), 6)
        );
        assert!(matches!(parse_request(&[4, 1, 0, 1]), Parsed::Bad(_)));
    }

    #[test]
    fn replies_carry_the_bound_address() {
        let mut out = Vec::new();
        encode_reply(0, Some("10.0.0.2:4000".parse().unwrap()), &mut out);
        assert_eq!(out, [5, 0, 0, 1, 10, 0, 0, 2, 0x0f, 0xa0]);
        out.clear();
        encode_reply(reply::NOT_ALLOWED, None, &mut out);
        assert_eq!(out, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
        out.clear();
        encode_reply(0, Some("[::1]:1".parse().unwrap()), &mut out);
        assert_eq!(out.len(), 22);
        assert_eq!(
            connect_reply(ConnectError::Refused),
            reply::CONNECTION_REFUSED
        );
    }

    use super::super::mem::MemStream;

    fn proxy(allow: &[&str], users: Option<&str>) -> Rc<RefCell<Socks5Proxy>> {
        let allow =
            AllowList::parse(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        Socks5Proxy::shared(allow, users.map(|u| Users::parse(u).unwrap())).unwrap()
    }

    fn run(app: &mut Socks5Conn, s: &mut MemStream, until: impl Fn(&MemStream) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !until(s) {
            app.poll(Instant::ZERO, s);
            assert!(std::time::Instant::now() < deadline, "sent {:?}", s.sent);
        }
    }

    #[test]
    fn bad_credentials_and_disallowed_destinations_are_refused() {
        let p = proxy(&["127.0.0.1/32"], Some("alice:pw\n"));
        let mut app = Socks5Proxy::connection(&p);
        let mut s = MemStream::default();
        s.incoming.extend_from_slice(&[5, 1, 0]);
        app.poll(Instant::ZERO, &mut s);
        assert_eq!(s.take_sent(), [5, NO_ACCEPTABLE], "password required");
        assert!(s.closed);
        let mut app = Socks5Proxy::connection(&p);
        let mut s = MemStream::default();
        s.incoming.extend_from_slice(&[
            5, 2, 0, 2, 1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'x',
        ]);
        app.poll(Instant::ZERO, &mut s);
        assert_eq!(s.take_sent(), [5, USER_PASS, 1, 1]);
        assert!(s.closed);
        let mut app = Socks5Proxy::connection(&p);
        let mut s = MemStream::default();
        s.incoming
            .extend_from_slice(&[5, 1, 2, 1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w']);
        s.incoming
            .extend_from_slice(&[5, 1, 0, 1, 10, 9, 9, 9, 0, 80]);
        app.poll(Instant::ZERO, &mut s);
        assert_eq!(
            s.take_sent(),
            [
                5,
                USER_PASS,
                1,
                0,
                5,
                reply::NOT_ALLOWED,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                0
            ]
        );
        assert!(s.closed);
        let c = p.borrow().counters.clone();
        assert_eq!((c.auth_failed, c.not_allowed, c.connections), (2, 1, 3));
    }

    #[test]
    fn connects_through_the_resolver_and_relays() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = proxy(&["127.0.0.0/8", "::1/128"], None);
        let mut app = Socks5Proxy::connection(&p);
        let mut s = MemStream::default();
        s.incoming.extend_from_slice(&[5, 1, 0, 5, 1, 0, 3, 9]);
        s.incoming.extend_from_slice(b"localhost");
        s.incoming.extend_from_slice(&port.to_be_bytes());
        s.incoming.extend_from_slice(b"early");
        run(&mut app, &mut s, |s| s.sent.len() >= 12);
        let sent = s.take_sent();
        assert_eq!(&sent[..4], &[5, 0, 5, reply::SUCCEEDED]);
        let (mut backend, _) = listener.accept().unwrap();
        let mut got = [0u8; 5];
        backend.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"early", "bytes after the request are relayed first");
        backend.write_all(b"reply").unwrap();
        run(&mut app, &mut s, |s| s.sent.len() >= 5);
        assert_eq!(s.take_sent(), b"reply");
        // Refused destination port: reply 5.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let mut app = Socks5Proxy::connection(&p);
        let mut s = MemStream::default();
        s.incoming
            .extend_from_slice(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1]);
        s.incoming.extend_from_slice(&dead.to_be_bytes());
        run(&mut app, &mut s, |s| s.sent.len() >= 12);
        assert_eq!(s.sent[3], reply::CONNECTION_REFUSED);
        // A name that does not resolve: reply 4.
        let mut app = Socks5Proxy::connection(&p);
        let mut s = MemStream::default();
        s.incoming.extend_from_slice(&[5, 1, 0, 5, 1, 0, 3, 12]);
        s.incoming.extend_from_slice(b"name.invalid");
        s.incoming.extend_from_slice(&[0, 80]);
        run(&mut app, &mut s, |s| s.sent.len() >= 12);
        assert_eq!(s.sent[3], reply::HOST_UNREACHABLE);
    }
}
