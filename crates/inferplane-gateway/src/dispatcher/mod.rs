//! The dispatcher task: the single owner of every pool's `core::Scheduler`, of instance
//! health and circuit state, and of request accounting. Handlers talk to it through a
//! bounded channel (submissions) and an unbounded one (completions and probe results, sent
//! from `Drop` guards, so they can never be lost), and get their placement through a
//! oneshot reply. Picking an instance takes no lock and does no I/O; I/O happens in the
//! request's own task and in per-instance probe tasks.
//!
//! Files: [`types`] (the messages and views it exchanges), `requests.rs` (submit, dispatch,
//! completion, expiry, rejection), `instances.rs` (registration, health, load, readiness),
//! `admin.rs` (admin commands, run-time policy switching). Engine facts (batch limit,
//! context, KV capacity) are discovered in their own tasks ([`crate::engine_info`]) each
//! time an instance becomes healthy, and reach the scheduler from here, as do the engines'
//! KV cache events ([`crate::kv_events`], one subscriber task per instance that has them).

mod admin;
mod fleet;
mod instances;
mod requests;
pub mod types;

use requests::sync_pool_metrics;
pub use types::*;

use crate::config::GatewayConfig;
use crate::health::{CircuitBreaker, HealthTracker};
use crate::plane_error::PlaneError;
use crate::stats::{Finished, Stats};
use crate::telemetry::{PoolMetrics, Route, Status, Telemetry};
use arc_swap::ArcSwap;
use inferplane_core::{AttemptId, Effects, EngineLoad, InstanceId, RequestMeta, Scheduler, Time};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Per-pool state.
pub(crate) struct Pool {
    scheduler: Scheduler<Waiter>,
    metrics: Arc<PoolMetrics>,
    stats: Stats,
    switches_seen: u64,
    /// Reused between polls.
    effects: Effects<Waiter>,
    /// When the scheduler asked to be polled next.
    wake_at: Option<Time>,
}

/// A queued request's reply channel.
pub(crate) struct Waiter {
    reply: oneshot::Sender<Result<Assignment, PlaneError>>,
    route: Route,
    tag: Option<Arc<str>>,
}

pub(crate) struct InstanceEntry {
    backend: Arc<Backend>,
    health: HealthTracker,
    circuit: CircuitBreaker,
    load: EngineLoad,
    stats: Stats,
    probe: JoinHandle<()>,
    /// Its probes' results not yet taken.
    reports: Arc<crate::probe::Reports>,
    engine: instances::EngineFacts,
    /// The engine-fact discovery under way, if any.
    discovery: Option<JoinHandle<()>>,
    /// Its KV event subscription (`kv_events` configured); dropping it ends the task.
    kv_events: Option<crate::kv_events::KvEvents>,
}

pub(crate) struct Inflight {
    model: Arc<str>,
    route: Route,
    meta: RequestMeta,
    tag: Option<Arc<str>>,
    /// The registration it was placed on (slot and generation).
    ix: inferplane_core::InstanceIx,
    /// What prefix routing found at placement.
    prefix: Option<inferplane_core::route::PrefixNote>,
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
    inflight: HashMap<AttemptId, Inflight>,
    total: Stats,
    /// The earliest time an open circuit breaker half-opens; kept up to date on every
    /// circuit change so that the event loop never scans all instances.
    circuit_wake: Option<Time>,
    /// With `[shared]`: wakes the sync task early when requests wait (see `shared`).
    fleet_wake: Option<Arc<tokio::sync::Notify>>,
    /// Tenants' limits, told what each finished request cost (budgets).
    limiter: Option<Arc<crate::tenants::Limiter>>,
    /// Each configured tenant's metric handles, by its core id (its index in `[[tenants]]`).
    tenant_metrics: Vec<crate::telemetry::TenantMetrics>,
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
        let tenant_metrics = config
            .tenants
            .iter()
            .map(|t| telemetry.tenant(&t.id))
            .collect();
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
            circuit_wake: None,
            fleet_wake: None,
            limiter: None,
            tenant_metrics,
        };
        for pool in &config.pools {
            d.ensure_pool(&pool.model);
            for spec in &pool.instances {
                let key = config.api_keys.get(&spec.id).cloned();
                let engine = config
                    .engine_overrides
                    .get(&spec.id)
                    .copied()
                    .unwrap_or_default();
                let kv = config.kv_events.get(&spec.id).cloned();
                if let Err(e) = d.register(spec.clone(), key, engine, kv) {
                    tracing::error!(instance = %spec.id, error = %e, "cannot register instance");
                }
            }
        }
        d
    }

    /// Wakes `wake` whenever a poll leaves requests waiting (the shared store's sync task
    /// then syncs early).
    pub fn set_fleet_wake(&mut self, wake: Arc<tokio::sync::Notify>) {
        self.fleet_wake = Some(wake);
    }

    /// Tells `limiter` what each tenant's finished requests cost.
    pub fn set_limiter(&mut self, limiter: Arc<crate::tenants::Limiter>) {
        self.limiter = Some(limiter);
    }

    pub(super) fn ensure_pool(&mut self, model: &str) -> Arc<str> {
        if let Some((k, _)) = self.pools.get_key_value(model) {
            return k.clone();
        }
        let key: Arc<str> = Arc::from(model);
        let metrics = Arc::new(self.telemetry.pool(model));
        let mut scheduler = Scheduler::new(self.config.scheduler_for(model));
        // a tenant's index in `[[tenants]]` is its id (see `tenants`)
        for (i, t) in self.config.tenants.iter().enumerate() {
            scheduler.set_tenant_weight(inferplane_core::TenantId(i as u32), t.weight);
        }
        metrics.blocks.set(scheduler.routes_by_blocks());
        self.pools.insert(
            key.clone(),
            Pool {
                scheduler,
                metrics: metrics.clone(),
                stats: Stats::default(),
                switches_seen: 0,
                effects: Effects::default(),
                wake_at: None,
            },
        );
        let mut table = HashMap::clone(&self.models.load());
        table.insert(model.to_string(), metrics);
        self.models.store(Arc::new(table));
        key
    }

    /// The error for a model no pool serves, naming those served (sorted).
    pub(super) fn unknown_model(&self, model: &str) -> PlaneError {
        let mut known: Vec<String> = self.pools.keys().map(|k| k.to_string()).collect();
        known.sort();
        PlaneError::UnknownModel {
            model: model.to_string(),
            known,
        }
    }

    pub(super) fn model_of(&self, id: &InstanceId) -> Option<Arc<str>> {
        let e = self.instances.get(id)?;
        self.pools
            .get_key_value(e.backend.spec.model.as_str())
            .map(|(k, _)| k.clone())
    }

    fn next_wake(&self) -> Option<Time> {
        let queues = self.pools.values().filter_map(|p| p.wake_at);
        queues.chain(self.circuit_wake).min()
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
                    Some(Ctl::Done { attempt, instance, outcome }) => self.done(attempt, instance, outcome),
                    Some(Ctl::FirstToken { model, attempt }) => {
                        if let Some(pool) = self.pools.get_mut(&model) {
                            pool.scheduler.first_token(attempt, self.clock.now());
                        }
                    }
                    Some(Ctl::CancelQueued { model, id }) => {
                        if let Some(pool) = self.pools.get_mut(&model) {
                            let now = self.clock.now();
                            if let Some(w) = pool.scheduler.cancel(id, now) {
                                pool.metrics.request(w.route, Status::cancelled);
                                pool.stats.record(Finished::Cancelled);
                                self.total.record(Finished::Cancelled);
                                sync_pool_metrics(&model, pool);
                            }
                        }
                    }
                    Some(Ctl::Probed { instance }) => self.probed(instance),
                    Some(Ctl::KvEvents { instance }) => self.kv_events(instance),
                    Some(Ctl::Health { instance, ok }) => self.health(instance, ok),
                    Some(Ctl::Load { instance, load }) => self.load(instance, load),
                    Some(Ctl::EngineInfo { instance, info }) => self.engine_info(instance, info),
                    Some(Ctl::Admin(cmd)) => self.admin(cmd),
                    Some(Ctl::Fleet(msg)) => self.fleet(msg),
                    None => break,
                },
                sub = sub_rx.recv(), if sub_open => match sub {
                    Some(s) => self.submit(s),
                    None => sub_open = false,
                },
                () = sleep => self.wake(),
            }
        }
        for (_, e) in self.instances.drain() {
            e.probe.abort();
            if let Some(d) = e.discovery {
                d.abort();
            }
        }
    }
}
