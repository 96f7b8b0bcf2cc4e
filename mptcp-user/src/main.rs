//! `mptcp-user`: the front end. Each subcommand lives in its own file under
//! `cli/`; the engine, the drivers and the simulator are crates beside it.
mod cli;

use clap::{Parser, Subcommand};

/// Userspace Multipath TCP datapath: XDP steers MPTCP subflows to this engine.
#[derive(Parser)]
#[command(version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Terminate connections on interfaces through XDP + AF_XDP (echo, discard, forward, source; an iperf3 server, a SOCKS5 proxy, an RFC 8803 converter).
    Serve(cli::serve::ServeArgs),
    /// Open a connection through XDP + AF_XDP and measure it like iperf3.
    Connect(cli::connect::ConnectArgs),
    /// The engine as a load generator: N concurrent MPTCP connections
    /// echoing (or requesting) a size, at a rate, with latencies.
    Load(cli::load::LoadArgs),
    /// Classifier, datapath and engine counters of running instances.
    Stats(cli::stats::StatsArgs),
    /// See and steer the live connections of a running instance (control socket).
    Ctl(cli::ctl::CtlArgs),
    /// Transfer bytes between two engines over simulated paths and report goodput.
    Sim(cli::sim::SimArgs),
    /// Print the TCP segments of a capture with every MPTCP suboption.
    Decode(cli::decode::DecodeArgs),
    /// Attach the XDP classifier to interfaces and show its counters until Ctrl-C.
    Classify(cli::classify::ClassifyArgs),
    /// The raw ceiling for `cargo xtask bench`: MTU-sized frames AF_XDP to AF_XDP, no protocol.
    #[command(hide = true)]
    RawCeiling(cli::raw::RawArgs),
    /// Forward frames between interface pairs through the simulator's link model (rate, delay, loss...).
    Emulate(cli::emulate::EmulateArgs),
    /// Sequence, goodput and unacked CSVs and plots of an MPTCP connection in a capture (as mptcptrace).
    Trace(cli::trace::TraceArgs),
}

fn main() -> std::process::ExitCode {
    env_logger::init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => cli::serve::serve(args),
        Command::Connect(args) => cli::connect::connect(args),
        Command::Load(args) => cli::load::load(args),
        Command::Stats(args) => cli::stats::stats(args),
        Command::Ctl(args) => cli::ctl::ctl(args),
        Command::Sim(args) => cli::sim::main(args),
        Command::Decode(args) => cli::decode::decode(args),
        Command::Classify(args) => cli::classify::classify(args),
        Command::RawCeiling(args) => cli::raw::raw_ceiling(args),
        Command::Emulate(args) => cli::emulate::emulate(args),
        Command::Trace(args) => cli::trace::trace(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain; no backtrace for a user's mistake.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
