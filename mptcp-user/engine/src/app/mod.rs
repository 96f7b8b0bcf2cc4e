//! Applications over the byte-stream seam ([`ByteStream`]): what a server
//! or client does with a connection's bytes. The same code runs inside the
//! AF_XDP worker loop and in the simulator.
//!
//! - [`Echo`], [`Discard`], [`Source`] (send the test pattern, check what
//!   comes back), and the reverse direction ([`reverse`]: iperf3 -R style).
//! - [`pattern`]: the one test pattern, addressable at any offset, so a
//!   receiver checks a stream as it arrives without keeping a copy.

pub mod pattern;
pub mod reverse;

pub use pattern::Pattern;
pub use reverse::{PatternSink, PatternSource, Transfer, UNTIL_CLOSED};

use crate::io::ByteStream;
use crate::time::Instant;

/// The application side, run inside the worker's loop.
pub trait App<E> {
    /// Moves bytes between the application and `engine`; returns how much
    /// work it did (0 = none) and whether it is finished.
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool);

    /// Descriptors (with poll events) whose readiness should end the
    /// worker's sleep: an application that waits on a kernel socket (a
    /// backend) adds it here, one per connection.
    fn wake_fds(&self, _out: &mut Vec<(std::os::fd::RawFd, i16)>) {}
}

thread_local! {
    /// One staging buffer per thread (one engine per worker thread) for
    /// the echo and discard applications, so a quiet connection costs none.
    static APP_SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; 64 << 10].into_boxed_slice());
}

/// Sends every byte back. Bytes the engine cannot take yet wait in a
/// buffer of the connection's own, freed once sent.
#[derive(Default)]
pub struct Echo {
    pending: Vec<u8>,
    start: usize,
    pub bytes: u64,
    closing: bool,
}

impl<E: ByteStream> App<E> for Echo {
    fn poll(&mut self, _now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        if self.start < self.pending.len() {
            let n = engine.send(&self.pending[self.start..]);
            self.start += n;
            work += n;
            if self.start < self.pending.len() {
                return (work, engine.is_closed());
            }
            self.pending = Vec::new();
            self.start = 0;
        }
        APP_SCRATCH.with_borrow_mut(|buf| loop {
            let n = engine.recv(buf);
            self.bytes += n as u64;
            work += n;
            if n == 0 {
                break;
            }
            let sent = engine.send(&buf[..n]);
            if sent < n {
                self.pending.extend_from_slice(&buf[sent..n]);
                break;
            }
        });
        if self.pending.is_empty() && engine.is_read_closed() && !self.closing {
            engine.close();
            self.closing = true;
            work += 1;
        }
        (work, engine.is_closed())
    }
}

/// Reads and drops every byte.
#[derive(Default)]
pub struct Discard {
    pub bytes: u64,
    closing: bool,
}

impl<E: ByteStream> App<E> for Discard {
    fn poll(&mut self, _now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        APP_SCRATCH.with_borrow_mut(|buf| loop {
            let n = engine.recv(buf);
            if n == 0 {
                break;
            }
            self.bytes += n as u64;
            work += n;
        });
        if engine.is_read_closed() && !self.closing {
            engine.close();
            self.closing = true;
            work += 1;
        }
        (work, engine.is_closed())
    }
}

/// Sends `total` pattern bytes (or until `deadline`), reads what comes back,
/// checks it against the pattern, then closes.
pub struct Source {
    pub total: u64,
    pub deadline: Option<Instant>,
    pub sent: u64,
    pub received: u64,
    /// Received bytes that differed from the pattern.
    pub mismatches: u64,
    chunk: Box<[u8]>,
    rbuf: Box<[u8]>,
    closed: bool,
    /// The peer closed after we did; the transfer is complete.
    pub finished: bool,
}

impl Source {
    pub fn new(total: u64, deadline: Option<Instant>) -> Source {
        Source {
            total,
            deadline,
            sent: 0,
            received: 0,
            mismatches: 0,
            chunk: vec![0u8; 64 << 10].into_boxed_slice(),
            rbuf: vec![0u8; 256 << 10].into_boxed_slice(),
            closed: false,
            finished: false,
        }
    }
}

impl<E: ByteStream> App<E> for Source {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        if !engine.is_established() && !engine.is_closed() {
            return (0, false);
        }
        let time_up = self.deadline.is_some_and(|d| now >= d);
        while !self.closed && self.sent < self.total && !time_up {
            let n = (self.total - self.sent).min(self.chunk.len() as u64) as usize;
            Pattern::STREAM.fill(self.sent, &mut self.chunk[..n]);
            let accepted = engine.send(&self.chunk[..n]);
            self.sent += accepted as u64;
            work += accepted;
            if accepted < n {
                break;
            }
        }
        loop {
            let n = engine.recv(&mut self.rbuf);
            if n == 0 {
                break;
            }
            self.mismatches += Pattern::STREAM.mismatches(self.received, &self.rbuf[..n]);
            self.received += n as u64;
            work += n;
        }
        if !self.closed && (self.sent >= self.total || time_up) {
            engine.close();
            self.closed = true;
            work += 1;
        }
        self.finished = engine.is_closed() || (self.closed && engine.is_read_closed());
        (work, self.finished)
    }
}
