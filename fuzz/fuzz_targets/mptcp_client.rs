//! Fuzz target `mptcp_client`: see `mptcp_engine::mptcp::fuzzing::fuzz_mptcp_client`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mptcp_engine::mptcp::fuzzing::fuzz_mptcp_client(data);
});
