//! Helpers for the integration tests (network namespaces, veth, kernel peers),
//! also used by `cargo xtask lab` and `cargo xtask run`.
//!
//! Everything that creates kernel state returns a guard whose `Drop` removes
//! it, so a failing test leaves nothing behind. Names are unique per process
//! and call so tests can run in parallel.
use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

pub mod capture;
pub mod cli;
pub mod frames;
pub mod xsk;

use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

/// `IPPROTO_MPTCP`: a socket with this protocol is a kernel MPTCP socket.
pub const IPPROTO_MPTCP: i32 = 262;
/// Set to `1` to skip (not fail) tests that need root.
pub const SKIP_PRIVILEGED_ENV: &str = "MPTCP_SKIP_PRIVILEGED";
/// A file to which each skipped privileged test appends its name (one line):
/// `cargo xtask test` sets it and counts those tests as skipped, not passed.
pub const SKIP_REPORT_ENV: &str = "MPTCP_SKIP_REPORT";
/// The marker a skipped privileged test prints on stdout, before its name.
pub const SKIP_MARKER: &str = "SKIPPED-PRIVILEGED: ";

/// True when the caller may run a privileged test. Without root it panics,
/// unless `MPTCP_SKIP_PRIVILEGED=1`, so a privileged test never passes
/// silently: a skipped one prints `SKIPPED-PRIVILEGED: NAME` and appends
/// NAME to the file `MPTCP_SKIP_REPORT` names, which `cargo xtask test`
/// counts as skipped (and CI as a failure).
#[track_caller]
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var(SKIP_PRIVILEGED_ENV).as_deref() == Ok("1") {
        let name = skipped_test_name(std::panic::Location::caller());
        println!("{SKIP_MARKER}{name}");
        eprintln!("skipped: {name} needs root ({SKIP_PRIVILEGED_ENV}=1)");
        if let Some(path) = std::env::var_os(SKIP_REPORT_ENV) {
            // One write per line on an O_APPEND file: lines from parallel
            // tests and test binaries do not interleave.
            let line = format!("{name}\n");
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                panic!("cannot record the skip in {path:?}: {e}");
            }
        }
        return false;
    }
    panic!("this test needs root (CAP_NET_ADMIN, CAP_BPF); set {SKIP_PRIVILEGED_ENV}=1 to skip it");
}

/// `BINARY::TEST` (libtest names each test's thread after the test), or
/// the caller's file and line where the thread has no test name.
fn skipped_test_name(caller: &std::panic::Location) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            // target/debug/deps/NAME-HASH
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_default();
    match std::thread::current().name() {
        Some(test) if test != "main" => format!("{binary}::{test}"),
        _ => format!("{binary}::{}:{}", caller.file(), caller.line()),
    }
}

/// `PREFIX-PID-N`: unique across parallel tests and test binaries.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command; fails with its stderr unless it exits 0. Returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// `ip ARGS...` in the current namespace.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// The kernel's MPTCP as an echo server (`scripts/echo_server.py`: Python,
/// IPPROTO_MPTCP) on `addr:port` in `ns`, once it listens; killed on drop.
pub struct KernelEchoServer(std::process::Child);

impl KernelEchoServer {
    pub fn start(ns: &Netns, at: std::net::SocketAddr) -> KernelEchoServer {
        let mut child = ns
            .command("python3")
            .args(["-c", include_str!("../scripts/echo_server.py")])
            .arg(at.ip().to_string())
            .arg(at.port().to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut ready,
        )
        .expect("ready");
        assert_eq!(ready.trim(), "ready", "echo_server.py did not start");
        KernelEchoServer(child)
    }
}

impl Drop for KernelEchoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next line of `r` as JSON (a test script's report); panics with the
/// line when it is not.
pub fn json_line(r: &mut impl std::io::BufRead) -> serde_json::Value {
    let mut l = String::new();
    r.read_line(&mut l).expect("read");
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"))
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A named network namespace (`ip netns`), deleted on drop unless kept.
#[derive(Debug)]
pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// Creates the namespace with its loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            keep: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A guard for a namespace that already exists (e.g. from `xtask lab up`).
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            keep: true,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// The kernel's MPTCP limits: `n` subflows and `n` accepted ADD_ADDRs.
    pub fn mptcp_limits(&self, n: usize) -> Result<String> {
        let n = n.to_string();
        self.ip(&[
            "mptcp",
            "limits",
            "set",
            "subflow",
            &n,
            "add_addr_accepted",
            &n,
        ])
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program ARGS...` inside the namespace; returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Runs `f` on a thread that lives in this namespace: sockets it creates
    /// belong to the namespace and stay there when used from other threads.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("open netns {}", self.name))?;
        thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this thread only; the fd is a valid netns file.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {}: {}", self.name, std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| bail!("thread in netns {} panicked", self.name))
        })
    }

    /// One kernel SNMP counter in `nstat` naming (e.g. `MPTcpExtMPJoinAckRx`,
    /// `TcpExtTCPSackRecovery`), read from `/proc/net/{netstat,snmp}`.
    /// A counter this kernel does not have (or a misspelt name) is an
    /// error, never 0: a `== 0` check on it would hold whatever happened.
    pub fn nstat(&self, counter: &str) -> Result<u64> {
        let text = self.exec("cat", &["/proc/net/netstat", "/proc/net/snmp"])?;
        nstat_value(&text, counter)
    }

    /// Leaves the namespace in place when the guard drops.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = ip(&["netns", "del", &self.name]) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// [`parse_nstat`], with a missing counter an error.
fn nstat_value(text: &str, counter: &str) -> Result<u64> {
    parse_nstat(text, counter)
        .with_context(|| format!("no counter {counter} in /proc/net/netstat or /proc/net/snmp"))
}

/// Finds `counter` (`PrefixName`) in `/proc/net/netstat`-style text, where
/// each prefix has a line of names followed by a line of values.
pub fn parse_nstat(text: &str, counter: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    lines.windows(2).find_map(|pair| {
        let mut names = pair[0].split_whitespace();
        let mut values = pair[1].split_whitespace();
        let prefix = names.next()?.strip_suffix(':')?;
        if values.next()? != format!("{prefix}:") {
            return None;
        }
        let field = counter.strip_prefix(prefix)?;
        names
            .zip(values)
            .find(|(name, _)| *name == field)
            .and_then(|(_, v)| v.parse().ok())
    })
}

/// One path of the lab: a veth pair between the two namespaces.
#[derive(Clone, Debug)]
pub struct LabPath {
    pub client_if: String,
    pub server_if: String,
    pub client_v4: Ipv4Addr,
    pub server_v4: Ipv4Addr,
    pub client_v6: Ipv6Addr,
    pub server_v6: Ipv6Addr,
}

#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Namespaces are `PREFIX-client` and `PREFIX-server`.
    pub prefix: String,
    pub paths: usize,
    /// Optional root qdisc per path, as `tc qdisc add ... root` takes it
    /// (e.g. `netem delay 10ms rate 100mbit`, `tbf rate 100mbit burst 32kbit
    /// latency 50ms`), applied on both ends. Kernels without sch_netem
    /// (CONFIG_NET_SCH_NETEM unset) can still shape with tbf or htb.
    pub qdisc: Vec<Option<String>>,
    /// Client MPTCP endpoints on paths 2.. (`subflow`), so a connection on
    /// path 1 opens one subflow per extra path.
    pub subflow_endpoints: bool,
    /// Per path: `Some(SPEC)` puts `mptcp-user emulate` in namespace
    /// `PREFIX-emu` between `cli<i>` and `srv<i>`, with `sim --path`'s
    /// syntax (`delay` is the round trip) or `UP_SPEC/DOWN_SPEC`; `None` (or
    /// no entry) keeps a direct veth. Names and addresses do not change.
    pub emulate: Vec<Option<String>>,
    /// The `mptcp-user` binary that runs the emulator; `None`: the one the
    /// tests build ([`cli::binary`]).
    pub emulator_binary: Option<std::path::PathBuf>,
    /// More arguments for `mptcp-user emulate` (e.g. `--clock-from-syn`, `--seed 7`).
    pub emulator_args: Vec<String>,
    /// Receive and transmit queues of each direct veth (`numrxqueues N
    /// numtxqueues N`), for several workers; 0 keeps the kernel's default.
    pub queues: usize,
}

impl LabConfig {
    /// A lab with unique names (for tests).
    pub fn unique(paths: usize) -> LabConfig {
        LabConfig {
            prefix: unique_name("mplab"),
            paths,
            qdisc: Vec::new(),
            subflow_endpoints: true,
            emulate: Vec::new(),
            emulator_binary: None,
            emulator_args: Vec::new(),
            queues: 0,
        }
    }

    /// A lab with unique names whose path i goes through the emulator with `specs[i]`.
    pub fn emulated(specs: &[&str]) -> LabConfig {
        LabConfig {
            emulate: specs.iter().map(|s| Some(s.to_string())).collect(),
            ..LabConfig::unique(specs.len())
        }
    }

    fn emulated_path(&self, i: usize) -> Option<&str> {
        self.emulate.get(i).and_then(|s| s.as_deref())
    }
}

/// A running `mptcp-user emulate` in the lab's emulator namespace; stopped
/// (SIGTERM, wait) on drop unless kept. Its output goes to `log`.
#[derive(Debug)]
pub struct EmulatorProcess {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
    keep: bool,
}

impl EmulatorProcess {
    /// What the emulator printed so far (its path lines, then JSON counters once stopped).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it and returns its last JSON line of counters.
    pub fn stop(&mut self) -> Result<String> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        let out = self.output();
        out.lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .map(str::to_string)
            .with_context(|| format!("the emulator printed no counters: {out}"))
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        if !self.keep {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Client and server namespaces joined by N veth paths with IPv4 and IPv6
/// addresses (path i: 10.100.i.1|2/24, fd00:100:i::1|2/64). Removed on drop.
#[derive(Debug)]
pub struct Lab {
    /// Stopped first when the lab drops, before its interfaces go.
    pub emulator: Option<EmulatorProcess>,
    pub paths: Vec<LabPath>,
    // Declared after `paths` but dropping either namespace removes the veths.
    pub client: Netns,
    pub server: Netns,
    /// `PREFIX-emu`, when some path is emulated.
    pub emu: Option<Netns>,
}

impl Lab {
    pub fn client_ns_name(prefix: &str) -> String {
        format!("{prefix}-client")
    }

    pub fn server_ns_name(prefix: &str) -> String {
        format!("{prefix}-server")
    }

    pub fn emu_ns_name(prefix: &str) -> String {
        format!("{prefix}-emu")
    }

    pub fn up(config: &LabConfig) -> Result<Lab> {
        if config.paths == 0 || config.paths > 200 {
            bail!("a lab needs 1..=200 paths, not {}", config.paths);
        }
        if config.emulate.len() > config.paths {
            bail!(
                "{} emulated path specs for {} paths",
                config.emulate.len(),
                config.paths
            );
        }
        let client = Netns::create(&Lab::client_ns_name(&config.prefix))?;
        let server = Netns::create(&Lab::server_ns_name(&config.prefix))?;
        let emulated = (0..config.paths).any(|i| config.emulated_path(i).is_some());
        let emu = if emulated {
            let emu = Netns::create(&Lab::emu_ns_name(&config.prefix))?;
            // The emulator is a bridge: no addresses, no IPv6 chatter of its own.
            emu.exec(
                "sysctl",
                &[
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
            Some(emu)
        } else {
            None
        };
        let mut paths = Vec::new();
        for i in 0..config.paths {
            let path = LabPath {
                client_if: format!("cli{i}"),
                server_if: format!("srv{i}"),
                client_v4: Ipv4Addr::new(10, 100, i as u8, 1),
                server_v4: Ipv4Addr::new(10, 100, i as u8, 2),
                client_v6: Ipv6Addr::new(0xfd00, 0x100, i as u16, 0, 0, 0, 0, 1),
                server_v6: Ipv6Addr::new(0xfd00, 0x100, i as u16, 0, 0, 0, 0, 2),
            };
            if let (Some(emu), Some(_)) = (&emu, config.emulated_path(i)) {
                // cli<i> <-> c<i> | emulator | s<i> <-> srv<i>
                for (ns, end, inner) in [
                    (&client, &path.client_if, format!("c{i}")),
                    (&server, &path.server_if, format!("s{i}")),
                ] {
                    emu.ip(&[
                        "link",
                        "add",
                        &inner,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        end,
                        "netns",
                        ns.name(),
                    ])?;
                    emu.ip(&["link", "set", &inner, "up"])?;
                    // Frames no larger than the MTU and with full checksums: the
                    // emulator forwards frames, not the kernel's GSO/GRO super-packets.
                    for (ns, ifname) in [(emu, &inner), (ns, end)] {
                        ns.exec(
                            "ethtool",
                            &["-K", ifname, "tx", "off", "gso", "off", "gro", "off"],
                        )?;
                    }
                }
            } else {
                // Created inside the client namespace: no name clash between parallel labs.
                let q = config.queues.to_string();
                let queues: &[&str] = if config.queues > 0 {
                    &["numrxqueues", &q, "numtxqueues", &q]
                } else {
                    &[]
                };
                let mut args = vec!["link", "add", &path.client_if];
                args.extend(queues);
                args.extend(["type", "veth", "peer", "name", &path.server_if]);
                args.extend(queues);
                args.extend(["netns", server.name()]);
                client.ip(&args)?;
            }
            for (ns, ifname, v4, v6) in [
                (&client, &path.client_if, path.client_v4, path.client_v6),
                (&server, &path.server_if, path.server_v4, path.server_v6),
            ] {
                ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
                ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"])?;
                ns.ip(&["link", "set", ifname, "up"])?;
                if let Some(Some(qdisc)) = config.qdisc.get(i) {
                    let mut args = vec!["qdisc", "add", "dev", ifname, "root"];
                    args.extend(qdisc.split_whitespace());
                    ns.exec("tc", &args).with_context(|| {
                        format!("path {i}: qdisc `{qdisc}` (is its kernel module built?)")
                    })?;
                }
            }
            if emu.is_some() && config.emulated_path(i).is_some() {
                // Pinned neighbours: a lost ARP or ND packet on a lossy profile
                // would stall a path for a second, which no profile asked for.
                let client_mac = mac_of(&client, &path.client_if)?;
                let server_mac = mac_of(&server, &path.server_if)?;
                for (ns, ifname, peer_mac, peers) in [
                    (
                        &client,
                        &path.client_if,
                        &server_mac,
                        [path.server_v4.to_string(), path.server_v6.to_string()],
                    ),
                    (
                        &server,
                        &path.server_if,
                        &client_mac,
                        [path.client_v4.to_string(), path.client_v6.to_string()],
                    ),
                ] {
                    for peer in &peers {
                        ns.ip(&[
                            "neigh",
                            "replace",
                            peer,
                            "lladdr",
                            peer_mac,
                            "dev",
                            ifname,
                            "nud",
                            "permanent",
                        ])?;
                    }
                }
            }
            paths.push(path);
        }
        for ns in [&client, &server] {
            ns.mptcp_limits(config.paths.min(8))?;
        }
        if config.subflow_endpoints {
            for p in paths.iter().skip(1) {
                for addr in [p.client_v4.to_string(), p.client_v6.to_string()] {
                    client.ip(&[
                        "mptcp",
                        "endpoint",
                        "add",
                        &addr,
                        "dev",
                        &p.client_if,
                        "subflow",
                    ])?;
                }
            }
        }
        let emulator = match &emu {
            Some(emu) => Some(start_emulator(config, emu)?),
            None => None,
        };
        Ok(Lab {
            emulator,
            paths,
            client,
            server,
            emu,
        })
    }

    /// Leaves the namespaces in place (for `xtask lab up`).
    pub fn keep(mut self) {
        self.client.keep();
        self.server.keep();
        if let Some(emu) = &mut self.emu {
            emu.keep();
        }
        if let Some(e) = &mut self.emulator {
            e.keep = true;
        }
    }

    /// Removes a kept lab by prefix; missing namespaces are not an error.
    /// The processes in its emulator namespace (the emulator) are stopped first.
    pub fn down(prefix: &str) -> Result<()> {
        let emu = Lab::emu_ns_name(prefix);
        if std::path::Path::new("/run/netns").join(&emu).exists() {
            for pid in ip(&["netns", "pids", &emu])?.split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: a process of this lab's emulator namespace.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
        for name in [
            Lab::client_ns_name(prefix),
            Lab::server_ns_name(prefix),
            emu,
        ] {
            if std::path::Path::new("/run/netns").join(&name).exists() {
                ip(&["netns", "del", &name])?;
            }
        }
        Ok(())
    }

    /// A lab of `paths` paths whose client has no `subflow` endpoints
    /// (the engine or the test decides the subflows).
    pub fn up_without_endpoints(paths: usize) -> Result<Lab> {
        Lab::up(&LabConfig {
            subflow_endpoints: false,
            ..LabConfig::unique(paths)
        })
    }

    /// The kernel server announces path `i`'s IPv4 address (a `signal`
    /// endpoint).
    pub fn server_signals_v4(&self, i: usize) -> Result<()> {
        let p = &self.paths[i];
        self.server
            .ip(&[
                "mptcp",
                "endpoint",
                "add",
                &p.server_v4.to_string(),
                "dev",
                &p.server_if,
                "signal",
            ])
            .map(drop)
    }

    /// Every server address (IPv4 and IPv6, all paths).
    pub fn server_addresses(&self) -> Vec<IpAddr> {
        self.paths
            .iter()
            .flat_map(|p| [IpAddr::V4(p.server_v4), IpAddr::V6(p.server_v6)])
            .collect()
    }
}

/// The MAC address of `ifname` in `ns`.
fn mac_of(ns: &Netns, ifname: &str) -> Result<String> {
    let text = ns.ip(&["link", "show", ifname])?;
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no MAC address for {ifname} in: {text}"))
}

/// Starts `mptcp-user emulate` for the lab's emulated paths and waits until it is forwarding.
fn start_emulator(config: &LabConfig, emu: &Netns) -> Result<EmulatorProcess> {
    let binary = match &config.emulator_binary {
        Some(b) => b.clone(),
        None => cli::binary(),
    };
    let log = std::env::temp_dir().join(format!("{}.log", emu.name()));
    let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = emu.command(&binary.to_string_lossy());
    cmd.arg("emulate");
    for i in 0..config.paths {
        if let Some(spec) = config.emulated_path(i) {
            cmd.args(["--link", &format!("c{i},s{i}"), "--path", spec]);
        }
    }
    cmd.args(&config.emulator_args);
    // MPTCP_EMULATE_ARGS: more emulator flags for every lab (A/B measurements,
    // e.g. `--coalesce-us 0`).
    if let Ok(extra) = std::env::var("MPTCP_EMULATE_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // Its own process group: a Ctrl-C at the terminal of `xtask lab up` leaves it running.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().context("start mptcp-user emulate")?;
    let mut proc = EmulatorProcess {
        child,
        log,
        keep: false,
    };
    let ready = wait_until(Duration::from_secs(10), || {
        proc.output().contains("emulate: ready") || !matches!(proc.child.try_wait(), Ok(None))
    });
    if !ready || !proc.output().contains("emulate: ready") {
        bail!("the emulator did not start: {}", proc.output().trim());
    }
    Ok(proc)
}

fn mptcp_socket(addr: &SocketAddr) -> Result<Socket> {
    Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::from(IPPROTO_MPTCP)),
    )
    .context("socket(IPPROTO_MPTCP): is MPTCP enabled (net.mptcp.enabled)?")
}

/// A kernel MPTCP listener (call inside [`Netns::enter`]).
pub fn mptcp_listen(addr: SocketAddr) -> Result<TcpListener> {
    let s = mptcp_socket(&addr)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(16)?;
    Ok(s.into())
}

/// Starts a kernel MPTCP connection without waiting for it (call inside
/// [`Netns::enter`]); the SYN is on its way when this returns.
pub fn mptcp_connect_start(addr: SocketAddr) -> Result<Socket> {
    let s = mptcp_socket(&addr)?;
    s.set_nonblocking(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => Ok(s),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(s),
        Err(e) => Err(e).with_context(|| format!("MPTCP connect to {addr}")),
    }
}

/// A kernel MPTCP connection (call inside [`Netns::enter`]).
pub fn mptcp_connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let s = mptcp_socket(&addr)?;
    s.connect_timeout(&addr.into(), timeout)
        .with_context(|| format!("MPTCP connect to {addr}"))?;
    let stream: TcpStream = s.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Serves one connection on `listener` on a background thread: reads until
/// EOF and answers with the byte count as 8 bytes big-endian.
pub fn serve_count_once(listener: TcpListener) -> thread::JoinHandle<Result<u64>> {
    thread::spawn(move || {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        conn.write_all(&total.to_be_bytes())?;
        Ok(total)
    })
}

/// Writes `len` bytes of filler to `stream`.
pub fn send_bytes(stream: &mut TcpStream, len: usize) -> Result<()> {
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n])?;
        left -= n;
    }
    Ok(())
}

/// Sends `len` bytes on `stream`, half-closes, and returns the peer's count.
pub fn send_and_count(mut stream: TcpStream, len: usize) -> Result<u64> {
    send_bytes(&mut stream, len)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = [0u8; 8];
    stream.read_exact(&mut answer)?;
    Ok(u64::from_be_bytes(answer))
}

/// One kernel MPTCP transfer of `bytes` from the lab's client to
/// `server:port` (a listener is opened in the server namespace for it).
/// With `await_join`, most of the data flows only once the server accepted
/// an MP_JOIN (the client opens extra subflows after its first data is
/// acknowledged). Returns the byte count the server reported.
pub fn lab_transfer(
    lab: &Lab,
    server: IpAddr,
    port: u16,
    bytes: usize,
    await_join: bool,
) -> Result<u64> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let addr = SocketAddr::new(server, port);
    let listener = lab.server.enter(|| mptcp_listen(addr))??;
    let served = serve_count_once(listener);
    let joins_before = lab.server.nstat("MPTcpExtMPJoinAckRx")?;
    let mut stream = lab.client.enter(|| mptcp_connect(addr, TIMEOUT))??;
    let first = bytes.min(1000);
    send_bytes(&mut stream, first)?;
    if await_join
        && !wait_until(TIMEOUT, || {
            lab.server
                .nstat("MPTcpExtMPJoinAckRx")
                .is_ok_and(|n| n > joins_before)
        })
    {
        bail!("no MP_JOIN reached the server within {TIMEOUT:?}");
    }
    let echoed = send_and_count(stream, bytes - first)?;
    let received = served
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    if echoed != received {
        bail!("server counted {received} bytes but answered {echoed}");
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_nstat_finds_counters_by_prefix() {
        let text = "TcpExt: SyncookiesSent EmbryonicRsts\nTcpExt: 3 4\n\
                    MPTcpExt: MPCapableSYNRX MPJoinAckRx\nMPTcpExt: 7 2\n";
        assert_eq!(parse_nstat(text, "MPTcpExtMPJoinAckRx"), Some(2));
        assert_eq!(parse_nstat(text, "MPTcpExtMPCapableSYNRX"), Some(7));
        assert_eq!(parse_nstat(text, "TcpExtEmbryonicRsts"), Some(4));
        assert_eq!(parse_nstat(text, "MPTcpExtNope"), None);
        assert_eq!(parse_nstat("", "MPTcpExtMPJoinAckRx"), None);
    }

    #[test]
    fn a_missing_nstat_counter_is_an_error_not_zero() {
        let text = "MPTcpExt: MPCapableSYNRX DataCsumErr\nMPTcpExt: 0 0\n";
        assert_eq!(nstat_value(text, "MPTcpExtDataCsumErr").unwrap(), 0);
        let err = nstat_value(text, "MPTcpExtDataCsumErrs").unwrap_err();
        assert!(err.to_string().contains("MPTcpExtDataCsumErrs"), "{err}");
        assert!(nstat_value("", "MPTcpExtDataCsumErr").is_err());
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("x"), unique_name("x"));
        assert!(unique_name("lab").starts_with(&format!("lab-{}-", std::process::id())));
    }
}
