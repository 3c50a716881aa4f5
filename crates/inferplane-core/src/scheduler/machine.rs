//! The `Scheduler` struct and its request path: `submit`, `requeue`, `dispatch`,
//! `complete`, `cancel`, `expire`, `next_expiry`.
//!
//! Queued requests live in a slot table; the policy, the retry lane and the expiry heap
//! hold `QueueKey`s into it and drop stale ones lazily, so cancelling, expiring or shedding
//! one request is O(1) plus O(log n) for the expiry heap, never a scan of the queue.
//! Requests that leave the queue other than by a return value of the call that removed
//! them (shed by a newcomer, rejected at dispatch as infeasible) wait in a pending list:
//! `next_expiry` then answers "now" and `expire` (or `take_rejected`) hands them out.

use super::{InstanceIx, InstanceState, Placement, RejectReason, Rejected, SchedulerConfig};
use crate::instance::InstanceId;
use crate::request::{ParallelismKind, Priority, RequestId, RequestMeta};
use crate::route::{Allowed, CandidateSet, PoolView, Router, RoutingStrategy};
use crate::schedule::slo_aware::has_slo;
use crate::schedule::{Admission, Eligibility, Entry, Live, Policy, QueueKey, SchedulingPolicy};
use crate::stats::Stats;
use crate::time::Time;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

pub(super) struct Queued<T> {
    pub(super) meta: RequestMeta,
    pub(super) payload: T,
    pub(super) enqueued: Time,
    pub(super) avoid: Option<InstanceIx>,
    pub(super) seq: u64,
    pub(super) best_effort: bool,
}

pub(super) struct Inflight {
    pub(super) ix: InstanceIx,
    pub(super) placed_at: Time,
    pub(super) arrival: Time,
    pub(super) deadline: Option<Time>,
    pub(super) ttft_deadline: Option<Time>,
}

/// Totals over routable instances, kept up to date incrementally.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Totals {
    pub(super) routable: usize,
    pub(super) inflight: u64,
    pub(super) capacity: u64,
    pub(super) free_slots: u64,
    /// Free slots on routable instances matching each parallelism hint.
    pub(super) hint_free: [u64; 5],
}

pub(super) const fn hint_index(k: ParallelismKind) -> usize {
    match k {
        ParallelismKind::Tp => 0,
        ParallelismKind::Pp => 1,
        ParallelismKind::Dp => 2,
        ParallelismKind::Ep => 3,
        ParallelismKind::Hybrid => 4,
    }
}

pub(super) const HINTS: [ParallelismKind; 5] = [
    ParallelismKind::Tp,
    ParallelismKind::Pp,
    ParallelismKind::Dp,
    ParallelismKind::Ep,
    ParallelismKind::Hybrid,
];

/// The scheduler of one pool. `T` is the caller's payload (a reply channel in the gateway,
/// a request record in the simulation).
pub struct Scheduler<T> {
    pub(super) config: SchedulerConfig,
    pub(super) policy: Policy,
    pub(super) router: Router,
    pub(super) router_epoch: Option<u64>,
    // queue
    pub(super) slots: Vec<Option<Queued<T>>>,
    pub(super) seqs: Vec<u64>,
    pub(super) free: Vec<u32>,
    pub(super) queued_ids: HashMap<RequestId, u32>,
    pub(super) queued_by_class: [usize; 4],
    pub(super) retry: VecDeque<QueueKey>,
    pub(super) expiry: BinaryHeap<Reverse<(Time, u64, u32)>>,
    pub(super) next_seq: u64,
    pub(super) clock: Time,
    pub(super) pending: Vec<Rejected<T>>,
    // instances
    pub(super) instances: Vec<Option<InstanceState>>,
    pub(super) index: HashMap<InstanceId, InstanceIx>,
    pub(super) inflight: HashMap<RequestId, Inflight>,
    pub(super) totals: Totals,
    pub(super) epoch: u64,
    pub(super) price_spread: bool,
    pub(super) hint_sets: [CandidateSet; 5],
    // scratch, reused from pick to pick
    pub(super) cand: CandidateSet,
    pub(super) narrowed: CandidateSet,
    pub(super) avoid_set: CandidateSet,
    pub(super) stats: Stats,
}

/// The pool view over the scheduler's fields (a free function so that the policy and the
/// router can be borrowed mutably beside it).
pub(super) fn view<'a>(
    instances: &'a [Option<InstanceState>],
    totals: &Totals,
    queued: usize,
    epoch: u64,
    now: Time,
) -> PoolView<'a> {
    PoolView {
        instances,
        routable: totals.routable,
        routable_inflight: totals.inflight,
        capacity: totals.capacity,
        free_slots: totals.free_slots,
        queued,
        epoch,
        now,
    }
}

impl<T> Scheduler<T> {
    /// An empty pool running the configured policy and routing strategy.
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            policy: config.policy.build(),
            router: config.routing.build(config.seed),
            router_epoch: None,
            config,
            slots: Vec::new(),
            seqs: Vec::new(),
            free: Vec::new(),
            queued_ids: HashMap::new(),
            queued_by_class: [0; 4],
            retry: VecDeque::new(),
            expiry: BinaryHeap::new(),
            next_seq: 1,
            clock: Time::ZERO,
            pending: Vec::new(),
            instances: Vec::new(),
            index: HashMap::new(),
            inflight: HashMap::new(),
            totals: Totals::default(),
            epoch: 0,
            price_spread: false,
            hint_sets: Default::default(),
            cand: CandidateSet::default(),
            narrowed: CandidateSet::default(),
            avoid_set: CandidateSet::default(),
            stats: Stats::default(),
        }
    }

    /// Time never goes backwards inside the scheduler.
    pub(super) fn advance(&mut self, now: Time) -> Time {
        self.clock = self.clock.max(now);
        self.clock
    }

    pub(super) fn reject(
        &mut self,
        meta: RequestMeta,
        payload: T,
        reason: RejectReason,
    ) -> Rejected<T> {
        self.stats.record_reject(&reason);
        if reason.kind().is_slo_miss() && has_slo(&meta) {
            self.stats.slo.record(false);
        }
        Rejected {
            meta,
            payload,
            reason,
        }
    }

    fn insert(
        &mut self,
        meta: RequestMeta,
        payload: T,
        enqueued: Time,
        avoid: Option<InstanceIx>,
        best_effort: bool,
    ) -> QueueKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.seqs.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let key = QueueKey { slot, seq };
        let timeout_at = self.config.queue_timeout.map(|t| enqueued + t);
        let expires = match (timeout_at, meta.deadline_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = expires {
            self.expiry.push(Reverse((at, seq, slot)));
        }
        self.queued_ids.insert(meta.id, slot);
        self.queued_by_class[meta.priority.index()] += 1;
        self.seqs[slot as usize] = seq;
        self.slots[slot as usize] = Some(Queued {
            meta,
            payload,
            enqueued,
            avoid,
            seq,
            best_effort,
        });
        key
    }

    pub(super) fn take(&mut self, slot: u32) -> Option<Queued<T>> {
        let q = self.slots.get_mut(slot as usize)?.take()?;
        self.seqs[slot as usize] = 0;
        self.free.push(slot);
        if self.queued_ids.get(&q.meta.id) == Some(&slot) {
            self.queued_ids.remove(&q.meta.id);
        }
        self.queued_by_class[q.meta.priority.index()] -= 1;
        Some(q)
    }

    /// Admits a request to the queue, or rejects it at once with the reason. When the
    /// queue is full and the policy sheds (`priority`, `adaptive`), a lower-class request
    /// is evicted instead; it is handed out by `expire` / `take_rejected` with reason
    /// `shed`.
    pub fn submit(
        &mut self,
        meta: RequestMeta,
        payload: T,
        now: Time,
    ) -> Result<(), Box<Rejected<T>>> {
        let now = self.advance(now);
        self.stats.record_submission(has_slo(&meta));
        if self.index.is_empty() {
            return Err(Box::new(self.reject(
                meta,
                payload,
                RejectReason::NoInstances,
            )));
        }
        let queued = self.queue_len();
        let v = view(&self.instances, &self.totals, queued, self.epoch, now);
        let best_effort = match self.policy.admit(&meta, &v) {
            Admission::Admit => false,
            Admission::AdmitBestEffort => true,
            Admission::Reject(reason) => return Err(Box::new(self.reject(meta, payload, reason))),
        };
        if queued >= self.config.max_queue {
            let victim = self.policy.shed_victim(&meta, Live(&self.seqs));
            match victim.and_then(|k| self.take(k.slot)) {
                Some(v) => {
                    let r = self.reject(
                        v.meta,
                        v.payload,
                        RejectReason::Shed {
                            class: Priority::Low,
                            predicted_wait: std::time::Duration::ZERO,
                            budget: std::time::Duration::ZERO,
                        },
                    );
                    self.pending.push(r);
                }
                None => {
                    let reason = RejectReason::QueueFull {
                        max_queue: self.config.max_queue,
                    };
                    return Err(Box::new(self.reject(meta, payload, reason)));
                }
            }
        }
        if best_effort {
            self.stats.best_effort += 1;
        }
        self.stats.admitted += 1;
        let key = self.insert(meta, payload, now, None, best_effort);
        if let Some(Some(q)) = self.slots.get(key.slot as usize) {
            self.policy.push(Entry {
                key,
                meta: &q.meta,
                enqueued: q.enqueued,
            });
        }
        Ok(())
    }

    /// Puts a request whose attempt failed before any byte reached the client back at the
    /// head of the queue (ahead of the policy's order), preferring any instance but
    /// `avoid`. Call `complete` for the failed attempt first.
    pub fn requeue(&mut self, meta: RequestMeta, payload: T, avoid: &InstanceId, now: Time) {
        let now = self.advance(now);
        let avoid = self.index.get(avoid).copied();
        self.stats.requeued += 1;
        let key = self.insert(meta, payload, now, avoid, false);
        self.retry.push_front(key);
    }

    fn head(&mut self) -> Option<(QueueKey, bool)> {
        while let Some(&k) = self.retry.front() {
            if Live(&self.seqs).contains(k) {
                return Some((k, true));
            }
            self.retry.pop_front();
        }
        self.policy.peek(Live(&self.seqs)).map(|k| (k, false))
    }

    /// Places as many queued requests as instances have room for, in the policy's order.
    /// Requests the policy rejects here (SLO infeasible, over budget) are handed out by
    /// `expire` / `take_rejected`.
    pub fn dispatch(&mut self, now: Time, out: &mut Vec<Placement<T>>) {
        let now = self.advance(now);
        self.refresh_router(now);
        let signals = self.signals();
        self.policy.observe(&signals, now);
        while self.totals.free_slots > 0 {
            let Some((key, from_retry)) = self.head() else {
                break;
            };
            let Some(q) = self.slots.get(key.slot as usize).and_then(Option::as_ref) else {
                break;
            };
            let queued = self.queued_ids.len();
            let v = view(&self.instances, &self.totals, queued, self.epoch, now);
            let elig = self.policy.candidates(&q.meta, &v, &mut self.cand);
            let mut best_effort = false;
            let mut allowed = match elig {
                Eligibility::All => Allowed::All,
                Eligibility::AllBestEffort => {
                    best_effort = !q.best_effort;
                    Allowed::All
                }
                Eligibility::Only => Allowed::Only(&self.cand),
                Eligibility::OnlyBestEffort => {
                    best_effort = !q.best_effort;
                    Allowed::Only(&self.cand)
                }
                Eligibility::Wait => break,
                Eligibility::Reject(reason) => {
                    if !from_retry {
                        self.policy.pop_head();
                    }
                    if let Some(q) = self.take(key.slot) {
                        let r = self.reject(q.meta, q.payload, reason);
                        self.pending.push(r);
                    }
                    continue;
                }
            };
            if let Some(hint) = q.meta.parallelism_hint {
                let h = hint_index(hint);
                if self.totals.hint_free[h] > 0 {
                    allowed = match allowed {
                        Allowed::All => Allowed::Only(&self.hint_sets[h]),
                        Allowed::Only(set) => {
                            narrow(&mut self.narrowed, set, |ix| self.hint_sets[h].contains(ix));
                            if self.narrowed.iter().any(|ix| v.eligible(ix, Allowed::All)) {
                                Allowed::Only(&self.narrowed)
                            } else {
                                Allowed::Only(set)
                            }
                        }
                    };
                }
            }
            let mut pick = None;
            if let Some(avoid) = q.avoid {
                let n = v.instances.len();
                self.avoid_set.reset(n);
                for ix in (0..n).filter(|&ix| ix != avoid) {
                    if allowed.contains(ix) && v.eligible(ix, Allowed::All) {
                        self.avoid_set.insert(ix);
                    }
                }
                if !self.avoid_set.is_empty() {
                    pick = self
                        .router
                        .pick(&q.meta, &v, Allowed::Only(&self.avoid_set));
                }
            }
            let pick = pick.or_else(|| self.router.pick(&q.meta, &v, allowed));
            let Some(ix) = pick.filter(|&ix| v.eligible(ix, Allowed::All)) else {
                break;
            };
            if from_retry {
                self.retry.pop_front();
            } else {
                self.policy.pop_head();
            }
            let Some(q) = self.take(key.slot) else {
                break;
            };
            if best_effort {
                self.stats.best_effort += 1;
            }
            self.place(q, ix, now, out);
        }
        self.maybe_compact();
    }

    fn place(&mut self, q: Queued<T>, ix: InstanceIx, now: Time, out: &mut Vec<Placement<T>>) {
        let Some(inst) = self.instances.get_mut(ix).and_then(Option::as_mut) else {
            return;
        };
        let routable = inst.routable();
        inst.inflight += 1;
        inst.placed_total += 1;
        let instance = inst.spec.id.clone();
        if routable {
            self.totals.inflight += 1;
            self.totals.free_slots = self.totals.free_slots.saturating_sub(1);
            for (h, kind) in HINTS.iter().enumerate() {
                if inst.spec.layout.matches_hint(*kind) {
                    self.totals.hint_free[h] = self.totals.hint_free[h].saturating_sub(1);
                }
            }
        }
        self.stats.placed += 1;
        self.inflight.insert(
            q.meta.id,
            Inflight {
                ix,
                placed_at: now,
                arrival: q.meta.arrival,
                deadline: q.meta.deadline_at(),
                ttft_deadline: q.meta.ttft_deadline_at(),
            },
        );
        out.push(Placement {
            instance,
            ix,
            queued_for: now.saturating_since(q.enqueued),
            meta: q.meta,
            payload: q.payload,
        });
    }

    pub(super) fn live_slots(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Requests waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.live_slots()
    }
}

fn narrow(out: &mut CandidateSet, set: &CandidateSet, keep: impl Fn(InstanceIx) -> bool) {
    out.copy_from(set);
    for ix in set.iter() {
        if !keep(ix) {
            out.remove(ix);
        }
    }
}
