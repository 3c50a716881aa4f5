//! `slo_aware`: earliest deadline first, placed only where the SLO is predicted to hold.
//!
//! Order: by absolute deadline (the end-to-end deadline, else the TTFT deadline, else
//! `enqueued + default_deadline`), ties by admission order; a binary heap, O(log n).
//!
//! Prediction (see `predict`): on instance `i`, a request finishes its first token after
//! `wait + overhead_i + prompt / prefill_i` and completes `max_tokens * decode_i` later.
//! Its slack on `i` is how much waiting it can afford and still meet both targets.
//!
//! * Admission: `wait` is 0 on an instance with room when fewer requests are queued than
//!   there are free slots; otherwise the pool's estimated wait, `(queued + 1 - free)`
//!   divided by the pool's drain rate `sum(max_inflight_i / service_i)`. A request that
//!   cannot meet its SLO on any instance is rejected with `slo_infeasible` (with
//!   `best_effort`, admitted and counted instead).
//! * Dispatch: the head may go to the instances with room on which it meets its SLO now.
//!   If none has room but a busy one would do, it waits at the head; if none would do even
//!   idle, it is rejected (or, with `best_effort`, placed anywhere and counted).

use super::{Admission, Eligibility, Entry, Live, QueueKey, SchedulingPolicy};
use crate::predict::{Rates, secs};
use crate::request::RequestMeta;
use crate::route::{CandidateSet, PoolView};
use crate::scheduler::{InstanceState, RejectReason};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// The config tag.
pub const NAME: &str = "slo_aware";

/// Settings of `slo_aware`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloAwareConfig {
    /// Serve a request predicted to miss its SLO anyway (and count it) instead of
    /// rejecting it.
    pub best_effort: bool,
    /// Ordering deadline of a request without an SLO, after it enters the queue.
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
    /// Safety factor on predicted service times (1.0 = trust the prediction).
    pub margin: f64,
}

impl Default for SloAwareConfig {
    fn default() -> Self {
        SloAwareConfig {
            best_effort: false,
            default_deadline: Duration::from_secs(60),
            margin: 1.0,
        }
    }
}

/// Earliest deadline first with SLO-feasible placement.
#[derive(Debug)]
pub struct SloAware {
    config: SloAwareConfig,
    heap: BinaryHeap<Reverse<(Time, u64, u32)>>,
}

/// Whether the request carries any SLO.
pub fn has_slo(req: &RequestMeta) -> bool {
    req.deadline.is_some() || req.ttft_target.is_some()
}

/// Seconds of waiting `req` can afford on `inst` from `now` and still meet its targets
/// (infinite without targets, negative when it misses even without waiting).
pub fn slack_secs(req: &RequestMeta, inst: &InstanceState, now: Time, margin: f64) -> f64 {
    Targets::new(req, now).slack(&inst.rates, margin)
}

/// A request's SLO targets as seconds left from `now`, computed once per decision so the
/// per-instance slack is a few multiplications.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    ttft_left: f64,
    done_left: f64,
    prompt: u32,
    output: u32,
}

impl Targets {
    /// The targets of `req` seen at `now`.
    pub fn new(req: &RequestMeta, now: Time) -> Self {
        let left = |at: Option<Time>| {
            at.map_or(f64::INFINITY, |t| {
                if t >= now {
                    t.saturating_since(now).as_secs_f64()
                } else {
                    -now.saturating_since(t).as_secs_f64()
                }
            })
        };
        Targets {
            ttft_left: left(req.ttft_deadline_at()),
            done_left: left(req.deadline_at()),
            prompt: req.prompt_tokens,
            output: req.max_tokens,
        }
    }

    /// Seconds of waiting affordable on an instance with `rates`.
    pub fn slack(&self, rates: &Rates, margin: f64) -> f64 {
        let ttft = rates.ttft_secs(self.prompt);
        let done = ttft + f64::from(self.output) * rates.decode_secs_per_token;
        (self.ttft_left - margin * ttft).min(self.done_left - margin * done)
    }
}

/// The SLO admission check shared by `slo_aware` and `cost_optimized`: `Ok` when some
/// routable instance meets the SLO given the queue ahead, else the reason.
pub fn feasible_on_admission(
    req: &RequestMeta,
    view: &PoolView<'_>,
    margin: f64,
) -> Result<(), RejectReason> {
    if !has_slo(req) {
        return Ok(());
    }
    let room_now = (view.queued as u64) < view.free_slots;
    let targets = Targets::new(req, view.now);
    let mut best_room = f64::NEG_INFINITY;
    let mut best_any = f64::NEG_INFINITY;
    let mut drain_rate = 0.0;
    for (_, inst) in view.routable() {
        let slack = targets.slack(&inst.rates, margin);
        let service = inst.rates.service_secs(req.prompt_tokens, req.max_tokens);
        drain_rate += f64::from(inst.spec.max_inflight) / service.max(1e-9);
        best_any = best_any.max(slack);
        if inst.has_room() {
            best_room = best_room.max(slack);
        }
    }
    if room_now && best_room >= 0.0 {
        return Ok(());
    }
    let backlog = (view.queued as u64 + 1).saturating_sub(view.free_slots) as f64;
    let wait = if drain_rate > 0.0 {
        backlog / drain_rate
    } else {
        f64::INFINITY
    };
    let short = if room_now {
        (-best_room).min(wait - best_any)
    } else {
        wait - best_any
    };
    if short <= 0.0 {
        Ok(())
    } else {
        Err(RejectReason::SloInfeasible {
            short_by: secs(short),
        })
    }
}

impl SloAware {
    /// An empty queue.
    pub fn new(config: SloAwareConfig) -> Self {
        SloAware {
            config,
            heap: BinaryHeap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SloAwareConfig {
        &self.config
    }

    /// The ordering deadline of a request entering the queue at `enqueued`.
    pub fn order_key(&self, req: &RequestMeta, enqueued: Time) -> Time {
        req.deadline_at()
            .or(req.ttft_deadline_at())
            .unwrap_or(enqueued + self.config.default_deadline)
    }

    /// Fills `out` with the instances with room meeting the SLO now; decides otherwise.
    pub fn feasible_now(
        &self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        out: &mut CandidateSet,
    ) -> Eligibility {
        out.reset(view.instances.len());
        let targets = Targets::new(req, view.now);
        let margin = self.config.margin;
        // instances with room first: usually enough, and few when the pool is busy
        for (ix, inst) in view.routable().filter(|(_, i)| i.has_room()) {
            if targets.slack(&inst.rates, margin) >= 0.0 {
                out.insert(ix);
            }
        }
        let mut busy_ok = false;
        let mut best = f64::NEG_INFINITY;
        if out.is_empty() {
            for (_, inst) in view.routable() {
                let slack = targets.slack(&inst.rates, margin);
                best = best.max(slack);
                busy_ok |= slack >= 0.0 && !inst.has_room();
            }
        }
        if !out.is_empty() {
            Eligibility::Only
        } else if busy_ok {
            Eligibility::Wait
        } else if self.config.best_effort {
            Eligibility::AllBestEffort
        } else {
            Eligibility::Reject(RejectReason::SloInfeasible {
                short_by: secs(-best),
            })
        }
    }
}

impl SchedulingPolicy for SloAware {
    fn name(&self) -> &'static str {
        NAME
    }
    fn push(&mut self, entry: Entry<'_>) {
        let key = self.order_key(entry.meta, entry.enqueued);
        self.heap
            .push(Reverse((key, entry.key.seq, entry.key.slot)));
    }
    fn peek(&mut self, live: Live<'_>) -> Option<QueueKey> {
        while let Some(&Reverse((_, seq, slot))) = self.heap.peek() {
            let k = QueueKey { slot, seq };
            if live.contains(k) {
                return Some(k);
            }
            self.heap.pop();
        }
        None
    }
    fn pop_head(&mut self) {
        self.heap.pop();
    }
    fn stored(&self) -> usize {
        self.heap.len()
    }
    fn compact(&mut self, live: Live<'_>) {
        self.heap.retain(|Reverse((_, seq, slot))| {
            live.contains(QueueKey {
                slot: *slot,
                seq: *seq,
            })
        });
    }
    fn clear(&mut self) {
        self.heap.clear();
    }
    fn admit(&mut self, req: &RequestMeta, view: &PoolView<'_>) -> Admission {
        match feasible_on_admission(req, view, self.config.margin) {
            Ok(()) => Admission::Admit,
            Err(_) if self.config.best_effort => Admission::AdmitBestEffort,
            Err(reason) => Admission::Reject(reason),
        }
    }
    fn candidates(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        out: &mut CandidateSet,
    ) -> Eligibility {
        if !has_slo(req) {
            return Eligibility::All;
        }
        self.feasible_now(req, view, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestId;
    use crate::route::testkit;

    fn rates(prefill: f64, decode: f64) -> Rates {
        Rates {
            prefill_tokens_per_sec: prefill,
            decode_secs_per_token: decode,
            overhead_secs: 0.0,
            samples: 0,
        }
    }

    fn req(id: u64, deadline_ms: Option<u64>) -> RequestMeta {
        let mut m = RequestMeta::new(RequestId(id), "m", 1000, 100, Time::ZERO);
        m.deadline = deadline_ms.map(Duration::from_millis);
        m
    }

    #[test]
    fn slo_aware_serves_earliest_deadline_first_and_slo_less_requests_by_default_deadline() {
        let mut p = SloAware::new(SloAwareConfig::default());
        let metas = [req(1, Some(5000)), req(2, None), req(3, Some(1000))];
        for (i, m) in metas.iter().enumerate() {
            p.push(Entry {
                key: QueueKey {
                    slot: i as u32,
                    seq: i as u64 + 1,
                },
                meta: m,
                enqueued: Time::ZERO,
            });
        }
        let mut seqs = vec![1, 2, 3];
        let mut order = Vec::new();
        while let Some(k) = p.peek(Live(&seqs)) {
            order.push(k.seq);
            p.pop_head();
            seqs[k.slot as usize] = 0;
        }
        assert_eq!(order, [3, 1, 2]);
    }

    #[test]
    fn slo_aware_places_only_on_instances_predicted_to_meet_the_deadline() {
        let mut st = testkit::states(&[(4, 0), (4, 0), (4, 4)]);
        // i0 slow: 1000/1000 + 100*0.02 = 3 s; i1 fast: 0.5 + 1 = 1.5 s; i2 fast but full
        st[0].as_mut().unwrap().rates = rates(1000.0, 0.02);
        st[1].as_mut().unwrap().rates = rates(2000.0, 0.01);
        st[2].as_mut().unwrap().rates = rates(2000.0, 0.01);
        let view = testkit::view(&st);
        let mut p = SloAware::new(SloAwareConfig::default());
        let mut out = CandidateSet::default();
        assert_eq!(
            p.candidates(&req(1, Some(2000)), &view, &mut out),
            Eligibility::Only
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [1]);
        assert_eq!(
            p.candidates(&req(2, Some(4000)), &view, &mut out),
            Eligibility::Only
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(
            p.candidates(&req(3, None), &view, &mut out),
            Eligibility::All
        );
        match p.candidates(&req(4, Some(1000)), &view, &mut out) {
            Eligibility::Reject(RejectReason::SloInfeasible { short_by }) => {
                assert_eq!(short_by, Duration::from_millis(500));
            }
            other => panic!("expected slo_infeasible, got {other:?}"),
        }
        let mut be = SloAware::new(SloAwareConfig {
            best_effort: true,
            ..SloAwareConfig::default()
        });
        assert_eq!(
            be.candidates(&req(4, Some(1000)), &view, &mut out),
            Eligibility::AllBestEffort
        );
    }

    #[test]
    fn slo_aware_waits_for_a_busy_instance_that_alone_can_meet_the_deadline() {
        let mut st = testkit::states(&[(4, 0), (4, 4)]);
        st[0].as_mut().unwrap().rates = rates(1000.0, 0.02); // 3 s
        st[1].as_mut().unwrap().rates = rates(2000.0, 0.01); // 1.5 s, full
        let view = testkit::view(&st);
        let mut p = SloAware::new(SloAwareConfig::default());
        let mut out = CandidateSet::default();
        assert_eq!(
            p.candidates(&req(1, Some(2000)), &view, &mut out),
            Eligibility::Wait
        );
    }

    #[test]
    fn slo_aware_rejects_on_admission_when_the_queue_ahead_makes_the_deadline_unreachable() {
        let mut st = testkit::states(&[(1, 1)]);
        st[0].as_mut().unwrap().rates = rates(1000.0, 0.01); // 2 s per request
        let mut view = testkit::view(&st);
        view.queued = 2; // 3 to drain before it at 0.5 req/s: 6 s wait + 2 s service
        let mut p = SloAware::new(SloAwareConfig::default());
        assert_eq!(p.admit(&req(1, Some(9000)), &view), Admission::Admit);
        assert_eq!(
            p.admit(&req(2, Some(7000)), &view),
            Admission::Reject(RejectReason::SloInfeasible {
                short_by: Duration::from_secs(1)
            })
        );
        assert_eq!(p.admit(&req(3, None), &view), Admission::Admit);
    }
}
