//! `mptcp-user sim` as a user meets it: arguments, errors, output.

use std::process::Command;

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
