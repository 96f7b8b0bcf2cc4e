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
    pub engine: E,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStats {
    pub name: String,
    pub xdp: String,
    pub af_xdp: String,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub kernel_rx_dropped: u64,
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
}

/// The MPTCP engine's counters and gauges.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MptcpEngineStats {
    /// Live connections (a gauge), by state, and how many fell back to TCP.
    pub connections: u64,
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
    pub join_refused: u64,
    pub resets_sent: u64,
    pub monitor_dropped: u64,
}

/// The control plane's own counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlCounters {
    /// Commands the worker answered.
    pub commands: u64,
    /// Monitor events dropped because the monitor queue was full.
    pub events_dropped: u64,
}

/// Everything but the engine part, from the datapath and the worker.
pub fn collect<E, X>(
    role: &str,
    datapath: &Datapath,
    worker: &Worker<E>,
    engine: X,
) -> InstanceStats<X> {
    let c = datapath.counters().unwrap_or_default();
    let s = &worker.stats;
    InstanceStats {
        pid: std::process::id(),
        role: role.into(),
        interfaces: worker
            .paths
            .iter()
            .zip(&datapath.attach_modes)
            .map(|(p, m)| InterfaceStats {
                name: p.iface.clone(),
                xdp: format!("{m:?}"),
                af_xdp: format!("{:?}", p.socket.mode()),
                rx_frames: p.socket.counters.rx_frames,
                tx_frames: p.socket.counters.tx_frames,
                kernel_rx_dropped: p.socket.kernel_stats().map(|k| k.rx_dropped).unwrap_or(0),
                rx_frames_per_queue: std::iter::once(&p.socket)
                    .chain(&p.extra_rx)
                    .map(|s| s.counters.rx_frames)
                    .collect(),
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
        },
        worker: WorkerCounters {
            rx_frames: s.rx_frames,
            tx_frames: s.tx_frames,
            rx_not_ip: s.rx_not_ip,
            no_neighbour: s.no_neighbour,
            tx_ring_full: s.tx_ring_full,
            passes: s.passes,
            sleeps: s.sleeps,
        },
        engine,
    }
}

/// The MPTCP engine's part (walks the live connections: only on request).
pub fn mptcp_engine_stats(engine: &MptcpEndpoint) -> MptcpEngineStats {
    let c = engine.counters();
    let mut st = MptcpEngineStats {
        partial_checksum: c.partial_checksum,
        bad_checksum: c.bad_checksum,
        counters: EngineCounters {
            malformed: c.malformed,
            bad_checksum: c.bad_checksum,
            partial_checksum: c.partial_checksum,
            unmatched: c.unmatched,
            join_refused: c.join_refused,
            resets_sent: c.resets_sent,
            monitor_dropped: c.monitor_dropped,
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
