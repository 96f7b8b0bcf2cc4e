//! Fuzz target `tcp_endpoint`: see `mptcp_engine::mptcp::fuzzing::fuzz_tcp_endpoint`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mptcp_engine::mptcp::fuzzing::fuzz_tcp_endpoint(data);
});
