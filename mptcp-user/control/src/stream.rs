//! Applications outside the worker: a tokio API over the engine.
//!
//! The worker runs a [`Bridge`] (an [`App`]) that gives every connection a
//! pair of bounded SPSC byte rings (rtrb): received bytes go to the tokio
//! task's [`MptcpStream`], bytes it writes come back. The worker touches
//! the rings once per pass with no lock and no allocation; it wakes the
//! task (an atomic waker) only when bytes moved. The task wakes the worker
//! through the control plane's eventfd. Subflow control and events go over
//! the control plane's command and event queues.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use mptcp_engine::app::App;
use mptcp_engine::mptcp::{ConnHandle, ConnectionState, MptcpEndpoint, SubflowId};
use mptcp_engine::time::Instant;
use rtrb::{Consumer, Producer, RingBuffer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{broadcast, mpsc};

use crate::protocol::{EventRow, Request, SubflowRow, Token};
use crate::server::ControlHandle;
use crate::worker::Shared;

/// Default size of each ring (per direction, per connection).
pub const RING: usize = 1 << 20;
/// Streams accepted but not yet taken by the application; more are refused.
const ACCEPT_QUEUE: usize = 128;

/// What the worker and the task both see of one connection.
struct StreamShared {
    established: AtomicBool,
    /// Every byte the peer sent is in the ring (set after the last one).
    read_closed: AtomicBool,
    /// The connection is over (closed or reset): nothing more will move.
    closed: AtomicBool,
    reset: AtomicBool,
    /// The task shut its writing side: DATA_FIN once the ring is drained.
    write_shutdown: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// The worker's end of one connection.
struct Port {
    /// Generation of the connection's slot (a reused slot is a new connection).
    gen: u32,
    rx: Producer<u8>,
    tx: Consumer<u8>,
    shared: Arc<StreamShared>,
    fin_sent: bool,
    eof_sent: bool,
    closed_sent: bool,
    /// The task dropped its stream: received bytes are discarded.
    detached: bool,
    /// The receive ring was full when the worker last looked.
    rx_blocked: bool,
}

/// Runs in the worker loop; see the module docs.
pub struct Bridge {
    ports: Vec<Option<Port>>,
    accept: mpsc::Sender<MptcpStream>,
    ring: usize,
    scratch: Box<[u8]>,
    control: ControlHandle,
    /// A closed connection's stream is gone: its slot can be freed.
    reap: bool,
    /// Connections refused because the application did not accept in time.
    pub refused: u64,
    /// Connections that ended.
    pub closed: u64,
}

/// Streams of new connections (the server's accepted ones, or the client's one).
pub struct MptcpListener {
    rx: mpsc::Receiver<MptcpStream>,
}

impl MptcpListener {
    /// The next connection; `None` once the worker stopped.
    pub async fn accept(&mut self) -> Option<MptcpStream> {
        self.rx.recv().await
    }
}

/// A bridge for the worker and the listener for tokio tasks; `ring` bytes
/// per direction and connection.
pub fn bridge(control: ControlHandle, ring: usize) -> (Bridge, MptcpListener) {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    (
        Bridge {
            ports: Vec::new(),
            accept: tx,
            ring: ring.max(4096),
            scratch: vec![0u8; 64 << 10].into_boxed_slice(),
            control,
            reap: false,
            refused: 0,
            closed: 0,
        },
        MptcpListener { rx },
    )
}

impl Bridge {
    fn open(&self, token: u32, gen: u32) -> (Port, MptcpStream) {
        let (rx_p, rx_c) = RingBuffer::new(self.ring);
        let (tx_p, tx_c) = RingBuffer::new(self.ring);
        let shared = Arc::new(StreamShared {
            established: AtomicBool::new(false),
            read_closed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            write_shutdown: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        });
        let port = Port {
            gen,
            rx: rx_p,
            tx: tx_c,
            shared: shared.clone(),
            fin_sent: false,
            eof_sent: false,
            closed_sent: false,
            detached: false,
            rx_blocked: false,
        };
        let stream = MptcpStream {
            token: Token(token),
            rx: rx_c,
            tx: tx_p,
            shared,
            control: self.control.clone(),
        };
        (port, stream)
    }
}

impl Port {
    /// Work the task side left for the worker: bytes written, room made
    /// in a ring the worker found full, a shutdown, a dropped stream.
    fn task_pending(&self) -> bool {
        self.tx.slots() > 0
            || (self.rx_blocked && self.rx.slots() > 0)
            || (!self.fin_sent && self.shared.write_shutdown.load(Ordering::Acquire))
            || (!self.detached && self.rx.is_abandoned())
            || (!self.fin_sent && self.tx.is_abandoned())
    }
}

impl Bridge {
    /// One connection: bytes both ways, establishment, end of stream and
    /// close. A new handle (or a slot's new tenant) gets a new stream.
    fn visit(&mut self, engine: &mut MptcpEndpoint, h: ConnHandle) -> usize {
        let i = h.slot as usize;
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        let mut work = 0;
        let Some(conn) = engine.get_mut(h) else {
            // Reaped: the stream keeps what is left in its ring.
            if self.ports[i].as_ref().is_some_and(|p| p.gen == h.gen) {
                self.ports[i] = None;
            }
            return 0;
        };
        if self.ports[i].as_ref().is_none_or(|p| p.gen != h.gen) {
            let (mut port, stream) = self.open(conn.token(), h.gen);
            if self.accept.try_send(stream).is_err() {
                // Nobody takes connections: refuse rather than queue without end.
                self.refused += 1;
                port.detached = true;
                conn.abort();
            }
            self.ports[i] = Some(port);
            work += 1;
        }
        let Some(p) = self.ports[i].as_mut() else {
            return work;
        };
        let sh = &p.shared;
        if !sh.established.load(Ordering::Relaxed) && conn.is_established() {
            sh.established.store(true, Ordering::Release);
            sh.writer.wake();
        }
        if !p.detached && p.rx.is_abandoned() {
            p.detached = true;
        }
        // Engine to task.
        let mut moved = false;
        p.rx_blocked = false;
        loop {
            let room = if p.detached {
                self.scratch.len()
            } else {
                p.rx.slots().min(self.scratch.len())
            };
            if room == 0 {
                p.rx_blocked = true;
                break;
            }
            let n = conn.recv(&mut self.scratch[..room]);
            if n == 0 {
                break;
            }
            if !p.detached {
                // Fits: `room` is at most the free slots.
                let _ = p.rx.write_all(&self.scratch[..n]);
            }
            moved = true;
        }
        if moved {
            sh.reader.wake();
            work += 1;
        }
        if !p.eof_sent && conn.is_read_closed() {
            p.eof_sent = true;
            sh.read_closed.store(true, Ordering::Release);
            sh.reader.wake();
        }
        // Task to engine.
        let waiting = p.tx.slots();
        if waiting > 0 {
            if let Ok(chunk) = p.tx.read_chunk(waiting) {
                let (a, b) = chunk.as_slices();
                let mut sent = conn.send(a);
                if sent == a.len() && !b.is_empty() {
                    sent += conn.send(b);
                }
                chunk.commit(sent);
                if sent > 0 {
                    sh.writer.wake();
                    work += 1;
                }
            }
        }
        let shut = sh.write_shutdown.load(Ordering::Acquire) || p.tx.is_abandoned();
        if !p.fin_sent && shut && p.tx.slots() == 0 {
            p.fin_sent = true;
            conn.close();
            work += 1;
        }
        if !p.closed_sent && conn.is_closed() {
            p.closed_sent = true;
            self.closed += 1;
            if conn.info().state == ConnectionState::Reset {
                sh.reset.store(true, Ordering::Release);
            }
            sh.closed.store(true, Ordering::Release);
            sh.reader.wake();
            sh.writer.wake();
        }
        // A stream still held keeps its connection (and its figures).
        self.reap |= p.closed_sent && p.detached;
        work
    }
}

impl App<MptcpEndpoint> for Bridge {
    fn poll(&mut self, _now: Instant, engine: &mut MptcpEndpoint) -> (usize, bool) {
        let mut work = 0;
        // Connections the engine reports as changed (new ones included).
        while let Some(h) = engine.poll_app_ready() {
            work += self.visit(engine, h);
        }
        // Connections whose task did something (no engine access to find them).
        for i in 0..self.ports.len() {
            let Some(p) = self.ports[i].as_ref() else {
                continue;
            };
            if p.task_pending() {
                let h = ConnHandle {
                    slot: i as u32,
                    gen: p.gen,
                };
                work += self.visit(engine, h);
            }
        }
        // Closed connections give their slots back; their streams keep what
        // is left in their rings.
        if std::mem::take(&mut self.reap) && engine.reap_closed() > 0 {
            for (slot, port) in self.ports.iter_mut().enumerate() {
                let gone = port.as_ref().is_some_and(|p| {
                    engine
                        .get(ConnHandle {
                            slot: slot as u32,
                            gen: p.gen,
                        })
                        .is_none()
                });
                if gone {
                    *port = None;
                }
            }
        }
        (work, false)
    }
}

/// One connection as a tokio byte stream, with its subflows under control.
pub struct MptcpStream {
    token: Token,
    rx: Consumer<u8>,
    tx: Producer<u8>,
    shared: Arc<StreamShared>,
    control: ControlHandle,
}

impl MptcpStream {
    /// The connection's token (as `ctl` and `ip mptcp monitor` show it).
    pub fn token(&self) -> Token {
        self.token
    }

    /// Waits until the connection can carry data (MP_CAPABLE done);
    /// fails if it ended first.
    pub async fn established(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            for first in [true, false] {
                if self.shared.established.load(Ordering::Acquire) {
                    return Poll::Ready(Ok(()));
                }
                if self.shared.closed.load(Ordering::Acquire) {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionRefused.into()));
                }
                if first {
                    self.shared.writer.register(cx.waker());
                }
            }
            Poll::Pending
        })
        .await
    }

    async fn ask(&self, r: Request) -> io::Result<serde_json::Value> {
        self.control.request(r).await.map_err(io::Error::other)
    }

    /// Every subflow, closed ones included, with its figures.
    pub async fn subflows(&self) -> io::Result<Vec<SubflowRow>> {
        let v = self.ask(Request::Subflows { token: self.token }).await?;
        serde_json::from_value(v).map_err(io::Error::other)
    }

    /// Opens a subflow from `local` (port 0 picks one) to `remote`.
    pub async fn open_subflow(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<SubflowId> {
        let v = self
            .ask(Request::Open {
                token: self.token,
                local,
                remote,
            })
            .await?;
        v["id"]
            .as_u64()
            .map(|id| id as SubflowId)
            .ok_or_else(|| io::Error::other("no subflow id in the answer"))
    }

    /// Closes a subflow; its unacknowledged data moves to the others.
    pub async fn close_subflow(&self, id: SubflowId) -> io::Result<()> {
        self.ask(Request::Close {
            token: self.token,
            id,
        })
        .await
        .map(drop)
    }

    /// Backup priority of a subflow (MP_PRIO to the peer).
    pub async fn set_backup(&self, id: SubflowId, backup: bool) -> io::Result<()> {
        self.ask(Request::Prio {
            token: self.token,
            id,
            backup,
        })
        .await
        .map(drop)
    }

    /// This connection's events from now on.
    pub fn events(&self) -> Events {
        let mut e = self.control.subscribe();
        e.token = Some(self.token);
        e
    }
}

impl AsyncRead for MptcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        for first in [true, false] {
            // The end is known only after the last byte is in the ring.
            let eof = this.shared.read_closed.load(Ordering::Acquire);
            let closed = this.shared.closed.load(Ordering::Acquire);
            let n = this.rx.slots().min(buf.remaining());
            if n > 0 {
                if let Ok(chunk) = this.rx.read_chunk(n) {
                    let (a, b) = chunk.as_slices();
                    buf.put_slice(a);
                    buf.put_slice(b);
                    chunk.commit_all();
                }
                // Room in the ring: the worker may take more from the engine.
                this.control.kick();
                return Poll::Ready(Ok(()));
            }
            if eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if closed {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            if first {
                this.shared.reader.register(cx.waker());
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for MptcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        for first in [true, false] {
            if this.shared.closed.load(Ordering::Acquire)
                || this.shared.write_shutdown.load(Ordering::Relaxed)
            {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let n = this.tx.slots().min(data.len());
            if n > 0 || data.is_empty() {
                let n = this.tx.write(&data[..n]).unwrap_or(0);
                this.control.kick();
                return Poll::Ready(Ok(n));
            }
            if first {
                this.shared.writer.register(cx.waker());
            }
        }
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes in the ring are the engine's to send, as in a kernel socket buffer.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.write_shutdown.store(true, Ordering::Release);
        self.control.kick();
        Poll::Ready(Ok(()))
    }
}

impl Drop for MptcpStream {
    fn drop(&mut self) {
        // The rings tell the worker (abandoned): FIN after what was written.
        self.control.kick();
    }
}

/// Monitor events (all, or one connection's), while this lives.
pub struct Events {
    rx: broadcast::Receiver<EventRow>,
    shared: Arc<Shared>,
    token: Option<Token>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<EventRow>, shared: Arc<Shared>) -> Events {
        shared.monitors.fetch_add(1, Ordering::AcqRel);
        Events {
            rx,
            shared,
            token: None,
        }
    }

    /// The next event; `None` once the worker stopped. Events lost to a
    /// slow reader are skipped (the monitor queue is bounded).
    pub async fn next(&mut self) -> Option<EventRow> {
        loop {
            match self.rx.recv().await {
                Ok(e) if self.token.is_none_or(|t| t == e.token) => return Some(e),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.shared.monitors.fetch_sub(1, Ordering::AcqRel);
    }
}
