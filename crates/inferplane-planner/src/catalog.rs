//! The built-in model catalogue.
//!
//! Every figure is restated from the models' Hugging Face `config.json`, as collected in
//! `research/parallelism_fixtures.json` and research §"config.json numbers for the
//! validation models" (copies vendored in ai-dynamo/aiconfigurator `model_configs/`).

use crate::dtype::WeightDtype;
use crate::model::{Attention, ModelSpec, MoeSpec, SlidingPattern, SlidingWindow};

const GQA: Attention = Attention::Gqa {
    qkv_bias: false,
    o_bias: false,
    qk_norm: false,
    sinks: false,
};
const QWEN2: Attention = Attention::Gqa {
    qkv_bias: true,
    o_bias: false,
    qk_norm: false,
    sinks: false,
};
const QWEN3: Attention = Attention::Gqa {
    qkv_bias: false,
    o_bias: false,
    qk_norm: true,
    sinks: false,
};
const GPT_OSS: Attention = Attention::Gqa {
    qkv_bias: true,
    o_bias: true,
    qk_norm: false,
    sinks: true,
};

/// The dense fields shared by all entries: (h, L, n_h, n_kv, d_h, I, V, ctx).
type Dims = (u64, u64, u64, u64, u64, u64, u64, u64);

fn spec(name: &str, hf_id: &str, d: Dims, attention: Attention) -> ModelSpec {
    ModelSpec {
        name: name.to_string(),
        hf_id: hf_id.to_string(),
        hidden: d.0,
        layers: d.1,
        heads: d.2,
        kv_heads: d.3,
        head_dim: d.4,
        intermediate: d.5,
        vocab: d.6,
        max_position: d.7,
        tied_embeddings: false,
        attention,
        moe: None,
        sliding: None,
        native_dtype: WeightDtype::Bf16,
        fp8_block: None,
    }
}

fn moe(experts: u64, k: u64, expert_intermediate: u64) -> MoeSpec {
    MoeSpec {
        experts,
        experts_per_token: k,
        shared_experts: 0,
        expert_intermediate,
        first_dense_layers: 0,
        expert_bias: false,
        router_bias: false,
    }
}

fn gpt_oss(name: &str, hf_id: &str, layers: u64, experts: u64) -> ModelSpec {
    let dims = (2880, layers, 64, 8, 64, 2880, 201088, 131072);
    ModelSpec {
        moe: Some(MoeSpec {
            expert_bias: true,
            router_bias: true,
            ..moe(experts, 4, 2880)
        }),
        // sliding_window 128 on alternating layers (research fixtures: 18 of 36 full).
        sliding: Some(SlidingWindow {
            window: 128,
            pattern: SlidingPattern::EveryOther,
        }),
        native_dtype: WeightDtype::Mxfp4,
        ..spec(name, hf_id, dims, GPT_OSS)
    }
}

/// The whole catalogue, in a stable order.
pub fn catalog() -> Vec<ModelSpec> {
    let qwen3_fp8 = Some(128); // Qwen3 FP8 checkpoints: weight_block_size [128, 128].
    vec![
        spec(
            "llama-3.1-8b",
            "meta-llama/Llama-3.1-8B-Instruct",
            (4096, 32, 32, 8, 128, 14336, 128256, 131072),
            GQA,
        ),
        spec(
            "llama-3.1-70b",
            "meta-llama/Llama-3.1-70B-Instruct",
            (8192, 80, 64, 8, 128, 28672, 128256, 131072),
            GQA,
        ),
        spec(
            "llama-3.1-405b",
            "meta-llama/Llama-3.1-405B-Instruct",
            (16384, 126, 128, 8, 128, 53248, 128256, 131072),
            GQA,
        ),
        ModelSpec {
            sliding: Some(SlidingWindow {
                window: 4096,
                pattern: SlidingPattern::All,
            }),
            ..spec(
                "mistral-7b",
                "mistralai/Mistral-7B-v0.1",
                (4096, 32, 32, 8, 128, 14336, 32000, 32768),
                GQA,
            )
        },
        ModelSpec {
            moe: Some(moe(8, 2, 14336)),
            ..spec(
                "mixtral-8x7b",
                "mistralai/Mixtral-8x7B-Instruct-v0.1",
                (4096, 32, 32, 8, 128, 14336, 32000, 32768),
                GQA,
            )
        },
        ModelSpec {
            moe: Some(moe(8, 2, 16384)),
            ..spec(
                "mixtral-8x22b",
                "mistralai/Mixtral-8x22B-v0.1",
                (6144, 56, 48, 8, 128, 16384, 32000, 65536),
                GQA,
            )
        },
        spec(
            "qwen2.5-72b",
            "Qwen/Qwen2.5-72B-Instruct",
            (8192, 80, 64, 8, 128, 29568, 152064, 32768),
            QWEN2,
        ),
        ModelSpec {
            fp8_block: qwen3_fp8,
            ..spec(
                "qwen3-32b",
                "Qwen/Qwen3-32B",
                (5120, 64, 64, 8, 128, 25600, 151936, 40960),
                QWEN3,
            )
        },
        ModelSpec {
            moe: Some(moe(128, 8, 768)),
            fp8_block: qwen3_fp8,
            ..spec(
                "qwen3-30b-a3b",
                "Qwen/Qwen3-30B-A3B",
                (2048, 48, 32, 4, 128, 6144, 151936, 40960),
                QWEN3,
            )
        },
        ModelSpec {
            moe: Some(moe(128, 8, 1536)),
            fp8_block: qwen3_fp8,
            ..spec(
                "qwen3-235b-a22b",
                "Qwen/Qwen3-235B-A22B",
                (4096, 94, 64, 4, 128, 12288, 151936, 40960),
                QWEN3,
            )
        },
        ModelSpec {
            moe: Some(MoeSpec {
                shared_experts: 1,
                first_dense_layers: 3,
                router_bias: true, // e_score_correction_bias
                ..moe(256, 8, 2048)
            }),
            native_dtype: WeightDtype::Fp8,
            fp8_block: Some(128),
            ..spec(
                "deepseek-v3",
                "deepseek-ai/DeepSeek-V3",
                (7168, 61, 128, 128, 192, 18432, 129280, 163840),
                Attention::Mla {
                    q_lora_rank: Some(1536),
                    kv_lora_rank: 512,
                    qk_nope_head_dim: 128,
                    qk_rope_head_dim: 64,
                    v_head_dim: 128,
                },
            )
        },
        gpt_oss("gpt-oss-20b", "openai/gpt-oss-20b", 24, 32),
        gpt_oss("gpt-oss-120b", "openai/gpt-oss-120b", 36, 128),
    ]
}

/// Lower-case alphanumerics only, so `Llama-3.1-70B`, `llama3.1_70b` and the HF id compare equal.
fn key(s: &str) -> String {
    let s = s.rsplit('/').next().unwrap_or(s).to_ascii_lowercase();
    let s = s.strip_suffix("-instruct").unwrap_or(&s).to_string();
    let s = s.replace("-instruct-", "-");
    s.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// Aliases for models with identical dimensions (research fixtures).
const ALIASES: &[(&str, &str)] = &[
    ("llama-3.3-70b", "llama-3.1-70b"),
    ("deepseek-r1", "deepseek-v3"),
    ("mistral-7b-v0.1", "mistral-7b"),
    ("mixtral-8x7b-v0.1", "mixtral-8x7b"),
    ("mixtral-8x22b-v0.1", "mixtral-8x22b"),
];

/// Looks a model up by catalogue name or Hugging Face id, ignoring case and punctuation
/// (`llama-3.1-70b`, `meta-llama/Llama-3.1-70B-Instruct`, `Llama3.1-70B` all work).
pub fn find_model(name: &str) -> Option<ModelSpec> {
    let k = key(name);
    let target = ALIASES
        .iter()
        .find(|(alias, _)| key(alias) == k)
        .map_or(k, |(_, real)| key(real));
    catalog()
        .into_iter()
        .find(|m| key(&m.name) == target || key(&m.hf_id) == target)
}

/// Catalogue names, comma-separated, for error messages.
pub fn model_names() -> String {
    catalog()
        .iter()
        .map(|m| m.name.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_punctuation_org_and_instruct_suffix() {
        for name in [
            "llama-3.1-70b",
            "LLAMA-3.1-70B",
            "meta-llama/Llama-3.1-70B-Instruct",
            "llama3.1_70b",
            "llama-3.3-70b",
        ] {
            assert_eq!(find_model(name).unwrap().name, "llama-3.1-70b", "{name}");
        }
        assert_eq!(find_model("DeepSeek-R1").unwrap().name, "deepseek-v3");
        assert_eq!(
            find_model("Qwen/Qwen3-30B-A3B").unwrap().name,
            "qwen3-30b-a3b"
        );
        assert!(find_model("llama-9").is_none());
    }

    #[test]
    fn catalogue_names_are_unique() {
        let all = catalog();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(key(&a.name), key(&b.name));
            }
        }
    }
}
