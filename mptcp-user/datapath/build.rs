//! Embeds the XDP object into the binary so a server needs nothing else.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out.join("mptcp-ebpf.o");
    println!("cargo:rerun-if-env-changed=MPTCP_EBPF_OBJECT");
    println!(
        "cargo:rerun-if-env-changed={}",
        mptcp_ebpf_build::TOOLCHAIN_ENV
    );
    // A prebuilt object (e.g. cross builds): use it as is.
    if let Some(prebuilt) = env::var_os("MPTCP_EBPF_OBJECT") {
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(&prebuilt).display()
        );
        if let Err(e) = fs::copy(&prebuilt, &dest) {
            panic!(
                "MPTCP_EBPF_OBJECT={}: {e}",
                PathBuf::from(prebuilt).display()
            );
        }
        return;
    }
    for path in mptcp_ebpf_build::sources() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    match mptcp_ebpf_build::build() {
        Ok(built) => {
            if let Err(e) = fs::copy(&built.object, &dest) {
                panic!("copy {}: {e}", built.object.display());
            }
            println!(
                "cargo:warning=embedded eBPF object ({} bytes) built with the {} toolchain",
                built.size,
                built.toolchain.name()
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            panic!("cannot build the eBPF object: {e}");
        }
    }
}
