//! Admin commands in the dispatcher: register, remove, drain, list, metrics snapshots, and
//! run-time switching of scheduling policy, routing strategy and balancing algorithm.

use super::*;

use crate::plane_error::PlaneError;
use inferplane_core::InstanceId;
use std::collections::HashMap;
use std::sync::Arc;

impl Dispatcher {
    pub(super) fn admin(&mut self, cmd: AdminCmd) {
        match cmd {
            AdminCmd::Register(spec, key, engine, kv, reply) => {
                let _ = reply.send(self.register(spec, key, engine, kv));
            }
            AdminCmd::Remove(id, reply) => {
                let res = match self.view(&id) {
                    None => Err(PlaneError::NotFound(id)),
                    Some(view) => {
                        if let Some(e) = self.instances.remove(&id) {
                            e.probe.abort();
                            if let Some(d) = e.discovery {
                                d.abort();
                            }
                            // dropping the subscription ends its task and subscriber
                            drop(e.kv_events);
                            let model = e.backend.spec.model.clone();
                            if let Some(pool) = self.pools.get_mut(model.as_str()) {
                                pool.scheduler.remove_instance(&id);
                            }
                            self.telemetry.remove_instance(&model, id.as_str());
                            self.recompute_circuit_wake();
                            tracing::info!(instance = %id, "instance removed");
                        }
                        Ok(view)
                    }
                };
                let _ = reply.send(res);
            }
            AdminCmd::Drain(id, reply) => {
                let _ = reply.send(self.set_draining(id, true));
            }
            AdminCmd::Undrain(id, reply) => {
                let _ = reply.send(self.set_draining(id, false));
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

    /// Drains an instance (no new work; in-flight requests finish) or takes it back; taken
    /// back, queued requests may go there at once.
    fn set_draining(&mut self, id: InstanceId, draining: bool) -> Result<InstanceView, PlaneError> {
        let Some(model) = self.model_of(&id) else {
            return Err(PlaneError::NotFound(id));
        };
        if let Some(pool) = self.pools.get_mut(&model) {
            pool.scheduler.set_draining(&id, draining);
        }
        if draining {
            tracing::info!(instance = %id, "instance draining");
        } else {
            tracing::info!(instance = %id, "instance taking work again");
            self.poll(&model);
        }
        self.view(&id).ok_or(PlaneError::NotFound(id))
    }

    pub(super) fn policy_views(&self) -> Vec<PolicyView> {
        let mut views: Vec<PolicyView> = self
            .pools
            .iter()
            .map(|(model, pool)| {
                let s = &pool.scheduler;
                let reason = s.policy_reason();
                PolicyView {
                    model: model.to_string(),
                    policy: s.config().policy.clone(),
                    active_policy: s.active_policy(),
                    policy_switches: s.policy_switches(),
                    routing: s.config().routing.clone(),
                    balancing: s.balancing_name(),
                    queued_by_priority: s.queue_len_by_priority(),
                    reason: reason.map(|(r, _)| r.as_str()),
                    signals: reason.map(|(_, v)| v),
                    recent_switches: {
                        let all: Vec<_> = s.policy_switch_history().copied().collect();
                        all[all.len().saturating_sub(8)..].to_vec()
                    },
                    predicted_wait_secs: reason.map_or(0.0, |(_, v)| v.wait_secs),
                    drain_rate: s.drain_rate_estimate(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.model.cmp(&b.model));
        views
    }

    pub(super) fn set_policy(
        &mut self,
        change: PolicyChange,
    ) -> Result<Vec<PolicyView>, PlaneError> {
        // checked before anything changes: a bad setting must not reach (and panic) a pool
        use inferplane_core::settings::{check_balance, check_policy, check_routing};
        let checked = change
            .policy
            .as_ref()
            .map_or(Ok(()), check_policy)
            .and(change.routing.as_ref().map_or(Ok(()), check_routing))
            .and(change.balancing.as_ref().map_or(Ok(()), check_balance));
        checked.map_err(PlaneError::InvalidSetting)?;
        let models: Vec<Arc<str>> = match &change.model {
            Some(m) => match self.pools.get_key_value(m.as_str()) {
                Some((k, _)) => vec![k.clone()],
                None => return Err(self.unknown_model(m)),
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
                    pool.metrics.blocks.set(pool.scheduler.routes_by_blocks());
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
            self.poll(model);
        }
        Ok(self.policy_views())
    }
}
