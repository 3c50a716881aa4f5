//! `ControlPlane`: the embeddable manager (the seed's `ControlPlaneManager`). It starts the
//! dispatcher task and gives a cheap, clonable handle to submit requests, register, drain
//! and remove instances, and read metrics. The HTTP gateway is one user of it; a Rust
//! program can be another, doing its own I/O with the placements it gets. Its calls fail
//! with a [`PlaneError`] (unknown model, rejected with the core's reason, conflict, not
//! found, invalid setting, shutting down), which knows nothing of HTTP.

use crate::backend;
use crate::config::GatewayConfig;
use crate::dispatcher::{
    AdminCmd, Assignment, Clock, Ctl, Dispatcher, InstanceView, MetricsView, ModelTable, Submission,
};
use crate::dispatcher::{PolicyChange, PolicyView};
use crate::plane_error::PlaneError;
use crate::telemetry::{PoolMetrics, Route, Telemetry};
use inferplane_core::{
    AttemptId, EngineInfo, InstanceId, InstanceSpec, RequestId, RequestMeta, Time,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Capacity of the submission channel (callers wait when it is full).
const SUBMIT_QUEUE: usize = 4096;

/// Longest wait on the shared store at a tenant's admission (then: counted locally).
const LIMIT_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);
/// How often, at most, tenants' usage totals are added to the shared store's.
const USAGE_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Errors starting a control plane.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine HTTP client could not be built.
    #[error("cannot build the engine HTTP client")]
    Client(#[source] reqwest::Error),
    /// The shared store's client could not be built.
    #[error("cannot set up the shared store")]
    Shared(#[source] crate::shared::StoreError),
}

struct Inner {
    sub_tx: mpsc::Sender<Submission>,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    models: Arc<ModelTable>,
    telemetry: Arc<Telemetry>,
    config: Arc<GatewayConfig>,
    clock: Clock,
    http: reqwest::Client,
    next_id: AtomicU64,
    task: JoinHandle<()>,
    /// Set when the shutdown grace ran out: open streams end with an error event.
    cut: tokio::sync::watch::Sender<bool>,
    /// Set when shutdown begins (a signal): `/ready` fails from then on.
    leaving: std::sync::atomic::AtomicBool,
    /// The sync task of the state shared with other replicas, if configured.
    shared: Option<JoinHandle<()>>,
    /// Tenants' limits.
    limiter: Arc<crate::tenants::Limiter>,
    /// The task reporting tenants' usage totals to the shared store, if configured.
    reports: Option<JoinHandle<()>>,
}

/// A handle to a running control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

/// Removes a queued request from the queue if the waiting caller goes away.
struct CancelOnDrop {
    ctl: mpsc::UnboundedSender<Ctl>,
    model: Arc<str>,
    id: RequestId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.ctl.send(Ctl::CancelQueued {
                model: self.model.clone(),
                id: self.id,
            });
        }
    }
}

impl ControlPlane {
    /// Starts the dispatcher with the configured pools and instances. Must be called
    /// inside a tokio runtime.
    pub fn start(config: GatewayConfig) -> Result<ControlPlane, StartError> {
        let config = Arc::new(config);
        let http = backend::client(&config.timeouts).map_err(StartError::Client)?;
        let (sub_tx, sub_rx) = mpsc::channel(SUBMIT_QUEUE);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let models = Arc::new(ModelTable::from_pointee(HashMap::new()));
        let telemetry = Arc::new(Telemetry::new());
        let clock = Clock::new();
        let dispatcher = Dispatcher::new(
            config.clone(),
            clock,
            telemetry.clone(),
            models.clone(),
            http.clone(),
            ctl_tx.clone(),
        );
        let mut dispatcher = dispatcher;
        let store = match &config.shared {
            // the fleet's usage totals too, not only limits, need it
            Some(settings) if !config.tenants.is_empty() => Some(
                crate::tenants::LimitStore::new(
                    settings.redis.expose(),
                    &settings.key_prefix,
                    &settings.replica_id,
                    (settings.period * 3).max(settings.fallback_after),
                    settings.fallback_after.min(LIMIT_STORE_TIMEOUT),
                )
                .map_err(StartError::Shared)?,
            ),
            _ => None,
        };
        let limiter = Arc::new(crate::tenants::Limiter::new(
            &config.tenants,
            &telemetry,
            store,
        ));
        dispatcher.set_limiter(limiter.clone());
        let reports = config
            .shared
            .as_ref()
            .and_then(|s| limiter.spawn_reports(s.period.max(USAGE_REPORT_EVERY)));
        let shared = match &config.shared {
            Some(settings) => {
                let wake = Arc::new(tokio::sync::Notify::new());
                dispatcher.set_fleet_wake(wake.clone());
                Some(
                    crate::shared::spawn(settings, ctl_tx.clone(), telemetry.shared_store(), wake)
                        .map_err(StartError::Shared)?,
                )
            }
            None => None,
        };
        let task = tokio::spawn(dispatcher.run(sub_rx, ctl_rx));
        let inner = Inner {
            sub_tx,
            ctl_tx,
            models,
            telemetry,
            config,
            clock,
            http,
            next_id: AtomicU64::new(1),
            task,
            cut: tokio::sync::watch::Sender::new(false),
            leaving: std::sync::atomic::AtomicBool::new(false),
            shared,
            limiter,
            reports,
        };
        Ok(ControlPlane {
            inner: Arc::new(inner),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The HTTP client for engines (shared connection pool).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Now, on the control plane's clock.
    pub fn now(&self) -> Time {
        self.inner.clock.now()
    }

    /// The clock.
    pub fn clock(&self) -> Clock {
        self.inner.clock
    }

    /// A fresh request id.
    pub fn next_request_id(&self) -> RequestId {
        RequestId(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The metric handles of a model's pool; `None` if no pool serves it.
    pub fn pool(&self, model: &str) -> Option<Arc<PoolMetrics>> {
        self.inner.models.load().get(model).cloned()
    }

    /// Models served, sorted.
    pub fn models(&self) -> Vec<String> {
        let mut m: Vec<String> = self.inner.models.load().keys().cloned().collect();
        m.sort();
        m
    }

    /// All metric families.
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// Tenants' limits.
    pub fn limiter(&self) -> &Arc<crate::tenants::Limiter> {
        &self.inner.limiter
    }

    /// Queues a request and waits for its placement (or its rejection). If the returned
    /// future is dropped while waiting, the request leaves the queue. Fails with
    /// [`PlaneError::UnknownModel`], [`PlaneError::Rejected`] (the scheduler's reason) or
    /// [`PlaneError::ShuttingDown`].
    pub async fn submit(&self, meta: RequestMeta, route: Route) -> Result<Assignment, PlaneError> {
        self.place(meta, route, None, None).await
    }

    /// [`submit`](Self::submit), naming the request in the access log with the caller's id
    /// (the HTTP gateway passes `x-request-id`).
    pub async fn submit_with_id(
        &self,
        meta: RequestMeta,
        route: Route,
        request_id: Arc<str>,
    ) -> Result<Assignment, PlaneError> {
        self.place(meta, route, None, Some(request_id)).await
    }

    /// Queues the next attempt of a request whose attempt `failed` (reported with
    /// `Outcome::Failed { retrying: true }`) failed before any byte reached the client:
    /// it goes ahead of the queue and avoids the instances in `tried` (where its attempts
    /// failed so far) while another has room.
    pub async fn retry(
        &self,
        meta: RequestMeta,
        route: Route,
        failed: AttemptId,
        tried: Vec<InstanceId>,
    ) -> Result<Assignment, PlaneError> {
        self.place(meta, route, Some((failed, tried)), None).await
    }

    /// [`retry`](Self::retry), with the caller's request id for the access log.
    pub async fn retry_with_id(
        &self,
        meta: RequestMeta,
        route: Route,
        failed: AttemptId,
        tried: Vec<InstanceId>,
        request_id: Arc<str>,
    ) -> Result<Assignment, PlaneError> {
        self.place(meta, route, Some((failed, tried)), Some(request_id))
            .await
    }

    async fn place(
        &self,
        meta: RequestMeta,
        route: Route,
        retry: Option<(AttemptId, Vec<InstanceId>)>,
        tag: Option<Arc<str>>,
    ) -> Result<Assignment, PlaneError> {
        let (reply, rx) = oneshot::channel();
        let mut guard = CancelOnDrop {
            ctl: self.inner.ctl_tx.clone(),
            model: Arc::from(meta.model.as_str()),
            id: meta.id,
            armed: true,
        };
        self.inner
            .sub_tx
            .send(Submission {
                meta,
                route,
                retry,
                tag,
                reply,
            })
            .await
            .map_err(|_| PlaneError::ShuttingDown)?;
        let res = rx.await.map_err(|_| PlaneError::ShuttingDown);
        guard.armed = false;
        res?
    }

    async fn admin<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> AdminCmd,
    ) -> Result<R, PlaneError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ctl_tx
            .send(Ctl::Admin(make(tx)))
            .map_err(|_| PlaneError::ShuttingDown)?;
        rx.await.map_err(|_| PlaneError::ShuttingDown)
    }

    /// Registers an instance; it receives work once its first health check passes. Fails
    /// with [`PlaneError::Conflict`] if its id is already registered.
    pub async fn register_instance(&self, spec: InstanceSpec) -> Result<InstanceView, PlaneError> {
        self.register_instance_with(spec, None, EngineInfo::default())
            .await
    }

    /// Registers an instance whose engine requires a bearer token (`vllm serve --api-key`).
    pub async fn register_instance_with_api_key(
        &self,
        spec: InstanceSpec,
        api_key: crate::config::Secret,
    ) -> Result<InstanceView, PlaneError> {
        self.register_instance_with(spec, Some(api_key), EngineInfo::default())
            .await
    }

    /// Registers an instance with its engine's bearer token, if any, and engine facts known
    /// from elsewhere (`max_batch`, `max_model_len`, ...), which win over what the engine
    /// reports about itself; `None` fields are left to the engine and the planner.
    pub async fn register_instance_with(
        &self,
        spec: InstanceSpec,
        api_key: Option<crate::config::Secret>,
        engine: EngineInfo,
    ) -> Result<InstanceView, PlaneError> {
        self.register_instance_with_kv_events(spec, api_key, engine, None)
            .await
    }

    /// Registers an instance as [`register_instance_with`](Self::register_instance_with)
    /// does, subscribing to its engine's KV cache events when `kv_events` says where they
    /// are (precise mode of the `prefix` routing strategy). Check the section with
    /// [`kv_events_of`](crate::config::kv_events_of) first.
    pub async fn register_instance_with_kv_events(
        &self,
        spec: InstanceSpec,
        api_key: Option<crate::config::Secret>,
        engine: EngineInfo,
        kv_events: Option<crate::config::KvEventsSection>,
    ) -> Result<InstanceView, PlaneError> {
        self.admin(|tx| AdminCmd::Register(spec, api_key, engine, kv_events, tx))
            .await?
    }

    /// Removes an instance; requests in flight there finish. Fails with
    /// [`PlaneError::NotFound`] for an id not registered.
    pub async fn remove_instance(&self, id: &InstanceId) -> Result<InstanceView, PlaneError> {
        self.admin(|tx| AdminCmd::Remove(id.clone(), tx)).await?
    }

    /// Stops sending new work to an instance; in-flight requests finish. Fails with
    /// [`PlaneError::NotFound`] for an id not registered.
    pub async fn drain_instance(&self, id: &InstanceId) -> Result<InstanceView, PlaneError> {
        self.admin(|tx| AdminCmd::Drain(id.clone(), tx)).await?
    }

    /// Sends new work to a drained instance again (Kubernetes discovery: an endpoint ready
    /// again after it was not). Fails with [`PlaneError::NotFound`] for an id not
    /// registered.
    pub async fn undrain_instance(&self, id: &InstanceId) -> Result<InstanceView, PlaneError> {
        self.admin(|tx| AdminCmd::Undrain(id.clone(), tx)).await?
    }

    /// Every instance.
    pub async fn instances(&self) -> Result<Vec<InstanceView>, PlaneError> {
        self.admin(AdminCmd::List).await
    }

    /// The seed's `PerformanceMetrics`: total, per pool, per instance.
    pub async fn metrics(&self) -> Result<MetricsView, PlaneError> {
        self.admin(AdminCmd::Metrics).await
    }

    /// Every pool's scheduling policy, routing strategy and balancing algorithm, with the
    /// adaptive policy's current choice.
    pub async fn policies(&self) -> Result<Vec<PolicyView>, PlaneError> {
        self.admin(AdminCmd::GetPolicy).await
    }

    /// Switches scheduling policy, routing strategy and/or balancing algorithm at run time,
    /// for one pool or all; queued requests are kept and re-ordered. Fails, changing
    /// nothing, with [`PlaneError::InvalidSetting`] for a setting out of bounds and
    /// [`PlaneError::UnknownModel`] for a pool that does not exist.
    pub async fn set_policy(&self, change: PolicyChange) -> Result<Vec<PolicyView>, PlaneError> {
        self.admin(|tx| AdminCmd::SetPolicy(change, tx)).await?
    }

    /// Reports an instance's health from outside (for programs that run their own checks,
    /// with `[health] active = false`, e.g. from Kubernetes readiness).
    pub fn report_health(&self, id: &InstanceId, healthy: bool) {
        let _ = self.inner.ctl_tx.send(Ctl::Health {
            instance: id.clone(),
            ok: healthy,
        });
    }

    /// Reports an instance's engine load from outside (with `[scrape] active = false`).
    pub fn report_load(&self, id: &InstanceId, load: inferplane_core::EngineLoad) {
        let _ = self.inner.ctl_tx.send(Ctl::Load {
            instance: id.clone(),
            load,
        });
    }

    /// Reports what an instance's engine says about itself from outside (for programs that
    /// know it without asking the engine). Configured values still win; a later discovery
    /// (when the instance becomes healthy again) replaces it.
    pub fn report_engine_info(&self, id: &InstanceId, info: EngineInfo) {
        let _ = self.inner.ctl_tx.send(Ctl::EngineInfo {
            instance: id.clone(),
            info,
        });
    }

    /// Stops the dispatcher. Queued requests get a shutting-down error.
    pub fn shutdown(&self) {
        self.inner.task.abort();
        if let Some(shared) = &self.inner.shared {
            shared.abort();
        }
        if let Some(reports) = &self.inner.reports {
            reports.abort();
        }
    }

    /// Marks the gateway as leaving (a shutdown signal came): [`Self::is_leaving`] is
    /// true from now on, so `/ready` fails and load balancers stop sending traffic,
    /// while requests are still served until the listener closes.
    pub fn begin_leaving(&self) {
        self.inner.leaving.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun (see [`Self::begin_leaving`]).
    pub fn is_leaving(&self) -> bool {
        self.inner.leaving.load(Ordering::Relaxed)
    }

    /// Ends every open stream with an error event (the shutdown grace ran out).
    pub fn cut_streams(&self) {
        self.inner.cut.send_replace(true);
    }

    /// What relays watch to end their stream when [`Self::cut_streams`] is called.
    pub fn cut_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.cut.subscribe()
    }

    /// Whether the dispatcher task still runs. It ends only when stopped or on a bug (a
    /// panic); then nothing can be scheduled, `/health` fails and the server stops.
    pub fn is_alive(&self) -> bool {
        !self.inner.task.is_finished()
    }
}
