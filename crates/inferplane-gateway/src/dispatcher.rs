//! The dispatcher task: the single owner of every pool's `core::Scheduler`, of instance
//! health and circuit state, and of request accounting. Handlers talk to it through a
//! bounded channel (submissions) and an unbounded one (completions and probe results, sent
//! from `Drop` guards, so they can never be lost), and get their placement through a
//! oneshot reply. Picking an instance takes no lock and does no I/O; I/O happens in the
//! request's own task and in per-instance probe tasks.

use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::health::{Circuit, CircuitBreaker, Health, HealthTracker};
use crate::probe;
use crate::stats::{Finished, PerformanceMetrics, Stats};
use crate::telemetry::{InstanceMetrics, PoolMetrics, Route, Status, Telemetry};
use arc_swap::ArcSwap;
use inferplane_core::{
    BalanceConfig, EngineLoad, InstanceId, InstanceSpec, Outcome, Placement, PolicyConfig, Rates,
    Rejected, RequestId, RequestMeta, RoutingConfig, Scheduler, Time,
};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
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
    ctl: mpsc::UnboundedSender<Ctl>,
    id: RequestId,
    instance: InstanceId,
    done: bool,
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
    /// Register an instance.
    Register(
        InstanceSpec,
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
    /// An admin command.
    Admin(AdminCmd),
}

/// Per-pool state.
struct Pool {
    scheduler: Scheduler<Waiter>,
    metrics: Arc<PoolMetrics>,
    stats: Stats,
    switches_seen: u64,
}

/// A queued request's reply channel.
struct Waiter {
    reply: oneshot::Sender<Result<Assignment, ApiError>>,
    route: Route,
}

struct InstanceEntry {
    backend: Arc<Backend>,
    health: HealthTracker,
    circuit: CircuitBreaker,
    load: EngineLoad,
    stats: Stats,
    probe: JoinHandle<()>,
}

struct Inflight {
    model: Arc<str>,
    route: Route,
    meta: RequestMeta,
}

/// Models served, for the HTTP edge to check without a round trip.
pub type ModelTable = ArcSwap<HashMap<String, Arc<PoolMetrics>>>;

/// The dispatcher's state; runs as one task.
pub struct Dispatcher {
    config: Arc<GatewayConfig>,
    clock: Clock,
    telemetry: Arc<Telemetry>,
    models: Arc<ModelTable>,
    http: reqwest::Client,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    pools: HashMap<Arc<str>, Pool>,
    instances: HashMap<InstanceId, InstanceEntry>,
    inflight: HashMap<RequestId, Inflight>,
    total: Stats,
    placements: Vec<Placement<Waiter>>,
}

impl Dispatcher {
    /// A dispatcher with the configured pools and instances registered (their probes start
    /// at once, so this must run inside a tokio runtime).
    pub fn new(
        config: Arc<GatewayConfig>,
        clock: Clock,
        telemetry: Arc<Telemetry>,
        models: Arc<ModelTable>,
        http: reqwest::Client,
        ctl_tx: mpsc::UnboundedSender<Ctl>,
    ) -> Self {
        let mut d = Dispatcher {
            config: config.clone(),
            clock,
            telemetry,
            models,
            http,
            ctl_tx,
            pools: HashMap::new(),
            instances: HashMap::new(),
            inflight: HashMap::new(),
            total: Stats::default(),
            placements: Vec::new(),
        };
        for pool in &config.pools {
            d.ensure_pool(&pool.model);
            for spec in &pool.instances {
                if let Err(e) = d.register(spec.clone()) {
                    tracing::error!(instance = %spec.id, error = %e, "cannot register instance");
                }
            }
        }
        d
    }

    fn ensure_pool(&mut self, model: &str) -> Arc<str> {
        if let Some((k, _)) = self.pools.get_key_value(model) {
            return k.clone();
        }
        let key: Arc<str> = Arc::from(model);
        let metrics = Arc::new(self.telemetry.pool(model));
        self.pools.insert(
            key.clone(),
            Pool {
                scheduler: Scheduler::new(self.config.scheduler_for(model)),
                metrics: metrics.clone(),
                stats: Stats::default(),
                switches_seen: 0,
            },
        );
        let mut table = HashMap::clone(&self.models.load());
        table.insert(model.to_string(), metrics);
        self.models.store(Arc::new(table));
        key
    }

    fn register(&mut self, spec: InstanceSpec) -> Result<InstanceView, ApiError> {
        if self.instances.contains_key(&spec.id) {
            return Err(ApiError::conflict(format!(
                "instance {} is already registered",
                spec.id
            )));
        }
        let model = self.ensure_pool(&spec.model);
        let now = self.clock.now();
        let pool = self
            .pools
            .get_mut(&model)
            .ok_or_else(|| ApiError::not_found("pool vanished"))?;
        pool.scheduler
            .add_instance(spec.clone())
            .map_err(|e| ApiError::conflict(e.to_string()))?;
        if let Some(rates) = predicted_rates(&spec) {
            pool.scheduler.set_rates(&spec.id, rates);
        }
        let metrics = self.telemetry.instance(&spec.model, spec.id.as_str());
        let backend = Arc::new(Backend {
            spec: spec.clone(),
            metrics,
        });
        let probe = probe::spawn(
            backend.clone(),
            self.http.clone(),
            self.config.health.clone(),
            self.config.scrape.clone(),
            self.ctl_tx.clone(),
        );
        tracing::info!(instance = %spec.id, model = %spec.model, url = %spec.url, "instance registered");
        self.instances.insert(
            spec.id.clone(),
            InstanceEntry {
                backend,
                health: HealthTracker::new(&self.config.health, now),
                circuit: CircuitBreaker::new(&self.config.circuit),
                load: EngineLoad::default(),
                stats: Stats::default(),
                probe,
            },
        );
        self.view(&spec.id)
            .ok_or_else(|| ApiError::not_found("instance vanished"))
    }

    fn view(&self, id: &InstanceId) -> Option<InstanceView> {
        let e = self.instances.get(id)?;
        let pool = self.pools.get(e.backend.spec.model.as_str())?;
        let st = pool.scheduler.instance(id)?;
        let mut circuit = e.circuit.clone();
        Some(InstanceView {
            spec: e.backend.spec.clone(),
            inflight: st.inflight,
            ready: st.ready,
            draining: st.draining,
            health: e.health.state().as_str(),
            circuit: circuit.poll(self.clock.now()).as_str(),
            engine_running: e.load.running,
            engine_waiting: e.load.waiting,
            engine_kv_usage: e.load.kv_usage,
            placed_total: st.placed_total,
        })
    }

    /// Recomputes whether an instance may take work and tells its scheduler.
    fn refresh_ready(&mut self, id: &InstanceId) {
        let now = self.clock.now();
        let Some(e) = self.instances.get_mut(id) else {
            return;
        };
        let circuit = e.circuit.poll(now);
        let ready = e.health.state() == Health::Healthy && !matches!(circuit, Circuit::Open { .. });
        e.backend.metrics.healthy.set(i64::from(ready));
        e.backend.metrics.circuit.set(circuit.gauge());
        if let Some(pool) = self.pools.get_mut(e.backend.spec.model.as_str()) {
            pool.scheduler.set_ready(id, ready);
        }
    }

    fn submit(&mut self, s: Submission) {
        let now = self.clock.now();
        let Some(model) = self
            .pools
            .get_key_value(s.meta.model.as_str())
            .map(|(k, _)| k.clone())
        else {
            let known: Vec<String> = self.pools.keys().map(|k| k.to_string()).collect();
            let _ = s
                .reply
                .send(Err(ApiError::unknown_model(&s.meta.model, &known)));
            return;
        };
        let Some(pool) = self.pools.get_mut(&model) else {
            return;
        };
        let waiter = Waiter {
            reply: s.reply,
            route: s.route,
        };
        match s.avoid {
            Some(avoid) => {
                pool.metrics.retries.inc();
                pool.scheduler.requeue(s.meta, waiter, &avoid, now);
            }
            None => {
                if let Err(r) = pool.scheduler.submit(s.meta, waiter, now) {
                    reject(pool, &mut self.total, &model, *r);
                }
            }
        }
        self.dispatch(&model);
    }

    fn dispatch(&mut self, model: &Arc<str>) {
        let now = self.clock.now();
        let Some(pool) = self.pools.get_mut(model) else {
            return;
        };
        loop {
            self.placements.clear();
            pool.scheduler.dispatch(now, &mut self.placements);
            if self.placements.is_empty() {
                break;
            }
            let mut freed = false;
            for p in self.placements.drain(..) {
                let Some(entry) = self.instances.get(&p.instance) else {
                    continue;
                };
                pool.metrics.queue_wait.observe(p.queued_for.as_secs_f64());
                let assignment = Assignment {
                    backend: entry.backend.clone(),
                    queued_for: p.queued_for,
                    guard: AttemptGuard {
                        ctl: self.ctl_tx.clone(),
                        id: p.meta.id,
                        instance: p.instance.clone(),
                        done: false,
                    },
                };
                let id = p.meta.id;
                let route = p.payload.route;
                match p.payload.reply.send(Ok(assignment)) {
                    Ok(()) => {
                        entry.backend.metrics.inflight.inc();
                        self.inflight.insert(
                            id,
                            Inflight {
                                model: model.clone(),
                                route,
                                meta: p.meta,
                            },
                        );
                    }
                    Err(undelivered) => {
                        // The client left while queued and its cancel is still on the way.
                        if let Ok(mut a) = undelivered {
                            a.guard.done = true;
                        }
                        pool.scheduler.complete(id, Outcome::Cancelled, now);
                        freed = true;
                    }
                }
            }
            if !freed {
                break;
            }
        }
        let mut rejected = Vec::new();
        pool.scheduler.take_rejected(&mut rejected);
        for r in rejected {
            reject(pool, &mut self.total, model, r);
        }
        sync_pool_metrics(model, pool);
    }

    fn done(&mut self, id: RequestId, instance: InstanceId, result: AttemptResult) {
        let now = self.clock.now();
        let Some(rec) = self.inflight.remove(&id) else {
            return;
        };
        let Some(pool) = self.pools.get_mut(&rec.model) else {
            return;
        };
        let outcome = match result {
            AttemptResult::Success {
                prompt_tokens,
                completion_tokens,
                ttft,
                ..
            } => Outcome::Success {
                prompt_tokens,
                completion_tokens,
                ttft,
            },
            AttemptResult::Cancelled => Outcome::Cancelled,
            _ => Outcome::Failure,
        };
        pool.scheduler.complete(id, outcome, now);
        let entry = self.instances.get_mut(&instance);
        let gpus = entry
            .as_ref()
            .map(|e| e.backend.spec.gpu_count())
            .unwrap_or(1);
        let price = entry.as_ref().and_then(|e| e.backend.spec.price);
        let concurrency = pool
            .scheduler
            .instance(&instance)
            .map(|s| f64::from(s.inflight + 1))
            .unwrap_or(1.0);
        let slo_of = |latency: Option<Duration>, ttft: Option<Duration>| {
            let e2e_ok = rec.meta.deadline.map(|d| latency.is_some_and(|l| l <= d));
            let ttft_ok = rec.meta.ttft_target.map(|d| ttft.is_some_and(|t| t <= d));
            match (e2e_ok, ttft_ok) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(true) && b.unwrap_or(true)),
            }
        };
        let mut circuit_change = None;
        let m = &pool.metrics;
        let finished = match result {
            AttemptResult::Success {
                prompt_tokens,
                completion_tokens,
                ttft,
                latency,
            } => {
                let cost = price
                    .map(|p| {
                        p.cost(
                            u64::from(prompt_tokens),
                            u64::from(completion_tokens),
                            gpus,
                            latency.as_secs_f64(),
                            concurrency,
                        )
                    })
                    .unwrap_or(0.0);
                m.request(rec.route, Status::success);
                m.e2e.observe(latency.as_secs_f64());
                if let Some(t) = ttft {
                    m.ttft.observe(t.as_secs_f64());
                }
                m.prompt_tokens.inc_by(u64::from(prompt_tokens));
                m.completion_tokens.inc_by(u64::from(completion_tokens));
                m.cost.inc_by(cost);
                if let Some(e) = entry {
                    e.backend.metrics.success.inc();
                    circuit_change = e.circuit.success(now);
                }
                Some(Finished::Completed {
                    latency,
                    ttft,
                    prompt_tokens: u64::from(prompt_tokens),
                    completion_tokens: u64::from(completion_tokens),
                    cost_usd: cost,
                    slo_met: slo_of(Some(latency), ttft),
                })
            }
            AttemptResult::ClientError => {
                m.request(rec.route, Status::client_error);
                Some(Finished::Failed {
                    slo_met: slo_of(None, None),
                })
            }
            AttemptResult::Failed { retrying } => {
                if let Some(e) = entry {
                    e.backend.metrics.failure.inc();
                    circuit_change = e.circuit.failure(now);
                }
                if retrying {
                    None
                } else {
                    m.request(rec.route, Status::upstream_error);
                    Some(Finished::Failed {
                        slo_met: slo_of(None, None),
                    })
                }
            }
            AttemptResult::StreamBroken => {
                if let Some(e) = entry {
                    e.backend.metrics.failure.inc();
                    circuit_change = e.circuit.failure(now);
                }
                m.request(rec.route, Status::stream_broken);
                Some(Finished::Failed {
                    slo_met: slo_of(None, None),
                })
            }
            AttemptResult::Cancelled => {
                m.request(rec.route, Status::cancelled);
                Some(Finished::Cancelled)
            }
        };
        if let Some(f) = finished {
            if slo_missed(&f) {
                m.slo_violations.inc();
            }
            pool.stats.record(f);
            self.total.record(f);
            if let Some(e) = self.instances.get_mut(&instance) {
                e.stats.record(f);
            }
        }
        if let Some(e) = self.instances.get(&instance) {
            e.backend.metrics.inflight.dec();
        }
        if let Some(state) = circuit_change {
            tracing::warn!(instance = %instance, circuit = state.as_str(), "circuit breaker changed");
            self.refresh_ready(&instance);
        }
        let model = rec.model.clone();
        self.dispatch(&model);
    }

    fn expire_and_poll(&mut self) {
        let now = self.clock.now();
        let mut expired = Vec::new();
        for (model, pool) in &mut self.pools {
            expired.clear();
            pool.scheduler.expire(now, &mut expired);
            for r in expired.drain(..) {
                reject(pool, &mut self.total, model, r);
            }
            sync_pool_metrics(model, pool);
        }
        // Open breakers whose cool-down ended become half-open.
        let reopened: Vec<InstanceId> = self
            .instances
            .iter()
            .filter(|(_, e)| e.circuit.reopens_at().is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in reopened {
            tracing::info!(instance = %id, "circuit breaker half-open");
            self.refresh_ready(&id);
            if let Some(model) = self.model_of(&id) {
                self.dispatch(&model);
            }
        }
    }

    fn model_of(&self, id: &InstanceId) -> Option<Arc<str>> {
        let e = self.instances.get(id)?;
        self.pools
            .get_key_value(e.backend.spec.model.as_str())
            .map(|(k, _)| k.clone())
    }

    fn next_wake(&self) -> Option<Time> {
        let queues = self
            .pools
            .values()
            .filter_map(|p| p.scheduler.next_expiry());
        let circuits = self
            .instances
            .values()
            .filter_map(|e| e.circuit.reopens_at());
        queues.chain(circuits).min()
    }

    fn health(&mut self, id: InstanceId, ok: bool) {
        let now = self.clock.now();
        let Some(e) = self.instances.get_mut(&id) else {
            return;
        };
        if let Some(state) = e.health.record(ok, now) {
            tracing::info!(instance = %id, health = state.as_str(), "health changed");
            self.refresh_ready(&id);
            if let Some(model) = self.model_of(&id) {
                self.dispatch(&model);
            }
        }
    }

    fn load(&mut self, id: InstanceId, load: EngineLoad) {
        let Some(e) = self.instances.get_mut(&id) else {
            return;
        };
        e.load = load;
        let m = &e.backend.metrics;
        m.engine_running.set(load.running.unwrap_or(f64::NAN));
        m.engine_waiting.set(load.waiting.unwrap_or(f64::NAN));
        m.engine_kv.set(load.kv_usage.unwrap_or(f64::NAN));
        let model = e.backend.spec.model.clone();
        if let Some(pool) = self.pools.get_mut(model.as_str()) {
            pool.scheduler.update_load(&id, load);
        }
    }

    fn admin(&mut self, cmd: AdminCmd) {
        match cmd {
            AdminCmd::Register(spec, reply) => {
                let _ = reply.send(self.register(spec));
            }
            AdminCmd::Remove(id, reply) => {
                let res = match self.view(&id) {
                    None => Err(ApiError::not_found(format!("no instance {id}"))),
                    Some(view) => {
                        if let Some(e) = self.instances.remove(&id) {
                            e.probe.abort();
                            let model = e.backend.spec.model.clone();
                            if let Some(pool) = self.pools.get_mut(model.as_str()) {
                                pool.scheduler.remove_instance(&id);
                            }
                            self.telemetry.remove_instance(&model, id.as_str());
                            tracing::info!(instance = %id, "instance removed");
                        }
                        Ok(view)
                    }
                };
                let _ = reply.send(res);
            }
            AdminCmd::Drain(id, reply) => {
                let model = self.model_of(&id);
                let res = match model {
                    None => Err(ApiError::not_found(format!("no instance {id}"))),
                    Some(model) => {
                        if let Some(pool) = self.pools.get_mut(&model) {
                            pool.scheduler.set_draining(&id, true);
                        }
                        tracing::info!(instance = %id, "instance draining");
                        self.view(&id)
                            .ok_or_else(|| ApiError::not_found(format!("no instance {id}")))
                    }
                };
                let _ = reply.send(res);
            }
            AdminCmd::List(reply) => {
                let mut ids: Vec<&InstanceId> = self.instances.keys().collect();
                ids.sort();
                let _ = reply.send(ids.into_iter().filter_map(|id| self.view(id)).collect());
            }
            AdminCmd::Metrics(reply) => {
                let elapsed = self.clock.elapsed();
                let mut active = 0;
                let mut queued = 0;
                let mut pools = HashMap::new();
                for (model, pool) in &self.pools {
                    let a = pool.scheduler.inflight_len() as u64;
                    let q = pool.scheduler.queue_len() as u64;
                    active += a;
                    queued += q;
                    pools.insert(model.to_string(), pool.stats.view(elapsed, a, q));
                }
                let mut instances = HashMap::new();
                for (id, e) in &self.instances {
                    let a = self
                        .pools
                        .get(e.backend.spec.model.as_str())
                        .and_then(|p| p.scheduler.instance(id))
                        .map(|s| u64::from(s.inflight))
                        .unwrap_or(0);
                    instances.insert(id.to_string(), e.stats.view(elapsed, a, 0));
                }
                let _ = reply.send(MetricsView {
                    uptime_secs: elapsed.as_secs_f64(),
                    total: self.total.view(elapsed, active, queued),
                    pools,
                    instances,
                });
            }
            AdminCmd::GetPolicy(reply) => {
                let _ = reply.send(self.policy_views());
            }
            AdminCmd::SetPolicy(change, reply) => {
                let _ = reply.send(self.set_policy(change));
            }
        }
    }

    fn policy_views(&self) -> Vec<PolicyView> {
        let mut views: Vec<PolicyView> = self
            .pools
            .iter()
            .map(|(model, pool)| {
                let s = &pool.scheduler;
                PolicyView {
                    model: model.to_string(),
                    policy: s.config().policy.clone(),
                    active_policy: s.active_policy(),
                    policy_switches: s.policy_switches(),
                    routing: s.config().routing.clone(),
                    balancing: s.balancing_name(),
                    queued_by_priority: s.queue_len_by_priority(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.model.cmp(&b.model));
        views
    }

    fn set_policy(&mut self, change: PolicyChange) -> Result<Vec<PolicyView>, ApiError> {
        let models: Vec<Arc<str>> = match &change.model {
            Some(m) => match self.pools.get_key_value(m.as_str()) {
                Some((k, _)) => vec![k.clone()],
                None => {
                    let known: Vec<String> = self.pools.keys().map(|k| k.to_string()).collect();
                    return Err(ApiError::unknown_model(m, &known));
                }
            },
            None => self.pools.keys().cloned().collect(),
        };
        for model in &models {
            if let Some(pool) = self.pools.get_mut(model) {
                if let Some(p) = &change.policy {
                    pool.scheduler.set_policy(p.clone());
                }
                if let Some(r) = &change.routing {
                    pool.scheduler.set_routing(r.clone());
                }
                if let Some(b) = &change.balancing {
                    pool.scheduler.set_balancing(b.clone());
                }
                tracing::info!(
                    model = %model,
                    policy = pool.scheduler.policy_name(),
                    routing = pool.scheduler.routing_name(),
                    balancing = pool.scheduler.balancing_name().unwrap_or("-"),
                    "scheduling changed at run time"
                );
            }
            self.dispatch(model);
        }
        Ok(self.policy_views())
    }

    /// Runs until both channels close.
    pub async fn run(
        mut self,
        mut sub_rx: mpsc::Receiver<Submission>,
        mut ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    ) {
        let mut sub_open = true;
        loop {
            let wake = self.next_wake().map(|t| self.clock.instant(t));
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                ctl = ctl_rx.recv() => match ctl {
                    Some(Ctl::Done { id, instance, result }) => self.done(id, instance, result),
                    Some(Ctl::CancelQueued { model, id }) => {
                        if !self.inflight.contains_key(&id)
                            && let Some(pool) = self.pools.get_mut(&model) {
                                let now = self.clock.now();
                                if let Some(w) = pool.scheduler.cancel(id, now) {
                                    pool.metrics.request(w.route, Status::cancelled);
                                    pool.stats.record(Finished::Cancelled);
                                    self.total.record(Finished::Cancelled);
                                    sync_pool_metrics(&model, pool);
                                }
                            }
                    }
                    Some(Ctl::Health { instance, ok }) => self.health(instance, ok),
                    Some(Ctl::Load { instance, load }) => self.load(instance, load),
                    Some(Ctl::Admin(cmd)) => self.admin(cmd),
                    None => break,
                },
                sub = sub_rx.recv(), if sub_open => match sub {
                    Some(s) => self.submit(s),
                    None => sub_open = false,
                },
                () = sleep => self.expire_and_poll(),
            }
        }
        for (_, e) in self.instances.drain() {
            e.probe.abort();
        }
    }
}

/// Answers a request the scheduler refused or dropped, and accounts for it.
fn reject(pool: &mut Pool, total: &mut Stats, model: &str, r: Rejected<Waiter>) {
    pool.metrics.request(r.payload.route, Status::rejected);
    pool.metrics.rejects[r.reason.index()].inc();
    let slo = (r.meta.deadline.is_some() || r.meta.ttft_target.is_some()).then_some(false);
    if slo.is_some() {
        pool.metrics.slo_violations.inc();
    }
    pool.stats.record(Finished::Rejected { slo_met: slo });
    total.record(Finished::Rejected { slo_met: slo });
    tracing::debug!(model, reason = r.reason.as_str(), "request rejected");
    let _ = r
        .payload
        .reply
        .send(Err(ApiError::rejected(model, &r.reason)));
}

/// Publishes the pool's queue, in-flight, SLO and policy gauges, and logs policy switches.
fn sync_pool_metrics(model: &str, pool: &mut Pool) {
    let s = &pool.scheduler;
    let m = &pool.metrics;
    for (g, n) in m.queue_depth.iter().zip(s.queue_len_by_priority()) {
        g.set(n as i64);
    }
    m.inflight.set(s.inflight_len() as i64);
    if let Some(a) = s.stats().slo.attainment() {
        m.slo_attainment.set(a);
    }
    let active = s.active_policy();
    for (g, name) in m.active_policy.iter().zip(crate::telemetry::POLICIES) {
        g.set(i64::from(name == active));
    }
    let switches = s.policy_switches();
    if switches > pool.switches_seen {
        let new = (switches - pool.switches_seen) as usize;
        for sw in s
            .policy_switch_history()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(new)
            .rev()
        {
            tracing::info!(model, from = sw.from, to = sw.to, pressure = sw.pressure, slo_attainment = ?sw.slo_attainment, "adaptive policy switched");
        }
        m.policy_switches.inc_by(switches - pool.switches_seen);
        pool.switches_seen = switches;
    }
}

/// Rates predicted by the planner's cost model for an instance whose GPU and model it
/// knows; measured rates replace them as requests complete.
pub fn predicted_rates(spec: &InstanceSpec) -> Option<Rates> {
    let model = inferplane_planner::find_model(&spec.model)?;
    let gpu = inferplane_planner::find_gpu(spec.gpu.as_deref()?)?;
    let opts = inferplane_planner::EngineOptions::default();
    let est = inferplane_planner::CostModel::default()
        .engine_estimate(&model, &gpu, spec.layout, &opts)
        .ok()?;
    let conc = f64::from(spec.max_inflight.clamp(1, est.max_num_seqs.max(1)));
    let (input, output) = (
        f64::from(opts.typical_input_tokens),
        f64::from(opts.typical_output_tokens),
    );
    Some(Rates {
        prefill_tokens_per_sec: 1.0 / est.prefill_secs_per_token.max(1e-9),
        decode_secs_per_token: est.tpot_secs(conc, input, output),
        overhead_secs: est.decode_step_base_secs,
        samples: 0,
    })
}

fn slo_missed(f: &Finished) -> bool {
    matches!(
        f,
        Finished::Completed {
            slo_met: Some(false),
            ..
        } | Finished::Failed {
            slo_met: Some(false)
        } | Finished::Rejected {
            slo_met: Some(false)
        }
    )
}
