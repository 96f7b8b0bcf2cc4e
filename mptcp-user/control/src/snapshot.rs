//! The counters of a running instance, one structure for every reader:
//! `mptcp-user stats`, `ctl stats` and `/metrics` all read an
//! [`InstanceStats`] built by [`collect`].

use std::collections::BTreeMap;

use mptcp_datapath::worker::Worker;
use mptcp_datapath::Datapath;
use mptcp_engine::mptcp::{ConnectionState, MptcpEndpoint};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceStats<E> {
    pub pid: u32,
    pub role: String,
    pub interfaces: Vec<InterfaceStats>,
    pub classifier: ClassifierStats,
    pub worker: WorkerCounters,
    /// One entry per worker (several with `--workers`); `worker` above and
    /// the engine's figures are their sums.
    #[serde(default)]
    pub workers: Vec<WorkerEntry>,
    pub engine: E,
}

/// One worker's share.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerEntry {
    pub worker: usize,
    /// Live connections this worker owns (a gauge; MPTCP engine).
    pub connections: u64,
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames that arrived on this worker's queues for another worker's
    /// connections and were handed to it.
    pub handoffs: u64,
    /// Frames other workers handed to this one.
    pub handoffs_in: u64,
    /// Frames dropped because their owner already held too many of ours.
    pub handoff_dropped: u64,
    /// Writes to the classifier's affinity maps, and those refused (full).
    pub affinity_updates: u64,
    pub affinity_failed: u64,
    /// Times the worker panicked (each reset its connections and restarted it).
    pub panics: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStats {
    pub name: String,
    pub xdp: String,
    pub af_xdp: String,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub kernel_rx_dropped: u64,
    /// XDP_STATISTICS summed over the interface's sockets: frames the
    /// kernel dropped because our RX ring was full or the fill ring empty.
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
    pub rx_frames_per_queue: Vec<u64>,
}

/// The XDP classifier's counters, summed over interfaces and CPUs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassifierStats {
    pub seen: u64,
    pub redirected: u64,
    pub passed: u64,
    pub owned: u64,
    pub owned_no_socket: u64,
    pub malformed: u64,
    pub mp_capable_syn: u64,
    pub mp_join_syn: u64,
    pub dss: u64,
    pub other_mptcp: u64,
    pub plain_tcp: u64,
    #[serde(default)]
    pub owner_tagged: u64,
    #[serde(default)]
    pub owner_meta_failed: u64,
}

/// The worker loop's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_not_ip: u64,
    pub no_neighbour: u64,
    pub tx_ring_full: u64,
    pub passes: u64,
    pub sleeps: u64,
    #[serde(default)]
    pub handoffs: u64,
    #[serde(default)]
    pub handoffs_in: u64,
    #[serde(default)]
    pub handoff_dropped: u64,
}

/// The MPTCP engine's counters and gauges.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MptcpEngineStats {
    /// Counters of the applications (SOCKS5, converter, iperf3), when any.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub apps: serde_json::Value,
    /// Live connections (a gauge), by state, and how many fell back to TCP.
    pub connections: u64,
    /// Accepted connections whose handshake is not complete (a gauge).
    pub half_open: u64,
    /// Connection slots, live or free (a gauge).
    pub slots: u64,
    pub connections_by_state: BTreeMap<String, u64>,
    pub fallbacks: u64,
    /// Connections the application finished with (a counter).
    pub closed: u64,
    /// Open subflows of the live connections (a gauge), by state.
    pub subflows: u64,
    pub subflows_by_state: BTreeMap<String, u64>,
    /// Kept at the top level for scripts written before `counters`.
    pub partial_checksum: u64,
    pub bad_checksum: u64,
    pub counters: EngineCounters,
    /// Connections the endpoint visited (it visits only those with work).
    pub work: EngineWork,
    /// The worker's pooled buffer memory.
    pub buffers: BufferStats,
    /// Monitor events by name (counters, since the instance started).
    pub events: BTreeMap<String, u64>,
    pub control: ControlCounters,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineCounters {
    pub malformed: u64,
    pub bad_checksum: u64,
    pub partial_checksum: u64,
    pub unmatched: u64,
    pub accepted: u64,
    pub join_accepted: u64,
    pub join_refused: u64,
    pub resets_sent: u64,
    pub resets_dropped: u64,
    pub refused_max_connections: u64,
    pub syn_dropped: u64,
    pub syn_cookies_sent: u64,
    pub syn_cookies_accepted: u64,
    pub syn_cookies_invalid: u64,
    pub monitor_dropped: u64,
    #[serde(default)]
    pub affinity_dropped: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineWork {
    pub transmit_calls: u64,
    pub transmit_visits: u64,
    pub timeout_calls: u64,
    pub timeout_visits: u64,
}

/// The buffer pool of the worker's thread, in bytes (chunks: a count).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BufferStats {
    pub in_use: u64,
    pub peak: u64,
    pub free: u64,
    pub chunks_allocated: u64,
    pub over_limit: u64,
    pub limit: u64,
}

/// The control plane's own counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlCounters {
    /// Commands the worker answered.
    pub commands: u64,
    /// Monitor events dropped because the monitor queue was full.
    pub events_dropped: u64,
}

/// One XDP_STATISTICS counter summed over every socket of a path.
fn xsk_stat(p: &mptcp_datapath::worker::Path, f: impl Fn(&libc::xdp_statistics) -> u64) -> u64 {
    std::iter::once(&p.socket)
        .chain(&p.extra_rx)
        .filter_map(|s| s.kernel_stats().ok())
        .map(|k| f(&k))
        .sum()
}

/// Everything but the engine part, from the datapath and the worker.
pub fn collect<E, X>(
    role: &str,
    datapath: &Datapath,
    worker: &Worker<E>,
    engine: X,
) -> InstanceStats<X> {
    collect_worker(role, Some(datapath), worker, engine)
}

/// [`collect`] for one of several workers: only the one holding the
/// datapath reports the classifier (the others report zeros and no attach
/// modes), so the workers' figures add up (see [`merge`]).
pub fn collect_worker<E, X>(
    role: &str,
    datapath: Option<&Datapath>,
    worker: &Worker<E>,
    engine: X,
) -> InstanceStats<X> {
    let c = datapath.and_then(|d| d.counters().ok()).unwrap_or_default();
    let modes = datapath.map(|d| d.attach_modes.clone()).unwrap_or_default();
    let s = &worker.stats;
    let affinity = worker.affinity();
    let maps = affinity.map(|a| a.maps.counters).unwrap_or_default();
    InstanceStats {
        pid: std::process::id(),
        role: role.into(),
        interfaces: worker
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| InterfaceStats {
                name: p.iface.clone(),
                xdp: modes.get(i).map(|m| format!("{m:?}")).unwrap_or_default(),
                af_xdp: format!("{:?}", p.socket.mode()),
                rx_frames: p.socket.counters.rx_frames,
                tx_frames: p.socket.counters.tx_frames,
                kernel_rx_dropped: p.socket.kernel_stats().map(|k| k.rx_dropped).unwrap_or(0),
                rx_dropped: xsk_stat(p, |k| k.rx_dropped),
                rx_ring_full: xsk_stat(p, |k| k.rx_ring_full),
                rx_fill_ring_empty: xsk_stat(p, |k| k.rx_fill_ring_empty_descs),
                rx_invalid_descs: xsk_stat(p, |k| k.rx_invalid_descs),
                rx_frames_per_queue: per_queue(p),
            })
            .collect(),
        classifier: ClassifierStats {
            seen: c.seen,
            redirected: c.redirected,
            passed: c.passed,
            owned: c.owned,
            owned_no_socket: c.owned_no_socket,
            malformed: c.malformed,
            mp_capable_syn: c.mp_capable_syn,
            mp_join_syn: c.mp_join_syn,
            dss: c.dss,
            other_mptcp: c.other_mptcp,
            plain_tcp: c.plain_tcp,
            owner_tagged: c.owner_tagged,
            owner_meta_failed: c.owner_meta_failed,
        },
        worker: WorkerCounters {
            rx_frames: s.rx_frames,
            tx_frames: s.tx_frames,
            rx_not_ip: s.rx_not_ip,
            no_neighbour: s.no_neighbour,
            tx_ring_full: s.tx_ring_full,
            passes: s.passes,
            sleeps: s.sleeps,
            handoffs: s.handoffs_out,
            handoffs_in: s.handoffs_in,
            handoff_dropped: s.handoff_dropped,
        },
        workers: vec![WorkerEntry {
            worker: affinity.map_or(0, |a| a.id()),
            connections: 0,
            rx_frames: s.rx_frames,
            tx_frames: s.tx_frames,
            handoffs: s.handoffs_out,
            handoffs_in: s.handoffs_in,
            handoff_dropped: s.handoff_dropped,
            affinity_updates: maps.updates,
            affinity_failed: maps.failed,
            panics: 0,
        }],
        engine,
    }
}

/// Frames received per queue id (zero for queues of other workers).
fn per_queue(p: &mptcp_datapath::worker::Path) -> Vec<u64> {
    let sockets = || std::iter::once(&p.socket).chain(&p.extra_rx);
    let len = sockets().map(|s| s.queue() as usize + 1).max().unwrap_or(0);
    let mut v = vec![0; len];
    for s in sockets() {
        v[s.queue() as usize] += s.counters.rx_frames;
    }
    v
}

/// Several workers' snapshots (JSON) as one: counters and gauges add up,
/// arrays of the same things (interfaces, queues) add up element by
/// element, `workers` entries are listed, names and the pid are kept.
pub fn merge(parts: Vec<serde_json::Value>) -> serde_json::Value {
    let mut parts = parts.into_iter();
    let Some(mut total) = parts.next() else {
        return serde_json::Value::Null;
    };
    for p in parts {
        add(&mut total, p, "");
    }
    total
}

fn add(a: &mut serde_json::Value, b: serde_json::Value, key: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if key == "pid" {
                return;
            }
            let sum = match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => Value::from(i + j),
                _ => Value::from(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0)),
            };
            *x = match sum {
                Value::Number(n) => n,
                _ => return,
            };
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in y {
                match x.get_mut(&k) {
                    Some(slot) => add(slot, v, &k),
                    None => {
                        x.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if key == "workers" {
                x.extend(y);
                return;
            }
            let mut y = y.into_iter();
            for slot in x.iter_mut() {
                match y.next() {
                    Some(v) => add(slot, v, key),
                    None => return,
                }
            }
            x.extend(y);
        }
        (Value::String(x), Value::String(y)) if x.is_empty() => *x = y,
        (slot @ Value::Null, v) => *slot = v,
        _ => {}
    }
}

/// The MPTCP engine's part (walks the live connections: only on request;
/// on the worker's thread, whose buffer pool it reports).
pub fn mptcp_engine_stats(engine: &MptcpEndpoint) -> MptcpEngineStats {
    let c = engine.counters();
    let w = engine.work();
    let p = mptcp_engine::tcp::pool::stats();
    let mut st = MptcpEngineStats {
        half_open: engine.half_open_count() as u64,
        slots: engine.slot_count() as u64,
        work: EngineWork {
            transmit_calls: w.transmit_calls,
            transmit_visits: w.transmit_visits,
            timeout_calls: w.timeout_calls,
            timeout_visits: w.timeout_visits,
        },
        buffers: BufferStats {
            in_use: p.in_use,
            peak: p.peak,
            free: p.free,
            chunks_allocated: p.allocated,
            over_limit: p.over_limit,
            limit: p.limit,
        },
        partial_checksum: c.partial_checksum,
        bad_checksum: c.bad_checksum,
        counters: EngineCounters {
            malformed: c.malformed,
            bad_checksum: c.bad_checksum,
            partial_checksum: c.partial_checksum,
            unmatched: c.unmatched,
            accepted: c.accepted,
            join_accepted: c.join_accepted,
            join_refused: c.join_refused,
            resets_sent: c.resets_sent,
            resets_dropped: c.resets_dropped,
            refused_max_connections: c.refused_max_connections,
            syn_dropped: c.syn_dropped,
            syn_cookies_sent: c.syn_cookies_sent,
            syn_cookies_accepted: c.syn_cookies_accepted,
            syn_cookies_invalid: c.syn_cookies_invalid,
            monitor_dropped: c.monitor_dropped,
            affinity_dropped: c.affinity_dropped,
        },
        ..Default::default()
    };
    for state in ["connecting", "established", "closing", "closed", "reset"] {
        st.connections_by_state.insert(state.into(), 0);
    }
    for state in ["establishing", "established", "backup", "closing"] {
        st.subflows_by_state.insert(state.into(), 0);
    }
    for conn in engine.connections() {
        let info = conn.info();
        st.connections += 1;
        st.fallbacks += u64::from(info.fallback.is_some());
        *st.connections_by_state
            .entry(info.state.name().into())
            .or_default() += 1;
        if info.state == ConnectionState::Closed {
            continue;
        }
        for sf in conn.subflows() {
            let name = sf.status.name();
            if let Some(n) = st.subflows_by_state.get_mut(name) {
                *n += 1;
                st.subflows += 1;
            }
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workers_add_up_and_are_listed() {
        let a = json!({"pid": 7, "role": "serve", "engine": {"connections": 2, "by": {"x": 1}},
            "interfaces": [{"name": "srv0", "xdp": "Driver", "rx_frames_per_queue": [5, 0, 1]}],
            "workers": [{"worker": 0, "handoffs": 3}]});
        let b = json!({"pid": 7, "role": "serve", "engine": {"connections": 3, "by": {"y": 2}},
            "interfaces": [{"name": "srv0", "xdp": "", "rx_frames_per_queue": [0, 4]}],
            "workers": [{"worker": 1, "handoffs": 4}]});
        let m = merge(vec![a, b]);
        assert_eq!(m["pid"], 7);
        assert_eq!(m["role"], "serve");
        assert_eq!(m["engine"]["connections"], 5);
        assert_eq!(m["engine"]["by"], json!({"x": 1, "y": 2}));
        assert_eq!(m["interfaces"][0]["xdp"], "Driver");
        assert_eq!(m["interfaces"][0]["rx_frames_per_queue"], json!([5, 4, 1]));
        assert_eq!(m["workers"][1], json!({"worker": 1, "handoffs": 4}));
        assert_eq!(merge(vec![]), serde_json::Value::Null);
    }
}
