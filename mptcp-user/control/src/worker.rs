//! The worker's side of the control plane: called once per pass of the
//! worker loop, it forwards monitor events and answers queued commands.
//! Never blocks: `try_recv` on the command queue, `try_send` of events.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use mptcp_datapath::worker::Worker;
use mptcp_datapath::Datapath;
use mptcp_engine::mptcp::{
    ConnHandle, Connection, MonitorKind, MptcpEndpoint, SubflowId, SubflowInfo, SubflowOptions,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{ConnectionRow, EventRow, Request, SubflowRow, Token};
use crate::snapshot::{self, InstanceStats, MptcpEngineStats};

/// Commands answered per pass at most, so a burst of commands cannot hold
/// packets back for long.
const JOBS_PER_PASS: usize = 16;

/// A command and where its answer goes.
pub(crate) struct Job {
    pub request: Request,
    pub reply: oneshot::Sender<Result<Value, String>>,
}

/// State shared by the tokio side and the worker.
pub(crate) struct Shared {
    /// Set by the tokio side after queueing a command (eventfd written once).
    pub pending: AtomicBool,
    pub eventfd: OwnedFd,
    /// Monitor clients connected: events are forwarded only when there are some.
    pub monitors: AtomicUsize,
}

impl Shared {
    /// Wakes the worker (one eventfd write per burst of commands).
    pub fn kick(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes to our eventfd.
            unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

/// Held by the worker loop; see the module docs.
pub struct WorkerSide {
    pub(crate) jobs: Receiver<Job>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: mpsc::Sender<EventRow>,
    event_counts: [u64; 8],
    commands: u64,
    events_dropped: u64,
    role: String,
    /// Counters of the applications (proxies, iperf3), set by the front end.
    pub apps: serde_json::Value,
    /// Which worker this side serves (0 with one worker).
    pub(crate) index: usize,
    /// Times the worker panicked, set by the front end that restarts it.
    pub panics: u64,
}

const KINDS: [MonitorKind; 8] = [
    MonitorKind::Created,
    MonitorKind::Established,
    MonitorKind::Closed,
    MonitorKind::Announced,
    MonitorKind::Removed,
    MonitorKind::SfEstablished,
    MonitorKind::SfClosed,
    MonitorKind::SfPrio,
];

impl WorkerSide {
    pub(crate) fn new(
        jobs: Receiver<Job>,
        shared: Arc<Shared>,
        events: mpsc::Sender<EventRow>,
        role: &str,
    ) -> WorkerSide {
        WorkerSide {
            jobs,
            shared,
            events,
            event_counts: [0; 8],
            commands: 0,
            events_dropped: 0,
            role: role.into(),
            apps: serde_json::Value::Null,
            index: 0,
            panics: 0,
        }
    }

    /// Which worker this side serves.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Add it to the descriptors the worker sleeps on: a command wakes it.
    pub fn wake_fd(&self) -> RawFd {
        self.shared.eventfd.as_raw_fd()
    }

    /// One pass: forward monitor events, answer queued commands. `closed`
    /// is the application's count of finished connections. Returns the
    /// work done (0: nothing waited).
    pub fn poll(
        &mut self,
        worker: &mut Worker<MptcpEndpoint>,
        datapath: &Datapath,
        closed: u64,
    ) -> usize {
        self.poll_worker(worker, Some(datapath), closed)
    }

    /// [`WorkerSide::poll`] for one of several workers: the one holding
    /// the datapath passes it (its classifier counters are reported once).
    pub fn poll_worker(
        &mut self,
        worker: &mut Worker<MptcpEndpoint>,
        datapath: Option<&Datapath>,
        closed: u64,
    ) -> usize {
        let mut work = 0;
        let listening = self.shared.monitors.load(Ordering::Relaxed) > 0;
        while let Some(e) = worker.engine.poll_monitor() {
            work += 1;
            if let Some(k) = KINDS.iter().position(|k| *k == e.kind) {
                self.event_counts[k] += 1;
            }
            if listening && self.events.try_send(EventRow::from(&e)).is_err() {
                self.events_dropped += 1;
            }
        }
        if !self.shared.pending.swap(false, Ordering::AcqRel) {
            return work;
        }
        let mut buf = 0u64;
        // SAFETY: reading 8 bytes from our non-blocking eventfd.
        unsafe {
            libc::read(
                self.shared.eventfd.as_raw_fd(),
                (&mut buf as *mut u64).cast(),
                8,
            )
        };
        for _ in 0..JOBS_PER_PASS {
            match self.jobs.try_recv() {
                Ok(job) => {
                    let answer = self.answer(job.request, worker, datapath, closed);
                    self.commands += 1;
                    let _ = job.reply.send(answer);
                    work += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return work,
            }
        }
        // More may wait: come back next pass.
        self.shared.pending.store(true, Ordering::Release);
        work
    }

    /// The counters `stats`, `ctl stats` and `/metrics` show.
    pub fn stats(
        &self,
        worker: &Worker<MptcpEndpoint>,
        datapath: Option<&Datapath>,
        closed: u64,
    ) -> InstanceStats<MptcpEngineStats> {
        let mut engine = snapshot::mptcp_engine_stats(&worker.engine);
        engine.closed = closed;
        for (k, n) in KINDS.iter().zip(self.event_counts) {
            engine.events.insert(k.name().into(), n);
        }
        engine.control.commands = self.commands;
        engine.control.events_dropped = self.events_dropped;
        engine.apps = self.apps.clone();
        let connections = engine.connections;
        let mut st = snapshot::collect_worker(&self.role, datapath, worker, engine);
        for w in &mut st.workers {
            w.worker = self.index;
            w.connections = connections;
            w.panics = self.panics;
        }
        st
    }

    fn answer(
        &mut self,
        request: Request,
        worker: &mut Worker<MptcpEndpoint>,
        datapath: Option<&Datapath>,
        closed: u64,
    ) -> Result<Value, String> {
        let now = worker.now();
        let index = self.index;
        let ifaces: Vec<String> = worker.paths.iter().map(|p| p.iface.clone()).collect();
        let engine = &mut worker.engine;
        let slot = |engine: &MptcpEndpoint, token: Token| {
            engine
                .handle_of_token(token.0)
                .ok_or_else(|| format!("no connection with token {token}"))
        };
        let value = |v: Result<Value, serde_json::Error>| v.map_err(|e| e.to_string());
        match request {
            Request::Connections => {
                let rows: Vec<ConnectionRow> = engine
                    .connections()
                    .map(|c| ConnectionRow {
                        worker: index,
                        ..connection_row(c)
                    })
                    .collect();
                value(serde_json::to_value(rows))
            }
            Request::Subflows { token } => {
                let c = conn(engine, slot(engine, token)?)?;
                let rows: Vec<SubflowRow> =
                    c.subflows().map(|s| subflow_row(c, s, &ifaces)).collect();
                value(serde_json::to_value(rows))
            }
            Request::SubflowStats { token, id } => {
                let c = conn(engine, slot(engine, token)?)?;
                let s = find_subflow(c, token, id)?;
                value(serde_json::to_value(subflow_row(c, s, &ifaces)))
            }
            Request::Open {
                token,
                local,
                remote,
            } => {
                let at = slot(engine, token)?;
                match engine.open_subflow_at(at, now, local, remote) {
                    Some(id) => Ok(json!({ "id": id })),
                    None => Err(format!(
                        "cannot open {local} -> {remote} on {token}: the address must be ours \
                         and the connection a client's, fully established, not fallen back, \
                         under its subflow limit, without that tuple (peers such as Linux accept \
                         MP_JOIN only on a listener)"
                    )),
                }
            }
            Request::Close { token, id } => {
                let at = slot(engine, token)?;
                let c = conn_mut(engine, at)?;
                find_subflow(c, token, id)?;
                if c.close_subflow(id) {
                    Ok(json!({ "id": id }))
                } else {
                    Err(format!("subflow {id} of {token} is already closing"))
                }
            }
            Request::Prio { token, id, backup } => set_options(
                engine,
                slot(engine, token)?,
                token,
                id,
                SubflowOptions {
                    backup: Some(backup),
                    dscp: None,
                },
            ),
            Request::Dscp { token, id, dscp } => {
                if dscp > 63 {
                    return Err(format!("DSCP {dscp}: six bits (0..=63)"));
                }
                set_options(
                    engine,
                    slot(engine, token)?,
                    token,
                    id,
                    SubflowOptions {
                        backup: None,
                        dscp: Some(dscp),
                    },
                )
            }
            Request::Announce { token, addr } => {
                let c = conn_mut(engine, slot(engine, token)?)?;
                match c.announce_address(now, addr) {
                    Some(id) => Ok(json!({ "addr_id": id })),
                    None => Err(format!(
                        "cannot announce {addr} on {token}: it must be one of this instance's \
                         addresses other than the connection's initial one, and the connection \
                         not fallen back"
                    )),
                }
            }
            Request::Remove { token, addr } => {
                let c = conn_mut(engine, slot(engine, token)?)?;
                match c.local_address_id(addr) {
                    Some(id) => {
                        c.remove_local_address(id);
                        Ok(json!({ "addr_id": id }))
                    }
                    None => Err(format!("{addr} is not an address of {token}")),
                }
            }
            Request::Stats => value(serde_json::to_value(self.stats(worker, datapath, closed))),
            Request::Monitor => Err("monitor is a stream: the server handles it".into()),
        }
    }
}

fn conn(engine: &MptcpEndpoint, h: ConnHandle) -> Result<&Connection, String> {
    engine.get(h).ok_or_else(|| "connection gone".into())
}

fn conn_mut(engine: &mut MptcpEndpoint, h: ConnHandle) -> Result<&mut Connection, String> {
    engine.get_mut(h).ok_or_else(|| "connection gone".into())
}

fn find_subflow(c: &Connection, token: Token, id: SubflowId) -> Result<SubflowInfo, String> {
    c.subflows()
        .find(|s| s.id == id)
        .ok_or_else(|| format!("connection {token} has no subflow {id}"))
}

fn set_options(
    engine: &mut MptcpEndpoint,
    h: ConnHandle,
    token: Token,
    id: SubflowId,
    opts: SubflowOptions,
) -> Result<Value, String> {
    let c = conn_mut(engine, h)?;
    find_subflow(c, token, id)?;
    c.set_subflow_options(id, opts);
    Ok(json!({ "id": id }))
}

pub(crate) fn connection_row(c: &Connection) -> ConnectionRow {
    let i = c.info();
    ConnectionRow {
        token: Token(i.token),
        local: i.local,
        remote: i.remote,
        state: i.state.name().into(),
        fallback: i.fallback.is_some(),
        fallback_reason: i.fallback.map(|f| f.name().into()),
        bytes_sent: i.bytes_sent,
        bytes_acked: i.bytes_acked,
        bytes_received: i.bytes_received,
        bytes_retransmitted: i.bytes_retransmitted,
        bytes_reinjected: i.bytes_reinjected,
        subflows: i.subflows as u64,
        subflows_total: i.subflows_total as u64,
        worker: 0,
    }
}

pub(crate) fn subflow_row(c: &Connection, s: SubflowInfo, ifaces: &[String]) -> SubflowRow {
    let st = c.subflow_stats(s.id).unwrap_or_default();
    SubflowRow {
        id: s.id,
        local: s.tuple.local,
        remote: s.tuple.remote,
        interface: ifaces.get(s.path).cloned().unwrap_or_default(),
        local_id: s.local_addr_id,
        remote_id: s.remote_addr_id,
        backup: s.backup,
        peer_backup: s.peer_backup,
        state: s.status.name().into(),
        dscp: s.dscp,
        cwnd: st.cwnd,
        ssthresh: st.ssthresh,
        srtt_us: st.srtt.as_micros() as u64,
        rttvar_us: st.rttvar.as_micros() as u64,
        rto_us: st.rto.as_micros() as u64,
        bytes_sent: st.bytes_sent,
        bytes_acked: st.bytes_acked,
        bytes_retransmitted: st.bytes_retransmitted,
        bytes_received: st.bytes_received,
        bytes_reinjected: st.bytes_reinjected,
        retransmits: st.retransmits,
    }
}
