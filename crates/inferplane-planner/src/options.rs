//! Engine choice and engine settings ([`Engine`], [`EngineOptions`]).

use crate::dtype::{KvDtype, WeightDtype};
use crate::error::PlanError;
use crate::model::ModelSpec;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The serving engine whose memory rules and flags are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// vLLM (`vllm serve`).
    #[default]
    Vllm,
    /// SGLang (`python -m sglang.launch_server`).
    Sglang,
}

impl Engine {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
        }
    }

    /// Tokens per KV block: vLLM default block size 16; SGLang page size 1 (research §2.3).
    pub fn kv_block_tokens(self) -> u64 {
        match self {
            Engine::Vllm => 16,
            Engine::Sglang => 1,
        }
    }
}

impl FromStr for Engine {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vllm" => Ok(Engine::Vllm),
            "sglang" => Ok(Engine::Sglang),
            other => Err(PlanError::InvalidInput {
                what: "engine",
                reason: format!("`{other}` (expected vllm or sglang)"),
            }),
        }
    }
}

/// vLLM's `--gpu-memory-utilization` default assumed here: 0.9. Current vLLM source says
/// 0.92 and older releases 0.9 (research §1.4); the llm-d measurements used 0.9. The
/// planner always prints the value it assumed in the launch command.
pub const VLLM_DEFAULT_UTILIZATION: f64 = 0.9;

/// Engine settings that change memory and timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineOptions {
    /// Engine.
    pub engine: Engine,
    /// Weight format; `None` means the checkpoint's native format.
    pub weight_dtype: Option<WeightDtype>,
    /// KV-cache format.
    pub kv_dtype: KvDtype,
    /// vLLM `--gpu-memory-utilization` or SGLang `--mem-fraction-static`; `None` = engine default.
    pub gpu_memory_utilization: Option<f64>,
    /// Context length; `None` = the model's maximum, capped to what the KV cache holds.
    pub max_model_len: Option<u32>,
    /// Engine batch cap; `None` = the engine default, capped by KV capacity.
    pub max_num_seqs: Option<u32>,
    /// GPUs per node, to tell NVLink-domain TP from TP across nodes.
    pub gpus_per_node: u32,
    /// Typical prompt length: sets the prefill attention term and the effective KV use.
    pub typical_input_tokens: u32,
    /// Typical output length.
    pub typical_output_tokens: u32,
    /// Running batch at which MoE expert reads are linearised for [`crate::EngineEstimate`].
    pub reference_concurrency: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            engine: Engine::Vllm,
            weight_dtype: None,
            kv_dtype: KvDtype::Auto,
            gpu_memory_utilization: None,
            max_model_len: None,
            max_num_seqs: None,
            gpus_per_node: 8,
            typical_input_tokens: 1024,
            typical_output_tokens: 256,
            reference_concurrency: 64,
        }
    }
}

impl EngineOptions {
    /// The weight format in effect for `model`, checked against the model.
    pub fn weight_dtype_for(&self, model: &ModelSpec) -> Result<WeightDtype, PlanError> {
        let d = self.weight_dtype.unwrap_or(model.native_dtype);
        if d == WeightDtype::Mxfp4 && !model.is_moe() {
            return Err(PlanError::UnsupportedDtype {
                dtype: d.to_string(),
                model: model.name.clone(),
                reason: "MXFP4 applies to MoE expert weights only (gpt-oss style checkpoints)"
                    .into(),
            });
        }
        Ok(d)
    }

    /// Checks ranges of the numeric settings.
    pub fn validate(&self) -> Result<(), PlanError> {
        if let Some(u) = self.gpu_memory_utilization
            && !(u > 0.0 && u <= 1.0)
        {
            return Err(PlanError::InvalidInput {
                what: "gpu memory utilization",
                reason: format!("{u} is not in (0, 1]"),
            });
        }
        if self.gpus_per_node == 0 {
            return Err(PlanError::InvalidInput {
                what: "gpus per node",
                reason: "must be at least 1".into(),
            });
        }
        if self.max_model_len == Some(0) || self.max_num_seqs == Some(0) {
            return Err(PlanError::InvalidInput {
                what: "engine limits",
                reason: "max_model_len and max_num_seqs must be positive".into(),
            });
        }
        Ok(())
    }
}
