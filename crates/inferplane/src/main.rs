//! The `inferplane` binary: thin CLI over the library crates.

mod plan_cmd;

use clap::{Parser, Subcommand};

/// inferplane: an LLM inference control plane.
#[derive(Debug, Parser)]
#[command(name = "inferplane", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rank TP/PP/DP/EP/hybrid layouts for a model on a cluster and print launch commands.
    Plan(plan_cmd::PlanArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan(args) => plan_cmd::run(args),
    }
}
