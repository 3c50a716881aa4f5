//! The end of a request's life in the `Scheduler`: `complete` (which also teaches the
//! instance's rates, latency EWMA and the SLO accounting), `cancel`, `expire`,
//! `take_rejected`, `next_expiry`, and the lazy-deletion compaction.

use super::machine::{HINTS, Scheduler};
use super::{InstanceIx, Outcome, RejectReason, Rejected};
use crate::request::RequestId;
use crate::schedule::{Live, QueueKey, SchedulingPolicy};
use crate::time::Time;
use std::cmp::Reverse;

impl<T> Scheduler<T> {
    /// Gives back the slot of a placed request and learns from it: the instance's rates
    /// and latency EWMA (on success), SLO attainment and outcome counters. Unknown ids are
    /// ignored (returns false).
    pub fn complete(&mut self, id: RequestId, outcome: Outcome, now: Time) -> bool {
        let now = self.advance(now);
        let Some(f) = self.inflight.remove(&id) else {
            return false;
        };
        let mut slo_met = None;
        let has_slo = f.deadline.is_some() || f.ttft_deadline.is_some();
        match outcome {
            Outcome::Success {
                prompt_tokens,
                completion_tokens,
                ttft,
            } => {
                self.stats.succeeded += 1;
                let total = now.saturating_since(f.placed_at).as_secs_f64();
                let queued = f.placed_at.saturating_since(f.arrival);
                if let Some(inst) = self.instances.get_mut(f.ix).and_then(Option::as_mut) {
                    inst.latency.observe(total, now);
                    if let Some(ttft) = ttft {
                        let ttft_p = ttft.saturating_sub(queued).as_secs_f64();
                        inst.rates
                            .observe(prompt_tokens, completion_tokens, ttft_p, total);
                    }
                }
                let first = ttft.map(|t| f.arrival + t);
                let in_time = f.deadline.is_none_or(|d| now <= d);
                let ttft_ok = match (f.ttft_deadline, first) {
                    (Some(d), Some(at)) => at <= d,
                    _ => true,
                };
                slo_met = Some(in_time && ttft_ok);
            }
            Outcome::Failure => {
                self.stats.failed += 1;
                slo_met = Some(false);
            }
            Outcome::Cancelled => self.stats.cancelled += 1,
        }
        if let (true, Some(met)) = (has_slo, slo_met) {
            self.stats.slo.record(met);
        }
        self.release(f.ix);
        true
    }

    pub(super) fn release(&mut self, ix: InstanceIx) {
        let Some(inst) = self.instances.get_mut(ix).and_then(Option::as_mut) else {
            return;
        };
        inst.inflight = inst.inflight.saturating_sub(1);
        if inst.routable() {
            self.totals.inflight = self.totals.inflight.saturating_sub(1);
            self.totals.free_slots += 1;
            for (h, kind) in HINTS.iter().enumerate() {
                if inst.spec.layout.matches_hint(*kind) {
                    self.totals.hint_free[h] += 1;
                }
            }
        }
    }

    /// Removes a queued request (or one rejected but not yet handed out) and returns its
    /// payload, in O(1) for queued ones; a placed one is completed as cancelled (returns
    /// `None`).
    pub fn cancel(&mut self, id: RequestId, now: Time) -> Option<T> {
        if let Some(&slot) = self.queued_ids.get(&id) {
            let q = self.take(slot)?;
            self.stats.cancelled += 1;
            self.maybe_compact();
            return Some(q.payload);
        }
        if let Some(pos) = self.pending.iter().position(|r| r.meta.id == id) {
            return Some(self.pending.swap_remove(pos).payload);
        }
        self.complete(id, Outcome::Cancelled, now);
        None
    }

    /// Hands out requests rejected since the last call (shed, or infeasible at dispatch),
    /// then rejects queued requests that waited past the queue timeout or their deadline.
    pub fn expire(&mut self, now: Time, out: &mut Vec<Rejected<T>>) {
        let now = self.advance(now);
        out.append(&mut self.pending);
        while let Some(&Reverse((at, seq, slot))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            if !Live(&self.seqs).contains(QueueKey { slot, seq }) {
                continue;
            }
            let Some(q) = self.take(slot) else { continue };
            let waited = now.saturating_since(q.enqueued);
            let reason = match self.config.queue_timeout {
                Some(timeout) if waited >= timeout => {
                    RejectReason::QueueTimeout { waited, timeout }
                }
                _ => RejectReason::DeadlineMissed { waited },
            };
            let r = self.reject(q.meta, q.payload, reason);
            out.push(r);
        }
        self.maybe_compact();
    }

    /// Hands out requests rejected since the last call without expiring anything.
    pub fn take_rejected(&mut self, out: &mut Vec<Rejected<T>>) {
        out.append(&mut self.pending);
    }

    /// The earliest time at which `expire` could reject something: the latest `now` seen
    /// when rejections are pending. May be early (a request already gone), never late.
    pub fn next_expiry(&self) -> Option<Time> {
        if !self.pending.is_empty() {
            return Some(self.clock);
        }
        self.expiry.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Drops stale keys once they outnumber live ones (amortised O(1)).
    pub(super) fn maybe_compact(&mut self) {
        let live = self.queued_ids.len().max(self.live_slots());
        let limit = 2 * live + 1024;
        let seqs = Live(&self.seqs);
        if self.policy.stored() > limit {
            self.policy.compact(seqs);
        }
        if self.retry.len() > limit {
            self.retry.retain(|k| seqs.contains(*k));
        }
        if self.expiry.len() > limit {
            self.expiry.retain(|Reverse((_, seq, slot))| {
                seqs.contains(QueueKey {
                    slot: *slot,
                    seq: *seq,
                })
            });
        }
    }
}
