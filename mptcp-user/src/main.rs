use clap::{Parser, Subcommand};

/// Userspace Multipath TCP datapath.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP classifier to interfaces and show its counters until Ctrl-C.
    Classify(mptcp_user::xdp::cli::ClassifyArgs),
}

fn main() -> anyhow::Result<()> {
    env_logger::init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Classify(args)) => mptcp_user::xdp::cli::classify(&args),
        None => Ok(()),
    }
}
