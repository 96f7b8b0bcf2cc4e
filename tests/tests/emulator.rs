//! `mptcp-user emulate` between the lab's namespaces, judged from outside:
//! UDP probes from the client namespace to the server namespace measure
//! the rate, the round-trip delay, loss and a scheduled outage.
//!
//! The rate is measured at the receiver in IP bytes (as the spec counts
//! them) between the first and the last datagram of an overdriven flow.
//! `MPTCP_LAB_FULL=1` adds rates up to 1 Gbit/s (a release build of
//! mptcp-user is used when target/release/mptcp-user exists).
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use mptcp_tests::{require_root, Lab, LabConfig};

const PAYLOAD: usize = 1472; // 1500-byte IP packets
const IP_BYTES: usize = PAYLOAD + 28;

fn big_buffers(sock: &UdpSocket) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        let v: libc::c_int = 16 << 20;
        // SAFETY: an int option on a live socket.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                4,
            )
        };
    }
}

/// Per datagram: (its sequence number, send time in ns since the sender's start) and the arrival time.
struct Received {
    seqs: Vec<(u64, u64)>,
    arrivals: Vec<Instant>,
}

/// Receives datagrams on `addr` in the server namespace until `quiet` passes without one.
fn receiver(lab: &Lab, addr: SocketAddr, quiet: Duration) -> thread::JoinHandle<Received> {
    let sock = lab
        .server
        .enter(|| UdpSocket::bind(addr).expect("bind"))
        .expect("server ns");
    big_buffers(&sock);
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    thread::spawn(move || {
        let mut got = Received {
            seqs: Vec::new(),
            arrivals: Vec::new(),
        };
        let mut buf = [0u8; 2048];
        while let Ok(n) = sock.recv(&mut buf) {
            got.arrivals.push(Instant::now());
            if n >= 16 {
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                let sent = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                got.seqs.push((seq, sent));
            }
            if got.seqs.len() == 1 {
                sock.set_read_timeout(Some(quiet)).expect("timeout");
            }
        }
        got
    })
}

/// Sends `count` datagrams to `to` from the client namespace at `rate_bps` (IP bytes).
fn send_paced(lab: &Lab, to: SocketAddr, count: u64, rate_bps: f64) {
    let sock = lab
        .client
        .enter(|| UdpSocket::bind("0.0.0.0:0").expect("bind"))
        .expect("client ns");
    big_buffers(&sock);
    sock.connect(to).expect("connect");
    let gap = Duration::from_secs_f64(IP_BYTES as f64 * 8.0 / rate_bps);
    let start = Instant::now();
    let mut buf = [0u8; PAYLOAD];
    for seq in 0..count {
        let due = start + gap * seq as u32;
        let now = Instant::now();
        if due > now + Duration::from_micros(500) {
            thread::sleep(due - now);
        }
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        let sent = start.elapsed().as_nanos() as u64;
        buf[8..16].copy_from_slice(&sent.to_be_bytes());
        // Full socket buffers drop, as the emulator's queue would.
        let _ = sock.send(&buf);
    }
}

/// IP-layer rate seen by the receiver of an overdriven `spec` path, in bit/s.
fn measured_rate(spec: &str, rate_bps: f64, seconds: f64) -> f64 {
    let lab = Lab::up(&emulated(&[spec])).expect("lab");
    let to = SocketAddr::new(lab.paths[0].server_v4.into(), 7101);
    let rx = receiver(&lab, to, Duration::from_millis(500));
    // 20% more than the link takes: its queue stays full, the machine is not flooded.
    let offered = 1.2 * rate_bps;
    let count = (offered * seconds / 8.0 / IP_BYTES as f64) as u64;
    send_paced(&lab, to, count, offered);
    let got = rx.join().expect("receiver");
    let mut lab = lab;
    if let Ok(json) = lab.emulator.as_mut().expect("emulator").stop() {
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let up = &v["paths"][0]["up"];
        eprintln!(
            "{spec}: {count} datagrams sent, the emulator got {} ({} dropped by its queue, {} refused by the kernel), delivered {}",
            up["offered_packets"], up["dropped_queue"], up["tx_dropped"], up["delivered_packets"]
        );
    }
    let n = got.arrivals.len();
    assert!(n > 100, "only {n} datagrams arrived");
    let span = got.arrivals[n - 1] - got.arrivals[0];
    ((n - 1) * IP_BYTES * 8) as f64 / span.as_secs_f64()
}

fn emulated(specs: &[&str]) -> LabConfig {
    let mut cfg = LabConfig::emulated(specs);
    cfg.subflow_endpoints = false;
    if std::env::var("MPTCP_LAB_FULL").as_deref() == Ok("1") {
        let release = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.parent()?.join("release/mptcp-user")));
        cfg.emulator_binary = release.filter(|p| p.exists());
    }
    cfg
}

fn assert_rate(spec: &str, rate_bps: f64) {
    let got = measured_rate(spec, rate_bps, 2.0);
    let err = got / rate_bps - 1.0;
    eprintln!(
        "{spec}: {:.2} Mbit/s measured ({:+.2}%)",
        got / 1e6,
        err * 100.0
    );
    assert!(
        err.abs() <= 0.03,
        "{spec}: measured {:.2} Mbit/s, {:+.2}% off",
        got / 1e6,
        err * 100.0
    );
}

#[test]
fn rate_within_3_percent() {
    if !require_root() {
        return;
    }
    assert_rate("rate=10mbit", 10e6);
    assert_rate("rate=100mbit,delay=10ms,queue=2000pkt", 100e6);
    if std::env::var("MPTCP_LAB_FULL").as_deref() == Ok("1") {
        for mbit in [300u64, 600, 1000] {
            // A deep queue: the test's paced sender is bursty at these rates.
            assert_rate(&format!("rate={mbit}mbit,queue=2000pkt"), mbit as f64 * 1e6);
        }
    }
}

/// Median round trip of UDP echoes on `path` of `lab`.
fn median_rtt(lab: &Lab, path: usize, port: u16) -> Duration {
    let server = SocketAddr::new(lab.paths[path].server_v4.into(), port);
    let echo = lab
        .server
        .enter(|| UdpSocket::bind(server).expect("bind"))
        .expect("server ns");
    echo.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let echoer = thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let client = lab
        .client
        .enter(|| UdpSocket::bind("0.0.0.0:0").expect("bind"))
        .expect("client ns");
    client.connect(server).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut rtts = Vec::new();
    for i in 0u32..30 {
        let t = Instant::now();
        client.send(&i.to_be_bytes()).expect("send");
        let mut buf = [0u8; 64];
        // A late answer to an earlier probe is skipped.
        while let Ok(n) = client.recv(&mut buf) {
            if n == 4 && buf[..4] == i.to_be_bytes() {
                rtts.push(t.elapsed());
                break;
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    echoer.join().expect("echo");
    assert!(rtts.len() >= 25, "{} of 30 echoes came back", rtts.len());
    rtts.sort();
    rtts[rtts.len() / 2]
}

#[test]
fn delay_is_the_round_trip_within_1ms() {
    if !require_root() {
        return;
    }
    // Symmetric, asymmetric (40 ms and 10 ms round-trip figures: 20 + 5 ms one way), and none.
    let lab = Lab::up(&emulated(&["delay=20ms", "delay=40ms/delay=10ms", ""])).expect("lab");
    for (path, want_ms) in [(0, 20.0), (1, 25.0), (2, 0.0)] {
        let rtt = median_rtt(&lab, path, 7200 + path as u16).as_secs_f64() * 1e3;
        eprintln!("path {path}: median RTT {rtt:.3} ms, expected {want_ms} ms");
        assert!(
            (rtt - want_ms).abs() <= 1.0,
            "path {path}: median RTT {rtt:.3} ms, expected {want_ms} ms"
        );
    }
}

#[test]
fn loss_and_a_scheduled_outage() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(&emulated(&[
        "loss=20%",
        "delay=2ms;at=1500ms,down;at=2500ms,up",
    ]))
    .expect("lab");
    let started = Instant::now();

    // Datagrams every 5 ms from now to 3.5 s after the emulator started: the
    // outage from 1.5 s to 2.5 s shows as a 1 s hole in what arrives.
    let to = SocketAddr::new(lab.paths[1].server_v4.into(), 7302);
    let rx = receiver(&lab, to, Duration::from_millis(1500));
    let left = Duration::from_millis(3500).saturating_sub(started.elapsed());
    assert!(
        left > Duration::from_millis(2200),
        "the lab took too long to start"
    );
    let count = left.as_millis() as u64 / 5;
    send_paced(&lab, to, count, IP_BYTES as f64 * 8.0 * 200.0);
    let seqs = rx.join().expect("receiver").seqs;
    let hole = seqs
        .windows(2)
        .map(|w| Duration::from_nanos(w[1].1 - w[0].1))
        .max()
        .expect("datagrams");
    let hole_ms = hole.as_secs_f64() * 1e3;
    assert!(
        (950.0..=1100.0).contains(&hole_ms),
        "longest hole {hole_ms:.1} ms (expected 1 s)"
    );
    assert!(
        seqs.len() as u64 >= count - 210,
        "{} of {count}",
        seqs.len()
    );

    // 20% loss on each of 2000 datagrams: 1600 +- 4 sigma (18) expected.
    let to = SocketAddr::new(lab.paths[0].server_v4.into(), 7301);
    let rx = receiver(&lab, to, Duration::from_millis(300));
    send_paced(&lab, to, 2000, 20e6);
    let got = rx.join().expect("receiver").seqs.len();
    assert!((1530..=1670).contains(&got), "{got} of 2000 arrived");
}

#[test]
fn kernel_mptcp_over_two_emulated_paths() {
    if !require_root() {
        return;
    }
    let mut cfg =
        LabConfig::emulated(&["rate=50mbit,delay=10ms", "rate=20mbit,delay=30ms,loss=0.5%"]);
    cfg.subflow_endpoints = true;
    let lab = Lab::up(&cfg).expect("lab");
    let bytes = 4 << 20;
    let got = mptcp_tests::lab_transfer(&lab, lab.paths[0].server_v4.into(), 7401, bytes, true)
        .expect("transfer");
    assert_eq!(got, bytes as u64);
    // Both directions of both paths carried frames; the lossy one lost some.
    let mut lab = lab;
    let json = lab
        .emulator
        .as_mut()
        .expect("emulator")
        .stop()
        .expect("counters");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    for p in 0..2 {
        for d in ["up", "down"] {
            let n = v["paths"][p][d]["delivered_packets"].as_u64().unwrap_or(0);
            assert!(n > 100, "path {p} {d}: {n} packets: {json}");
        }
    }
    assert!(
        v["paths"][1]["up"]["dropped_loss"].as_u64() > Some(0),
        "{json}"
    );
    assert_eq!(v["paths"][0]["oversize"].as_u64(), Some(0), "{json}");
}

#[test]
fn clock_from_syn_starts_the_schedule_at_the_first_syn() {
    if !require_root() {
        return;
    }
    let mut cfg = emulated(&["delay=2ms;at=1s,down"]);
    cfg.emulator_args = vec!["--clock-from-syn".into()];
    let lab = Lab::up(&cfg).expect("lab");
    let udp = SocketAddr::new(lab.paths[0].server_v4.into(), 7501);
    // 1.2 s after the start, no SYN yet: the path is still up.
    thread::sleep(Duration::from_millis(1200));
    let rx = receiver(&lab, udp, Duration::from_millis(300));
    send_paced(&lab, udp, 20, IP_BYTES as f64 * 8.0 * 100.0);
    assert_eq!(rx.join().expect("receiver").seqs.len(), 20);

    // A TCP SYN starts the clock: down 1 s later.
    let tcp = SocketAddr::new(lab.paths[0].server_v4.into(), 7502);
    let listener = lab
        .server
        .enter(|| std::net::TcpListener::bind(tcp).expect("listen"))
        .expect("server ns");
    let _conn = lab
        .client
        .enter(|| std::net::TcpStream::connect_timeout(&tcp, Duration::from_secs(2)))
        .expect("client ns")
        .expect("connect");
    drop(listener);
    let rx = receiver(&lab, udp, Duration::from_millis(1500));
    // 200 datagrams over 2 s: about half before the cut.
    send_paced(&lab, udp, 200, IP_BYTES as f64 * 8.0 * 100.0);
    let got = rx.join().expect("receiver").seqs;
    let last = got.last().map(|s| s.0).unwrap_or(0);
    assert!(
        (80..=105).contains(&got.len()) && (80..=105).contains(&last),
        "{} datagrams arrived, the last #{last}",
        got.len()
    );
}
