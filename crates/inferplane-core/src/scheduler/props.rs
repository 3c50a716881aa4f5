//! Property tests of the `Scheduler` over random event sequences, for every policy and
//! every routing strategy, under both queueing modes: no request lost or duplicated
//! (every submitted request ends exactly once), no instance above its limit, nothing new
//! on a drained or unready instance, work conservation (after a poll, an instance with
//! room leaves no unconstrained request queued), and the order each policy promises
//! (among unconstrained requests, none placed ahead of one with an earlier key).

use super::*;
use crate::instance::{InstanceSpec, Layout, Price};
use crate::outcome::{AttemptId, Outcome, has_slo};
use crate::pool::EngineLoad;
use crate::request::{ParallelismKind, Priority, RequestId};
use crate::route::{AffinityConfig, BalanceConfig, LocalityConfig, RoutingConfig};
use crate::schedule::{PolicyConfig, SloAwareConfig};
use crate::time::Time;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        class: u8,
        deadline_ms: Option<u16>,
        ttft_ms: Option<u16>,
        hint: Option<u8>,
        session: u8,
    },
    Poll,
    Complete(u16),
    Fail(u16),
    Retry(u16),
    FirstToken(u16),
    Cancel(u16),
    Advance(u16),
    Load(u8, u8, bool),
    Ready(u8, bool),
    Drain(u8, bool),
    Add(u8),
    Remove(u8),
    Policy(u8),
    Routing(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, proptest::option::of(50u16..5000), proptest::option::of(50u16..3000),
              proptest::option::weighted(0.2, 0u8..5), 0u8..8)
            .prop_map(|(class, deadline_ms, ttft_ms, hint, session)| Op::Submit { class, deadline_ms, ttft_ms, hint, session }),
        5 => Just(Op::Poll),
        3 => any::<u16>().prop_map(Op::Complete),
        1 => any::<u16>().prop_map(Op::Fail),
        1 => any::<u16>().prop_map(Op::Retry),
        1 => any::<u16>().prop_map(Op::FirstToken),
        1 => any::<u16>().prop_map(Op::Cancel),
        2 => (1u16..2000).prop_map(Op::Advance),
        1 => (0u8..8, 0u8..4, any::<bool>()).prop_map(|(i, w, full)| Op::Load(i, w, full)),
        1 => (0u8..8, any::<bool>()).prop_map(|(i, b)| Op::Ready(i, b)),
        1 => (0u8..8, any::<bool>()).prop_map(|(i, b)| Op::Drain(i, b)),
        1 => (1u8..5).prop_map(Op::Add),
        1 => (0u8..8).prop_map(Op::Remove),
        1 => (0u8..6).prop_map(Op::Policy),
        1 => (0u8..8).prop_map(Op::Routing),
    ]
}

fn policy(i: u8) -> PolicyConfig {
    match i % 6 {
        0 => PolicyConfig::Fifo(Default::default()),
        1 => PolicyConfig::Priority(Default::default()),
        2 => PolicyConfig::SloAware(SloAwareConfig {
            best_effort: true,
            ..Default::default()
        }),
        3 => PolicyConfig::SloAware(Default::default()),
        4 => PolicyConfig::CostOptimized(Default::default()),
        _ => PolicyConfig::Adaptive(Default::default()),
    }
}

fn routing(i: u8) -> RoutingConfig {
    let lb =
        |algorithm| RoutingConfig::LoadBalanced(crate::route::LoadBalancedConfig { algorithm });
    match i % 9 {
        0 => lb(BalanceConfig::WeightedRoundRobin(Default::default())),
        1 => lb(BalanceConfig::LeastConnections(Default::default())),
        2 => lb(BalanceConfig::LeastResponseTime(Default::default())),
        3 => lb(BalanceConfig::PowerOfTwo(Default::default())),
        4 => RoutingConfig::RoundRobin(Default::default()),
        5 => RoutingConfig::Random(Default::default()),
        6 => RoutingConfig::Affinity(AffinityConfig::default()),
        7 => RoutingConfig::Prefix(crate::route::PrefixConfig {
            max_blocks: 32,
            ..Default::default()
        }),
        _ => RoutingConfig::Locality(LocalityConfig {
            capacity: 16,
            load_factor: 1.25,
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Queued,
    Inflight,
    Done,
}

struct Model {
    s: Scheduler<u64>,
    fx: Effects<u64>,
    status: HashMap<u64, St>,
    metas: HashMap<u64, RequestMeta>,
    enqueued: HashMap<u64, Time>,
    retried: HashSet<u64>,
    attempt: HashMap<u64, (AttemptId, InstanceId)>,
    ids: Vec<u64>,
    instances: Vec<InstanceId>,
    next_id: u64,
    next_inst: u32,
    now: Time,
}

impl Model {
    fn new(limits: &[u32], max_queue: usize, p: u8, r: u8, engine_queues: bool) -> Self {
        let mut s = Scheduler::new(SchedulerConfig {
            max_queue,
            queue_timeout: Some(Duration::from_secs(20)),
            policy: policy(p),
            routing: routing(r),
            seed: 42,
            queue_at: if engine_queues {
                QueueAt::Engine
            } else {
                QueueAt::Gateway
            },
            ..SchedulerConfig::default()
        });
        let mut instances = Vec::new();
        for (i, &l) in limits.iter().enumerate() {
            let mut spec = InstanceSpec::new(format!("i{i}"), "u", "m", l);
            spec.layout = Layout {
                tp: 1 + (i as u32 % 2),
                ..Layout::SINGLE
            };
            spec.price = Some(Price::PerGpuHour(1.0 + i as f64));
            s.add_instance(spec.clone()).unwrap();
            s.set_ready(&spec.id, true);
            instances.push(spec.id);
        }
        Model {
            s,
            fx: Effects::default(),
            status: HashMap::new(),
            metas: HashMap::new(),
            enqueued: HashMap::new(),
            retried: HashSet::new(),
            attempt: HashMap::new(),
            ids: Vec::new(),
            instances,
            next_id: 0,
            next_inst: limits.len() as u32,
            now: Time::ZERO,
        }
    }

    fn pick(&self, i: u16, want: St) -> Option<u64> {
        let c: Vec<_> = self
            .ids
            .iter()
            .filter(|id| self.status[id] == want)
            .collect();
        (!c.is_empty()).then(|| *c[i as usize % c.len()])
    }

    fn inst(&self, i: u8) -> Option<InstanceId> {
        (!self.instances.is_empty())
            .then(|| self.instances[i as usize % self.instances.len()].clone())
    }

    /// The order key the active policy promises for an unconstrained request.
    /// The order key of `id` under the policy `active` (the one that dispatched).
    fn key(&self, active: &str, id: u64) -> Time {
        let m = &self.metas[&id];
        let enq = self.enqueued[&id];
        let w = &self.s.config.overload.wait;
        let step = Priority::ALL.iter().map(|p| w.get(*p)).max().unwrap();
        let start = enq + step * m.priority.index() as u32;
        match active {
            "fifo" => enq,
            _ => start,
        }
    }

    /// Whether a request may be passed over by design (a hint, an SLO the policy places
    /// by, or, within a class, a deadline the urgency order serves first: the order check
    /// holds between classes for those).
    fn constrained(&self, active: &str, id: u64) -> bool {
        let m = &self.metas[&id];
        m.parallelism_hint.is_some()
            || self.retried.contains(&id)
            || (matches!(active, "slo_aware" | "cost_optimized") && has_slo(m))
    }

    fn poll(&mut self) -> Result<(), TestCaseError> {
        let now = self.now;
        let routable: HashMap<InstanceIx, bool> =
            self.s.instances().map(|i| (i.ix, i.routable())).collect();
        // the policy observes after it dispatched: the one active before the poll placed
        let active = self.s.active_policy();
        self.s.poll(now, &mut self.fx);
        let mut placed = Vec::new();
        for p in self.fx.placements.drain(..) {
            prop_assert_eq!(
                self.status.get(&p.payload),
                Some(&St::Queued),
                "placed twice or unknown"
            );
            prop_assert_eq!(
                routable.get(&p.ix),
                Some(&true),
                "placed on an unroutable instance"
            );
            self.status.insert(p.payload, St::Inflight);
            self.attempt
                .insert(p.payload, (p.attempt, p.instance.clone()));
            placed.push(p.payload);
        }
        for r in self.fx.rejections.drain(..) {
            prop_assert_eq!(
                self.status.get(&r.payload),
                Some(&St::Queued),
                "rejected twice or unknown"
            );
            self.status.insert(r.payload, St::Done);
        }
        // order: no unconstrained request left queued behind an unconstrained one placed
        // with a later key (protected classes may pass the others: with room for them
        // only, they alone are placed)
        let protect = self.s.config.saturation.protect.index();
        let protected = |id: u64| self.metas[&id].priority.index() <= protect;
        let max_placed = |only_unprotected: bool| {
            placed
                .iter()
                .filter(|id| !self.constrained(active, **id))
                .filter(|id| !only_unprotected || !protected(**id))
                .map(|id| (self.key(active, *id), *id))
                .max()
        };
        let (max_all, max_unprotected) = (max_placed(false), max_placed(true));
        let queued: Vec<u64> = self.s.queued().map(|(m, _)| m.id.0).collect();
        for id in &queued {
            let max = if protected(*id) {
                max_all
            } else {
                max_unprotected
            };
            if let Some(max) = max
                && !self.constrained(active, *id)
            {
                prop_assert!(
                    (self.key(active, *id), *id) > max,
                    "order broken: {} left behind {:?}",
                    id,
                    max
                );
            }
        }
        // work conservation: with room somewhere, only constrained requests wait
        if self.s.with_room() > 0 {
            for id in &queued {
                prop_assert!(
                    self.constrained(active, *id),
                    "request {} waits while an instance has room",
                    id
                );
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::Submit {
                class,
                deadline_ms,
                ttft_ms,
                hint,
                session,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                let mut m = RequestMeta::new(RequestId(id), "m", 200, 50, now);
                m.priority = Priority::ALL[class as usize];
                m.deadline = deadline_ms.map(|d| Duration::from_millis(d.into()));
                m.ttft_target = ttft_ms.map(|d| Duration::from_millis(d.into()));
                m.parallelism_hint = hint.map(|h| {
                    [
                        ParallelismKind::Tp,
                        ParallelismKind::Pp,
                        ParallelismKind::Dp,
                        ParallelismKind::Ep,
                        ParallelismKind::Hybrid,
                    ][h as usize]
                });
                m.session = Some(format!("s{session}"));
                m.prefix_hash = Some(u64::from(session));
                m.prefix_blocks = (0..4).map(|b| u64::from(session) * 16 + b).collect();
                self.ids.push(id);
                self.enqueued.insert(id, now);
                self.metas.insert(id, m.clone());
                self.status.insert(id, St::Queued);
                self.s.submit(m, id, now);
            }
            Op::Poll => self.poll()?,
            Op::Complete(i) | Op::Fail(i) => {
                if let Some(id) = self.pick(i, St::Inflight) {
                    let outcome = if matches!(op, Op::Complete(_)) {
                        Outcome::Success {
                            prompt_tokens: 200,
                            completion_tokens: 50,
                            cached_tokens: None,
                            first_token: Some(Duration::from_millis(30)),
                            latency: Duration::from_millis(300),
                        }
                    } else {
                        Outcome::Failed { retrying: false }
                    };
                    let (a, _) = self.attempt[&id].clone();
                    prop_assert!(self.s.complete(a, outcome, now).is_some());
                    self.status.insert(id, St::Done);
                }
            }
            Op::Retry(i) => {
                if let Some(id) = self.pick(i, St::Inflight) {
                    let (a, on) = self.attempt[&id].clone();
                    let failed = Outcome::Failed { retrying: true };
                    prop_assert!(self.s.complete(a, failed, now).is_some());
                    let m = self.metas[&id].clone();
                    self.s.retry(a, m, id, std::slice::from_ref(&on), now);
                    self.retried.insert(id);
                    self.status.insert(id, St::Queued);
                }
            }
            Op::FirstToken(i) => {
                if let Some(id) = self.pick(i, St::Inflight) {
                    let (a, _) = self.attempt[&id].clone();
                    self.s.first_token(a, now);
                }
            }
            Op::Cancel(i) => {
                if let Some(id) = self.pick(i, St::Queued) {
                    if self.s.cancel(RequestId(id), now) == Some(id) {
                        self.status.insert(id, St::Done);
                    }
                } else if let Some(id) = self.pick(i, St::Inflight) {
                    let (a, _) = self.attempt[&id].clone();
                    prop_assert!(self.s.complete(a, Outcome::Cancelled, now).is_some());
                    self.status.insert(id, St::Done);
                }
            }
            Op::Advance(ms) => self.now = now + Duration::from_millis(ms.into()),
            Op::Load(i, waiting, full) => {
                if let Some(id) = self.inst(i) {
                    let load = EngineLoad {
                        running: Some(1.0),
                        waiting: Some(f64::from(waiting)),
                        kv_usage: Some(if full { 0.99 } else { 0.2 }),
                    };
                    self.s.update_load(&id, load, now);
                }
            }
            Op::Ready(i, b) => {
                if let Some(id) = self.inst(i) {
                    self.s.set_ready(&id, b);
                }
            }
            Op::Drain(i, b) => {
                if let Some(id) = self.inst(i) {
                    self.s.set_draining(&id, b);
                }
            }
            Op::Add(l) => {
                let id = InstanceId::new(format!("i{}", self.next_inst));
                self.next_inst += 1;
                self.s
                    .add_instance(InstanceSpec::new(id.as_str(), "u", "m", l.into()))
                    .unwrap();
                self.s.set_ready(&id, true);
                self.instances.push(id);
            }
            Op::Remove(i) => {
                if self.instances.len() > 1
                    && let Some(id) = self.inst(i)
                {
                    prop_assert!(self.s.remove_instance(&id));
                    self.instances.retain(|x| *x != id);
                    for (rid, (_, on)) in &self.attempt {
                        if *on == id && self.status[rid] == St::Inflight {
                            self.status.insert(*rid, St::Done);
                        }
                    }
                }
            }
            Op::Policy(p) => self.s.set_policy(policy(p)),
            Op::Routing(r) => self.s.set_routing(routing(r)),
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let queued = self.status.values().filter(|s| **s == St::Queued).count();
        let inflight = self.status.values().filter(|s| **s == St::Inflight).count();
        // rejections not yet handed out are out of the queue, still "queued" here
        let pending: Vec<u64> = self.s.pending.iter().map(|r| r.payload).collect();
        prop_assert_eq!(self.s.queue_len() + pending.len(), queued, "queued count");
        prop_assert_eq!(self.s.inflight_len(), inflight, "in-flight count");
        let mut seen = HashSet::new();
        for (m, _) in self.s.queued() {
            prop_assert!(seen.insert(m.id), "duplicated in the queue");
            prop_assert_eq!(self.status.get(&m.id.0), Some(&St::Queued));
        }
        for p in pending {
            prop_assert!(seen.insert(RequestId(p)), "pending and queued at once");
        }
        let mut with_room = 0;
        for inst in self.s.instances() {
            if self.s.config.queue_at == QueueAt::Gateway {
                prop_assert!(inst.inflight <= inst.limit(), "over the limit");
            }
            with_room += usize::from(inst.has_room());
            prop_assert!(
                !inst.has_room() || inst.routable(),
                "room on an unroutable one"
            );
        }
        prop_assert_eq!(self.s.with_room(), with_room, "room total drifted");
        let per_class: usize = self.s.queue_len_by_priority().iter().sum();
        prop_assert_eq!(per_class, self.s.queue_len());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_policy_conserves_requests_and_holds_limits_order_and_work_conservation(
        limits in proptest::collection::vec(1u32..4, 1..5),
        max_queue in 1usize..12,
        p in 0u8..6,
        r in 0u8..8,
        engine_queues in proptest::bool::weighted(0.2),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut m = Model::new(&limits, max_queue, p, r, engine_queues);
        for op in ops {
            m.apply(op)?;
        }
        // drain: every admitted request ends exactly once
        for id in m.instances.clone() {
            m.s.set_ready(&id, true);
            m.s.set_draining(&id, false);
        }
        m.apply(Op::Poll)?;
        m.apply(Op::Advance(60_000))?;
        m.apply(Op::Poll)?;
        prop_assert_eq!(m.s.queue_len(), 0);
        prop_assert!(m.status.values().all(|s| *s != St::Queued), "a request was lost");
    }
}
