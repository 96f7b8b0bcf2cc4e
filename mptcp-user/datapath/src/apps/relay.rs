//! What the proxies (SOCKS5, the RFC 8803 converter) share: the allow list
//! of destinations, the credentials file, a resolver off the packet path,
//! and non-blocking connects to the destination from the worker loop.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mptcp_engine::time::Instant;

/// Destinations a proxy may connect to (`--allow CIDR`, repeatable). Empty:
/// nothing is allowed, so a proxy is never open by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<(IpAddr, u8)>,
}

/// IPv4-mapped IPv6 addresses are their IPv4 address for the allow list.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl AllowList {
    /// Parses `ADDR/LEN` (or a bare address: that host only).
    pub fn parse(cidrs: &[String]) -> Result<AllowList, String> {
        let mut nets = Vec::new();
        for c in cidrs {
            let (addr, len) = match c.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (c.as_str(), None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| {
                format!("--allow {c}: not an address or CIDR (10.0.0.0/8, fd00::/8)")
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("--allow {c}: prefix length must be 0 to {max}"))?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(AllowList { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - *len as u32).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - *len as u32).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

/// Credentials (`--users FILE`: one `user:password` a line; blank lines and
/// lines starting with `#` are skipped).
#[derive(Clone, Debug, Default)]
pub struct Users {
    users: HashMap<Vec<u8>, Vec<u8>>,
}

impl Users {
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (u, p) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:password", i + 1))?;
            if u.is_empty() || u.len() > 255 || p.len() > 255 {
                return Err(format!(
                    "line {}: user and password are 1 to 255 bytes (RFC 1929)",
                    i + 1
                ));
            }
            users.insert(u.as_bytes().to_vec(), p.as_bytes().to_vec());
        }
        if users.is_empty() {
            return Err("no user:password line".into());
        }
        Ok(Users { users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// True when `user` exists with `password` (compared in constant time).
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let Some(want) = self.users.get(user) else {
            return false;
        };
        want.len() == password.len()
            && want
                .iter()
                .zip(password)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

type Lookup = (u64, String, u16);
type Answer = (u64, Result<Vec<SocketAddr>, String>);

/// Name resolution on helper threads (getaddrinfo blocks), so the worker
/// never waits: `lookup` queues a request, `take` collects the answer; a
/// socket pair wakes the worker's poll() when one is ready. The queue is
/// bounded: a full queue refuses the lookup (counted by the caller).
pub struct Resolver {
    tx: SyncSender<Lookup>,
    rx: Receiver<Answer>,
    wake: UnixStream,
    answers: HashMap<u64, Result<Vec<SocketAddr>, String>>,
    cancelled: HashSet<u64>,
    next: u64,
}

/// Requests waiting for a resolver thread, at most.
const RESOLVE_QUEUE: usize = 1024;
/// Resolver threads.
const RESOLVERS: usize = 4;

impl Resolver {
    pub fn new() -> std::io::Result<Resolver> {
        let (tx, requests) = std::sync::mpsc::sync_channel::<Lookup>(RESOLVE_QUEUE);
        let (answer_tx, rx) = std::sync::mpsc::channel::<Answer>();
        let (wake, notify) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        notify.set_nonblocking(true)?;
        let requests = Arc::new(Mutex::new(requests));
        for i in 0..RESOLVERS {
            let requests = Arc::clone(&requests);
            let answer_tx = answer_tx.clone();
            let mut notify = notify.try_clone()?;
            std::thread::Builder::new()
                .name(format!("resolver-{i}"))
                .spawn(move || loop {
                    let next = requests.lock().map(|r| r.recv());
                    let Ok(Ok((id, host, port))) = next else {
                        return;
                    };
                    let answer = (host.as_str(), port)
                        .to_socket_addrs()
                        .map(|a| a.collect::<Vec<_>>())
                        .map_err(|e| e.to_string());
                    if answer_tx.send((id, answer)).is_err() {
                        return;
                    }
                    // A full socket buffer already means "wake up".
                    let _ = notify.write(&[1]);
                })?;
        }
        Ok(Resolver {
            tx,
            rx,
            wake,
            answers: HashMap::new(),
            cancelled: HashSet::new(),
            next: 0,
        })
    }

    /// Queues a lookup; `None` when the queue is full.
    pub fn lookup(&mut self, host: &str, port: u16) -> Option<u64> {
        self.next += 1;
        match self.tx.try_send((self.next, host.to_string(), port)) {
            Ok(()) => Some(self.next),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => None,
        }
    }

    /// The answer to lookup `id`, once there.
    pub fn take(&mut self, id: u64) -> Option<Result<Vec<SocketAddr>, String>> {
        let mut sink = [0u8; 64];
        while matches!(self.wake.read(&mut sink), Ok(n) if n > 0) {}
        while let Ok((i, answer)) = self.rx.try_recv() {
            if !self.cancelled.remove(&i) {
                self.answers.insert(i, answer);
            }
        }
        self.answers.remove(&id)
    }

    /// The asker went away: its answer is dropped when it comes.
    pub fn cancel(&mut self, id: u64) {
        if self.answers.remove(&id).is_none() {
            self.cancelled.insert(id);
        }
    }

    /// Readable when an answer is waiting.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}

/// How a connection attempt to a destination failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    Refused,
    NetworkUnreachable,
    HostUnreachable,
    TimedOut,
    /// Out of descriptors, buffers or memory here.
    Resources,
    Other,
}

impl ConnectError {
    pub fn from_io(e: &std::io::Error) -> ConnectError {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ConnectError::Refused,
            Some(libc::ENETUNREACH) => ConnectError::NetworkUnreachable,
            Some(libc::EHOSTUNREACH) => ConnectError::HostUnreachable,
            Some(libc::ETIMEDOUT) => ConnectError::TimedOut,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                ConnectError::Resources
            }
            _ => ConnectError::Other,
        }
    }
}

/// Time allowed for a destination to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A non-blocking connect under way (the worker polls for POLLOUT).
pub struct Connecting {
    socket: socket2::Socket,
    pub to: SocketAddr,
    deadline: Instant,
}

impl Connecting {
    pub fn start(to: SocketAddr, now: Instant) -> Result<Connecting, ConnectError> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM.cloexec(),
            None,
        )
        .map_err(|e| ConnectError::from_io(&e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| ConnectError::from_io(&e))?;
        match socket.connect(&to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(ConnectError::from_io(&e)),
        }
        Ok(Connecting {
            socket,
            to,
            deadline: now + CONNECT_TIMEOUT,
        })
    }

    /// `None` while under way; then the connected stream or why not.
    pub fn poll(&mut self, now: Instant) -> Option<Result<std::net::TcpStream, ConnectError>> {
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        if ready <= 0 {
            return (now >= self.deadline).then_some(Err(ConnectError::TimedOut));
        }
        match self.socket.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Some(Err(ConnectError::from_io(&e))),
        }
        match self.socket.peer_addr() {
            Ok(_) => {
                let s = self
                    .socket
                    .try_clone()
                    .map_err(|e| ConnectError::from_io(&e));
                Some(s.map(std::net::TcpStream::from))
            }
            Err(e) => Some(Err(ConnectError::from_io(&e))),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_prefixes_of_either_family() {
        let a = AllowList::parse(&[
            "10.1.0.0/16".into(),
            "192.0.2.7".into(),
            "fd00:1::/32".into(),
        ])
        .unwrap();
        assert!(a.allows("10.1.200.3".parse().unwrap()));
        assert!(!a.allows("10.2.0.1".parse().unwrap()));
        assert!(a.allows("192.0.2.7".parse().unwrap()));
        assert!(!a.allows("192.0.2.8".parse().unwrap()));
        assert!(a.allows("::ffff:10.1.0.1".parse().unwrap()), "v4-mapped");
        assert!(a.allows("fd00:1:ffff::1".parse().unwrap()));
        assert!(!a.allows("fd00:2::1".parse().unwrap()));
        let all = AllowList::parse(&["0.0.0.0/0".into(), "::/0".into()]).unwrap();
        assert!(all.allows("8.8.8.8".parse().unwrap()) && all.allows("::1".parse().unwrap()));
        assert!(!AllowList::default().allows("127.0.0.1".parse().unwrap()));
        assert!(AllowList::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(AllowList::parse(&["nonsense".into()]).is_err());
    }

    #[test]
    fn users_file_is_parsed_and_checked() {
        let u = Users::parse("# comment\nalice:s3cret\n\nbob:pa:ss\r\n").unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.check(b"alice", b"s3cret"));
        assert!(u.check(b"bob", b"pa:ss"));
        assert!(!u.check(b"alice", b"s3cre"));
        assert!(!u.check(b"alice", b"s3cret!"));
        assert!(!u.check(b"carol", b""));
        assert!(Users::parse("nocolon\n").is_err());
        assert!(Users::parse("\n# nothing\n").is_err());
        assert!(Users::parse(":empty-user\n").is_err());
    }

    #[test]
    fn resolver_answers_off_thread_and_wakes() {
        let mut r = Resolver::new().unwrap();
        let id = r.lookup("localhost", 80).unwrap();
        let mut pfd = libc::pollfd {
            fd: r.wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1, "woken");
        let answer = r.take(id).expect("answered").expect("resolved");
        assert!(answer
            .iter()
            .all(|a| a.port() == 80 && a.ip().is_loopback()));
        let bad = r.lookup("name.invalid", 80).unwrap();
        let gone = r.lookup("localhost", 81).unwrap();
        r.cancel(gone);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let answer = loop {
            if let Some(a) = r.take(bad) {
                break a;
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(answer.is_err());
    }

    #[test]
    fn connect_errors_are_classified() {
        let e = |n| ConnectError::from_io(&std::io::Error::from_raw_os_error(n));
        assert_eq!(e(libc::ECONNREFUSED), ConnectError::Refused);
        assert_eq!(e(libc::ENETUNREACH), ConnectError::NetworkUnreachable);
        assert_eq!(e(libc::EHOSTUNREACH), ConnectError::HostUnreachable);
        assert_eq!(e(libc::ETIMEDOUT), ConnectError::TimedOut);
        assert_eq!(e(libc::EMFILE), ConnectError::Resources);
        assert_eq!(e(libc::EACCES), ConnectError::Other);
    }

    #[test]
    fn connecting_reports_refusal_and_success() {
        let now = Instant::ZERO;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ok_to = listener.local_addr().unwrap();
        drop(listener);
        // Nothing listens there now.
        let mut c = Connecting::start(ok_to, now).unwrap();
        let r = loop {
            if let Some(r) = c.poll(now) {
                break r;
            }
        };
        assert_eq!(r.err(), Some(ConnectError::Refused));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = Connecting::start(listener.local_addr().unwrap(), now).unwrap();
        let r = loop {
            if let Some(r) = c.poll(now) {
                break r;
            }
        };
        assert!(r.is_ok());
        let mut c = Connecting::start("127.0.0.1:9".parse().unwrap(), now).unwrap();
        assert_eq!(
            c.poll(now + CONNECT_TIMEOUT + Duration::from_secs(1))
                .and_then(|r| r.err())
                .map(|e| e == ConnectError::Refused || e == ConnectError::TimedOut),
            Some(true)
        );
    }
}
