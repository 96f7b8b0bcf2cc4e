//! `mptcp-user emulate`: the simulator's link model between real interfaces.
//!
//! Each path is a pair of interfaces (client side, server side); every
//! Ethernet frame that arrives on one goes out of the other after the
//! path's profile for that direction has had its say (rate, delay, jitter,
//! loss, reordering, duplication, MTU, `;at=` changes, down/up), so the
//! emulator is a transparent two-port bridge with a bad network inside.
//! I/O is AF_PACKET (why: docs/emulator.md), batched with recvmmsg and
//! sendmmsg; the clock is the monotonic clock, and the loop sleeps in
//! ppoll() until the next frame is due (nanosecond timeout, 10 us timer
//! slack), so an idle emulator costs nothing and a busy one never spins.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use mptcp_engine::time::Instant;
use mptcp_sim::emulator::{Direction, EmulatedPath, Emulator};
use mptcp_sim::net::SendOutcome;

/// Frames read or written per system call.
const BATCH: usize = 64;
// Interrupt coalescing (`--coalesce-us`): a pass that moved frames is
// followed by a fixed sleep and a look, not by a wake-up per frame (at
// 1 Gbit/s one every 12 us). Arrival times are the kernel's timestamps, so
// reading late changes nothing in the model; due frames leave at most the
// sleep late.
/// Room for one frame: a 9000-byte jumbo frame and its headers fit.
const SLOT: usize = 9216 + 64;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example (the lab does this for `cargo xtask lab up --path SPEC`): in a namespace between
the client and the server, with veths c0 (peer cli0) and s0 (peer srv0):
  mptcp-user emulate --link c0,s0 --path rate=10mbit,delay=40ms,loss=1%
  mptcp-user emulate --link c0,s0 --path 'rate=20mbit,delay=30ms/rate=5mbit,delay=30ms' \\
                     --link c1,s1 --path 'delay=10ms;at=5s,down;at=8s,up'
Time 0 of `;at=` is the emulator's start. The endpoints must send frames no larger than
their MTU (turn GSO/TSO/GRO and checksum offload off on them: ethtool -K IF tx off
tso off gso off gro off); larger frames are counted as `oversize` and dropped.")]
pub struct EmulateArgs {
    /// One path: its client-side and server-side interface. Repeat for each path.
    #[arg(long = "link", value_name = "CLIENT_IF,SERVER_IF", required = true)]
    pub links: Vec<String>,
    /// The profile of each path, in `--link` order, with `sim --path`'s syntax and
    /// meanings (`delay` is the round trip): SPEC for both directions, or
    /// UP_SPEC/DOWN_SPEC (up = client to server). A link without one is ideal.
    #[arg(long = "path", value_name = "SPEC|UP/DOWN")]
    pub paths: Vec<EmulatedPath>,
    /// Seed of the random draws (loss, jitter, reordering, duplication).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Microseconds a busy emulator sleeps between passes instead of waking
    /// per frame (less CPU at high rates; due frames leave at most this
    /// late). 0: wake for every frame and deadline.
    #[arg(long, value_name = "US", default_value_t = 100)]
    pub coalesce_us: u64,
    /// Time 0 of the `;at=` changes is the first TCP SYN (without ACK) on any
    /// path instead of the emulator's start; frames before it pass unimpaired.
    #[arg(long)]
    pub clock_from_syn: bool,
    /// Print a JSON line of counters every this many seconds (0: only at exit).
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub stats_interval: f64,
}

/// A raw packet socket bound to one interface.
struct PacketSocket {
    fd: OwnedFd,
    name: String,
}

fn setsockopt_int(fd: &OwnedFd, level: i32, opt: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: the option value is a c_int that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl PacketSocket {
    fn open(name: &str) -> Result<PacketSocket> {
        let cname = CString::new(name).context("interface name")?;
        // SAFETY: a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface `{name}` in this namespace");
        }
        // Protocol 0 until bound: no frame of another interface is queued meanwhile.
        // SAFETY: plain socket creation.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error())
                .context("socket(AF_PACKET) (needs CAP_NET_RAW)");
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Our own transmissions must not come back to us as receptions.
        setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
            .context("PACKET_IGNORE_OUTGOING (Linux 4.20+)")?;
        // No PACKET_QDISC_BYPASS: veth has no qdisc anyway, and the bypass
        // would hide the emulator's transmissions from tcpdump.
        // Each frame's arrival time from the kernel: frames that queued while
        // the emulator was not running keep their spacing (no false bursts).
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).context("SO_TIMESTAMPNS")?;
        // Room for what arrives while the emulator is descheduled: 32 MiB
        // (64 of kernel accounting) is about 200 ms of 1 Gbit/s in full frames.
        let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20);
        let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("bind to {name}"));
        }
        // Frames between the two endpoints carry their MACs, not ours.
        // SAFETY: packet_mreq is plain data.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        // SAFETY: mreq outlives the call.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq as *const libc::packet_mreq as *const libc::c_void,
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .context(format!("promiscuous mode on {name}"));
        }
        Ok(PacketSocket {
            fd,
            name: name.to_string(),
        })
    }
}

/// Buffers and headers for one recvmmsg or sendmmsg batch, allocated once.
struct Batch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    count: usize,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    addrs: Vec<libc::sockaddr_ll>,
    /// Control buffers (u64 for alignment) for each frame's kernel timestamp.
    ctrl: Vec<[u64; 8]>,
    /// Arrival time of each received frame, CLOCK_REALTIME ns (0: none).
    stamps: [u64; BATCH],
}

impl Batch {
    fn new() -> Batch {
        let mut b = Batch {
            buf: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            count: 0,
            // SAFETY (zeroed): iovec, mmsghdr and sockaddr_ll are plain data;
            // the pointers are set in `link` before any use.
            iov: vec![unsafe { std::mem::zeroed() }; BATCH],
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            ctrl: vec![[0u64; 8]; BATCH],
            stamps: [0; BATCH],
        };
        b.link();
        b
    }

    /// Points every header at its slot (the vectors never move afterwards).
    fn link(&mut self) {
        for i in 0..BATCH {
            self.iov[i].iov_base = self.buf[i * SLOT..].as_mut_ptr() as *mut libc::c_void;
            self.iov[i].iov_len = SLOT;
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
        }
    }

    fn frame(&self, i: usize) -> &[u8] {
        &self.buf[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// Appends a frame to a transmit batch; false when full.
    fn push(&mut self, frame: &[u8]) -> bool {
        if self.count == BATCH || frame.len() > SLOT {
            return false;
        }
        let i = self.count;
        self.buf[i * SLOT..i * SLOT + frame.len()].copy_from_slice(frame);
        self.lens[i] = frame.len();
        self.count += 1;
        true
    }
}

/// Counters the emulator keeps besides the link model's.
#[derive(Default, Clone, Copy)]
struct IoStats {
    /// Frames longer than a slot (offloads left on at an endpoint).
    oversize: u64,
    /// Frames the kernel refused to take (socket buffer full).
    tx_dropped: u64,
}

struct Port {
    sock: PacketSocket,
    tx: Batch,
    io: IoStats,
}

fn receive(sock: &PacketSocket, rx: &mut Batch) -> std::io::Result<usize> {
    for i in 0..BATCH {
        let h = &mut rx.msgs[i].msg_hdr;
        h.msg_name = &mut rx.addrs[i] as *mut libc::sockaddr_ll as *mut libc::c_void;
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        h.msg_control = rx.ctrl[i].as_mut_ptr() as *mut libc::c_void;
        h.msg_controllen = std::mem::size_of::<[u64; 8]>() as _;
        h.msg_flags = 0;
    }
    // SAFETY: every header points at live buffers of the lengths given.
    let n = unsafe {
        libc::recvmmsg(
            sock.fd.as_raw_fd(),
            rx.msgs.as_mut_ptr(),
            BATCH as u32,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    for i in 0..n {
        rx.lens[i] = rx.msgs[i].msg_len as usize;
        rx.stamps[i] = 0;
        let h = &rx.msgs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control up to msg_controllen; the
        // CMSG macros stay within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    rx.stamps[i] = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
    }
    rx.count = n;
    Ok(n)
}

fn flush(port: &mut Port) -> Result<()> {
    let tx = &mut port.tx;
    let mut sent = 0;
    while sent < tx.count {
        for i in sent..tx.count {
            tx.iov[i].iov_len = tx.lens[i];
            tx.msgs[i].msg_hdr.msg_name = std::ptr::null_mut();
            tx.msgs[i].msg_hdr.msg_namelen = 0;
        }
        // SAFETY: headers sent..count point at live buffers of the lengths given.
        let n = unsafe {
            libc::sendmmsg(
                port.sock.fd.as_raw_fd(),
                tx.msgs[sent..].as_mut_ptr(),
                (tx.count - sent) as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // Full: the rest of the batch is lost, as on a real congested NIC.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    port.io.tx_dropped += (tx.count - sent) as u64;
                    break;
                }
                Some(libc::EINTR) => continue,
                // The port is down (a pulled cable): what it would send is lost.
                Some(libc::ENETDOWN) | Some(libc::ENXIO) => {
                    port.io.tx_dropped += (tx.count - sent) as u64;
                    break;
                }
                _ => return Err(e).context(format!("send on {}", port.sock.name)),
            }
        }
        sent += n as usize;
    }
    for i in 0..BATCH {
        tx.iov[i].iov_len = SLOT;
    }
    tx.count = 0;
    Ok(())
}

/// Takes (and so clears) the socket's pending error.
fn socket_error(sock: &PacketSocket) -> Option<i32> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int-sized option into an int.
    let r = unsafe {
        libc::getsockopt(
            sock.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(err)
}

/// CLOCK_REALTIME in nanoseconds (the clock of packet timestamps).
fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A TCP segment with SYN and without ACK in an Ethernet frame (IPv4 or IPv6 without extension headers).
fn is_tcp_syn(frame: &[u8]) -> bool {
    let tcp = match frame.get(12..14) {
        Some([0x08, 0x00]) => {
            let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
            if frame.get(14 + 9) != Some(&6) || ihl < 20 {
                return false;
            }
            14 + ihl
        }
        Some([0x86, 0xdd]) => {
            if frame.get(14 + 6) != Some(&6) {
                return false;
            }
            14 + 40
        }
        _ => return false,
    };
    frame.get(tcp + 13).is_some_and(|f| f & 0x12 == 0x02)
}

fn counters_json(
    emu: &Emulator,
    ports: &[Port],
    links: &[(String, String)],
    now: Instant,
    coalesced: u64,
) -> String {
    let paths: Vec<_> = (0..emu.path_count())
        .map(|p| {
            let dir = |d: Direction, out: &Port| {
                let s = emu.stats(p, d);
                json!({
                    "offered_packets": s.offered_packets,
                    "offered_bytes": s.offered_bytes,
                    "delivered_packets": s.delivered_packets,
                    "delivered_bytes": s.delivered_bytes,
                    "dropped_loss": s.dropped_loss,
                    "dropped_queue": s.dropped_queue,
                    "dropped_mtu": s.dropped_mtu,
                    "dropped_down": s.dropped_down,
                    "duplicated": s.duplicated,
                    "reordered": s.reordered,
                    "max_queue_bytes": s.max_queue_bytes,
                    "tx_dropped": out.io.tx_dropped,
                })
            };
            json!({
                "path": p,
                "client_if": links[p].0,
                "server_if": links[p].1,
                "up": dir(Direction::Up, &ports[2 * p + 1]),
                "down": dir(Direction::Down, &ports[2 * p]),
                "oversize": ports[2 * p].io.oversize + ports[2 * p + 1].io.oversize,
            })
        })
        .collect();
    json!({
        "elapsed_s": now.as_nanos() as f64 / 1e9,
        "in_flight": emu.in_flight(),
        // Busy passes that slept COALESCE before the next.
        "coalesced_sleeps": coalesced,
        "paths": paths,
    })
    .to_string()
}

pub fn emulate(args: &EmulateArgs) -> Result<()> {
    if args.paths.len() > args.links.len() {
        bail!(
            "{} --path given for {} --link; each --path belongs to the --link at the same place",
            args.paths.len(),
            args.links.len()
        );
    }
    let mut links = Vec::new();
    for l in &args.links {
        let Some((a, b)) = l.split_once(',') else {
            bail!("--link `{l}`: expected CLIENT_IF,SERVER_IF, as in --link c0,s0");
        };
        links.push((a.trim().to_string(), b.trim().to_string()));
    }
    let specs: Vec<EmulatedPath> = (0..links.len())
        .map(|i| {
            args.paths
                .get(i)
                .cloned()
                .unwrap_or_else(|| "".parse().expect("the empty spec is ideal"))
        })
        .collect();
    // Ports 2p (client side) and 2p+1 (server side).
    let mut ports = Vec::new();
    for (a, b) in &links {
        for name in [a, b] {
            ports.push(Port {
                sock: PacketSocket::open(name)?,
                tx: Batch::new(),
                io: IoStats::default(),
            });
        }
    }
    // Wake-ups within 10 us of the deadline instead of the default 50 us.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 10_000u64, 0, 0, 0) };
    let stop = mptcp_datapath::signals::stop_on_signals();

    let mut emu = Emulator::new(&specs, args.seed);
    let mut rx = Batch::new();
    let mut start = std::time::Instant::now();
    let mut realtime_at_start = realtime_ns();
    let mut started = !args.clock_from_syn;
    let clock = |start: std::time::Instant| Instant::from_nanos(start.elapsed().as_nanos() as u64);
    let mut stdout = std::io::stdout();
    for (i, ((a, b), s)) in links.iter().zip(&specs).enumerate() {
        let up = &s.up.source;
        let down = &s.down.source;
        writeln!(
            stdout,
            "emulate: path {i} {a} <-> {b}: up `{up}`, down `{down}`"
        )?;
    }
    writeln!(stdout, "emulate: ready")?;
    stdout.flush()?;

    let interval =
        (args.stats_interval > 0.0).then(|| Duration::from_secs_f64(args.stats_interval));
    let mut next_stats = interval.map(|i| Instant::ZERO + i);
    let mut pollfds: Vec<libc::pollfd> = ports
        .iter()
        .map(|p| libc::pollfd {
            fd: p.sock.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Frames received or sent in this pass (see `--coalesce-us`).
    let mut moved = 0usize;
    let mut coalesced = 0u64;
    let coalesce = Duration::from_micros(args.coalesce_us);
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let now = clock(start);
        let mut failed = None;
        // Before time 0 (--clock-from-syn) no change may fire.
        let model_now = if started { now } else { Instant::ZERO };
        emu.poll_due(model_now, |d| {
            moved += 1;
            let out = 2 * d.path
                + match d.direction {
                    Direction::Up => 1,
                    Direction::Down => 0,
                };
            let port = &mut ports[out];
            if !port.tx.push(d.frame) {
                if let Err(e) = flush(port) {
                    failed.get_or_insert(e);
                }
                port.tx.push(d.frame);
            }
        });
        for port in &mut ports {
            if port.tx.count > 0 {
                if let Err(e) = flush(port) {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if let Some(at) = next_stats {
            if now >= at {
                writeln!(
                    stdout,
                    "{}",
                    counters_json(&emu, &ports, &links, now, coalesced)
                )?;
                stdout.flush()?;
                next_stats = interval.map(|i| at + i);
            }
        }
        let due = emu.next_deadline().filter(|_| started);
        let deadline = [due, next_stats].into_iter().flatten().min();
        // Busy: sleep without polling, then only look (a zero timeout).
        let busy = std::mem::take(&mut moved) > 0 && !coalesce.is_zero();
        if busy {
            std::thread::sleep(coalesce);
            coalesced += 1;
        }
        let timeout = deadline.map(|d| d.as_nanos()).map(|d| {
            let ns = if busy {
                0
            } else {
                d.saturating_sub(clock(start).as_nanos())
            };
            libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            }
        });
        // SAFETY: pollfds is a live array; timeout is a timespec or null (wait forever).
        let r = unsafe {
            libc::ppoll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout
                    .as_ref()
                    .map_or(std::ptr::null(), |t| t as *const libc::timespec),
                std::ptr::null(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break Err(e).context("ppoll");
        }
        let mut gone = None;
        for (i, pfd) in pollfds.iter().enumerate() {
            // A port set down (`ip link set c0 down`: the endpoint's carrier
            // drops) reports ENETDOWN once: taken, and the port stays open.
            if pfd.revents & libc::POLLERR != 0
                && pfd.revents & (libc::POLLHUP | libc::POLLNVAL) == 0
                && socket_error(&ports[i].sock) == Some(libc::ENETDOWN)
            {
                continue;
            }
            if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                gone = Some(i);
                break;
            }
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            let (path, direction) = (
                i / 2,
                if i % 2 == 0 {
                    Direction::Up
                } else {
                    Direction::Down
                },
            );
            // A bounded number of batches per wake-up: the other side and due frames get their turn.
            for _ in 0..4 {
                let n = match receive(&ports[i].sock, &mut rx) {
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => break,
                    Err(_) => {
                        gone = Some(i);
                        break;
                    }
                };
                let now = clock(start);
                moved += n;
                for k in 0..n {
                    let truncated = rx.msgs[k].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                    let outgoing = rx.addrs[k].sll_pkttype == libc::PACKET_OUTGOING;
                    if outgoing {
                        continue;
                    }
                    if truncated || rx.lens[k] > SLOT {
                        ports[i].io.oversize += 1;
                        continue;
                    }
                    if !started {
                        if !is_tcp_syn(rx.frame(k)) {
                            // Before time 0: straight through.
                            let out = &mut ports[i ^ 1];
                            if !out.tx.push(rx.frame(k)) {
                                flush(out)?;
                                out.tx.push(rx.frame(k));
                            }
                            continue;
                        }
                        started = true;
                        start = std::time::Instant::now();
                        realtime_at_start = realtime_ns();
                        writeln!(stdout, "emulate: clock started by a TCP SYN")?;
                        stdout.flush()?;
                    }
                    let now = if started { clock(start) } else { now };
                    // The kernel's arrival time, on the model's clock (never in the future).
                    let at = match rx.stamps[k].checked_sub(realtime_at_start) {
                        Some(ns) if rx.stamps[k] != 0 => {
                            Instant::from_nanos(ns.min(now.as_nanos()))
                        }
                        _ => now,
                    };
                    // Losses and queue drops are counted by the link model.
                    let _: SendOutcome = emu.offer(at, path, direction, rx.frame(k));
                }
                if n < BATCH {
                    break;
                }
            }
            if gone.is_some() {
                break;
            }
        }
        if let Some(i) = gone {
            break Err(anyhow::anyhow!(
                "interface {} went away (its namespace or peer was removed)",
                ports[i].sock.name
            ));
        }
    };
    writeln!(
        stdout,
        "{}",
        counters_json(&emu, &ports, &links, clock(start), coalesced)
    )?;
    stdout.flush()?;
    result
}
