//! `connect --iperf3`: measure against a stock `iperf3 -s` (on kernel
//! MPTCP: `mptcpize run iperf3 -s`). The control connection is kernel TCP
//! (as `iperf3 -m` may leave it); the one data stream is the engine's
//! connection. The protocol is `mptcp_datapath::apps::iperf3::client`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use mptcp_datapath::apps::iperf3::client::{self, Event};
use mptcp_datapath::apps::iperf3::{state, COOKIE_SIZE};
use mptcp_datapath::signals::stop_on_signals;
use mptcp_datapath::worker::Worker;
use mptcp_datapath::Datapath;
use mptcp_engine::app::{App, Pattern};
use mptcp_engine::io::ByteStream;
use mptcp_engine::time::Instant;

use super::connect::{ConnectArgs, Measured};
use super::rate;

/// iperf3's default block size for TCP.
const BLOCK: usize = 128 << 10;

/// The control connection, set up to the point where the data stream may
/// open (cookie, parameters, CREATE_STREAMS).
pub struct Control {
    stream: TcpStream,
    proto: client::Control,
    cookie: [u8; COOKIE_SIZE],
    /// The test: seconds (0 with a byte count), bytes (0 by time).
    time: f64,
    bytes: u64,
}

impl Control {
    pub fn open(args: &ConnectArgs) -> Result<Control> {
        let stream = TcpStream::connect_timeout(&args.remote, Duration::from_secs(5))
            .with_context(|| format!("iperf3 control connection to {}", args.remote))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let cookie = client::cookie(&mptcp_engine::secret::random());
        let bytes = args.bytes.unwrap_or(0);
        let time = if bytes != 0 {
            0.0
        } else {
            args.time.unwrap_or(10.0)
        };
        let mut c = Control {
            stream,
            proto: client::Control::new(&cookie),
            cookie,
            time,
            bytes,
        };
        c.flush()?;
        c.expect(Event::ParamExchange)?;
        c.proto
            .send_json(&client::params(time, bytes, args.reverse, BLOCK));
        c.flush()?;
        c.expect(Event::CreateStreams)?;
        c.stream.set_nonblocking(true)?;
        Ok(c)
    }

    fn flush(&mut self) -> Result<()> {
        while !self.proto.out.is_empty() {
            match self.stream.write(&self.proto.out) {
                Ok(n) => {
                    self.proto.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("iperf3 control connection"),
            }
        }
        Ok(())
    }

    /// Reads what is there (blocking until the read timeout when blocking).
    fn fill(&mut self) -> Result<bool> {
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) => bail!("the iperf3 server closed the control connection"),
            Ok(n) => {
                self.proto.push(&buf[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e).context("iperf3 control connection"),
        }
    }

    fn expect(&mut self, want: Event) -> Result<()> {
        loop {
            match self.proto.next_event().map_err(|e| anyhow!(e))? {
                Some(e) if e == want => return Ok(()),
                Some(e) => bail!("iperf3 server: expected {want:?}, got {e:?}"),
                None => {
                    self.fill()?;
                }
            }
        }
    }
}

/// The data stream: the cookie, then blocks (forward) or reading (-R).
struct DataStream {
    cookie: [u8; COOKIE_SIZE],
    cookie_sent: usize,
    reverse: bool,
    running: bool,
    stopped: bool,
    close: bool,
    sent: u64,
    received: u64,
    budget: u64,
    block: Box<[u8]>,
    rbuf: Box<[u8]>,
}

impl<E: ByteStream> App<E> for DataStream {
    fn poll(&mut self, _now: Instant, engine: &mut E) -> (usize, bool) {
        if !engine.is_established() {
            return (0, engine.is_closed());
        }
        let mut work = 0;
        if self.cookie_sent < COOKIE_SIZE {
            let n = engine.send(&self.cookie[self.cookie_sent..]);
            self.cookie_sent += n;
            work += n;
        }
        if self.cookie_sent == COOKIE_SIZE && self.running && !self.stopped && !self.reverse {
            loop {
                let mut n = self.block.len();
                if self.budget != 0 {
                    n = n.min(self.budget.saturating_sub(self.sent) as usize);
                }
                if n == 0 {
                    break;
                }
                let got = engine.send(&self.block[..n]);
                self.sent += got as u64;
                work += got;
                if got < n {
                    break;
                }
            }
        }
        loop {
            let n = engine.recv(&mut self.rbuf);
            if n == 0 {
                break;
            }
            if !self.stopped {
                self.received += n as u64;
            }
            work += n;
        }
        if self.close {
            engine.close();
        }
        (work, engine.is_closed())
    }
}

pub fn run<E: mptcp_engine::io::Engine + ByteStream + Measured>(
    args: &ConnectArgs,
    mut worker: Worker<E>,
    mut datapath: Datapath,
    local: SocketAddr,
    mut control: Control,
) -> Result<()> {
    let stop = stop_on_signals();
    let mut block = vec![0u8; BLOCK].into_boxed_slice();
    Pattern::STREAM.fill(0, &mut block);
    let mut data = DataStream {
        cookie: control.cookie,
        cookie_sent: 0,
        reverse: args.reverse,
        running: false,
        stopped: false,
        close: false,
        sent: 0,
        received: 0,
        budget: control.bytes,
        block,
        rbuf: vec![0u8; 256 << 10].into_boxed_slice(),
    };
    if !args.json {
        println!(
            "iperf3 test {local} -> {} over {}: {}",
            args.remote,
            args.ifaces.join(", "),
            if control.bytes != 0 {
                format!("{} bytes", control.bytes)
            } else {
                format!("{} s", control.time)
            }
        );
    }
    let started = std::time::Instant::now();
    let mut running_at: Option<std::time::Instant> = None;
    let mut ended_at: Option<std::time::Instant> = None;
    let mut server_results: Option<Value> = None;
    let mut displayed = false;
    let mut done_at: Option<std::time::Instant> = None;
    let mut error: Option<anyhow::Error> = None;
    let mut subflows = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let (mut work, closed) = worker.step(&mut data);
        // After DISPLAY_RESULTS the server may close the control connection.
        if !displayed {
            if let Err(e) = control.fill().and_then(|_| control.flush()) {
                error = Some(e);
                break;
            }
        }
        loop {
            match control.proto.next_event() {
                Ok(Some(Event::TestRunning)) => {
                    data.running = true;
                    running_at = Some(std::time::Instant::now());
                }
                Ok(Some(Event::ExchangeResults)) => {
                    let seconds = match (running_at, ended_at) {
                        (Some(s), Some(e)) => (e - s).as_secs_f64(),
                        _ => 0.0,
                    };
                    subflows = worker.engine.subflow_report();
                    let retransmits = subflows.iter().map(|s| s.stats.retransmits).sum();
                    let (sender, bytes) = if args.reverse {
                        (false, data.received)
                    } else {
                        (true, data.sent)
                    };
                    control
                        .proto
                        .send_json(&client::results(sender, bytes, retransmits, seconds));
                }
                Ok(Some(Event::ServerResults(v))) => server_results = Some(v),
                Ok(Some(Event::DisplayResults)) => {
                    displayed = true;
                    // Bytes sent past the test's end are of no use to anyone,
                    // and the server stops reading them: a stock client's
                    // process exits at once, so reset rather than wait for a
                    // window that will not open.
                    if !args.reverse && worker.engine.data_acked() < data.sent + COOKIE_SIZE as u64
                    {
                        worker.engine.abort();
                    }
                    data.close = true;
                    done_at = Some(std::time::Instant::now());
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    error = Some(anyhow!(e));
                    break;
                }
            }
            work += 1;
        }
        if error.is_some() {
            break;
        }
        // The test ends by time, or once the byte count is through: what
        // the server acknowledged (forward) or what arrived (-R).
        if let (Some(at), false) = (running_at, data.stopped) {
            let by_time = control.time > 0.0 && at.elapsed().as_secs_f64() >= control.time;
            let by_bytes = control.bytes != 0
                && if args.reverse {
                    data.received >= control.bytes
                } else {
                    // The cookie went first on the same stream.
                    worker.engine.data_acked() >= control.bytes + COOKIE_SIZE as u64
                };
            if by_time || by_bytes {
                data.stopped = true;
                ended_at = Some(std::time::Instant::now());
                control.proto.send_state(state::TEST_END);
                work += 1;
            }
        }
        if let Err(e) = control.flush() {
            error = Some(e);
            break;
        }
        // After the results, the data connection closes (a stock server
        // resets it when it closes with unread bytes: fine).
        if displayed && (closed || done_at.is_some_and(|d| d.elapsed() > Duration::from_secs(3))) {
            break;
        }
        if closed && !displayed && running_at.is_none() {
            error = Some(anyhow!("the data connection closed before the test ran"));
            break;
        }
        if work == 0 {
            worker.sleep_with(&[(control.stream.as_raw_fd(), libc::POLLIN)]);
        }
    }
    datapath.detach_all()?;
    if let Some(e) = error {
        return Err(e);
    }
    let Some(server) = server_results else {
        bail!("the test did not finish (interrupted)");
    };
    let seconds = match (running_at, ended_at) {
        (Some(s), Some(e)) => (e - s).as_secs_f64(),
        _ => started.elapsed().as_secs_f64(),
    };
    let server_bytes: u64 = server["streams"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["bytes"].as_u64()).sum())
        .unwrap_or(0);
    // iperf3's meanings: sum_sent is the sender's count, sum_received the
    // receiver's; the server told its side in its results.
    let (sent, received) = if args.reverse {
        (server_bytes, data.received)
    } else {
        (data.sent, server_bytes)
    };
    let retransmits: u64 = subflows.iter().map(|s| s.stats.retransmits).sum();
    if args.json {
        let report = json!({
            "start": {
                "connected": [{"local_host": local.ip().to_string(), "local_port": local.port(),
                               "remote_host": args.remote.ip().to_string(), "remote_port": args.remote.port()}],
                "cookie": String::from_utf8_lossy(&control.cookie[..COOKIE_SIZE - 1]),
                "test_start": {"protocol": "TCP", "num_streams": 1, "blksize": BLOCK,
                               "bytes": control.bytes, "duration": control.time,
                               "reverse": u8::from(args.reverse)},
            },
            "end": {
                "sum_sent": {"start": 0.0, "end": seconds, "seconds": seconds, "bytes": sent,
                             "bits_per_second": rate(sent, seconds), "retransmits": retransmits},
                "sum_received": {"start": 0.0, "end": seconds, "seconds": seconds, "bytes": received,
                                 "bits_per_second": rate(received, seconds)},
                "subflows": subflows.iter().map(|sf| json!({
                    "id": sf.id, "path": sf.path, "interface": args.ifaces.get(sf.path),
                    "local": sf.local.to_string(), "remote": sf.remote.to_string(),
                    "bytes_sent": sf.stats.bytes_sent, "bytes_received": sf.stats.bytes_received,
                    "retransmits": sf.stats.retransmits,
                })).collect::<Vec<_>>(),
            },
            "server_results": server,
        });
        println!("{report}");
    } else {
        println!(
            "sender {sent} B ({:.3} Gbit/s), receiver {received} B ({:.3} Gbit/s) in {seconds:.2} s; {retransmits} retransmits",
            rate(sent, seconds) / 1e9,
            rate(received, seconds) / 1e9,
        );
        for sf in &subflows {
            println!(
                "     subflow {} path {} {} -> {}: sent {} B, received {} B, {} retransmits",
                sf.id,
                sf.path,
                sf.local,
                sf.remote,
                sf.stats.bytes_sent,
                sf.stats.bytes_received,
                sf.stats.retransmits
            );
        }
    }
    Ok(())
}
