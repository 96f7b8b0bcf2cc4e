//! An iperf3 server (esnet/iperf 3.x, `src/iperf_api.c`,
//! `iperf_server_api.c`, `iperf_tcp.c`), so that a stock `iperf3 -c` (under
//! `mptcpize run`, or 3.19's `-m`) measures the engine.
//!
//! The protocol: a client opens a control connection and sends a 37-byte
//! cookie (36 characters and a NUL). The server answers with state bytes
//! (signed chars): PARAM_EXCHANGE, then the client sends its parameters as
//! JSON framed by a 4-byte big-endian length; CREATE_STREAMS, then the
//! client opens `-P` data connections, each starting with the same cookie;
//! TEST_START and TEST_RUNNING once all are there. The client ends the test
//! with TEST_END; the server answers EXCHANGE_RESULTS, reads the client's
//! results and sends its own (framed JSON), then DISPLAY_RESULTS; the client
//! says IPERF_DONE. One test at a time: another control connection gets
//! ACCESS_DENIED.
//!
//! Here every connection (control or data) is its own application
//! ([`Iperf3Conn`]); they meet in the shared [`Iperf3Server`] (one per
//! worker, `Rc<RefCell<..>>`), keyed by the cookie. The server's results
//! carry an extra key, `mptcp_subflows`: per data stream, each subflow's
//! figures; with `--get-server-output` they are also in
//! `server_output_json.end.subflows` of the client's report.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use mptcp_engine::app::App;
use mptcp_engine::io::ByteStream;
use mptcp_engine::time::Instant;
use serde_json::{json, Value};

use super::{SubflowFigures, Subflows};

/// The cookie: 36 characters and a NUL.
pub const COOKIE_SIZE: usize = 37;
/// Largest JSON message accepted (iperf3 3.12 allows 8 KiB of parameters).
pub const MAX_JSON: usize = 64 << 10;
/// Most parallel streams (iperf3's own limit).
pub const MAX_STREAMS: usize = 128;
/// After TEST_END, how long data streams may still deliver bytes of a
/// byte-bounded test before the results go out.
const DRAIN_GRACE: Duration = Duration::from_secs(3);
/// After TEST_END of a byte-bounded test with its bytes in, how long the
/// data streams must be quiet before the results go out: iperf3 may write
/// one block past -n, still in flight when TEST_END arrives.
const DRAIN_QUIET: Duration = Duration::from_millis(20);

/// The state bytes of the control connection (`iperf_api.h`).
pub mod state {
    pub const TEST_START: i8 = 1;
    pub const TEST_RUNNING: i8 = 2;
    pub const TEST_END: i8 = 4;
    pub const PARAM_EXCHANGE: i8 = 9;
    pub const CREATE_STREAMS: i8 = 10;
    pub const SERVER_TERMINATE: i8 = 11;
    pub const CLIENT_TERMINATE: i8 = 12;
    pub const EXCHANGE_RESULTS: i8 = 13;
    pub const DISPLAY_RESULTS: i8 = 14;
    pub const IPERF_START: i8 = 15;
    pub const IPERF_DONE: i8 = 16;
    pub const ACCESS_DENIED: i8 = -1;
    pub const SERVER_ERROR: i8 = -2;
}

/// The test the client asked for (its parameters JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Seconds (`-t`); 0 with -n or -k.
    pub time: f64,
    /// Total bytes (`-n`), 0 = not byte-bounded.
    pub bytes: u64,
    /// Blocks of `len` bytes (`-k`), 0 = none.
    pub blocks: u64,
    pub parallel: usize,
    pub reverse: bool,
    pub bidir: bool,
    /// Block size (`-l`).
    pub len: usize,
    pub get_server_output: bool,
    pub client_version: Option<String>,
}

impl Params {
    /// Parses the parameters; only TCP tests are served.
    pub fn from_json(v: &Value) -> Result<Params, String> {
        if !v.is_object() {
            return Err("parameters are not a JSON object".into());
        }
        if v.get("udp").is_some() || v.get("sctp").is_some() {
            return Err("only TCP tests are served".into());
        }
        let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let flag = |k: &str| match v.get(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            _ => false,
        };
        let parallel = v.get("parallel").and_then(Value::as_u64).unwrap_or(1) as usize;
        if parallel == 0 || parallel > MAX_STREAMS {
            return Err(format!("{parallel} parallel streams (1 to {MAX_STREAMS})"));
        }
        let len = v.get("len").and_then(Value::as_u64).unwrap_or(128 << 10) as usize;
        let p = Params {
            time: num("time").max(0.0),
            bytes: v.get("num").and_then(Value::as_u64).unwrap_or(0),
            blocks: v.get("blockcount").and_then(Value::as_u64).unwrap_or(0),
            parallel,
            reverse: flag("reverse"),
            bidir: flag("bidirectional"),
            len: len.clamp(1, 1 << 20),
            get_server_output: flag("get_server_output"),
            client_version: v
                .get("client_version")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        Ok(p)
    }

    /// Streams the server receives on, and sends on (accepted in this order).
    pub fn streams(&self) -> (usize, usize) {
        match (self.bidir, self.reverse) {
            (true, _) => (self.parallel, self.parallel),
            (false, true) => (0, self.parallel),
            (false, false) => (self.parallel, 0),
        }
    }

    /// The byte budget of the test (`-n`, or `-k` blocks), 0 = by time.
    pub fn byte_budget(&self) -> u64 {
        if self.bytes != 0 {
            self.bytes
        } else {
            self.blocks.saturating_mul(self.len as u64)
        }
    }

    /// What a client sends for that budget: whole blocks, until its count
    /// reaches the budget.
    pub fn client_sends(&self) -> u64 {
        self.byte_budget().div_ceil(self.len as u64) * self.len as u64
    }

    fn describe(&self) -> String {
        let dir = match (self.bidir, self.reverse) {
            (true, _) => "bidirectional",
            (false, true) => "reverse",
            (false, false) => "forward",
        };
        let bound = match self.byte_budget() {
            0 => format!("{} s", self.time),
            b => format!("{b} bytes"),
        };
        format!("{dir}, {} stream(s), {bound}", self.parallel)
    }
}

/// Frames a JSON value: 4-byte big-endian length, then the text.
pub fn frame_json(v: &Value, out: &mut Vec<u8>) {
    let text = v.to_string();
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Takes one framed JSON message off the front of `buf`: `Ok(None)` until
/// it is complete; an error for an oversized or invalid message.
pub fn take_json(buf: &mut Vec<u8>) -> Result<Option<Value>, String> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_JSON {
        return Err(format!("a {len}-byte JSON message (at most {MAX_JSON})"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let v = serde_json::from_slice(&buf[4..4 + len]).map_err(|e| format!("bad JSON: {e}"));
    buf.drain(..4 + len);
    v.map(Some)
}

/// One data stream of the running test, as the results report it.
#[derive(Clone, Debug)]
pub struct StreamRecord {
    /// iperf3's stream id: 1, 3, 4, 5, ... in the order the streams arrived.
    pub id: i64,
    /// The server sends on it.
    pub sender: bool,
    /// Bytes the server received (receiver) or sent (sender).
    pub bytes: u64,
    pub retransmits: u64,
    /// The stream's final figures are in.
    pub done: bool,
    pub subflows: Vec<SubflowFigures>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the parameters.
    Params,
    /// Waiting for the data connections.
    Streams,
    Running,
    /// TEST_END came; waiting for the client's results.
    Ended,
    /// Client results in; waiting for every stream's final figures.
    Finishing,
    /// Results sent; waiting for IPERF_DONE.
    Displayed,
}

/// The test in progress.
struct Session {
    number: u64,
    cookie: [u8; COOKIE_SIZE],
    phase: Phase,
    params: Option<Params>,
    streams: Vec<StreamRecord>,
    started: Option<Instant>,
    ended: Option<Instant>,
    /// Bytes sent over every sender stream (for -n in reverse mode).
    sent_total: u64,
    received_total: u64,
    /// When a receiver stream last got bytes.
    last_received: Option<Instant>,
    client_results: Option<Value>,
}

impl Session {
    fn running(&self) -> bool {
        self.phase == Phase::Running
    }
    fn ending(&self) -> bool {
        matches!(
            self.phase,
            Phase::Ended | Phase::Finishing | Phase::Displayed
        )
    }
    fn duration(&self) -> f64 {
        match (self.started, self.ended) {
            (Some(s), Some(e)) => e.saturating_duration_since(s).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// Counters of the iperf3 server (for `stats` and the logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Iperf3Counters {
    /// Tests run to IPERF_DONE.
    pub tests: u64,
    /// Tests aborted (client gone, CLIENT_TERMINATE, protocol error).
    pub aborted: u64,
    /// Connections refused: busy, unknown cookie, bad parameters.
    pub refused: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// The state shared by every connection of one worker: at most one test.
#[derive(Default)]
pub struct Iperf3Server {
    session: Option<Session>,
    numbers: u64,
    pub counters: Iperf3Counters,
}

impl Iperf3Server {
    pub fn shared() -> Rc<RefCell<Iperf3Server>> {
        Rc::new(RefCell::new(Iperf3Server::default()))
    }

    /// The per-connection application of a new connection.
    pub fn connection(server: &Rc<RefCell<Iperf3Server>>) -> Iperf3Conn {
        Iperf3Conn {
            server: Rc::clone(server),
            role: Role::Cookie,
            cookie: [0; COOKIE_SIZE],
            cookie_len: 0,
            inbuf: Vec::new(),
            out: Vec::new(),
            buf: Box::default(),
            close_wanted: false,
            closing: false,
        }
    }

    fn session(&mut self, number: u64) -> Option<&mut Session> {
        self.session.as_mut().filter(|s| s.number == number)
    }

    fn abort(&mut self, number: u64, why: &str) {
        if self.session.as_ref().is_some_and(|s| s.number == number) {
            self.session = None;
            self.counters.aborted += 1;
            eprintln!("iperf3 test {number} aborted: {why}");
        }
    }
}

enum Role {
    /// Reading the cookie.
    Cookie,
    Control {
        session: u64,
    },
    Data {
        session: u64,
        index: usize,
        sender: bool,
        /// Final figures reported.
        reported: bool,
    },
    /// ACCESS_DENIED queued; closing.
    Refused,
}

/// One connection of the iperf3 server (control or data).
pub struct Iperf3Conn {
    server: Rc<RefCell<Iperf3Server>>,
    role: Role,
    cookie: [u8; COOKIE_SIZE],
    cookie_len: usize,
    /// Control input not yet parsed (bounded by MAX_JSON + 4).
    inbuf: Vec<u8>,
    /// Control output not yet accepted by the engine.
    out: Vec<u8>,
    /// Data buffer (allocated for data streams only).
    buf: Box<[u8]>,
    close_wanted: bool,
    closing: bool,
}

impl Iperf3Conn {
    fn flush<E: ByteStream>(&mut self, engine: &mut E) -> usize {
        if self.out.is_empty() {
            return 0;
        }
        let n = engine.send(&self.out);
        self.out.drain(..n);
        n
    }

    /// Closes once every queued byte is accepted (a closed stream takes
    /// no more bytes).
    fn close<E: ByteStream>(&mut self, engine: &mut E) -> usize {
        self.close_wanted = true;
        self.flush(engine);
        if self.closing || !self.out.is_empty() {
            return 0;
        }
        self.closing = true;
        engine.close();
        1
    }

    /// Reads the cookie, then decides what this connection is.
    fn poll_cookie<E: ByteStream>(&mut self, now: Instant, engine: &mut E) -> usize {
        let n = engine.recv(&mut self.cookie[self.cookie_len..]);
        self.cookie_len += n;
        if self.cookie_len < COOKIE_SIZE {
            if engine.is_read_closed() {
                return n + self.close(engine);
            }
            return n;
        }
        let server = Rc::clone(&self.server);
        let mut srv = server.borrow_mut();
        let srv = &mut *srv;
        let cookie = self.cookie;
        match srv.session.as_mut() {
            None => {
                srv.numbers += 1;
                let number = srv.numbers;
                srv.session = Some(Session {
                    number,
                    cookie,
                    phase: Phase::Params,
                    params: None,
                    streams: Vec::new(),
                    started: None,
                    ended: None,
                    sent_total: 0,
                    received_total: 0,
                    last_received: None,
                    client_results: None,
                });
                self.role = Role::Control { session: number };
                self.out.push(state::PARAM_EXCHANGE as u8);
            }
            Some(s) if s.cookie == cookie && s.phase == Phase::Streams => {
                let (rec, snd) = s.params.as_ref().map_or((0, 0), Params::streams);
                let index = s.streams.len();
                // Receiving streams are accepted first, as iperf3 does.
                let sender = index >= rec;
                if index < rec + snd {
                    s.streams.push(StreamRecord {
                        id: if index == 0 { 1 } else { index as i64 + 2 },
                        sender,
                        bytes: 0,
                        retransmits: 0,
                        done: false,
                        subflows: Vec::new(),
                    });
                    self.role = Role::Data {
                        session: s.number,
                        index,
                        sender,
                        reported: false,
                    };
                    self.buf = vec![0u8; 128 << 10].into_boxed_slice();
                    let _ = now;
                } else {
                    srv.counters.refused += 1;
                    self.role = Role::Refused;
                }
            }
            Some(_) => {
                // Busy with another test, or a cookie from nowhere.
                srv.counters.refused += 1;
                self.role = Role::Refused;
            }
        }
        if matches!(self.role, Role::Refused) {
            self.out.push(state::ACCESS_DENIED as u8);
        }
        n + 1
    }

    fn poll_control<E: ByteStream + Subflows>(
        &mut self,
        now: Instant,
        engine: &mut E,
        number: u64,
    ) -> (usize, bool) {
        let mut work = 0;
        // Read what is there (bounded: one maximal message at a time).
        let mut tmp = [0u8; 4096];
        while self.inbuf.len() < MAX_JSON + 4 {
            let room = (MAX_JSON + 4 - self.inbuf.len()).min(tmp.len());
            let n = engine.recv(&mut tmp[..room]);
            if n == 0 {
                break;
            }
            self.inbuf.extend_from_slice(&tmp[..n]);
            work += n;
        }
        let server = Rc::clone(&self.server);
        let mut srv = server.borrow_mut();
        let srv = &mut *srv;
        let Some(s) = srv.session(number) else {
            let _ = srv;
            // Aborted elsewhere: finish the connection.
            work += self.close(engine);
            work += self.flush(engine);
            return (work, engine.is_closed());
        };
        let mut error: Option<String> = None;
        let mut finished = false;
        loop {
            let before = (s.phase, self.inbuf.len(), self.out.len());
            match s.phase {
                Phase::Params => match take_json(&mut self.inbuf) {
                    Ok(Some(v)) => match Params::from_json(&v) {
                        Ok(p) => {
                            s.params = Some(p);
                            s.phase = Phase::Streams;
                            self.out.push(state::CREATE_STREAMS as u8);
                        }
                        Err(e) => {
                            // SERVER_ERROR, then i_errno and errno.
                            self.out.push(state::SERVER_ERROR as u8);
                            self.out.extend_from_slice(&IE_PARAMS.to_be_bytes());
                            self.out.extend_from_slice(&0i32.to_be_bytes());
                            error = Some(e);
                        }
                    },
                    Ok(None) => {}
                    Err(e) => error = Some(e),
                },
                Phase::Streams => {
                    let (rec, snd) = s.params.as_ref().map_or((0, 0), Params::streams);
                    if s.streams.len() == rec + snd {
                        s.phase = Phase::Running;
                        s.started = Some(now);
                        self.out.push(state::TEST_START as u8);
                        self.out.push(state::TEST_RUNNING as u8);
                    } else if let Some(&b) = self.inbuf.first() {
                        self.inbuf.remove(0);
                        if b as i8 == state::CLIENT_TERMINATE {
                            error = Some("the client terminated".into());
                        }
                    }
                }
                Phase::Running => {
                    if let Some(&b) = self.inbuf.first() {
                        self.inbuf.remove(0);
                        match b as i8 {
                            state::TEST_END => {
                                s.phase = Phase::Ended;
                                s.ended = Some(now);
                                self.out.push(state::EXCHANGE_RESULTS as u8);
                            }
                            state::CLIENT_TERMINATE => {
                                error = Some("the client terminated".into());
                            }
                            other => {
                                error = Some(format!("unexpected state {other} while running"))
                            }
                        }
                    }
                }
                Phase::Ended => match take_json(&mut self.inbuf) {
                    Ok(Some(v)) => {
                        s.client_results = Some(v);
                        s.phase = Phase::Finishing;
                    }
                    Ok(None) => {}
                    Err(e) => error = Some(e),
                },
                Phase::Finishing => {
                    let grace = s
                        .ended
                        .is_some_and(|e| now.saturating_duration_since(e) > DRAIN_GRACE);
                    if s.streams.iter().all(|r| r.done) || grace {
                        frame_json(&results_json(s), &mut self.out);
                        self.out.push(state::DISPLAY_RESULTS as u8);
                        s.phase = Phase::Displayed;
                    }
                }
                Phase::Displayed => {
                    if let Some(&b) = self.inbuf.first() {
                        self.inbuf.remove(0);
                        if b as i8 == state::IPERF_DONE {
                            finished = true;
                        }
                    }
                }
            }
            if error.is_some() || finished || before == (s.phase, self.inbuf.len(), self.out.len())
            {
                break;
            }
            work += 1;
        }
        let peer_gone = engine.is_read_closed() || engine.is_closed();
        if finished || (peer_gone && s.phase == Phase::Displayed) {
            let received: u64 = s
                .streams
                .iter()
                .filter(|r| !r.sender)
                .map(|r| r.bytes)
                .sum();
            let sent: u64 = s.streams.iter().filter(|r| r.sender).map(|r| r.bytes).sum();
            let subflow_received: u64 = s
                .streams
                .iter()
                .flat_map(|r| &r.subflows)
                .map(|f| f.bytes_received)
                .sum();
            eprintln!(
                "iperf3 test {number} done: {} in {:.2} s; received {received} bytes, sent {sent} bytes; \
                 subflows received {subflow_received} bytes with the cookies",
                s.params.as_ref().map_or(String::new(), Params::describe),
                s.duration(),
            );
            srv.counters.tests += 1;
            srv.counters.bytes_received += received;
            srv.counters.bytes_sent += sent;
            srv.session = None;
            work += self.close(engine);
        } else if let Some(e) = error {
            srv.abort(number, &e);
            work += self.close(engine);
        } else if peer_gone {
            srv.abort(number, "the control connection closed");
            work += self.close(engine);
        }
        work += self.flush(engine);
        (work, engine.is_closed())
    }

    fn poll_data<E: ByteStream + Subflows>(
        &mut self,
        now: Instant,
        engine: &mut E,
    ) -> (usize, bool) {
        let Role::Data {
            session,
            index,
            sender,
            reported,
        } = &mut self.role
        else {
            return (0, false);
        };
        let mut work = 0;
        let server = Rc::clone(&self.server);
        let mut srv = server.borrow_mut();
        let srv = &mut *srv;
        let Some(s) = srv.session(*session) else {
            let _ = srv;
            // The test is over (or aborted): drain and close.
            while engine.recv(&mut self.buf) > 0 {}
            if !self.closing {
                self.closing = true;
                engine.close();
                work += 1;
            }
            return (work, engine.is_closed());
        };
        let budget = s.params.as_ref().map_or(0, Params::byte_budget);
        let expected = s.params.as_ref().map_or(0, Params::client_sends);
        // Receive (receiver streams count; a sender stream reads nothing).
        loop {
            let n = engine.recv(&mut self.buf);
            if n == 0 {
                break;
            }
            work += n;
            if !*sender && !*reported {
                s.streams[*index].bytes += n as u64;
                s.received_total += n as u64;
                s.last_received = Some(now);
            }
        }
        if *sender && s.running() {
            let len = s
                .params
                .as_ref()
                .map_or(128 << 10, |p| p.len)
                .min(self.buf.len());
            loop {
                let mut n = len;
                if budget != 0 {
                    n = n.min(budget.saturating_sub(s.sent_total) as usize);
                }
                if n == 0 {
                    break;
                }
                let sent = engine.send(&self.buf[..n]);
                s.streams[*index].bytes += sent as u64;
                s.sent_total += sent as u64;
                work += sent;
                if sent < n {
                    break;
                }
            }
        }
        if s.ending() && !*reported {
            // A byte-bounded test: bytes still in flight when TEST_END
            // overtook them on the control connection are counted too,
            // and so is a block written past -n.
            let quiet = s
                .last_received
                .is_none_or(|t| now.saturating_duration_since(t) >= DRAIN_QUIET);
            let waiting = !*sender
                && expected != 0
                && (s.received_total < expected || !quiet)
                && !engine.is_read_closed()
                && !engine.is_closed()
                && s.ended
                    .is_none_or(|e| now.saturating_duration_since(e) <= DRAIN_GRACE);
            if !waiting {
                let r = &mut s.streams[*index];
                r.subflows.clear();
                engine.subflow_figures(&mut r.subflows);
                r.retransmits = r.subflows.iter().map(|f| f.retransmits).sum();
                r.done = true;
                *reported = true;
                work += 1;
            }
        }
        if *reported && !self.closing {
            self.closing = true;
            engine.close();
            work += 1;
        }
        if engine.is_closed() && !*reported {
            // Reset before the end: report what there is.
            let r = &mut s.streams[*index];
            engine.subflow_figures(&mut r.subflows);
            r.done = true;
            *reported = true;
        }
        (work, engine.is_closed())
    }
}

/// i_errno sent with SERVER_ERROR for parameters we cannot serve
/// (IERECVPARAMS in iperf_api.h).
const IE_PARAMS: i32 = 123;

/// The server's results (`iperf_send_results`), plus `mptcp_subflows`.
fn results_json(s: &Session) -> Value {
    let duration = s.duration();
    let server_sends = s.streams.iter().any(|r| r.sender);
    let streams: Vec<Value> = s
        .streams
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "bytes": r.bytes,
                "retransmits": if r.sender { r.retransmits as i64 } else { -1 },
                "jitter": 0, "errors": 0, "omitted_errors": 0, "packets": 0,
                "start_time": 0, "end_time": duration,
            })
        })
        .collect();
    let subflows: Vec<Value> = s
        .streams
        .iter()
        .flat_map(|r| {
            r.subflows.iter().map(move |f| {
                json!({
                    "stream": r.id, "subflow": f.id, "path": f.path,
                    "local": f.local.to_string(), "remote": f.remote.to_string(),
                    "bytes_sent": f.bytes_sent, "bytes_received": f.bytes_received,
                    "retransmits": f.retransmits,
                })
            })
        })
        .collect();
    let mut v = json!({
        "cpu_util_total": 0.0, "cpu_util_user": 0.0, "cpu_util_system": 0.0,
        "sender_has_retransmits": if server_sends { 1 } else { -1 },
        "streams": streams,
        "mptcp_subflows": subflows,
    });
    if s.params.as_ref().is_some_and(|p| p.get_server_output) {
        let received: u64 = s
            .streams
            .iter()
            .filter(|r| !r.sender)
            .map(|r| r.bytes)
            .sum();
        let sent: u64 = s.streams.iter().filter(|r| r.sender).map(|r| r.bytes).sum();
        let bps = |b: u64| {
            if duration > 0.0 {
                b as f64 * 8.0 / duration
            } else {
                0.0
            }
        };
        v["server_output_json"] = json!({
            "start": {"version": concat!("mptcp-user ", env!("CARGO_PKG_VERSION"))},
            "intervals": [],
            "end": {
                "sum_received": {"start": 0, "end": duration, "seconds": duration,
                                 "bytes": received, "bits_per_second": bps(received)},
                "sum_sent": {"start": 0, "end": duration, "seconds": duration,
                             "bytes": sent, "bits_per_second": bps(sent)},
                "subflows": v["mptcp_subflows"].clone(),
            },
        });
    }
    v
}

impl<E: ByteStream + Subflows> App<E> for Iperf3Conn {
    fn poll(&mut self, now: Instant, engine: &mut E) -> (usize, bool) {
        let mut work = self.flush(engine);
        if matches!(self.role, Role::Cookie) {
            work += self.poll_cookie(now, engine);
            work += self.flush(engine);
        }
        let (w, done) = match self.role {
            Role::Cookie => (0, engine.is_closed()),
            Role::Control { session } => self.poll_control(now, engine, session),
            Role::Data { .. } => self.poll_data(now, engine),
            Role::Refused => {
                let mut w = self.flush(engine);
                engine.consume(usize::MAX);
                if self.out.is_empty() {
                    w += self.close(engine);
                }
                (w, engine.is_closed())
            }
        };
        if self.close_wanted {
            work += self.close(engine);
        }
        (work + w, done)
    }
}

/// The client side of the control connection (`connect --iperf3` against
/// a stock `iperf3 -s`), sans-IO: bytes in with [`client::Control::push`],
/// events out, bytes to send in `out`.
pub mod client {
    use super::*;

    /// What the server said.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Event {
        /// Send the parameters now.
        ParamExchange,
        /// Open the data connections now.
        CreateStreams,
        TestStart,
        TestRunning,
        /// Send the client's results now; the server's follow.
        ExchangeResults,
        ServerResults(Value),
        /// Done: IPERF_DONE is queued.
        DisplayResults,
    }

    /// The control connection's protocol state.
    pub struct Control {
        inbuf: Vec<u8>,
        /// Bytes for the server.
        pub out: Vec<u8>,
        awaiting_results: bool,
    }

    /// A cookie: 36 characters of iperf3's alphabet and a NUL.
    pub fn cookie(random: &[u8; 36]) -> [u8; COOKIE_SIZE] {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut c = [0u8; COOKIE_SIZE];
        for (o, r) in c.iter_mut().zip(random) {
            *o = ALPHABET[(*r % 32) as usize];
        }
        c
    }

    /// The parameters iperf3's client sends (`send_parameters`).
    pub fn params(time: f64, bytes: u64, reverse: bool, len: usize) -> Value {
        let mut v = json!({
            "tcp": true, "omit": 0, "time": time.ceil() as u64, "num": bytes,
            "blockcount": 0, "parallel": 1, "len": len, "pacing_timer": 1000,
            "client_version": "3.12",
        });
        if reverse {
            v["reverse"] = json!(true);
        }
        v
    }

    /// The client's results (`iperf_send_results`) for its one stream.
    pub fn results(sender: bool, bytes: u64, retransmits: u64, seconds: f64) -> Value {
        json!({
            "cpu_util_total": 0.0, "cpu_util_user": 0.0, "cpu_util_system": 0.0,
            "sender_has_retransmits": if sender { 1 } else { -1 },
            "streams": [{
                "id": 1, "bytes": bytes,
                "retransmits": if sender { retransmits as i64 } else { -1 },
                "jitter": 0, "errors": 0, "omitted_errors": 0, "packets": 0,
                "start_time": 0, "end_time": seconds,
            }],
        })
    }

    impl Control {
        /// Starts with the cookie queued.
        pub fn new(cookie: &[u8; COOKIE_SIZE]) -> Control {
            Control {
                inbuf: Vec::new(),
                out: cookie.to_vec(),
                awaiting_results: false,
            }
        }

        pub fn push(&mut self, data: &[u8]) {
            self.inbuf.extend_from_slice(data);
        }

        pub fn send_state(&mut self, st: i8) {
            self.out.push(st as u8);
        }

        pub fn send_json(&mut self, v: &Value) {
            frame_json(v, &mut self.out);
        }

        /// The next event, once its bytes are in; an error for a refusal
        /// or a protocol violation.
        pub fn next_event(&mut self) -> Result<Option<Event>, String> {
            if self.awaiting_results {
                return Ok(take_json(&mut self.inbuf)?.map(|v| {
                    self.awaiting_results = false;
                    Event::ServerResults(v)
                }));
            }
            let Some(&b) = self.inbuf.first() else {
                return Ok(None);
            };
            let ev = match b as i8 {
                state::PARAM_EXCHANGE => Event::ParamExchange,
                state::CREATE_STREAMS => Event::CreateStreams,
                state::TEST_START => Event::TestStart,
                state::TEST_RUNNING => Event::TestRunning,
                state::EXCHANGE_RESULTS => {
                    self.awaiting_results = true;
                    Event::ExchangeResults
                }
                state::DISPLAY_RESULTS => {
                    self.send_state(state::IPERF_DONE);
                    Event::DisplayResults
                }
                state::ACCESS_DENIED => {
                    return Err("the server is busy with another test (access denied)".into())
                }
                state::SERVER_ERROR => {
                    let Some(e) = self.inbuf.get(1..9) else {
                        return Ok(None);
                    };
                    let i_errno = i32::from_be_bytes([e[0], e[1], e[2], e[3]]);
                    let errno = i32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                    return Err(format!(
                        "the server reported an error (iperf3 error {i_errno}, errno {errno})"
                    ));
                }
                state::SERVER_TERMINATE => return Err("the server terminated the test".into()),
                other => return Err(format!("unexpected state {other} from the server")),
            };
            self.inbuf.remove(0);
            Ok(Some(ev))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mem::MemStream;
    use super::*;

    const COOKIE: &[u8; COOKIE_SIZE] = b"abcdefghijklmnopqrstuvwxyz0123456789\0";

    fn framed(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        frame_json(v, &mut out);
        out
    }

    fn params(extra: Value) -> Value {
        let mut v = json!({"tcp": true, "omit": 0, "time": 10, "num": 0, "blockcount": 0,
                           "parallel": 1, "len": 131072, "pacing_timer": 1000,
                           "client_version": "3.12"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn json_framing_round_trips_and_refuses_oversized_or_bad() {
        let v = json!({"a": 1, "b": [true, "x"]});
        let mut buf = framed(&v);
        buf.push(7);
        let whole = buf.clone();
        for cut in 0..whole.len() - 1 {
            let mut part = whole[..cut].to_vec();
            assert_eq!(take_json(&mut part), Ok(None), "cut {cut}");
        }
        assert_eq!(take_json(&mut buf), Ok(Some(v)));
        assert_eq!(buf, vec![7]);
        let mut big = ((MAX_JSON + 1) as u32).to_be_bytes().to_vec();
        assert!(take_json(&mut big).is_err());
        let mut bad = 3u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{x}");
        assert!(take_json(&mut bad).is_err());
    }

    #[test]
    fn params_say_which_streams_and_what_budget() {
        let p = Params::from_json(&params(json!({"parallel": 4}))).unwrap();
        assert_eq!((p.parallel, p.streams(), p.byte_budget()), (4, (4, 0), 0));
        let p = Params::from_json(&params(json!({"reverse": true, "num": 1000}))).unwrap();
        assert_eq!((p.streams(), p.byte_budget()), ((0, 1), 1000));
        let p = Params::from_json(&params(json!({"bidirectional": true, "parallel": 2}))).unwrap();
        assert_eq!(p.streams(), (2, 2));
        let p = Params::from_json(&params(json!({"blockcount": 3, "len": 100}))).unwrap();
        assert_eq!((p.byte_budget(), p.client_sends()), (300, 300));
        let p = Params::from_json(&params(json!({"num": 250, "len": 100}))).unwrap();
        assert_eq!((p.byte_budget(), p.client_sends()), (250, 300));
        assert!(Params::from_json(&params(json!({"udp": true}))).is_err());
        assert!(Params::from_json(&params(json!({"parallel": 0}))).is_err());
        assert!(Params::from_json(&params(json!({"parallel": 129}))).is_err());
        assert!(Params::from_json(&json!([1])).is_err());
    }

    struct Conn {
        app: Iperf3Conn,
        s: MemStream,
    }

    impl Conn {
        fn new(srv: &Rc<RefCell<Iperf3Server>>) -> Conn {
            Conn {
                app: Iperf3Server::connection(srv),
                s: MemStream::default(),
            }
        }
        fn poll(&mut self, ms: u64) -> bool {
            self.app
                .poll(Instant::ZERO + Duration::from_millis(ms), &mut self.s)
                .1
        }
    }

    /// A forward test with two streams, byte-bounded: the whole exchange,
    /// byte counts in the results, the session freed for the next test.
    #[test]
    fn a_whole_test_runs_through_the_states() {
        let srv = Iperf3Server::shared();
        let mut ctl = Conn::new(&srv);
        ctl.s.incoming.extend_from_slice(&COOKIE[..10]);
        ctl.poll(0);
        assert!(ctl.s.sent.is_empty(), "nothing before the whole cookie");
        ctl.s.incoming.extend_from_slice(&COOKIE[10..]);
        ctl.poll(0);
        assert_eq!(ctl.s.take_sent(), vec![state::PARAM_EXCHANGE as u8]);
        ctl.s.incoming.extend(framed(&params(
            json!({"parallel": 2, "num": 5000, "len": 1000}),
        )));
        ctl.poll(0);
        assert_eq!(ctl.s.take_sent(), vec![state::CREATE_STREAMS as u8]);
        // A second client meanwhile is refused.
        let mut other = Conn::new(&srv);
        other
            .s
            .incoming
            .extend_from_slice(b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\0");
        other.poll(0);
        assert_eq!(other.s.take_sent(), vec![state::ACCESS_DENIED as u8]);
        assert!(other.s.closed);
        let mut data: Vec<Conn> = (0..2).map(|_| Conn::new(&srv)).collect();
        for d in &mut data {
            d.s.incoming.extend_from_slice(COOKIE);
            d.poll(1);
            assert!(d.s.sent.is_empty());
        }
        ctl.poll(2);
        assert_eq!(
            ctl.s.take_sent(),
            vec![state::TEST_START as u8, state::TEST_RUNNING as u8]
        );
        data[0].s.incoming.extend(vec![1u8; 3000]);
        data[1].s.incoming.extend(vec![1u8; 1500]);
        data[0].poll(3);
        data[1].poll(3);
        ctl.s.incoming.push(state::TEST_END as u8);
        ctl.poll(1000);
        assert_eq!(ctl.s.take_sent(), vec![state::EXCHANGE_RESULTS as u8]);
        // The last 500 bytes arrive after TEST_END: still counted (-n).
        data[0].poll(1001);
        ctl.s.incoming.extend(framed(&json!({"streams": []})));
        ctl.poll(1002);
        assert!(ctl.s.sent.is_empty(), "results wait for the streams");
        data[1].s.incoming.extend(vec![1u8; 500]);
        data[1].poll(1003);
        data[0].poll(1003);
        ctl.poll(1004);
        // All of -n is in, but a block written past it may still be on its
        // way: the streams must be quiet for DRAIN_QUIET first.
        assert!(ctl.s.sent.is_empty(), "results wait for quiet streams");
        let quiet = 1003 + DRAIN_QUIET.as_millis() as u64;
        data[1].poll(quiet);
        data[0].poll(quiet);
        ctl.poll(quiet + 1);
        let mut out = ctl.s.take_sent();
        assert_eq!(out.pop(), Some(state::DISPLAY_RESULTS as u8));
        let results = take_json(&mut out).unwrap().unwrap();
        assert!(out.is_empty());
        assert_eq!(results["sender_has_retransmits"], -1);
        let streams = results["streams"].as_array().unwrap();
        let ids: Vec<i64> = streams.iter().map(|s| s["id"].as_i64().unwrap()).collect();
        let bytes: Vec<u64> = streams
            .iter()
            .map(|s| s["bytes"].as_u64().unwrap())
            .collect();
        assert_eq!((ids, bytes), (vec![1, 3], vec![3000, 2000]));
        assert_eq!(streams[0]["retransmits"], -1);
        assert!((streams[0]["end_time"].as_f64().unwrap() - 0.998).abs() < 1e-9);
        assert!(
            data.iter().all(|d| d.s.closed),
            "streams close after reporting"
        );
        ctl.s.incoming.push(state::IPERF_DONE as u8);
        ctl.poll(1005);
        assert!(ctl.s.closed);
        let c = srv.borrow().counters.clone();
        assert_eq!((c.tests, c.bytes_received, c.refused), (1, 5000, 1));
        // The next test may start.
        let mut next = Conn::new(&srv);
        next.s
            .incoming
            .extend_from_slice(b"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\0");
        next.poll(2000);
        assert_eq!(next.s.take_sent(), vec![state::PARAM_EXCHANGE as u8]);
    }

    /// Reverse, byte-bounded: the server sends exactly the budget over its
    /// streams, reports it as sender, and says it has retransmits.
    #[test]
    fn reverse_sends_exactly_the_budget() {
        let srv = Iperf3Server::shared();
        let mut ctl = Conn::new(&srv);
        ctl.s.incoming.extend_from_slice(COOKIE);
        ctl.s.incoming.extend(framed(&params(
            json!({"reverse": true, "num": 1_000_000, "parallel": 2, "get_server_output": 1}),
        )));
        ctl.poll(0);
        ctl.s.take_sent();
        let mut data: Vec<Conn> = (0..2).map(|_| Conn::new(&srv)).collect();
        for d in &mut data {
            d.s.incoming.extend_from_slice(COOKIE);
            d.s.cap = Some(100_000);
            d.poll(0);
            assert!(d.s.sent.is_empty(), "nothing before TEST_RUNNING");
        }
        ctl.poll(1);
        assert_eq!(
            ctl.s.take_sent(),
            vec![state::TEST_START as u8, state::TEST_RUNNING as u8]
        );
        for _ in 0..20 {
            for d in &mut data {
                d.poll(2);
            }
        }
        let total: usize = data.iter().map(|d| d.s.sent.len()).sum();
        assert_eq!(total, 1_000_000);
        ctl.s.incoming.push(state::TEST_END as u8);
        ctl.s.incoming.extend(framed(&json!({})));
        ctl.poll(500);
        for d in &mut data {
            d.poll(501);
        }
        ctl.poll(502);
        let mut out = ctl.s.take_sent();
        assert_eq!(out.remove(0), state::EXCHANGE_RESULTS as u8);
        let results = take_json(&mut out).unwrap().unwrap();
        assert_eq!(results["sender_has_retransmits"], 1);
        let sum: u64 = results["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, 1_000_000);
        assert_eq!(
            results["server_output_json"]["end"]["sum_sent"]["bytes"],
            1_000_000
        );
    }

    #[test]
    fn bad_parameters_get_server_error_and_a_vanished_client_aborts() {
        let srv = Iperf3Server::shared();
        let mut ctl = Conn::new(&srv);
        ctl.s.incoming.extend_from_slice(COOKIE);
        ctl.s.incoming.extend(framed(&params(json!({"udp": true}))));
        ctl.poll(0);
        let out = ctl.s.take_sent();
        assert_eq!(out[0], state::PARAM_EXCHANGE as u8);
        assert_eq!(out[1], state::SERVER_ERROR as u8);
        assert_eq!(out.len(), 10);
        assert!(ctl.s.closed);
        assert_eq!(srv.borrow().counters.aborted, 1);
        // A control connection that closes mid-test frees the server.
        let mut ctl = Conn::new(&srv);
        ctl.s.incoming.extend_from_slice(COOKIE);
        ctl.poll(0);
        ctl.s.peer_closed = true;
        ctl.poll(1);
        assert!(ctl.s.closed);
        assert_eq!(srv.borrow().counters.aborted, 2);
        assert!(srv.borrow().session.is_none());
    }

    /// The client side against this crate's server: the whole exchange.
    #[test]
    fn the_client_control_talks_to_the_server() {
        let srv = Iperf3Server::shared();
        let mut ctl = Conn::new(&srv);
        let mut c = client::Control::new(&client::cookie(&[7; 36]));
        let pump = |c: &mut client::Control, ctl: &mut Conn, ms| {
            ctl.s.incoming.append(&mut c.out);
            ctl.poll(ms);
            c.push(&ctl.s.take_sent());
            let mut evs = Vec::new();
            while let Some(e) = c.next_event().unwrap() {
                evs.push(e);
            }
            evs
        };
        assert_eq!(
            pump(&mut c, &mut ctl, 0),
            vec![client::Event::ParamExchange]
        );
        c.send_json(&client::params(0.0, 1000, false, 100));
        assert_eq!(
            pump(&mut c, &mut ctl, 0),
            vec![client::Event::CreateStreams]
        );
        let mut d = Conn::new(&srv);
        d.s.incoming.extend_from_slice(&client::cookie(&[7; 36]));
        d.s.incoming.extend(vec![0u8; 1000]);
        d.poll(1);
        assert_eq!(
            pump(&mut c, &mut ctl, 2),
            vec![client::Event::TestStart, client::Event::TestRunning]
        );
        d.poll(3);
        c.send_state(state::TEST_END);
        assert_eq!(
            pump(&mut c, &mut ctl, 4),
            vec![client::Event::ExchangeResults]
        );
        c.send_json(&client::results(true, 1000, 0, 0.004));
        // Quiet since its last bytes (at 1 ms) for DRAIN_QUIET.
        d.poll(1 + DRAIN_QUIET.as_millis() as u64);
        let evs = pump(&mut c, &mut ctl, 30);
        let client::Event::ServerResults(r) = &evs[0] else {
            panic!("{evs:?}");
        };
        assert_eq!(r["streams"][0]["bytes"], 1000);
        assert_eq!(evs[1], client::Event::DisplayResults);
        assert_eq!(c.out, vec![state::IPERF_DONE as u8]);
        pump(&mut c, &mut ctl, 31);
        assert_eq!(srv.borrow().counters.tests, 1);
        let mut denied = client::Control::new(&client::cookie(&[1; 36]));
        denied.push(&[state::ACCESS_DENIED as u8]);
        assert!(denied.next_event().is_err());
    }
}
