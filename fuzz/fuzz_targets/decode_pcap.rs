//! The whole `decode --verify` path on arbitrary capture files: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mptcp_decode::{decode_bytes, Options};

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = decode_bytes(data, Options { json: true, verify: true }, &mut out);
});
