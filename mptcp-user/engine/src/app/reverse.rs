//! The reverse direction (`connect --reverse` against `serve --mode source`),
//! iperf3 -R style: the server generates the data, the client receives it.
//!
//! iperf3 tells its server what to send over a control connection; here the
//! client's first 8 bytes on the data connection do it: the number of bytes
//! wanted, big-endian, or [`UNTIL_CLOSED`] for "until I close my side". The
//! server sends the test pattern ([`Pattern::STREAM`], from offset 0)
//! and closes when the count is reached or the client has closed.

use super::{App, Pattern, Source};
use crate::io::ByteStream;
use crate::time::Instant;

/// Request for a transfer that ends when the client closes.
pub const UNTIL_CLOSED: u64 = u64::MAX;

const REQUEST_LEN: usize = 8;
const CHUNK: usize = 64 << 10;

/// `serve --mode source`: reads the request, sends that many pattern bytes.
pub struct PatternSource {
    request: [u8; REQUEST_LEN],
    request_len: usize,
    /// What the client asked for (known once the request is complete).
    pub wanted: Option<u64>,
    pub sent: u64,
    /// Pattern bytes for `[filled_at, filled_at + filled_len)`, refilled once
    /// they are all sent, so a partial `send` costs no refill.
    chunk: Box<[u8]>,
    filled_at: u64,
    filled_len: usize,
    drain: Box<[u8]>,
    closing: bool,
}

impl Default for PatternSource {
    fn default() -> PatternSource {
        PatternSource {
            request: [0; REQUEST_LEN],
            request_len: 0,
            wanted: None,
            sent: 0,
            chunk: vec![0u8; CHUNK].into_boxed_slice(),
            filled_at: 0,
            filled_len: 0,
            drain: vec![0u8; 16 << 10].into_boxed_slice(),
            closing: false,
        }
    }
}

impl<E: ByteStream> App<E> for PatternSource {
    fn poll(&mut self, _now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = 0;
        if self.wanted.is_none() {
            let n = engine.recv(&mut self.request[self.request_len..]);
            self.request_len += n;
            work += n;
            if self.request_len == REQUEST_LEN {
                self.wanted = Some(u64::from_be_bytes(self.request));
            }
        }
        if self.wanted.is_some() {
            // Anything after the request is not ours to interpret: dropped.
            loop {
                let n = engine.recv(&mut self.drain);
                if n == 0 {
                    break;
                }
                work += n;
            }
        }
        // The client closing its side ends the transfer (time-based runs),
        // and a client that closes before asking gets nothing.
        let stop = engine.is_read_closed();
        let wanted = self.wanted.unwrap_or(0);
        while !stop && !self.closing && self.sent < wanted {
            if self.sent >= self.filled_at + self.filled_len as u64 {
                self.filled_at = self.sent;
                self.filled_len = (wanted - self.sent).min(CHUNK as u64) as usize;
                Pattern::STREAM.fill(self.filled_at, &mut self.chunk[..self.filled_len]);
            }
            let from = (self.sent - self.filled_at) as usize;
            let accepted = engine.send(&self.chunk[from..self.filled_len]);
            self.sent += accepted as u64;
            work += accepted;
            if accepted == 0 {
                break;
            }
        }
        if !self.closing && (stop || (self.wanted.is_some() && self.sent >= wanted)) {
            engine.close();
            self.closing = true;
            work += 1;
        }
        (work, engine.is_closed())
    }
}

/// `connect --reverse`: asks for `wanted` bytes (or [`UNTIL_CLOSED`] and
/// closes at `deadline`), receives and checks them against the pattern.
pub struct PatternSink {
    pub wanted: u64,
    pub deadline: Option<Instant>,
    request_sent: usize,
    pub received: u64,
    /// Received bytes that differed from the pattern.
    pub mismatches: u64,
    rbuf: Box<[u8]>,
    closed: bool,
    /// The server closed and so did we: the transfer is complete.
    pub finished: bool,
}

impl PatternSink {
    pub fn new(wanted: u64, deadline: Option<Instant>) -> PatternSink {
        PatternSink {
            wanted,
            deadline,
            request_sent: 0,
            received: 0,
            mismatches: 0,
            rbuf: vec![0u8; 256 << 10].into_boxed_slice(),
            closed: false,
            finished: false,
        }
    }

    /// Bytes of the request written so far (what this side sent).
    pub fn sent(&self) -> u64 {
        self.request_sent as u64
    }
}

impl<E: ByteStream> App<E> for PatternSink {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        if !engine.is_established() && !engine.is_closed() {
            return (0, false);
        }
        let mut work = 0;
        if self.request_sent < REQUEST_LEN && !self.closed {
            let request = self.wanted.to_be_bytes();
            let n = engine.send(&request[self.request_sent..]);
            self.request_sent += n;
            work += n;
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
        let time_up = self.deadline.is_some_and(|d| now >= d);
        // Time-based: our close tells the server to stop; what it had in
        // flight still arrives before its FIN. Count-based: the server closes.
        if !self.closed && (time_up || engine.is_read_closed()) {
            engine.close();
            self.closed = true;
            work += 1;
        }
        self.finished = engine.is_closed() || (self.closed && engine.is_read_closed());
        (work, self.finished)
    }
}

/// What `connect` runs: send the pattern (and check any echo), or receive it.
pub enum Transfer {
    Send(Source),
    Receive(PatternSink),
}

impl Transfer {
    pub fn is_reverse(&self) -> bool {
        matches!(self, Transfer::Receive(_))
    }
    /// Application bytes this side wrote.
    pub fn sent(&self) -> u64 {
        match self {
            Transfer::Send(s) => s.sent,
            Transfer::Receive(r) => r.sent(),
        }
    }
    pub fn received(&self) -> u64 {
        match self {
            Transfer::Send(s) => s.received,
            Transfer::Receive(r) => r.received,
        }
    }
    /// Bytes of payload in the measured direction.
    pub fn measured(&self) -> u64 {
        match self {
            Transfer::Send(s) => s.sent,
            Transfer::Receive(r) => r.received,
        }
    }
    pub fn mismatches(&self) -> u64 {
        match self {
            Transfer::Send(s) => s.mismatches,
            Transfer::Receive(r) => r.mismatches,
        }
    }
    pub fn finished(&self) -> bool {
        match self {
            Transfer::Send(s) => s.finished,
            Transfer::Receive(r) => r.finished,
        }
    }
    /// A count-based receive that ended short (the server sent less).
    pub fn shortfall(&self) -> Option<(u64, u64)> {
        match self {
            Transfer::Receive(r) if r.wanted != UNTIL_CLOSED && r.received != r.wanted => {
                Some((r.wanted, r.received))
            }
            _ => None,
        }
    }
}

impl<E: ByteStream> App<E> for Transfer {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        match self {
            Transfer::Send(s) => s.poll(now, engine),
            Transfer::Receive(r) => r.poll(now, engine),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory byte stream: `send` takes what fits in `window`, which
    /// the test opens again as if the peer had acknowledged.
    #[derive(Default)]
    struct Pipe {
        incoming: Vec<u8>,
        read_closed: bool,
        outgoing: Vec<u8>,
        window: usize,
        closed: bool,
    }

    impl ByteStream for Pipe {
        fn send(&mut self, data: &[u8]) -> usize {
            let n = data.len().min(self.window);
            self.outgoing.extend_from_slice(&data[..n]);
            self.window -= n;
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
            self.read_closed && self.incoming.is_empty()
        }
        fn is_closed(&self) -> bool {
            self.closed && self.is_read_closed()
        }
    }

    fn pipe(window: usize) -> Pipe {
        Pipe {
            window,
            ..Pipe::default()
        }
    }

    #[test]
    fn source_sends_exactly_the_requested_pattern_then_closes() {
        let wanted: u64 = 200_000;
        let mut source = PatternSource::default();
        // The request arrives in two pieces; the window forces partial sends.
        let mut stream = pipe(10_007);
        stream
            .incoming
            .extend_from_slice(&wanted.to_be_bytes()[..3]);
        source.poll(Instant::ZERO, &mut stream);
        assert!(stream.outgoing.is_empty());
        stream
            .incoming
            .extend_from_slice(&wanted.to_be_bytes()[3..]);
        for _ in 0..100 {
            stream.window = 10_007;
            source.poll(Instant::ZERO, &mut stream);
        }
        assert_eq!(stream.outgoing.len() as u64, wanted);
        assert_eq!(Pattern::STREAM.mismatches(0, &stream.outgoing), 0);
        assert!(stream.closed);
    }

    #[test]
    fn source_stops_when_the_client_closes() {
        let mut source = PatternSource::default();
        let mut stream = pipe(1000);
        stream
            .incoming
            .extend_from_slice(&UNTIL_CLOSED.to_be_bytes());
        source.poll(Instant::ZERO, &mut stream);
        let before = stream.outgoing.len();
        assert_eq!(before, 1000);
        assert!(!stream.closed);
        stream.read_closed = true;
        stream.window = 1000;
        source.poll(Instant::ZERO, &mut stream);
        assert_eq!(stream.outgoing.len(), before);
        assert!(stream.closed);
        assert_eq!(Pattern::STREAM.mismatches(0, &stream.outgoing), 0);
    }

    #[test]
    fn sink_requests_counts_and_checks() {
        let mut sink = PatternSink::new(5000, None);
        let mut stream = pipe(usize::MAX);
        let mut data = vec![0u8; 5000];
        Pattern::STREAM.fill(0, &mut data);
        data[1234] ^= 1;
        stream.incoming = data;
        stream.read_closed = true;
        let (_, done) = sink.poll(Instant::ZERO, &mut stream);
        assert_eq!(stream.outgoing, 5000u64.to_be_bytes());
        assert_eq!(sink.received, 5000);
        assert_eq!(sink.mismatches, 1);
        assert!(done && sink.finished);
    }

    #[test]
    fn sink_closes_at_its_deadline_and_keeps_reading() {
        let deadline = Instant::ZERO + std::time::Duration::from_secs(1);
        let mut sink = PatternSink::new(UNTIL_CLOSED, Some(deadline));
        let mut stream = pipe(usize::MAX);
        sink.poll(Instant::ZERO, &mut stream);
        assert!(!stream.closed);
        let (_, done) = sink.poll(deadline, &mut stream);
        assert!(stream.closed && !done);
        let mut data = vec![0u8; 100];
        Pattern::STREAM.fill(0, &mut data);
        stream.incoming = data;
        stream.read_closed = true;
        let (_, done) = sink.poll(deadline, &mut stream);
        assert!(done);
        assert_eq!((sink.received, sink.mismatches), (100, 0));
    }
}
