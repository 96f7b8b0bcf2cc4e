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
