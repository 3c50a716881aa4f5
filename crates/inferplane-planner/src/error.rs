//! The planner's one error type, [`PlanError`].
//!
//! Every message says what was wrong and, where it helps, what would fix it.

use std::path::PathBuf;

/// Everything that can go wrong while planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The model name is not in the built-in catalogue.
    #[error(
        "unknown model `{name}`; known models: {known}; or pass a path to a Hugging Face config.json"
    )]
    UnknownModel {
        /// The name that was asked for.
        name: String,
        /// Comma-separated catalogue names.
        known: String,
    },
    /// The GPU name is not in the built-in catalogue.
    #[error("unknown GPU `{name}`; known GPUs: {known}; or give custom figures")]
    UnknownGpu {
        /// The name that was asked for.
        name: String,
        /// Comma-separated catalogue names.
        known: String,
    },
    /// A `config.json` could not be read from disk.
    #[error("cannot read model config {path}")]
    ConfigRead {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A `config.json` is not valid JSON or has the wrong shape.
    #[error("model config is not valid JSON")]
    ConfigJson {
        /// The parse failure.
        #[source]
        source: serde_json::Error,
    },
    /// A `config.json` lacks a field the planner needs, or a field has an impossible value.
    #[error("model config field `{field}`: {reason}")]
    ConfigField {
        /// The field name as it appears in config.json.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An input (workload, cluster, option) is out of range.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The weight dtype cannot be used with this model.
    #[error("weight dtype {dtype} is not supported for {model}: {reason}")]
    UnsupportedDtype {
        /// The dtype asked for.
        dtype: String,
        /// The model.
        model: String,
        /// Why not.
        reason: String,
    },
    /// A specific layout was asked for (e.g. by the simulator) and it is invalid.
    #[error("layout {layout} is invalid for {model}: {reason}")]
    InvalidLayout {
        /// The layout, as `tpT-ppP-dpD-epE`.
        layout: String,
        /// The model.
        model: String,
        /// The first rule it breaks.
        reason: String,
    },
    /// The model does not fit the cluster in any layout.
    #[error(
        "{model} does not fit on {gpus_available} x {gpu}: its weights alone are {weights_gib:.1} GiB; \
         it needs at least {gpus_needed} x {gpu} (more nodes, a larger GPU, or a smaller dtype such as fp8/int4)"
    )]
    DoesNotFit {
        /// The model.
        model: String,
        /// The GPU kind.
        gpu: String,
        /// GPUs in the cluster.
        gpus_available: u32,
        /// Estimated minimum GPUs of this kind.
        gpus_needed: u32,
        /// Total weight bytes in GiB at the chosen dtype.
        weights_gib: f64,
    },
    /// Layouts fit in memory but none satisfies the objective (e.g. SLO targets).
    #[error("no layout meets the objective: {reason}")]
    NoFeasiblePlan {
        /// Why the best candidate still fails.
        reason: String,
    },
}
