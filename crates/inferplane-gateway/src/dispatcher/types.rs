//! The messages and views the dispatcher exchanges: the clock mapping, placements and
//! their completion guard, submissions, control events, admin commands and the JSON views.

use crate::error::ApiError;
use crate::stats::PerformanceMetrics;
use crate::telemetry::{InstanceMetrics, Route};
use inferplane_core::{
    BalanceConfig, EngineInfo, EngineLoad, InstanceId, InstanceSpec, PolicyConfig, RequestId,
    RequestMeta, RoutingConfig, Time,
};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Maps the tokio clock onto core `Time` (nanoseconds since the control plane started).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Now, as core time.
    pub fn now(&self) -> Time {
        self.at(Instant::now())
    }

    /// An instant as core time.
    pub fn at(&self, i: Instant) -> Time {
        Time::from_nanos(
            u64::try_from(i.duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX),
        )
    }

    /// A core time as an instant.
    pub fn instant(&self, t: Time) -> Instant {
        self.origin + Duration::from_nanos(t.as_nanos())
    }

    /// Time since the origin.
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// An engine instance as request tasks see it: where to send, and its metric handles.
#[derive(Debug)]
pub struct Backend {
    /// The instance.
    pub spec: InstanceSpec,
    /// The bearer token its engine requires, if any.
    pub api_key: Option<crate::config::Secret>,
    /// Its metric handles.
    pub metrics: InstanceMetrics,
}

/// How one attempt at an instance ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttemptResult {
    /// Served completely.
    Success {
        /// Prompt tokens (engine-reported, else the gateway's estimate).
        prompt_tokens: u32,
        /// Completion tokens.
        completion_tokens: u32,
        /// From arrival at the gateway to the first token.
        ttft: Option<Duration>,
        /// From arrival at the gateway to the end.
        latency: Duration,
    },
    /// The engine answered 4xx: the request is over, the instance is fine.
    ClientError,
    /// The instance failed before any byte reached the client (connect error, 5xx,
    /// timeout). With `retrying`, the request goes on elsewhere.
    Failed {
        /// The request will be retried on another instance.
        retrying: bool,
    },
    /// The stream broke after bytes reached the client.
    StreamBroken,
    /// The client went away.
    Cancelled,
}

/// A placement handed to a request task. Dropping it without [`AttemptGuard::finish`]
/// reports the attempt as cancelled, so a disconnect or a panic still frees the slot.
#[derive(Debug)]
pub struct Assignment {
    /// Where to send the request.
    pub backend: Arc<Backend>,
    /// How long it waited in the queue.
    pub queued_for: Duration,
    /// Reports the attempt's end.
    pub guard: AttemptGuard,
}

/// Sends the attempt's completion to the dispatcher exactly once.
#[derive(Debug)]
pub struct AttemptGuard {
    pub(super) ctl: mpsc::UnboundedSender<Ctl>,
    pub(super) id: RequestId,
    pub(super) instance: InstanceId,
    pub(super) done: bool,
}

impl AttemptGuard {
    /// Reports how the attempt ended.
    pub fn finish(mut self, result: AttemptResult) {
        self.send(result);
    }

    fn send(&mut self, result: AttemptResult) {
        if !self.done {
            self.done = true;
            let _ = self.ctl.send(Ctl::Done {
                id: self.id,
                instance: self.instance.clone(),
                result,
            });
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.send(AttemptResult::Cancelled);
    }
}

/// What the admin API and the library see of an instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    /// The spec.
    #[serde(flatten)]
    pub spec: InstanceSpec,
    /// Requests in flight from this gateway.
    pub inflight: u32,
    /// May receive new work now.
    pub ready: bool,
    /// Draining (no new work).
    pub draining: bool,
    /// Active health.
    pub health: &'static str,
    /// Circuit breaker.
    pub circuit: &'static str,
    /// Engine-reported running requests.
    pub engine_running: Option<f64>,
    /// Engine-reported waiting requests.
    pub engine_waiting: Option<f64>,
    /// Engine-reported KV-cache usage.
    pub engine_kv_usage: Option<f64>,
    /// The most requests the engine runs at once: configured, else what the engine said,
    /// else the planner's estimate for its GPU and layout.
    pub engine_max_batch: Option<u32>,
    /// The longest context (prompt plus output) it accepts, in tokens, by the same
    /// precedence.
    pub engine_max_model_len: Option<u32>,
    /// Its KV-cache capacity in tokens, by the same precedence.
    pub engine_kv_capacity_tokens: Option<u64>,
    /// Requests placed on it so far.
    pub placed_total: u64,
}

/// `GET /admin/metrics`: the whole gateway, each pool and each instance.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsView {
    /// Seconds since start.
    pub uptime_secs: f64,
    /// All pools together.
    pub total: PerformanceMetrics,
    /// Per model.
    pub pools: HashMap<String, PerformanceMetrics>,
    /// Per instance.
    pub instances: HashMap<String, PerformanceMetrics>,
}

/// Admin commands.
#[derive(Debug)]
pub enum AdminCmd {
    /// Register an instance, with its engine's API key and the engine facts configured for
    /// it (these win over what the engine says; unknown fields are `None`).
    Register(
        InstanceSpec,
        Option<crate::config::Secret>,
        EngineInfo,
        oneshot::Sender<Result<InstanceView, ApiError>>,
    ),
    /// Remove an instance (in-flight requests finish).
    Remove(InstanceId, oneshot::Sender<Result<InstanceView, ApiError>>),
    /// Stop sending new work to an instance.
    Drain(InstanceId, oneshot::Sender<Result<InstanceView, ApiError>>),
    /// List instances.
    List(oneshot::Sender<Vec<InstanceView>>),
    /// Metrics snapshot.
    Metrics(oneshot::Sender<MetricsView>),
    /// Every pool's scheduling choices.
    GetPolicy(oneshot::Sender<Vec<PolicyView>>),
    /// Changes scheduling choices of one pool (or all with `model: None`).
    SetPolicy(
        PolicyChange,
        oneshot::Sender<Result<Vec<PolicyView>, ApiError>>,
    ),
}

/// A run-time change of scheduling choices; absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    /// The pool to change; all pools when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// New scheduling policy.
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// New routing strategy.
    #[serde(default)]
    pub routing: Option<RoutingConfig>,
    /// New balancing algorithm (switches routing to `load_balanced`).
    #[serde(default)]
    pub balancing: Option<BalanceConfig>,
}

/// A pool's scheduling choices, as `GET /admin/policy` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// The pool's model.
    pub model: String,
    /// The configured policy.
    pub policy: PolicyConfig,
    /// The policy ordering the queue now (the adaptive policy's current choice).
    pub active_policy: &'static str,
    /// Switches made by the adaptive policy.
    pub policy_switches: u64,
    /// The routing strategy.
    pub routing: RoutingConfig,
    /// The balancing algorithm, when routing is `load_balanced`.
    pub balancing: Option<&'static str>,
    /// Requests queued now, by priority (critical, high, normal, low).
    pub queued_by_priority: [usize; 4],
}

/// A submission or a retry.
#[derive(Debug)]
pub struct Submission {
    /// The request.
    pub meta: RequestMeta,
    /// The route, for metrics.
    pub route: Route,
    /// For a retry: the instance that failed.
    pub avoid: Option<InstanceId>,
    /// The client's request id (`x-request-id`), for the access log.
    pub tag: Option<Arc<str>>,
    /// Where the placement (or rejection) goes.
    pub reply: oneshot::Sender<Result<Assignment, ApiError>>,
}

/// Events for the dispatcher that must never be dropped.
#[derive(Debug)]
pub enum Ctl {
    /// An attempt ended.
    Done {
        /// The request.
        id: RequestId,
        /// Where it ran.
        instance: InstanceId,
        /// How it ended.
        result: AttemptResult,
    },
    /// The client left while queued.
    CancelQueued {
        /// The model (pool).
        model: Arc<str>,
        /// The request.
        id: RequestId,
    },
    /// A health check result.
    Health {
        /// The instance.
        instance: InstanceId,
        /// Passed?
        ok: bool,
    },
    /// A load reading (unknown fields when stale).
    Load {
        /// The instance.
        instance: InstanceId,
        /// The reading.
        load: EngineLoad,
    },
    /// What the engine says about itself (discovered after it became healthy, or reported
    /// by the embedding program); unknown fields are `None`.
    EngineInfo {
        /// The instance.
        instance: InstanceId,
        /// What it said.
        info: EngineInfo,
    },
    /// An admin command.
    Admin(AdminCmd),
}
