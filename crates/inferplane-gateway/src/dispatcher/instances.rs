//! Instance registration, active health, engine load, engine facts and readiness (health
//! and circuit together) in the dispatcher.
//!
//! Engine facts (batch limit, context length, KV capacity) come from three sources, field
//! by field: the configuration wins, then what the engine said about itself (discovered
//! each time it becomes healthy), then the planner's estimate for its GPU and layout.

use super::*;

use crate::engine_info;
use crate::health::{Circuit, CircuitBreaker, Health, HealthTracker};
use crate::plane_error::PlaneError;
use crate::probe;
use crate::stats::Stats;
use inferplane_core::{DuplicateInstance, EngineInfo, EngineLoad, InstanceId, InstanceSpec};
use std::sync::Arc;

/// An instance's engine facts by source, and the merged ones the scheduler has.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EngineFacts {
    /// From the configuration (the instance's own, then its pool's).
    configured: EngineInfo,
    /// What the engine said at its last discovery.
    discovered: EngineInfo,
    /// The planner's estimate for its model, GPU and layout.
    planned: EngineInfo,
    /// What the scheduler was last given.
    effective: EngineInfo,
}

impl EngineFacts {
    fn merged(&self) -> EngineInfo {
        engine_info::or(
            self.configured,
            engine_info::or(self.discovered, self.planned),
        )
    }
}

impl Dispatcher {
    pub(super) fn register(
        &mut self,
        spec: InstanceSpec,
        api_key: Option<crate::config::Secret>,
        configured: EngineInfo,
        kv: Option<crate::config::KvEventsSection>,
    ) -> Result<InstanceView, PlaneError> {
        if self.instances.contains_key(&spec.id) {
            return Err(PlaneError::Conflict(DuplicateInstance(spec.id)));
        }
        let model = self.ensure_pool(&spec.model);
        let now = self.clock.now();
        // just made by `ensure_pool`
        let Some(pool) = self.pools.get_mut(&model) else {
            return Err(self.unknown_model(&spec.model));
        };
        pool.scheduler
            .add_instance(spec.clone())
            .map_err(PlaneError::Conflict)?;
        // The planner's forecast for an instance that names its GPU: rates to start from,
        // and the batch limit, context and KV capacity an engine of that kind has until
        // the engine or the configuration says otherwise.
        let forecast = inferplane_planner::forecast(&spec);
        if let Some(f) = forecast {
            pool.scheduler.set_rates(&spec.id, f.rates);
        }
        let engine = EngineFacts {
            configured: engine_info::or(configured, self.config.engine_for(&spec.model)),
            planned: forecast.map(|f| f.info).unwrap_or_default(),
            ..EngineFacts::default()
        };
        let metrics = self.telemetry.instance(&spec.model, spec.id.as_str());
        let backend = Arc::new(Backend {
            spec: spec.clone(),
            api_key,
            metrics,
        });
        let reports = Arc::new(probe::Reports::default());
        let probe = probe::spawn(
            backend.clone(),
            self.http.clone(),
            self.config.health.clone(),
            self.config.scrape.clone(),
            reports.clone(),
            self.ctl_tx.clone(),
        );
        let kv_events = kv.map(|kv| {
            tracing::info!(instance = %spec.id, endpoint = %kv.endpoint, "subscribing to KV events");
            crate::kv_events::spawn(
                spec.id.clone(),
                &kv,
                self.telemetry.kv_events(&spec.model, spec.id.as_str()),
                self.ctl_tx.clone(),
            )
        });
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
                reports,
                engine,
                discovery: None,
                kv_events,
            },
        );
        self.apply_engine_info(&spec.id);
        self.view(&spec.id)
            .ok_or_else(|| PlaneError::NotFound(spec.id.clone()))
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
            // What the scheduler holds, so the admin API shows what admission uses.
            engine_max_batch: st.engine.max_batch,
            engine_max_model_len: st.engine.max_model_len,
            engine_kv_capacity_tokens: st.engine.kv_capacity_tokens,
            placed_total: st.placed_total,
            prefix_blocks: pool.scheduler.prefix_blocks_of(id),
            fleet_others_inflight: st.fleet.others,
            fleet_reservation: st.fleet.cap,
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
        // half-open: probes only, not a full share of the traffic
        let probes =
            matches!(circuit, Circuit::HalfOpen).then_some(self.config.circuit.half_open_requests);
        if let Some(pool) = self.pools.get_mut(e.backend.spec.model.as_str()) {
            pool.scheduler.set_probe_limit(id, probes);
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
    /// Applies what the instance's probes found since last time: the health results in a
    /// row (at most as many as can change its state) and the latest load.
    pub(super) fn probed(&mut self, id: InstanceId) {
        let Some(e) = self.instances.get(&id) else {
            return;
        };
        let pending = e.reports.take();
        if let Some((ok, n)) = pending.health {
            let enough = self
                .config
                .health
                .healthy_after
                .max(self.config.health.unhealthy_after);
            for _ in 0..n.min(enough.max(1)) {
                self.health(id.clone(), ok);
            }
        }
        if let Some(load) = pending.load {
            self.load(id, load);
        }
    }

    /// Applies what an instance's KV event subscriber sent since last time to its pool's
    /// prefix index (a bounded amount per call; the rest is asked for again).
    pub(super) fn kv_events(&mut self, id: InstanceId) {
        let now = self.clock.now();
        let Some(e) = self.instances.get_mut(&id) else {
            return;
        };
        let Some(kv) = e.kv_events.as_mut() else {
            return;
        };
        let Some(pool) = self.pools.get_mut(e.backend.spec.model.as_str()) else {
            return;
        };
        let more = kv.inbox.drain(|change| {
            pool.scheduler.cache_changed(&id, change.as_core(), now);
        });
        if more {
            let _ = self.ctl_tx.send(Ctl::KvEvents { instance: id });
        }
    }

    pub(super) fn health(&mut self, id: InstanceId, ok: bool) {
        let now = self.clock.now();
        let Some(e) = self.instances.get_mut(&id) else {
            return;
        };
        if let Some(state) = e.health.record(ok, now) {
            tracing::info!(instance = %id, health = state.as_str(), "health changed");
            if state == Health::Healthy {
                // First healthy, or back after being unhealthy (perhaps restarted with other
                // settings): ask the engine about itself, in a task of its own.
                if let Some(previous) = e.discovery.take() {
                    previous.abort();
                }
                e.discovery = Some(engine_info::spawn(
                    e.backend.clone(),
                    self.http.clone(),
                    self.config.health.timeout,
                    self.ctl_tx.clone(),
                ));
            }
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
        m.engine_running.set(load.running);
        m.engine_waiting.set(load.waiting);
        m.engine_kv.set(load.kv_usage);
        let model = e.backend.spec.model.clone();
        if let Some(pool) = self.pools.get_mut(model.as_str()) {
            pool.scheduler.update_load(&id, load, self.clock.now());
        }
    }

    /// Records what the engine said about itself and, if the merged facts changed, tells
    /// the scheduler (room may have opened or closed) and dispatches.
    pub(super) fn engine_info(&mut self, id: InstanceId, info: EngineInfo) {
        let Some(e) = self.instances.get_mut(&id) else {
            return;
        };
        e.engine.discovered = info;
        tracing::debug!(
            instance = %id,
            max_batch = ?info.max_batch,
            max_model_len = ?info.max_model_len,
            kv_capacity_tokens = ?info.kv_capacity_tokens,
            "engine answered"
        );
        if self.apply_engine_info(&id)
            && let Some(model) = self.model_of(&id)
        {
            self.poll(&model);
        }
    }

    /// Merges an instance's engine facts and, when they changed, gives them to the
    /// scheduler, the metrics and the log. Returns whether they changed.
    fn apply_engine_info(&mut self, id: &InstanceId) -> bool {
        let Some(e) = self.instances.get_mut(id) else {
            return false;
        };
        let info = e.engine.merged();
        if info == e.engine.effective {
            return false;
        }
        e.engine.effective = info;
        e.backend.metrics.engine_info.set(&info);
        tracing::info!(
            instance = %id,
            max_batch = ?info.max_batch,
            max_model_len = ?info.max_model_len,
            kv_capacity_tokens = ?info.kv_capacity_tokens,
            "engine facts changed"
        );
        if let Some(pool) = self.pools.get_mut(e.backend.spec.model.as_str()) {
            pool.scheduler.set_engine_info(id, info);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_wins_over_the_engine_which_wins_over_the_plan() {
        let facts = EngineFacts {
            configured: EngineInfo {
                max_model_len: Some(4096),
                ..EngineInfo::default()
            },
            discovered: EngineInfo {
                max_model_len: Some(32_768),
                kv_capacity_tokens: Some(500_000),
                ..EngineInfo::default()
            },
            planned: EngineInfo {
                max_batch: Some(256),
                max_model_len: Some(131_072),
                kv_capacity_tokens: Some(400_000),
            },
            effective: EngineInfo::default(),
        };
        assert_eq!(
            facts.merged(),
            EngineInfo {
                max_batch: Some(256),
                max_model_len: Some(4096),
                kv_capacity_tokens: Some(500_000),
            }
        );
    }
}
