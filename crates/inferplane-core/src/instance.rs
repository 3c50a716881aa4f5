//! Instances: `InstanceSpec` (the seed's `ExecutionInstance`), its parallelism `Layout`
//! and its `Price`.
//!
//! An instance is one engine process (vLLM, SGLang, the simulator) serving one model. The
//! spec is what is configured or registered; live load is tracked separately by the
//! scheduler and the gateway.

use crate::request::ParallelismKind;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// An instance's identity, unique within a control plane. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// An id from any string.
    pub fn new(id: impl AsRef<str>) -> Self {
        InstanceId(Arc::from(id.as_ref()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for InstanceId {
    fn from(s: &str) -> Self {
        InstanceId::new(s)
    }
}

/// How an instance's model is split over its GPUs. All sizes are at least 1.
///
/// GPU count is `tp * pp * dp`: in vLLM and SGLang, expert parallelism reuses the GPUs of
/// the tensor and data parallel groups rather than adding new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Tensor-parallel size.
    #[serde(default = "one")]
    pub tp: u32,
    /// Pipeline-parallel size.
    #[serde(default = "one")]
    pub pp: u32,
    /// Data-parallel size inside the instance.
    #[serde(default = "one")]
    pub dp: u32,
    /// Expert-parallel size (MoE models).
    #[serde(default = "one")]
    pub ep: u32,
}

fn one() -> u32 {
    1
}

impl Default for Layout {
    fn default() -> Self {
        Layout::SINGLE
    }
}

impl Layout {
    /// One GPU, no parallelism.
    pub const SINGLE: Layout = Layout {
        tp: 1,
        pp: 1,
        dp: 1,
        ep: 1,
    };

    /// GPUs the layout occupies: `tp * pp * dp`.
    pub fn gpu_count(&self) -> u32 {
        self.tp.max(1) * self.pp.max(1) * self.dp.max(1)
    }

    /// The layout's kind: a single dimension above 1 names it, several make it `Hybrid`,
    /// none (one GPU) is `None`.
    pub fn kind(&self) -> Option<ParallelismKind> {
        let dims = [
            (self.tp, ParallelismKind::Tp),
            (self.pp, ParallelismKind::Pp),
            (self.dp, ParallelismKind::Dp),
            (self.ep, ParallelismKind::Ep),
        ];
        let mut found = None;
        for (size, kind) in dims {
            if size > 1 {
                if found.is_some() {
                    return Some(ParallelismKind::Hybrid);
                }
                found = Some(kind);
            }
        }
        found
    }

    /// Whether an instance of this layout satisfies a request's parallelism hint.
    pub fn matches_hint(&self, hint: ParallelismKind) -> bool {
        match hint {
            ParallelismKind::Tp => self.tp > 1,
            ParallelismKind::Pp => self.pp > 1,
            ParallelismKind::Dp => self.dp > 1,
            ParallelismKind::Ep => self.ep > 1,
            ParallelismKind::Hybrid => self.kind() == Some(ParallelismKind::Hybrid),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tp{}-pp{}-dp{}-ep{}", self.tp, self.pp, self.dp, self.ep)
    }
}

/// What an instance costs. Both forms convert to a per-request estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Price {
    /// Dollars per GPU-hour; a request is charged for the GPU time it occupies.
    PerGpuHour(f64),
    /// Dollars per million tokens, input and output priced separately.
    PerMillionTokens {
        /// Price of one million prompt tokens.
        input: f64,
        /// Price of one million generated tokens.
        output: f64,
    },
}

impl Price {
    /// Cost of a request in dollars. `busy_secs` is the wall time the request held the
    /// instance and `concurrency` how many requests shared it (at least 1); GPU-hour prices
    /// are split among the requests that shared the GPUs.
    pub fn cost(
        &self,
        prompt_tokens: u64,
        completion_tokens: u64,
        gpus: u32,
        busy_secs: f64,
        concurrency: f64,
    ) -> f64 {
        match *self {
            Price::PerGpuHour(per_hour) => {
                per_hour * f64::from(gpus.max(1)) * busy_secs.max(0.0)
                    / 3600.0
                    / concurrency.max(1.0)
            }
            Price::PerMillionTokens { input, output } => {
                (input * prompt_tokens as f64 + output * completion_tokens as f64) / 1e6
            }
        }
    }
}

/// What an engine says about itself (discovered from its own endpoints, or known from the
/// planner for simulated and planned instances). `None` means unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineInfo {
    /// The most requests the engine runs at once (vLLM/SGLang `max_num_seqs` /
    /// `max_running_requests`, llama.cpp's slot count).
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// The longest context, prompt plus output, in tokens (`max_model_len`).
    #[serde(default)]
    pub max_model_len: Option<u32>,
    /// KV-cache capacity in tokens (blocks times block size).
    #[serde(default)]
    pub kv_capacity_tokens: Option<u64>,
}

/// One engine instance as configured or registered (the seed's `ExecutionInstance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Unique id.
    pub id: InstanceId,
    /// Base URL of the engine's OpenAI-compatible server, e.g. `http://10.0.0.5:8000`.
    pub url: String,
    /// The model it serves (the pool it belongs to).
    pub model: String,
    /// Parallelism layout.
    #[serde(default)]
    pub layout: Layout,
    /// GPU kind, e.g. `h100-sxm`; lets the planner's cost model predict its speed.
    #[serde(default)]
    pub gpu: Option<String>,
    /// Price, if cost matters.
    #[serde(default)]
    pub price: Option<Price>,
    /// The most requests the gateway sends it at once, an upper bound: below it, the
    /// engine's own saturation decides (see `load`). `None`: the engine's batch limit
    /// where known, else a default.
    #[serde(default)]
    pub max_inflight: Option<u32>,
}

impl InstanceSpec {
    /// A spec with a single-GPU layout, no price and the given in-flight cap.
    pub fn new(
        id: impl AsRef<str>,
        url: impl Into<String>,
        model: impl Into<String>,
        max_inflight: u32,
    ) -> Self {
        InstanceSpec {
            id: InstanceId::new(id),
            url: url.into(),
            model: model.into(),
            layout: Layout::SINGLE,
            gpu: None,
            price: None,
            max_inflight: Some(max_inflight),
        }
    }

    /// GPUs the instance occupies.
    pub fn gpu_count(&self) -> u32 {
        self.layout.gpu_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_kind_names_the_single_dimension_or_hybrid() {
        assert_eq!(Layout::SINGLE.kind(), None);
        let tp4 = Layout {
            tp: 4,
            ..Layout::SINGLE
        };
        assert_eq!(tp4.kind(), Some(ParallelismKind::Tp));
        assert_eq!(tp4.gpu_count(), 4);
        let hybrid = Layout {
            tp: 4,
            pp: 2,
            ..Layout::SINGLE
        };
        assert_eq!(hybrid.kind(), Some(ParallelismKind::Hybrid));
        assert_eq!(hybrid.gpu_count(), 8);
        assert!(hybrid.matches_hint(ParallelismKind::Hybrid));
        assert!(hybrid.matches_hint(ParallelismKind::Tp));
        assert!(!tp4.matches_hint(ParallelismKind::Pp));
        let ep = Layout {
            tp: 2,
            ep: 8,
            dp: 4,
            pp: 1,
        };
        assert_eq!(ep.gpu_count(), 8, "EP reuses the TP x DP GPUs");
    }

    #[test]
    fn price_per_gpu_hour_is_shared_by_concurrent_requests() {
        let p = Price::PerGpuHour(3.6);
        // 2 GPUs, 10 s, alone: 3.6 * 2 * 10 / 3600 = 0.02
        assert!((p.cost(0, 0, 2, 10.0, 1.0) - 0.02).abs() < 1e-12);
        assert!((p.cost(0, 0, 2, 10.0, 4.0) - 0.005).abs() < 1e-12);
        let t = Price::PerMillionTokens {
            input: 1.0,
            output: 2.0,
        };
        assert!((t.cost(1_000_000, 500_000, 8, 1.0, 1.0) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn instance_spec_parses_from_toml_shaped_json_with_defaults() {
        let s: InstanceSpec = serde_json::from_str(
            r#"{"id":"a","url":"http://127.0.0.1:1","model":"m","max_inflight":8,
                "layout":{"tp":2},"price":{"per_gpu_hour":2.5}}"#,
        )
        .unwrap();
        assert_eq!(s.layout.tp, 2);
        assert_eq!(s.layout.pp, 1);
        assert_eq!(s.price, Some(Price::PerGpuHour(2.5)));
        assert_eq!(s.max_inflight, Some(8));
        let open: InstanceSpec =
            serde_json::from_str(r#"{"id":"a","url":"u","model":"m"}"#).unwrap();
        assert_eq!(open.max_inflight, None, "the engine's own limit applies");
        assert!(
            serde_json::from_str::<InstanceSpec>(
                r#"{"id":"a","url":"u","model":"m","max_inflight":1,"bogus":1}"#
            )
            .is_err()
        );
    }
}
