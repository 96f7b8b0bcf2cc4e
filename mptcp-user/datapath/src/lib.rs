//! Drivers of the engine on real interfaces: where a packet enters.
//!
//! - [`xdp`]: loads the embedded XDP classifier, fills its maps, attaches
//!   and detaches it, reads its counters.
//! - [`afxdp`]: AF_XDP sockets (UMEM and the four rings), batched.
//! - [`route`]: next hops, neighbours and MTUs from the kernel (rtnetlink).
//! - [`rss`]: the NIC's RSS (Toeplitz hash, indirection table), for clients
//!   that pick ports landing on their worker's queue.
//! - [`worker`]: the run-to-completion loop that feeds received frames to an
//!   engine and sends what it produces; applications run inside it.
//! - [`setup`]: opens all of that on a set of interfaces ([`Datapath`]).
//! - [`handoff`]: frames passed between workers (SPSC rings of frame addresses).
//! - [`forward`]: the application that relays a connection to a TCP backend.
//! - [`apps`]: the front ends people deploy: an iperf3 server, a SOCKS5
//!   proxy, an RFC 8803 Transport Converter (protocol logic sans-IO).
//! - [`linkwatch`]: link and address events of the paths' interfaces,
//!   told to the engine as path down/up.
//! - [`iface`], [`neighbour`], [`signals`]: interface facts, the per-path
//!   neighbour table, clean stops on SIGINT/SIGTERM.
pub mod afxdp;
pub mod apps;
pub mod forward;
pub mod handoff;
pub mod iface;
pub mod linkwatch;
pub mod neighbour;
pub mod route;
pub mod rss;
pub mod setup;
pub mod signals;
pub mod worker;
pub mod xdp;

pub use setup::{Datapath, WorkerPaths};
