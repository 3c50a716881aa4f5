//! `EngineProfile`: the simulated engine's step-time model and capacity limits, with presets.
//!
//! One engine step costs
//! `decode_step_base + prefill_tokens * prefill_per_token + decode_seqs * per_seq
//!  + context_tokens * per_kv_token`:
//! the base is reading the weights once (memory bound), prefill is compute bound per
//! token, and decode grows with the batch and with the KV cache it must read.
//! The presets are roofline estimates (weights bytes / (0.8 x HBM bandwidth), 2 x params
//! FLOPs per prefill token at 50% of dense peak); see `inferplane plan` for derivations.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// KV-cache block size in tokens (vLLM's default).
pub const BLOCK_SIZE: u32 = inferplane_core::prefix::BLOCK_TOKENS;

/// Step-time model and limits of one simulated engine instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineProfile {
    /// A short name, shown in logs and `/v1/models`.
    pub name: String,
    /// Seconds of compute per prompt token in prefill.
    pub prefill_secs_per_token: f64,
    /// Seconds of a step's fixed cost (weights read, per-layer overheads).
    pub decode_step_base_secs: f64,
    /// Seconds added per running sequence in a step.
    pub decode_secs_per_seq: f64,
    /// Seconds added per context token held by the batch (KV read).
    pub decode_secs_per_kv_token: f64,
    /// KV-cache capacity in blocks of [`BLOCK_SIZE`] tokens.
    pub kv_blocks: u32,
    /// Most sequences running at once (vLLM `max_num_seqs`).
    pub max_num_seqs: u32,
    /// Most tokens computed in one step (vLLM `max_num_batched_tokens`, chunked prefill).
    pub max_num_batched_tokens: u32,
    /// Longest prompt + output accepted (vLLM `max_model_len`).
    pub max_model_len: u32,
}

/// Why a profile could not be built from the planner.
#[derive(Debug, thiserror::Error)]
pub enum FromPlannerError {
    /// The model is not in the planner's catalogue.
    #[error("unknown model {0:?}; see `inferplane plan --help` for the catalogue")]
    UnknownModel(String),
    /// The GPU is not in the planner's catalogue.
    #[error("unknown GPU {0:?}; see `inferplane plan --help` for the catalogue")]
    UnknownGpu(String),
    /// The layout does not fit or is invalid.
    #[error(transparent)]
    Plan(#[from] inferplane_planner::PlanError),
}

/// Error for an unknown preset name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine profile {0:?}; known presets: {known}", known = EngineProfile::PRESETS.join(", "))]
pub struct UnknownProfile(pub String);

impl EngineProfile {
    /// Names of the built-in presets.
    pub const PRESETS: [&'static str; 6] = [
        "zero",
        "tiny",
        "llama-3.1-8b-a10g",
        "llama-3.1-8b-h100",
        "llama-3.1-70b-h100-tp4",
        "qwen3-30b-a3b-h100",
    ];

    /// A built-in preset by name.
    pub fn preset(name: &str) -> Result<Self, UnknownProfile> {
        let p = |prefill_us: f64, base_ms: f64, seq_us: f64, kv_ns: f64, kv_blocks: u32| {
            EngineProfile {
                name: name.to_string(),
                prefill_secs_per_token: prefill_us * 1e-6,
                decode_step_base_secs: base_ms * 1e-3,
                decode_secs_per_seq: seq_us * 1e-6,
                decode_secs_per_kv_token: kv_ns * 1e-9,
                kv_blocks,
                max_num_seqs: 256,
                max_num_batched_tokens: 8192,
                max_model_len: 32_768,
            }
        };
        Ok(match name {
            // No cost at all: every step takes zero time. For measuring the gateway itself.
            "zero" => EngineProfile {
                max_num_seqs: 4096,
                max_num_batched_tokens: 1 << 20,
                max_model_len: 131_072,
                ..p(0.0, 0.0, 0.0, 0.0, 1 << 22)
            },
            // Small and quick, for tests: 2 ms steps, a modest KV cache.
            "tiny" => EngineProfile {
                max_num_seqs: 64,
                max_num_batched_tokens: 4096,
                max_model_len: 8192,
                ..p(10.0, 2.0, 20.0, 0.0, 4096)
            },
            // 16 GB bf16 weights; A10G 600 GB/s, 125 TFLOPS; ~3.6 GB left for KV at 0.9.
            "llama-3.1-8b-a10g" => EngineProfile {
                max_model_len: 16_384,
                ..p(256.0, 33.0, 60.0, 270.0, 1_700)
            },
            // 16 GB bf16 weights; H100 SXM 3.35 TB/s, 989 TFLOPS; 128 KiB KV per token.
            "llama-3.1-8b-h100" => p(32.0, 6.5, 40.0, 49.0, 25_000),
            // 141 GB bf16 over TP4 (35 GB per GPU) plus all-reduce; 320 KiB KV per token.
            "llama-3.1-70b-h100-tp4" => p(72.0, 16.0, 60.0, 30.0, 13_000),
            // MoE, 3B active of 30B; weights 61 GB bf16 on one H100.
            "qwen3-30b-a3b-h100" => p(12.0, 9.0, 45.0, 37.0, 4_500),
            _ => return Err(UnknownProfile(name.to_string())),
        })
    }

    /// A profile from the planner's cost model for `model` on `gpu` with `layout`, so the
    /// simulator and `inferplane plan` agree on step times and KV capacity.
    pub fn from_planner(
        model: &str,
        gpu: &str,
        layout: inferplane_core::Layout,
        opts: &inferplane_planner::EngineOptions,
    ) -> Result<Self, FromPlannerError> {
        let spec = inferplane_planner::find_model(model)
            .ok_or_else(|| FromPlannerError::UnknownModel(model.to_string()))?;
        let gpu_spec = inferplane_planner::find_gpu(gpu)
            .ok_or_else(|| FromPlannerError::UnknownGpu(gpu.to_string()))?;
        let e = inferplane_planner::CostModel::default()
            .engine_estimate(&spec, &gpu_spec, layout, opts)?;
        Ok(Self::from_estimate(format!("{model}@{gpu}x{layout}"), &e))
    }

    /// A profile from a planner estimate.
    pub fn from_estimate(name: String, e: &inferplane_planner::EngineEstimate) -> Self {
        let kv_blocks =
            (e.kv_capacity_tokens / u64::from(BLOCK_SIZE)).clamp(1, u64::from(u32::MAX));
        EngineProfile {
            name,
            prefill_secs_per_token: e.prefill_secs_per_token,
            decode_step_base_secs: e.decode_step_base_secs,
            decode_secs_per_seq: e.decode_secs_per_seq,
            decode_secs_per_kv_token: e.decode_secs_per_kv_token,
            kv_blocks: kv_blocks as u32,
            max_num_seqs: e.max_num_seqs.max(1),
            // vLLM's default chunked-prefill budget.
            max_num_batched_tokens: 8192,
            max_model_len: e.max_model_len.max(2),
        }
    }

    /// Time of one step with the given work, scaled by nothing (pure model).
    pub fn step_time(
        &self,
        prefill_tokens: u32,
        decode_seqs: u32,
        context_tokens: u64,
    ) -> Duration {
        let work = prefill_tokens + decode_seqs;
        if work == 0 {
            return Duration::ZERO;
        }
        let secs = self.decode_step_base_secs
            + f64::from(prefill_tokens) * self.prefill_secs_per_token
            + f64::from(decode_seqs) * self.decode_secs_per_seq
            + context_tokens as f64 * self.decode_secs_per_kv_token;
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// KV-cache capacity in tokens.
    pub fn kv_capacity_tokens(&self) -> u64 {
        u64::from(self.kv_blocks) * u64::from(BLOCK_SIZE)
    }

    /// Checks the limits make sense; returns what is wrong otherwise.
    pub fn validate(&self) -> Result<(), crate::faults::InvalidSetting> {
        use crate::faults::InvalidSetting;
        let costs = [
            self.prefill_secs_per_token,
            self.decode_step_base_secs,
            self.decode_secs_per_seq,
            self.decode_secs_per_kv_token,
        ];
        if costs.iter().any(|c| !c.is_finite() || *c < 0.0) {
            return Err(InvalidSetting::new(
                "step costs",
                "must be finite and non-negative",
            ));
        }
        if self.kv_blocks == 0 || self.max_num_seqs == 0 || self.max_num_batched_tokens == 0 {
            return Err(InvalidSetting::new(
                "kv_blocks, max_num_seqs, max_num_batched_tokens",
                "must be at least 1",
            ));
        }
        if self.max_model_len < 2 {
            return Err(InvalidSetting::new("max_model_len", "must be at least 2"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_unknown_names_list_the_presets() {
        for name in EngineProfile::PRESETS {
            let p = EngineProfile::preset(name).unwrap();
            p.validate().unwrap();
            assert_eq!(p.name, name);
        }
        let err = EngineProfile::preset("gpt-9").unwrap_err().to_string();
        assert!(err.contains("zero") && err.contains("tiny"), "{err}");
    }

    #[test]
    fn planner_profiles_agree_with_the_cost_model_and_refuse_what_does_not_fit() {
        use inferplane_core::Layout;
        let opts = inferplane_planner::EngineOptions::default();
        let tp1 =
            EngineProfile::from_planner("llama-3.1-8b", "h100-sxm", Layout::SINGLE, &opts).unwrap();
        let tp2 = EngineProfile::from_planner(
            "llama-3.1-8b",
            "h100-sxm",
            Layout {
                tp: 2,
                ..Layout::SINGLE
            },
            &opts,
        )
        .unwrap();
        tp1.validate().unwrap();
        let est = inferplane_planner::CostModel::default()
            .engine_estimate(
                &inferplane_planner::find_model("llama-3.1-8b").unwrap(),
                &inferplane_planner::find_gpu("h100-sxm").unwrap(),
                Layout::SINGLE,
                &opts,
            )
            .unwrap();
        // One decode step of 8 sequences holding 8k context tokens, as the planner computes it.
        let want = est.step_secs(8.0, 8192.0, 0.0);
        let got = tp1.step_time(0, 8, 8192).as_secs_f64();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        assert!(tp2.kv_blocks > tp1.kv_blocks, "TP2 has more memory for KV");
        assert!(
            tp2.decode_step_base_secs < tp1.decode_step_base_secs,
            "and reads weights faster"
        );
        assert!(
            EngineProfile::from_planner("llama-3.1-70b", "a10g", Layout::SINGLE, &opts).is_err()
        );
        assert!(matches!(
            EngineProfile::from_planner("gpt-9", "h100-sxm", Layout::SINGLE, &opts),
            Err(FromPlannerError::UnknownModel(_))
        ));
    }

    #[test]
    fn zero_profile_costs_nothing_and_step_time_adds_its_terms() {
        let z = EngineProfile::preset("zero").unwrap();
        assert_eq!(z.step_time(1000, 100, 1_000_000), Duration::ZERO);
        let t = EngineProfile::preset("tiny").unwrap();
        assert_eq!(t.step_time(0, 0, 0), Duration::ZERO, "an idle step is free");
        // 2 ms base + 100 * 10 us + 3 * 20 us = 3.06 ms
        let got = t.step_time(100, 3, 500).as_secs_f64();
        assert!((got - 0.00306).abs() < 1e-9, "{got}");
    }
}
