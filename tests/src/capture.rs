//! Packet captures as judges: tcpdump in a namespace, read back with
//! tshark (Wireshark's MPTCP dissector and analysis).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cli::output_text;
use crate::{wait_until, Netns};

/// tcpdump capturing on an interface of a namespace, writing each frame as
/// it comes (`--immediate-mode -U`); SIGINT on drop.
pub struct Capture {
    child: Child,
    file: String,
    stopped: bool,
}

impl Capture {
    pub fn start(ns: &Netns, iface: &str, file: &str) -> Capture {
        Capture::start_filtered(ns, iface, file, "")
    }

    /// Only the frames matching `bpf` (a pcap-filter expression).
    pub fn start_filtered(ns: &Netns, iface: &str, file: &str, bpf: &str) -> Capture {
        let mut cmd = ns.command("tcpdump");
        // Whole frames: our decoder takes a snapped frame for a malformed one.
        cmd.args(["-i", iface, "-B", "65536", "--immediate-mode", "-U"])
            .args(["-w", file]);
        if !bpf.is_empty() {
            cmd.arg(bpf);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("tcpdump");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        // "listening on br0": from here on every frame is written.
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => continue,
                _ => panic!("tcpdump did not start capturing"),
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        Capture {
            child,
            file: file.to_string(),
            stopped: false,
        }
    }

    /// Sends a UDP datagram from `from` to `to` (port 9) across this
    /// bridge and waits until the capture holds it: every frame before it
    /// is written too. Then stops tcpdump.
    pub fn stop_after_marker(mut self, from: &Netns, to: &str) {
        let dst: SocketAddr = format!("{to}:9").parse().expect("address");
        let filter = format!("udp.dstport == 9 && ip.dst == {to}");
        let marked = wait_until(Duration::from_secs(10), || {
            // Again every time: ARP may swallow the first one.
            from.enter(|| {
                std::net::UdpSocket::bind("0.0.0.0:0")
                    .and_then(|s| s.send_to(b"marker", dst))
                    .expect("marker datagram")
            })
            .expect("client ns");
            !tshark_fields(&self.file, &filter, &["frame.number"]).is_empty()
        });
        assert!(marked, "the capture never showed the marker to {to}");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait tcpdump");
        self.stopped = true;
        assert!(status.success(), "tcpdump: {status:?}");
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // SAFETY: signalling our own child, not yet waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// `tshark -r FILE` with Wireshark's MPTCP analysis on, as tab-separated
/// `fields` of every frame that matches `filter`.
pub fn tshark_fields(file: &str, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-r", file, "-n"])
        .args(["-o", "mptcp.analyze_mappings:TRUE"])
        .args(["-o", "mptcp.analyze_mptcp:TRUE"])
        .args(["-o", "mptcp.relative_sequence_numbers:FALSE"])
        .args(["-Y", filter, "-T", "fields", "-E", "occurrence=f"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark -r");
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}
