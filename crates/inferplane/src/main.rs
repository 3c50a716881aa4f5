//! The `inferplane` binary: a thin CLI over the library crates.
//!
//! Subcommands: `serve` (the gateway), `demo` (the whole system on simulated engines),
//! `sim` (simulated engines), `plan` (parallelism planner), `bench` (benchmarks).

mod bench_cmd;
mod demo_cmd;
mod demo_sim;
mod plan_cmd;
mod serve_cmd;
mod sim_cmd;

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
    /// Run the system end to end on built-in simulated engines and print a summary.
    Demo(demo_cmd::DemoArgs),
    /// Run the OpenAI-compatible gateway in front of engine instances.
    Serve(serve_cmd::ServeArgs),
    /// Run simulated vLLM-compatible engines (no GPU needed).
    Sim(sim_cmd::SimArgs),
    /// Rank TP/PP/DP/EP/hybrid layouts for a model on a cluster and print launch commands.
    Plan(plan_cmd::PlanArgs),
    /// Benchmark: workloads, live load, discrete-event simulation, comparisons, reports.
    Bench(bench_cmd::BenchArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFERPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // INFERPLANE_LOG_FORMAT=json gives one JSON object per line, for log pipelines.
    if std::env::var("INFERPLANE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .try_init();
    } else {
        // colour codes only for a terminal, never in a file or a pipe
        use std::io::IsTerminal;
        let _ = tracing_subscriber::fmt()
            .with_ansi(std::io::stdout().is_terminal())
            .with_env_filter(filter)
            .try_init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Plan(args) => plan_cmd::run(args),
        Command::Serve(args) => runtime()?.block_on(serve_cmd::run(args)),
        Command::Sim(args) => runtime()?.block_on(sim_cmd::run(args)),
        Command::Demo(args) => runtime()?.block_on(demo_cmd::run(args)),
        Command::Bench(args) => runtime()?.block_on(bench_cmd::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
