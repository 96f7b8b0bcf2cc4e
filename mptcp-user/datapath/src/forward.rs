//! `serve --mode forward`: relays each connection to a TCP backend over a
//! non-blocking kernel socket driven from the worker loop.

use std::os::fd::AsRawFd;

use mptcp_engine::app::App;
use mptcp_engine::io::ByteStream;
use mptcp_engine::time::Instant;

/// Bytes read at a time from one side for the other.
const RELAY_BUFFER: usize = 256 << 10;

/// Relays the connection to a TCP backend (a non-blocking kernel socket
/// driven from the worker loop), with back-pressure both ways: bytes are
/// taken from one side only when the other has taken the previous batch.
pub struct Forward {
    backend: std::net::TcpStream,
    to_backend: Box<[u8]>,
    tb: (usize, usize),
    to_engine: Box<[u8]>,
    te: (usize, usize),
    backend_eof: bool,
    /// The backend refused more (would block) while the engine held data
    /// for it.
    backend_full: bool,
    backend_shut: bool,
    engine_closed: bool,
    pub forwarded: u64,
    pub returned: u64,
    /// The backend failed (reset, refused); the connection is closed.
    pub error: Option<std::io::ErrorKind>,
}

impl Forward {
    pub fn new(backend: std::net::TcpStream) -> std::io::Result<Forward> {
        backend.set_nonblocking(true)?;
        backend.set_nodelay(true)?;
        Ok(Forward {
            backend,
            // Only for streams that cannot hand out slices, or bytes read
            // before the relay began: allocated when first needed.
            to_backend: Box::default(),
            tb: (0, 0),
            to_engine: vec![0u8; RELAY_BUFFER].into_boxed_slice(),
            te: (0, 0),
            backend_eof: false,
            backend_full: false,
            backend_shut: false,
            engine_closed: false,
            forwarded: 0,
            returned: 0,
            error: None,
        })
    }

    /// Bytes for the backend that arrived before the relay began (a
    /// proxy's handshake read them); they go out first. Call before the
    /// first poll.
    pub fn prepend_to_backend(&mut self, data: &[u8]) {
        let n = data.len().min(RELAY_BUFFER);
        self.to_backend = data[..n].into();
        self.tb = (0, n);
    }

    fn fail(&mut self, kind: std::io::ErrorKind) {
        self.error.get_or_insert(kind);
        self.backend_eof = true;
        self.tb = (0, 0);
        self.te = (0, 0);
    }
}

impl<E: ByteStream> App<E> for Forward {
    fn poll(&mut self, _now: Instant, engine: &mut E) -> (usize, bool) {
        use std::io::{ErrorKind, Read, Write};
        let mut work = 0;
        // Engine -> backend: straight from the engine's receive buffer to
        // the socket (writev), once anything read before (a proxy's
        // handshake) went out; through `to_backend` for other streams.
        while engine.can_read_slices() && self.tb.0 == self.tb.1 {
            let mut failed = None;
            let (backend, blocked) = (&mut self.backend, &mut self.backend_full);
            *blocked = false;
            let n = engine.read_slices(&mut |iov| loop {
                match backend.write_vectored(iov) {
                    Ok(n) => return n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        if e.kind() == ErrorKind::WouldBlock {
                            // Wait for POLLOUT (`wake_fds`).
                            *blocked = true;
                        } else {
                            failed = Some(e.kind());
                        }
                        return 0;
                    }
                }
            });
            self.forwarded += n as u64;
            work += n;
            if let Some(kind) = failed {
                self.fail(kind);
            }
            if n == 0 || failed.is_some() {
                break;
            }
        }
        loop {
            if self.tb.0 == self.tb.1 {
                if engine.can_read_slices() {
                    break;
                }
                if self.to_backend.len() < RELAY_BUFFER {
                    self.to_backend = vec![0u8; RELAY_BUFFER].into_boxed_slice();
                }
                self.tb = (0, engine.recv(&mut self.to_backend));
                if self.tb.1 == 0 {
                    break;
                }
            }
            match self.backend.write(&self.to_backend[self.tb.0..self.tb.1]) {
                Ok(n) => {
                    self.tb.0 += n;
                    self.forwarded += n as u64;
                    work += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(e.kind());
                    break;
                }
            }
        }
        // Backend -> engine.
        loop {
            if self.te.0 == self.te.1 {
                if self.backend_eof {
                    break;
                }
                match self.backend.read(&mut self.to_engine) {
                    Ok(0) => {
                        self.backend_eof = true;
                        break;
                    }
                    Ok(n) => self.te = (0, n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.fail(e.kind());
                        break;
                    }
                }
            }
            let n = engine.send(&self.to_engine[self.te.0..self.te.1]);
            self.te.0 += n;
            self.returned += n as u64;
            work += n;
            if self.te.0 < self.te.1 {
                break;
            }
        }
        if !self.backend_shut && engine.is_read_closed() && self.tb.0 == self.tb.1 {
            let _ = self.backend.shutdown(std::net::Shutdown::Write);
            self.backend_shut = true;
            work += 1;
        }
        if !self.engine_closed && self.backend_eof && self.te.0 == self.te.1 {
            engine.close();
            self.engine_closed = true;
            work += 1;
        }
        if engine.is_closed() && !self.backend_eof {
            // Reset or aborted on the engine side: nothing more will come.
            let _ = self.backend.shutdown(std::net::Shutdown::Both);
            self.backend_eof = true;
        }
        (work, engine.is_closed() && self.backend_eof)
    }

    fn wake_fds(&self, out: &mut Vec<(std::os::fd::RawFd, i16)>) {
        let mut events = 0;
        if !self.backend_eof && self.te.0 == self.te.1 {
            events |= libc::POLLIN;
        }
        if self.tb.0 < self.tb.1 || self.backend_full {
            events |= libc::POLLOUT;
        }
        if events != 0 {
            out.push((self.backend.as_raw_fd(), events));
        }
    }
}
