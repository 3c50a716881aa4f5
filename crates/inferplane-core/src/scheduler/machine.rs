//! The `Scheduler` struct and admission: `submit` and `retry`.
//!
//! Queued requests live in a slot table; the queue orders, the retry lane and the expiry
//! heap hold `QueueKey`s into it and drop stale ones lazily, so cancelling, expiring or
//! shedding one request is O(1) plus O(log n) for the expiry heap, never a scan of the
//! queue. Requests turned away by a call that cannot return them wait in a pending list
//! that the next `poll` hands out.

use super::overload::DrainMeter;
use super::{InstanceIx, QueueAt, Rejection, SchedulerConfig};
use crate::instance::InstanceId;
use crate::outcome::{AttemptId, has_slo};
use crate::pool::{CandidateSet, InstanceState, PoolView};
use crate::predict::OutputLengths;
use crate::reject::RejectReason;
use crate::request::{ParallelismKind, Priority, RequestId, RequestMeta};
use crate::route::Router;
use crate::schedule::order::{Entry, Queues};
use crate::schedule::{Admission, Live, Policy, QueueKey, SchedulingPolicy};
use crate::stats::Stats;
use crate::time::Time;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

/// Why a queued request's wait is bounded when it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Budget {
    /// Its class's wait target.
    Class(Duration),
    /// Its own SLO (TTFT slack or end-to-end deadline).
    Slo,
}

pub(super) struct Queued<T> {
    pub(super) meta: RequestMeta,
    pub(super) payload: T,
    pub(super) enqueued: Time,
    /// Instances earlier attempts failed on (a retry prefers any other).
    pub(super) avoid: Box<[InstanceIx]>,
    pub(super) seq: u64,
    pub(super) best_effort: bool,
    pub(super) attempt: AttemptId,
    /// When its wait budget runs out (class-aware orders), and why.
    pub(super) budget_at: Option<(Time, Budget)>,
    pub(super) virtual_start: Time,
}

pub(super) struct Inflight {
    pub(super) ix: InstanceIx,
    pub(super) class: Priority,
    pub(super) slo: crate::outcome::Slo,
    pub(super) arrival: Time,
    pub(super) placed_at: Time,
    pub(super) prompt_tokens: u32,
    /// Prompt tokens pending on the instance when it was placed, its own excluded.
    pub(super) pending_ahead: u64,
    pub(super) first_seen: bool,
    /// Its tenant and the tokens the fair share charged it at placement (prompt and
    /// predicted output), corrected when it ends.
    pub(super) fair_charge: (Option<crate::request::TenantId>, u32),
    /// The instance's batch integral when its decode began (its first token, else its
    /// placement), to measure the mean batch it decoded in.
    pub(super) batch_mark: (Time, f64),
}

/// Totals over routable instances, kept up to date incrementally.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Totals {
    pub(super) routable: usize,
    pub(super) inflight: u64,
    pub(super) capacity: u64,
    pub(super) with_room: usize,
    /// Routable instances with room for a protected request (a superset of `with_room`).
    pub(super) protected_room: usize,
    /// Routable instances with room matching each parallelism hint.
    pub(super) hint_room: [usize; 5],
    /// Smallest and largest known context over instances (routable or not), and whether
    /// any instance's context is unknown.
    pub(super) min_context: Option<u32>,
    pub(super) max_context: Option<u32>,
    pub(super) unknown_context: bool,
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
/// a request index in the simulation).
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
    pub(super) queues: Queues,
    /// Tenants' loads: a flooding tenant leaves the last slots to the others.
    pub(super) headroom: crate::schedule::headroom::Headroom,
    pub(super) retry: VecDeque<QueueKey>,
    pub(super) expiry: BinaryHeap<Reverse<(Time, u64, u32)>>,
    pub(super) next_seq: u64,
    pub(super) clock: Time,
    pub(super) pending: Vec<Rejection<T>>,
    // instances
    pub(super) instances: Vec<Option<InstanceState>>,
    pub(super) generations: Vec<u32>,
    pub(super) index: HashMap<InstanceId, InstanceIx>,
    pub(super) inflight: HashMap<AttemptId, Inflight>,
    pub(super) totals: Totals,
    pub(super) epoch: u64,
    pub(super) price_spread: bool,
    pub(super) hint_sets: [CandidateSet; 5],
    // learning
    pub(super) outputs: OutputLengths,
    pub(super) drain: DrainMeter,
    pub(super) reserve: crate::reserve::ProtectedNeed,
    // scratch, reused from pick to pick
    pub(super) cand: CandidateSet,
    pub(super) narrowed: CandidateSet,
    /// Instances by predicted time to first token, for the slots a tenant leaves free.
    pub(super) ranked: Vec<(f64, crate::pool::Slot)>,
    pub(super) skipped: Vec<super::dispatch::Skipped>,
    pub(super) stats: Stats,
    /// Whether a completion has measured the rates yet: before, wait predictions rest on
    /// priors alone and nothing is shed by them (see `overload.rs`).
    pub(super) calibrated: bool,
}

/// The pool view over the scheduler's fields (a free function so that the policy and the
/// router can be borrowed mutably beside it).
pub(super) fn view<'a>(
    instances: &'a [Option<InstanceState>],
    totals: &Totals,
    outputs: &'a OutputLengths,
    protect: Priority,
    queued: usize,
    epoch: u64,
    now: Time,
) -> PoolView<'a> {
    PoolView {
        instances,
        routable: totals.routable,
        routable_inflight: totals.inflight,
        with_room: totals.with_room,
        capacity: totals.capacity,
        queued,
        epoch,
        now,
        outputs,
        protect,
        protected: false,
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
            queues: Queues::default(),
            headroom: Default::default(),
            retry: VecDeque::new(),
            expiry: BinaryHeap::new(),
            next_seq: 1,
            clock: Time::ZERO,
            pending: Vec::new(),
            instances: Vec::new(),
            generations: Vec::new(),
            index: HashMap::new(),
            inflight: HashMap::new(),
            totals: Totals::default(),
            epoch: 0,
            price_spread: false,
            hint_sets: Default::default(),
            outputs: OutputLengths::EMPTY,
            drain: DrainMeter::default(),
            reserve: crate::reserve::ProtectedNeed::default(),
            cand: CandidateSet::default(),
            narrowed: CandidateSet::default(),
            ranked: Vec::new(),
            skipped: Vec::new(),
            stats: Stats::default(),
            calibrated: false,
        }
    }

    /// Time never goes backwards inside the scheduler.
    pub(super) fn advance(&mut self, now: Time) -> Time {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// Whether the wait budgets apply (shedding and class wait targets; see
    /// `SchedulingPolicy::budgets`), never behind a plain router.
    pub(super) fn class_aware(&self) -> bool {
        self.policy.budgets() && self.config.queue_at == QueueAt::Gateway
    }

    /// Records a rejection and queues it for the next poll.
    pub(super) fn reject(&mut self, meta: RequestMeta, payload: T, reason: RejectReason) {
        self.stats.record_reject(&meta, &reason);
        self.pending.push(Rejection {
            meta,
            payload,
            reason,
        });
    }

    pub(super) fn insert(&mut self, q: Queued<T>) -> QueueKey {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.seqs.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let key = QueueKey { slot, seq: q.seq };
        if let Some(at) = self.first_limit(&q) {
            self.expiry.push(Reverse((at.0, q.seq, slot)));
        }
        self.queued_ids.insert(q.meta.id, slot);
        self.queued_by_class[q.meta.priority.index()] += 1;
        self.seqs[slot as usize] = q.seq;
        self.slots[slot as usize] = Some(q);
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

    pub(super) fn queued_ref(&self, key: QueueKey) -> Option<&Queued<T>> {
        self.slots
            .get(key.slot as usize)
            .and_then(Option::as_ref)
            .filter(|q| q.seq == key.seq)
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Admits a request to the queue, or turns it away (the next `poll` hands the
    /// rejection out): no instance at all, a context no instance has, overload (shed by
    /// class, see `overload.rs`), the policy's own checks (SLO infeasible, over budget),
    /// or a full queue (where class-aware policies shed the newest request of the lowest
    /// class below the newcomer instead).
    pub fn submit(&mut self, meta: RequestMeta, payload: T, now: Time) {
        let now = self.advance(now);
        self.headroom.arrived(meta.tenant, now);
        self.stats.record_submission(&meta);
        self.drain.on_submit(meta.prompt_tokens, meta.max_tokens);
        if self.index.is_empty() {
            return self.reject(meta, payload, RejectReason::NoInstances);
        }
        if self.totals.routable == 0 {
            // nothing can serve it: say so at once instead of after the queue timeout
            let registered = u32::try_from(self.index.len()).unwrap_or(u32::MAX);
            return self.reject(meta, payload, RejectReason::NoneReady { registered });
        }
        if let Some(reason) = self.context_too_long(&meta) {
            return self.reject(meta, payload, reason);
        }
        self.note_protected(&meta, now);
        let class_aware = self.class_aware();
        let wait = self.predicted_wait(&meta, now);
        let budget = if class_aware && self.config.overload.shed {
            self.budget(&meta, now, wait)
        } else {
            None
        };
        if let Some((budget_secs, _)) = budget
            && self.calibrated
            && wait.is_finite()
            && wait > budget_secs
        {
            let reason = RejectReason::Shed {
                class: meta.priority,
                predicted_wait: crate::predict::secs(wait),
                budget: crate::predict::secs(budget_secs),
            };
            return self.reject(meta, payload, reason);
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
        v.protected = meta.priority >= self.config.saturation.protect;
        let best_effort = match self.policy.admit(&meta, &v, wait) {
            Admission::Admit => false,
            Admission::AdmitBestEffort => true,
            Admission::Reject(reason) => return self.reject(meta, payload, reason),
        };
        if self.queue_len() >= self.config.max_queue {
            let victim = if class_aware {
                self.shed_victim(meta.priority)
            } else {
                None
            };
            match victim.and_then(|k| self.take(k.slot)) {
                Some(v) => {
                    let reason = RejectReason::Shed {
                        class: v.meta.priority,
                        predicted_wait: Duration::ZERO,
                        budget: Duration::ZERO,
                    };
                    self.reject(v.meta, v.payload, reason);
                }
                None => {
                    let reason = RejectReason::QueueFull {
                        max_queue: self.config.max_queue,
                    };
                    return self.reject(meta, payload, reason);
                }
            }
        }
        if best_effort {
            self.stats.best_effort += 1;
        }
        self.stats.admitted += 1;
        let budget_at = budget.map(|(secs, why)| (now + crate::predict::secs(secs), why));
        let seq = self.next_seq();
        let virtual_start = now + self.class_offset(meta.priority);
        let urgency = self.urgency(&meta, virtual_start);
        let class = meta.priority;
        let tenant = meta.tenant;
        let attempt = AttemptId::first(meta.id);
        let key = self.insert(Queued {
            meta,
            payload,
            enqueued: now,
            avoid: Box::default(),
            seq,
            best_effort,
            attempt,
            budget_at: if best_effort { None } else { budget_at },
            virtual_start,
        });
        self.queues.push(
            Entry {
                key,
                class,
                enqueued: now,
                virtual_start,
                urgency,
                tenant,
            },
            Live(&self.seqs),
        );
    }

    /// Queues the next attempt of a request whose attempt `previous` failed before any
    /// byte reached the client (report it first with `complete` and `Failed { retrying:
    /// true }`). It goes ahead of the policy's order, preferring any instance but those in
    /// `avoid` (the instances its earlier attempts failed on), while one has room.
    pub fn retry(
        &mut self,
        previous: AttemptId,
        meta: RequestMeta,
        payload: T,
        avoid: &[InstanceId],
        now: Time,
    ) {
        let now = self.advance(now);
        let avoid = avoid
            .iter()
            .filter_map(|id| self.index.get(id).copied())
            .collect();
        self.stats.retried += 1;
        let seq = self.next_seq();
        let virtual_start = now;
        let key = self.insert(Queued {
            meta,
            payload,
            enqueued: now,
            avoid,
            seq,
            best_effort: false,
            attempt: previous.next(),
            budget_at: None,
            virtual_start,
        });
        self.retry.push_back(key);
    }

    /// The virtual-start offset of `class`: its rank (0 critical .. 3 low) times the
    /// longest class wait target (see `schedule/order.rs`).
    pub(super) fn class_offset(&self, class: Priority) -> Duration {
        let w = &self.config.overload.wait;
        let step = Priority::ALL
            .iter()
            .map(|p| w.get(*p))
            .max()
            .unwrap_or_default();
        step.saturating_mul(class.index() as u32)
    }

    fn urgency(&self, meta: &RequestMeta, virtual_start: Time) -> Time {
        meta.ttft_deadline_at()
            .or(meta.deadline_at())
            .unwrap_or(virtual_start)
    }

    /// A rejection when the request's context fits no instance whose context is known and
    /// none is unknown.
    fn context_too_long(&self, meta: &RequestMeta) -> Option<RejectReason> {
        let t = &self.totals;
        let max = t.max_context?;
        let requested = meta.context_tokens();
        (!t.unknown_context && requested > u64::from(max)).then_some(
            RejectReason::ContextLengthExceeded {
                requested,
                max_model_len: max,
            },
        )
    }

    /// The newest queued request of the lowest class below `incoming`, for a full queue
    /// (with tenants sharing the class, of the one most queued for its weight).
    fn shed_victim(&mut self, incoming: Priority) -> Option<QueueKey> {
        for class in [Priority::Low, Priority::Normal, Priority::High] {
            if class >= incoming {
                break;
            }
            let live = Live(&self.seqs);
            if let Some((k, _, _)) = self.queues.fair().newest_of_most_queued(class, live) {
                return Some(k);
            }
            if let Some((k, _)) = self.queues.newest(class, Live(&self.seqs)) {
                return Some(k);
            }
        }
        None
    }

    pub(super) fn live_slots(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Sets a tenant's fair-share weight inside a class (default 1): with weights 2 and 1,
    /// two tenants that both keep requests waiting in one class are served tokens 2:1
    /// (see [`crate::schedule::fair`]).
    pub fn set_tenant_weight(&mut self, tenant: crate::request::TenantId, weight: u32) {
        self.queues.fair().set_weight(tenant, weight);
        self.headroom.set_weight(tenant, weight);
    }

    /// A tenant's virtual token counter in a class: the tokens it was served there over its
    /// weight, lifted when it starts waiting.
    pub fn tenant_counter(
        &mut self,
        class: Priority,
        tenant: Option<crate::request::TenantId>,
    ) -> f64 {
        self.queues.fair().counter(class, tenant)
    }

    /// Requests waiting in the queue (retries included).
    pub fn queue_len(&self) -> usize {
        self.live_slots()
    }

    /// Whether the request carries an SLO (re-exported for drivers).
    pub fn has_slo(meta: &RequestMeta) -> bool {
        has_slo(meta)
    }
}
