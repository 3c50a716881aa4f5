//! The messages and views the dispatcher exchanges: the clock mapping, placements and
//! their completion guard, submissions, control events, admin commands and the JSON views.

use crate::plane_error::PlaneError;
use crate::stats::PerformanceMetrics;
use crate::telemetry::{InstanceMetrics, Route};
use inferplane_core::{
    AttemptId, BalanceConfig, EngineInfo, EngineLoad, InstanceId, InstanceSpec, Outcome,
    PolicyConfig, RequestId, RequestMeta, RoutingConfig, Time,
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

/// A placement handed to a request task. Dropping it without [`AttemptGuard::finish`]
/// reports the attempt as cancelled, so a disconnect or a panic still frees the slot.
#[derive(Debug)]
pub struct Assignment {
    /// Where to send the request.
    pub backend: Arc<Backend>,
    /// How long it waited in the queue.
    pub queued_for: Duration,
    /// What prefix routing found at placement (pools routing by `prefix`).
    pub prefix: Option<inferplane_core::route::PrefixNote>,
    /// Reports the attempt's first token and its end.
    pub guard: AttemptGuard,
}

/// Sends the attempt's first token and its end to the dispatcher, each at most once.
#[derive(Debug)]
pub struct AttemptGuard {
    pub(super) ctl: mpsc::UnboundedSender<Ctl>,
    pub(super) attempt: AttemptId,
    pub(super) model: Arc<str>,
    pub(super) instance: InstanceId,
    pub(super) first: bool,
    pub(super) done: bool,
}

impl AttemptGuard {
    /// The attempt (request id and attempt number); a retry names it as the previous one.
    pub fn attempt(&self) -> AttemptId {
        self.attempt
    }

    /// Reports that the first token reached the client (streamed answers): the dispatcher
    /// corrects its prediction of the instance's prefill backlog.
    pub fn first_token(&mut self) {
        if !self.first && !self.done {
            self.first = true;
            let _ = self.ctl.send(Ctl::FirstToken {
                model: self.model.clone(),
                attempt: self.attempt,
            });
        }
    }

    /// Reports how the attempt ended.
    pub fn finish(mut self, outcome: Outcome) {
        self.send(outcome);
    }

    fn send(&mut self, outcome: Outcome) {
        if !self.done {
            self.done = true;
            let _ = self.ctl.send(Ctl::Done {
                attempt: self.attempt,
                instance: self.instance.clone(),
                outcome,
            });
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.send(Outcome::Cancelled);
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
    /// Blocks the pool's prefix index holds for it, from placements and its engine's KV
    /// events (absent when the pool's routing keeps no prefix index).
    pub prefix_blocks: Option<usize>,
    /// With `[shared]`: the other gateway replicas' requests in flight on it, as of the
    /// last sync.
    pub fleet_others_inflight: u32,
    /// With `[shared]`: the most requests this replica may have in flight on it until
    /// the next sync (its reservation); absent without a shared store or while it is
    /// unreachable.
    pub fleet_reservation: Option<u32>,
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
    /// Register an instance, with its engine's API key, the engine facts configured for
    /// it (these win over what the engine says; unknown fields are `None`) and where its
    /// engine publishes KV cache events, if it does.
    Register(
        InstanceSpec,
        Option<crate::config::Secret>,
        EngineInfo,
        Option<crate::config::KvEventsSection>,
        oneshot::Sender<Result<InstanceView, PlaneError>>,
    ),
    /// Remove an instance (in-flight requests finish).
    Remove(
        InstanceId,
        oneshot::Sender<Result<InstanceView, PlaneError>>,
    ),
    /// Stop sending new work to an instance.
    Drain(
        InstanceId,
        oneshot::Sender<Result<InstanceView, PlaneError>>,
    ),
    /// Send new work to a drained instance again.
    Undrain(
        InstanceId,
        oneshot::Sender<Result<InstanceView, PlaneError>>,
    ),
    /// List instances.
    List(oneshot::Sender<Vec<InstanceView>>),
    /// Metrics snapshot.
    Metrics(oneshot::Sender<MetricsView>),
    /// Every pool's scheduling choices.
    GetPolicy(oneshot::Sender<Vec<PolicyView>>),
    /// Changes scheduling choices of one pool (or all with `model: None`).
    SetPolicy(
        PolicyChange,
        oneshot::Sender<Result<Vec<PolicyView>, PlaneError>>,
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
    /// Why the adaptive policy chose the policy in force (absent for the others).
    pub reason: Option<&'static str>,
    /// The signals the adaptive policy last saw (absent for the others).
    pub signals: Option<inferplane_core::schedule::adaptive::SignalsView>,
    /// The adaptive policy's last switches, oldest first, with why.
    pub recent_switches: Vec<inferplane_core::PolicySwitch>,
    /// Predicted queue wait of a new normal request, seconds.
    pub predicted_wait_secs: f64,
    /// The drain rate the predictions use, requests per second.
    pub drain_rate: f64,
}

/// A submission or a retry.
#[derive(Debug)]
pub struct Submission {
    /// The request.
    pub meta: RequestMeta,
    /// The route, for metrics.
    pub route: Route,
    /// For a retry: the attempt that failed and the instances the request's attempts
    /// failed on so far (the retry avoids them while another has room).
    pub retry: Option<(AttemptId, Vec<InstanceId>)>,
    /// The client's request id (`x-request-id`), for the access log.
    pub tag: Option<Arc<str>>,
    /// Where the placement (or rejection) goes.
    pub reply: oneshot::Sender<Result<Assignment, PlaneError>>,
}

/// Events for the dispatcher that must never be dropped.
#[derive(Debug)]
pub enum Ctl {
    /// An attempt ended.
    Done {
        /// The attempt.
        attempt: AttemptId,
        /// Where it ran.
        instance: InstanceId,
        /// How it ended.
        outcome: Outcome,
    },
    /// An attempt's first token reached the client.
    FirstToken {
        /// The model (pool).
        model: Arc<str>,
        /// The attempt.
        attempt: AttemptId,
    },
    /// The client left while queued.
    CancelQueued {
        /// The model (pool).
        model: Arc<str>,
        /// The request.
        id: RequestId,
    },
    /// An instance's probes have results waiting in its [`Reports`](crate::probe::Reports).
    Probed {
        /// The instance.
        instance: InstanceId,
    },
    /// An instance's KV event subscriber has changes waiting in its
    /// [`Inbox`](crate::kv_events::Inbox) (told once per idle-to-pending change).
    KvEvents {
        /// The instance.
        instance: InstanceId,
    },
    /// A health check result reported from outside ([`ControlPlane::report_health`](crate::ControlPlane::report_health)).
    Health {
        /// The instance.
        instance: InstanceId,
        /// Passed?
        ok: bool,
    },
    /// A load reading reported from outside (unknown fields when stale).
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
    /// The state shared with other gateway replicas (see `shared`).
    Fleet(crate::shared::FleetMsg),
}
