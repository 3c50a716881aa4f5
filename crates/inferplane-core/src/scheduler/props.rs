//! Property tests of the `Scheduler` over random event sequences, every policy and every
//! routing strategy: no request lost or duplicated, no instance above `max_inflight`,
//! nothing new on a drained or unready instance, and the policy's order (priority with
//! aging, earliest deadline, FIFO) held by every dispatch.

use super::*;
use crate::instance::{InstanceSpec, Layout, Price};
use crate::request::{ParallelismKind, Priority, RequestId};
use crate::route::{AffinityConfig, BalanceConfig, LocalityConfig, RoutingConfig};
use crate::schedule::{PolicyConfig, PriorityConfig, SloAwareConfig};
use crate::time::Time;
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        class: u8,
        deadline_ms: Option<u16>,
        hint: Option<u8>,
        session: u8,
    },
    Dispatch,
    Complete(u16),
    Fail(u16),
    Requeue(u16),
    Cancel(u16),
    Expire,
    Advance(u16),
    Ready(u8, bool),
    Drain(u8, bool),
    Add(u8),
    Remove(u8),
    Policy(u8),
    Routing(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, proptest::option::of(50u16..5000), proptest::option::weighted(0.2, 0u8..5), 0u8..8)
            .prop_map(|(class, deadline_ms, hint, session)| Op::Submit { class, deadline_ms, hint, session }),
        4 => Just(Op::Dispatch),
        3 => any::<u16>().prop_map(Op::Complete),
        1 => any::<u16>().prop_map(Op::Fail),
        1 => any::<u16>().prop_map(Op::Requeue),
        1 => any::<u16>().prop_map(Op::Cancel),
        1 => Just(Op::Expire),
        2 => (1u16..2000).prop_map(Op::Advance),
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
        1 => PolicyConfig::Priority(PriorityConfig {
            aging_step: std::time::Duration::from_millis(700),
            shed: true,
        }),
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
    match i % 8 {
        0 => lb(BalanceConfig::WeightedRoundRobin(Default::default())),
        1 => lb(BalanceConfig::LeastConnections(Default::default())),
        2 => lb(BalanceConfig::LeastResponseTime(Default::default())),
        3 => lb(BalanceConfig::PowerOfTwo(Default::default())),
        4 => RoutingConfig::RoundRobin(Default::default()),
        5 => RoutingConfig::Random(Default::default()),
        6 => RoutingConfig::Affinity(AffinityConfig::default()),
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

/// The order key the policy promises, or `None` when it promises none (adaptive, cost).
fn order_key(p: &PolicyConfig, meta: &RequestMeta, enqueued: Time) -> Option<Time> {
    match p {
        PolicyConfig::Fifo(_) => Some(enqueued),
        PolicyConfig::Priority(c) => {
            Some(enqueued + c.aging_step.saturating_mul(meta.priority.index() as u32))
        }
        PolicyConfig::SloAware(c) => Some(
            meta.deadline_at()
                .or(meta.ttft_deadline_at())
                .unwrap_or(enqueued + c.default_deadline),
        ),
        _ => None,
    }
}

struct Model {
    s: Scheduler<u64>,
    status: HashMap<u64, St>,
    seq_of: HashMap<u64, u64>,
    enqueued: HashMap<u64, Time>,
    requeued: std::collections::HashSet<u64>,
    placed_on: HashMap<u64, InstanceId>,
    ids: Vec<u64>,
    instances: Vec<InstanceId>,
    next_id: u64,
    next_inst: u32,
    now: Time,
}

impl Model {
    fn new(limits: &[u32], max_queue: usize, p: u8, r: u8) -> Self {
        let mut s = Scheduler::new(SchedulerConfig {
            max_queue,
            queue_timeout: Some(std::time::Duration::from_secs(20)),
            policy: policy(p),
            routing: routing(r),
            seed: 42,
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
            status: HashMap::new(),
            seq_of: HashMap::new(),
            enqueued: HashMap::new(),
            requeued: Default::default(),
            placed_on: HashMap::new(),
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

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::Submit {
                class,
                deadline_ms,
                hint,
                session,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                let mut m = RequestMeta::new(RequestId(id), "m", 200, 50, now);
                m.priority = Priority::ALL[class as usize];
                m.deadline = deadline_ms.map(|d| std::time::Duration::from_millis(d.into()));
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
                self.ids.push(id);
                self.seq_of.insert(id, id);
                self.enqueued.insert(id, now);
                let ok = self.s.submit(m, id, now).is_ok();
                self.status
                    .insert(id, if ok { St::Queued } else { St::Done });
            }
            Op::Dispatch => {
                let routable: HashMap<InstanceIx, bool> = self
                    .s
                    .instances
                    .iter()
                    .enumerate()
                    .filter_map(|(ix, i)| i.as_ref().map(|i| (ix, i.routable())))
                    .collect();
                let policy = self.s.config.policy.clone();
                let mut out = Vec::new();
                self.s.dispatch(now, &mut out);
                let mut max_key: Option<(Time, u64)> = None;
                for p in &out {
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
                    self.placed_on.insert(p.payload, p.instance.clone());
                    if !self.requeued.contains(&p.payload)
                        && let Some(k) = order_key(&policy, &p.meta, self.enqueued[&p.payload])
                    {
                        let k = (k, self.seq_of[&p.payload]);
                        max_key = max_key.max(Some(k));
                    }
                }
                if let Some(max) = max_key {
                    for (m, enq) in self.s.queued() {
                        if self.requeued.contains(&m.id.0) {
                            continue;
                        }
                        if let Some(k) = order_key(&policy, m, enq) {
                            prop_assert!(
                                (k, self.seq_of[&m.id.0]) > max,
                                "order broken: {:?} left behind",
                                m.id
                            );
                        }
                    }
                }
            }
            Op::Complete(i) | Op::Fail(i) => {
                if let Some(id) = self.pick(i, St::Inflight) {
                    let outcome = if matches!(op, Op::Complete(_)) {
                        Outcome::Success {
                            prompt_tokens: 200,
                            completion_tokens: 50,
                            ttft: Some(std::time::Duration::from_millis(30)),
                        }
                    } else {
                        Outcome::Failure
                    };
                    prop_assert!(self.s.complete(RequestId(id), outcome, now));
                    self.status.insert(id, St::Done);
                }
            }
            Op::Requeue(i) => {
                if let Some(id) = self.pick(i, St::Inflight) {
                    prop_assert!(self.s.complete(RequestId(id), Outcome::Failure, now));
                    let m = RequestMeta::new(RequestId(id), "m", 200, 50, now);
                    self.s.requeue(m, id, &self.placed_on[&id], now);
                    self.requeued.insert(id);
                    self.status.insert(id, St::Queued);
                }
            }
            Op::Cancel(i) => {
                if let Some(id) = self.pick(i, St::Queued) {
                    prop_assert_eq!(self.s.cancel(RequestId(id), now), Some(id));
                    self.status.insert(id, St::Done);
                } else if let Some(id) = self.pick(i, St::Inflight) {
                    prop_assert_eq!(self.s.cancel(RequestId(id), now), None);
                    self.status.insert(id, St::Done);
                }
            }
            Op::Expire => {
                let mut out = Vec::new();
                self.s.expire(now, &mut out);
                for r in out {
                    prop_assert_eq!(
                        self.status.get(&r.payload),
                        Some(&St::Queued),
                        "rejected twice"
                    );
                    self.status.insert(r.payload, St::Done);
                }
            }
            Op::Advance(ms) => self.now = now + std::time::Duration::from_millis(ms.into()),
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
                    for (rid, on) in &self.placed_on {
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
        // pending rejects are out of the queue but not yet handed out
        let pending: Vec<u64> = self.s.pending.iter().map(|r| r.payload).collect();
        prop_assert_eq!(self.s.queue_len() + pending.len(), queued, "queued count");
        prop_assert_eq!(self.s.inflight_len(), inflight, "in-flight count");
        let mut seen = std::collections::HashSet::new();
        for (m, _) in self.s.queued() {
            prop_assert!(seen.insert(m.id), "duplicated in the queue");
            prop_assert_eq!(self.status.get(&m.id.0), Some(&St::Queued));
        }
        for p in pending {
            prop_assert!(seen.insert(RequestId(p)), "pending and queued at once");
        }
        let mut free = 0u64;
        for inst in self.s.instances() {
            prop_assert!(inst.inflight <= inst.spec.max_inflight, "over max_inflight");
            if inst.routable() {
                free += u64::from(inst.spec.max_inflight - inst.inflight);
            }
        }
        prop_assert_eq!(self.s.free_slots(), free, "free-slot total drifted");
        let per_class: usize = self.s.queue_len_by_priority().iter().sum();
        prop_assert_eq!(per_class, self.s.queue_len());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_request_is_lost_or_duplicated_and_limits_and_order_hold(
        limits in proptest::collection::vec(1u32..4, 1..5),
        max_queue in 1usize..12,
        p in 0u8..6,
        r in 0u8..8,
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut m = Model::new(&limits, max_queue, p, r);
        for op in ops {
            m.apply(op)?;
        }
        // drain: every admitted request ends exactly once
        m.apply(Op::Advance(60_000))?;
        m.apply(Op::Expire)?;
        prop_assert_eq!(m.s.queue_len(), 0);
    }
}
