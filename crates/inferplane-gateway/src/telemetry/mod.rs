//! The gateway's Prometheus metrics. Handles are resolved once per pool and once per
//! instance (never per request), and every label value comes from an enum.
//!
//! Names: `inferplane_requests_total{model,route,status}`, `inferplane_requests_inflight`,
//! `inferplane_queue_depth`, `inferplane_ttft_seconds`, `inferplane_e2e_latency_seconds`,
//! `inferplane_queue_wait_seconds`, `inferplane_prompt_tokens_total`,
//! `inferplane_completion_tokens_total`, `inferplane_retries_total`,
//! `inferplane_cost_usd_total`, `inferplane_slo_violations_total`, and per instance
//! `inferplane_instance_healthy`, `inferplane_instance_circuit_state` (0 closed, 1 half-open,
//! 2 open), `inferplane_instance_inflight`, `inferplane_instance_engine_running`,
//! `..._engine_waiting`, `..._engine_kv_usage` (a series only while known, as is
//! `inferplane_slo_attainment`; see `optional.rs`),
//! `inferplane_instance_requests_total{outcome}`, and the engine's own facts
//! `inferplane_instance_engine_max_batch`, `..._engine_max_model_len`,
//! `..._engine_kv_capacity_tokens` (a series only while known; see `engine.rs`), prefix
//! routing's token counters and placement reasons (see `prefix.rs`), and the KV cache
//! events consumed for precise prefix routing (`kv.rs`), the state shared by gateway
//! replicas (`shared.rs`), and instance discovery's watch events and endpoints by state
//! (`discovery.rs`).

mod discovery;
mod engine;
mod kv;
mod labels;
mod optional;
mod prefix;
mod shared;
mod tenants;

pub use discovery::{DiscoveryEventKind, DiscoveryMetrics};
pub use engine::EngineInfoGauges;
pub use kv::{KvEventKind, KvEventMetrics, KvLossReason};
pub use labels::{AttemptOutcome, Route, Status, policies};
use optional::FloatGauge;
pub use optional::OptionalGauge;
pub use prefix::{InstancePrefix, PoolPrefix};
pub use shared::SharedMetrics;
pub use tenants::{REJECTIONS, TenantMetrics, TenantTotals};

use labels::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type FloatCounter = Counter<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

/// All metric families of one gateway.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    inflight: Family<ModelLabel, Gauge>,
    queue_depth: Family<PriorityLabels, Gauge>,
    rejects: Family<ReasonLabels, Counter>,
    slo_attainment: Family<ModelLabel, FloatGauge>,
    active_policy: Family<PolicyLabels, Gauge>,
    policy_switches: Family<ModelLabel, Counter>,
    ttft: Family<ModelLabel, Histogram, fn() -> Histogram>,
    e2e: Family<ModelLabel, Histogram, fn() -> Histogram>,
    queue_wait: Family<ModelLabel, Histogram, fn() -> Histogram>,
    prompt_tokens: Family<ModelLabel, Counter>,
    completion_tokens: Family<ModelLabel, Counter>,
    retries: Family<ModelLabel, Counter>,
    cost: Family<ModelLabel, FloatCounter>,
    slo_violations: Family<ModelLabel, Counter>,
    inst_healthy: Family<InstanceLabels, Gauge>,
    inst_circuit: Family<InstanceLabels, Gauge>,
    inst_inflight: Family<InstanceLabels, Gauge>,
    inst_running: Family<InstanceLabels, FloatGauge>,
    inst_waiting: Family<InstanceLabels, FloatGauge>,
    inst_kv: Family<InstanceLabels, FloatGauge>,
    inst_requests: Family<InstanceOutcomeLabels, Counter>,
    inst_engine: engine::EngineFamilies,
    prefix: prefix::PrefixFamilies,
    kv: kv::KvFamilies,
    shared: shared::SharedFamilies,
    discovery: discovery::DiscoveryFamilies,
    tenants: tenants::TenantFamilies,
    /// Requests refused before a model was known (bad body, bad headers).
    pub invalid_requests: Counter,
}

/// Handles for one pool (model).
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    requests: [[Counter; Status::ALL.len()]; 2],
    /// Requests placed and not finished.
    pub inflight: Gauge,
    /// Requests waiting in the gateway's queue, by priority (critical first).
    pub queue_depth: [Gauge; 4],
    /// Rejections by reason, indexed by `RejectKind::index()`.
    pub rejects: [Counter; inferplane_core::RejectKind::COUNT],
    /// SLO attainment of finished requests that had an SLO (NaN before the first).
    pub slo_attainment: OptionalGauge,
    /// 1 for the policy that orders the queue now (the adaptive policy's current choice).
    pub active_policy: [Gauge; 5],
    /// Switches made by the adaptive policy.
    pub policy_switches: Counter,
    /// Time to first token, seconds.
    pub ttft: Histogram,
    /// End-to-end latency, seconds.
    pub e2e: Histogram,
    /// Time spent in the gateway's queue, seconds.
    pub queue_wait: Histogram,
    /// Prompt tokens served.
    pub prompt_tokens: Counter,
    /// Completion tokens served.
    pub completion_tokens: Counter,
    /// Retries on another instance.
    pub retries: Counter,
    /// Estimated cost in US dollars.
    pub cost: FloatCounter,
    /// Requests that missed their SLO.
    pub slo_violations: Counter,
    /// Placements by prefix-routing reason.
    pub prefix: prefix::PoolPrefix,
    /// Not a metric: whether the edge hashes this pool's prompt blocks (shared with the
    /// handlers through the pool table they already read).
    pub blocks: std::sync::Arc<crate::prompt::BlockRouting>,
}

impl PoolMetrics {
    /// Counts a finished request.
    pub fn request(&self, route: Route, status: Status) {
        self.requests[route as usize][status.index()].inc();
    }
}

/// Handles for one instance.
#[derive(Debug, Clone)]
pub struct InstanceMetrics {
    /// 1 when ready for traffic (healthy and circuit not open).
    pub healthy: Gauge,
    /// Circuit state: 0 closed, 1 half-open, 2 open.
    pub circuit: Gauge,
    /// Requests in flight at this instance.
    pub inflight: Gauge,
    /// Engine-reported running requests (no series while unknown).
    pub engine_running: OptionalGauge,
    /// Engine-reported waiting requests (no series while unknown).
    pub engine_waiting: OptionalGauge,
    /// Engine-reported KV usage (no series while unknown).
    pub engine_kv: OptionalGauge,
    /// Attempts served.
    pub success: Counter,
    /// Attempts failed.
    pub failure: Counter,
    /// What the engine says about itself (no series while unknown).
    pub engine_info: EngineInfoGauges,
    /// Prompt, cached and index-matched tokens.
    pub prefix: prefix::InstancePrefix,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let hist: fn() -> Histogram = latency_histogram;
        let t = Telemetry {
            requests: Family::default(),
            inflight: Family::default(),
            queue_depth: Family::default(),
            rejects: Family::default(),
            slo_attainment: Family::default(),
            active_policy: Family::default(),
            policy_switches: Family::default(),
            ttft: Family::new_with_constructor(hist),
            e2e: Family::new_with_constructor(hist),
            queue_wait: Family::new_with_constructor(hist),
            prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            retries: Family::default(),
            cost: Family::default(),
            slo_violations: Family::default(),
            inst_healthy: Family::default(),
            inst_circuit: Family::default(),
            inst_inflight: Family::default(),
            inst_running: Family::default(),
            inst_waiting: Family::default(),
            inst_kv: Family::default(),
            inst_requests: Family::default(),
            inst_engine: engine::EngineFamilies::default(),
            prefix: prefix::PrefixFamilies::default(),
            kv: kv::KvFamilies::default(),
            shared: shared::SharedFamilies::default(),
            discovery: discovery::DiscoveryFamilies::default(),
            tenants: tenants::TenantFamilies::default(),
            invalid_requests: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "inferplane_requests",
            "Requests by model, route and how they ended",
            t.requests.clone(),
        );
        r.register(
            "inferplane_requests_inflight",
            "Requests placed on an instance and not finished",
            t.inflight.clone(),
        );
        r.register(
            "inferplane_queue_depth",
            "Requests waiting in the gateway's queue, by priority",
            t.queue_depth.clone(),
        );
        r.register(
            "inferplane_rejects",
            "Requests refused or dropped by the scheduler, by reason",
            t.rejects.clone(),
        );
        r.register(
            "inferplane_slo_attainment",
            "Fraction of finished requests with an SLO that met it",
            t.slo_attainment.clone(),
        );
        r.register(
            "inferplane_active_policy",
            "1 for the scheduling policy ordering the queue now",
            t.active_policy.clone(),
        );
        r.register(
            "inferplane_policy_switches",
            "Policy switches made by the adaptive policy",
            t.policy_switches.clone(),
        );
        r.register(
            "inferplane_ttft_seconds",
            "Time to first token seen by the gateway (streamed answers only)",
            t.ttft.clone(),
        );
        r.register(
            "inferplane_e2e_latency_seconds",
            "End-to-end latency seen by the gateway",
            t.e2e.clone(),
        );
        r.register(
            "inferplane_queue_wait_seconds",
            "Time spent in the gateway's queue",
            t.queue_wait.clone(),
        );
        r.register(
            "inferplane_prompt_tokens",
            "Prompt tokens served",
            t.prompt_tokens.clone(),
        );
        r.register(
            "inferplane_completion_tokens",
            "Completion tokens served",
            t.completion_tokens.clone(),
        );
        r.register(
            "inferplane_retries",
            "Attempts retried on another instance",
            t.retries.clone(),
        );
        r.register(
            "inferplane_cost_usd",
            "Estimated cost of served requests, US dollars",
            t.cost.clone(),
        );
        r.register(
            "inferplane_slo_violations",
            "Requests that missed their SLO",
            t.slo_violations.clone(),
        );
        r.register(
            "inferplane_instance_healthy",
            "1 when the instance may receive traffic",
            t.inst_healthy.clone(),
        );
        r.register(
            "inferplane_instance_circuit_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            t.inst_circuit.clone(),
        );
        r.register(
            "inferplane_instance_inflight",
            "Requests in flight at the instance",
            t.inst_inflight.clone(),
        );
        r.register(
            "inferplane_instance_engine_running",
            "Engine-reported running requests (NaN: unknown)",
            t.inst_running.clone(),
        );
        r.register(
            "inferplane_instance_engine_waiting",
            "Engine-reported waiting requests (NaN: unknown)",
            t.inst_waiting.clone(),
        );
        r.register(
            "inferplane_instance_engine_kv_usage",
            "Engine-reported KV-cache usage 0..1 (NaN: unknown)",
            t.inst_kv.clone(),
        );
        r.register(
            "inferplane_instance_requests",
            "Attempts per instance by outcome",
            t.inst_requests.clone(),
        );
        t.inst_engine.register(r);
        t.prefix.register(r);
        t.kv.register(r);
        t.shared.register(r);
        t.discovery.register(r);
        t.tenants.register(r);
        r.register(
            "inferplane_invalid_requests",
            "Requests refused before reaching a pool (bad body or headers)",
            t.invalid_requests.clone(),
        );
        Telemetry { registry, ..t }
    }

    /// Counts a request refused before it reached a pool (`status="invalid"`, under
    /// `model=""`: the model it named may be anything a client sends).
    pub fn invalid_request(&self, route: Route) {
        self.invalid_requests.inc();
        self.requests
            .get_or_create(&RequestLabels {
                model: String::new(),
                route,
                status: Status::invalid,
            })
            .inc();
    }

    /// Resolves the handles of one pool.
    pub fn pool(&self, model: &str) -> PoolMetrics {
        let m = ModelLabel {
            model: model.to_string(),
        };
        let req = |route: Route| {
            Status::ALL.map(|status| {
                self.requests
                    .get_or_create(&RequestLabels {
                        model: model.to_string(),
                        route,
                        status,
                    })
                    .clone()
            })
        };
        PoolMetrics {
            requests: [req(Route::chat_completions), req(Route::completions)],
            inflight: self.inflight.get_or_create(&m).clone(),
            queue_depth: inferplane_core::Priority::ALL.map(|p| {
                self.queue_depth
                    .get_or_create(&PriorityLabels {
                        model: model.to_string(),
                        priority: p.as_str(),
                    })
                    .clone()
            }),
            rejects: inferplane_core::RejectKind::ALL
                .map(|k| k.as_str())
                .map(|reason| {
                    self.rejects
                        .get_or_create(&ReasonLabels {
                            model: model.to_string(),
                            reason,
                        })
                        .clone()
                }),
            slo_attainment: OptionalGauge::model(&self.slo_attainment, m.clone()),
            active_policy: policies().map(|policy| {
                self.active_policy
                    .get_or_create(&PolicyLabels {
                        model: model.to_string(),
                        policy,
                    })
                    .clone()
            }),
            policy_switches: self.policy_switches.get_or_create(&m).clone(),
            ttft: self.ttft.get_or_create(&m).clone(),
            e2e: self.e2e.get_or_create(&m).clone(),
            queue_wait: self.queue_wait.get_or_create(&m).clone(),
            prompt_tokens: self.prompt_tokens.get_or_create(&m).clone(),
            completion_tokens: self.completion_tokens.get_or_create(&m).clone(),
            retries: self.retries.get_or_create(&m).clone(),
            cost: self.cost.get_or_create(&m).clone(),
            slo_violations: self.slo_violations.get_or_create(&m).clone(),
            prefix: self.prefix.pool(model),
            blocks: std::sync::Arc::default(),
        }
    }

    /// Resolves the handles of one instance; unknown engine figures have no series.
    pub fn instance(&self, model: &str, instance: &str) -> InstanceMetrics {
        let l = InstanceLabels {
            model: model.to_string(),
            instance: instance.to_string(),
        };
        let outcome = |outcome| {
            self.inst_requests
                .get_or_create(&InstanceOutcomeLabels {
                    model: model.to_string(),
                    instance: instance.to_string(),
                    outcome,
                })
                .clone()
        };
        InstanceMetrics {
            healthy: self.inst_healthy.get_or_create(&l).clone(),
            circuit: self.inst_circuit.get_or_create(&l).clone(),
            inflight: self.inst_inflight.get_or_create(&l).clone(),
            engine_running: OptionalGauge::instance(&self.inst_running, l.clone()),
            engine_waiting: OptionalGauge::instance(&self.inst_waiting, l.clone()),
            engine_kv: OptionalGauge::instance(&self.inst_kv, l.clone()),
            success: outcome(AttemptOutcome::success),
            failure: outcome(AttemptOutcome::failure),
            engine_info: self.inst_engine.handle(l.clone()),
            prefix: self.prefix.instance(&l),
        }
    }

    /// Resolves the KV event handles of one instance (for an instance that publishes them).
    pub fn kv_events(&self, model: &str, instance: &str) -> KvEventMetrics {
        self.kv.handle(&InstanceLabels {
            model: model.to_string(),
            instance: instance.to_string(),
        })
    }

    /// The shared store's handles (their series appear with the first call).
    pub fn shared_store(&self) -> SharedMetrics {
        self.shared.handle()
    }

    /// Instance discovery's handles (its series appear when it is resolved).
    pub fn discovery(&self) -> DiscoveryMetrics {
        self.discovery.handle()
    }

    /// KV event subscriber tasks running now.
    pub fn kv_event_subscribers(&self) -> i64 {
        self.kv.subscribers()
    }

    /// Forgets a removed instance's series.
    pub fn remove_instance(&self, model: &str, instance: &str) {
        let l = InstanceLabels {
            model: model.to_string(),
            instance: instance.to_string(),
        };
        for f in [&self.inst_healthy, &self.inst_circuit, &self.inst_inflight] {
            f.remove(&l);
        }
        for f in [&self.inst_running, &self.inst_waiting, &self.inst_kv] {
            f.remove(&l);
        }
        self.inst_engine.remove(&l);
        self.prefix.remove(&l);
        self.kv.remove(&l);
        for outcome in [AttemptOutcome::success, AttemptOutcome::failure] {
            self.inst_requests.remove(&InstanceOutcomeLabels {
                model: model.to_string(),
                instance: instance.to_string(),
                outcome,
            });
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests;
