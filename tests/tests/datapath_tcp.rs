//! The whole datapath with plain TCP: a kernel TCP client in the client
//! namespace talks to the engine (tcp::TcpEndpoint) behind XDP + AF_XDP in
//! the server namespace. Proves redirect, AF_XDP RX/TX, Ethernet and
//! neighbour handling, the worker loop and clean detach.
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mptcp_datapath::afxdp::{BindMode, XskConfig};
use mptcp_datapath::worker::{Worker, WorkerStats};
use mptcp_datapath::xdp::{AttachMode, Counters, Ownership};
use mptcp_datapath::Datapath;
use mptcp_engine::app::{Echo, Pattern};
use mptcp_engine::io::ByteStream;
use mptcp_engine::tcp::{Config, TcpEndpoint};
use mptcp_tests::{require_root, Lab, LabConfig};

const PORT: u16 = 5201;

struct ServerReport {
    echoed: u64,
    stats: WorkerStats,
    counters: Counters,
    modes: Vec<BindMode>,
    attach: Vec<AttachMode>,
    frames_accounted: bool,
    closed: bool,
}

/// Runs `f` on a new thread inside namespace `ns`.
fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
    thread::spawn(move || {
        // SAFETY: setns on this thread only.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

fn serve_echo_once(
    ns: &str,
    iface: String,
    listen: SocketAddr,
    owned: Vec<IpAddr>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<ServerReport> {
    spawn_in(ns, move || {
        let ownership = Ownership {
            addresses: owned,
            listen_ports: vec![listen.port()],
            client_ports: None,
        };
        let (mut datapath, paths) =
            Datapath::open(&[iface], &ownership, XskConfig::default()).expect("datapath");
        let mtu = paths[0].mtu;
        let mut cfg = Config::default().with_mtu(mtu, listen.is_ipv6());
        cfg.isn_secret = mptcp_engine::secret::random();
        let modes = paths.iter().map(|p| p.socket.mode()).collect();
        let mut worker = Worker::new(TcpEndpoint::listen(cfg, listen), paths);
        let mut echo = Echo::default();
        worker.run(&mut echo, &stop);
        let counters = datapath.counters().expect("counters");
        let attach = datapath.attach_modes.clone();
        datapath.detach_all().expect("detach");
        // Let the last TX frames complete before checking the books.
        for p in &mut worker.paths {
            p.socket.reclaim();
        }
        ServerReport {
            echoed: echo.bytes,
            stats: worker.stats,
            counters,
            modes,
            attach,
            frames_accounted: worker.paths.iter().all(|p| p.socket.frames_accounted()),
            closed: worker.engine.is_closed(),
        }
    })
}

fn kernel_echo_client(lab: &Lab, server: SocketAddr, len: usize) -> Vec<u8> {
    lab.client
        .enter(|| {
            let stream =
                TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
            let mut writer = stream.try_clone().expect("clone");
            let sender = thread::spawn(move || {
                let data: Vec<u8> = Pattern::STREAM.bytes(0, len);
                for chunk in data.chunks(64 << 10) {
                    writer.write_all(chunk).expect("write");
                }
                writer.shutdown(Shutdown::Write).expect("shutdown");
            });
            let mut back = Vec::with_capacity(len);
            let mut reader = stream;
            reader
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            reader.read_to_end(&mut back).expect("read echo");
            sender.join().expect("sender");
            back
        })
        .expect("client ns")
}

fn xdp_attached(lab: &Lab, iface: &str) -> bool {
    lab.server
        .ip(&["link", "show", iface])
        .expect("ip link")
        .contains("xdp")
}

fn echo_through_engine(v6: bool) {
    let lab = Lab::up(&LabConfig {
        subflow_endpoints: false,
        ..LabConfig::unique(1)
    })
    .expect("lab");
    let path = &lab.paths[0];
    // veth hands the peer's segments over with only the pseudo-header sum
    // (CHECKSUM_PARTIAL); the engine verifies full checksums, as it must on a
    // real wire, so the kernel sender computes them in software here.
    lab.client
        .exec("ethtool", &["-K", &path.client_if, "tx", "off"])
        .expect("ethtool");
    let server_ip: IpAddr = if v6 {
        path.server_v6.into()
    } else {
        path.server_v4.into()
    };
    let listen = SocketAddr::new(server_ip, PORT);
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve_echo_once(
        lab.server.name(),
        path.server_if.clone(),
        listen,
        lab.server_addresses(),
        stop.clone(),
    );
    // The server thread attaches before it serves; wait for the attachment.
    assert!(
        mptcp_tests::wait_until(Duration::from_secs(10), || xdp_attached(
            &lab,
            &path.server_if
        )),
        "XDP never attached"
    );
    let len = 16 << 20;
    let back = kernel_echo_client(&lab, listen, len);
    let report = server.join().expect("server thread");
    assert_eq!(back.len(), len, "echo length");
    let mismatch = back
        .iter()
        .enumerate()
        .position(|(i, b)| *b != Pattern::STREAM.byte(i as u64));
    assert_eq!(mismatch, None, "first differing byte");
    assert_eq!(report.echoed, len as u64);
    assert!(report.closed);
    // Every segment of the connection went through AF_XDP, none to the kernel.
    assert!(
        report.counters.redirected >= (len / 1500) as u64,
        "{:?}",
        report.counters
    );
    assert_eq!(report.counters.owned_no_socket, 0, "{:?}", report.counters);
    assert!(
        report.stats.tx_frames >= (len / 1500) as u64,
        "{:?}",
        report.stats
    );
    assert_eq!(report.stats.no_neighbour, 0, "{:?}", report.stats);
    assert_eq!(report.modes, vec![BindMode::Copy], "veth is copy mode");
    assert_eq!(report.attach, vec![AttachMode::Driver]);
    assert!(report.frames_accounted, "UMEM frames leaked");
    // The worker slept rather than spun while waiting.
    assert!(report.stats.sleeps > 0, "{:?}", report.stats);
    assert!(!xdp_attached(&lab, &path.server_if), "XDP left attached");
    // The kernel never answered for the engine's port.
    assert_eq!(lab.server.nstat("TcpOutRsts").expect("nstat"), 0);
}

#[test]
fn kernel_tcp_client_echo_through_engine_ipv4() {
    if !require_root() {
        return;
    }
    echo_through_engine(false);
}

#[test]
fn kernel_tcp_client_echo_through_engine_ipv6() {
    if !require_root() {
        return;
    }
    echo_through_engine(true);
}
