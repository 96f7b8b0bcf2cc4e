//! Byte-exact MPTCP transfers between two engines over simulated paths.

mod mptcp_harness;

use mptcp_harness::*;
use mptcp_user::io::ByteStream;
use mptcp_user::mptcp::{MptcpConfig, MptcpEvent, SubflowStatus};
use std::time::Duration;

fn cfg() -> MptcpConfig {
    let mut c = MptcpConfig::default();
    c.tcp.time_wait = Duration::from_millis(100);
    c
}

#[test]
fn two_paths_byte_exact_both_directions() {
    let mut net = Net::new(&[PathSpec::new(20, 5, 0), PathSpec::new(10, 15, 0)], cfg(), cfg(), true, 1);
    let up = pattern(3 << 20, 1);
    let down = pattern(1 << 20, 2);
    let (gs, gc, ok) = transfer(&mut net, &up, &down, Duration::from_secs(60));
    assert!(ok, "transfer did not finish: server got {} client got {}", gs.len(), gc.len());
    assert!(gs == up, "server got different bytes ({} vs {})", gs.len(), up.len());
    assert!(gc == down);
    let c = net.client.connection().unwrap();
    let subs: Vec<_> = c.subflows().collect();
    assert!(subs.len() >= 2, "{subs:?}");
    let mut used = 0;
    for s in &subs {
        let st = c.subflow_stats(s.id).unwrap();
        if st.bytes_sent > 100_000 {
            used += 1;
        }
    }
    assert!(used >= 2, "both subflows should carry data");
    let closed = net.run_until(Duration::from_secs(10), |n| n.client.is_closed() && n.server.is_closed());
    for e in [&net.client, &net.server] {
        let c = e.connection().unwrap();
        eprintln!("acked {} {:?}", c.data_acked(), c.subflows().map(|s| s.status).collect::<Vec<_>>());
    }
    assert!(closed);
    let _ = SubflowStatus::Closed;
    let _ = MptcpEvent::Established;
}
