//! Opening the datapath on a set of interfaces: the classifier loaded and
//! configured per interface, one AF_XDP socket per receive queue, then
//! attached.

use crate::handoff::Links;
use crate::neighbour::NeighbourTable;
use crate::worker::{Affinity, Path};
use crate::xdp::affinity::AffinityMaps;

/// What one of several workers gets from [`Datapath::open_workers`]: a
/// [`Path`] per interface with the sockets of its queues, and its links.
pub struct WorkerPaths {
    pub paths: Vec<Path>,
    /// `None` with a single worker (no lookups, no hand-offs).
    pub affinity: Option<Affinity>,
}

/// Interfaces bound for a worker: one classifier per interface (each has
/// its own XSKMAP, so queue 0 of every interface can have a socket) and one
/// AF_XDP socket per (interface, queue). Dropping it detaches every program.
pub struct Datapath {
    pub classifiers: Vec<crate::xdp::Classifier>,
    pub attach_modes: Vec<crate::xdp::AttachMode>,
}

impl Datapath {
    /// Opens `ifaces` (a socket per receive queue) for the addresses and
    /// ports in `ownership`. The socket is in
    /// the XSKMAP before the program is attached, so no owned segment
    /// reaches the kernel in between.
    pub fn open(
        ifaces: &[String],
        ownership: &crate::xdp::Ownership,
        xsk: crate::afxdp::XskConfig,
    ) -> anyhow::Result<(Datapath, Vec<Path>)> {
        use anyhow::Context;
        let mut datapath = Datapath {
            classifiers: Vec::new(),
            attach_modes: Vec::new(),
        };
        let mut paths = Vec::new();
        for iface in ifaces {
            crate::iface::ifindex(iface)?;
            let mtu = crate::route::interface_mtu(iface)?;
            let mac = crate::route::interface_mac(iface)?;
            let mut classifier = crate::xdp::Classifier::load()?;
            classifier.set_ownership(ownership)?;
            let queues = crate::route::rx_queue_count(iface).clamp(1, mptcp_common::MAX_QUEUES);
            let socket = crate::afxdp::XskSocket::open(iface, 0, xsk)
                .with_context(|| format!("XDP attach refused on {iface}"))?;
            classifier.register_xsk(0, &socket)?;
            let mut extra_rx = Vec::new();
            // Receive-only sockets need no TX frames: a smaller UMEM each.
            let rx_only = crate::afxdp::XskConfig {
                frames: xsk.rx_frames,
                ..xsk
            };
            for queue in 1..queues {
                let s = crate::afxdp::XskSocket::open(iface, queue, rx_only)
                    .with_context(|| format!("XDP attach refused on {iface} queue {queue}"))?;
                classifier.register_xsk(queue, &s)?;
                extra_rx.push(s);
            }
            let mode = classifier.attach(iface).with_context(|| {
                format!("XDP attach refused on {iface} (another XDP program there?)")
            })?;
            datapath.classifiers.push(classifier);
            datapath.attach_modes.push(mode);
            paths.push(Path {
                iface: iface.clone(),
                socket,
                extra_rx,
                mac,
                mtu,
                neighbours: NeighbourTable::new(),
            });
        }
        Ok((datapath, paths))
    }

    /// Opens `ifaces` for `workers` workers: queue q of every interface
    /// belongs to worker q % workers (each worker has a socket on every
    /// interface, so it can send on every path), and the classifiers tag
    /// frames with their owner when there are several. One worker is
    /// exactly [`Datapath::open`].
    pub fn open_workers(
        ifaces: &[String],
        ownership: &crate::xdp::Ownership,
        xsk: crate::afxdp::XskConfig,
        workers: usize,
    ) -> anyhow::Result<(Datapath, Vec<WorkerPaths>)> {
        use anyhow::{bail, Context};
        if workers <= 1 {
            let (datapath, paths) = Datapath::open(ifaces, ownership, xsk)?;
            let one = WorkerPaths {
                paths,
                affinity: None,
            };
            return Ok((datapath, vec![one]));
        }
        let mut datapath = Datapath {
            classifiers: Vec::new(),
            attach_modes: Vec::new(),
        };
        let mut out: Vec<WorkerPaths> = (0..workers)
            .map(|_| WorkerPaths {
                paths: Vec::new(),
                affinity: None,
            })
            .collect();
        let rx_only = crate::afxdp::XskConfig {
            frames: xsk.rx_frames,
            ..xsk
        };
        let mut fds = Vec::new();
        for iface in ifaces {
            crate::iface::ifindex(iface)?;
            let mtu = crate::route::interface_mtu(iface)?;
            let mac = crate::route::interface_mac(iface)?;
            let queues = crate::route::rx_queue_count(iface).clamp(1, mptcp_common::MAX_QUEUES);
            if (queues as usize) < workers {
                bail!(
                    "--workers {workers}: {iface} has {queues} receive queue(s), and every worker \
                     needs one on every interface (more queues: `ethtool -L {iface} combined \
                     {workers}`; or fewer workers)"
                );
            }
            let mut classifier = crate::xdp::Classifier::load()?;
            classifier.set_ownership(ownership)?;
            classifier.set_workers(workers as u32)?;
            let mut sockets: Vec<Vec<crate::afxdp::XskSocket>> =
                (0..workers).map(|_| Vec::new()).collect();
            for queue in 0..queues {
                let w = queue as usize % workers;
                // A worker's first socket also transmits; the others only receive.
                let config = if sockets[w].is_empty() { xsk } else { rx_only };
                let s = crate::afxdp::XskSocket::open(iface, queue, config)
                    .with_context(|| format!("XDP attach refused on {iface} queue {queue}"))?;
                classifier.register_xsk(queue, &s)?;
                sockets[w].push(s);
            }
            fds.push(classifier.affinity_fds()?);
            let mode = classifier.attach(iface).with_context(|| {
                format!("XDP attach refused on {iface} (another XDP program there?)")
            })?;
            datapath.classifiers.push(classifier);
            datapath.attach_modes.push(mode);
            for (w, mut socks) in sockets.into_iter().enumerate() {
                let socket = socks.remove(0);
                out[w].paths.push(Path {
                    iface: iface.clone(),
                    socket,
                    extra_rx: socks,
                    mac,
                    mtu,
                    neighbours: NeighbourTable::new(),
                });
            }
        }
        for (w, links) in Links::mesh(workers)?.into_iter().enumerate() {
            let mine = fds
                .iter()
                .map(|(t, k)| Ok((t.try_clone()?, k.try_clone()?)))
                .collect::<std::io::Result<Vec<_>>>()?;
            out[w].affinity = Some(Affinity {
                links,
                maps: AffinityMaps::new(mine, w as u32),
            });
        }
        Ok((datapath, out))
    }

    /// Classifier counters summed over interfaces.
    pub fn counters(&self) -> anyhow::Result<crate::xdp::Counters> {
        let mut total = crate::xdp::Counters::default();
        for c in &self.classifiers {
            total.add(&c.counters()?);
        }
        Ok(total)
    }

    pub fn detach_all(&mut self) -> anyhow::Result<()> {
        for c in &mut self.classifiers {
            c.detach_all()?;
        }
        Ok(())
    }
}
