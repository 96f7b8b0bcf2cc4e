//! `mptcp-user sim` as a user meets it: arguments, errors, output.

use std::process::Command;

#[path = "../sim/tests/trace_checks/mod.rs"]
mod trace_checks;
use trace_checks::check_tcp_trace;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
        .arg("sim")
        .args(args)
        .output()
        .expect("run mptcp-user")
}

#[test]
fn help_documents_the_path_spec() {
    let out = sim(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--path",
        "--bytes",
        "--seed",
        "--json",
        "rate=100mbit",
        "reorder",
        "down",
    ] {
        assert!(text.contains(word), "help lacks {word}:\n{text}");
    }
}

#[test]
fn bad_specs_name_the_key_and_the_expected_form() {
    let out = sim(&["--path", "rate=100mbit,delay=10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`delay`") && err.contains("10ms"), "{err}");

    let out = sim(&["--path", "rate=1mbit,colour=blue"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key `colour`"), "{err}");

    let out = sim(&["--bytes", "12 parsecs"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("16MiB"), "{err}");
}

#[test]
fn json_reports_one_object_with_the_documented_keys() {
    let out = sim(&[
        "--path",
        "rate=100mbit,delay=10ms,loss=1%",
        "--bytes",
        "2M",
        "--seed",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1);
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["bytes"], 2 << 20);
    assert_eq!(j["byte_exact"], true);
    assert_eq!(j["seed"], 3);
    assert!(j["duration_s"].as_f64().unwrap() > 0.0);
    let goodput = j["goodput_bps"].as_f64().unwrap();
    assert!(goodput > 0.0 && goodput < 100e6, "{goodput}");
    let paths = j["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 1);
    assert!(paths[0]["bytes"].as_u64().unwrap() >= 2 << 20);
    assert!(paths[0]["retransmits"].as_u64().unwrap() > 0);
}

#[test]
fn text_output_is_readable_and_runs_repeat() {
    let args = [
        "--path",
        "rate=20mbit,delay=30ms,reorder=1%",
        "--bytes",
        "1MiB",
    ];
    let a = sim(&args);
    assert!(a.status.success());
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(
        text.contains("1.0 MiB over 1 path (seed 1): complete, byte-exact"),
        "{text}"
    );
    assert!(
        text.contains("Mbit/s") && text.contains("retransmits"),
        "{text}"
    );
    assert_eq!(a.stdout, sim(&args).stdout);
}

#[test]
fn several_paths_run_one_mptcp_connection() {
    let out = sim(&[
        "--path",
        "rate=10mbit,delay=10ms",
        "--path",
        "rate=20mbit,delay=30ms",
        "--bytes",
        "2MiB",
        "--scheduler",
        "roundrobin",
        "--cc",
        "lia",
        "--checksum",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["byte_exact"], true);
    assert!(v["goodput_bps"].as_f64().unwrap() > 0.0);
    let subflows = v["subflows"].as_array().unwrap();
    assert_eq!(subflows.len(), 2);
    for (i, s) in subflows.iter().enumerate() {
        assert_eq!(s["path"], i);
        assert!(s["bytes"].as_u64().unwrap() > 0);
        assert!(s["retransmits"].is_u64() && s["reinjected"].is_u64());
    }
    let bad = sim(&[
        "--path",
        "rate=10mbit",
        "--scheduler",
        "nope",
        "--bytes",
        "1K",
    ]);
    assert!(!bad.status.success());
}

#[test]
fn cli_writes_the_trace_and_lists_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
        .args(["sim", "--bytes", "256KiB", "--json", "--trace"])
        .arg(&out_dir)
        .output()
        .expect("run mptcp-user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    assert_eq!(json["bytes"], 256 * 1024);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "sequence.csv",
        "acks.csv",
        "goodput.csv",
        "unacked.csv",
        "sequence.svg",
        "goodput.svg",
        "unacked.svg",
    ] {
        assert!(stderr.contains(name), "stderr lacks {name}: {stderr}");
        assert!(out_dir.join(name).is_file(), "{name} missing");
    }
    check_tcp_trace(&out_dir, 256 * 1024);
}

#[test]
fn unwritable_trace_dir_fails_before_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
        .args(["sim", "--bytes", "64MiB", "--trace"])
        .arg(file.join("trace"))
        .output()
        .expect("run mptcp-user");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--trace") && stderr.contains("a-file"),
        "{stderr}"
    );
    // No report: the run never started.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn help_mentions_trace() {
    let out = Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
        .args(["sim", "--help"])
        .output()
        .expect("run mptcp-user");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--trace <DIR>"), "{text}");
}

#[test]
fn v0_run_with_pcap_verifies_as_v0() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("v0.pcap");
    let out = sim(&[
        "--path",
        "rate=50mbit,delay=10ms",
        "--path",
        "rate=30mbit,delay=20ms",
        "--bytes",
        "1MiB",
        "--mptcp-version",
        "0",
        "--checksum",
        "--signal",
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("byte-exact"));
    let out = Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
        .args(["decode", "--verify"])
        .arg(&pcap)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(" 0 MISMATCH") && text.contains("mptcp v0 connections: 1"),
        "{text}"
    );
    assert!(
        text.contains("add_addr") && text.contains("ipver=4"),
        "ADD_ADDR v0 form"
    );
    // A version the engine does not speak is refused with the choices.
    let out = sim(&["--mptcp-version", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 (RFC 6824) or 1 (RFC 8684)"));
}

#[test]
fn round_robin_mappings_sent_out_of_order_are_not_retransmissions() {
    // Two clean paths with deep queues: nothing is lost, but round robin
    // hands each subflow a mapping ahead, so data leaves out of DSN order.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_mptcp-user"))
        .args([
            "sim",
            "--path",
            "rate=20mbit,delay=10ms,queue=8MiB",
            "--path",
            "rate=20mbit,delay=40ms,queue=8MiB",
            "--scheduler",
            "round-robin",
            "--bytes",
            "2MiB",
            "--json",
            "--trace",
        ])
        .arg(dir.path())
        .output()
        .expect("run mptcp-user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seq = trace_checks::Table::read(&dir.path().join("sequence.csv"));
    let starts = seq.f64s("dsn_start");
    let out_of_order = starts.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(out_of_order > 10, "data left in order: {out_of_order}");
    let flagged = seq
        .f64s("retransmission")
        .iter()
        .filter(|r| **r > 0.0)
        .count();
    assert_eq!(flagged, 0, "{flagged} segments flagged as retransmissions");
}
