//! Instance registration, active health, engine load and readiness (health and circuit
//! together) in the dispatcher.

use super::*;

use crate::error::ApiError;
use crate::health::{Circuit, CircuitBreaker, Health, HealthTracker};
use crate::probe;
use crate::stats::Stats;
use inferplane_core::{EngineLoad, InstanceId, InstanceSpec};
use std::sync::Arc;

impl Dispatcher {
    pub(super) fn register(
        &mut self,
        spec: InstanceSpec,
        api_key: Option<crate::config::Secret>,
    ) -> Result<InstanceView, ApiError> {
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
        // The planner's forecast for an instance that names its GPU: rates to start from,
        // and the batch limit, context and KV capacity an engine of that kind has until
        // the engine says otherwise.
        if let Some(f) = inferplane_planner::forecast(&spec) {
            pool.scheduler.set_rates(&spec.id, f.rates);
            pool.scheduler.set_engine_info(&spec.id, f.info);
        }
        let metrics = self.telemetry.instance(&spec.model, spec.id.as_str());
        let backend = Arc::new(Backend {
            spec: spec.clone(),
            api_key,
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

    pub(super) fn view(&self, id: &InstanceId) -> Option<InstanceView> {
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
    pub(super) fn refresh_ready(&mut self, id: &InstanceId) {
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
        self.recompute_circuit_wake();
    }

    /// Recomputes the earliest circuit reopen time (on circuit changes and removals only).
    pub(super) fn recompute_circuit_wake(&mut self) {
        self.circuit_wake = self
            .instances
            .values()
            .filter_map(|e| e.circuit.reopens_at())
            .min();
    }
    pub(super) fn health(&mut self, id: InstanceId, ok: bool) {
        let now = self.clock.now();
        let Some(e) = self.instances.get_mut(&id) else {
            return;
        };
        if let Some(state) = e.health.record(ok, now) {
            tracing::info!(instance = %id, health = state.as_str(), "health changed");
            self.refresh_ready(&id);
            if let Some(model) = self.model_of(&id) {
                self.poll(&model);
            }
        }
    }

    pub(super) fn load(&mut self, id: InstanceId, load: EngineLoad) {
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
            pool.scheduler.update_load(&id, load, self.clock.now());
        }
    }
}
