//! `cargo xtask setup`: install what is missing, quickly do nothing otherwise.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

/// Debian packages: the eBPF toolchain (DESIGN.md section 1), the C linker
/// for host builds, and the tools the tests and the lab use.
pub const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "gcc",
    "libc6-dev",
    "iproute2",
    "iperf3",
    "mptcpize",
    "tcpdump",
    "tshark",
    "ethtool",
    // The front ends' tests: curl through the SOCKS5 proxy, python3's
    // http.server behind it and RFC 8803 clients.
    "curl",
    "python3",
    // The tests' middleboxes: TCPOPTSTRIP strips MPTCP options, nft
    // rewrites a payload byte (fixing the TCP checksum) and is the load
    // balancer of tests/tests/behind_lb.rs (DNAT by jhash).
    "iptables",
    "nftables",
];

pub const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists() && Path::new("/usr/bin/apt-get").exists()
}

fn missing_packages() -> Result<Vec<&'static str>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(APT_PACKAGES)
        .output()
        .context("running dpkg-query")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !listing.lines().any(|l| {
                let mut f = l.split_whitespace();
                f.next() == Some(pkg) && f.next() == Some("ii")
            })
        })
        .collect())
}

fn privileged(program: &str) -> Result<Command> {
    if is_root() {
        Ok(Command::new(program))
    } else if Path::new("/usr/bin/sudo").exists() {
        let mut c = Command::new("sudo");
        c.arg(program);
        Ok(c)
    } else {
        bail!("installing packages needs root (or sudo); run `cargo xtask setup` as root")
    }
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn install_packages(missing: &[&str]) -> Result<()> {
    println!("setup: installing {}", missing.join(" "));
    // tshark asks whether non-root users may capture; answer before it asks.
    let mut preseed = privileged("debconf-set-selections")?;
    preseed.stdin(std::process::Stdio::piped());
    let mut child = preseed.spawn().context("debconf-set-selections")?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n")?;
    }
    child.wait()?;
    status(privileged("apt-get")?.args(["update", "-q"]))?;
    status(
        privileged("apt-get")?
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing),
    )
}

fn install_bpf_linker() -> Result<()> {
    println!(
        "setup: cargo install bpf-linker {BPF_LINKER_VERSION} (LLVM 22; about a minute on 2 cores)"
    );
    status(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
    )
}

fn print_manual_instructions(missing: &[&str]) {
    eprintln!("setup: this is not Debian; install the equivalents of:");
    eprintln!("  {}", missing.join(" "));
    eprintln!(
        "  (a rustc with LLVM 22 and a `core` for bpfel-unknown-none, or rustup nightly with rust-src)"
    );
    eprintln!(
        "  LLVM_PREFIX={LLVM_PREFIX} LLVM_SYS_221_PREFIX={LLVM_PREFIX} cargo install bpf-linker \
         --version {BPF_LINKER_VERSION} --no-default-features --features llvm-22"
    );
}

/// Installs every missing prerequisite; prints the eBPF toolchain it will use.
pub fn setup() -> Result<()> {
    if is_debian() {
        let missing = missing_packages()?;
        if !missing.is_empty() {
            install_packages(&missing)?;
        }
    } else if mptcp_ebpf_build::detect().is_err() {
        print_manual_instructions(APT_PACKAGES);
        bail!("missing prerequisites (see above)");
    }
    if mptcp_ebpf_build::bpf_linker().is_none() {
        install_bpf_linker()?;
    }
    let toolchain = mptcp_ebpf_build::detect()?;
    println!("setup: ok; eBPF toolchain: {}", toolchain.name());
    check_kernel();
    Ok(())
}

/// Warnings only: a machine without these can still build.
fn check_kernel() {
    match std::fs::read_to_string("/proc/sys/net/mptcp/enabled") {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => {
            eprintln!("setup: warning: net.mptcp.enabled is 0 (sysctl -w net.mptcp.enabled=1)")
        }
        Err(_) => eprintln!("setup: warning: this kernel has no MPTCP (CONFIG_MPTCP)"),
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("setup: warning: no kernel BTF at /sys/kernel/btf/vmlinux");
    }
}
