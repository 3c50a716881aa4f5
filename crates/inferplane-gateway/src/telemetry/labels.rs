//! Label values and label sets of the gateway's metric families. Every label value comes
//! from an enum or a fixed table, never from request data.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

/// Which OpenAI route a request came in on.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Route {
    /// `POST /v1/chat/completions`.
    chat_completions,
    /// `POST /v1/completions`.
    completions,
}

impl Route {
    /// The URL path on the engine.
    pub fn path(self) -> &'static str {
        match self {
            Route::chat_completions => "/v1/chat/completions",
            Route::completions => "/v1/completions",
        }
    }
}

/// How a request ended, as counted in `inferplane_requests_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Status {
    /// Served completely.
    success,
    /// The engine answered 4xx (the client's fault).
    client_error,
    /// The control plane did not queue it or it left the queue (full, timeout, deadline).
    rejected,
    /// Every attempt failed (connect errors, 5xx, timeouts).
    upstream_error,
    /// A stream broke after its first byte reached the client.
    stream_broken,
    /// The client went away.
    cancelled,
}

impl Status {
    /// All values, for pre-resolving handles.
    pub const ALL: [Status; 6] = [
        Status::success,
        Status::client_error,
        Status::rejected,
        Status::upstream_error,
        Status::stream_broken,
        Status::cancelled,
    ];

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Per-instance request outcome label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AttemptOutcome {
    /// The instance served the attempt.
    success,
    /// The attempt failed at the instance (connect error, 5xx, timeout, broken stream).
    failure,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) model: String,
    pub(super) route: Route,
    pub(super) status: Status,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ModelLabel {
    pub(super) model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PriorityLabels {
    pub(super) model: String,
    pub(super) priority: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) model: String,
    pub(super) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PolicyLabels {
    pub(super) model: String,
    pub(super) policy: &'static str,
}

/// The scheduling policies, as label values of `inferplane_active_policy`.
pub const POLICIES: [&str; 5] = [
    "fifo",
    "priority",
    "slo_aware",
    "cost_optimized",
    "adaptive",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct InstanceLabels {
    pub(super) model: String,
    pub(super) instance: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct InstanceOutcomeLabels {
    pub(super) model: String,
    pub(super) instance: String,
    pub(super) outcome: AttemptOutcome,
}
