use clap::{Parser, Subcommand};

/// Userspace Multipath TCP datapath.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transfer bytes between two engines over simulated paths and report goodput.
    Sim(mptcp_user::sim::cli::SimArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Sim(args) => mptcp_user::sim::main(&args),
    }
}
