//! Opening the datapath on a set of interfaces: the classifier loaded and
//! configured per interface, one AF_XDP socket per receive queue, then
//! attached.

use crate::neighbour::NeighbourTable;
use crate::worker::Path;

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
