//! What a run measured, per request, in the same shape for live and simulated runs.

use inferplane_core::{RejectKind, RejectReason};
use serde::{Deserialize, Serialize};

/// Why a request did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The connection could not be made or broke before a response.
    Connect,
    /// No complete answer within the request timeout (or the run's end).
    Timeout,
    /// A non-success HTTP status.
    Status(u16),
    /// The response stream broke after it began.
    Stream,
    /// The stream carried an error event.
    ErrorEvent,
    /// The control plane turned it away, for this reason (in a live run: the OpenAI
    /// error `code` of its answer).
    Rejected(RejectKind),
    /// The engine refused it (e.g. longer than the context).
    Engine,
}

impl Failure {
    /// A short snake_case label for reports.
    pub fn label(self) -> String {
        match self {
            Failure::Connect => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Status(s) => format!("http_{s}"),
            Failure::Stream => "stream".into(),
            Failure::ErrorEvent => "error_event".into(),
            Failure::Rejected(kind) => kind.as_str().into(),
            Failure::Engine => "engine".into(),
        }
    }

    /// Whether the control plane turned it away (as opposed to a failure while serving).
    pub fn is_rejection(self) -> bool {
        matches!(self, Failure::Rejected(_) | Failure::Status(429 | 503))
    }

    /// The failure of a request the scheduler rejected.
    pub fn from_reject(reason: &RejectReason) -> Failure {
        Failure::Rejected(reason.kind())
    }

    /// The failure of an HTTP error answer: a rejection when its OpenAI error `code` names
    /// one (the gateway answers rejections so), else the bare status.
    pub fn from_http(status: u16, body: &[u8]) -> Failure {
        #[derive(Deserialize)]
        struct Body {
            error: Error,
        }
        #[derive(Deserialize)]
        struct Error {
            #[serde(default)]
            code: Option<String>,
        }
        serde_json::from_slice::<Body>(body)
            .ok()
            .and_then(|b| b.error.code)
            .and_then(|c| RejectKind::from_label(&c))
            .map_or(Failure::Status(status), Failure::Rejected)
    }
}

/// One request's measurements. Times are seconds of the workload's clock (virtual seconds
/// for simulations and for live runs against time-scaled simulators).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Index of the request in the workload.
    pub item: u32,
    /// When it arrived (was sent).
    pub arrival: f64,
    /// `None` when served, else why not.
    pub failure: Option<Failure>,
    /// Index into [`RunRecords::instances`] of the instance that served it, if known.
    pub instance: Option<u32>,
    /// Arrival to first token.
    pub ttft: Option<f64>,
    /// Arrival to the last byte (or to the failure).
    pub e2e: f64,
    /// Output tokens received.
    pub output_tokens: u32,
    /// Prompt tokens served from the prefix cache, if the server said.
    pub cached_tokens: Option<u32>,
}

/// One instance of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceUsage {
    /// Its id.
    pub id: String,
    /// GPUs it occupies (1 when unknown).
    pub gpus: u32,
    /// Dollars per GPU-hour, if known.
    pub price_per_gpu_hour: Option<f64>,
    /// Seconds it spent computing (simulation only).
    pub busy_secs: Option<f64>,
    /// Prompt tokens looked up in its prefix cache (simulation only).
    pub prefix_queries: Option<u64>,
    /// Of which found (simulation only).
    pub prefix_hits: Option<u64>,
}

/// Everything one run produced.
#[derive(Debug, Clone, Default)]
pub struct RunRecords {
    /// A label for reports, e.g. `fifo/round_robin`.
    pub label: String,
    /// `live` or `simulated`.
    pub mode: String,
    /// Length of the run on the workload's clock, first arrival to last completion.
    pub duration: f64,
    /// One record per request sent, in workload order.
    pub records: Vec<Record>,
    /// The instances (live: those seen in `x-inferplane-instance` headers).
    pub instances: Vec<InstanceUsage>,
    /// Inter-token gaps in microseconds (live streaming runs only).
    pub itl_us: Option<hdrhistogram::Histogram<u64>>,
}
