//! Starting the engine for tokio applications: a worker thread on the
//! given interfaces (XDP + AF_XDP), its control plane, and the stream API.
//! [`connect`] is the client role, [`listen`] the server role.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mptcp_datapath::afxdp::XskConfig;
use mptcp_datapath::worker::{Path, Worker};
use mptcp_datapath::xdp::Ownership;
use mptcp_datapath::Datapath;
use mptcp_engine::mptcp::{LocalAddr, MptcpConfig, MptcpEndpoint};
use mptcp_engine::pm::PmKind;
use mptcp_engine::time::Instant;

use crate::server::{ControlOptions, ControlPlane};
use crate::stream::{bridge, MptcpListener, MptcpStream, RING};
use crate::worker::WorkerSide;

/// Settings shared by both roles.
#[derive(Clone, Debug)]
pub struct Options {
    /// Interfaces (paths); a client's first one carries the initial subflow.
    pub ifaces: Vec<String>,
    /// Open subflows only when the application asks (client role); else
    /// the full-mesh path manager opens one per local address.
    pub manual: bool,
    /// Bytes per ring, per direction and connection.
    pub ring: usize,
    pub control: ControlOptions,
}

impl Options {
    pub fn new(ifaces: &[&str]) -> Options {
        Options {
            ifaces: ifaces.iter().map(|s| s.to_string()).collect(),
            manual: false,
            ring: RING,
            control: ControlOptions::default(),
        }
    }
}

/// A running worker thread; stopping it (drop) detaches XDP.
pub struct Instance {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    plane: Option<ControlPlane>,
}

impl Instance {
    pub fn control(&self) -> Option<&ControlPlane> {
        self.plane.as_ref()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.plane.take();
    }
}

/// The engine's configuration for these paths (MSS from the smallest MTU).
fn config(paths: &[Path], ipv6: bool, manual: bool, ifaces: &[String]) -> MptcpConfig {
    let mut cfg = MptcpConfig::default();
    let mtu = paths.iter().map(|p| p.mtu).min().unwrap_or(1500);
    cfg.tcp = cfg.tcp.clone().with_mtu(mtu, ipv6);
    if manual {
        cfg.path_manager = PmKind::Manual;
    }
    // Linux leaves TCP checksums partial on veth: accept them there only.
    cfg.accept_partial_checksum = ifaces
        .iter()
        .all(|i| mptcp_datapath::iface::interface_driver(i).as_deref() == Some("veth"));
    cfg
}

/// Runs `setup` on a new worker thread (AF_XDP sockets stay on the thread
/// that opened them), then the loop: the bridge, the control plane, sleep.
fn spawn(
    role: &'static str,
    opts: &Options,
    reservation: socket2::Socket,
    setup: impl FnOnce() -> Result<(MptcpEndpoint, Datapath, Vec<Path>)> + Send + 'static,
) -> Result<(Instance, MptcpListener)> {
    let (side, plane) = ControlPlane::start(role, &opts.control)?;
    let (mut app, listener) = bridge(plane.handle(), opts.ring);
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("worker-{role}"))
        .spawn(move || {
            // The port stays reserved while the worker runs.
            let _reservation = reservation;
            let (engine, mut datapath, paths) = match setup() {
                Ok(x) => x,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            run(Worker::new(engine, paths), &datapath, &mut app, side, &flag);
            let _ = datapath.detach_all();
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the worker thread died"))??;
    Ok((
        Instance {
            stop,
            thread: Some(thread),
            plane: Some(plane),
        },
        listener,
    ))
}

fn run(
    mut worker: Worker<MptcpEndpoint>,
    datapath: &Datapath,
    app: &mut crate::stream::Bridge,
    mut side: WorkerSide,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let (mut work, _) = worker.step(app);
        work += side.poll(&mut worker, datapath, app.closed);
        if work == 0 {
            worker.sleep_with(&[(side.wake_fd(), libc::POLLIN)]);
        }
    }
}

/// Binds (without listening) a kernel TCP socket: the port is ours while it lives.
fn reserve(addr: SocketAddr) -> Result<(socket2::Socket, u16)> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.bind(&addr.into())
        .with_context(|| format!("reserving a port on {}", addr.ip()))?;
    let port = s
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| anyhow!("no port"))?;
    Ok((s, port))
}

/// The engine as a client of `remote`: one connection, its initial subflow
/// on the first interface (the kernel's route to `remote` must leave by
/// it), the others available to `open_subflow`. Returns once established.
pub async fn connect(remote: SocketAddr, opts: &Options) -> Result<(Instance, MptcpStream)> {
    let Some(first) = opts.ifaces.first().cloned() else {
        bail!("no interface");
    };
    let route = mptcp_datapath::route::route_get(remote.ip())?;
    if route.oif != mptcp_datapath::iface::ifindex(&first)? {
        bail!(
            "the kernel routes {} out of another interface than {first}",
            remote.ip()
        );
    }
    let family = |iface: &str| -> Result<IpAddr> {
        mptcp_datapath::xdp::interface_addresses(iface)?
            .into_iter()
            .find(|a| a.is_ipv4() == remote.is_ipv4())
            .ok_or_else(|| anyhow!("no address of {remote}'s family on {iface}"))
    };
    let local_ip = match route.prefsrc {
        Some(a) => a,
        None => family(&first)?,
    };
    let mut locals = vec![local_ip];
    for other in &opts.ifaces[1..] {
        locals.push(family(other)?);
    }
    let next_hop = route.next_hop(remote.ip());
    let (reservation, port) = reserve(SocketAddr::new(local_ip, 0))?;
    let ifaces = opts.ifaces.clone();
    let manual = opts.manual;
    let (instance, mut listener) = spawn("client", opts, reservation, move || {
        let mac =
            mptcp_datapath::route::resolve_neighbour(&ifaces[0], next_hop, Duration::from_secs(3))?;
        let ownership = Ownership {
            addresses: locals.clone(),
            listen_ports: vec![],
            // MP_JOIN subflows take the ports after the first.
            client_ports: Some(port..=port.saturating_add(63)),
        };
        let (datapath, mut paths) = Datapath::open(&ifaces, &ownership, XskConfig::default())?;
        paths[0].neighbours.default = Some(mac);
        let cfg = config(&paths, remote.is_ipv6(), manual, &ifaces);
        let addrs: Vec<LocalAddr> = locals
            .iter()
            .enumerate()
            .map(|(path, ip)| LocalAddr {
                ip: *ip,
                path,
                signal: false,
            })
            .collect();
        let engine = MptcpEndpoint::client(cfg, &addrs, port, remote, Instant::ZERO);
        Ok((engine, datapath, paths))
    })?;
    let stream = listener
        .accept()
        .await
        .ok_or_else(|| anyhow!("the worker stopped"))?;
    tokio::time::timeout(Duration::from_secs(10), stream.established())
        .await
        .map_err(|_| anyhow!("{remote}: no answer in 10 s"))?
        .with_context(|| format!("connecting to {remote}"))?;
    Ok((instance, stream))
}

/// The engine as a server on `listen` (an address of the interfaces, or
/// unspecified for all of them): accept connections from the listener.
pub fn listen(listen: SocketAddr, opts: &Options) -> Result<(Instance, MptcpListener)> {
    let mut owned = Vec::new();
    let mut locals = Vec::new();
    for (path, iface) in opts.ifaces.iter().enumerate() {
        for ip in mptcp_datapath::xdp::interface_addresses(iface)? {
            if ip.is_ipv4() == listen.is_ipv4()
                && (listen.ip().is_unspecified() || ip == listen.ip())
            {
                owned.push(ip);
                locals.push(LocalAddr {
                    ip,
                    path,
                    signal: false,
                });
            }
        }
    }
    if owned.is_empty() {
        bail!(
            "{} is not an address of {}",
            listen.ip(),
            opts.ifaces.join(", ")
        );
    }
    let (reservation, _) = reserve(listen)?;
    let ifaces = opts.ifaces.clone();
    spawn("serve", opts, reservation, move || {
        let ownership = Ownership {
            addresses: owned,
            listen_ports: vec![listen.port()],
            client_ports: None,
        };
        let (datapath, paths) = Datapath::open(&ifaces, &ownership, XskConfig::default())?;
        let cfg = config(&paths, listen.is_ipv6(), false, &ifaces);
        Ok((
            MptcpEndpoint::server(cfg, &locals, listen.port()),
            datapath,
            paths,
        ))
    })
}
