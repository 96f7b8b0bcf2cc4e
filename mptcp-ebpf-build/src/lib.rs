//! Builds `mptcp-ebpf` for `bpfel-unknown-none`. Used by `mptcp-user/build.rs`
//! (to embed the object) and by `xtask build-ebpf`, so the recipe lives once.
//!
//! Two toolchains are supported and picked automatically (override with
//! `MPTCP_EBPF_TOOLCHAIN=standard|debian`):
//! - **standard**: rustup's nightly with `rust-src`, `-Z build-std=core`;
//! - **debian**: Debian's `rustc-web` at `/usr/bin/rustc` with the prebuilt
//!   `core` of `libstd-rust-web-dev-bpf`, unlocked with `RUSTC_BOOTSTRAP=1`.
//!
//! Both need `bpf-linker` on `PATH` or in `$CARGO_HOME/bin`.
use std::{
    env,
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

pub const TARGET: &str = "bpfel-unknown-none";
/// Environment variable that forces a toolchain.
pub const TOOLCHAIN_ENV: &str = "MPTCP_EBPF_TOOLCHAIN";
const RUSTFLAGS: &str = "-C debuginfo=2 -C link-arg=--btf";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup nightly with rust-src; `-Z build-std=core`.
    Standard { toolchain: String },
    /// Debian rustc-web with a prebuilt `core` for the BPF targets.
    Debian { rustc: PathBuf },
}

impl Toolchain {
    pub fn name(&self) -> String {
        match self {
            Toolchain::Standard { toolchain } => {
                format!("standard (rustup {toolchain} + rust-src, -Z build-std=core)")
            }
            Toolchain::Debian { rustc } => format!(
                "debian ({} with prebuilt core for {TARGET}, RUSTC_BOOTSTRAP=1)",
                rustc.display()
            ),
        }
    }
}

#[derive(Debug)]
pub struct Built {
    pub object: PathBuf,
    pub size: u64,
    pub toolchain: Toolchain,
}

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// The repository root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Files whose change must rebuild the object (for `cargo:rerun-if-changed`).
pub fn sources() -> Vec<PathBuf> {
    let root = workspace_root();
    vec![
        root.join("mptcp-ebpf/src"),
        root.join("mptcp-ebpf/Cargo.toml"),
        root.join("mptcp-ebpf/Cargo.lock"),
        root.join("mptcp-common/src"),
        root.join("mptcp-common/Cargo.toml"),
    ]
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// `PATH` with `$CARGO_HOME/bin` appended, where `cargo install` puts bpf-linker.
fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(cargo_home().join("bin"));
    env::join_paths(dirs).unwrap_or_default()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&search_path())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn bpf_linker() -> Option<PathBuf> {
    find_in_path("bpf-linker")
}

fn rustup_nightly_with_src() -> Option<String> {
    let rustup = find_in_path("rustup")?;
    // Ask first: `rustup run` of a missing toolchain may try to install it.
    let list = Command::new(&rustup)
        .args(["toolchain", "list"])
        .output()
        .ok()?;
    if !String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        return None;
    }
    let out = Command::new(rustup)
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
        .then(|| "nightly".to_string())
}

fn debian_ready() -> bool {
    Path::new(DEBIAN_RUSTC).is_file()
        && std::fs::read_dir(DEBIAN_CORE_DIR)
            .map(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("libcore-") && name.ends_with(".rlib")
                })
            })
            .unwrap_or(false)
}

const SETUP_HINT: &str = "run `cargo xtask setup` to install it";

/// Picks the toolchain: the env override, else standard if present, else Debian.
pub fn detect() -> Result<Toolchain, Error> {
    if bpf_linker().is_none() {
        return Err(err(format!(
            "bpf-linker not found on PATH or in {}; {SETUP_HINT}",
            cargo_home().join("bin").display()
        )));
    }
    let forced = env::var(TOOLCHAIN_ENV).ok();
    let standard = || rustup_nightly_with_src().map(|toolchain| Toolchain::Standard { toolchain });
    let debian = || {
        debian_ready().then(|| Toolchain::Debian {
            rustc: PathBuf::from(DEBIAN_RUSTC),
        })
    };
    match forced.as_deref() {
        Some("standard") => standard().ok_or_else(|| {
            err(format!(
                "{TOOLCHAIN_ENV}=standard but rustup nightly with rust-src is missing \
                 (rustup toolchain install nightly --component rust-src)"
            ))
        }),
        Some("debian") => debian().ok_or_else(|| {
            err(format!(
                "{TOOLCHAIN_ENV}=debian but {DEBIAN_RUSTC} or core in {DEBIAN_CORE_DIR} is missing; {SETUP_HINT}"
            ))
        }),
        Some(other) => Err(err(format!(
            "{TOOLCHAIN_ENV}={other}: expected `standard` or `debian`"
        ))),
        None => standard().or_else(debian).ok_or_else(|| {
            err(format!(
                "no eBPF toolchain: need rustup nightly with rust-src, or Debian's rustc-web \
                 with libstd-rust-web-dev-bpf ({DEBIAN_RUSTC}, {DEBIAN_CORE_DIR}); {SETUP_HINT}"
            ))
        }),
    }
}

/// Where the eBPF crate's build output goes (shared by build.rs and xtask).
pub fn target_dir() -> PathBuf {
    workspace_root().join("target/mptcp-ebpf")
}

/// Builds the release object and returns its path, size and toolchain.
pub fn build() -> Result<Built, Error> {
    let toolchain = detect()?;
    let root = workspace_root();
    let manifest = root.join("mptcp-ebpf/Cargo.toml");
    let target_dir = target_dir();
    let mut cmd = match &toolchain {
        Toolchain::Standard { toolchain } => {
            let mut c = Command::new(find_in_path("rustup").unwrap_or_else(|| "rustup".into()));
            c.args(["run", toolchain, "cargo", "build", "-Z", "build-std=core"]);
            c
        }
        Toolchain::Debian { rustc } => {
            let mut c = Command::new(cargo_binary());
            c.arg("build");
            c.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
            c
        }
    };
    // A nested cargo inherits the outer build's environment; drop what would leak.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let leaks = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || matches!(
                key.as_str(),
                "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTUP_TOOLCHAIN"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
                    | "CARGO"
            );
        if leaks {
            cmd.env_remove(&key);
        }
    }
    if let Toolchain::Debian { rustc } = &toolchain {
        cmd.env("RUSTC", rustc);
    }
    cmd.arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--locked")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS.replace(' ', "\x1f"))
        .env("PATH", search_path())
        .current_dir(root.join("mptcp-ebpf"));
    let status = cmd
        .status()
        .map_err(|e| err(format!("cannot run cargo for the eBPF build: {e}")))?;
    if !status.success() {
        return Err(err(format!(
            "building mptcp-ebpf with the {} toolchain failed ({status})",
            toolchain.name()
        )));
    }
    let object = target_dir.join(TARGET).join("release/mptcp-ebpf");
    let size = std::fs::metadata(&object)
        .map_err(|e| err(format!("{}: {e}", object.display())))?
        .len();
    Ok(Built {
        object,
        size,
        toolchain,
    })
}

/// The cargo that runs us (build scripts get `CARGO`), else `cargo` on PATH.
fn cargo_binary() -> PathBuf {
    env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| find_in_path("cargo"))
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_sources_exist() {
        for path in sources() {
            assert!(
                path.exists(),
                "{} is gone: update sources()",
                path.display()
            );
        }
    }

    #[test]
    fn toolchain_names_say_which_route() {
        let standard = Toolchain::Standard {
            toolchain: "nightly".into(),
        };
        let debian = Toolchain::Debian {
            rustc: PathBuf::from(DEBIAN_RUSTC),
        };
        assert!(standard.name().starts_with("standard"));
        assert!(debian.name().starts_with("debian"));
        assert!(debian.name().contains(DEBIAN_RUSTC));
    }
}
