//! `mptcp-user classify`: attach the classifier, show its counters, detach.
use std::{
    io::{BufRead, Write},
    net::IpAddr,
    ops::RangeInclusive,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use mptcp_datapath::xdp::{
    format_counters, interface_addresses, AttachMode, Classifier, EbpfLogLevel, Ownership,
};

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    /// Interface to attach to (repeat for several).
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// Listening TCP port owned by the engine (repeat for several).
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    /// Client port range owned by the engine, e.g. 40000-40999.
    #[arg(long, value_parser = parse_range)]
    pub client_ports: Option<RangeInclusive<u16>>,
    /// Owned local address (repeat); default: every address of the interfaces.
    #[arg(long = "addr")]
    pub addrs: Vec<IpAddr>,
    /// Attach in generic (skb) mode instead of trying driver mode first.
    #[arg(long)]
    pub generic: bool,
    /// Seconds between counter lines (0: none).
    #[arg(long, default_value_t = 1)]
    pub interval: u64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Report on demand: each line read on stdin prints the counters since the
    /// previous report under that line as a title; EOF stops.
    #[arg(long, conflicts_with_all = ["interval", "duration"])]
    pub stdin_reports: bool,
    /// eBPF log level (aya-log); off keeps logging out of the hot path.
    #[arg(long, value_parser = parse_log_level, default_value = "off")]
    pub ebpf_log: EbpfLogLevel,
}

fn parse_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s.split_once('-').ok_or("expected LO-HI")?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("{lo}: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("{hi}: {e}"))?;
    if lo > hi {
        return Err(format!("empty range {lo}-{hi}"));
    }
    Ok(lo..=hi)
}

fn parse_log_level(s: &str) -> Result<EbpfLogLevel, String> {
    Ok(match s {
        "off" => EbpfLogLevel::Off,
        "error" => EbpfLogLevel::Error,
        "warn" => EbpfLogLevel::Warn,
        "info" => EbpfLogLevel::Info,
        "debug" => EbpfLogLevel::Debug,
        "trace" => EbpfLogLevel::Trace,
        other => return Err(format!("unknown level {other}")),
    })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn classify(args: &ClassifyArgs) -> Result<()> {
    let mut addresses = args.addrs.clone();
    if addresses.is_empty() {
        for iface in &args.ifaces {
            addresses.extend(interface_addresses(iface)?);
        }
    }
    let ownership = Ownership {
        addresses,
        listen_ports: args.ports.clone(),
        client_ports: args.client_ports.clone(),
    };
    if ownership.addresses.is_empty() {
        bail!("no owned address: the interfaces have none; pass --addr");
    }
    let mut classifier = Classifier::load_with_log(args.ebpf_log)?;
    classifier.set_ownership(&ownership)?;
    for iface in &args.ifaces {
        let mode = if args.generic {
            classifier.attach_with_mode(iface, AttachMode::Generic)?;
            AttachMode::Generic
        } else {
            classifier.attach(iface)?
        };
        println!("attached to {iface} ({mode:?} mode)");
    }
    println!(
        "owned: addresses {:?}, listening ports {:?}, client ports {:?}",
        ownership.addresses, ownership.listen_ports, ownership.client_ports
    );
    std::io::stdout().flush()?;
    let start = classifier.counters()?;
    if args.stdin_reports {
        // No handler here: a signal ends the process, and the kernel closes
        // the XDP links (bpf_link file descriptors) with it.
        let mut last = start;
        for line in std::io::stdin().lock().lines() {
            let title = line.context("reading stdin")?;
            let now = classifier.counters()?;
            println!("== {title}\n{}\n", format_counters(&now.since(&last)));
            std::io::stdout().flush()?;
            last = now;
            classifier.flush_logs();
        }
    } else {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
        let started = Instant::now();
        let mut next_line = started;
        while !STOP.load(Ordering::Relaxed) {
            if args
                .duration
                .is_some_and(|d| started.elapsed() >= Duration::from_secs(d))
            {
                break;
            }
            if args.interval > 0 && Instant::now() >= next_line {
                let c = classifier.counters()?.since(&start);
                println!(
                    "seen {} passed {} redirected {} owned {} (no socket {}) malformed {} | \
                     MP_CAPABLE SYN {} MP_JOIN SYN {} DSS {} other MPTCP {} plain TCP {}",
                    c.seen,
                    c.passed,
                    c.redirected,
                    c.owned,
                    c.owned_no_socket,
                    c.malformed,
                    c.mp_capable_syn,
                    c.mp_join_syn,
                    c.dss,
                    c.other_mptcp,
                    c.plain_tcp
                );
                next_line += Duration::from_secs(args.interval);
            }
            classifier.flush_logs();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let total = classifier.counters()?.since(&start);
    classifier.detach_all()?;
    println!("== total\n{}", format_counters(&total));
    println!("detached");
    Ok(())
}
