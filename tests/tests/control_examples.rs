//! The enhanced socket API paper's three use cases, as the runnable
//! examples of the stream API (`mptcp-user/control/examples`), with the
//! engine as client of a kernel MPTCP server: each downloads an object
//! byte-exact and steers its subflows as its policy says, and the kernel
//! sees the joins.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use mptcp_engine::app::Pattern;
use mptcp_tests::cli::output_text;
use mptcp_tests::{require_root, Lab, LabConfig};

fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "mptcp-control", "--examples"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the examples failed");
    });
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("examples")
        .join(name)
}

/// Two paths, no kernel subflow endpoints, full TCP checksums from the
/// kernel; `shaped` limits the server's sending on path 0.
fn lab(shaped: Option<&str>) -> Lab {
    let lab = Lab::up(&LabConfig {
        subflow_endpoints: false,
        qdisc: vec![shaped.map(str::to_string), None],
        ..LabConfig::unique(2)
    })
    .expect("lab");
    for p in &lab.paths {
        lab.server
            .exec("ethtool", &["-K", &p.server_if, "tx", "off"])
            .expect("ethtool");
    }
    lab
}

/// A kernel MPTCP object server for one connection: reads an 8-byte
/// length N, answers N then N bytes of the test pattern.
fn object_server(lab: &Lab, port: u16) -> thread::JoinHandle<u64> {
    let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
    let listener = lab
        .server
        .enter(|| mptcp_tests::mptcp_listen(any).expect("MPTCP listen"))
        .expect("server ns");
    thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut len = [0u8; 8];
        c.read_exact(&mut len).expect("request");
        let n = u64::from_be_bytes(len);
        c.write_all(&len).expect("length");
        let mut off = 0u64;
        while off < n {
            let k = (n - off).min(1 << 20) as usize;
            c.write_all(&Pattern::STREAM.bytes(off, k)).expect("object");
            off += k as u64;
        }
        c.shutdown(Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        n
    })
}

/// Runs example `name` in the client namespace against the object server
/// on `port` and returns its JSON report (after checking the download).
fn run(lab: &Lab, name: &str, port: u16, bytes: u64, extra: &[&str]) -> serde_json::Value {
    let served = object_server(lab, port);
    let remote = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let out = Command::new("ip")
        .args(["netns", "exec", lab.client.name()])
        .arg(example(name))
        .arg(remote.to_string())
        .args([
            "--iface",
            "cli0",
            "--iface",
            "cli1",
            "--bytes",
            &bytes.to_string(),
        ])
        .args(extra)
        .output()
        .expect("example");
    assert!(out.status.success(), "{name}: {}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", output_text(&out)));
    assert_eq!(served.join().expect("server"), bytes);
    assert_eq!(report["bytes"], bytes, "{report}");
    assert_eq!(report["byte_exact"], true, "{report}");
    eprintln!("{name}: {report}");
    report
}

/// Subflows of a report that received data.
fn carrying(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    report["subflows"]
        .as_array()
        .expect("subflows")
        .iter()
        .filter(|s| s["bytes_received"].as_u64() > Some(0))
        .collect()
}

#[test]
fn refresh_replaces_the_subflow_every_x_bytes() {
    if !require_root() {
        return;
    }
    // Path 0 at 100 Mbit/s: 16 MiB take over a second, room for the joins.
    let lab = lab(Some("tbf rate 100mbit burst 64kb latency 100ms"));
    // Linux keeps counting a replaced subflow against its join budget while
    // it still sends on it (our FIN half-closes it): room for the refreshes.
    lab.server.mptcp_limits(8).expect("limits");
    let joins = lab.server.nstat("MPTcpExtMPJoinAckRx").expect("nstat");
    let bytes = 16 << 20;
    let r = run(
        &lab,
        "refresh",
        5350,
        bytes,
        &["--every", &(4u64 << 20).to_string()],
    );
    let refreshes = r["refreshes"].as_u64().expect("refreshes");
    // Every 4 MiB of 16: at 4, 8, 12 and (maybe) 16 MiB.
    assert!((3..=4).contains(&refreshes), "{r}");
    let subflows = r["subflows"].as_array().unwrap();
    // Every subflow opened replaced one (a successor still establishing at
    // the end may be listed too).
    assert!(subflows.len() as u64 > refreshes, "{r}");
    let subflows = &subflows[..1 + refreshes as usize];
    // Each subflow a new tuple; the replaced ones closed; each carried data.
    let ports: std::collections::HashSet<_> = subflows.iter().map(|s| s["local"].clone()).collect();
    assert_eq!(ports.len(), subflows.len(), "{r}");
    assert!(
        subflows[..subflows.len() - 1]
            .iter()
            .all(|s| s["state"] != "established"),
        "{r}"
    );
    assert_eq!(subflows[subflows.len() - 1]["state"], "established", "{r}");
    assert!(carrying(&r).len() as u64 >= refreshes, "{r}");
    let new_joins = lab.server.nstat("MPTcpExtMPJoinAckRx").expect("nstat") - joins;
    assert!(
        new_joins >= refreshes,
        "the kernel accepted {new_joins} joins"
    );
}

#[test]
fn delayed_subflow_only_above_the_size_threshold() {
    if !require_root() {
        return;
    }
    let lab = lab(Some("tbf rate 100mbit burst 64kb latency 100ms"));
    let join = || lab.server.nstat("MPTcpExtMPJoinAckRx").expect("nstat");
    // Small object: one subflow, no join.
    let before = join();
    let small = run(
        &lab,
        "delayed",
        5351,
        256 << 10,
        &["--threshold", "1048576"],
    );
    assert!(small["opened"].is_null(), "{small}");
    assert_eq!(small["subflows"].as_array().unwrap().len(), 1, "{small}");
    assert_eq!(join(), before);
    // Large object: the second path joins and carries data.
    let large = run(&lab, "delayed", 5352, 16 << 20, &["--threshold", "1048576"]);
    let id = large["opened"].as_u64().expect("opened");
    assert_eq!(join(), before + 1);
    let second = large["subflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .expect("the opened subflow");
    assert_eq!(second["interface"], "cli1", "{large}");
    assert!(second["bytes_received"].as_u64() > Some(0), "{large}");
}

#[test]
fn deadline_streaming_adds_a_path_when_the_rate_falls_short() {
    if !require_root() {
        return;
    }
    // Path 0 sends at 40 Mbit/s: 8 MiB in 1 s needs 67 Mbit/s.
    let lab = lab(Some("tbf rate 40mbit burst 64kb latency 100ms"));
    let bytes = 8 << 20;
    let tight = run(&lab, "deadline", 5353, bytes, &["--deadline", "1"]);
    let id = tight["opened"]["id"]
        .as_u64()
        .expect("a subflow was opened");
    let second = tight["subflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .expect("the opened subflow");
    assert_eq!(second["interface"], "cli1", "{tight}");
    assert!(second["bytes_received"].as_u64() > Some(0), "{tight}");
    // A deadline the first path meets alone: no second subflow.
    let loose = run(&lab, "deadline", 5354, bytes, &["--deadline", "60"]);
    assert!(loose["opened"].is_null(), "{loose}");
    assert_eq!(carrying(&loose).len(), 1, "{loose}");
}
