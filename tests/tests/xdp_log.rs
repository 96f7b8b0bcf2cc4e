//! aya-log from the XDP program reaches the `log` crate when enabled, and
//! nothing is emitted at the default level (off).
use std::sync::Mutex;

use mptcp_datapath::xdp::{Classifier, EbpfLogLevel, Ownership, Verdict};
use mptcp_tests::{frames::TcpFrame, require_root};

struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(format!("{}", record.args()));
        }
    }
    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

fn malformed_frame() -> Vec<u8> {
    let full = TcpFrame::new(
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        50000,
        443,
    )
    .build();
    full[..30].to_vec()
}

fn records_after_malformed_frame(level: EbpfLogLevel) -> Vec<String> {
    let mut c = Classifier::load_with_log(level).expect("load");
    c.set_ownership(&Ownership {
        addresses: vec!["10.0.0.2".parse().unwrap()],
        listen_ports: vec![443],
        client_ports: None,
    })
    .expect("config");
    RECORDER.0.lock().unwrap().clear();
    assert_eq!(c.test_run(&malformed_frame()).expect("run"), Verdict::Pass);
    assert_eq!(c.counters().expect("counters").malformed, 1);
    c.flush_logs();
    RECORDER.0.lock().unwrap().clone()
}

// One test function: the global logger and its records are process-wide.
#[test]
fn ebpf_log_records_only_when_enabled() {
    if !require_root() {
        return;
    }
    log::set_logger(&RECORDER).expect("logger");
    log::set_max_level(log::LevelFilter::Trace);
    let enabled = records_after_malformed_frame(EbpfLogLevel::Debug);
    assert!(
        enabled.iter().any(|l| l.contains("malformed")),
        "records: {enabled:?}"
    );
    let off = records_after_malformed_frame(EbpfLogLevel::Off);
    assert!(off.is_empty(), "records at level off: {off:?}");
}
