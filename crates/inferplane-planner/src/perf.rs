//! The performance estimate: [`CostModel`], [`EngineEstimate`] and the workload-level
//! [`PerfEstimate`]. Every figure here is an **estimate**.
//!
//! Decode is memory-bandwidth bound, with the calibrated model of research §2.7 [derived fit
//! on AIConfigurator's measured vLLM rows, mean |error| 7% at concurrency <= 16, 13% at
//! 64-128]:
//! `TPOT = (W + B*ctx*kv)/(0.8*BW) + L*(32 us + 2*t_AR) + (B*ISL/OSL)*prefill_cost + B*0.08 ms`.
//!
//! Prefill is compute bound at 60% MFU (§2.7). TP all-reduce, EP all-to-all and
//! PP point-to-point costs come from the link speeds (§2.6). PP runs p micro-batches: a round
//! reads every stage's weights p times but each sequence's KV once, so PP helps throughput
//! at large batches and never helps per-token latency (§2.6, §2.7). The PP terms assume at
//! least p sequences in flight; below that they slightly underestimate the KV read.

use crate::dtype::WeightDtype;
use crate::error::PlanError;
use crate::gpu::GpuSpec;
use crate::memory::{self, MemoryEstimate, Stage};
use crate::model::ModelSpec;
use crate::options::EngineOptions;
use inferplane_core::Layout;
use serde::Serialize;

/// Calibration constants of the analytic model (research §2.7, §4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostModel {
    /// Achieved fraction of HBM bandwidth in decode (0.8: AIConfigurator's
    /// `mem_bw_empirical_scaling_factor`, and the §2.7 fit).
    pub bandwidth_efficiency: f64,
    /// Fixed time per layer per step (32 us, §2.7 fit on Llama-3.1-70B rows).
    pub per_layer_overhead_secs: f64,
    /// Engine overhead per running sequence per step (0.08 ms, §2.7).
    pub per_seq_overhead_secs: f64,
    /// Model FLOPs utilisation in prefill (0.6; §2.7 "about 60-65% MFU").
    pub prefill_mfu: f64,
    /// Latency of one point-to-point message (10 us, AIConfigurator `p2p_latency`).
    pub link_latency_secs: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            bandwidth_efficiency: 0.8,
            per_layer_overhead_secs: 32e-6,
            per_seq_overhead_secs: 0.08e-3,
            prefill_mfu: 0.6,
            link_latency_secs: 10e-6,
        }
    }
}

/// Per-instance engine timing and capacity estimate, for one engine instance with a given layout.
///
/// One engine step takes `decode_step_base_secs + n_seqs * decode_secs_per_seq + kv_tokens *
/// decode_secs_per_kv_token + prefill_tokens * prefill_secs_per_token`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineEstimate {
    /// Compute-bound prefill time per prompt token (whole instance, pipelined).
    pub prefill_secs_per_token: f64,
    /// One decode step at batch 1 excluding per-seq/KV terms (weights read + per-layer overhead + comms).
    pub decode_step_base_secs: f64,
    /// Extra step time per running sequence.
    pub decode_secs_per_seq: f64,
    /// Extra step time per context token held by the batch (KV read).
    pub decode_secs_per_kv_token: f64,
    /// KV-cache capacity of the instance, in tokens (all DP ranks; sliding-window layers
    /// counted at the typical context).
    pub kv_capacity_tokens: u64,
    /// Engine max_num_seqs over the instance: vLLM's default per DP rank (1024 on >= 70 GiB
    /// non-A100 GPUs, else 256) times DP, capped by the sequences the KV cache holds at the
    /// typical context.
    pub max_num_seqs: u32,
    /// Context length used.
    pub max_model_len: u32,
}

impl EngineEstimate {
    /// Time of one engine step.
    pub fn step_secs(&self, n_seqs: f64, kv_tokens: f64, prefill_tokens: f64) -> f64 {
        self.decode_step_base_secs
            + n_seqs * self.decode_secs_per_seq
            + kv_tokens * self.decode_secs_per_kv_token
            + prefill_tokens * self.prefill_secs_per_token
    }

    /// Output tokens/s of the instance with `concurrency` running sequences (the predicted
    /// rate the control plane uses until measured rates replace it).
    pub fn decode_tokens_per_sec(
        &self,
        concurrency: f64,
        input_tokens: f64,
        output_tokens: f64,
    ) -> f64 {
        concurrency.max(1.0) / self.tpot_secs(concurrency, input_tokens, output_tokens)
    }

    /// Time per output token with `concurrency` running sequences in steady state: each holds
    /// `input + output/2` tokens on average and `concurrency * input/output` prompt tokens
    /// are prefilled per step (chunked prefill, §2.7).
    pub fn tpot_secs(&self, concurrency: f64, input_tokens: f64, output_tokens: f64) -> f64 {
        let b = concurrency.max(1.0);
        self.step_secs(
            b,
            b * (input_tokens + output_tokens / 2.0),
            b * input_tokens / output_tokens.max(1.0),
        )
    }
}

/// An [`EngineEstimate`] plus the single-prompt latency terms the planner needs for TTFT.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// The step model.
    pub estimate: EngineEstimate,
    /// Latency per prompt token of one prompt alone (no pipelining over PP or DP).
    pub prefill_latency_secs_per_token: f64,
    /// Fixed latency of one forward pass (layers, all-reduces, stage hops).
    pub forward_fixed_secs: f64,
}

impl CostModel {
    /// Latency part of one all-reduce over `t` GPUs: NVLink custom all-reduce fitted to
    /// research §2.7 (TP2 12 us, TP4 16 us, TP8 19 us); otherwise an NCCL ring, 2(t-1) hops.
    fn all_reduce_latency(&self, t: u64, nvlink: bool) -> f64 {
        match (t, nvlink) {
            (0 | 1, _) => 0.0,
            (_, true) => 8.5e-6 + 3.5e-6 * (t as f64).log2(),
            (_, false) => 2.0 * (t - 1) as f64 * self.link_latency_secs,
        }
    }

    /// The step model for `layout`, after memory has been checked.
    #[allow(clippy::too_many_arguments)]
    pub fn timing(
        &self,
        model: &ModelSpec,
        gpu: &GpuSpec,
        layout: Layout,
        opts: &EngineOptions,
        dtype: WeightDtype,
        stages: &[Stage],
        mem: &MemoryEstimate,
    ) -> Timing {
        let (t, p, d, ep) = (
            layout.tp.max(1) as u64,
            layout.pp.max(1) as u64,
            layout.dp.max(1) as u64,
            layout.ep.max(1) as u64,
        );
        let gpn = opts.gpus_per_node.max(1) as u64;
        let (h, l) = (model.hidden as f64, model.layers as f64);
        let link = |group: u64| -> (f64, bool) {
            if group <= gpn {
                (gpu.intra_node_gbps * 1e9, gpu.nvlink)
            } else {
                (gpu.inter_node_gbps * 1e9, false)
            }
        };
        let bw = gpu.hbm_gbps * 1e9 * self.bandwidth_efficiency;
        // TP all-reduce: 2 per layer, message h*2 bytes per token, ring factor 2(t-1)/t (§2.6).
        let (tp_bps, tp_nvlink) = link(t);
        let ar_lat = self.all_reduce_latency(t, tp_nvlink);
        let ar_tok = l * 2.0 * (2.0 * (t - 1) as f64 / t as f64) * h * 2.0 / tp_bps;
        // MoE across DP ranks (§2.6, vLLM DP semantics). With EP: all-to-all of each rank's own
        // tokens (dispatch, FP8 with FP8 weights, + BF16 combine; k copies; (EP-1)/EP leave).
        // Without EP, experts are TP-sharded over the TP x DP group: every rank all-gathers the
        // group's tokens and reduce-scatters the outputs (ring factor (g-1)/g, per group token).
        // With DP = 1 the attention all-reduce already combines expert outputs.
        let moe_layers = model.moe_layers() as f64;
        let g = t * d;
        let (a2a_tok, group_tok, moe_lat) = match model.moe {
            Some(m) if d > 1 && ep > 1 => {
                let dispatch = if dtype == WeightDtype::Fp8 { 1.0 } else { 2.0 };
                let bytes = moe_layers
                    * m.experts_per_token as f64
                    * h
                    * (dispatch + 2.0)
                    * (ep - 1) as f64
                    / ep as f64;
                (
                    bytes / link(g).0,
                    0.0,
                    moe_layers * 2.0 * self.link_latency_secs,
                )
            }
            Some(_) if d > 1 => {
                let (bps, nv) = link(g);
                let bytes = moe_layers * 2.0 * (g - 1) as f64 / g as f64 * h * 2.0;
                (
                    0.0,
                    bytes / bps,
                    moe_layers * 2.0 * self.all_reduce_latency(g, nv),
                )
            }
            _ => (0.0, 0.0, 0.0),
        };
        // PP: hidden state + residual per boundary (§2.6).
        let p2p_tok = (p - 1) as f64 * h * 2.0 * 2.0 / link(t * p).0;
        let p2p_lat = (p - 1) as f64 * self.link_latency_secs;
        let comm_tok = ar_tok + a2a_tok + p2p_tok;
        let a2a_lat = moe_lat;
        // MoE: experts touched by n tokens under uniform routing, 1-(1-k/E)^n (§2.7).
        let touched = model.moe.map_or(1.0, |m| {
            let n = opts.reference_concurrency.max(1) as f64;
            1.0 - (1.0 - m.experts_per_token as f64 / m.experts as f64).powf(n)
        });
        let w_read = stages
            .iter()
            .map(|s| {
                s.weight_bytes - s.moe_layers as f64 * s.expert_bytes_per_layer * (1.0 - touched)
            })
            .fold(0.0, f64::max);
        let fixed = l * self.per_layer_overhead_secs + l * 2.0 * ar_lat + a2a_lat + p2p_lat;
        let base = p as f64 * w_read / bw + fixed;
        let per_seq = (self.per_seq_overhead_secs + comm_tok) / d as f64 + group_tok;
        let isl = opts.typical_input_tokens.max(1) as u64;
        let ctx = isl + opts.typical_output_tokens as u64 / 2;
        let eff_kv = stages
            .iter()
            .map(|s| s.seq_kv_bytes(model, ctx, 1) as f64 / ctx as f64)
            .fold(0.0, f64::max);
        let per_kv = eff_kv / bw / d as f64;
        let fp8 = matches!(dtype, WeightDtype::Fp8 | WeightDtype::Int8) && gpu.arch.has_fp8();
        let flops = gpu.peak_tflops(fp8) * 1e12 * self.prefill_mfu;
        let active = model.param_counts().active_non_embedding as f64;
        // FLOPs per prompt token: 2*N_active + causal attention 2*L*T*n_h*d_h (§2.7).
        let tok_flops = 2.0 * active + 2.0 * l * isl as f64 * (model.heads * model.head_dim) as f64;
        let compute_tok = tok_flops / (t as f64 * flops);
        let latency_tok = compute_tok + comm_tok + group_tok;
        let per_prefill = (compute_tok + comm_tok) / (p * d) as f64 + group_tok / p as f64;
        let kv_capacity_tokens = if model.sliding.is_some() && eff_kv > 0.0 {
            (mem.kv_capacity_tokens as f64 * mem.kv_bytes_per_token as f64 / eff_kv) as u64
        } else {
            mem.kv_capacity_tokens
        };
        // vLLM applies max_num_seqs per DP rank (research §1.4, data_parallel_deployment.md).
        let default_seqs: u64 = if gpu.vllm_large_defaults() { 1024 } else { 256 } * d;
        let kv_seqs = (kv_capacity_tokens / ctx).max(1);
        let max_num_seqs = opts
            .max_num_seqs
            .map_or(default_seqs.min(kv_seqs), |s| s as u64)
            .min(u32::MAX as u64) as u32;
        Timing {
            estimate: EngineEstimate {
                prefill_secs_per_token: per_prefill,
                decode_step_base_secs: base,
                decode_secs_per_seq: per_seq,
                decode_secs_per_kv_token: per_kv,
                kv_capacity_tokens,
                max_num_seqs,
                max_model_len: mem.max_model_len,
            },
            prefill_latency_secs_per_token: latency_tok,
            forward_fixed_secs: fixed,
        }
    }

    /// The engine estimate of one instance of `model` on `gpu` with `layout`, for the
    /// simulator and the control plane's predicted rates.
    pub fn engine_estimate(
        &self,
        model: &ModelSpec,
        gpu: &GpuSpec,
        layout: Layout,
        opts: &EngineOptions,
    ) -> Result<EngineEstimate, PlanError> {
        opts.validate()?;
        let dtype = opts.weight_dtype_for(model)?;
        let invalid = |reason: String| PlanError::InvalidLayout {
            layout: layout.to_string(),
            model: model.name.clone(),
            reason,
        };
        crate::constraints::check_layout(
            model,
            dtype,
            layout,
            opts.engine,
            gpu,
            opts.gpus_per_node,
        )
        .map_err(|r| invalid(r.reason))?;
        let ctx = opts.typical_input_tokens as u64 + opts.typical_output_tokens as u64;
        let (mem, stages) = memory::estimate(model, gpu, layout, opts, dtype, ctx)
            .map_err(|f| invalid(f.to_string()))?;
        Ok(self
            .timing(model, gpu, layout, opts, dtype, &stages, &mem)
            .estimate)
    }
}

/// How much load reaches one replica.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Requests in flight (closed loop).
    Concurrency(f64),
    /// Requests per second (open loop).
    RequestRate(f64),
}

/// Latency and throughput of one replica under a load. All figures are estimates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerfEstimate {
    /// Requests in flight per replica (given, or from the request rate by Little's law).
    pub concurrency_per_replica: f64,
    /// Sequences the engine actually runs at once (capped by KV and max_num_seqs).
    pub running_per_replica: f64,
    /// Time to first token, ms (prefill + step wait + queueing).
    pub ttft_ms: f64,
    /// Time per output token, ms.
    pub tpot_ms: f64,
    /// Output tokens/s of one replica at this load.
    pub tokens_per_sec_per_replica: f64,
    /// The same per GPU.
    pub tokens_per_sec_per_gpu: f64,
    /// Sequences one replica runs at saturation.
    pub capacity_running: u64,
    /// Output tokens/s of one replica at saturation.
    pub capacity_tokens_per_sec_per_replica: f64,
    /// The load exceeds what the KV cache (or max_num_seqs) holds: requests queue (§2.4 check).
    pub kv_saturated: bool,
    /// Always `"estimate"`: analytic model, not a measurement.
    pub confidence: &'static str,
}

/// Estimates one replica's latency and throughput under `load` for `input`/`output` tokens.
pub fn workload_perf(
    timing: &Timing,
    load: Load,
    input: u32,
    output: u32,
    gpus_per_replica: u32,
) -> PerfEstimate {
    let est = &timing.estimate;
    let (isl, osl) = (input.max(1) as f64, output.max(1) as f64);
    let ctx = isl + osl / 2.0;
    // Steady-state KV check (§2.4 [derived]): c * (ISL + OSL/2) <= KV tokens.
    let cap = ((est.kv_capacity_tokens as f64 / ctx)
        .floor()
        .min(est.max_num_seqs as f64))
    .max(1.0);
    let prefill_one = isl * timing.prefill_latency_secs_per_token + timing.forward_fixed_secs;
    let at = |c: f64| -> (f64, f64, f64, f64) {
        let b = c.min(cap).max(1.0);
        let tpot = est.tpot_secs(b, isl, osl);
        let e2e0 = prefill_one + osl * tpot;
        // Prefill busy fraction from arrivals b/e2e; M/D/1-style wait for other prompts.
        let rho = (b / e2e0 * isl * est.prefill_secs_per_token).min(0.9);
        let mut ttft = 0.5 * tpot + prefill_one * (1.0 + rho / (2.0 * (1.0 - rho)));
        let e2e = ttft + (osl - 1.0) * tpot;
        if c > cap {
            ttft += (c - cap) / cap * e2e;
        }
        (b, tpot, ttft, e2e)
    };
    let (_, cap_tpot, _, cap_e2e) = at(cap);
    let concurrency = match load {
        Load::Concurrency(c) => c.max(0.0),
        Load::RequestRate(rate) => {
            let max_rate = cap / cap_e2e;
            if rate >= max_rate {
                // Overloaded: the queue grows without bound; report the saturated point.
                cap * 2.0
            } else {
                let mut c = rate * at(1.0).3;
                for _ in 0..50 {
                    c = 0.5 * c + 0.5 * rate * at(c).3;
                }
                c
            }
        }
    };
    let (b, tpot, ttft, _) = at(concurrency.max(1.0));
    let tps = if concurrency > 0.0 { b / tpot } else { 0.0 };
    PerfEstimate {
        concurrency_per_replica: concurrency,
        running_per_replica: b,
        ttft_ms: ttft * 1e3,
        tpot_ms: tpot * 1e3,
        tokens_per_sec_per_replica: tps,
        tokens_per_sec_per_gpu: tps / gpus_per_replica.max(1) as f64,
        capacity_running: cap as u64,
        capacity_tokens_per_sec_per_replica: cap / cap_tpot,
        kv_saturated: concurrency > cap,
        confidence: "estimate",
    }
}

#[cfg(test)]
#[path = "perf_tests.rs"]
mod tests;
