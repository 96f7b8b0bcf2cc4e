//! Fuzz target `mptcp_server`: see `mptcp_engine::mptcp::fuzzing::fuzz_mptcp_server`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mptcp_engine::mptcp::fuzzing::fuzz_mptcp_server(data);
});
