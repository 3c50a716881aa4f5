//! Enumerate TP/PP/DP/EP layouts, keep the valid ones, estimate each and rank them by an
//! objective, with DP replicas filling the GPUs left over (research §2.8).

use crate::constraints::{Rejection, Rule, check_layout};
use crate::error::PlanError;
use crate::launch::{LaunchCommand, commands};
use crate::memory::{self, GIB, MemoryEstimate};
use crate::model::ModelSpec;
use crate::options::EngineOptions;
use crate::perf::{CostModel, Load, PerfEstimate, workload_perf};
pub use crate::workload::{Cluster, Objective, Workload};
use inferplane_core::Layout;
use serde::Serialize;

/// One ranked deployment plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// 1 is best.
    pub rank: u32,
    /// One engine instance's layout.
    pub layout: Layout,
    /// Independent instances (DP replicas behind the router).
    pub replicas: u32,
    /// GPUs per instance.
    pub gpus_per_replica: u32,
    /// GPUs used by all replicas.
    pub gpus_used: u32,
    /// Short label such as `TP4 x PP2 x 2 replicas`.
    pub label: String,
    /// Memory of one GPU (tightest stage) and KV capacity of one instance.
    pub memory: MemoryEstimate,
    /// Latency/throughput estimate of one replica, and totals.
    pub perf: PerfEstimate,
    /// Output tokens/s over all replicas at the workload's load (estimate).
    pub tokens_per_sec_total: f64,
    /// Output tokens/s over all replicas at saturation (estimate).
    pub capacity_tokens_per_sec_total: f64,
    /// Whether the TTFT/TPOT targets are met (when given).
    pub meets_slo: Option<bool>,
    /// Why it has this rank.
    pub reason: String,
    /// Allowed but worth knowing.
    pub warnings: Vec<String>,
    /// Engine launch commands.
    pub commands: Vec<LaunchCommand>,
}

/// A layout that was not planned, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedLayout {
    /// The layout.
    pub layout: Layout,
    /// Why.
    pub rejection: Rejection,
}

/// Ranked plans plus rejected layouts (for `--explain`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    /// Plans, best first.
    pub plans: Vec<Plan>,
    /// Layouts rejected, with reasons.
    pub rejected: Vec<RejectedLayout>,
}

/// Ranks layouts for `model` on `cluster` under `workload`, with default engine options (vLLM).
pub fn plan(
    model: &ModelSpec,
    cluster: &Cluster,
    workload: &Workload,
    objective: Objective,
) -> Result<Vec<Plan>, PlanError> {
    plan_report(
        model,
        cluster,
        workload,
        objective,
        &EngineOptions::default(),
    )
    .map(|r| r.plans)
}

fn packs(g: u32, gpn: u32) -> bool {
    if g <= gpn {
        gpn.is_multiple_of(g)
    } else {
        g.is_multiple_of(gpn)
    }
}

/// Candidate layouts: TP among powers of two and divisors of the head count; PP and (MoE)
/// DP up to the cluster; EP off or `tp*dp`; only shapes that pack into whole nodes.
fn candidates(model: &ModelSpec, cluster: &Cluster) -> Vec<Layout> {
    let (g, gpn) = (cluster.gpus(), cluster.gpus_per_node);
    let mut out = Vec::new();
    for t in 1..=g {
        if !(t.is_power_of_two() || model.heads.is_multiple_of(t as u64)) {
            continue;
        }
        for p in 1..=(g / t).min(model.layers as u32) {
            if !packs(t * p, gpn) {
                continue;
            }
            let max_d = if model.is_moe() && t * p <= gpn {
                g / (t * p)
            } else {
                1
            };
            for d in 1..=max_d {
                if !packs(t * p * d, gpn) {
                    continue;
                }
                out.push(Layout {
                    tp: t,
                    pp: p,
                    dp: d,
                    ep: 1,
                });
                if model.is_moe() && t * d > 1 {
                    out.push(Layout {
                        tp: t,
                        pp: p,
                        dp: d,
                        ep: t * d,
                    });
                }
            }
        }
    }
    out
}

fn label(l: Layout, replicas: u32) -> String {
    let mut parts = vec![format!("TP{}", l.tp)];
    if l.pp > 1 {
        parts.push(format!("PP{}", l.pp));
    }
    if l.dp > 1 {
        parts.push(format!("DP{}", l.dp));
    }
    if l.ep > 1 {
        parts.push(format!("EP{}", l.ep));
    }
    let mut s = parts.join("+");
    if replicas > 1 {
        s.push_str(&format!(" x{replicas}"));
    }
    s
}

struct Scored {
    plan: Plan,
    key: (f64, f64),
}

/// [`plan`] with explicit engine options, also returning the rejected layouts.
pub fn plan_report(
    model: &ModelSpec,
    cluster: &Cluster,
    workload: &Workload,
    objective: Objective,
    engine: &EngineOptions,
) -> Result<PlanReport, PlanError> {
    validate(cluster, workload, objective)?;
    let dtype = engine.weight_dtype_for(model)?;
    let ctx = workload.input_tokens + workload.output_tokens;
    if ctx as u64 > model.max_position {
        return Err(PlanError::InvalidInput {
            what: "workload",
            reason: format!(
                "input + output = {ctx} tokens exceeds {}'s context of {}",
                model.name, model.max_position
            ),
        });
    }
    let opts = EngineOptions {
        gpus_per_node: cluster.gpus_per_node,
        max_model_len: Some(engine.max_model_len.unwrap_or(ctx)),
        typical_input_tokens: workload.input_tokens,
        typical_output_tokens: workload.output_tokens,
        ..engine.clone()
    };
    let cm = CostModel::default();
    let (gpu, gpn) = (&cluster.gpu, cluster.gpus_per_node);
    let mut scored = Vec::new();
    let mut rejected = Vec::new();
    let (total_c, total_rate) = match workload.load {
        Load::Concurrency(c) => (c, None),
        Load::RequestRate(r) => (0.0, Some(r)),
    };
    for layout in candidates(model, cluster) {
        let reject = |rejected: &mut Vec<RejectedLayout>, r: Rejection| {
            rejected.push(RejectedLayout {
                layout,
                rejection: r,
            })
        };
        let mut warnings = match check_layout(model, dtype, layout, opts.engine, gpu, gpn) {
            Ok(w) => w,
            Err(r) => {
                reject(&mut rejected, r);
                continue;
            }
        };
        let (mem, stages) = match memory::estimate(model, gpu, layout, &opts, dtype, ctx as u64) {
            Ok(x) => x,
            Err(f) => {
                reject(&mut rejected, Rejection::new(Rule::Memory, f.to_string()));
                continue;
            }
        };
        let g = layout.gpu_count();
        let fill = if g <= gpn {
            cluster.nodes * (gpn / g)
        } else {
            cluster.nodes / (g / gpn)
        };
        if fill == 0 {
            reject(
                &mut rejected,
                Rejection::new(
                    Rule::Placement,
                    format!("needs {g} GPUs, the cluster has {}", cluster.gpus()),
                ),
            );
            continue;
        }
        let per_replica = |r: u32| match total_rate {
            Some(rate) => Load::RequestRate(rate / r as f64),
            None => Load::Concurrency((total_c / r as f64).ceil()),
        };
        let eval = |r: u32| {
            let o = EngineOptions {
                reference_concurrency: match per_replica(r) {
                    Load::Concurrency(c) => c.max(1.0) as u32,
                    Load::RequestRate(_) => 64,
                },
                ..opts.clone()
            };
            let timing = cm.timing(model, gpu, layout, &o, dtype, &stages, &mem);
            workload_perf(
                &timing,
                per_replica(r),
                workload.input_tokens,
                workload.output_tokens,
                g,
            )
        };
        let meets = |p: &PerfEstimate| -> Option<bool> {
            if workload.ttft_ms.is_none() && workload.tpot_ms.is_none() {
                return None;
            }
            Some(
                !p.kv_saturated
                    && workload.ttft_ms.is_none_or(|t| p.ttft_ms <= t)
                    && workload.tpot_ms.is_none_or(|t| p.tpot_ms <= t),
            )
        };
        let chosen = match objective {
            Objective::Throughput | Objective::Latency => Some((fill, eval(fill))),
            Objective::Cost => (1..=fill)
                .map(|r| (r, eval(r)))
                .find(|(_, p)| !p.kv_saturated),
            Objective::Slo => (1..=fill)
                .map(|r| (r, eval(r)))
                .find(|(_, p)| meets(p) == Some(true)),
        };
        let Some((replicas, perf)) = chosen else {
            let best = eval(fill);
            let why = match objective {
                Objective::Slo => format!(
                    "misses the SLO even with {fill} replicas: TTFT {:.0} ms, TPOT {:.1} ms",
                    best.ttft_ms, best.tpot_ms
                ),
                _ => format!(
                    "even {fill} replicas saturate the KV cache ({} running per replica)",
                    best.capacity_running
                ),
            };
            reject(&mut rejected, Rejection::new(Rule::Capacity, why));
            continue;
        };
        if g * fill < cluster.gpus()
            && matches!(objective, Objective::Throughput | Objective::Latency)
        {
            warnings.push(format!("{} GPUs left idle", cluster.gpus() - g * fill));
        }
        let tps_total = perf.tokens_per_sec_per_replica * replicas as f64;
        let cap_total = perf.capacity_tokens_per_sec_per_replica * replicas as f64;
        let gpus_used = g * replicas;
        let key = match objective {
            Objective::Throughput => (-cap_total, perf.tpot_ms),
            Objective::Latency => (perf.tpot_ms, perf.ttft_ms),
            Objective::Cost => (gpus_used as f64, -cap_total / gpus_used as f64),
            Objective::Slo => (gpus_used as f64, perf.tpot_ms),
        };
        let cmds = commands(
            model,
            layout,
            replicas,
            &opts,
            dtype,
            &mem,
            perf.capacity_running,
            cluster,
        );
        scored.push(Scored {
            plan: Plan {
                rank: 0,
                layout,
                replicas,
                gpus_per_replica: g,
                gpus_used,
                label: label(layout, replicas),
                meets_slo: meets(&perf),
                memory: mem,
                tokens_per_sec_total: tps_total,
                capacity_tokens_per_sec_total: cap_total,
                reason: String::new(),
                warnings,
                commands: cmds,
                perf,
            },
            key,
        });
    }
    if scored.is_empty() {
        return Err(no_plan(model, cluster, &opts, dtype, &rejected));
    }
    scored.sort_by(|a, b| {
        a.key
            .0
            .total_cmp(&b.key.0)
            .then(a.key.1.total_cmp(&b.key.1))
    });
    let best_key = scored[0].key;
    let plans = scored
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let mut p = s.plan;
            p.rank = i as u32 + 1;
            p.reason = reason(objective, &p, best_key, s.key);
            p
        })
        .collect();
    Ok(PlanReport { plans, rejected })
}

fn reason(objective: Objective, p: &Plan, best: (f64, f64), key: (f64, f64)) -> String {
    let f = &p.perf;
    let main = match objective {
        Objective::Throughput => format!(
            "{:.0} tok/s at saturation ({:.0}/GPU, {} running per replica)",
            p.capacity_tokens_per_sec_total,
            p.capacity_tokens_per_sec_total / p.gpus_used as f64,
            f.capacity_running
        ),
        Objective::Latency => format!(
            "TPOT {:.1} ms, TTFT {:.0} ms at {:.0} in flight per replica",
            f.tpot_ms, f.ttft_ms, f.concurrency_per_replica
        ),
        Objective::Cost => format!(
            "carries the load on {} GPUs, {:.0} tok/s/GPU at saturation",
            p.gpus_used,
            p.capacity_tokens_per_sec_total / p.gpus_used as f64
        ),
        Objective::Slo => format!(
            "meets the targets on {} GPUs: TTFT {:.0} ms, TPOT {:.1} ms",
            p.gpus_used, f.ttft_ms, f.tpot_ms
        ),
    };
    if p.rank == 1 {
        return format!("best: {main}");
    }
    let behind = match objective {
        Objective::Throughput => format!("{:.0}% below #1", 100.0 * (1.0 - key.0 / best.0)),
        Objective::Latency => format!("{:.0}% slower TPOT than #1", 100.0 * (key.0 / best.0 - 1.0)),
        Objective::Cost | Objective::Slo if key.0 > best.0 => {
            format!("{} more GPUs than #1", key.0 - best.0)
        }
        _ => "same GPUs as #1, lower tie-break".to_string(),
    };
    format!("{main}; {behind}")
}

fn validate(cluster: &Cluster, workload: &Workload, objective: Objective) -> Result<(), PlanError> {
    let bad = |what, reason: &str| {
        Err(PlanError::InvalidInput {
            what,
            reason: reason.to_string(),
        })
    };
    if cluster.gpus_per_node == 0 || cluster.nodes == 0 {
        return bad("cluster", "GPUs per node and nodes must be at least 1");
    }
    let g = &cluster.gpu;
    if !(g.memory_gib > 0.0
        && g.hbm_gbps > 0.0
        && g.bf16_tflops > 0.0
        && g.intra_node_gbps > 0.0
        && g.inter_node_gbps > 0.0)
    {
        return bad(
            "GPU figures",
            "memory, bandwidth, TFLOPS and link speeds must be positive",
        );
    }
    if workload.input_tokens == 0 || workload.output_tokens == 0 {
        return bad("workload", "input and output tokens must be at least 1");
    }
    match workload.load {
        Load::Concurrency(c) if !(c >= 1.0 && c.is_finite()) => {
            return bad("workload", "concurrency must be at least 1");
        }
        Load::RequestRate(r) if !(r > 0.0 && r.is_finite()) => {
            return bad("workload", "request rate must be positive");
        }
        _ => {}
    }
    if objective == Objective::Slo && workload.ttft_ms.is_none() && workload.tpot_ms.is_none() {
        return bad("objective", "slo needs a TTFT or TPOT target");
    }
    Ok(())
}

/// The error when nothing was planned: "does not fit" with the GPUs it needs, or the reasons.
fn no_plan(
    model: &ModelSpec,
    cluster: &Cluster,
    opts: &EngineOptions,
    dtype: crate::dtype::WeightDtype,
    rejected: &[RejectedLayout],
) -> PlanError {
    let mem_only = rejected
        .iter()
        .all(|r| matches!(r.rejection.rule, Rule::Memory | Rule::Placement));
    let weights = memory::total_weight_bytes(model, dtype);
    if mem_only {
        let (util, act, other) = memory::reserves(
            &cluster.gpu,
            model,
            Layout {
                tp: 2,
                ..Layout::SINGLE
            },
            opts,
        );
        let room = (cluster.gpu.memory_gib * util - act - other) * GIB;
        let needed = if room > 0.0 {
            (weights / room).ceil() as u32
        } else {
            u32::MAX
        };
        return PlanError::DoesNotFit {
            model: model.name.clone(),
            gpu: cluster.gpu.name.clone(),
            gpus_available: cluster.gpus(),
            gpus_needed: needed.max(cluster.gpus() + 1),
            weights_gib: weights / GIB,
        };
    }
    let mut reasons: Vec<String> = rejected
        .iter()
        .filter(|r| !matches!(r.rejection.rule, Rule::Memory))
        .take(3)
        .map(|r| format!("{}: {}", r.layout, r.rejection.reason))
        .collect();
    reasons.dedup();
    PlanError::NoFeasiblePlan {
        reason: reasons.join("; "),
    }
}

#[cfg(test)]
#[path = "search_tests.rs"]
mod tests;
