//! The request lifecycle in the dispatcher: submission, placement, completion (with cost,
//! SLO and circuit accounting), expiry, and answering rejected requests.

use super::*;

use crate::error::ApiError;
use crate::stats::{Finished, Stats};
use crate::telemetry::Status;
use inferplane_core::{InstanceId, Outcome, Rejected, RequestId};
use std::sync::Arc;
use std::time::Duration;

impl Dispatcher {
    pub(super) fn submit(&mut self, s: Submission) {
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
            tag: s.tag,
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

    pub(super) fn dispatch(&mut self, model: &Arc<str>) {
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
                let tag = p.payload.tag;
                match p.payload.reply.send(Ok(assignment)) {
                    Ok(()) => {
                        entry.backend.metrics.inflight.inc();
                        self.inflight.insert(
                            id,
                            Inflight {
                                model: model.clone(),
                                route,
                                meta: p.meta,
                                tag,
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

    pub(super) fn done(&mut self, id: RequestId, instance: InstanceId, result: AttemptResult) {
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
            access_log(&rec, &instance, &f);
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

    pub(super) fn expire_and_poll(&mut self) {
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
        if self.circuit_wake.is_none_or(|t| t > now) {
            return;
        }
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
        self.recompute_circuit_wake();
    }
}

/// One structured line per finished request (info level; `INFERPLANE_LOG=info`).
fn access_log(rec: &Inflight, instance: &InstanceId, f: &Finished) {
    let request_id = rec.tag.as_deref().unwrap_or("");
    match *f {
        Finished::Completed {
            latency,
            ttft,
            prompt_tokens,
            completion_tokens,
            cost_usd,
            slo_met,
        } => tracing::info!(
            request_id,
            id = rec.meta.id.0,
            model = %rec.model,
            route = ?rec.route,
            priority = rec.meta.priority.as_str(),
            instance = %instance,
            outcome = "completed",
            latency_ms = latency.as_secs_f64() * 1e3,
            ttft_ms = ttft.map(|t| t.as_secs_f64() * 1e3),
            prompt_tokens,
            completion_tokens,
            cost_usd,
            slo_met,
            "request finished"
        ),
        Finished::Failed { .. } | Finished::Cancelled | Finished::Rejected { .. } => {
            let outcome = match f {
                Finished::Failed { .. } => "failed",
                Finished::Cancelled => "cancelled",
                _ => "rejected",
            };
            tracing::info!(
                request_id,
                id = rec.meta.id.0,
                model = %rec.model,
                route = ?rec.route,
                priority = rec.meta.priority.as_str(),
                instance = %instance,
                outcome,
                "request finished"
            );
        }
    }
}

/// Answers a request the scheduler refused or dropped, and accounts for it.
pub(super) fn reject(pool: &mut Pool, total: &mut Stats, model: &str, r: Rejected<Waiter>) {
    pool.metrics.request(r.payload.route, Status::rejected);
    pool.metrics.rejects[r.reason.kind().index()].inc();
    let slo = (r.meta.deadline.is_some() || r.meta.ttft_target.is_some()).then_some(false);
    if slo.is_some() {
        pool.metrics.slo_violations.inc();
    }
    pool.stats.record(Finished::Rejected { slo_met: slo });
    total.record(Finished::Rejected { slo_met: slo });
    tracing::info!(
        request_id = r.payload.tag.as_deref().unwrap_or(""),
        id = r.meta.id.0,
        model,
        priority = r.meta.priority.as_str(),
        outcome = "rejected",
        reason = r.reason.as_str(),
        "request finished"
    );
    let _ = r
        .payload
        .reply
        .send(Err(ApiError::rejected(model, &r.reason)));
}

/// Publishes the pool's queue, in-flight, SLO and policy gauges, and logs policy switches.
pub(super) fn sync_pool_metrics(model: &str, pool: &mut Pool) {
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

pub(super) fn slo_missed(f: &Finished) -> bool {
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
