//! Memory per GPU: weights per pipeline stage, KV bytes per token, the engine's budget and
//! reserves, KV capacity and the concurrency it allows.
//!
//! Sharding follows research §2.2 (vLLM semantics): q/o split by TP, K/V split by TP up to
//! the KV-head count and replicated beyond, MLA down-projections replicated, norms and routers
//! replicated, vocab-parallel embedding/lm_head on the first/last stage, experts split by
//! `moe_tp = tp*dp` without EP or whole under EP (`ep = tp*dp`). KV per token follows §2.3
//! (GQA replication, MLA latent not divided by TP, sliding windows). The budget follows §2.4.

use crate::dtype::WeightDtype;
use crate::gpu::GpuSpec;
use crate::model::ModelSpec;
use crate::options::{Engine, EngineOptions, VLLM_DEFAULT_UTILIZATION};
use inferplane_core::Layout;
use serde::Serialize;

/// Bytes in a GiB.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// vLLM peak activation, [derived] fit on llm-d's vLLM 0.11 H100 measurements (research
/// §1.1): 4.76-4.84 GiB for Llama (V=128,256), 5.56-5.64 for Qwen3 (V=151,936), 7.38 for
/// gpt-oss (V=201,088) lie on `0.2566 GiB + 3.5424e-5 GiB x V` within 0.08 GiB: the sampler's
/// logits buffers for 1024 sequences dominate. Scaled by max_num_seqs/1024 elsewhere.
const VLLM_ACTIVATION_BASE_GIB: f64 = 0.2566;
const VLLM_ACTIVATION_PER_VOCAB_GIB: f64 = 3.5424e-5;
/// vLLM non-torch memory: 0.13 GiB alone, 0.55 GiB with NCCL peers (research §2.4).
const VLLM_NON_TORCH_SINGLE_GIB: f64 = 0.13;
const VLLM_NON_TORCH_MULTI_GIB: f64 = 0.55;

/// One pipeline stage as seen by one of its GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Layers in the stage.
    pub layers: u64,
    /// Of which MoE layers.
    pub moe_layers: u64,
    /// Weight bytes on one GPU of the stage.
    pub weight_bytes: f64,
    /// Routed-expert bytes on one GPU, per MoE layer.
    pub expert_bytes_per_layer: f64,
    /// KV bytes per token per GPU for each full-attention layer of the stage.
    pub kv_bytes_per_layer_token: u64,
    /// Layers of the stage that use the sliding window.
    pub sliding_layers: u64,
}

/// Everything memory-related for one instance layout. Per-GPU figures are for the tightest
/// pipeline stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// Usable GPU memory, GiB.
    pub gpu_memory_gib: f64,
    /// Fraction of it the engine may use (vLLM utilisation / SGLang mem-fraction-static).
    pub utilization: f64,
    /// Weights on the most loaded GPU, GiB.
    pub weights_gib: f64,
    /// Activation (profiling) reserve, GiB.
    pub activation_gib: f64,
    /// Non-torch (NCCL, CUDA context) reserve, GiB.
    pub other_gib: f64,
    /// KV pool on the GPU with the most weights (the smallest pool), GiB.
    pub kv_gib: f64,
    /// KV bytes per token on that GPU, all its layers at full attention.
    pub kv_bytes_per_token: u64,
    /// KV capacity of the instance in tokens (all DP ranks).
    pub kv_capacity_tokens: u64,
    /// Context length the plan uses.
    pub max_model_len: u32,
    /// Sequences of `context` tokens that fit at once (all DP ranks).
    pub max_concurrency: u64,
}

/// vLLM's layer split over pipeline stages (`get_pp_indices`, research §1.4): `L/p` each,
/// the remainder one layer each to stages -2, -3, ... (never the last).
pub fn pp_layers(layers: u64, pp: u64) -> Vec<u64> {
    let pp = pp.max(1);
    let mut out = vec![layers / pp; pp as usize];
    let rem = (layers % pp) as usize;
    for i in 0..rem {
        let idx = out.len() - 2 - i;
        out[idx] += 1;
    }
    out
}

/// Per-GPU KV bytes per token of one full-attention layer (research §2.3).
pub fn kv_bytes_per_layer_token(model: &ModelSpec, tp: u64, kv_bytes: u64) -> u64 {
    match model.attention {
        crate::model::Attention::Mla {
            kv_lora_rank,
            qk_rope_head_dim,
            ..
        } => (kv_lora_rank + qk_rope_head_dim) * kv_bytes,
        // vLLM get_num_kv_heads: max(1, n_kv / tp).
        crate::model::Attention::Gqa { .. } => {
            2 * (model.kv_heads / tp.max(1)).max(1) * model.head_dim * kv_bytes
        }
    }
}

/// Routed-expert bytes per GPU for one MoE layer, and experts held (whole or sliced).
fn expert_bytes(model: &ModelSpec, dtype: WeightDtype, layout: Layout) -> (f64, u64) {
    let Some(m) = model.moe else { return (0.0, 0) };
    let (t, d, ep) = (layout.tp as u64, layout.dp as u64, layout.ep as u64);
    let bytes_per = dtype.bytes_per_weight() * block_scale_factor(model, dtype);
    let (local_experts, local_inter) = if ep > 1 {
        (m.experts.div_ceil(ep), m.expert_intermediate)
    } else {
        (m.experts, m.expert_intermediate.div_ceil(t * d))
    };
    // [derived] MXFP4 MoE kernels pad the per-rank expert intermediate size to a multiple of
    // 256; this reproduces llm-d's measured gpt-oss weights (13.47 / 64.38 GiB, research §1.1).
    let local_inter = if dtype == WeightDtype::Mxfp4 {
        local_inter.div_ceil(256) * 256
    } else {
        local_inter
    };
    let h = model.hidden;
    let matrices = 3 * h * local_inter;
    let biases = if m.expert_bias {
        2 * local_inter + h
    } else {
        0
    };
    let per_expert = matrices as f64 * bytes_per + biases as f64 * 2.0;
    (per_expert * local_experts as f64, local_experts)
}

/// Block-FP8 scales: one fp32 per 128x128 block, about 0.02% (research §2.2).
fn block_scale_factor(model: &ModelSpec, dtype: WeightDtype) -> f64 {
    match (dtype, model.fp8_block) {
        (WeightDtype::Fp8, Some(b)) => 1.0 + 4.0 / (b * b) as f64,
        _ => 1.0,
    }
}

/// Per-GPU weights and KV shape of each pipeline stage.
pub fn stages(model: &ModelSpec, dtype: WeightDtype, kv_bytes: u64, layout: Layout) -> Vec<Stage> {
    let t = layout.tp.max(1) as u64;
    let p = layout.pp.max(1) as u64;
    let h = model.hidden;
    // MXFP4 covers experts only; attention, embeddings and dense parts stay BF16 (§2.2).
    let lin = match dtype {
        WeightDtype::Mxfp4 => 2.0,
        d => d.bytes_per_weight() * block_scale_factor(model, d),
    };
    let a = model.attention_params();
    let attn = (a.tp_sharded / t) as f64 * lin
        + (a.kv_sharded / t.min(model.kv_heads).max(1)) as f64 * lin
        + a.replicated as f64 * lin
        + (a.small + 2 * h) as f64 * 2.0;
    let dense_mlp = (3 * h * model.intermediate / t) as f64 * lin;
    let (experts, _) = expert_bytes(model, dtype, layout);
    let moe_rest = model.moe.map_or(0.0, |m| {
        (m.shared_experts * 3 * h * m.expert_intermediate / t) as f64 * lin
            + model.router_params() as f64 * 2.0
    });
    let embed = (model.padded_vocab() * h / t) as f64 * 2.0;
    let kv_layer = kv_bytes_per_layer_token(model, t, kv_bytes);
    let split = pp_layers(model.layers, p);
    let mut start = 0;
    let mut out = Vec::with_capacity(split.len());
    for (s, &n) in split.iter().enumerate() {
        let range = start..start + n;
        start += n;
        let moe_layers = range.clone().filter(|&i| model.layer_is_moe(i)).count() as u64;
        let sliding_layers = range.clone().filter(|&i| model.layer_is_sliding(i)).count() as u64;
        let mut w = n as f64 * attn
            + (n - moe_layers) as f64 * dense_mlp
            + moe_layers as f64 * (experts + moe_rest);
        if s == 0 {
            w += embed;
        }
        if s + 1 == split.len() {
            // lm_head (shared with the embedding only when tied and on the same GPU) + final norm.
            if !(model.tied_embeddings && p == 1) {
                w += embed;
            }
            w += h as f64 * 2.0;
        }
        out.push(Stage {
            layers: n,
            moe_layers,
            weight_bytes: w,
            expert_bytes_per_layer: experts,
            kv_bytes_per_layer_token: kv_layer,
            sliding_layers,
        });
    }
    out
}

impl Stage {
    /// KV bytes on one GPU for one sequence of `ctx` tokens, rounded up to blocks.
    pub fn seq_kv_bytes(&self, model: &ModelSpec, ctx: u64, block: u64) -> u64 {
        let round = |n: u64| n.div_ceil(block) * block;
        let window = model.sliding.map_or(ctx, |s| s.window.min(ctx));
        let full = self.layers - self.sliding_layers;
        (full * round(ctx) + self.sliding_layers * round(window)) * self.kv_bytes_per_layer_token
    }

    /// KV bytes per token on one GPU, all layers at full attention.
    pub fn kv_bytes_per_token(&self) -> u64 {
        self.layers * self.kv_bytes_per_layer_token
    }
}

/// The engine's memory reserves: (budget fraction, activation GiB, other GiB).
pub fn reserves(
    gpu: &GpuSpec,
    model: &ModelSpec,
    layout: Layout,
    opts: &EngineOptions,
) -> (f64, f64, f64) {
    let world = layout.tp.max(1) * layout.pp.max(1) * layout.dp.max(1);
    match opts.engine {
        Engine::Vllm => {
            let util = opts
                .gpu_memory_utilization
                .unwrap_or(VLLM_DEFAULT_UTILIZATION);
            let seqs_scale = if gpu.vllm_large_defaults() { 1.0 } else { 0.25 };
            let act = VLLM_ACTIVATION_BASE_GIB
                + VLLM_ACTIVATION_PER_VOCAB_GIB * model.vocab as f64 * seqs_scale;
            let other = if world == 1 {
                VLLM_NON_TORCH_SINGLE_GIB
            } else {
                VLLM_NON_TORCH_MULTI_GIB
            };
            (util, act, other)
        }
        Engine::Sglang => {
            // SGLang auto mem_fraction_static (research §1.5, server_args.py): reserved MiB =
            // 512 + max(chunked_prefill, 2048)*1.5 + cuda_graph_max_bs*2 + tp*pp/8*1024, with a
            // 10 GiB floor above 60 GiB. chunked_prefill: 16384 on B200, 8192 on >=70 GiB
            // GPUs, 2048 below 35 GB, else 4096; cuda_graph_max_bs assumed 256.
            let mem = gpu.memory_gib;
            let chunk = match mem {
                m if m >= 170.0 => 16384.0,
                m if m >= 70.0 => 8192.0,
                m if m < 33.0 => 2048.0,
                _ => 4096.0,
            };
            let tp_pp = (layout.tp.max(1) * layout.pp.max(1)) as f64;
            let mut reserved = (512.0 + chunk * 1.5 + 256.0 * 2.0 + tp_pp / 8.0 * 1024.0) / 1024.0;
            if mem > 60.0 {
                reserved = reserved.max(10.0);
            }
            let frac = opts
                .gpu_memory_utilization
                .unwrap_or(((mem - reserved) / mem).max(0.0));
            // SGLang's fraction covers weights + KV only; the reserve is the rest.
            (frac, 0.0, 0.0)
        }
    }
}

/// Why a layout does not fit in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum MemoryFailure {
    /// Weights plus reserves exceed the engine's share of the GPU.
    Weights {
        /// Weights on the fullest GPU, GiB.
        weights_gib: f64,
        /// Reserves, GiB.
        reserves_gib: f64,
        /// The engine's budget, GiB.
        budget_gib: f64,
    },
    /// Weights fit but one `max_model_len` sequence does not fit in the KV pool.
    Kv {
        /// KV pool, GiB.
        kv_gib: f64,
        /// Tokens it holds.
        tokens: u64,
        /// Tokens one sequence needs.
        needed: u64,
    },
}

impl std::fmt::Display for MemoryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryFailure::Weights {
                weights_gib,
                reserves_gib,
                budget_gib,
            } => write!(
                f,
                "weights {weights_gib:.2} GiB/GPU + reserves {reserves_gib:.2} GiB exceed the {budget_gib:.2} GiB budget"
            ),
            MemoryFailure::Kv {
                kv_gib,
                tokens,
                needed,
            } => write!(
                f,
                "KV pool {kv_gib:.2} GiB/GPU holds {tokens} tokens, less than one {needed}-token sequence"
            ),
        }
    }
}

/// The memory estimate of `layout`, or why it does not fit. `context` is the sequence length
/// used for the concurrency figure (input + output tokens); `opts.max_model_len` (or the
/// model maximum capped by KV) is the engine's context limit.
pub fn estimate(
    model: &ModelSpec,
    gpu: &GpuSpec,
    layout: Layout,
    opts: &EngineOptions,
    dtype: WeightDtype,
    context: u64,
) -> Result<(MemoryEstimate, Vec<Stage>), MemoryFailure> {
    let kv_b = opts.kv_dtype.bytes();
    let st = stages(model, dtype, kv_b, layout);
    let (util, act, other) = reserves(gpu, model, layout, opts);
    let budget = gpu.memory_gib * util;
    let block = opts.engine.kv_block_tokens();
    let mut tightest: Option<(f64, u64, u64, u64, &Stage)> = None; // (pool, tokens, seqs, bytes/token)
    let mut max_w = 0.0f64;
    for s in &st {
        let w = s.weight_bytes / GIB;
        max_w = max_w.max(w);
        let pool = budget - w - act - other;
        if pool <= 0.0 {
            return Err(MemoryFailure::Weights {
                weights_gib: w,
                reserves_gib: act + other,
                budget_gib: budget,
            });
        }
        let per_tok = s.kv_bytes_per_token().max(1);
        let pool_bytes = pool * GIB;
        let tokens = ((pool_bytes / (block * per_tok) as f64).floor() as u64) * block;
        let seqs = (pool_bytes / s.seq_kv_bytes(model, context.max(1), block).max(1) as f64) as u64;
        if tightest.is_none_or(|t| tokens < t.1) {
            tightest = Some((pool, tokens, seqs, per_tok, s));
        }
    }
    let Some((pool, tokens, _, per_tok, tight)) = tightest else {
        return Err(MemoryFailure::Weights {
            weights_gib: 0.0,
            reserves_gib: 0.0,
            budget_gib: 0.0,
        });
    };
    let seqs = st
        .iter()
        .map(|s| {
            let pool_bytes = (budget - s.weight_bytes / GIB - act - other) * GIB;
            (pool_bytes / s.seq_kv_bytes(model, context.max(1), block).max(1) as f64) as u64
        })
        .min()
        .unwrap_or(0);
    let max_model_len = match opts.max_model_len {
        Some(l) => l as u64,
        None => {
            // vLLM-style auto length: the model maximum, capped to what one sequence can hold.
            let mut l = model.max_position;
            while l > block && tight.seq_kv_bytes(model, l, block) as f64 > pool * GIB {
                l /= 2;
            }
            l
        }
    };
    let one_seq = tight.seq_kv_bytes(model, max_model_len, block) as f64;
    if one_seq > pool * GIB {
        return Err(MemoryFailure::Kv {
            kv_gib: pool,
            tokens,
            needed: max_model_len,
        });
    }
    let dp = layout.dp.max(1) as u64;
    Ok((
        MemoryEstimate {
            gpu_memory_gib: gpu.memory_gib,
            utilization: util,
            weights_gib: max_w,
            activation_gib: act,
            other_gib: other,
            kv_gib: budget - max_w - act - other,
            kv_bytes_per_token: per_tok,
            kv_capacity_tokens: tokens * dp,
            max_model_len: max_model_len.min(u32::MAX as u64) as u32,
            max_concurrency: seqs * dp,
        },
        st,
    ))
}

/// Total weight bytes of the model at `dtype` (TP1, PP1), for "how many GPUs" messages.
pub fn total_weight_bytes(model: &ModelSpec, dtype: WeightDtype) -> f64 {
    stages(model, dtype, 2, Layout::SINGLE)
        .iter()
        .map(|s| s.weight_bytes)
        .sum()
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
