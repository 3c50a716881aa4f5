//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in a benchmark, with the path or item it concerns.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A trace line could not be read.
    #[error("{path}:{line}: {msg}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        msg: String,
    },
    /// A workload spec or trace makes no sense (e.g. a zero rate).
    #[error("invalid workload: {0}")]
    Workload(String),
    /// A cluster description makes no sense; names the offending path.
    #[error("invalid cluster: {0}")]
    Cluster(String),
    /// A TOML file could not be parsed.
    #[error("{path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// No engine profile could be built for an instance.
    #[error("instance {instance}: {source}")]
    Profile {
        /// The instance id.
        instance: String,
        /// The cause.
        #[source]
        source: inferplane_sim::FromPlannerError,
    },
    /// The target's admin API refused a policy switch.
    #[error("switching {target} to {choice}: {status}: {body}")]
    PolicySwitch {
        /// The target's base URL.
        target: String,
        /// The choice, `policy/routing/balance`.
        choice: String,
        /// HTTP status.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// An HTTP client error (building the client, or a request outside a load run).
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// JSON encoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            path: path.into(),
            source,
        }
    }
}
