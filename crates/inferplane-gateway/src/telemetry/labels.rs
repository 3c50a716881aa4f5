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
    /// Refused before it reached a pool: a bad body or header (400), an unknown model
    /// (404), a body too large (413). Counted under `model=""` (never an arbitrary
    /// client string).
    invalid,
}

impl Status {
    /// The status of a request whose ending attempt had this outcome (`None` for an
    /// attempt being retried: the request goes on).
    pub fn of(outcome: &inferplane_core::Outcome) -> Option<Status> {
        use inferplane_core::Outcome;
        match outcome {
            Outcome::Success { .. } => Some(Status::success),
            Outcome::ClientError => Some(Status::client_error),
            Outcome::Failed { retrying: true } => None,
            Outcome::Failed { retrying: false } => Some(Status::upstream_error),
            Outcome::StreamBroken => Some(Status::stream_broken),
            Outcome::Cancelled => Some(Status::cancelled),
        }
    }

    /// All values, for pre-resolving handles.
    pub const ALL: [Status; 7] = [
        Status::success,
        Status::client_error,
        Status::rejected,
        Status::upstream_error,
        Status::stream_broken,
        Status::cancelled,
        Status::invalid,
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

/// The scheduling policies, as label values of `inferplane_active_policy` (from the
/// core's own list).
pub fn policies() -> [&'static str; 5] {
    inferplane_core::PolicyConfig::all().map(|p| p.name())
}

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
