use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Userspace Multipath TCP datapath.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the TCP segments of a capture with every MPTCP suboption.
    Decode(DecodeArgs),
    /// Transfer bytes between two engines over simulated paths and report goodput.
    Sim(mptcp_user::sim::cli::SimArgs),
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Decode(a)) => {
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
        }
        Some(Command::Sim(args)) => mptcp_user::sim::main(&args)?,
        None => {}
    }
    Ok(())
}
