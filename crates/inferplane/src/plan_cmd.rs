//! `inferplane plan`: rank parallelism layouts for a model on a cluster and print the engine
//! launch commands (a thin shell over `inferplane_planner::plan_report`).

use anyhow::{Context, bail};
use inferplane_planner::{
    Cluster, Engine, EngineOptions, GpuSpec, KvDtype, Load, ModelSpec, Objective, Plan, PlanReport,
    WeightDtype, Workload, find_gpu, find_model, gpu_names, model_names, plan_report,
};
use std::path::Path;

/// Arguments of `inferplane plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Model: a catalogue name (e.g. llama-3.1-70b) or a path to a Hugging Face config.json.
    #[arg(long)]
    pub model: String,
    /// GPU: a catalogue name (a10g, l40s, a100-40gb, a100-80gb, h100-pcie, h100-sxm, h200, b200),
    /// or omit and give --gpu-memory-gib, --gpu-bandwidth-gbps and --gpu-tflops.
    #[arg(long)]
    pub gpu: Option<String>,
    /// Custom GPU: usable memory in GiB.
    #[arg(long)]
    pub gpu_memory_gib: Option<f64>,
    /// Custom GPU: memory bandwidth in GB/s.
    #[arg(long)]
    pub gpu_bandwidth_gbps: Option<f64>,
    /// Custom GPU: dense BF16 TFLOPS.
    #[arg(long)]
    pub gpu_tflops: Option<f64>,
    /// Custom GPU: GPU-to-GPU link inside a node, GB/s per direction (NVLink if >= 100).
    #[arg(long)]
    pub gpu_link_gbps: Option<f64>,
    /// GPUs per node.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: u32,
    /// Nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Weight dtype: bf16, fp8, int8, int4 (awq), mxfp4. Default: the checkpoint's own.
    #[arg(long)]
    pub dtype: Option<String>,
    /// KV-cache dtype: auto or fp8.
    #[arg(long, default_value = "auto")]
    pub kv_dtype: String,
    /// Engine: vllm or sglang.
    #[arg(long, default_value = "vllm")]
    pub engine: String,
    /// vLLM --gpu-memory-utilization / SGLang --mem-fraction-static. Default: the engine's.
    #[arg(long)]
    pub gpu_memory_utilization: Option<f64>,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 2048)]
    pub input_tokens: u32,
    /// Output tokens per request.
    #[arg(long, default_value_t = 256)]
    pub output_tokens: u32,
    /// Requests in flight over the cluster (default 64 unless --request-rate is given).
    #[arg(long, conflicts_with = "request_rate")]
    pub concurrency: Option<u32>,
    /// Requests per second over the cluster.
    #[arg(long)]
    pub request_rate: Option<f64>,
    /// Time-to-first-token target, ms.
    #[arg(long)]
    pub ttft_ms: Option<f64>,
    /// Time-per-output-token target, ms.
    #[arg(long)]
    pub tpot_ms: Option<f64>,
    /// Objective: throughput, latency, cost or slo.
    #[arg(long, default_value = "throughput")]
    pub objective: String,
    /// Plans to show.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also list rejected layouts with their reasons.
    #[arg(long)]
    pub explain: bool,
}

fn load_model(arg: &str) -> anyhow::Result<ModelSpec> {
    let path = Path::new(arg);
    if arg.ends_with(".json") || path.is_file() {
        return ModelSpec::from_config_file(path)
            .with_context(|| format!("reading model config {arg}"));
    }
    match find_model(arg) {
        Some(m) => Ok(m),
        None => bail!(
            "unknown model `{arg}`; known models: {}; or pass a path to a Hugging Face config.json",
            model_names()
        ),
    }
}

fn load_gpu(args: &PlanArgs) -> anyhow::Result<GpuSpec> {
    match (
        &args.gpu,
        args.gpu_memory_gib,
        args.gpu_bandwidth_gbps,
        args.gpu_tflops,
    ) {
        (Some(name), _, _, _) => {
            let mut g = find_gpu(name)
                .with_context(|| format!("unknown GPU `{name}`; known GPUs: {}", gpu_names()))?;
            if let Some(m) = args.gpu_memory_gib {
                g.memory_gib = m;
            }
            if let Some(b) = args.gpu_bandwidth_gbps {
                g.hbm_gbps = b;
            }
            if let Some(t) = args.gpu_tflops {
                g.bf16_tflops = t;
            }
            Ok(g)
        }
        (None, Some(m), Some(b), Some(t)) => {
            let mut g = GpuSpec::custom(m, b, t);
            if let Some(link) = args.gpu_link_gbps {
                g.intra_node_gbps = link;
                g.nvlink = link >= 100.0;
            }
            Ok(g)
        }
        _ => bail!(
            "give --gpu NAME ({}) or all of --gpu-memory-gib, --gpu-bandwidth-gbps and --gpu-tflops",
            gpu_names()
        ),
    }
}

/// Runs `inferplane plan`.
pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let model = load_model(&args.model)?;
    let cluster = Cluster {
        gpu: load_gpu(&args)?,
        gpus_per_node: args.gpus_per_node,
        nodes: args.nodes,
    };
    let weight_dtype = match args.dtype.as_deref() {
        None | Some("auto") => None,
        Some(d) => Some(d.parse::<WeightDtype>()?),
    };
    let opts = EngineOptions {
        engine: args.engine.parse::<Engine>()?,
        weight_dtype,
        kv_dtype: args.kv_dtype.parse::<KvDtype>()?,
        gpu_memory_utilization: args.gpu_memory_utilization,
        ..EngineOptions::default()
    };
    let load = match (args.concurrency, args.request_rate) {
        (_, Some(r)) => Load::RequestRate(r),
        (c, None) => Load::Concurrency(c.unwrap_or(64) as f64),
    };
    let workload = Workload {
        input_tokens: args.input_tokens,
        output_tokens: args.output_tokens,
        load,
        ttft_ms: args.ttft_ms,
        tpot_ms: args.tpot_ms,
    };
    let objective = args.objective.parse::<Objective>()?;
    let mut report = plan_report(&model, &cluster, &workload, objective, &opts)?;
    report.plans.truncate(args.top.max(1));
    if args.json {
        let out = serde_json::json!({
            "model": model.name,
            "gpu": cluster.gpu.name,
            "gpus": cluster.gpus(),
            "objective": objective,
            "workload": workload,
            "plans": report.plans,
            "rejected": if args.explain { serde_json::to_value(&report.rejected)? } else { serde_json::Value::Null },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print_table(
        &model,
        &cluster,
        &workload,
        objective,
        &report,
        args.explain,
    );
    Ok(())
}

fn print_table(
    model: &ModelSpec,
    cluster: &Cluster,
    w: &Workload,
    objective: Objective,
    report: &PlanReport,
    explain: bool,
) {
    let load = match w.load {
        Load::Concurrency(c) => format!("{c:.0} concurrent"),
        Load::RequestRate(r) => format!("{r} req/s"),
    };
    println!(
        "{} on {} x {} ({} per node), {} in / {} out tokens, {load}, objective {:?}",
        model.name,
        cluster.gpus(),
        cluster.gpu.name,
        cluster.gpus_per_node,
        w.input_tokens,
        w.output_tokens,
        objective
    );
    println!(
        "All latency and throughput figures are estimates (analytic model), not measurements.\n"
    );
    println!(
        "{:>4}  {:<20} {:>5} {:>9} {:>8} {:>10} {:>7} {:>9} {:>9} {:>11} {:>11}",
        "rank",
        "layout",
        "GPUs",
        "weights",
        "KV/GPU",
        "KV tokens",
        "max seq",
        "TTFT ms",
        "TPOT ms",
        "tok/s",
        "tok/s max"
    );
    for p in &report.plans {
        row(p);
    }
    println!();
    for p in &report.plans {
        println!("#{} {}: {}", p.rank, p.label, p.reason);
        for warning in &p.warnings {
            println!("    warning: {warning}");
        }
        for c in &p.commands {
            println!("    # {}", c.description);
            println!("    {}", c.command_line());
        }
    }
    if explain && !report.rejected.is_empty() {
        println!("\nRejected layouts:");
        for r in &report.rejected {
            println!(
                "  {:<16} {:?}: {}",
                r.layout.to_string(),
                r.rejection.rule,
                r.rejection.reason
            );
        }
    }
}

fn row(p: &Plan) {
    let m = &p.memory;
    println!(
        "{:>4}  {:<20} {:>5} {:>7.1}Gi {:>6.1}Gi {:>10} {:>7} {:>9.0} {:>9.1} {:>11.0} {:>11.0}",
        p.rank,
        p.label,
        p.gpus_used,
        m.weights_gib,
        m.kv_gib,
        m.kv_capacity_tokens,
        m.max_concurrency,
        p.perf.ttft_ms,
        p.perf.tpot_ms,
        p.tokens_per_sec_total,
        p.capacity_tokens_per_sec_total,
    );
}
