//! `inferplane bench`: workloads, live load, discrete-event simulation and comparisons.
//!
//! - `bench workload --out trace.jsonl`: writes a seeded workload (or a rescaled trace).
//! - `bench run --target URL`: open-loop streaming load against any OpenAI-compatible
//!   endpoint, bounded by `--requests` and `--duration`, with a progress bar.
//! - `bench simulate --cluster cluster.toml`: the same workload through the core scheduler
//!   and simulated engines in virtual time.
//! - `bench compare`: one workload under several policy choices (simulated) or against
//!   several targets (live), in one report.
//!
//! Every command prints a markdown report; `--out DIR` also writes `report.md`,
//! `report.json` and SVG plots there.

use anyhow::Context;
use inferplane_bench::cluster::{Cluster, PolicyChoice};
use inferplane_bench::load::{Api, LoadConfig};
use inferplane_bench::report::{self, Summary};
use inferplane_bench::source::Source;
use inferplane_bench::{RunRecords, WorkItem, compare, des, plot, trace};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `inferplane bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Drive a live OpenAI-compatible endpoint with an open-loop streaming workload.
    Run(RunArgs),
    /// Write a workload (or a rescaled trace) as JSONL.
    Workload(WorkloadCmdArgs),
    /// Simulate a cluster in virtual time with the core scheduler and simulated engines.
    Simulate(SimulateArgs),
    /// Compare policy choices (simulated) or targets (live) on one workload.
    Compare(CompareArgs),
    /// Run the scenario matrix (clusters x workloads x loads x policies) in the simulation.
    Matrix(MatrixArgs),
}

#[derive(Debug, clap::Args)]
struct MatrixArgs {
    /// The matrix (TOML; paths in it are relative to it).
    #[arg(long, default_value = "bench/matrix.toml")]
    spec: PathBuf,
    /// Requests per run, overriding the spec.
    #[arg(long)]
    requests: Option<usize>,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Only runs whose cluster, workload or policy contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Write matrix.md and matrix.json into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Where the workload comes from.
#[derive(Debug, Clone, clap::Args)]
struct WorkloadArgs {
    /// Workload spec (TOML, see bench/README.md); defaults to a ShareGPT-like mix.
    #[arg(long)]
    workload: Option<PathBuf>,
    /// Replay a trace: JSONL from `bench workload`, or the Azure CSV
    /// (TIMESTAMP,ContextTokens,GeneratedTokens).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Give trace requests the priority/SLO classes of the spec (`--workload`, else the
    /// default mix's); traces like Azure's have none.
    #[arg(long)]
    trace_classes: bool,
    /// Number of requests (generated), or the first N of the trace.
    #[arg(long)]
    requests: Option<usize>,
    /// Mean arrival rate in requests/s (generated), or the rate to rescale the trace to.
    #[arg(long)]
    rate: Option<f64>,
    /// Workload seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Bursty gamma arrivals with this coefficient of variation (1 is Poisson-like).
    #[arg(long)]
    burst_cv: Option<f64>,
    /// The `max_tokens` a trace's clients send, for traces that record only true output
    /// lengths (Azure's); default 2048.
    #[arg(long)]
    max_tokens: Option<u32>,
}

impl WorkloadArgs {
    fn source(&self) -> Source {
        Source {
            spec: self.workload.clone(),
            trace: self.trace.clone(),
            trace_classes: self.trace_classes,
            trace_max_tokens: self.max_tokens,
            requests: self.requests,
            rate: self.rate,
            seed: self.seed,
            burst_cv: self.burst_cv,
        }
    }

    /// The items, with the trace rescaled to `rate` when one is given.
    fn items(&self, rate: Option<f64>) -> anyhow::Result<Vec<WorkItem>> {
        Ok(self.source().items(rate)?)
    }
}

#[derive(Debug, clap::Args)]
struct WorkloadCmdArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Output JSONL path.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Base URL of the endpoint (gateway, simulator or any OpenAI-compatible router).
    #[arg(long)]
    target: String,
    /// Model name sent in requests.
    #[arg(long, default_value = "llama-3.1-8b")]
    model: String,
    /// API to call: `completions` (exact prompt sizes) or `chat`.
    #[arg(long, default_value = "completions")]
    api: String,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Stop sending after this long, e.g. 30s or 2m.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Give up on one request after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The target's virtual seconds per wall second (simulators started with --time-scale).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Salt for the unique part of prompts (change it to avoid a warm prefix cache).
    #[arg(long, default_value_t = 0)]
    salt: u64,
    /// Label of the run in the report.
    #[arg(long, default_value = "live")]
    label: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Write report.md, report.json and plots into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// Cluster description (TOML; see bench/README.md).
    #[arg(long)]
    cluster: PathBuf,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Scale the arrival rate to this fraction of the cluster's estimated capacity.
    #[arg(long)]
    load: Option<f64>,
    /// Override the cluster's scheduling policy / routing strategy / balancing algorithm,
    /// as `policy/routing/balance`, e.g. `fifo/round_robin/least_connections`.
    #[arg(long)]
    policy: Option<String>,
    /// Write report.md, report.json and plots into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// Cluster description for simulated comparisons.
    #[arg(long, required_unless_present_any = ["targets", "target"])]
    cluster: Option<PathBuf>,
    /// Policy choices to compare, each `policy/routing/balance`, comma separated.
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// Live targets to compare instead, each `label=URL`, comma separated.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["cluster", "target"])]
    targets: Vec<String>,
    /// One live inferplane gateway: each of --policies is switched on through its
    /// `PUT /admin/policy`, then the workload runs.
    #[arg(long, conflicts_with = "cluster", requires = "policies")]
    target: Option<String>,
    /// Admin token of --target, when it has one.
    #[arg(long, env = "INFERPLANE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Model name for live requests.
    #[arg(long, default_value = "llama-3.1-8b")]
    model: String,
    /// Live targets' time scale.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Scale the arrival rate to this fraction of the cluster's estimated capacity.
    #[arg(long)]
    load: Option<f64>,
    /// Report title.
    #[arg(long, default_value = "inferplane bench compare")]
    title: String,
    /// Write report.md, report.json and plots into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `inferplane bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let command = std::env::args()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    match args.command {
        BenchCommand::Matrix(a) => {
            let spec = inferplane_bench::matrix::MatrixSpec::load(&a.spec)?;
            let base = a.spec.parent().unwrap_or(Path::new("."));
            let opts = inferplane_bench::matrix::Options {
                requests: a.requests,
                threads: a.threads,
                filter: a.filter.clone(),
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let started = std::time::Instant::now();
            let (rows, skipped) = inferplane_bench::matrix::run(&spec, base, &opts)?;
            eprintln!(
                "{} runs in {:.1}s",
                rows.len(),
                started.elapsed().as_secs_f64()
            );
            let md = inferplane_bench::matrix_report::markdown(&spec, &rows, &skipped, &command);
            println!("{md}");
            if let Some(dir) = &a.out {
                std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
                std::fs::write(dir.join("matrix.md"), &md)?;
                std::fs::write(
                    dir.join("matrix.json"),
                    serde_json::to_string_pretty(&rows)?,
                )?;
                eprintln!("wrote matrix.md and matrix.json to {}", dir.display());
            }
            Ok(())
        }
        BenchCommand::Workload(a) => {
            let items = a.workload.items(None)?;
            trace::write_jsonl(&a.out, &items)?;
            println!(
                "wrote {} requests over {:.1}s ({:.2} req/s) to {}",
                items.len(),
                items.last().map_or(0.0, |i| i.t),
                trace::mean_rate(&items),
                a.out.display()
            );
            Ok(())
        }
        BenchCommand::Run(a) => {
            let items = a.workload.items(None)?;
            let mut cfg = LoadConfig::new(a.target.clone(), a.model.clone());
            cfg.api = match a.api.as_str() {
                "completions" => Api::Completions,
                "chat" => Api::Chat,
                other => anyhow::bail!("--api {other:?}: expected completions or chat"),
            };
            cfg.max_duration = a.duration;
            cfg.request_timeout = a.timeout;
            cfg.time_scale = a.time_scale;
            cfg.salt = a.salt;
            cfg.progress = !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
            cfg.label = a.label.clone();
            eprintln!(
                "sending {} requests ({:.2} req/s offered) to {}",
                items.len(),
                trace::mean_rate(&items),
                a.target
            );
            let run = inferplane_bench::load::run(&cfg, &items).await?;
            emit(
                "inferplane bench run",
                &[run],
                &items,
                &command,
                a.out.as_deref(),
            )
        }
        BenchCommand::Simulate(a) => {
            let mut cluster = Cluster::load(&a.cluster)?;
            if let Some(p) = &a.policy {
                cluster.policy = PolicyChoice::parse(p)?;
            }
            let items = sim_items(&a.workload, &cluster, a.load)?;
            let started = std::time::Instant::now();
            let run = des::simulate(&cluster, &items, &cluster.policy.label())?;
            let wall = started.elapsed().as_secs_f64();
            eprintln!(
                "simulated {} requests on {} instances in {wall:.2}s ({:.0} simulated requests/s)",
                items.len(),
                cluster.instance_count(),
                items.len() as f64 / wall.max(1e-9)
            );
            emit(
                "inferplane bench simulate",
                &[run],
                &items,
                &command,
                a.out.as_deref(),
            )
        }
        BenchCommand::Compare(a) => {
            let runs = if let Some(path) = &a.cluster {
                let cluster = Cluster::load(path)?;
                let items = sim_items(&a.workload, &cluster, a.load)?;
                let choices = a
                    .policies
                    .iter()
                    .map(|p| PolicyChoice::parse(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let runs = compare::simulated(&cluster, &choices, &items)?;
                (runs, items)
            } else if let Some(url) = &a.target {
                let items = a.workload.items(None)?;
                let choices = a
                    .policies
                    .iter()
                    .map(|p| PolicyChoice::parse(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut cfg = LoadConfig::new(url.clone(), a.model.clone());
                cfg.time_scale = a.time_scale;
                cfg.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let runs = compare::live_policies(&cfg, &choices, &items, a.admin_token.as_deref())
                    .await?;
                (runs, items)
            } else {
                let items = a.workload.items(None)?;
                let mut targets = Vec::new();
                for t in &a.targets {
                    let (label, url) = t
                        .split_once('=')
                        .with_context(|| format!("--targets {t:?}: expected label=URL"))?;
                    let mut cfg = LoadConfig::new(url, a.model.clone());
                    cfg.label = label.to_string();
                    cfg.time_scale = a.time_scale;
                    cfg.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
                    targets.push(cfg);
                }
                (compare::live(&targets, &items).await?, items)
            };
            emit(&a.title, &runs.0, &runs.1, &command, a.out.as_deref())
        }
    }
}

/// The workload for a simulation, its rate scaled to `load` of the cluster's capacity.
fn sim_items(
    w: &WorkloadArgs,
    cluster: &Cluster,
    load: Option<f64>,
) -> anyhow::Result<Vec<WorkItem>> {
    let Some(load) = load else {
        return w.items(None);
    };
    let (items, capacity) = w.source().items_at_load(cluster, load)?;
    eprintln!(
        "cluster capacity estimate {capacity:.2} req/s; offering {:.2} req/s ({:.0}% load)",
        load * capacity,
        load * 100.0
    );
    Ok(items)
}

fn emit(
    title: &str,
    runs: &[RunRecords],
    items: &[WorkItem],
    command: &str,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let summaries: Vec<Summary> = runs.iter().map(|r| Summary::new(r, items)).collect();
    let md = report::markdown(title, &summaries, Some(command));
    println!("{md}");
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        std::fs::write(dir.join("report.md"), &md)?;
        std::fs::write(dir.join("report.json"), report::json(&summaries)?)?;
        for (name, svg) in plot::all(runs, items) {
            std::fs::write(dir.join(name), svg)?;
        }
        eprintln!(
            "wrote report.md, report.json and plots to {}",
            dir.display()
        );
    }
    Ok(())
}
