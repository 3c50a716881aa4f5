//! Number formats: weight dtypes (including quantisation) and KV-cache dtypes.
//!
//! Bytes per weight follow research §2.2 "Bytes per weight": BF16 2, FP8 1 (block scales
//! about 0.02%), INT8 1, INT4 AWQ/GPTQ group 128 about 4.25 bits, MXFP4 4.25 bits
//! (4-bit values plus one 8-bit scale per 32).

use crate::error::PlanError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How the linear-layer weights are stored. Embeddings, lm_head, norms, routers and biases
/// stay BF16 in every format (research §2.2: "embeddings, lm_head, norms, routers usually stay BF16").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightDtype {
    /// BF16 or FP16: 2 bytes.
    Bf16,
    /// FP8 e4m3 (per-channel or 128x128 block scales): 1 byte.
    Fp8,
    /// INT8 (W8A8): 1 byte.
    Int8,
    /// INT4 AWQ/GPTQ with group 128: about 4.25 bits.
    Int4,
    /// MXFP4 (gpt-oss experts only): 4.25 bits.
    Mxfp4,
}

impl WeightDtype {
    /// Bytes per quantised weight element.
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            WeightDtype::Bf16 => 2.0,
            WeightDtype::Fp8 | WeightDtype::Int8 => 1.0,
            // AWQ/GPTQ group 128: 4 bits + fp16 scale + zero point per group, research §2.2.
            WeightDtype::Int4 => 4.25 / 8.0,
            // MXFP4: 4-bit elements + one E8M0 scale per 32 elements, research §2.2.
            WeightDtype::Mxfp4 => 4.25 / 8.0,
        }
    }

    /// Quantisation group along the input dimension that each TP shard must hold whole
    /// (research §2.5 rule 5: AWQ/GPTQ group 128). `None` when there is no such rule.
    pub fn group_size(self) -> Option<u64> {
        match self {
            WeightDtype::Int4 => Some(128),
            _ => None,
        }
    }

    /// The snake_case name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightDtype::Bf16 => "bf16",
            WeightDtype::Fp8 => "fp8",
            WeightDtype::Int8 => "int8",
            WeightDtype::Int4 => "int4",
            WeightDtype::Mxfp4 => "mxfp4",
        }
    }
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WeightDtype {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" | "fp16" | "float16" | "half" => Ok(WeightDtype::Bf16),
            "fp8" | "fp8_e4m3" | "e4m3" => Ok(WeightDtype::Fp8),
            "int8" | "w8a8" => Ok(WeightDtype::Int8),
            "int4" | "awq" | "gptq" | "int4-awq" | "int4_awq" | "w4a16" => Ok(WeightDtype::Int4),
            "mxfp4" => Ok(WeightDtype::Mxfp4),
            other => Err(PlanError::InvalidInput {
                what: "weight dtype",
                reason: format!("`{other}` (expected bf16, fp8, int8, int4/awq or mxfp4)"),
            }),
        }
    }
}

/// KV-cache element type (research §2.3 "KV dtype": auto = model dtype, fp8 = 1 byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvDtype {
    /// The activation dtype, BF16 (2 bytes). vLLM's `--kv-cache-dtype auto`.
    #[default]
    Auto,
    /// FP8 (1 byte; scales negligible).
    Fp8,
}

impl KvDtype {
    /// Bytes per KV element.
    pub fn bytes(self) -> u64 {
        match self {
            KvDtype::Auto => 2,
            KvDtype::Fp8 => 1,
        }
    }

    /// The snake_case name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            KvDtype::Auto => "auto",
            KvDtype::Fp8 => "fp8",
        }
    }
}

impl FromStr for KvDtype {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "bf16" | "fp16" | "bfloat16" => Ok(KvDtype::Auto),
            "fp8" | "fp8_e4m3" | "fp8_e5m2" => Ok(KvDtype::Fp8),
            other => Err(PlanError::InvalidInput {
                what: "KV-cache dtype",
                reason: format!("`{other}` (expected auto, bf16 or fp8)"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_dtype_names_parse_to_the_expected_format() {
        assert_eq!("AWQ".parse::<WeightDtype>().unwrap(), WeightDtype::Int4);
        assert_eq!("fp16".parse::<WeightDtype>().unwrap(), WeightDtype::Bf16);
        assert_eq!("mxfp4".parse::<WeightDtype>().unwrap(), WeightDtype::Mxfp4);
        assert!("fp3".parse::<WeightDtype>().is_err());
    }

    #[test]
    fn fp8_kv_halves_bytes() {
        assert_eq!(KvDtype::Auto.bytes(), 2 * KvDtype::Fp8.bytes());
        assert_eq!("fp8_e4m3".parse::<KvDtype>().unwrap(), KvDtype::Fp8);
    }
}
