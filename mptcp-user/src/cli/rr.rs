//! `connect --request-response SIZE`: a SIZE-byte request every interval,
//! each answered by the server's echo, as in mptcp_net-next #554; the figure
//! is the longest gap between two answers the application sees.
//!
//! The requests are paced by a timerfd that the worker polls with the
//! datapath (`App::wake_fds`), so the loop sleeps between requests.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result};
use mptcp_engine::app::App;
use mptcp_engine::io::ByteStream;
use mptcp_engine::time::Instant;

/// Every request byte; the echo must bring the same back.
const FILL: u8 = 0x42;

pub struct RequestResponse {
    size: usize,
    interval: Duration,
    duration: Duration,
    timer: OwnedFd,
    started: Option<Instant>,
    /// Requests wholly or partly written, and bytes of the current one written.
    requests: u64,
    partial: usize,
    pub received: u64,
    pub mismatches: u64,
    last_answer: Option<Instant>,
    pub longest_gap: Duration,
    closing: bool,
    buf: Box<[u8]>,
}

impl RequestResponse {
    pub fn new(size: usize, interval: Duration, duration: Duration) -> Result<RequestResponse> {
        // SAFETY: plain timerfd creation.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("timerfd_create");
        }
        // SAFETY: a fresh descriptor we own.
        let timer = unsafe { OwnedFd::from_raw_fd(fd) };
        let ts = libc::timespec {
            tv_sec: interval.as_secs() as libc::time_t,
            tv_nsec: interval.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: spec outlives the call.
        if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("timerfd_settime");
        }
        Ok(RequestResponse {
            size: size.max(1),
            interval,
            duration,
            timer,
            started: None,
            requests: 0,
            partial: 0,
            received: 0,
            mismatches: 0,
            last_answer: None,
            longest_gap: Duration::ZERO,
            closing: false,
            buf: vec![FILL; 64 << 10].into_boxed_slice(),
        })
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn answers(&self) -> u64 {
        self.received / self.size as u64
    }
}

impl<E: ByteStream> App<E> for RequestResponse {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        let mut tick = [0u8; 8];
        // SAFETY: reads the expiration count into an 8-byte buffer; EAGAIN is fine.
        unsafe { libc::read(self.timer.as_raw_fd(), tick.as_mut_ptr().cast(), 8) };
        if !engine.is_established() {
            return (0, engine.is_closed());
        }
        let started = *self.started.get_or_insert(now);
        let elapsed = now.saturating_duration_since(started);
        let mut work = 0;
        // Requests due so far (the first at once), until the run's end. The
        // timer ticks at the same phase as `started`, a hair before or after:
        // half an interval of slack keeps one request per tick, never two.
        let due = if elapsed < self.duration {
            let interval = self.interval.as_nanos().max(1);
            1 + ((elapsed.as_nanos() + interval / 2) / interval) as u64
        } else {
            (self.duration.as_nanos() / self.interval.as_nanos().max(1)) as u64
        };
        while self.requests < due || self.partial > 0 {
            if self.partial == 0 {
                self.requests += 1;
            }
            let want = self.size - self.partial;
            let n = engine.send(&self.buf[..want.min(self.buf.len())]);
            work += n;
            self.partial = (self.partial + n) % self.size;
            if n < want {
                if n == 0 && self.partial == 0 {
                    // Nothing of it taken: not written yet.
                    self.requests -= 1;
                }
                break;
            }
        }
        loop {
            let n = engine.recv(&mut self.buf);
            if n == 0 {
                break;
            }
            work += n;
            self.mismatches += self.buf[..n].iter().filter(|b| **b != FILL).count() as u64;
            self.buf[..n].fill(FILL);
            let before = self.received / self.size as u64;
            self.received += n as u64;
            if self.received / self.size as u64 > before {
                if let Some(last) = self.last_answer {
                    self.longest_gap = self.longest_gap.max(now.saturating_duration_since(last));
                }
                self.last_answer = Some(now);
            }
        }
        let all_sent = elapsed >= self.duration && self.requests >= due && self.partial == 0;
        if all_sent && self.answers() >= self.requests && !self.closing {
            self.closing = true;
            engine.close();
        }
        (
            work,
            engine.is_closed() || (self.closing && engine.is_read_closed()),
        )
    }

    fn wake_fds(&self, out: &mut Vec<(std::os::fd::RawFd, i16)>) {
        out.push((self.timer.as_raw_fd(), libc::POLLIN));
    }
}

/// Runs the request/response loop on an open datapath; prints the figures.
pub fn run<E: mptcp_engine::io::Engine + ByteStream + super::connect::Measured>(
    app: &mut RequestResponse,
    json: bool,
    mut worker: mptcp_datapath::worker::Worker<E>,
    mut datapath: mptcp_datapath::Datapath,
) -> Result<()> {
    let stop = mptcp_datapath::signals::stop_on_signals();
    let started = std::time::Instant::now();
    let mut fds = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (work, done) = worker.step(app);
        if done {
            break;
        }
        if work == 0 {
            fds.clear();
            App::<E>::wake_fds(app, &mut fds);
            worker.sleep_with(&fds);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    datapath.detach_all()?;
    let subflows = worker.engine.subflow_report();
    let report = serde_json::json!({
        "requests": app.requests(),
        "answers": app.answers(),
        "request_bytes": app.size,
        "interval_ms": app.interval.as_secs_f64() * 1e3,
        "longest_gap_ms": app.longest_gap.as_secs_f64() * 1e3,
        "mismatched_bytes": app.mismatches,
        "seconds": elapsed,
        "subflows": subflows.iter().map(|s| serde_json::json!({
            "id": s.id, "path": s.path, "local": s.local.to_string(), "remote": s.remote.to_string(),
            "bytes_sent": s.stats.bytes_sent, "bytes_received": s.stats.bytes_received,
            "retransmits": s.stats.retransmits})).collect::<Vec<_>>(),
    });
    if json {
        println!("{report}");
    } else {
        println!(
            "{} requests of {} B every {:?}, {} answers; longest gap between answers {:.1} ms",
            app.requests(),
            app.size,
            app.interval,
            app.answers(),
            app.longest_gap.as_secs_f64() * 1e3
        );
    }
    if app.mismatches != 0 || app.answers() < app.requests() {
        anyhow::bail!(
            "{} of {} requests answered, {} bytes differ",
            app.answers(),
            app.requests(),
            app.mismatches
        );
    }
    Ok(())
}
