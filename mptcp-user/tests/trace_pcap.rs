//! `mptcp-user trace FILE.pcap --out DIR` on the Linux 6.18 kernel captures:
//! the connection and its joins are found by token, both directions are
//! traced at the data level, and a file that is no capture is refused.
use std::process::Command;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/linux-6.18/"
);

fn trace(file: &str, out: &std::path::Path, direction: &str) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
        .args(["trace", file, "--direction", direction, "--out"])
        .arg(out)
        .output()
        .expect("run mptcp-user");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// (dsn_start, dsn_end, retransmission) rows of a sequence.csv.
fn sequence_rows(dir: &std::path::Path) -> Vec<(u64, u64, u8)> {
    let text = std::fs::read_to_string(dir.join("sequence.csv")).expect("sequence.csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("time_s,subflow,path,dsn_start,dsn_end,retransmission")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn kernel_capture_both_directions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = format!("{FIXTURES}checksum-prio-rmaddr.pcap");
    let (ok, text) = trace(&file, dir.path(), "both");
    assert!(ok, "{text}");
    // The MP_CAPABLE subflow and two joins; 1100 + 2 x 3000 bytes from the
    // client, 1100 + 2 x 3000 echoed.
    assert!(
        text.contains(
            "an MPTCP connection with 3 subflow(s); client sent 7100 B, server sent 7100 B"
        ),
        "{text}"
    );
    for side in ["client-to-server", "server-to-client"] {
        let d = dir.path().join(side);
        let rows = sequence_rows(&d);
        // Contiguous data-level ranges from 0 to 7100, none retransmitted.
        let mut next = 0;
        for (a, b, r) in &rows {
            assert_eq!((*a, *r), (next, 0), "{side}: {rows:?}");
            next = *b;
        }
        assert_eq!(next, 7100, "{side}: {rows:?}");
        let acks = std::fs::read_to_string(d.join("acks.csv")).expect("acks");
        assert!(acks.lines().any(|l| l.split(',').nth(3) == Some("7100")));
        for f in [
            "goodput.csv",
            "unacked.csv",
            "sequence.svg",
            "goodput.svg",
            "unacked.svg",
        ] {
            assert!(d.join(f).exists(), "{side}/{f}");
        }
    }
}

#[test]
fn auto_picks_the_direction_with_more_data_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = format!("{FIXTURES}handshake-join-addaddr.pcap");
    let (ok, text) = trace(&file, dir.path(), "auto");
    assert!(ok, "{text}");
    assert!(
        text.contains("client-to-server data: trace: wrote"),
        "{text}"
    );
    assert_eq!(sequence_rows(dir.path()).last().map(|r| r.1), Some(1100));

    let bogus = dir.path().join("bogus.pcap");
    std::fs::write(&bogus, b"not a capture at all").unwrap();
    let (ok, text) = trace(bogus.to_str().unwrap(), &dir.path().join("x"), "auto");
    assert!(!ok);
    assert!(text.contains("not a pcap or pcapng capture"), "{text}");
}
