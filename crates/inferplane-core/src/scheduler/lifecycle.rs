//! The end of an attempt and of a queued request: `first_token`, `complete` (which also
//! teaches the instance's rates, the prefill backlog, the output-length predictor, the
//! SLO accounting and the drain rate), `cancel`, expiry, and lazy-deletion compaction.

use super::machine::{Budget, Queued, Scheduler};
use super::{Completion, RejectReason};
use crate::outcome::{AttemptId, Outcome};
use crate::request::RequestId;
use crate::schedule::{Live, QueueKey};
use crate::time::Time;
use std::cmp::Reverse;

/// What a queued request's wait is bounded by, and the reason to give when it runs out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Limit {
    Timeout,
    Deadline,
    Budget(Budget),
}

impl<T> Scheduler<T> {
    /// Records that the attempt's first token reached the caller at `now` (streamed
    /// answers): its prompt leaves the instance's prefill backlog, and the time it took
    /// teaches the instance's prefill rate. Unknown attempts are ignored.
    pub fn first_token(&mut self, attempt: AttemptId, now: Time) {
        let now = self.advance(now);
        let Some(f) = self.inflight.get_mut(&attempt) else {
            return;
        };
        if f.first_seen {
            return;
        }
        f.first_seen = true;
        let (ix, prompt, ahead, placed) = (f.ix, f.prompt_tokens, f.pending_ahead, f.placed_at);
        if let Some(inst) = self
            .instances
            .get_mut(ix.slot())
            .and_then(Option::as_mut)
            .filter(|i| i.ix == ix)
        {
            inst.signals.advance_batch(now, inst.inflight);
            f.batch_mark = (now, inst.signals.batch_secs);
            if let Some(d) = inst.deadlines.iter_mut().find(|d| d.attempt == attempt) {
                d.first = Some(now);
            }
            inst.signals.prefill_pending = inst
                .signals
                .prefill_pending
                .saturating_sub(u64::from(prompt));
            let tokens = ahead.saturating_add(u64::from(prompt));
            let secs = now.saturating_since(placed).as_secs_f64();
            inst.rates.observe_prefill(tokens, secs);
        }
    }

    /// Gives back the slot of a placed attempt and learns from how it ended: the
    /// instance's rates and latency EWMA, the prefill backlog and the output-length
    /// predictor (on success), the SLO accounting (once, for the attempt that ends the
    /// request; a retried attempt is not judged) and the counters. Returns what it
    /// concluded; `None` for an unknown attempt (already completed, or its instance was
    /// removed).
    pub fn complete(
        &mut self,
        attempt: AttemptId,
        outcome: Outcome,
        now: Time,
    ) -> Option<Completion> {
        let now = self.advance(now);
        let f = self.inflight.remove(&attempt)?;
        let (tenant, charged) = f.fair_charge;
        self.headroom.ended(tenant);
        let used = match outcome {
            Outcome::Success {
                prompt_tokens,
                completion_tokens,
                ..
            } => prompt_tokens.saturating_add(completion_tokens),
            // nothing served: a retry is charged again where it runs
            Outcome::Failed { .. } | Outcome::ClientError => 0,
            // served in part, how much is unknown: the charge stands
            Outcome::StreamBroken | Outcome::Cancelled => charged,
        };
        self.queues
            .fair()
            .charge(f.class, tenant, f64::from(used) - f64::from(charged));
        self.stats.record_outcome(&outcome);
        let slo_met = f.slo.judge(&outcome);
        if let Some(met) = slo_met {
            self.stats.slo.record(met);
        }
        self.drain.on_finish();
        let inst = self
            .instances
            .get_mut(f.ix.slot())
            .and_then(Option::as_mut)
            .filter(|i| i.ix == f.ix)?;
        if let Outcome::Success {
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            first_token,
            latency,
        } = outcome
        {
            inst.latency
                .observe(now.saturating_since(f.placed_at).as_secs_f64(), now);
            let first_at = first_token.map(|t| f.arrival + t);
            if let Some(at) = first_at
                && !f.first_seen
            {
                let tokens = f.pending_ahead.saturating_add(u64::from(f.prompt_tokens));
                inst.rates
                    .observe_prefill(tokens, at.saturating_since(f.placed_at).as_secs_f64());
            }
            let _ = cached_tokens;
            // a whole (not streamed) answer tells no first token: its decode is the time
            // from its placement to the last byte (the latency counts from arrival, so less
            // what it waited before this attempt) less the predicted time to first token,
            // when that leaves any
            let before = f.placed_at.saturating_since(f.arrival);
            let decode = match first_token {
                Some(t) => Some(latency.saturating_sub(t).as_secs_f64()),
                None => Some(
                    latency.saturating_sub(before).as_secs_f64()
                        - inst.rates.ttft_secs(prompt_tokens),
                )
                .filter(|d| *d > 0.0),
            };
            inst.rates.observe_decode(completion_tokens, decode);
            self.calibrated = true;
            // the mean batch it decoded in, from the instance's batch integral
            inst.signals.advance_batch(now, inst.inflight);
            let (since, mark) = f.batch_mark;
            let span = now.saturating_since(since).as_secs_f64();
            if let Some(d) = decode
                && span > 0.0
                && completion_tokens > 1
            {
                let batch = (inst.signals.batch_secs - mark) / span;
                inst.rates
                    .decode
                    .observe(batch, d / f64::from(completion_tokens - 1));
            }
            self.outputs.observe(f.class, completion_tokens);
        }
        if !f.first_seen {
            inst.signals.prefill_pending = inst
                .signals
                .prefill_pending
                .saturating_sub(u64::from(f.prompt_tokens));
        }
        if let Some(pos) = inst.deadlines.iter().position(|d| d.attempt == attempt) {
            inst.deadlines.swap_remove(pos);
        }
        let concurrency = inst.inflight;
        let instance = inst.spec.id.clone();
        let routable = inst.routable();
        let had_room = inst.rooms();
        inst.signals.advance_batch(now, inst.inflight);
        inst.inflight = inst.inflight.saturating_sub(1);
        inst.signals.finished_since = inst.signals.finished_since.saturating_add(1);
        if routable {
            self.totals.inflight = self.totals.inflight.saturating_sub(1);
        }
        self.refresh_room_of(f.ix.slot(), had_room);
        Some(Completion {
            instance,
            slo_met,
            concurrency,
        })
    }

    /// Removes a queued request (or one rejected but not yet handed out) and returns its
    /// payload, in O(1) for queued ones. A placed attempt is ended with `complete` and
    /// `Outcome::Cancelled` instead.
    pub fn cancel(&mut self, id: RequestId, now: Time) -> Option<T> {
        self.advance(now);
        if let Some(&slot) = self.queued_ids.get(&id) {
            let q = self.take(slot)?;
            self.stats.cancelled += 1;
            self.maybe_compact();
            return Some(q.payload);
        }
        let pos = self.pending.iter().position(|r| r.meta.id == id)?;
        Some(self.pending.swap_remove(pos).payload)
    }

    /// The earliest limit on a queued request's wait under the policy in force.
    pub(super) fn first_limit(&self, q: &Queued<T>) -> Option<(Time, Limit)> {
        let timeout = self
            .config
            .queue_timeout
            .map(|t| (q.enqueued + t, Limit::Timeout));
        let deadline = q.meta.deadline_at().map(|d| (d, Limit::Deadline));
        let budget = q
            .budget_at
            .filter(|_| self.class_aware())
            .map(|(at, why)| (at, Limit::Budget(why)));
        [timeout, deadline, budget]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Rejects queued requests whose wait limit has passed; re-arms the others.
    pub(super) fn expire_due(&mut self, now: Time) {
        while let Some(&Reverse((at, seq, slot))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            if !Live(&self.seqs).contains(QueueKey { slot, seq }) {
                continue;
            }
            let Some(q) = self.slots[slot as usize].as_ref() else {
                continue;
            };
            let Some((limit_at, limit)) = self.first_limit(q) else {
                continue;
            };
            if limit_at > now {
                self.expiry.push(Reverse((limit_at, seq, slot)));
                continue;
            }
            let Some(q) = self.take(slot) else { continue };
            let waited = now.saturating_since(q.enqueued);
            let reason = match limit {
                Limit::Timeout => RejectReason::QueueTimeout {
                    waited,
                    timeout: self.config.queue_timeout.unwrap_or(waited),
                },
                Limit::Budget(Budget::Class(timeout)) => {
                    RejectReason::QueueTimeout { waited, timeout }
                }
                Limit::Deadline | Limit::Budget(Budget::Slo) => {
                    RejectReason::DeadlineMissed { waited }
                }
            };
            self.reject(q.meta, q.payload, reason);
        }
    }

    /// With instances registered but none routable, nothing queued can be served: every
    /// queued request (retries too) is rejected with `NoneReady` at once, as new ones are
    /// at submission, instead of waiting out its queue timeout.
    pub(super) fn fail_when_none_ready(&mut self) {
        if self.totals.routable > 0 || self.queue_len() == 0 {
            return;
        }
        let reason = if self.index.is_empty() {
            RejectReason::NoInstances
        } else {
            RejectReason::NoneReady {
                registered: u32::try_from(self.index.len()).unwrap_or(u32::MAX),
            }
        };
        for slot in 0..self.slots.len() {
            if let Some(q) = self.take(slot as u32) {
                self.reject(q.meta, q.payload, reason.clone());
            }
        }
        self.retry.clear();
    }

    /// Drops stale keys once they outnumber live ones (amortised O(1)).
    pub(super) fn maybe_compact(&mut self) {
        let live = self.live_slots();
        let limit = 2 * live + 1024;
        let seqs = Live(&self.seqs);
        if self.queues.stored() > limit {
            self.queues.compact(seqs);
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
