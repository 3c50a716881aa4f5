//! `poll`, the one driving call, and work-conserving placement.
//!
//! A poll: smooths the drain rate, gives the policy its signals, rejects what expired,
//! places as many queued requests as instances have room for in the policy's order,
//! sheds what overload control says will not be served in time, and hands all of it out
//! with the time of the next poll.
//!
//! Placement is work-conserving: when the request at the head cannot be placed yet (its
//! policy says wait for a busy instance, or no instance it may use has room: a
//! parallelism hint, its context length, the policy's candidate set), it is passed over
//! and keeps its place, and the next one is tried, up to `look_ahead` passed-over
//! requests per poll. Retries go before the policy's order.

use super::machine::{HINTS, Inflight, Queued, Scheduler, hint_index, view};
use super::{Effects, InstanceIx, Placement};
use crate::outcome::Slo;
use crate::pool::{Allowed, InstanceState};
use crate::route::RoutingStrategy;
use crate::schedule::order::Head;
use crate::schedule::{Eligibility, Live, QueueKey, SchedulingPolicy, Signals};
use crate::time::Time;

/// A head passed over during one dispatch, to be put back.
#[derive(Debug, Clone, Copy)]
pub(super) enum Skipped {
    /// From the retry lane.
    Retry(QueueKey),
    /// From the policy's order.
    Order(Head),
}

impl<T> Scheduler<T> {
    /// Runs everything that is due at `now` and appends it to `effects`: placements to
    /// execute, rejections to answer. Sets `effects.wake_at` to the next time a poll is due
    /// if nothing else happens (`None`: only on the next event).
    pub fn poll(&mut self, now: Time, effects: &mut Effects<T>) {
        let now = self.advance(now);
        self.refresh_router(now);
        let saturated = self.queue_len() > 0;
        let prior = if saturated {
            self.throughput_prior()
        } else {
            0.0
        };
        self.drain.tick(now, saturated, || prior);
        if self.reserve.advance(now) {
            self.refresh_all_rooms();
        }
        self.expire_due(now);
        self.fail_when_none_ready();
        self.dispatch(now, &mut effects.placements);
        self.shed_overdue(now);
        // observed after placement: what still waits is a queue, a request that just
        // arrived and found room is not
        let signals = self.signals(now);
        self.policy.observe(&signals, now);
        effects.rejections.append(&mut self.pending);
        effects.wake_at = self.expiry.peek().map(|r| r.0.0);
        self.maybe_compact();
    }

    /// The signals the adaptive policy watches.
    pub(super) fn signals(&self, now: Time) -> Signals {
        let normal = crate::request::RequestMeta::new(
            crate::request::RequestId(0),
            "",
            self.drain.mean_prompt.round() as u32,
            1,
            now,
        );
        Signals {
            submitted: self.stats.submitted,
            queued: self.queue_len(),
            routable: self.totals.routable,
            with_room: self.totals.with_room,
            inflight: self.totals.inflight,
            capacity: self.totals.capacity,
            wait_secs: self.predicted_wait(&normal, now),
            slo_attainment: self.stats.slo.recent,
            deadline_share: self.stats.deadline_share,
            class_share: self.stats.class_share,
            price_spread: self.price_spread,
        }
    }

    /// The next head: the retry lane's, else the policy order's among the `classes`
    /// highest classes (4: all).
    fn head(&mut self, order: crate::schedule::OrderKind, classes: usize) -> Option<Skipped> {
        while let Some(&k) = self.retry.front() {
            if Live(&self.seqs).contains(k) {
                return Some(Skipped::Retry(k));
            }
            self.retry.pop_front();
        }
        self.queues
            .peek_within(order, classes, Live(&self.seqs))
            .map(Skipped::Order)
    }

    fn pop(&mut self, head: Skipped) {
        match head {
            Skipped::Retry(_) => {
                self.retry.pop_front();
            }
            Skipped::Order(h) => self.queues.pop(h),
        }
    }

    fn dispatch(&mut self, now: Time, out: &mut Vec<super::Placement<T>>) {
        if self.queue_len() == 0 {
            return;
        }
        let order = self.policy.order();
        // with room for protected requests only (protected deadlines hold the rest back),
        // only the protected classes are looked at
        let protected_classes = self.config.saturation.protect.index() + 1;
        let mut skipped = std::mem::take(&mut self.skipped);
        while skipped.len() <= self.config.look_ahead {
            let classes = if self.totals.with_room > 0 {
                4
            } else if self.totals.protected_room > 0 {
                protected_classes
            } else {
                break;
            };
            let Some(head) = self.head(order, classes) else {
                break;
            };
            let key = match head {
                Skipped::Retry(k) => k,
                Skipped::Order(h) => h.key(),
            };
            match self.try_place(key, now) {
                Try::Place(ix) => {
                    self.pop(head);
                    if let Some(q) = self.take(key.slot) {
                        self.place(q, ix, now, out);
                    }
                }
                Try::Reject(reason) => {
                    self.pop(head);
                    if let Some(q) = self.take(key.slot) {
                        self.reject(q.meta, q.payload, reason);
                    }
                }
                Try::Skip => {
                    self.pop(head);
                    skipped.push(head);
                }
            }
        }
        self.queues.fair().release();
        for head in skipped.drain(..).rev() {
            match head {
                Skipped::Retry(k) => self.retry.push_front(k),
                Skipped::Order(h) => self.queues.restore(h),
            }
        }
        self.skipped = skipped;
    }

    /// Decides where the queued request `key` goes now, if anywhere.
    fn try_place(&mut self, key: QueueKey, now: Time) -> Try {
        let Some(q) = self.slots.get(key.slot as usize).and_then(Option::as_ref) else {
            return Try::Skip;
        };
        let protected = q.meta.priority >= self.config.saturation.protect;
        if !protected && self.totals.with_room == 0 {
            return Try::Skip;
        }
        let keep = self.headroom.keep(
            self.config.tenant_headroom,
            q.meta.tenant,
            self.totals.capacity,
            now,
        );
        let hold = |queues: &mut crate::schedule::order::Queues| {
            // the rest of this dispatch serves the others first
            if let Some(t) = q.meta.tenant {
                queues.fair().hold(t);
            }
            Try::Skip
        };
        let free = self.totals.capacity.saturating_sub(self.totals.inflight);
        if keep.is_some_and(|k| k.over_share && free <= k.slots) {
            return hold(&mut self.queues);
        }
        let mut v = view(
            &self.instances,
            &self.totals,
            &self.outputs,
            self.config.saturation.protect,
            self.slots.len() - self.free.len(),
            self.epoch,
            now,
        );
        v.protected = protected;
        let elig = self.policy.candidates(&q.meta, &v, &mut self.cand);
        let base = match elig {
            Eligibility::All | Eligibility::AllBestEffort => None,
            Eligibility::Only | Eligibility::OnlyBestEffort => Some(&self.cand),
            Eligibility::Wait => return Try::Skip,
            Eligibility::Reject(reason) => return Try::Reject(reason),
        };
        let ctx = q.meta.context_tokens();
        let tight = self.totals.min_context.is_some_and(|m| ctx > u64::from(m));
        let hint = q
            .meta
            .parallelism_hint
            .map(hint_index)
            .filter(|&h| self.totals.hint_room[h] > 0);
        let avoid = q.avoid.iter().any(|a| self.index_is_current(*a));
        // a protected request with a deadline goes to a lane (see `reserve`) if one has room
        // and its first token would come there within half its TTFT budget (lanes must not
        // pile up prefill)
        let lanes = protected
            && q.meta.deadline.is_some()
            && self.config.saturation.deadlines
            && self.config.queue_at == super::QueueAt::Gateway;
        let allowed = if tight || hint.is_some() || avoid || lanes || keep.is_some() {
            let n = self.instances.len();
            self.narrowed.reset(n);
            for (slot, inst) in v.with_room_iter() {
                if base.is_none_or(|b| b.contains(slot)) && inst.fits(ctx) {
                    self.narrowed.insert(slot);
                }
            }
            if self.narrowed.is_empty() {
                return Try::Skip;
            }
            if let Some(h) = hint {
                let set = &self.hint_sets[h];
                if self.narrowed.iter().any(|s| set.contains(s)) {
                    self.narrowed.retain(|s| set.contains(s));
                }
            }
            if lanes {
                let ttft_budget = q
                    .meta
                    .ttft_deadline_at()
                    .map(|t| 0.5 * t.saturating_since(now).as_secs_f64());
                let prompt = q.meta.prompt_tokens;
                let is_lane = |s: usize| {
                    v.get(s).is_some_and(|i| {
                        i.signals.lane_until.is_some_and(|t| t > now)
                            && ttft_budget.is_none_or(|b| i.ttft_secs(prompt, now) <= b)
                    })
                };
                if self.narrowed.iter().any(is_lane) {
                    self.narrowed.retain(is_lane);
                }
            }
            if let Some(k) = keep {
                let prompt = q.meta.prompt_tokens;
                let other = super::kept::leave_kept(
                    &mut self.ranked,
                    &mut self.narrowed,
                    &v,
                    k.slots,
                    prompt,
                    now,
                );
                if !other && k.over_share {
                    return hold(&mut self.queues);
                }
                // under its share, a tenant takes a kept slot when no other is free
            }
            // every instance tried before, while another remains
            let instances = &self.instances;
            let current = |a: &InstanceIx| {
                instances
                    .get(a.slot())
                    .and_then(Option::as_ref)
                    .is_some_and(|i| i.ix == *a)
            };
            for a in q.avoid.iter().filter(|a| current(a)) {
                if self.narrowed.len() > 1 {
                    self.narrowed.remove(a.slot());
                }
            }
            Allowed::Only(&self.narrowed)
        } else {
            base.map_or(Allowed::All, Allowed::Only)
        };
        let pick = self
            .router
            .pick(&q.meta, &v, allowed)
            .filter(|&s| v.eligible(s, Allowed::All));
        match pick.and_then(|s| v.get(s)) {
            Some(inst) => {
                if matches!(
                    elig,
                    Eligibility::AllBestEffort | Eligibility::OnlyBestEffort
                ) && !q.best_effort
                {
                    self.stats.best_effort += 1;
                }
                Try::Place(inst.ix)
            }
            None => Try::Skip,
        }
    }

    fn index_is_current(&self, ix: InstanceIx) -> bool {
        self.instances
            .get(ix.slot())
            .and_then(Option::as_ref)
            .is_some_and(|i| i.ix == ix)
    }

    fn place(&mut self, q: Queued<T>, ix: InstanceIx, now: Time, out: &mut Vec<Placement<T>>) {
        let Some(inst) = self
            .instances
            .get_mut(ix.slot())
            .and_then(Option::as_mut)
            .filter(|i| i.ix == ix)
        else {
            return;
        };
        let routable = inst.routable();
        let had_room = inst.rooms();
        inst.signals.advance_batch(now, inst.inflight);
        inst.inflight += 1;
        inst.placed_total += 1;
        inst.signals.placed_since = inst.signals.placed_since.saturating_add(1);
        let pending_ahead = inst.signals.prefill_pending;
        inst.signals.prefill_pending += u64::from(q.meta.prompt_tokens);
        if let Some(deadline) = q
            .meta
            .deadline_at()
            .filter(|_| q.meta.priority >= self.config.saturation.protect)
        {
            inst.signals.lane_until = Some(now.saturating_add(crate::reserve::RESERVE_WINDOW));
            inst.deadlines.push(crate::load::DeadlineInFlight {
                attempt: q.attempt,
                deadline,
                tokens: self.outputs.predict_long(&q.meta),
                first: None,
            });
        }
        let batch_secs = inst.signals.batch_secs;
        let instance = inst.spec.id.clone();
        self.refresh_room_of(ix.slot(), had_room);
        if routable {
            self.totals.inflight += 1;
        }
        self.stats.placed += 1;
        self.router.placed(&q.meta, ix, now);
        let charged = q
            .meta
            .prompt_tokens
            .saturating_add(self.outputs.predict(&q.meta));
        self.queues
            .fair()
            .charge(q.meta.priority, q.meta.tenant, f64::from(charged));
        self.headroom.started(q.meta.tenant, now);
        self.inflight.insert(
            q.attempt,
            Inflight {
                ix,
                class: q.meta.priority,
                slo: Slo::of(&q.meta),
                arrival: q.meta.arrival,
                placed_at: now,
                prompt_tokens: q.meta.prompt_tokens,
                pending_ahead,
                first_seen: false,
                fair_charge: (q.meta.tenant, charged),
                batch_mark: (now, batch_secs),
            },
        );
        out.push(Placement {
            attempt: q.attempt,
            instance,
            ix,
            queued_for: now.saturating_since(q.enqueued),
            prefix: self.router.note(),
            meta: q.meta,
            payload: q.payload,
        });
    }

    /// Notes a protected request with an end-to-end deadline (see `reserve`): the time per
    /// token a long answer of its class needs to meet it, unless no routable instance
    /// could give that even running it alone (a hopeless target plans nothing).
    pub(super) fn note_protected(&mut self, meta: &crate::request::RequestMeta, now: Time) {
        let sat = &self.config.saturation;
        if !sat.deadlines
            || meta.priority < sat.protect
            || self.config.queue_at == super::QueueAt::Engine
        {
            return;
        }
        let Some(budget) = meta.deadline else { return };
        let tokens = f64::from(self.outputs.predict_long(meta).max(1));
        let need = budget.as_secs_f64() / tokens;
        // the scan for a reachable instance runs only when the need would tighten
        let mut tighter = self.reserve;
        let changed = if tighter.observe(need, now)
            && self
                .instances
                .iter()
                .flatten()
                .any(|i| i.routable() && crate::load::reserve_limit(i, need).is_some())
        {
            self.reserve = tighter;
            true
        } else {
            self.reserve.advance(now)
        };
        if changed {
            self.refresh_all_rooms();
        }
    }

    /// Recomputes every instance's room and adjusts the totals. O(instances).
    pub(super) fn refresh_all_rooms(&mut self) {
        for slot in 0..self.instances.len() {
            if let Some(before) = self.instances[slot].as_ref().map(InstanceState::rooms) {
                self.refresh_room_of(slot, before);
            }
        }
    }

    /// Recomputes the room of the instance at `slot` and adjusts the totals.
    pub(super) fn refresh_room_of(&mut self, slot: usize, (had_room, had_protected): (bool, bool)) {
        let engine_queues = self.config.queue_at == super::QueueAt::Engine;
        let now = self.clock;
        let Some(inst) = self.instances.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        crate::load::refresh(inst, &self.config.saturation, self.reserve.need(), now);
        if engine_queues {
            inst.signals.room = inst.routable();
            inst.signals.protected_room = inst.routable();
        }
        let has_protected = inst.has_room_for(true);
        if had_protected != has_protected {
            if has_protected {
                self.totals.protected_room += 1;
            } else {
                self.totals.protected_room = self.totals.protected_room.saturating_sub(1);
            }
        }
        let has = inst.has_room();
        if had_room != has {
            let layout = inst.spec.layout;
            if has {
                self.totals.with_room += 1;
            } else {
                self.totals.with_room = self.totals.with_room.saturating_sub(1);
            }
            for (h, kind) in HINTS.iter().enumerate() {
                if layout.matches_hint(*kind) {
                    if has {
                        self.totals.hint_room[h] += 1;
                    } else {
                        self.totals.hint_room[h] = self.totals.hint_room[h].saturating_sub(1);
                    }
                }
            }
        }
    }
}

/// Where a request goes now.
enum Try {
    Place(InstanceIx),
    Reject(crate::reject::RejectReason),
    Skip,
}
