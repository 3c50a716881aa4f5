//! Model architecture: [`ModelSpec`] and exact parameter counts.
//!
//! Counting rules follow research §2.1 (validated against published totals): dense
//! Llama/Qwen2/Mistral layers, Mixtral and Qwen3-MoE experts, DeepSeek-V3 MLA attention,
//! and gpt-oss (attention biases, sinks, expert biases). The catalogue is in `catalog.rs`,
//! config.json parsing in `hf.rs`.

use crate::dtype::WeightDtype;
use serde::{Deserialize, Serialize};

/// Attention variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Attention {
    /// Multi-head / grouped-query / multi-query attention.
    Gqa {
        /// Biases on q, k and v (Qwen2).
        qkv_bias: bool,
        /// A bias on o as well (gpt-oss, Llama with `attention_bias`).
        o_bias: bool,
        /// Per-head q/k RMSNorm of size `head_dim` (Qwen3).
        qk_norm: bool,
        /// One learned sink logit per head (gpt-oss).
        sinks: bool,
    },
    /// DeepSeek multi-head latent attention (research §2.1, §2.3).
    Mla {
        /// Low-rank query dimension (`q_lora_rank`); `None` means a full q projection.
        q_lora_rank: Option<u64>,
        /// Latent KV dimension (`kv_lora_rank`).
        kv_lora_rank: u64,
        /// Non-rotary part of a q/k head (`qk_nope_head_dim`).
        qk_nope_head_dim: u64,
        /// Rotary part of a q/k head, also cached (`qk_rope_head_dim`).
        qk_rope_head_dim: u64,
        /// Value head size (`v_head_dim`).
        v_head_dim: u64,
    },
}

/// Mixture-of-experts shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MoeSpec {
    /// Routed experts per MoE layer (E).
    pub experts: u64,
    /// Experts each token is routed to (k).
    pub experts_per_token: u64,
    /// Shared (always-on) experts per MoE layer (S).
    pub shared_experts: u64,
    /// Intermediate size of one expert (I_e).
    pub expert_intermediate: u64,
    /// Leading layers with a dense MLP instead of experts (`first_k_dense_replace`).
    pub first_dense_layers: u64,
    /// Experts carry biases (gpt-oss).
    pub expert_bias: bool,
    /// Router carries a bias (gpt-oss; DeepSeek's score-correction bias).
    pub router_bias: bool,
}

/// Which layers use a sliding attention window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingPattern {
    /// Every layer (Mistral-7B-v0.1).
    All,
    /// Even-numbered layers slide, odd ones are full (gpt-oss `layer_types`).
    EveryOther,
}

/// A sliding attention window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Window in tokens.
    pub window: u64,
    /// Which layers use it.
    pub pattern: SlidingPattern,
}

/// Everything the planner needs to know about a model, as read from its config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Short catalogue name, e.g. `llama-3.1-70b`.
    pub name: String,
    /// Hugging Face repository id used in launch commands.
    pub hf_id: String,
    /// `hidden_size` (h).
    pub hidden: u64,
    /// `num_hidden_layers` (L).
    pub layers: u64,
    /// `num_attention_heads` (n_h).
    pub heads: u64,
    /// `num_key_value_heads` (n_kv); equals `heads` for MLA.
    pub kv_heads: u64,
    /// `head_dim` (explicit in config.json, else h/n_h). For MLA, the q/k head size.
    pub head_dim: u64,
    /// Dense MLP `intermediate_size` (I).
    pub intermediate: u64,
    /// `vocab_size` (V).
    pub vocab: u64,
    /// `max_position_embeddings`.
    pub max_position: u64,
    /// `tie_word_embeddings`.
    pub tied_embeddings: bool,
    /// Attention variant.
    pub attention: Attention,
    /// Experts, for MoE models.
    pub moe: Option<MoeSpec>,
    /// Sliding attention window, if any layer uses one.
    pub sliding: Option<SlidingWindow>,
    /// The format of the published checkpoint (the default weight dtype).
    pub native_dtype: WeightDtype,
    /// Block size of the published block-FP8 checkpoint (`weight_block_size`), which limits TP
    /// (research §2.5 rule 4). `None` for per-channel FP8 or no FP8 checkpoint.
    pub fp8_block: Option<u64>,
}

/// Parameter counts, split the way they are sharded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct ParamCounts {
    /// Total parameters, as published (no MTP layers, unpadded vocabulary).
    pub total: u64,
    /// Parameters used per token, excluding embedding and lm_head.
    pub active_non_embedding: u64,
    /// Parameters in routed experts (all layers).
    pub routed_experts: u64,
}

impl ModelSpec {
    /// Whether the model has routed experts.
    pub fn is_moe(&self) -> bool {
        self.moe.is_some()
    }

    /// Whether the model uses latent (MLA) attention.
    pub fn is_mla(&self) -> bool {
        matches!(self.attention, Attention::Mla { .. })
    }

    /// Number of MoE layers.
    pub fn moe_layers(&self) -> u64 {
        self.moe
            .map_or(0, |m| self.layers.saturating_sub(m.first_dense_layers))
    }

    /// Whether layer `i` (0-based) uses the sliding window.
    pub fn layer_is_sliding(&self, i: u64) -> bool {
        match self.sliding.map(|s| s.pattern) {
            None => false,
            Some(SlidingPattern::All) => true,
            Some(SlidingPattern::EveryOther) => i.is_multiple_of(2),
        }
    }

    /// Whether layer `i` (0-based) has routed experts.
    pub fn layer_is_moe(&self, i: u64) -> bool {
        self.moe.is_some_and(|m| i >= m.first_dense_layers)
    }

    /// Parameters of one routed expert.
    pub fn expert_params(&self) -> u64 {
        let Some(m) = self.moe else { return 0 };
        let (h, i) = (self.hidden, m.expert_intermediate);
        // gate+up (2·h·I) and down (I·h); gpt-oss adds biases 2I + h (research §2.1).
        3 * h * i + if m.expert_bias { 2 * i + h } else { 0 }
    }

    /// Attention parameters of one layer, split into (sharded by TP, K/V projections
    /// sharded by min(TP, n_kv), replicated matrices, small BF16 tensors).
    pub fn attention_params(&self) -> AttentionParams {
        let (h, nh, nkv, dh) = (self.hidden, self.heads, self.kv_heads, self.head_dim);
        match self.attention {
            Attention::Gqa {
                qkv_bias,
                o_bias,
                qk_norm,
                sinks,
            } => AttentionParams {
                tp_sharded: 2 * h * nh * dh,
                kv_sharded: 2 * h * nkv * dh,
                replicated: 0,
                small: if qkv_bias { nh * dh + 2 * nkv * dh } else { 0 }
                    + if o_bias { h } else { 0 }
                    + if qk_norm { 2 * dh } else { 0 }
                    + if sinks { nh } else { 0 },
            },
            Attention::Mla {
                q_lora_rank,
                kv_lora_rank,
                qk_nope_head_dim,
                qk_rope_head_dim,
                v_head_dim,
            } => {
                let qk = qk_nope_head_dim + qk_rope_head_dim;
                // q_a/kv_a are ReplicatedLinear in vLLM; q_b, kv_b and o are TP-sharded (§2.2).
                let (q_sharded, q_replicated, q_norm) = match q_lora_rank {
                    Some(r) => (r * nh * qk, h * r, r),
                    None => (h * nh * qk, 0, 0),
                };
                AttentionParams {
                    tp_sharded: q_sharded
                        + kv_lora_rank * nh * (qk_nope_head_dim + v_head_dim)
                        + nh * v_head_dim * h,
                    kv_sharded: 0,
                    replicated: q_replicated + h * (kv_lora_rank + qk_rope_head_dim),
                    small: q_norm + kv_lora_rank,
                }
            }
        }
    }

    /// Router (gate) parameters of one MoE layer.
    pub fn router_params(&self) -> u64 {
        self.moe.map_or(0, |m| {
            self.hidden * m.experts + if m.router_bias { m.experts } else { 0 }
        })
    }

    /// Parameter counts (research §2.1).
    pub fn param_counts(&self) -> ParamCounts {
        let h = self.hidden;
        let a = self.attention_params();
        let attn = a.tp_sharded + a.kv_sharded + a.replicated + a.small;
        let norms = 2 * h;
        let dense_mlp = 3 * h * self.intermediate;
        let mut total = self.vocab * h * if self.tied_embeddings { 1 } else { 2 } + h;
        let mut active = 0;
        let mut routed = 0;
        for i in 0..self.layers {
            let base = attn + norms;
            if let (true, Some(m)) = (self.layer_is_moe(i), self.moe) {
                let shared = m.shared_experts * 3 * h * m.expert_intermediate;
                let experts = m.experts * self.expert_params();
                total += base + shared + experts + self.router_params();
                active += base
                    + shared
                    + m.experts_per_token * self.expert_params()
                    + self.router_params();
                routed += experts;
            } else {
                total += base + dense_mlp;
                active += base + dense_mlp;
            }
        }
        ParamCounts {
            total,
            active_non_embedding: active,
            routed_experts: routed,
        }
    }

    /// Vocabulary padded to a multiple of 64, as vLLM's vocab-parallel embedding does (§1.4).
    pub fn padded_vocab(&self) -> u64 {
        self.vocab.div_ceil(64) * 64
    }
}

/// One layer's attention parameters, grouped by how tensor parallelism shards them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionParams {
    /// Matrices split by TP (q, o; MLA q_b, kv_b, o).
    pub tp_sharded: u64,
    /// K and V projections: split by TP up to n_kv, replicated beyond (§2.2).
    pub kv_sharded: u64,
    /// Matrices replicated on every TP rank (MLA q_a, kv_a).
    pub replicated: u64,
    /// Biases, norms and sinks: BF16, counted as replicated.
    pub small: u64,
}

#[cfg(test)]
mod tests {
    use crate::catalog::{catalog, find_model};

    /// Published totals in billions (research §2.1 table "published" column; MTP excluded).
    const PUBLISHED: &[(&str, f64)] = &[
        ("llama-3.1-8b", 8.03),
        ("llama-3.1-70b", 70.6),
        ("llama-3.1-405b", 405.85),
        ("mistral-7b", 7.24),
        ("mixtral-8x7b", 46.7),
        ("mixtral-8x22b", 141.0),
        ("qwen2.5-72b", 72.7),
        ("qwen3-32b", 32.8),
        ("qwen3-30b-a3b", 30.5),
        ("qwen3-235b-a22b", 235.0),
        ("deepseek-v3", 671.0),
        ("gpt-oss-120b", 116.83),
        ("gpt-oss-20b", 20.9),
    ];

    #[test]
    fn every_catalogue_model_is_within_half_a_percent_of_its_published_total() {
        assert_eq!(PUBLISHED.len(), catalog().len());
        for (name, billions) in PUBLISHED {
            let m = find_model(name).unwrap();
            let got = m.param_counts().total as f64 / 1e9;
            let err = (got - billions).abs() / billions;
            assert!(
                err < 0.005,
                "{name}: {got:.3} B vs {billions} B ({:.2}%)",
                err * 100.0
            );
        }
    }

    #[test]
    fn active_parameters_match_the_research_derivations() {
        // research §2.1 "active (mine)": Mixtral/Qwen3 include embedding and lm_head;
        // gpt-oss "excluding embedding" (OpenAI's 5.13 B) keeps the unembedding.
        let cases = [
            ("mixtral-8x7b", 12.88, 2.0),
            ("qwen3-235b-a22b", 22.19, 2.0),
            ("gpt-oss-120b", 5.13, 1.0),
            ("gpt-oss-20b", 3.61, 1.0),
        ];
        for (name, want, vocab_matrices) in cases {
            let m = find_model(name).unwrap();
            let embed = vocab_matrices * (m.vocab * m.hidden) as f64;
            let got = (m.param_counts().active_non_embedding as f64 + embed) / 1e9;
            assert!(
                (got - want).abs() / want < 0.01,
                "{name}: {got:.3} vs {want:.3}"
            );
        }
    }

    #[test]
    fn padded_vocab_rounds_up_to_64() {
        let m = find_model("gpt-oss-120b").unwrap();
        assert_eq!(m.padded_vocab(), 201088);
        let q = find_model("qwen2.5-72b").unwrap();
        assert_eq!(q.padded_vocab() % 64, 0);
    }
}
