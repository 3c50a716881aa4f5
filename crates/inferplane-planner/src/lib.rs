//! # inferplane-planner
//!
//! The advisory parallelism planner: for a model (built-in catalogue or a Hugging Face
//! `config.json`) on a cluster of GPUs, it checks every TP/PP/DP/EP layout against the
//! engines' rules, computes weights, KV bytes and KV capacity per GPU, estimates TTFT, TPOT
//! and tokens/s, ranks the layouts by an objective and prints `vllm serve` / SGLang launch
//! commands. Pure: no clock, no I/O except [`ModelSpec::from_config_file`].
//!
//! The formulas, figures and validation measurements are those of
//! `research/parallelism.md`; every performance figure is an estimate.
//!
//! ```
//! use inferplane_planner::{find_gpu, find_model, plan, Cluster, Objective, Workload};
//! let model = find_model("llama-3.1-70b").unwrap();
//! let cluster = Cluster { gpu: find_gpu("h100-sxm").unwrap(), gpus_per_node: 8, nodes: 1 };
//! let plans = plan(&model, &cluster, &Workload::default(), Objective::Throughput).unwrap();
//! assert!(plans[0].layout.tp * plans[0].layout.pp >= 2);
//! ```

pub mod catalog;
pub mod constraints;
pub mod dtype;
pub mod error;
pub mod forecast;
pub mod gpu;
pub mod hf;
pub mod launch;
pub mod memory;
pub mod model;
pub mod options;
pub mod perf;
pub mod search;
pub mod workload;

pub use catalog::{catalog, find_model, model_names};
pub use constraints::{Rejection, Rule};
pub use dtype::{KvDtype, WeightDtype};
pub use error::PlanError;
pub use forecast::{Forecast, forecast};
pub use gpu::{Arch, GpuSpec, find_gpu, gpu_catalog, gpu_names};
pub use inferplane_core::Layout;
pub use launch::LaunchCommand;
pub use memory::MemoryEstimate;
pub use model::ModelSpec;
pub use options::{Engine, EngineOptions};
pub use perf::{CostModel, EngineEstimate, Load, PerfEstimate};
pub use search::{
    Cluster, Objective, Plan, PlanReport, RejectedLayout, Workload, plan, plan_report,
};
