//! Validity of a layout for a model, with the reason when it is invalid.
//!
//! The rules are research §2.5's checklist (vLLM `verify_with_parallel_config`,
//! `QKVParallelLinear`, vocab-parallel embedding, block-FP8 and AWQ group sizes, vLLM EP and
//! SGLang DP-attention semantics, multi-node TP). Memory is checked separately (`memory.rs`).

use crate::dtype::WeightDtype;
use crate::gpu::GpuSpec;
use crate::model::ModelSpec;
use crate::options::Engine;
use inferplane_core::Layout;
use serde::Serialize;

/// Which rule a layout breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A parallel size is zero.
    Size,
    /// `num_attention_heads % tp != 0` (§2.5 rule 1).
    Heads,
    /// `n_kv % tp != 0 and tp % n_kv != 0` (§2.5 rule 2).
    KvHeads,
    /// Padded vocabulary not divisible by TP (§2.5 rule 3).
    Vocab,
    /// MLP/expert intermediate size not divisible by the TP shard count (§2.5 rule 4).
    Intermediate,
    /// A TP shard splits a quantisation block or group (§2.5 rules 4-5).
    QuantBlock,
    /// More pipeline stages than layers (§2.5 rule 6).
    PipelineLayers,
    /// Expert-parallel size inconsistent with the model or the layout (§2.5 rule 7).
    ExpertParallel,
    /// SGLang DP-attention rule (§2.5 rule 8).
    SglangDpAttention,
    /// The layout does not pack into the cluster's nodes.
    Placement,
    /// Requested context longer than the model supports.
    ContextLength,
    /// Weights or one sequence's KV do not fit in memory.
    Memory,
    /// Cannot carry the workload or meet the SLO within the cluster.
    Capacity,
}

/// A layout that was rejected, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The rule.
    pub rule: Rule,
    /// A sentence naming the numbers involved.
    pub reason: String,
}

impl Rejection {
    /// A rejection under `rule`.
    pub fn new(rule: Rule, reason: impl Into<String>) -> Self {
        Rejection {
            rule,
            reason: reason.into(),
        }
    }
}

fn fail(rule: Rule, reason: String) -> Result<(), Rejection> {
    Err(Rejection::new(rule, reason))
}

/// Checks `layout` against the model rules. Returns warnings (allowed but worth knowing)
/// or the first broken rule.
pub fn check_layout(
    model: &ModelSpec,
    dtype: WeightDtype,
    layout: Layout,
    engine: Engine,
    gpu: &GpuSpec,
    gpus_per_node: u32,
) -> Result<Vec<String>, Rejection> {
    let (t, p, d, ep) = (
        layout.tp as u64,
        layout.pp as u64,
        layout.dp as u64,
        layout.ep as u64,
    );
    if t == 0 || p == 0 || d == 0 || ep == 0 {
        fail(
            Rule::Size,
            format!("all parallel sizes must be at least 1, got {layout}"),
        )?;
    }
    let mut warnings = Vec::new();
    if !model.heads.is_multiple_of(t) {
        fail(
            Rule::Heads,
            format!(
                "num_attention_heads {} is not divisible by TP {t}",
                model.heads
            ),
        )?;
    }
    if !model.is_mla() && !model.kv_heads.is_multiple_of(t) && t % model.kv_heads != 0 {
        fail(
            Rule::KvHeads,
            format!(
                "num_key_value_heads {} and TP {t}: neither divides the other",
                model.kv_heads
            ),
        )?;
    }
    if !model.padded_vocab().is_multiple_of(t) {
        fail(
            Rule::Vocab,
            format!(
                "padded vocabulary {} is not divisible by TP {t}",
                model.padded_vocab()
            ),
        )?;
    }
    let has_dense_mlp = model.moe.is_none_or(|m| m.first_dense_layers > 0);
    let block = match dtype {
        WeightDtype::Fp8 => model.fp8_block.map(|b| (b, "block-FP8 block")),
        d => d.group_size().map(|g| (g, "AWQ/GPTQ group")),
    };
    if has_dense_mlp {
        if !model.intermediate.is_multiple_of(t) {
            fail(
                Rule::Intermediate,
                format!(
                    "intermediate_size {} is not divisible by TP {t}",
                    model.intermediate
                ),
            )?;
        }
        if let Some((b, what)) = block
            && !(model.intermediate / t).is_multiple_of(b)
        {
            fail(
                Rule::QuantBlock,
                format!(
                    "intermediate_size {}/TP {t} = {} is not a multiple of the {what} {b}",
                    model.intermediate,
                    model.intermediate / t
                ),
            )?;
        }
    }
    match model.moe {
        None if ep > 1 => fail(
            Rule::ExpertParallel,
            format!("EP {ep} needs an MoE model; {} is dense", model.name),
        )?,
        None => {}
        Some(m) => {
            if ep > 1 && ep != t * d {
                fail(
                    Rule::ExpertParallel,
                    format!(
                        "EP must equal TP x DP = {} (vLLM EP_SIZE = TP x DP), got {ep}",
                        t * d
                    ),
                )?;
            }
            if ep > m.experts {
                fail(
                    Rule::ExpertParallel,
                    format!("EP {ep} exceeds the {} experts", m.experts),
                )?;
            }
            if ep > 1 && m.experts % ep != 0 {
                warnings.push(format!(
                    "{} experts over EP {ep} are uneven: the first ranks hold one more (vLLM determine_expert_map)",
                    m.experts
                ));
            }
            let moe_tp = if ep > 1 { 1 } else { t * d };
            if m.expert_intermediate % moe_tp != 0 {
                fail(
                    Rule::Intermediate,
                    format!(
                        "moe_intermediate_size {} is not divisible by the expert TP {moe_tp}",
                        m.expert_intermediate
                    ),
                )?;
            }
            if let Some((b, what)) = block
                && (m.expert_intermediate / moe_tp) % b != 0
                && dtype != WeightDtype::Mxfp4
            {
                fail(
                    Rule::QuantBlock,
                    format!(
                        "moe_intermediate_size {}/expert TP {moe_tp} = {} is not a multiple of the {what} {b}; use expert parallel",
                        m.expert_intermediate,
                        m.expert_intermediate / moe_tp
                    ),
                )?;
            }
        }
    }
    if p > model.layers {
        fail(
            Rule::PipelineLayers,
            format!("PP {p} exceeds the {} layers", model.layers),
        )?;
    }
    if engine == Engine::Sglang && d > 1 {
        if model.is_moe() {
            // With --enable-dp-attention, --tp is the world size and attn_tp = tp / dp.
            if (t * d) % d != 0 {
                fail(
                    Rule::SglangDpAttention,
                    format!(
                        "SGLang DP-attention needs tp % dp == 0 (tp {}, dp {d})",
                        t * d
                    ),
                )?;
            }
        } else {
            warnings.push(format!(
                "SGLang --dp {d} without --enable-dp-attention runs {d} independent replicas"
            ));
        }
    }
    if t > gpus_per_node as u64 {
        if t % gpus_per_node as u64 != 0 {
            fail(
                Rule::Placement,
                format!("TP {t} across nodes must be a multiple of {gpus_per_node} GPUs per node"),
            )?;
        }
        warnings.push(format!(
            "TP {t} spans nodes ({gpus_per_node} GPUs per node): all-reduce over the network; needs InfiniBand/RDMA"
        ));
    }
    if !gpu.arch.has_fp8() && matches!(dtype, WeightDtype::Fp8) {
        warnings.push(format!(
            "{} has no FP8 compute: FP8 weights run weight-only (Marlin) at BF16 speed",
            gpu.name
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::find_model;
    use crate::gpu::find_gpu;

    fn check(
        name: &str,
        dtype: WeightDtype,
        tp: u32,
        pp: u32,
        dp: u32,
        ep: u32,
    ) -> Result<Vec<String>, Rejection> {
        let m = find_model(name).unwrap();
        let gpu = find_gpu("h100-sxm").unwrap();
        check_layout(&m, dtype, Layout { tp, pp, dp, ep }, Engine::Vllm, &gpu, 8)
    }

    fn rule(r: Result<Vec<String>, Rejection>) -> Rule {
        r.expect_err("expected a rejection").rule
    }

    #[test]
    fn mixtral_8x22b_rejects_tp6_and_tp3_on_kv_heads_even_though_heads_divide() {
        let r = check("mixtral-8x22b", WeightDtype::Bf16, 6, 1, 1, 1).unwrap_err();
        assert_eq!(r.rule, Rule::KvHeads);
        assert!(
            r.reason.contains("num_key_value_heads 8 and TP 6"),
            "{}",
            r.reason
        );
        assert_eq!(
            rule(check("mixtral-8x22b", WeightDtype::Bf16, 3, 1, 1, 1)),
            Rule::KvHeads
        );
        assert!(check("mixtral-8x22b", WeightDtype::Bf16, 16, 1, 1, 1).is_ok());
    }

    #[test]
    fn heads_not_divisible_by_tp_is_rejected() {
        let r = check("llama-3.1-70b", WeightDtype::Bf16, 3, 1, 1, 1).unwrap_err();
        assert_eq!(r.rule, Rule::Heads);
        assert!(r.reason.contains("64"), "{}", r.reason);
    }

    #[test]
    fn qwen3_235b_fp8_forbids_tp8_without_ep_but_allows_it_with_ep() {
        let r = check("qwen3-235b-a22b", WeightDtype::Fp8, 8, 1, 1, 1).unwrap_err();
        assert_eq!(r.rule, Rule::QuantBlock);
        assert!(r.reason.contains("1536/expert TP 8 = 192"), "{}", r.reason);
        assert!(check("qwen3-235b-a22b", WeightDtype::Fp8, 4, 1, 1, 1).is_ok());
        assert!(check("qwen3-235b-a22b", WeightDtype::Fp8, 8, 1, 1, 8).is_ok());
        assert!(check("qwen3-235b-a22b", WeightDtype::Bf16, 8, 1, 1, 1).is_ok());
    }

    #[test]
    fn qwen2_5_72b_awq_allows_only_tp1_because_of_the_group_size() {
        assert!(check("qwen2.5-72b", WeightDtype::Int4, 1, 1, 1, 1).is_ok());
        let r = check("qwen2.5-72b", WeightDtype::Int4, 2, 1, 1, 1).unwrap_err();
        assert_eq!(r.rule, Rule::QuantBlock);
        assert!(
            r.reason.contains("14784") && r.reason.contains("AWQ"),
            "{}",
            r.reason
        );
        assert!(check("qwen2.5-72b", WeightDtype::Bf16, 8, 1, 1, 1).is_ok());
    }

    #[test]
    fn deepseek_fp8_needs_ep_beyond_tp16() {
        assert!(check("deepseek-v3", WeightDtype::Fp8, 16, 1, 1, 1).is_ok());
        assert_eq!(
            rule(check("deepseek-v3", WeightDtype::Fp8, 32, 1, 1, 1)),
            Rule::QuantBlock
        );
        assert!(check("deepseek-v3", WeightDtype::Fp8, 1, 1, 32, 32).is_ok());
    }

    #[test]
    fn expert_parallel_rules() {
        assert_eq!(
            rule(check("llama-3.1-8b", WeightDtype::Bf16, 2, 1, 1, 2)),
            Rule::ExpertParallel
        );
        assert_eq!(
            rule(check("mixtral-8x7b", WeightDtype::Bf16, 2, 1, 2, 2)),
            Rule::ExpertParallel
        );
        assert_eq!(
            rule(check("mixtral-8x7b", WeightDtype::Bf16, 4, 1, 4, 16)),
            Rule::ExpertParallel
        );
        let warn = check("qwen3-30b-a3b", WeightDtype::Bf16, 1, 1, 6, 6).unwrap();
        assert!(warn.iter().any(|w| w.contains("uneven")), "{warn:?}");
    }

    #[test]
    fn pipeline_deeper_than_layers_is_rejected() {
        assert_eq!(
            rule(check("gpt-oss-20b", WeightDtype::Mxfp4, 1, 32, 1, 1)),
            Rule::PipelineLayers
        );
        assert!(check("gpt-oss-20b", WeightDtype::Mxfp4, 1, 24, 1, 1).is_ok());
    }

    #[test]
    fn tp_across_nodes_is_allowed_with_a_warning() {
        let warn = check("llama-3.1-405b", WeightDtype::Bf16, 16, 1, 1, 1).unwrap();
        assert!(warn.iter().any(|w| w.contains("spans nodes")), "{warn:?}");
    }

    #[test]
    fn fp8_on_ampere_warns_weight_only() {
        let m = find_model("llama-3.1-70b").unwrap();
        let a100 = find_gpu("a100-80gb").unwrap();
        let w = check_layout(
            &m,
            WeightDtype::Fp8,
            Layout {
                tp: 2,
                pp: 1,
                dp: 1,
                ep: 1,
            },
            Engine::Vllm,
            &a100,
            8,
        )
        .unwrap();
        assert!(w.iter().any(|w| w.contains("weight-only")), "{w:?}");
    }
}
