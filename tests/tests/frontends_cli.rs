//! The front ends people deploy, against stock clients in the lab's
//! namespaces: `serve --mode iperf3` measured by a stock `iperf3 -c` under
//! `mptcpize run`; `serve --mode socks5` used by curl; `serve --mode
//! convert` used by a kernel MPTCP client sending RFC 8803 messages in its
//! SYN; and the client sides (`connect --iperf3`, `connect --via-convert`).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use mptcp_tests::cli::{mptcp_user, on_both_paths, output_text, xdp_attached, Server};
use mptcp_tests::{require_root, unique_name, wait_until, Lab, LabConfig};

/// `serve ARGS` in the server namespace with its stderr kept in a file.
struct Logged {
    _server: Server,
    log: PathBuf,
}

impl Logged {
    fn start(lab: &Lab, args: &[&str]) -> Logged {
        let log = std::env::temp_dir().join(unique_name("serve-log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = mptcp_user(lab.server.name());
        cmd.arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(file);
        let server = Server(cmd.spawn().expect("spawn serve"));
        let ifs: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--iface")
            .map(|w| w[1])
            .collect();
        assert!(
            wait_until(Duration::from_secs(15), || ifs
                .iter()
                .all(|i| xdp_attached(lab, i))),
            "serve never attached XDP"
        );
        Logged {
            _server: server,
            log,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `needle` and returns it.
    fn line(&self, needle: &str) -> String {
        let mut found = None;
        wait_until(Duration::from_secs(10), || {
            found = self
                .text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no log line with {needle:?}:\n{}", self.text()))
    }
}

impl Logged {
    /// This server's line of `stats --json` once `ready` holds for it.
    fn stats(&self, lab: &Lab, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let pid = u64::from(self._server.0.id());
        let mut found = serde_json::Value::Null;
        let ok = wait_until(Duration::from_secs(5), || {
            let out = mptcp_user(lab.server.name())
                .args(["stats", "--json"])
                .output()
                .expect("stats");
            String::from_utf8_lossy(&out.stdout).lines().any(|l| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                    return false;
                };
                let ok = v["pid"].as_u64() == Some(pid) && ready(&v);
                if ok {
                    found = v;
                }
                ok
            })
        });
        assert!(ok, "no stats line for the server:\n{}", self.text());
        found
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The number after `word` in `line` ("received 123 bytes" -> 123).
fn number_after(line: &str, word: &str) -> u64 {
    let rest = line
        .split(word)
        .nth(1)
        .unwrap_or_else(|| panic!("{word:?} not in {line:?}"));
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
}

fn two_path_lab() -> Lab {
    Lab::up(&LabConfig::unique(2)).expect("lab")
}

/// A stock iperf3 client under `mptcpize run` in the client namespace.
fn iperf3_client(lab: &Lab, server: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.client.name(),
            "mptcpize",
            "run",
            "iperf3",
        ])
        .args([
            "-c",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .args(["--json", "--get-server-output"])
        .args(args)
        .output()
        .expect("iperf3");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}\n{}", output_text(&out)));
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(report.get("error").is_none(), "{report}");
    report
}

fn serve_iperf3(lab: &Lab, port: u16) -> (Logged, SocketAddr) {
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), port);
    let l = listen.to_string();
    let server = Logged::start(lab, &on_both_paths(&l, &["--mode", "iperf3"]));
    (server, listen)
}

/// Per-subflow figures of the server's results, as the client shows them.
fn server_subflows(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["server_output_json"]["end"]["subflows"]
        .as_array()
        .unwrap_or_else(|| panic!("no server subflows in {report}"))
        .clone()
}

#[test]
fn iperf3_client_forward_byte_bounded_matches_the_engine() {
    if !require_root() {
        return;
    }
    let lab = two_path_lab();
    let (server, listen) = serve_iperf3(&lab, 5401);
    let bytes: u64 = 64 << 20;
    let report = iperf3_client(&lab, listen, &["-n", &bytes.to_string()]);
    // iperf3 sends whole 128 KiB blocks until it has sent at least -n; a
    // fast path may write one block more before it looks (iperf3 3.12).
    let least = bytes.div_ceil(128 << 10) * (128 << 10);
    let end = &report["end"];
    let sent = end["sum_sent"]["bytes"].as_u64().expect("sum_sent");
    assert!(
        sent == least || sent == least + (128 << 10),
        "{sent} bytes sent for -n {bytes}: {end}"
    );
    assert_eq!(end["sum_received"]["bytes"], sent, "{end}");
    let line = server.line("iperf3 test 1 done");
    assert_eq!(number_after(&line, "received"), sent, "{line}");
    // The engine's subflows carried at least the data and the cookie (a
    // segment the client reinjected on the other path counts twice).
    assert!(
        number_after(&line, "subflows received") >= sent + 37,
        "{line}"
    );
    let subflows = server_subflows(&report);
    let with_data = subflows
        .iter()
        .filter(|s| s["bytes_received"].as_u64() > Some(1 << 20))
        .count();
    assert!(with_data >= 2, "both paths carry data: {subflows:?}");
    let sum: u64 = subflows
        .iter()
        .map(|s| s["bytes_received"].as_u64().unwrap())
        .sum();
    assert!(sum >= sent + 37, "{subflows:?}");
    // The text report too, from a plain TCP client (served by fallback).
    let out = Command::new("ip")
        .args(["netns", "exec", lab.client.name(), "iperf3"])
        .args([
            "-c",
            &listen.ip().to_string(),
            "-p",
            &listen.port().to_string(),
        ])
        .args(["-n", "8M"])
        .output()
        .expect("iperf3");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("receiver") && text.contains("iperf Done."),
        "{text}"
    );
    server.line("iperf3 test 2 done");
}

#[test]
fn iperf3_client_reverse_and_parallel() {
    if !require_root() {
        return;
    }
    let lab = two_path_lab();
    let (server, listen) = serve_iperf3(&lab, 5402);
    // -R, byte-bounded: the engine sends exactly the budget.
    let bytes: u64 = 32 << 20;
    let report = iperf3_client(&lab, listen, &["-R", "-n", &bytes.to_string()]);
    assert_eq!(report["start"]["test_start"]["reverse"], 1);
    let end = &report["end"];
    assert_eq!(end["sum_sent"]["bytes"], bytes, "{end}");
    assert_eq!(end["sum_received"]["bytes"], bytes, "{end}");
    let line = server.line("iperf3 test 1 done");
    assert_eq!(number_after(&line, "sent"), bytes, "{line}");
    // -P 4, by time.
    let report = iperf3_client(&lab, listen, &["-P", "4", "-t", "2"]);
    let streams = report["end"]["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 4, "{report}");
    let line = server.line("iperf3 test 2 done");
    let received = number_after(&line, "received");
    assert_eq!(report["end"]["sum_received"]["bytes"], received, "{line}");
    assert!(received > 1 << 20, "{line}");
    for s in streams {
        assert!(s["receiver"]["bytes"].as_u64() > Some(0), "{s}");
    }
    // -R -P 4 by time: each stream sends.
    let report = iperf3_client(&lab, listen, &["-R", "-P", "4", "-t", "2"]);
    let line = server.line("iperf3 test 3 done");
    assert_eq!(
        report["end"]["sum_sent"]["bytes"],
        number_after(&line, "sent"),
        "{line}"
    );
    assert!(report["end"]["sum_received"]["bytes"].as_u64() > Some(1 << 20));
    // --bidir: both directions at once.
    let report = iperf3_client(&lab, listen, &["--bidir", "-t", "2"]);
    let line = server.line("iperf3 test 4 done");
    let end = &report["end"];
    assert_eq!(
        end["sum_received"]["bytes"],
        number_after(&line, "received"),
        "{line}"
    );
    assert_eq!(
        end["sum_sent_bidir_reverse"]["bytes"],
        number_after(&line, "sent"),
        "{line}"
    );
    assert!(
        end["sum_received_bidir_reverse"]["bytes"].as_u64() > Some(1 << 20),
        "{end}"
    );
}

/// A third namespace behind the lab's server: `web` at 10.200.N.2, reached
/// from the server namespace over its own veth (no XDP there). The server
/// namespace resolves `web.test` to it (`/etc/netns/NS/hosts`, which `ip
/// netns exec` mounts over /etc/hosts).
struct Web {
    ns: mptcp_tests::Netns,
    addr: std::net::Ipv4Addr,
    hosts_dir: PathBuf,
    dir: PathBuf,
    http: Option<std::process::Child>,
}

impl Web {
    fn up(lab: &Lab, subnet: u8) -> Web {
        let ns = mptcp_tests::Netns::create(&unique_name("mpweb")).expect("web ns");
        let (a, b) = (unique_name("vw"), unique_name("vs"));
        // veth names are at most 15 bytes.
        let (a, b) = (
            &a[a.len().saturating_sub(15)..],
            &b[b.len().saturating_sub(15)..],
        );
        mptcp_tests::ip(&["link", "add", a, "type", "veth", "peer", "name", b]).expect("veth");
        mptcp_tests::ip(&["link", "set", a, "netns", ns.name()]).expect("move");
        mptcp_tests::ip(&["link", "set", b, "netns", lab.server.name()]).expect("move");
        let web = format!("10.200.{subnet}.2");
        let gw = format!("10.200.{subnet}.1");
        ns.ip(&["addr", "add", &format!("{web}/24"), "dev", a])
            .expect("addr");
        ns.ip(&["link", "set", a, "up"]).expect("up");
        lab.server
            .ip(&["addr", "add", &format!("{gw}/24"), "dev", b])
            .expect("addr");
        lab.server.ip(&["link", "set", b, "up"]).expect("up");
        let hosts_dir = PathBuf::from("/etc/netns").join(lab.server.name());
        std::fs::create_dir_all(&hosts_dir).expect("/etc/netns");
        std::fs::write(
            hosts_dir.join("hosts"),
            format!("127.0.0.1 localhost\n{web} web.test\n"),
        )
        .expect("hosts");
        let dir = std::env::temp_dir().join(unique_name("web-root"));
        std::fs::create_dir_all(&dir).expect("web root");
        Web {
            ns,
            addr: web.parse().unwrap(),
            hosts_dir,
            dir,
            http: None,
        }
    }

    /// `python3 -m http.server PORT` serving `dir`, once it listens.
    fn serve_http(&mut self, port: u16) {
        let child = self
            .ns
            .command("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind"])
            .arg(self.addr.to_string())
            .arg("--directory")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        self.http = Some(child);
        let listening = wait_until(Duration::from_secs(10), || {
            self.ns
                .exec("ss", &["-Hltn", &format!("sport = :{port}")])
                .is_ok_and(|s| !s.trim().is_empty())
        });
        assert!(listening, "http.server never listened");
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        if let Some(c) = self.http.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.hosts_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn one_path_lab() -> Lab {
    Lab::up(&LabConfig {
        subflow_endpoints: false,
        ..LabConfig::unique(1)
    })
    .expect("lab")
}

fn users_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(unique_name("socks-users"));
    std::fs::write(&path, text).expect("users file");
    path
}

#[test]
fn curl_fetches_64_mib_through_socks5_byte_exact() {
    if !require_root() {
        return;
    }
    let lab = two_path_lab();
    let mut web = Web::up(&lab, 1);
    let len = 64usize << 20;
    let body: Vec<u8> = mptcp_engine::app::Pattern::STREAM.bytes(0, len);
    std::fs::write(web.dir.join("file"), &body).expect("file");
    web.serve_http(8080);
    let users = users_file("alice:wonder land\n");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 1080);
    let l = listen.to_string();
    let server = Logged::start(
        &lab,
        &on_both_paths(
            &l,
            &[
                "--mode",
                "socks5",
                "--users",
                users.to_str().unwrap(),
                "--allow",
                "10.200.1.0/24",
            ],
        ),
    );
    // Read at start-up, before XDP is attached.
    let _ = std::fs::remove_file(&users);
    let out_file = std::env::temp_dir().join(unique_name("curl-out"));
    let out = lab
        .client
        .command("mptcpize")
        .args(["run", "curl", "-sS", "--fail", "--max-time", "60"])
        .args(["--socks5-hostname", &l, "--proxy-user", "alice:wonder land"])
        .arg("http://web.test:8080/file")
        .arg("-o")
        .arg(&out_file)
        .output()
        .expect("curl");
    let got = std::fs::read(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    assert!(
        out.status.success(),
        "{}\n{}",
        output_text(&out),
        server.text()
    );
    assert_eq!(got.len(), len);
    assert!(got == body, "the fetched file differs");
    let line = server.line("socks5 ");
    assert!(line.contains("web.test:8080"), "{line}");
    assert!(number_after(&line, "bytes up, ") > len as u64, "{line}");
    assert!(
        lab.client
            .nstat("MPTcpExtMPCapableSYNACKRX")
            .expect("nstat")
            >= 1,
        "curl spoke MPTCP to the proxy"
    );
}

/// One raw SOCKS5 exchange from the client namespace over kernel MPTCP:
/// what the proxy answered, until it closed.
fn socks5_exchange(lab: &Lab, proxy: SocketAddr, messages: &[Vec<u8>]) -> Vec<u8> {
    use std::io::{Read, Write};
    lab.client
        .enter(|| {
            let mut s = mptcp_tests::mptcp_connect(proxy, Duration::from_secs(5)).expect("connect");
            for m in messages {
                s.write_all(m).expect("write");
            }
            let mut back = Vec::new();
            let _ = s.read_to_end(&mut back);
            back
        })
        .expect("client ns")
}

#[test]
fn socks5_refuses_bad_credentials_and_disallowed_destinations() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let mut web = Web::up(&lab, 2);
    std::fs::write(web.dir.join("x"), b"x").expect("file");
    web.serve_http(8081);
    let users = users_file("bob:secret\n");
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 1081);
    let l = listen.to_string();
    let server = Logged::start(
        &lab,
        &[
            "--iface",
            "srv0",
            "--listen",
            &l,
            "--mode",
            "socks5",
            "--users",
            users.to_str().unwrap(),
            "--allow",
            "10.200.2.2",
        ],
    );
    // Read at start-up, before XDP is attached.
    let _ = std::fs::remove_file(&users);
    let auth = |user: &[u8], pass: &[u8]| {
        let mut m = vec![1, user.len() as u8];
        m.extend_from_slice(user);
        m.push(pass.len() as u8);
        m.extend_from_slice(pass);
        m
    };
    let connect_v4 = |ip: [u8; 4], port: u16| {
        let mut m = vec![5, 1, 0, 1];
        m.extend_from_slice(&ip);
        m.extend_from_slice(&port.to_be_bytes());
        m
    };
    // Wrong password: RFC 1929 status 1, then the proxy closes.
    let back = socks5_exchange(&lab, listen, &[vec![5, 1, 2], auth(b"bob", b"wrong")]);
    assert_eq!(back, [5, 2, 1, 1]);
    // No acceptable method offered (only "no authentication"): 0xFF.
    let back = socks5_exchange(&lab, listen, &[vec![5, 1, 0]]);
    assert_eq!(back, [5, 0xff]);
    // Good credentials, a destination outside --allow: reply 2.
    let back = socks5_exchange(
        &lab,
        listen,
        &[
            vec![5, 1, 2],
            auth(b"bob", b"secret"),
            connect_v4([10, 100, 0, 1], 22),
        ],
    );
    assert_eq!(back, [5, 2, 1, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    // BIND is not supported: reply 7.
    let mut bind = connect_v4([10, 200, 2, 2], 8081);
    bind[1] = 2;
    let back = socks5_exchange(
        &lab,
        listen,
        &[vec![5, 1, 2], auth(b"bob", b"secret"), bind],
    );
    assert_eq!(&back[4..6], &[5, 7]);
    // The allowed destination works, with curl's own check of the codes.
    let ok = lab
        .client
        .command("mptcpize")
        .args(["run", "curl", "-sS", "--max-time", "20", "--socks5", &l])
        .args(["--proxy-user", "bob:secret", "http://10.200.2.2:8081/x"])
        .output()
        .expect("curl");
    assert!(ok.status.success(), "{}", output_text(&ok));
    assert_eq!(ok.stdout, b"x");
    let refused = lab
        .client
        .command("mptcpize")
        .args(["run", "curl", "-sS", "--max-time", "20", "--socks5", &l])
        .args(["--proxy-user", "bob:secret", "http://10.200.2.1:8081/x"])
        .output()
        .expect("curl");
    // curl 97: the proxy handshake failed; it quotes the reply code.
    assert_eq!(refused.status.code(), Some(97), "{}", output_text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("(2)"),
        "{}",
        output_text(&refused)
    );
    // The counters, as numbers in `stats --json`.
    let stats = server.stats(&lab, |v| v["engine"]["apps"]["socks5"]["relayed"] == 1);
    let socks = &stats["engine"]["apps"]["socks5"];
    assert_eq!(socks["auth_failed"], 2, "{socks}");
    assert_eq!(socks["not_allowed"], 2, "{socks}");
    assert_eq!(socks["malformed"], 1, "BIND: {socks}");
    assert!(socks["bytes_down"].as_u64() > Some(1), "{socks}");
    let log = server.text();
    assert!(log.contains("bad credentials for user \"bob\""), "{log}");
    assert!(log.contains("destination not allowed"), "{log}");
}

#[test]
fn socks5_without_allow_says_so_and_refuses_everything() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 1082);
    let l = listen.to_string();
    let server = Logged::start(
        &lab,
        &[
            "--iface",
            "srv0",
            "--listen",
            &l,
            "--mode",
            "socks5",
            "--no-auth",
        ],
    );
    server.line("no --allow given: every destination will be refused");
    let back = socks5_exchange(
        &lab,
        listen,
        &[vec![5, 1, 0], vec![5, 1, 0, 1, 127, 0, 0, 1, 0, 22]],
    );
    assert_eq!(back, [5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    // Neither --users nor --no-auth: a clear refusal to start.
    let out = mptcp_user(lab.server.name())
        .args([
            "serve",
            "--iface",
            "srv0",
            "--listen",
            "10.100.0.2:1083",
            "--mode",
            "socks5",
        ])
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("--users FILE"),
        "{}",
        output_text(&out)
    );
}

/// A kernel TCP echo server in `ns` at `addr` that counts connections and
/// bytes; stops after `connections` connections.
fn counting_echo(
    ns: &mptcp_tests::Netns,
    addr: SocketAddr,
    connections: usize,
) -> std::thread::JoinHandle<Vec<u64>> {
    use std::io::{Read, Write};
    let listener = ns
        .enter(|| std::net::TcpListener::bind(addr).expect("backend"))
        .expect("ns");
    std::thread::spawn(move || {
        let mut counts = Vec::new();
        for _ in 0..connections {
            let (mut c, _) = listener.accept().expect("accept");
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0u64;
            loop {
                let n = c.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                c.write_all(&buf[..n]).expect("write");
                total += n as u64;
            }
            counts.push(total);
        }
        counts
    })
}

/// A kernel MPTCP client that puts `first` in its SYN (TFO without a
/// cookie: MSG_FASTOPEN), then sends `rest`, half-closes and reads all.
fn tfo_mptcp_exchange(lab: &Lab, to: SocketAddr, first: &[u8], rest: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    lab.client
        .enter(|| {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::from(mptcp_tests::IPPROTO_MPTCP)),
            )
            .expect("MPTCP socket");
            let sa: socket2::SockAddr = to.into();
            // SAFETY: a valid socket, buffer and address.
            let n = unsafe {
                libc::sendto(
                    s.as_raw_fd(),
                    first.as_ptr().cast(),
                    first.len(),
                    libc::MSG_FASTOPEN,
                    sa.as_ptr().cast(),
                    sa.len(),
                )
            };
            assert_eq!(
                n,
                first.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
            let mut stream: std::net::TcpStream = s.into();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let rest = rest.to_vec();
            let sender = std::thread::spawn(move || {
                writer.write_all(&rest).expect("write");
                writer
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
            });
            let mut back = Vec::new();
            let _ = stream.read_to_end(&mut back);
            sender.join().expect("sender");
            back
        })
        .expect("client ns")
}

#[test]
fn kernel_mptcp_client_reaches_a_backend_through_the_converter() {
    use mptcp_datapath::apps::convert::{client, error, error_message, parse, Parsed, Tlv};
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    lab.client
        .exec("sysctl", &["-qw", "net.ipv4.tcp_fastopen=5"])
        .expect("sysctl");
    let web = Web::up(&lab, 3);
    let backend = SocketAddr::new(web.addr.into(), 9000);
    // Only the successful connections may reach the backend.
    let echoed = counting_echo(&web.ns, backend, 2);
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5124);
    let l = listen.to_string();
    let server = Logged::start(
        &lab,
        &[
            "--iface",
            "srv0",
            "--listen",
            &l,
            "--mode",
            "convert",
            "--allow",
            "10.200.3.0/24",
        ],
    );
    // Errors first: each answered with its Error TLV, nothing relayed.
    let mut bad_version = client::connect_message(backend);
    bad_version[0] = 2;
    bad_version.extend_from_slice(b"must not arrive");
    let back = tfo_mptcp_exchange(&lab, listen, &bad_version, b"nor this");
    assert_eq!(back, error_message(error::UNSUPPORTED_VERSION, 1));
    let malformed = [1, 2, 0, 0, 10, 0, 0, 0];
    let back = tfo_mptcp_exchange(&lab, listen, &malformed, b"dropped");
    assert_eq!(
        back,
        error_message(error::MALFORMED_MESSAGE, 4),
        "{}",
        server.text()
    );
    let elsewhere = client::connect_message("10.100.0.1:9000".parse().unwrap());
    let back = tfo_mptcp_exchange(&lab, listen, &elsewhere, b"dropped");
    assert_eq!(back, error_message(error::NOT_AUTHORIZED, 0));
    // Info: the converter says what it converts, and closes.
    let info = mptcp_datapath::apps::convert::encode(&[Tlv::Info]);
    let back = tfo_mptcp_exchange(&lab, listen, &info, b"");
    assert!(
        matches!(parse(&back), Parsed::Done(t, _) if matches!(&t[..], [Tlv::SupportedExtensions(k)] if k.contains(&30))),
        "{back:?}"
    );
    let nobody = client::connect_message(SocketAddr::new(web.addr.into(), 9001));
    let back = tfo_mptcp_exchange(&lab, listen, &nobody, b"dropped");
    assert_eq!(back, error_message(error::CONNECTION_RESET, 0));
    // Success: Connect and the first data in the SYN, the rest after.
    for len in [1000usize, 8 << 20] {
        let data = mptcp_engine::app::Pattern::STREAM.bytes(0, len);
        let mut first = client::connect_message(backend);
        let head = len.min(500);
        first.extend_from_slice(&data[..head]);
        let back = tfo_mptcp_exchange(&lab, listen, &first, &data[head..]);
        let answer = client::answer(&back)
            .unwrap_or_else(|e| panic!("{e}\n{}", server.text()))
            .expect("a whole answer");
        let Parsed::Done(tlvs, _) = parse(&back[..answer]) else {
            panic!("answer");
        };
        assert!(
            matches!(&tlvs[..], [Tlv::ExtendedTcpHeader(o)] if o.first() == Some(&2)),
            "{tlvs:?}"
        );
        assert_eq!(back.len() - answer, len, "echo length");
        assert!(back[answer..] == data[..], "echoed bytes differ");
    }
    assert_eq!(
        echoed.join().expect("backend"),
        vec![1000, 8 << 20],
        "the backend saw exactly the data"
    );
    // The relay's log line follows the connection's close: wait for it.
    wait_until(Duration::from_secs(10), || {
        server.text().matches("convert ").count() >= 7
    });
    let log = server.text();
    assert_eq!(log.matches("convert ").count(), 7, "{log}");
    assert!(log.contains("error 32 (destination not allowed)"), "{log}");
    // The SYN/ACKs acknowledged the data in the SYNs (kernel: "TFO active").
    assert!(
        lab.client.nstat("TcpExtTCPFastOpenActive").expect("nstat") >= 7,
        "SYN data accepted: {}",
        lab.client.nstat("TcpExtTCPFastOpenActive").unwrap_or(0)
    );
}

/// Full TCP checksums from the kernel in `ns` (veth leaves them partial).
fn full_checksums(ns: &mptcp_tests::Netns, ifaces: &[&str]) {
    for i in ifaces {
        ns.exec("ethtool", &["-K", i, "tx", "off"])
            .expect("ethtool");
    }
}

fn wait_listening(ns: &mptcp_tests::Netns, port: u16) {
    assert!(
        wait_until(Duration::from_secs(10), || ns
            .exec("ss", &["-Hltn", &format!("sport = :{port}")])
            .is_ok_and(|s| !s.trim().is_empty())),
        "nothing listens on {port}"
    );
}

fn connect_json(lab: &Lab, args: &[&str]) -> serde_json::Value {
    let out = mptcp_user(lab.client.name())
        .arg("connect")
        .args(args)
        .arg("--json")
        .output()
        .expect("connect");
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON: {e}\n{}", output_text(&out)))
}

#[test]
fn connect_iperf3_against_a_stock_kernel_mptcp_iperf3_server() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    full_checksums(&lab.server, &["srv0"]);
    let remote = SocketAddr::new(lab.paths[0].server_v4.into(), 5210);
    for (reverse, by_time) in [(false, false), (true, false), (false, true)] {
        let server = lab
            .server
            .command("mptcpize")
            .args(["run", "iperf3", "-s", "-1", "-p", "5210", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iperf3 -s");
        wait_listening(&lab.server, 5210);
        let bytes: u64 = 16 << 20;
        let mut args = vec![
            remote.to_string(),
            "--iface".into(),
            "cli0".into(),
            "--iperf3".into(),
        ];
        if by_time {
            args.extend(["--time".into(), "1".into()]);
        } else {
            args.extend(["--bytes".into(), bytes.to_string()]);
        }
        if reverse {
            args.push("--reverse".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = connect_json(&lab, &args);
        let out = server.wait_with_output().expect("iperf3 server");
        let theirs: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("server JSON: {e}\n{}", output_text(&out)));
        let end = &report["end"];
        // The stock server's own report (written at TEST_END, before the
        // results exchange) has its side right: what it received, or with
        // -R what it sent; ours must say the same.
        let side = if reverse { "sum_sent" } else { "sum_received" };
        assert_eq!(
            end[side]["bytes"], theirs["end"][side]["bytes"],
            "reverse={reverse}: {end}\n{}",
            theirs["end"]
        );
        if by_time {
            assert!(
                end["sum_received"]["bytes"].as_u64() > Some(1 << 20),
                "{end}"
            );
            assert!(end["sum_sent"]["seconds"].as_f64() >= Some(1.0), "{end}");
        } else if reverse {
            assert!(
                end["sum_received"]["bytes"].as_u64() >= Some(bytes),
                "{end}"
            );
        } else {
            // Ended once the server acknowledged every byte: it got them all.
            assert_eq!(end["sum_sent"]["bytes"], bytes, "{end}");
            assert_eq!(end["sum_received"]["bytes"], bytes, "{end}");
        }
        assert!(
            lab.server.nstat("MPTcpExtMPCapableSYNRX").expect("nstat") >= 1,
            "the data stream was MPTCP"
        );
    }
}

#[test]
fn connect_reports_what_a_discarding_receiver_got() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5211);
    let l = listen.to_string();
    let _server = Logged::start(
        &lab,
        &["--iface", "srv0", "--listen", &l, "--mode", "discard"],
    );
    full_checksums(&lab.client, &["cli0"]);
    let bytes: u64 = 8 << 20;
    let report = connect_json(
        &lab,
        &[&l, "--iface", "cli0", "--bytes", &bytes.to_string()],
    );
    let end = &report["end"];
    assert_eq!(end["sum_sent"]["bytes"], bytes, "{end}");
    assert_eq!(end["sum_received"]["bytes"], bytes, "DATA_ACKed: {end}");
    assert_eq!(end["echoed_bytes"], 0, "{end}");
}

#[test]
fn connect_via_convert_reaches_a_backend() {
    if !require_root() {
        return;
    }
    let lab = one_path_lab();
    full_checksums(&lab.client, &["cli0"]);
    let web = Web::up(&lab, 4);
    let backend = SocketAddr::new(web.addr.into(), 9004);
    let echoed = counting_echo(&web.ns, backend, 1);
    let listen = SocketAddr::new(lab.paths[0].server_v4.into(), 5125);
    let l = listen.to_string();
    let server = Logged::start(
        &lab,
        &[
            "--iface",
            "srv0",
            "--listen",
            &l,
            "--mode",
            "convert",
            "--allow",
            "10.200.4.0/24",
        ],
    );
    let bytes: u64 = 8 << 20;
    let report = connect_json(
        &lab,
        &[
            &backend.to_string(),
            "--iface",
            "cli0",
            "--via-convert",
            &l,
            "--bytes",
            &bytes.to_string(),
        ],
    );
    assert_eq!(report["end"]["byte_exact"], true, "{report}");
    assert_eq!(report["end"]["echoed_bytes"], bytes, "{report}");
    assert_eq!(echoed.join().expect("backend"), vec![bytes]);
    // A refused destination: connect says why and fails.
    let out = mptcp_user(lab.client.name())
        .args([
            "connect",
            "10.100.0.1:9",
            "--iface",
            "cli0",
            "--via-convert",
            &l,
            "--bytes",
            "10",
        ])
        .output()
        .expect("connect");
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("not authorized"),
        "{}\n{}",
        output_text(&out),
        server.text()
    );
}
