//! Project tasks. Every command runs `setup` first, so a fresh machine needs
//! nothing but `cargo xtask run` or `cargo xtask test`.
mod bench;
mod datapath_bench;
mod datapath_demo;
mod demo;
mod experiment;
mod scale_bench;
mod setup;
mod workers_bench;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mptcp_tests::{Lab, LabConfig};

#[derive(Parser)]
#[command(about = "Tasks for the userspace MPTCP datapath")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing prerequisites (apt packages, bpf-linker, test tools).
    Setup,
    /// Build the XDP object; print its path, size and toolchain.
    BuildEbpf,
    /// Build (release) and run `mptcp-user ARGS` as root; without ARGS, a demo in a lab.
    Run {
        /// Build mptcp-user in debug mode instead (slower datapath, faster build).
        #[arg(long)]
        debug: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Client and server namespaces joined by N veth paths.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Everything: setup, eBPF build, `cargo test --workspace` (privileged tests included).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The seed blog's experiment five with real peers (engine sending
    /// round-robin to a kernel client over two emulated 4 Mbit/s paths, one
    /// bad from 5 s to 15 s), captured and traced into DIR.
    ExperimentFive {
        #[arg(long, default_value = "docs/experiment-five")]
        out: PathBuf,
        #[arg(long, default_value_t = 16 << 20)]
        bytes: u64,
    },
    /// Engine and kernel side by side on the two-path lab: the kernel's
    /// like-for-like baselines (offloads off, no XDP; XDP pass-through), the
    /// raw AF_XDP ceiling, and the engine (engine to engine, kernel client to
    /// engine, engine client to kernel server): Gbit/s, ratios, efficiency,
    /// CPU seconds per Gbit; medians of alternated runs.
    Bench {
        /// Seconds per run.
        #[arg(long = "time", visible_alias = "seconds", default_value_t = 5)]
        seconds: u64,
        /// Runs of every configuration, alternated; each figure is their median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Instead: serving thousands of connections, engine and kernel MPTCP
        /// servers side by side (concurrent echoes of 100, 1000, 10,000
        /// connections, connections/s, memory and CPU per idle connection,
        /// frames dropped at the rings).
        #[arg(long)]
        scale: bool,
        /// With --scale: the largest connection count to run.
        #[arg(long, default_value_t = 10_000, value_name = "N")]
        scale_max: usize,
        /// Instead: the engine's server with these worker counts side by
        /// side (e.g. 1,2) on multi-queue veths, kernel and engine clients,
        /// with the server's CPU ns per packet and the hand-off share.
        /// With --scale, one count: veths with that many queues for both
        /// servers, and `serve --workers N`.
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        workers: Vec<usize>,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// Create `PREFIX-client` and `PREFIX-server` (left in place).
    Up {
        #[arg(long, default_value_t = 2)]
        paths: usize,
        /// Root qdisc for one path, in path order (repeat per path), as
        /// `tc qdisc add dev IF root` takes it: --qdisc "netem delay 10ms"
        /// --qdisc "tbf rate 100mbit burst 32kbit latency 50ms".
        #[arg(long)]
        qdisc: Vec<String>,
        /// Emulate path i (repeat per path, in order): `mptcp-user emulate` in
        /// namespace PREFIX-emu forwards between cli<i> and srv<i> with the
        /// `sim --path` SPEC (`delay` is the round trip), or UP_SPEC/DOWN_SPEC:
        /// --path rate=10mbit,delay=40ms,loss=1% --path 'rate=20mbit/rate=5mbit'.
        /// Time 0 of `;at=` is `lab up`. Counters: PREFIX-emu.log in the temp dir.
        #[arg(long = "path", value_name = "SPEC")]
        path: Vec<String>,
        /// Time 0 of `;at=` is the first TCP SYN through the emulator, not `lab up`.
        #[arg(long)]
        clock_from_syn: bool,
        #[arg(long, default_value = "mptcp-lab")]
        prefix: String,
    },
    /// Remove the lab's namespaces (and so its veths).
    Down {
        #[arg(long, default_value = "mptcp-lab")]
        prefix: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // Removing a lab needs nothing installed; every other task may.
    if !matches!(
        cli.command,
        Task::Lab {
            action: LabAction::Down { .. }
        }
    ) {
        setup::setup()?;
    }
    match cli.command {
        Task::Setup => Ok(()),
        Task::BuildEbpf => build_ebpf().map(|_| ()),
        Task::Run { debug, args } => {
            let binary = build_user(!debug)?;
            if args.is_empty() {
                demo::run(&binary)
            } else {
                run_privileged(&binary, &args)
            }
        }
        Task::Lab { action } => lab(action),
        Task::Test { args } => test(&args),
        Task::ExperimentFive { out, bytes } => {
            let binary = build_user(false)?;
            experiment::run(&binary, &out, bytes)
        }
        Task::Bench {
            seconds,
            runs,
            scale,
            scale_max,
            workers,
        } => {
            let binary = build_user(true)?;
            if scale {
                let workers = match workers[..] {
                    [] => 1,
                    [n] if n >= 1 => n,
                    _ => bail!("--scale --workers takes one count (e.g. --workers 2)"),
                };
                scale_bench::run(&binary, scale_max, workers)
            } else if !workers.is_empty() {
                workers_bench::run(&binary, seconds, runs.max(1), &workers)
            } else {
                bench::run(&binary, seconds, runs.max(1))
            }
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (network namespaces, XDP): run it as root, e.g. `sudo -E cargo xtask ...`");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| mptcp_ebpf_build::workspace_root().join("target"))
}

fn build_ebpf() -> Result<mptcp_ebpf_build::Built> {
    let started = Instant::now();
    let built = mptcp_ebpf_build::build()?;
    println!(
        "build-ebpf: {} ({} bytes) built with the {} toolchain in {:.1} s",
        built.object.display(),
        built.size,
        built.toolchain.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(built)
}

fn build_user(release: bool) -> Result<PathBuf> {
    build_ebpf()?;
    let mut cmd = cargo();
    cmd.args(["build", "-p", "mptcp-user", "--bin", "mptcp-user"]);
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().context("cargo build")?;
    if !st.success() {
        bail!("building mptcp-user failed");
    }
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("mptcp-user"))
}

/// Runs a command, failing with its output unless it exits 0.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn run_privileged(binary: &PathBuf, args: &[String]) -> Result<()> {
    let mut cmd = if is_root() {
        Command::new(binary)
    } else {
        let mut c = Command::new("sudo");
        c.arg(binary);
        c
    };
    let st = cmd.args(args).status().context("running mptcp-user")?;
    if !st.success() {
        bail!("mptcp-user exited with {st}");
    }
    Ok(())
}

fn lab(action: LabAction) -> Result<()> {
    require_root("cargo xtask lab")?;
    match action {
        LabAction::Up {
            paths,
            qdisc,
            path,
            clock_from_syn,
            prefix,
        } => {
            let emulator_binary = if path.is_empty() {
                None
            } else {
                Some(build_user(false)?)
            };
            let config = LabConfig {
                prefix: prefix.clone(),
                paths: paths.max(path.len()),
                qdisc: qdisc.into_iter().map(Some).collect(),
                subflow_endpoints: true,
                emulate: path.into_iter().map(Some).collect(),
                emulator_binary,
                emulator_args: if clock_from_syn {
                    vec!["--clock-from-syn".into()]
                } else {
                    Vec::new()
                },
                queues: 0,
            };
            let lab = Lab::up(&config)?;
            println!(
                "lab up: namespaces {} and {}",
                lab.client.name(),
                lab.server.name()
            );
            for (i, p) in lab.paths.iter().enumerate() {
                println!(
                    "  path {i}: {} {} {} <-> {} {} {}",
                    p.client_if, p.client_v4, p.client_v6, p.server_if, p.server_v4, p.server_v6
                );
            }
            if let (Some(emu), Some(e)) = (&lab.emu, &lab.emulator) {
                println!(
                    "  emulator: pid {} in namespace {}, output in {}",
                    e.child.id(),
                    emu.name(),
                    e.log.display()
                );
                for line in e.output().lines().filter(|l| l.contains(" path ")) {
                    println!("    {line}");
                }
            }
            println!(
                "  e.g. ip netns exec {} mptcpize run iperf3 -s",
                lab.server.name()
            );
            lab.keep();
            Ok(())
        }
        LabAction::Down { prefix } => {
            Lab::down(&prefix)?;
            println!("lab down: {prefix}");
            Ok(())
        }
    }
}

fn test(extra: &[String]) -> Result<()> {
    build_ebpf()?;
    if !is_root() && std::env::var("MPTCP_SKIP_PRIVILEGED").as_deref() != Ok("1") {
        bail!(
            "the test suite includes privileged tests: run as root, or set MPTCP_SKIP_PRIVILEGED=1"
        );
    }
    // Each privileged test that skips appends its name here (see
    // mptcp_tests::require_root); libtest alone would count it as passed.
    let skip_report = target_dir().join(format!("xtask-skipped-{}.txt", std::process::id()));
    std::fs::create_dir_all(target_dir()).context("target dir")?;
    std::fs::write(&skip_report, "").context("skip report")?;
    let started = Instant::now();
    let mut child = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .env(mptcp_tests::SKIP_REPORT_ENV, &skip_report)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line?;
            println!("{line}");
            if let Some(summary) = line.strip_prefix("test result: ") {
                passed += summary_count(summary, "passed");
                failed += summary_count(summary, "failed");
                ignored += summary_count(summary, "ignored");
            }
        }
    }
    let status = child.wait()?;
    println!(
        "xtask test: cargo test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let report = std::fs::read_to_string(&skip_report).context("skip report")?;
    let _ = std::fs::remove_file(&skip_report);
    let skipped_privileged = skipped_names(&report);
    for name in &skipped_privileged {
        println!("skipped (needs root): {name}");
    }
    let (passed, skipped) = count_skips(passed, ignored, skipped_privileged.len() as u64);
    // The plain closing line CI reads: 'N passed, N failed, N skipped'.
    println!("tests: {passed} passed, {failed} failed, {skipped} skipped");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    // CI runs as root: a privileged test that did not run is a failure there.
    if std::env::var("CI").as_deref() == Ok("true") && !skipped_privileged.is_empty() {
        bail!(
            "CI: {} privileged test(s) skipped (CI runs as root; unset MPTCP_SKIP_PRIVILEGED)",
            skipped_privileged.len()
        );
    }
    Ok(())
}

/// The distinct test names in a skip report (one per line), sorted.
fn skipped_names(report: &str) -> Vec<String> {
    let names: std::collections::BTreeSet<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    names.into_iter().map(String::from).collect()
}

/// (passed, skipped): libtest counted each privileged skip as passed.
fn count_skips(passed: u64, ignored: u64, skipped_privileged: u64) -> (u64, u64) {
    (
        passed.saturating_sub(skipped_privileged),
        ignored + skipped_privileged,
    )
}

/// `ok. 11 passed; 0 failed; 1 ignored; ...` -> the number before `word`.
fn summary_count(summary: &str, word: &str) -> u64 {
    summary
        .split([';', '.'])
        .find_map(|part| part.trim().strip_suffix(word)?.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{count_skips, skipped_names, summary_count};

    #[test]
    fn counts_from_cargo_test_summaries() {
        let s = "ok. 11 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.45s";
        assert_eq!(summary_count(s, "passed"), 11);
        assert_eq!(summary_count(s, "failed"), 0);
        assert_eq!(summary_count(s, "ignored"), 2);
        let f = "FAILED. 10 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(summary_count(f, "passed"), 10);
        assert_eq!(summary_count(f, "failed"), 1);
        assert_eq!(summary_count("garbage", "passed"), 0);
    }

    #[test]
    fn privileged_skips_move_from_passed_to_skipped() {
        let names = skipped_names("tests::b\ntests::a\n\ntests::b\n");
        assert_eq!(names, ["tests::a", "tests::b"]);
        assert_eq!(count_skips(40, 1, 2), (38, 3));
        assert_eq!(count_skips(0, 0, 0), (0, 0));
    }
}
