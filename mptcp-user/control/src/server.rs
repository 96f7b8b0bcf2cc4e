//! The tokio side: a runtime on its own thread serving the control socket
//! and, when asked, the metrics endpoint. It never touches the engine: it
//! queues commands for the worker and waits for the answers.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::protocol::{EventRow, Reply, Request};
use crate::worker::{Job, Shared, WorkerSide};

/// Commands waiting for the worker at most; more are refused ("busy").
const JOB_QUEUE: usize = 64;
/// Monitor events between the worker and the tokio side, and per client.
const EVENT_QUEUE: usize = 1024;
/// A request line longer than this is refused and the client dropped.
const MAX_LINE: usize = 4096;
/// How long a command may wait for the worker.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What to serve.
#[derive(Clone, Debug, Default)]
pub struct ControlOptions {
    /// The socket; default `/run/mptcp-user/<pid>.sock`.
    pub socket: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`.
    pub metrics: Option<SocketAddr>,
}

/// The running control plane; stopping it (drop) removes the socket.
pub struct ControlPlane {
    ctx: Ctx,
    socket: PathBuf,
    metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    /// Binds the socket (and metrics listener) now, so mistakes show at
    /// start, then serves them from a tokio runtime on a thread of its own.
    pub fn start(role: &str, opts: &ControlOptions) -> Result<(WorkerSide, ControlPlane)> {
        let (mut sides, plane) = ControlPlane::start_workers(role, opts, 1)?;
        let side = sides.pop().context("one worker side")?;
        Ok((side, plane))
    }

    /// [`ControlPlane::start`] for `workers` workers, a side each. A command
    /// goes to every worker: `stats` adds their figures up (with a `workers`
    /// array), `connections` lists them all (each row naming its worker), a
    /// command for one connection is answered by the worker that has it.
    pub fn start_workers(
        role: &str,
        opts: &ControlOptions,
        workers: usize,
    ) -> Result<(Vec<WorkerSide>, ControlPlane)> {
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| crate::socket_path(std::process::id()));
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {dir:?}"))?;
        }
        // A socket left by a killed instance with our pid (pids are reused).
        let _ = std::fs::remove_file(&socket);
        let unix = std::os::unix::net::UnixListener::bind(&socket)
            .with_context(|| format!("binding the control socket {socket:?}"))?;
        // Root only: the socket steers live connections.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        unix.set_nonblocking(true)?;
        let http = match opts.metrics {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("binding the metrics listener {addr}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let metrics = http.as_ref().and_then(|l| l.local_addr().ok());
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut sides = Vec::new();
        let mut queues = Vec::new();
        for index in 0..workers.max(1) {
            // SAFETY: eventfd(2) with valid flags.
            let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(std::io::Error::last_os_error()).context("eventfd");
            }
            let shared = Arc::new(Shared {
                pending: AtomicBool::new(false),
                // SAFETY: a fresh descriptor we own.
                eventfd: unsafe { OwnedFd::from_raw_fd(efd) },
                monitors: AtomicUsize::new(0),
            });
            let (jobs_tx, jobs_rx) = sync_channel(JOB_QUEUE);
            let mut side = WorkerSide::new(jobs_rx, shared.clone(), events_tx.clone(), role);
            side.index = index;
            sides.push(side);
            queues.push((jobs_tx, shared));
        }
        drop(events_tx);
        let (stop_tx, stop_rx) = oneshot::channel();
        let ctx = Ctx {
            jobs: queues[0].0.clone(),
            shared: queues[0].1.clone(),
            workers: queues.into(),
            events: broadcast::channel(EVENT_QUEUE).0,
        };
        let handle_ctx = ctx.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || runtime.block_on(serve(ctx, unix, http, events_rx, stop_rx)))?;
        Ok((
            sides,
            ControlPlane {
                ctx: handle_ctx,
                socket,
                metrics,
                stop: Some(stop_tx),
                thread: Some(thread),
            },
        ))
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// The metrics listener's address (its port when 0 was asked).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Sends commands and watches events from tokio code in this process
    /// (what the stream API uses), through the same queues as the socket.
    pub fn handle(&self) -> ControlHandle {
        ControlHandle(self.ctx.clone())
    }
}

/// In-process access to the control plane (see [`ControlPlane::handle`]).
#[derive(Clone)]
pub struct ControlHandle(pub(crate) Ctx);

impl ControlHandle {
    /// Queues a command for the worker and waits (5 s at most) for its answer.
    pub async fn request(&self, request: Request) -> Result<Value, String> {
        self.0.ask(request).await
    }

    /// Wakes the worker (it then looks at its queues and rings at once).
    pub(crate) fn kick(&self) {
        self.0.shared.kick();
    }

    /// Every monitor event from now on, while the receiver lives.
    pub(crate) fn subscribe(&self) -> crate::stream::Events {
        crate::stream::Events::new(self.0.events.subscribe(), self.0.shared.clone())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What every task of the tokio side shares.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// Worker 0's queue and state (the stream API's worker).
    jobs: SyncSender<Job>,
    pub(crate) shared: Arc<Shared>,
    /// Every worker's.
    workers: Arc<[(SyncSender<Job>, Arc<Shared>)]>,
    pub(crate) events: broadcast::Sender<EventRow>,
}

type Pending = oneshot::Receiver<Result<Value, String>>;

fn send(jobs: &SyncSender<Job>, shared: &Shared, request: Request) -> Result<Pending, String> {
    let (tx, rx) = oneshot::channel();
    match jobs.try_send(Job { request, reply: tx }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err("busy: too many commands waiting".into()),
        Err(TrySendError::Disconnected(_)) => return Err("the worker stopped".into()),
    }
    shared.kick();
    Ok(rx)
}

async fn answer(rx: Pending) -> Result<Value, String> {
    match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the worker stopped".into()),
        Err(_) => Err("the worker did not answer within 5 s".into()),
    }
}

impl Ctx {
    /// Queues a command for the worker(s) and waits for the answer.
    pub(crate) async fn ask(&self, request: Request) -> Result<Value, String> {
        if self.workers.len() <= 1 {
            return answer(send(&self.jobs, &self.shared, request)?).await;
        }
        let mut pending = Vec::new();
        for (jobs, shared) in self.workers.iter() {
            pending.push(send(jobs, shared, request.clone()));
        }
        let mut answers = Vec::new();
        for p in pending {
            answers.push(match p {
                Ok(rx) => answer(rx).await,
                Err(e) => Err(e),
            });
        }
        match request {
            Request::Stats => {
                let parts = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
                Ok(crate::snapshot::merge(parts))
            }
            Request::Connections => {
                let mut rows = Vec::new();
                for a in answers {
                    if let Value::Array(r) = a? {
                        rows.extend(r);
                    }
                }
                Ok(Value::Array(rows))
            }
            // One connection's command: the worker that has it answers.
            _ => {
                let first_err = answers.iter().find_map(|a| a.as_ref().err().cloned());
                match answers.into_iter().find_map(Result::ok) {
                    Some(v) => Ok(v),
                    None => Err(first_err.unwrap_or_else(|| "no worker answered".into())),
                }
            }
        }
    }

    fn monitors(&self, delta: isize) {
        for (_, shared) in self.workers.iter() {
            if delta > 0 {
                shared.monitors.fetch_add(1, Ordering::AcqRel);
            } else {
                shared.monitors.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

async fn serve(
    ctx: Ctx,
    unix: std::os::unix::net::UnixListener,
    http: Option<std::net::TcpListener>,
    mut events: mpsc::Receiver<EventRow>,
    mut stop: oneshot::Receiver<()>,
) {
    let unix = match tokio::net::UnixListener::from_std(unix) {
        Ok(l) => l,
        Err(e) => {
            log::error!("control socket: {e}");
            return;
        }
    };
    if let Some(l) = http {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                tokio::spawn(crate::metrics::serve(l, ctx.clone()));
            }
            Err(e) => log::error!("metrics listener: {e}"),
        }
    }
    // Fan the worker's events out to every monitor client.
    let fan = ctx.events.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let _ = fan.send(e);
        }
    });
    loop {
        tokio::select! {
            _ = &mut stop => return,
            conn = unix.accept() => match conn {
                Ok((stream, _)) => {
                    tokio::spawn(client(ctx.clone(), stream));
                }
                Err(e) => log::warn!("control socket: {e}"),
            },
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin, T: serde::Serialize>(w: &mut W, v: &T) -> bool {
    let Ok(mut line) = serde_json::to_vec(v) else {
        return false;
    };
    line.push(b'\n');
    w.write_all(&line).await.is_ok()
}

/// One control connection: requests and answers, line by line.
async fn client(ctx: Ctx, stream: tokio::net::UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded: a peer cannot make us buffer without end.
        match (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(n) if n > MAX_LINE => {
                let _ = write_line(
                    &mut w,
                    &Reply::from_result(Err("request line too long".into())),
                )
                .await;
                return;
            }
            Ok(_) => {}
        }
        let request = match serde_json::from_str::<Request>(line.trim()) {
            Ok(r) => r,
            Err(e) => {
                if !write_line(
                    &mut w,
                    &Reply::from_result(Err(format!("bad request: {e}"))),
                )
                .await
                {
                    return;
                }
                continue;
            }
        };
        if request == Request::Monitor {
            monitor(&ctx, r, w).await;
            return;
        }
        let answer = ctx.ask(request).await;
        if !write_line(&mut w, &Reply::from_result(answer)).await {
            return;
        }
    }
}

/// Streams events until the client hangs up.
async fn monitor<R: tokio::io::AsyncRead + Unpin>(
    ctx: &Ctx,
    mut r: R,
    mut w: tokio::net::unix::OwnedWriteHalf,
) {
    let mut rx = ctx.events.subscribe();
    ctx.monitors(1);
    let subscribed = Reply::from_result(Ok(Value::String("monitoring".into())));
    let mut sink = [0u8; 256];
    let mut ok = write_line(&mut w, &subscribed).await;
    while ok {
        tokio::select! {
            e = rx.recv() => match e {
                Ok(e) => ok = write_line(&mut w, &e).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    ok = write_line(&mut w, &serde_json::json!({ "lagged": n })).await;
                }
                Err(broadcast::error::RecvError::Closed) => ok = false,
            },
            n = r.read(&mut sink) => match n {
                Ok(0) | Err(_) => ok = false,
                Ok(_) => {}
            },
        }
    }
    ctx.monitors(-1);
}
