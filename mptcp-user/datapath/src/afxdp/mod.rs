//! AF_XDP sockets written against the kernel's UAPI with `libc` (see
//! docs/datapath.md for why not a crate): a UMEM per socket, the fill,
//! completion, RX and TX rings, need_wakeup, batched receive and transmit.
//!
//! Frame ownership is explicit so nothing leaks: every UMEM frame is at any
//! time either in the free stack, in the fill ring, in the kernel (RX or TX
//! in flight), or pending in our TX batch; [`XskSocket::frames_accounted`]
//! checks the sum.

pub mod ring;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use ring::RingIndex;

/// How the kernel moves frames between the NIC and the UMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs into our UMEM.
    ZeroCopy,
    /// The kernel copies (veth, generic XDP).
    Copy,
}

/// Sizes of one socket's UMEM and rings.
#[derive(Clone, Copy, Debug)]
pub struct XskConfig {
    /// Frames in the UMEM (each `frame_size` bytes).
    pub frames: u32,
    pub frame_size: u32,
    /// Entries of every ring (a power of two).
    pub ring_size: u32,
    /// Frames given to the fill ring at start; the rest serve transmission.
    pub rx_frames: u32,
}

impl Default for XskConfig {
    fn default() -> XskConfig {
        // Deep RX: on a shared 2-core machine the worker may be descheduled
        // for a while, and a full RX ring drops (then TCP retransmits). A
        // burst of 1000 connections each sending 64 KiB at once backs up
        // about 20,000 frames behind a busy worker (measured): 32,768
        // fill/RX entries hold it. 2 KiB frames hold an MTU-1500 frame after
        // the kernel's 256-byte headroom: the UMEM is 96 MiB per socket
        // (pages become resident as the kernel first writes them).
        XskConfig {
            frames: 49152,
            frame_size: 2048,
            ring_size: 32768,
            rx_frames: 32768,
        }
    }
}

impl XskConfig {
    /// The receive-window budget for an engine behind this socket: the
    /// window bytes all its connections together may offer, so that what
    /// peers may send before hearing from us fits half of the RX ring in
    /// MSS-sized frames (each connection still gets one MSS: 10,000
    /// connections opening at once then stay under 27,000 frames; the rest
    /// of the ring is for ACKs).
    pub fn rx_window_budget(&self, mss: u64) -> u64 {
        u64::from(self.rx_frames / 2) * mss
    }
}

/// Per-socket counters kept in userspace (the kernel's are in [`XskSocket::kernel_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Transmissions abandoned because no frame or TX slot was free.
    pub tx_no_frame: u64,
    /// sendto/recvfrom calls made to kick the kernel.
    pub wakeups: u64,
}

/// A mapped ring: shared producer/consumer words and the descriptor array.
struct MappedRing<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    index: RingIndex,
}

impl<T: Copy> MappedRing<T> {
    /// # Safety
    /// `fd` is an XDP socket whose ring of `size` entries lives at `pgoff`
    /// with the given offsets.
    unsafe fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: libc::off_t,
    ) -> io::Result<MappedRing<T>> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff,
        );
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = ptr as *mut u8;
        let index = RingIndex::new(size).ok_or_else(|| io::Error::other("ring size"))?;
        Ok(MappedRing {
            map: NonNull::new_unchecked(base),
            map_len,
            producer: base.add(off.producer as usize) as *const AtomicU32,
            consumer: base.add(off.consumer as usize) as *const AtomicU32,
            flags: base.add(off.flags as usize) as *const AtomicU32,
            descs: base.add(off.desc as usize) as *mut T,
            index,
        })
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: points into our live mapping.
        unsafe { (*self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    // Producer side (fill, TX).

    /// Free slots, re-reading the consumer only when the cache shows fewer than `want`.
    fn producer_free(&mut self, want: u32) -> u32 {
        let free = self.index.free();
        if free >= want {
            return free;
        }
        // SAFETY: points into our live mapping.
        self.index.cached_peer = unsafe { (*self.consumer).load(Ordering::Acquire) };
        self.index.free()
    }

    fn write(&mut self, offset: u32, value: T) {
        let slot = self.index.slot(offset);
        // SAFETY: slot < size; the slot is free per producer_free.
        unsafe { self.descs.add(slot).write(value) }
    }

    /// Publishes `n` written entries.
    fn submit(&mut self, n: u32) {
        self.index.advance(n);
        // SAFETY: points into our live mapping; Release orders the descriptor writes before it.
        unsafe { (*self.producer).store(self.index.local, Ordering::Release) }
    }

    // Consumer side (RX, completion).

    fn consumer_ready(&mut self) -> u32 {
        if self.index.ready() == 0 {
            // SAFETY: points into our live mapping; Acquire pairs with the kernel's release.
            self.index.cached_peer = unsafe { (*self.producer).load(Ordering::Acquire) };
        }
        self.index.ready()
    }

    fn read(&self, offset: u32) -> T {
        // SAFETY: slot < size; the entry was published by the kernel.
        unsafe { self.descs.add(self.index.slot(offset)).read() }
    }

    /// Hands `n` consumed entries back to the kernel.
    fn release(&mut self, n: u32) {
        self.index.advance(n);
        // SAFETY: points into our live mapping.
        unsafe { (*self.consumer).store(self.index.local, Ordering::Release) }
    }
}

impl<T> Drop for MappedRing<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.map.as_ptr() as *mut _, self.map_len) };
    }
}

/// The packet buffer area shared with the kernel.
struct Umem {
    area: NonNull<u8>,
    len: usize,
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: our own anonymous mapping.
        unsafe { libc::munmap(self.area.as_ptr() as *mut _, self.len) };
    }
}

/// One AF_XDP socket bound to one (interface, queue), with its own UMEM.
pub struct XskSocket {
    // Field order is drop order: rings unmap, then the socket closes, then the UMEM goes.
    fill: MappedRing<u64>,
    completion: MappedRing<u64>,
    rx: MappedRing<libc::xdp_desc>,
    tx: MappedRing<libc::xdp_desc>,
    fd: OwnedFd,
    umem: Umem,
    config: XskConfig,
    /// Frames owned by userspace and unused.
    free: Vec<u64>,
    /// TX descriptors written but not yet published.
    tx_pending: u32,
    /// Published TX descriptors the kernel may not have sent yet.
    tx_unsent: bool,
    /// Frames in the kernel's hands: fill ring + RX ring + TX ring + completion ring.
    in_kernel: u32,
    /// Received frames lent to another worker ([`XskSocket::recv_batch_tagged`]).
    lent: u32,
    mode: BindMode,
    ifindex: u32,
    queue: u32,
    pub counters: XskCounters,
}

fn sockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value is a valid T for the option's size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl XskSocket {
    /// Opens a socket on `iface`'s `queue`: zero-copy if the driver offers it,
    /// else copy mode. Needs root (CAP_NET_RAW + CAP_BPF/SYS_ADMIN).
    pub fn open(iface: &str, queue: u32, config: XskConfig) -> Result<XskSocket> {
        if !config.ring_size.is_power_of_two()
            || config.rx_frames > config.frames
            || config.rx_frames > config.ring_size
            || config.frames - config.rx_frames > config.ring_size
            || !config.frame_size.is_power_of_two()
            || config.frame_size < 2048
        {
            bail!("inconsistent AF_XDP sizes {config:?}");
        }
        let ifindex = crate::iface::ifindex(iface)?;
        let mut last_err = None;
        for mode in [BindMode::ZeroCopy, BindMode::Copy] {
            match XskSocket::open_mode(ifindex, queue, config, mode) {
                Ok(s) => return Ok(s),
                Err(e) => last_err = Some(e),
            }
        }
        let e = last_err.unwrap_or_else(|| anyhow::anyhow!("no bind mode"));
        Err(e.context(format!("AF_XDP socket on {iface} queue {queue}")))
    }

    fn open_mode(ifindex: u32, queue: u32, config: XskConfig, mode: BindMode) -> Result<XskSocket> {
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                bail!("socket(AF_XDP): permission denied (run as root)");
            }
            return Err(e).context("socket(AF_XDP)");
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = config.frames as usize * config.frame_size as usize;
        // SAFETY: anonymous private mapping of `len` bytes.
        let area = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context("mmap UMEM");
        }
        let umem = Umem {
            // SAFETY: mmap succeeded, so non-null.
            area: unsafe { NonNull::new_unchecked(area as *mut u8) },
            len,
        };
        let reg = libc::xdp_umem_reg {
            addr: area as u64,
            len: len as u64,
            chunk_size: config.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sockopt(fd.as_raw_fd(), libc::XDP_UMEM_REG, &reg).context("XDP_UMEM_REG")?;
        let n = config.ring_size;
        sockopt(fd.as_raw_fd(), libc::XDP_UMEM_FILL_RING, &n).context("fill ring")?;
        sockopt(fd.as_raw_fd(), libc::XDP_UMEM_COMPLETION_RING, &n).context("completion ring")?;
        sockopt(fd.as_raw_fd(), libc::XDP_RX_RING, &n).context("RX ring")?;
        sockopt(fd.as_raw_fd(), libc::XDP_TX_RING, &n).context("TX ring")?;

        // SAFETY: zeroed is a valid xdp_mmap_offsets.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: off is large enough for optlen bytes.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                &mut off as *mut _ as *mut libc::c_void,
                &mut optlen,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error()).context("XDP_MMAP_OFFSETS");
        }
        let raw = fd.as_raw_fd();
        // SAFETY: each ring was sized above; offsets come from the kernel.
        let (fill, completion, rx, tx) = unsafe {
            (
                MappedRing::<u64>::map(raw, &off.fr, n, libc::XDP_UMEM_PGOFF_FILL_RING as _)
                    .context("mmap fill ring")?,
                MappedRing::<u64>::map(raw, &off.cr, n, libc::XDP_UMEM_PGOFF_COMPLETION_RING as _)
                    .context("mmap completion ring")?,
                MappedRing::<libc::xdp_desc>::map(raw, &off.rx, n, libc::XDP_PGOFF_RX_RING)
                    .context("mmap RX ring")?,
                MappedRing::<libc::xdp_desc>::map(raw, &off.tx, n, libc::XDP_PGOFF_TX_RING)
                    .context("mmap TX ring")?,
            )
        };
        let mut socket = XskSocket {
            fill,
            completion,
            rx,
            tx,
            fd,
            umem,
            config,
            free: Vec::with_capacity(config.frames as usize),
            tx_pending: 0,
            tx_unsent: false,
            in_kernel: 0,
            lent: 0,
            mode,
            ifindex,
            queue,
            counters: XskCounters::default(),
        };
        // Frames rx_frames.. serve TX; the first rx_frames go to the fill ring.
        for i in (config.rx_frames..config.frames).rev() {
            socket
                .free
                .push(u64::from(i) * u64::from(config.frame_size));
        }
        let fill_n = socket.fill.producer_free(config.rx_frames);
        for i in 0..config.rx_frames.min(fill_n) {
            socket
                .fill
                .write(i, u64::from(i) * u64::from(config.frame_size));
        }
        socket.fill.submit(config.rx_frames.min(fill_n));
        socket.in_kernel = config.rx_frames.min(fill_n);

        let flags = libc::XDP_USE_NEED_WAKEUP
            | match mode {
                BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                BindMode::Copy => libc::XDP_COPY,
            };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: sa is a valid sockaddr_xdp.
        let r = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                bail!("queue {queue} is already bound by another AF_XDP socket");
            }
            return Err(e).with_context(|| format!("bind ({mode:?})"));
        }
        Ok(socket)
    }

    pub fn mode(&self) -> BindMode {
        self.mode
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    fn frame(&self, addr: u64, len: usize) -> &[u8] {
        let start = (addr as usize).min(self.umem.len);
        let len = len.min(self.umem.len - start);
        // SAFETY: clamped inside the UMEM; the kernel is done with this frame.
        unsafe { std::slice::from_raw_parts(self.umem.area.as_ptr().add(start), len) }
    }

    fn frame_mut(&mut self, addr: u64) -> &mut [u8] {
        let start = (addr as usize).min(self.umem.len);
        let len = (self.config.frame_size as usize).min(self.umem.len - start);
        // SAFETY: clamped inside the UMEM; the frame is ours (from the free stack).
        unsafe { std::slice::from_raw_parts_mut(self.umem.area.as_ptr().add(start), len) }
    }

    /// Receives up to `max` frames, calling `f` on each, and gives their
    /// buffers straight back to the fill ring. Returns the number received.
    pub fn recv_batch(&mut self, max: u32, mut f: impl FnMut(&[u8])) -> u32 {
        let n = self.rx.consumer_ready().min(max);
        if n == 0 {
            if self.fill.needs_wakeup() {
                // Zero-copy drivers stop refilling until told; copy mode never asks.
                self.kick_rx();
            }
            return 0;
        }
        // The fill ring is as large as the UMEM share for RX, so it always has room.
        let room = self.fill.producer_free(n);
        for i in 0..n {
            let desc = self.rx.read(i);
            f(self.frame(desc.addr, desc.len as usize));
            // Aligned mode: the frame base is the address rounded down.
            let base = desc.addr & !u64::from(self.config.frame_size - 1);
            if i < room {
                self.fill.write(i, base);
            } else {
                self.free.push(base);
                self.in_kernel -= 1;
            }
        }
        self.rx.release(n);
        self.fill.submit(n.min(room));
        self.counters.rx_frames += u64::from(n);
        n
    }

    /// Like [`XskSocket::recv_batch`] for several workers: `f` also gets the
    /// owner the classifier wrote in the frame's XDP metadata (cleared here,
    /// so a reused frame never shows a stale one) and the frame's address,
    /// and returns true to lend the frame: it stays out of the fill ring
    /// until [`XskSocket::give_back`].
    pub fn recv_batch_tagged(
        &mut self,
        max: u32,
        mut f: impl FnMut(&[u8], Option<u32>, u64) -> bool,
    ) -> u32 {
        let n = self.rx.consumer_ready().min(max);
        if n == 0 {
            if self.fill.needs_wakeup() {
                self.kick_rx();
            }
            return 0;
        }
        let room = self.fill.producer_free(n);
        let mut filled = 0;
        let meta_len = std::mem::size_of::<mptcp_common::Meta>() as u64;
        let mask = !u64::from(self.config.frame_size - 1);
        for i in 0..n {
            let desc = self.rx.read(i);
            let base = desc.addr & mask;
            let owner = (desc.addr - base >= meta_len).then(|| {
                let at = (desc.addr - meta_len) as usize;
                // SAFETY: inside this frame's headroom (checked just above),
                // and the frame is ours until it goes back to the fill ring.
                unsafe {
                    let p = self.umem.area.as_ptr().add(at) as *mut mptcp_common::Meta;
                    let meta = p.read_unaligned();
                    p.write_unaligned(mptcp_common::Meta::default());
                    meta
                }
            });
            let owner = owner
                .filter(|m| m.magic == mptcp_common::META_MAGIC)
                .map(|m| m.owner);
            let lent = f(self.frame(desc.addr, desc.len as usize), owner, desc.addr);
            self.in_kernel -= 1;
            if lent {
                self.lent += 1;
            } else if filled < room {
                self.fill.write(filled, base);
                filled += 1;
                self.in_kernel += 1;
            } else {
                self.free.push(base);
            }
        }
        self.rx.release(n);
        self.fill.submit(filled);
        self.counters.rx_frames += u64::from(n);
        n
    }

    /// A lent frame is back: it returns to the fill ring.
    pub fn give_back(&mut self, addr: u64) {
        let base = addr & !u64::from(self.config.frame_size - 1);
        self.lent -= 1;
        if self.fill.producer_free(1) >= 1 {
            self.fill.write(0, base);
            self.fill.submit(1);
            self.in_kernel += 1;
        } else {
            self.free.push(base);
        }
    }

    /// Takes finished TX frames back from the completion ring.
    pub fn reclaim(&mut self) -> u32 {
        let n = self.completion.consumer_ready();
        for i in 0..n {
            let addr = self.completion.read(i);
            self.free
                .push(addr & !u64::from(self.config.frame_size - 1));
        }
        self.completion.release(n);
        self.in_kernel -= n;
        n
    }

    /// Room for one more frame in this TX batch (reclaiming if needed).
    pub fn can_send(&mut self) -> bool {
        if self.free.is_empty() {
            self.reclaim();
        }
        !self.free.is_empty() && self.tx.producer_free(self.tx_pending + 1) > self.tx_pending
    }

    /// Adds one frame to the TX batch: `write` fills the buffer and returns
    /// the length (0 abandons it). Returns false when nothing was queued.
    pub fn send_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if !self.can_send() {
            self.counters.tx_no_frame += 1;
            return false;
        }
        let Some(addr) = self.free.pop() else {
            return false;
        };
        let len = write(self.frame_mut(addr));
        if len == 0 || len > self.config.frame_size as usize {
            self.free.push(addr);
            return false;
        }
        let desc = libc::xdp_desc {
            addr,
            len: len as u32,
            options: 0,
        };
        self.tx.write(self.tx_pending, desc);
        self.tx_pending += 1;
        true
    }

    /// Frames queued in this TX batch and not yet published.
    pub fn tx_pending(&self) -> u32 {
        self.tx_pending
    }

    /// Publishes the TX batch and kicks the kernel if it asked for it (copy
    /// mode always needs it: the copy happens inside sendto).
    pub fn flush(&mut self) {
        if self.tx_pending > 0 {
            let n = self.tx_pending;
            self.tx.submit(n);
            self.in_kernel += n;
            self.counters.tx_frames += u64::from(n);
            self.tx_pending = 0;
            self.tx_unsent = true;
        }
        if self.tx_unsent {
            if self.mode == BindMode::Copy || self.tx.needs_wakeup() {
                self.kick_tx();
            } else {
                self.tx_unsent = false;
            }
        }
    }

    /// TX descriptors the kernel has not taken yet.
    fn tx_unconsumed(&self) -> u32 {
        // SAFETY: points into our live mapping.
        let consumer = unsafe { (*self.tx.consumer).load(Ordering::Acquire) };
        self.tx.index.local.wrapping_sub(consumer)
    }

    fn kick_tx(&mut self) {
        // Copy mode sends a bounded batch per call and says EAGAIN while more remain.
        for _ in 0..256 {
            self.counters.wakeups += 1;
            // SAFETY: zero-length sendto on our socket.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r >= 0 || self.tx_unconsumed() == 0 {
                self.tx_unsent = self.tx_unconsumed() != 0;
                return;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                // ENOBUFS/EBUSY: the device is busy; the next flush retries.
                _ => return,
            }
        }
    }

    fn kick_rx(&mut self) {
        self.counters.wakeups += 1;
        // SAFETY: zero-length recvfrom on our socket.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Busy polling (for a dedicated core): prefer busy polling over the
    /// softirq, busy-poll for `usecs` per call with `budget` packets, so a
    /// `recvfrom` on this socket runs the interface's NAPI on the calling
    /// thread ([`XskSocket::busy_poll_rx`]). The kernel learns which NAPI
    /// from the first frame the socket receives.
    pub fn set_busy_poll(&mut self, usecs: u32, budget: u32) -> io::Result<()> {
        // asm-generic/socket.h; the libc crate lacks the last two on Linux.
        const SO_BUSY_POLL: libc::c_int = 46;
        const SO_PREFER_BUSY_POLL: libc::c_int = 69;
        const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
        let fd = self.fd.as_raw_fd();
        for (name, value) in [
            (SO_PREFER_BUSY_POLL, 1),
            (SO_BUSY_POLL, usecs as libc::c_int),
            (SO_BUSY_POLL_BUDGET, budget as libc::c_int),
        ] {
            // SAFETY: an int option on our socket.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    name,
                    &value as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Drives busy polling: a zero-length `recvfrom` that runs the NAPI
    /// feeding this socket (with [`XskSocket::set_busy_poll`]).
    pub fn busy_poll_rx(&mut self) {
        self.kick_rx();
    }

    /// True when the kernel wants a recvfrom/poll to refill RX (zero-copy drivers).
    pub fn rx_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Every frame accounted for: free + in the kernel's rings == UMEM frames.
    pub fn frames_accounted(&self) -> bool {
        self.free.len() as u32 + self.in_kernel + self.tx_pending + self.lent == self.config.frames
    }

    /// Frames currently in userspace's free stack.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// The kernel's own counters (XDP_STATISTICS).
    pub fn kernel_stats(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: zeroed is valid for this POD struct.
        let mut stats: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: stats is large enough.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                &mut stats as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            Ok(stats)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// SAFETY: the raw pointers point into mappings the socket owns; it moves
// between threads as a whole and is never shared.
unsafe impl Send for XskSocket {}
