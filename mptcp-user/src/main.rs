use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Userspace Multipath TCP datapath: XDP steers MPTCP subflows to this engine.
#[derive(Parser)]
#[command(version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the TCP segments of a capture with every MPTCP suboption.
    Decode(DecodeArgs),
    /// Attach the XDP classifier to interfaces and show its counters until Ctrl-C.
    Classify(mptcp_user::xdp::cli::ClassifyArgs),
    /// Terminate connections on interfaces through XDP + AF_XDP (echo, discard, forward).
    Serve(mptcp_user::cli::ServeArgs),
    /// Open a connection through XDP + AF_XDP and measure it like iperf3.
    Connect(mptcp_user::cli::ConnectArgs),
    /// Classifier, datapath and engine counters of running instances.
    Stats(mptcp_user::cli::StatsArgs),
    /// Transfer bytes between two engines over simulated paths and report goodput.
    Sim(mptcp_user::sim::cli::SimArgs),
    /// Forward frames between interface pairs through the simulator's link model (rate, delay, loss...).
    Emulate(mptcp_user::cli::emulate::EmulateArgs),
    /// Sequence, goodput and unacked CSVs and plots of an MPTCP connection in a capture (as mptcptrace).
    Trace(mptcp_user::cli::trace::TraceArgs),
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Recompute tokens, HMACs and DSS checksums; exit non-zero on a mismatch.
    #[arg(long)]
    verify: bool,
    /// A pcap or pcapng file (Ethernet, Linux cooked v1/v2, raw IP).
    file: PathBuf,
}

fn decode(a: &DecodeArgs) -> anyhow::Result<()> {
    let opts = mptcp_user::decode::Options {
        json: a.json,
        verify: a.verify,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let report = mptcp_user::decode::decode_file(&a.file, opts, &mut out)?;
    std::io::Write::flush(&mut out)?;
    if !report.clean() {
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    env_logger::init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Decode(a) => decode(a),
        Command::Classify(args) => mptcp_user::xdp::cli::classify(args),
        Command::Serve(args) => mptcp_user::cli::serve(args),
        Command::Connect(args) => mptcp_user::cli::connect(args),
        Command::Stats(args) => mptcp_user::cli::stats(args),
        Command::Sim(args) => mptcp_user::sim::main(args),
        Command::Emulate(args) => mptcp_user::cli::emulate::emulate(args),
        Command::Trace(args) => mptcp_user::cli::trace::trace(args),
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
