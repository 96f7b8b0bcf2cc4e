//! The datapath's speed options and the benchmark's raw ceiling, as
//! processes in a one-path lab: `serve --busy-poll` still echoes every byte
//! (the worker never sleeps and fetches frames by running the NAPI itself),
//! and `raw-ceiling` counts what it sends and receives consistently.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use mptcp_engine::app::Pattern;
use mptcp_tests::cli::{mptcp_user, one_path_lab, output_text, start_serve, xdp_attached};
use mptcp_tests::{require_root, wait_until};

#[test]
fn busy_polling_serve_echoes_a_kernel_client() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    // The kernel client sends full checksums (the strict path).
    lab.client
        .exec("ethtool", &["-K", "cli0", "tx", "off"])
        .expect("ethtool");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5340);
    let listen_s = listen.to_string();
    let _server = start_serve(
        &lab,
        &[
            "--iface",
            "srv0",
            "--listen",
            &listen_s,
            "--busy-poll",
            "50",
            "--busy-poll-budget",
            "32",
        ],
    );
    let len = 4 << 20;
    let back = lab
        .client
        .enter(|| {
            let stream =
                TcpStream::connect_timeout(&listen, Duration::from_secs(5)).expect("connect");
            let mut writer = stream.try_clone().expect("clone");
            let sender = thread::spawn(move || {
                writer
                    .write_all(&Pattern::STREAM.bytes(0, len))
                    .expect("write");
                writer.shutdown(Shutdown::Write).expect("shutdown");
            });
            let mut reader = stream;
            reader
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut back = Vec::with_capacity(len);
            reader.read_to_end(&mut back).expect("read");
            sender.join().expect("sender");
            back
        })
        .expect("client ns");
    assert_eq!(back.len(), len);
    assert_eq!(Pattern::STREAM.first_mismatch(0, &back), None);
}

#[test]
fn raw_ceiling_receiver_counts_what_the_sender_sent() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let receiver = mptcp_user(lab.server.name())
        .args(["raw-ceiling", "--iface", "srv0", "--port", "5341"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn receiver");
    assert!(
        wait_until(Duration::from_secs(15), || xdp_attached(&lab, "srv0")),
        "the receiver never attached XDP"
    );
    let to = SocketAddr::new(lab.paths[0].server_v4.into(), 5341).to_string();
    let sender = mptcp_user(lab.client.name())
        .args([
            "raw-ceiling",
            "--iface",
            "cli0",
            "--to",
            &to,
            "--time",
            "0.5",
        ])
        .output()
        .expect("sender");
    assert!(sender.status.success(), "{}", output_text(&sender));
    thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child; SIGTERM makes it report and exit.
    unsafe { libc::kill(receiver.id() as i32, libc::SIGTERM) };
    let received = receiver.wait_with_output().expect("receiver");
    assert!(received.status.success(), "{}", output_text(&received));
    let json = |out: &[u8]| -> serde_json::Value {
        serde_json::from_slice(out).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(out));
        })
    };
    let (s, r) = (json(&sender.stdout), json(&received.stdout));
    let sent = s["frames"].as_u64().expect("sender frames");
    let got = r["frames"].as_u64().expect("receiver frames");
    assert!(got > 1000, "the receiver counted {got} frames");
    // veth may drop when the receiver falls behind, never invent frames.
    assert!(got <= sent, "received {got} of {sent}");
    // MTU 1500: 1460 payload bytes per frame on both sides.
    assert_eq!(s["payload_bytes"].as_u64(), Some(sent * 1460));
    assert_eq!(r["payload_bytes"].as_u64(), Some(got * 1460));
    assert!(r["payload_bits_per_second"].as_f64() > Some(0.0));
}
