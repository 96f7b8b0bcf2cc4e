//! The operators' control plane of a running instance, off the packet path.
//!
//! - [`server`]: a tokio runtime on its own thread serves a Unix socket
//!   (`/run/mptcp-user/<pid>.sock`, mode 0600: root only) speaking JSON
//!   lines ([`protocol`]), the event monitor, and Prometheus metrics over
//!   HTTP ([`metrics`]).
//! - [`worker`]: the worker's side. Commands reach the worker through a
//!   bounded queue that it drains with `try_recv` once per pass (an eventfd
//!   wakes it from poll()); replies go back by oneshot; monitor events leave
//!   through a bounded queue (a full queue drops and counts, never blocks).
//!   Nothing here blocks or allocates per packet.
//! - [`snapshot`]: one source of truth for counters: `stats`, `ctl stats`
//!   and `/metrics` read the same [`snapshot::InstanceStats`].
//! - [`client`]: the synchronous client `mptcp-user ctl` and `stats` use.
//! - [`stream`], [`run`]: applications outside the worker: a tokio API
//!   ([`MptcpListener::accept`] yields [`MptcpStream`]s, AsyncRead +
//!   AsyncWrite, with subflow control and events) over bounded SPSC byte
//!   rings between the worker and tokio tasks; [`run`] starts a worker
//!   thread as a client or a server.
//!
//! Tokio lives here, never in the engine (sans-IO) or the datapath.

pub mod client;
pub mod metrics;
pub mod protocol;
pub mod run;
pub mod server;
pub mod snapshot;
pub mod stream;
pub mod worker;

pub use server::{ControlHandle, ControlOptions, ControlPlane};
pub use stream::{MptcpListener, MptcpStream};
pub use worker::WorkerSide;

/// Where running instances keep their control sockets (and, for instances
/// without one, their stats files).
pub const RUN_DIR: &str = "/run/mptcp-user";

/// The control socket of instance `pid`.
pub fn socket_path(pid: u32) -> std::path::PathBuf {
    std::path::Path::new(RUN_DIR).join(format!("{pid}.sock"))
}
