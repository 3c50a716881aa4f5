//! Class-aware overload control: predicted queue waits, wait budgets, and shedding.
//!
//! # Predicted wait
//!
//! A new request goes at once when the queue is empty and an instance has room (so at
//! low load nothing here costs anything). Otherwise it waits for the requests that the
//! order in force serves before it, at the pool's drain rate: the rate at which attempts
//! finish while requests are queued ([`DrainMeter`], an exponentially smoothed rate over
//! saturated time only, whose prior is the instances' predicted throughput). Under the
//! class orders "before it" is estimated per class from the bands: every request of a
//! higher class, and the requests of its own and lower classes whose virtual start is not
//! later than its own.
//!
//! # Budgets and shedding (class-aware policies and `adaptive` in every mode; `fifo`
//! sheds nothing)
//!
//! A request may wait at most its *budget*: its class's wait target
//! ([`super::OverloadConfig::wait`]), or less when its own SLO leaves less (TTFT target
//! less the fastest instance's predicted time to first token, end-to-end deadline less
//! that and one token: output lengths are only predicted, so the best case counts).
//!
//! * At admission, a request predicted to wait longer than its budget is shed at once
//!   (429 with `Retry-After`), so under overload a client learns in microseconds, not
//!   after a timeout.
//! * While queued, every poll looks at the newest request of each class, lowest class
//!   first: while it is predicted to wait longer than its budget has left, it is shed.
//!   Higher classes arriving push lower ones back, so the lowest class and the newest go
//!   first; `critical` is shed only when critical work alone exceeds what the pool can
//!   serve in time.
//! * A request whose budget runs out while queued is rejected (`queue_timeout` for a class
//!   target, `deadline_missed` for its own SLO).
//! * Nothing is shed by prediction before the first completion has measured the
//!   instances' speed: until then the prediction rests on priors from the layout or the
//!   planner, and a fresh gateway must not answer 429 on a guess. Budgets still expire.
//!
//! * With tenants sharing a class, "before it" inside the class is the fair share's
//!   (`schedule::fair`): its tenant's own queued requests and the others' weighted turns;
//!   and the request shed is the newest of the tenant most queued for its weight.
//!
//! So every admitted request is served within its budget or rejected as soon as the
//! prediction says it will not be; no class waits without bound.

use super::machine::{Budget, Scheduler};
use crate::load::RateMeter;
use crate::outcome::has_slo;
use crate::predict::secs;
use crate::reject::RejectReason;
use crate::request::{Priority, RequestMeta};
use crate::schedule::order::OrderKind;
use crate::schedule::{Live, SchedulingPolicy};
use crate::time::Time;
use std::time::Duration;

/// Smoothing time of the drain rate.
pub const DRAIN_TAU: Duration = Duration::from_secs(10);

/// The pool's drain rate: attempts finished per second while requests were queued.
#[derive(Debug, Clone, Default)]
pub(super) struct DrainMeter {
    meter: Option<RateMeter>,
    last: Option<Time>,
    finished: u32,
    saturated: bool,
    /// EWMA of submitted prompt lengths, for the prior.
    pub(super) mean_prompt: f64,
    /// EWMA of submitted `max_tokens`, for the prior until output lengths are learned.
    pub(super) mean_max_tokens: f64,
}

impl DrainMeter {
    pub(super) fn on_finish(&mut self) {
        self.finished = self.finished.saturating_add(1);
    }

    pub(super) fn on_submit(&mut self, prompt_tokens: u32, max_tokens: u32) {
        fn ewma(m: &mut f64, x: f64) {
            if *m == 0.0 {
                *m = x;
            } else {
                *m += 0.01 * (x - *m);
            }
        }
        ewma(&mut self.mean_prompt, f64::from(prompt_tokens));
        ewma(&mut self.mean_max_tokens, f64::from(max_tokens));
    }

    /// Advances to `now`; `saturated` says whether requests are queued from now on.
    pub(super) fn tick(&mut self, now: Time, saturated: bool, prior: impl FnOnce() -> f64) {
        if let (Some(last), Some(m)) = (self.last, self.meter.as_mut())
            && self.saturated
        {
            m.observe(now.saturating_since(last), self.finished);
        }
        self.finished = 0;
        self.last = Some(now);
        self.saturated = saturated;
        if saturated {
            let warm = self
                .meter
                .is_some_and(|m| m.observed_secs() >= DRAIN_TAU.as_secs_f64());
            if !warm {
                let p = prior();
                self.meter
                    .get_or_insert_with(|| RateMeter::new(p, DRAIN_TAU))
                    .set_prior(p);
            }
        }
    }

    pub(super) fn measured(&self) -> Option<f64> {
        self.meter.map(|m| m.rate())
    }
}

impl<T> Scheduler<T> {
    /// Predicted throughput of the routable instances, requests per second, for requests
    /// of the pool's mean size: each runs its last reported batch (else its limit) at its
    /// predicted service time.
    pub(super) fn throughput_prior(&self) -> f64 {
        let prompt = self.drain.mean_prompt.max(1.0).round() as u32;
        let output = self
            .outputs
            .mean()
            .unwrap_or(self.drain.mean_max_tokens)
            .round()
            .max(1.0) as u32;
        self.instances
            .iter()
            .flatten()
            .filter(|i| i.routable())
            .map(|i| {
                let batch = match i.load.running {
                    Some(r) if r >= 1.0 => r.min(f64::from(i.limit())),
                    _ => f64::from(i.limit()),
                };
                batch / i.rates.service_secs(prompt, output).max(1e-6)
            })
            .sum()
    }

    /// The drain rate in use: measured while saturated, else the prior.
    pub(super) fn drain_rate(&self) -> f64 {
        self.drain
            .measured()
            .unwrap_or_else(|| self.throughput_prior())
    }

    /// Requests the class order serves before one of `class` with virtual start `start`;
    /// `fair`: how many of its own class the fair share serves before it, when tenants
    /// share the class (the fewer of that and the order's count).
    fn ahead_of(&self, class: Priority, start: Time, fair: Option<usize>) -> usize {
        let mut ahead = self.retry.len();
        for c in Priority::ALL {
            let queued = self.queued_by_class[c.index()];
            if c > class {
                ahead += queued;
            } else {
                let offset = u64::try_from(self.class_offset(c).as_nanos()).unwrap_or(u64::MAX);
                if let Some(by) = start.as_nanos().checked_sub(offset) {
                    let mut n = self.queues.entered_by(c, Time::from_nanos(by)).min(queued);
                    if c == class
                        && let Some(f) = fair
                    {
                        n = n.min(f);
                    }
                    ahead += n;
                }
            }
        }
        ahead
    }

    /// Predicted seconds a new request would wait in the queue (see the module docs).
    pub(super) fn predicted_wait(&self, meta: &RequestMeta, now: Time) -> f64 {
        let protected = meta.priority >= self.config.saturation.protect;
        if self.totals.with_room > 0 || (protected && self.totals.protected_room > 0) {
            // an instance has room for it: anything queued is waiting for other instances
            return 0.0;
        }
        if self.totals.routable == 0 {
            return f64::INFINITY;
        }
        let ahead = match self.policy.order() {
            OrderKind::Arrival => self.queue_len(),
            _ => {
                // a tenant's request waits for its own and the others' turns
                let fair = self.queues.fair_view();
                let own = fair.queued(meta.priority, meta.tenant);
                let fair = fair.ahead(meta.priority, meta.tenant, own);
                self.ahead_of(meta.priority, now + self.class_offset(meta.priority), fair)
            }
        };
        let rate = self.drain_rate();
        if rate <= 0.0 {
            return f64::INFINITY;
        }
        (ahead as f64 + 1.0) / rate
    }

    /// The request's wait budget in seconds and why (see the module docs).
    pub(super) fn budget(&self, meta: &RequestMeta, now: Time, wait: f64) -> Option<(f64, Budget)> {
        let class = self.config.overload.wait.get(meta.priority);
        let mut budget = (class.as_secs_f64(), Budget::Class(class));
        if wait <= 0.0 && self.queue_len() == 0 {
            // goes at once: the class target bounds it should it be held after all
            return Some(budget);
        }
        if has_slo(meta) {
            // the best case (the output length is only predicted): a one-token answer
            let mut best_ttft = f64::INFINITY;
            let mut best_done = f64::INFINITY;
            for inst in self.instances.iter().flatten().filter(|i| i.routable()) {
                let ttft = inst.ttft_secs(meta.prompt_tokens, now);
                best_ttft = best_ttft.min(ttft);
                best_done = best_done.min(ttft + inst.rates.decode_secs_per_token);
            }
            let left = |at: Option<Time>| {
                at.map(|t| {
                    if t >= now {
                        t.saturating_since(now).as_secs_f64()
                    } else {
                        -now.saturating_since(t).as_secs_f64()
                    }
                })
            };
            for slack in [
                left(meta.ttft_deadline_at()).map(|l| l - best_ttft),
                left(meta.deadline_at()).map(|l| l - best_done),
            ]
            .into_iter()
            .flatten()
            {
                if slack < budget.0 {
                    budget = (slack.max(0.0), Budget::Slo);
                }
            }
        }
        Some(budget)
    }

    /// Sheds queued requests predicted to outwait their budget, lowest class and newest
    /// first (see the module docs).
    pub(super) fn shed_overdue(&mut self, now: Time) {
        if !self.class_aware()
            || !self.config.overload.shed
            || !self.calibrated
            || self.totals.with_room > 0
        {
            return;
        }
        let rate = self.drain_rate();
        if rate <= 0.0 || !rate.is_finite() {
            return;
        }
        for class in [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ] {
            loop {
                // with tenants sharing the class, the newest of the one served last (the
                // most queued for its weight) goes first, not a lighter tenant's newest
                let (key, fair) = match self
                    .queues
                    .fair()
                    .newest_of_most_queued(class, Live(&self.seqs))
                {
                    Some((key, tenant, own)) => {
                        (key, self.queues.fair_view().ahead(class, tenant, own))
                    }
                    None => match self.queues.newest(class, Live(&self.seqs)) {
                        Some((key, _)) => (key, None),
                        None => break,
                    },
                };
                let Some(q) = self.queued_ref(key) else { break };
                let Some((at, _)) = q.budget_at else { break };
                let remaining = if at > now {
                    at.saturating_since(now).as_secs_f64()
                } else {
                    0.0
                };
                // (counted with itself, as the order's count is)
                let ahead = self
                    .ahead_of(class, q.virtual_start, fair.map(|n| n + 1))
                    .saturating_sub(1);
                let predicted = ahead as f64 / rate;
                if predicted <= remaining {
                    break;
                }
                let Some(q) = self.take(key.slot) else { break };
                let reason = RejectReason::Shed {
                    class,
                    predicted_wait: secs(predicted),
                    budget: secs(remaining),
                };
                self.reject(q.meta, q.payload, reason);
            }
        }
    }
}
