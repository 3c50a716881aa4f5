//! The request lifecycle in the dispatcher: submission and retries, polling a pool's
//! scheduler and carrying out its placements and rejections, an attempt's end (cost, SLO
//! and circuit accounting, all derived from the one core `Outcome` and the scheduler's
//! `Completion`), and timed wake-ups.

use super::*;

use crate::health::{Circuit, Health};
use crate::plane_error::{NotReady, PlaneError, Unready};
use crate::stats::{Finished, Stats};
use crate::telemetry::Status;
use inferplane_core::{AttemptId, Completion, InstanceId, Outcome, RejectKind, Rejection, Slo};
use std::sync::Arc;

impl Dispatcher {
    pub(super) fn submit(&mut self, s: Submission) {
        let now = self.clock.now();
        let Some(model) = self
            .pools
            .get_key_value(s.meta.model.as_str())
            .map(|(k, _)| k.clone())
        else {
            let _ = s.reply.send(Err(self.unknown_model(&s.meta.model)));
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
        match s.retry {
            Some((previous, avoid)) => {
                pool.metrics.retries.inc();
                pool.scheduler.retry(previous, s.meta, waiter, &avoid, now);
            }
            None => pool.scheduler.submit(s.meta, waiter, now),
        }
        self.poll(&model);
    }

    /// Polls `model`'s scheduler and carries out what it decided: placements go to their
    /// waiting callers (a caller gone meanwhile frees its place at once), rejections are
    /// answered and counted, and the next wake-up is kept.
    pub(super) fn poll(&mut self, model: &Arc<str>) {
        let Some(pool) = self.pools.get_mut(model) else {
            return;
        };
        let mut fx = std::mem::take(&mut pool.effects);
        loop {
            let now = self.clock.now();
            pool.scheduler.poll(now, &mut fx);
            let none_ready = fx
                .rejections
                .iter()
                .any(|r| r.reason.kind() == RejectKind::NoneReady)
                .then(|| not_ready(&pool.scheduler, &self.instances));
            for r in fx.rejections.drain(..) {
                if let Some(t) = tenant_of(&self.tenant_metrics, r.meta.tenant) {
                    t.finished(Status::rejected, 0, 0, 0.0);
                }
                reject(pool, &mut self.total, model, r, none_ready.as_ref());
            }
            let mut freed = false;
            for p in fx.placements.drain(..) {
                let Some(entry) = self.instances.get(&p.instance) else {
                    pool.scheduler.complete(p.attempt, Outcome::Cancelled, now);
                    freed = true;
                    continue;
                };
                pool.metrics.queue_wait.observe(p.queued_for.as_secs_f64());
                if let Some(note) = &p.prefix {
                    pool.metrics.prefix.placed(note);
                    entry.backend.metrics.prefix.matched(note.matched_tokens);
                }
                let assignment = Assignment {
                    backend: entry.backend.clone(),
                    queued_for: p.queued_for,
                    prefix: p.prefix,
                    guard: AttemptGuard {
                        ctl: self.ctl_tx.clone(),
                        attempt: p.attempt,
                        model: model.clone(),
                        instance: p.instance.clone(),
                        first: false,
                        done: false,
                    },
                };
                let route = p.payload.route;
                let tag = p.payload.tag;
                match p.payload.reply.send(Ok(assignment)) {
                    Ok(()) => {
                        entry.backend.metrics.inflight.inc();
                        self.inflight.insert(
                            p.attempt,
                            Inflight {
                                model: model.clone(),
                                route,
                                meta: p.meta,
                                tag,
                                ix: p.ix,
                                prefix: p.prefix,
                            },
                        );
                    }
                    Err(undelivered) => {
                        // The client left while queued and its cancel is still on the way.
                        if let Ok(mut a) = undelivered {
                            a.guard.done = true;
                        }
                        pool.scheduler.complete(p.attempt, Outcome::Cancelled, now);
                        pool.metrics.request(route, Status::cancelled);
                        if let Some(t) = tenant_of(&self.tenant_metrics, p.meta.tenant) {
                            t.finished(Status::cancelled, 0, 0, 0.0);
                        }
                        pool.stats.record(Finished::Cancelled);
                        self.total.record(Finished::Cancelled);
                        freed = true;
                    }
                }
            }
            if !freed {
                break;
            }
        }
        pool.wake_at = fx.wake_at;
        // requests wait: this replica's reservations may be what holds them (a replica
        // that was idle at its last sync reserved one place), so sync now, not at the
        // end of the period
        if pool.scheduler.queue_len() > 0
            && let Some(wake) = &self.fleet_wake
        {
            wake.notify_one();
        }
        pool.effects = fx;
        sync_pool_metrics(model, pool);
    }

    pub(super) fn done(&mut self, attempt: AttemptId, instance: InstanceId, outcome: Outcome) {
        let now = self.clock.now();
        let Some(rec) = self.inflight.remove(&attempt) else {
            return;
        };
        let Some(pool) = self.pools.get_mut(&rec.model) else {
            return;
        };
        // the registration it ran on: an instance removed and registered again under the
        // same id is another entry, never credited (or charged) with the old attempts
        let same = pool
            .scheduler
            .instance(&instance)
            .is_some_and(|i| i.ix == rec.ix);
        let completion = pool.scheduler.complete(attempt, outcome, now);
        // SLO judged once, by the scheduler; an instance removed meanwhile is judged the
        // same way here.
        let slo_met = match &completion {
            Some(c) => c.slo_met,
            None => Slo::of(&rec.meta).judge(&outcome),
        };
        let concurrency = completion
            .as_ref()
            .map_or(1, |c: &Completion| c.concurrency);
        let entry = self.instances.get_mut(&instance).filter(|_| same);
        let m = &pool.metrics;
        let mut circuit_change = None;
        if let Some(e) = entry {
            if outcome.instance_fault() {
                e.backend.metrics.failure.inc();
                circuit_change = e.circuit.failure(now);
            } else if outcome.is_success() {
                e.backend.metrics.success.inc();
                circuit_change = e.circuit.success(now);
            }
            if let Outcome::Success {
                prompt_tokens,
                cached_tokens,
                ..
            } = outcome
            {
                e.backend
                    .metrics
                    .prefix
                    .served(prompt_tokens, cached_tokens);
            }
        }
        let cost = match outcome {
            Outcome::Success {
                prompt_tokens,
                completion_tokens,
                latency,
                ..
            } => self
                .instances
                .get(&instance)
                .filter(|_| same)
                .and_then(|e| {
                    let spec = &e.backend.spec;
                    spec.price.map(|p| {
                        p.cost(
                            u64::from(prompt_tokens),
                            u64::from(completion_tokens),
                            spec.gpu_count(),
                            latency.as_secs_f64(),
                            f64::from(concurrency.max(1)),
                        )
                    })
                })
                .unwrap_or(0.0),
            _ => 0.0,
        };
        let finished = Finished::of(&outcome, slo_met, cost);
        if let Some(status) = Status::of(&outcome) {
            m.request(rec.route, status);
        }
        if let Outcome::Success {
            prompt_tokens,
            completion_tokens,
            first_token,
            latency,
            ..
        } = outcome
        {
            m.e2e.observe(latency.as_secs_f64());
            if let Some(t) = first_token {
                m.ttft.observe(t.as_secs_f64());
            }
            m.prompt_tokens.inc_by(u64::from(prompt_tokens));
            m.completion_tokens.inc_by(u64::from(completion_tokens));
            m.cost.inc_by(cost);
        }
        if let Some(f) = finished {
            if slo_met == Some(false) {
                m.slo_violations.inc();
            }
            let tenant = tenant_name(&self.config, rec.meta.tenant);
            let handles = tenant_of(&self.tenant_metrics, rec.meta.tenant);
            if let (Some(t), Some(status)) = (handles, Status::of(&outcome)) {
                let (prompt, completion) = match outcome {
                    Outcome::Success {
                        prompt_tokens,
                        completion_tokens,
                        ..
                    } => (prompt_tokens, completion_tokens),
                    _ => (0, 0),
                };
                t.finished(status, prompt, completion, cost);
            }
            if let Some(l) = &self.limiter {
                l.spend(rec.meta.tenant, cost);
            }
            access_log(&rec, tenant, &instance, &outcome, slo_met, cost);
            pool.stats.record(f);
            self.total.record(f);
            if let Some(e) = self.instances.get_mut(&instance).filter(|_| same) {
                e.stats.record(f);
            }
        }
        if let Some(e) = self.instances.get(&instance).filter(|_| same) {
            e.backend.metrics.inflight.dec();
        }
        if let Some(state) = circuit_change {
            let (trips, open_for) = self
                .instances
                .get(&instance)
                .map_or((0, std::time::Duration::ZERO), |e| {
                    (e.circuit.trips(), e.circuit.open_period())
                });
            tracing::warn!(
                instance = %instance,
                circuit = state.as_str(),
                trips,
                open_for = ?open_for,
                "circuit breaker changed after consecutive failed attempts"
            );
            self.refresh_ready(&instance);
        }
        let model = rec.model.clone();
        self.poll(&model);
    }

    /// A timed wake-up: polls every pool that asked for one by now, and half-opens
    /// breakers whose cool-down ended.
    pub(super) fn wake(&mut self) {
        let now = self.clock.now();
        let due: Vec<Arc<str>> = self
            .pools
            .iter()
            .filter(|(_, p)| p.wake_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for model in due {
            self.poll(&model);
        }
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
                self.poll(&model);
            }
        }
        self.recompute_circuit_wake();
    }
}

/// A tenant's configured id, by its core id (its index in `[[tenants]]`).
fn tenant_name(
    config: &crate::config::GatewayConfig,
    tenant: Option<inferplane_core::TenantId>,
) -> Option<&str> {
    tenant
        .and_then(|t| config.tenants.get(t.0 as usize))
        .map(|t| t.id.as_str())
}

/// A tenant's metric handles, by its core id.
fn tenant_of(
    handles: &[crate::telemetry::TenantMetrics],
    tenant: Option<inferplane_core::TenantId>,
) -> Option<&crate::telemetry::TenantMetrics> {
    tenant.and_then(|t| handles.get(t.0 as usize))
}

/// One structured line per finished request (info level; `INFERPLANE_LOG=info`).
fn access_log(
    rec: &Inflight,
    tenant: Option<&str>,
    instance: &InstanceId,
    outcome: &Outcome,
    slo_met: Option<bool>,
    cost_usd: f64,
) {
    let request_id = rec.tag.as_deref().unwrap_or("");
    match *outcome {
        Outcome::Success {
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            first_token,
            latency,
        } => tracing::info!(
            request_id,
            id = rec.meta.id.0,
            model = %rec.model,
            route = ?rec.route,
            priority = rec.meta.priority.as_str(),
            tenant,
            instance = %instance,
            outcome = outcome.label(),
            latency_ms = latency.as_secs_f64() * 1e3,
            ttft_ms = first_token.map(|t| t.as_secs_f64() * 1e3),
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            prefix_matched_tokens = rec.prefix.map(|n| n.matched_tokens),
            prefix_reason = rec.prefix.map(|n| n.reason.as_str()),
            cost_usd,
            slo_met,
            "request finished"
        ),
        _ => tracing::info!(
            request_id,
            id = rec.meta.id.0,
            model = %rec.model,
            route = ?rec.route,
            priority = rec.meta.priority.as_str(),
            tenant,
            instance = %instance,
            outcome = outcome.label(),
            slo_met,
            "request finished"
        ),
    }
}

/// Why each instance of a pool takes no work, for a `no_ready_instance` answer (at most
/// [`NotReady::LISTED`] named).
pub(super) fn not_ready(
    scheduler: &inferplane_core::Scheduler<Waiter>,
    instances: &std::collections::HashMap<InstanceId, super::InstanceEntry>,
) -> NotReady {
    let mut not_ready = NotReady::default();
    for i in scheduler.instances() {
        let why = if i.draining {
            Unready::Draining
        } else if let Some(e) = instances.get(&i.spec.id) {
            match (e.health.state(), e.circuit.state()) {
                (Health::Starting, _) => Unready::Starting,
                (Health::Unhealthy, _) => Unready::Unhealthy,
                (_, Circuit::Open { .. }) => Unready::CircuitOpen,
                (_, Circuit::HalfOpen) => Unready::CircuitHalfOpen,
                _ => Unready::Other,
            }
        } else {
            Unready::Other
        };
        not_ready.push(i.spec.id.clone(), why);
    }
    not_ready
}

/// Answers a request the scheduler refused or dropped, and accounts for it; a
/// `no_ready_instance` rejection carries `not_ready` (why no instance is ready).
pub(super) fn reject(
    pool: &mut Pool,
    total: &mut Stats,
    model: &str,
    r: Rejection<Waiter>,
    not_ready: Option<&NotReady>,
) {
    pool.metrics.request(r.payload.route, Status::rejected);
    pool.metrics.rejects[r.reason.kind().index()].inc();
    let slo = Slo::of(&r.meta).is_some().then_some(false);
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
    let not_ready = not_ready
        .filter(|_| r.reason.kind() == RejectKind::NoneReady)
        .cloned();
    let _ = r.payload.reply.send(Err(PlaneError::Rejected {
        model: model.to_string(),
        reason: r.reason,
        not_ready,
    }));
}

/// Publishes the pool's queue, in-flight, SLO and policy gauges, and logs policy switches
/// with why they were made.
pub(super) fn sync_pool_metrics(model: &str, pool: &mut Pool) {
    let s = &pool.scheduler;
    let m = &pool.metrics;
    for (g, n) in m.queue_depth.iter().zip(s.queue_len_by_priority()) {
        g.set(n as i64);
    }
    m.inflight.set(s.inflight_len() as i64);
    if let Some(a) = s.stats().slo.attainment() {
        m.slo_attainment.set(Some(a));
    }
    let active = s.active_policy();
    for (g, name) in m.active_policy.iter().zip(crate::telemetry::policies()) {
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
            tracing::info!(
                model,
                from = sw.from,
                to = sw.to,
                reason = sw.reason.as_str(),
                queued = sw.signals.queued,
                wait_secs = sw.signals.wait_secs,
                deadline_share = sw.signals.deadline_share,
                class_share = sw.signals.class_share,
                slo_attainment = ?sw.signals.slo_attainment,
                "adaptive policy switched"
            );
        }
        m.policy_switches.inc_by(switches - pool.switches_seen);
        pool.switches_seen = switches;
    }
}
