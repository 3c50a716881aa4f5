//! Reading a Hugging Face `config.json` into a [`ModelSpec`].
//!
//! Dense (Llama, Qwen2, Mistral), GQA, MoE (Mixtral, Qwen3-MoE, gpt-oss) and MLA
//! (DeepSeek-V2/V3) architectures are read from their own fields (research §2.1 names them).
//! Multimodal configs are read from their `text_config`; vision towers are not counted.
//! Parsing from a string is the tested core; [`ModelSpec::from_config_file`] is the only
//! function of this crate that touches the file system.

use crate::dtype::WeightDtype;
use crate::error::PlanError;
use crate::model::{Attention, ModelSpec, MoeSpec, SlidingPattern, SlidingWindow};
use serde_json::Value;
use std::path::Path;

/// The largest sizes read. Each is far above any published model (the largest have hidden
/// sizes near 2^14, a few hundred routed experts and under 200 layers) and small enough that
/// the planner's parameter, byte and FLOP counts cannot overflow.
mod max {
    pub const HIDDEN: u64 = 1 << 16;
    pub const LAYERS: u64 = 1 << 10;
    pub const HEADS: u64 = 1 << 10;
    pub const HEAD_DIM: u64 = 1 << 12;
    pub const RANK: u64 = 1 << 14;
    pub const VOCAB: u64 = 1 << 22;
    pub const INTERMEDIATE: u64 = 1 << 18;
    pub const EXPERTS: u64 = 1 << 12;
    pub const POSITIONS: u64 = 1 << 27;
    pub const BLOCK: u64 = 1 << 12;
}

/// The first of `names` present as a non-negative integer; an error above `max`.
fn field_u64(v: &Value, names: &[&'static str], max: u64) -> Result<Option<u64>, PlanError> {
    let found = names
        .iter()
        .find_map(|n| v.get(*n).and_then(Value::as_u64).map(|x| (*n, x)));
    match found {
        Some((field, x)) if x > max => Err(PlanError::ConfigField {
            field,
            reason: format!("{x} is above the planner's limit of {max}"),
        }),
        found => Ok(found.map(|(_, x)| x)),
    }
}

fn need(v: &Value, name: &'static str, max: u64) -> Result<u64, PlanError> {
    match field_u64(v, &[name], max)? {
        Some(0) => Err(PlanError::ConfigField {
            field: name,
            reason: "must be positive".into(),
        }),
        Some(x) => Ok(x),
        None => Err(PlanError::ConfigField {
            field: name,
            reason: "missing or not a non-negative integer".into(),
        }),
    }
}

fn flag(v: &Value, name: &str) -> Option<bool> {
    v.get(name).and_then(Value::as_bool)
}

impl ModelSpec {
    /// Reads a `config.json` file. `name` defaults to the parent directory's name.
    pub fn from_config_file(path: &Path) -> Result<ModelSpec, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("custom-model");
        ModelSpec::from_config_json(name, &text)
    }

    /// Parses the text of a `config.json`. `name` labels the model (and is used as the
    /// model path in launch commands).
    pub fn from_config_json(name: &str, json: &str) -> Result<ModelSpec, PlanError> {
        let root: Value =
            serde_json::from_str(json).map_err(|source| PlanError::ConfigJson { source })?;
        if !root.is_object() {
            return Err(PlanError::ConfigField {
                field: "(root)",
                reason: "expected a JSON object".into(),
            });
        }
        let arch = root
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let quant = root.get("quantization_config").cloned();
        // Multimodal models keep the language model in `text_config`.
        let v = root.get("text_config").unwrap_or(&root);
        let hidden = need(v, "hidden_size", max::HIDDEN)?;
        let layers = need(v, "num_hidden_layers", max::LAYERS)?;
        let heads = need(v, "num_attention_heads", max::HEADS)?;
        let kv_heads = field_u64(v, &["num_key_value_heads"], max::HEADS)?.unwrap_or(heads);
        let vocab = need(v, "vocab_size", max::VOCAB)?;
        let intermediate = need(v, "intermediate_size", max::INTERMEDIATE)?;
        let head_dim = field_u64(v, &["head_dim"], max::HEAD_DIM)?.unwrap_or(hidden / heads);
        if kv_heads == 0 || head_dim == 0 || heads % kv_heads != 0 {
            return Err(PlanError::ConfigField {
                field: "num_key_value_heads",
                reason: format!("{kv_heads} does not divide num_attention_heads {heads}"),
            });
        }
        let max_position =
            field_u64(v, &["max_position_embeddings"], max::POSITIONS)?.unwrap_or(4096);
        let is_gpt_oss = arch.starts_with("GptOss");
        let attention = if let Some(kv_lora_rank) = field_u64(v, &["kv_lora_rank"], max::RANK)? {
            Attention::Mla {
                q_lora_rank: field_u64(v, &["q_lora_rank"], max::RANK)?,
                kv_lora_rank,
                qk_nope_head_dim: need(v, "qk_nope_head_dim", max::HEAD_DIM)?,
                qk_rope_head_dim: need(v, "qk_rope_head_dim", max::HEAD_DIM)?,
                v_head_dim: need(v, "v_head_dim", max::HEAD_DIM)?,
            }
        } else {
            let bias = flag(v, "attention_bias").unwrap_or(false);
            let qwen2 = arch.starts_with("Qwen2");
            Attention::Gqa {
                qkv_bias: bias || qwen2,
                o_bias: bias,
                qk_norm: arch.starts_with("Qwen3"),
                sinks: is_gpt_oss,
            }
        };
        let head_dim = match attention {
            Attention::Mla {
                qk_nope_head_dim,
                qk_rope_head_dim,
                ..
            } => qk_nope_head_dim + qk_rope_head_dim,
            Attention::Gqa { .. } => head_dim,
        };
        let experts = field_u64(
            v,
            &["num_local_experts", "num_experts", "n_routed_experts"],
            max::EXPERTS,
        )?;
        let moe = match experts {
            Some(e) if e > 1 => {
                let per_token = field_u64(
                    v,
                    &["num_experts_per_tok", "experts_per_token"],
                    max::EXPERTS,
                )?
                .unwrap_or(2);
                if per_token == 0 || per_token > e {
                    return Err(PlanError::ConfigField {
                        field: "num_experts_per_tok",
                        reason: format!("{per_token} is not between 1 and the {e} experts"),
                    });
                }
                Some(MoeSpec {
                    experts: e,
                    experts_per_token: per_token,
                    shared_experts: field_u64(v, &["n_shared_experts"], max::EXPERTS)?.unwrap_or(0),
                    expert_intermediate: field_u64(
                        v,
                        &["moe_intermediate_size"],
                        max::INTERMEDIATE,
                    )?
                    .unwrap_or(intermediate),
                    first_dense_layers: field_u64(v, &["first_k_dense_replace"], max::LAYERS)?
                        .unwrap_or(0),
                    expert_bias: is_gpt_oss,
                    router_bias: is_gpt_oss
                        || v.get("topk_method").and_then(Value::as_str) == Some("noaux_tc"),
                })
            }
            _ => None,
        };
        let sliding = sliding_window(v, layers)?;
        let (native_dtype, fp8_block) = native_format(quant.as_ref(), moe.is_some())?;
        Ok(ModelSpec {
            name: name.to_string(),
            hf_id: name.to_string(),
            hidden,
            layers,
            heads,
            kv_heads: if matches!(attention, Attention::Mla { .. }) {
                heads
            } else {
                kv_heads
            },
            head_dim,
            intermediate,
            vocab,
            max_position,
            tied_embeddings: flag(v, "tie_word_embeddings").unwrap_or(false),
            attention,
            moe,
            sliding,
            native_dtype,
            fp8_block,
        })
    }
}

/// Sliding window from `layer_types` (gpt-oss) or `sliding_window` + `use_sliding_window`.
fn sliding_window(v: &Value, layers: u64) -> Result<Option<SlidingWindow>, PlanError> {
    let Some(window) = field_u64(v, &["sliding_window"], max::POSITIONS)? else {
        return Ok(None);
    };
    if window == 0 || flag(v, "use_sliding_window") == Some(false) {
        return Ok(None);
    }
    let pattern = match v.get("layer_types").and_then(Value::as_array) {
        Some(types) => {
            let sliding = types
                .iter()
                .filter(|t| t.as_str() == Some("sliding_attention"))
                .count() as u64;
            if sliding == 0 {
                return Ok(None);
            } else if sliding == layers {
                SlidingPattern::All
            } else {
                // gpt-oss alternates starting with a sliding layer; other mixes are
                // approximated the same way (research §2.3, vLLM hybrid allocator).
                SlidingPattern::EveryOther
            }
        }
        None => SlidingPattern::All,
    };
    Ok(Some(SlidingWindow { window, pattern }))
}

/// The checkpoint's own format from `quantization_config`.
fn native_format(
    quant: Option<&Value>,
    is_moe: bool,
) -> Result<(WeightDtype, Option<u64>), PlanError> {
    let Some(q) = quant else {
        return Ok((WeightDtype::Bf16, None));
    };
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let block = q
        .get("weight_block_size")
        .and_then(|b| b.get(1).or_else(|| b.get(0)))
        .and_then(Value::as_u64);
    Ok(match method.as_str() {
        "fp8" | "compressed-tensors" | "fbgemm_fp8" => {
            if block.is_some_and(|b| b == 0 || b > max::BLOCK) {
                return Err(PlanError::ConfigField {
                    field: "weight_block_size",
                    reason: format!("must be between 1 and {}", max::BLOCK),
                });
            }
            (WeightDtype::Fp8, block)
        }
        "mxfp4" if is_moe => (WeightDtype::Mxfp4, None),
        "awq" | "gptq" | "awq_marlin" | "gptq_marlin" => (WeightDtype::Int4, None),
        _ => (WeightDtype::Bf16, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::find_model;

    const DEEPSEEK_V3: &str = r#"{"architectures":["DeepseekV3ForCausalLM"],"hidden_size":7168,
      "num_hidden_layers":61,"num_attention_heads":128,"num_key_value_heads":128,
      "intermediate_size":18432,"moe_intermediate_size":2048,"vocab_size":129280,
      "max_position_embeddings":163840,"tie_word_embeddings":false,"n_routed_experts":256,
      "n_shared_experts":1,"num_experts_per_tok":8,"first_k_dense_replace":3,"q_lora_rank":1536,
      "kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,
      "topk_method":"noaux_tc","num_nextn_predict_layers":1,
      "quantization_config":{"quant_method":"fp8","weight_block_size":[128,128],"fmt":"e4m3"}}"#;

    const GPT_OSS_20B: &str = r#"{"architectures":["GptOssForCausalLM"],"hidden_size":2880,
      "num_hidden_layers":24,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":64,
      "intermediate_size":2880,"vocab_size":201088,"max_position_embeddings":131072,
      "num_local_experts":32,"num_experts_per_tok":4,"sliding_window":128,"attention_bias":true,
      "layer_types":["sliding_attention","full_attention","sliding_attention","full_attention",
      "sliding_attention","full_attention","sliding_attention","full_attention",
      "sliding_attention","full_attention","sliding_attention","full_attention",
      "sliding_attention","full_attention","sliding_attention","full_attention",
      "sliding_attention","full_attention","sliding_attention","full_attention",
      "sliding_attention","full_attention","sliding_attention","full_attention"],
      "quantization_config":{"quant_method":"mxfp4"}}"#;

    const QWEN2_5_72B: &str = r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":8192,
      "num_hidden_layers":80,"num_attention_heads":64,"num_key_value_heads":8,
      "intermediate_size":29568,"vocab_size":152064,"max_position_embeddings":32768,
      "sliding_window":131072,"use_sliding_window":false,"tie_word_embeddings":false}"#;

    fn same_shape(a: &ModelSpec, b: &ModelSpec) {
        let strip = |m: &ModelSpec| ModelSpec {
            name: String::new(),
            hf_id: String::new(),
            ..m.clone()
        };
        assert_eq!(strip(a), strip(b));
    }

    #[test]
    fn mla_moe_config_parses_to_the_catalogue_deepseek() {
        let parsed = ModelSpec::from_config_json("ds", DEEPSEEK_V3).unwrap();
        same_shape(&parsed, &find_model("deepseek-v3").unwrap());
    }

    #[test]
    fn gpt_oss_config_reads_layer_types_biases_and_mxfp4() {
        let parsed = ModelSpec::from_config_json("oss", GPT_OSS_20B).unwrap();
        same_shape(&parsed, &find_model("gpt-oss-20b").unwrap());
    }

    #[test]
    fn qwen2_config_has_qkv_bias_and_ignores_disabled_sliding_window() {
        let parsed = ModelSpec::from_config_json("q", QWEN2_5_72B).unwrap();
        same_shape(&parsed, &find_model("qwen2.5-72b").unwrap());
    }

    #[test]
    fn multimodal_config_is_read_from_text_config() {
        let json = r#"{"architectures":["Mistral3ForConditionalGeneration"],
          "text_config":{"hidden_size":5120,"num_hidden_layers":40,"num_attention_heads":32,
          "num_key_value_heads":8,"head_dim":128,"intermediate_size":32768,"vocab_size":131072}}"#;
        let m = ModelSpec::from_config_json("ms", json).unwrap();
        assert_eq!((m.layers, m.kv_heads, m.head_dim), (40, 8, 128));
    }

    #[test]
    fn missing_or_bad_fields_name_the_field() {
        let err = ModelSpec::from_config_json("x", r#"{"hidden_size":10}"#).unwrap_err();
        assert!(err.to_string().contains("num_hidden_layers"), "{err}");
        let err = ModelSpec::from_config_json("x", "not json").unwrap_err();
        assert!(matches!(err, PlanError::ConfigJson { .. }));
        let bad_kv = r#"{"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":8,
          "num_key_value_heads":3,"intermediate_size":128,"vocab_size":100}"#;
        let err = ModelSpec::from_config_json("x", bad_kv).unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error_with_the_path() {
        let err =
            ModelSpec::from_config_file(Path::new("/nonexistent/dir/config.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dir/config.json"),
            "{err}"
        );
    }

    const MOE: &str = r#"{"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":8,
      "intermediate_size":128,"vocab_size":100,"num_local_experts":4"#;

    #[test]
    fn more_experts_per_token_than_experts_is_an_error() {
        // found by the hf_config fuzz target: 8 of 4 experts per token made the active
        // parameter count larger than the total
        for k in [0, 5, 8] {
            let json = format!(r#"{MOE},"num_experts_per_tok":{k}}}"#);
            let err = ModelSpec::from_config_json("x", &json).unwrap_err();
            assert!(err.to_string().contains("num_experts_per_tok"), "{err}");
        }
        let json = format!(r#"{MOE},"num_experts_per_tok":4}}"#);
        let m = ModelSpec::from_config_json("x", &json).unwrap();
        let c = m.param_counts();
        assert!(c.active_non_embedding <= c.total);
    }

    #[test]
    fn sizes_past_the_planner_limits_are_errors_not_overflows() {
        let dense = r#""hidden_size":64,"num_hidden_layers":2,"num_attention_heads":8,
          "intermediate_size":128,"vocab_size":100"#;
        for (field, extra) in [
            ("hidden_size", r#""hidden_size":18446744073709551615"#),
            ("num_hidden_layers", r#""num_hidden_layers":4000000000"#),
            ("vocab_size", r#""vocab_size":99999999999"#),
            ("num_local_experts", r#""num_local_experts":1000000"#),
            (
                "weight_block_size",
                r#""quantization_config":{"quant_method":"fp8","weight_block_size":[0,0]}"#,
            ),
        ] {
            // a later key wins in serde_json's map, so the extra value replaces the dense one
            let json = format!("{{{dense},{extra}}}");
            let err = ModelSpec::from_config_json("x", &json).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }
}
