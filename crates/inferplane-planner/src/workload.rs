//! What to plan for: the [`Cluster`] of GPUs, the [`Workload`] and the [`Objective`].

use crate::error::PlanError;
use crate::gpu::GpuSpec;
use crate::perf::Load;
use serde::Serialize;
use std::str::FromStr;

/// The GPUs available.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// GPU kind.
    pub gpu: GpuSpec,
    /// GPUs per node (the NVLink domain).
    pub gpus_per_node: u32,
    /// Nodes.
    pub nodes: u32,
}

impl Cluster {
    /// Total GPUs.
    pub fn gpus(&self) -> u32 {
        self.gpus_per_node * self.nodes
    }
}

/// The traffic to serve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Prompt tokens per request.
    pub input_tokens: u32,
    /// Output tokens per request.
    pub output_tokens: u32,
    /// Total load over the whole cluster.
    pub load: Load,
    /// Target time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Target time per output token, ms.
    pub tpot_ms: Option<f64>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            input_tokens: 2048,
            output_tokens: 256,
            load: Load::Concurrency(64.0),
            ttft_ms: None,
            tpot_ms: None,
        }
    }
}

/// What to optimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Most output tokens/s over the cluster at saturation.
    #[default]
    Throughput,
    /// Lowest TPOT (then TTFT) at the workload's load.
    Latency,
    /// Fewest GPUs that carry the load without KV saturation.
    Cost,
    /// Fewest GPUs that meet the TTFT/TPOT targets.
    Slo,
}

impl FromStr for Objective {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "throughput" => Ok(Objective::Throughput),
            "latency" => Ok(Objective::Latency),
            "cost" => Ok(Objective::Cost),
            "slo" => Ok(Objective::Slo),
            o => Err(PlanError::InvalidInput {
                what: "objective",
                reason: format!("`{o}` (expected throughput, latency, cost or slo)"),
            }),
        }
    }
}
