//! Unit tests of the `Scheduler` state machine: limits and saturation, work-conserving
//! order, context limits, overload by class, expiry, cancellation, retries, instance
//! changes, run-time switching and the metrics it keeps.

use super::*;
use crate::instance::{InstanceSpec, Layout, Price};
use crate::outcome::Outcome;
use crate::pool::EngineLoad;
use crate::predict::Rates;
use crate::reject::RejectKind;
use crate::request::{ParallelismKind, Priority, RequestId};
use crate::route::{BalanceConfig, RoutingConfig};
use crate::schedule::{CostOptimizedConfig, PolicyConfig, SloAwareConfig};
use crate::time::Time;

pub(super) struct H {
    pub(super) s: Scheduler<u64>,
    pub(super) fx: Effects<u64>,
    pub(super) placed: Vec<Placement<u64>>,
}

pub(super) fn meta(id: u64, now: Time) -> RequestMeta {
    RequestMeta::new(RequestId(id), "m", 10, 10, now)
}

pub(super) fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

impl H {
    pub(super) fn new(limits: &[u32], policy: PolicyConfig) -> Self {
        Self::with(
            limits,
            SchedulerConfig {
                policy,
                ..SchedulerConfig::default()
            },
        )
    }

    pub(super) fn with(limits: &[u32], config: SchedulerConfig) -> Self {
        let mut s = Scheduler::new(config);
        for (i, l) in limits.iter().enumerate() {
            let id = InstanceId::new(format!("i{i}"));
            s.add_instance(InstanceSpec::new(id.as_str(), "http://x", "m", *l))
                .unwrap();
            s.set_ready(&id, true);
        }
        H {
            s,
            fx: Effects::default(),
            placed: Vec::new(),
        }
    }

    pub(super) fn fifo(limits: &[u32]) -> Self {
        Self::new(limits, PolicyConfig::Fifo(Default::default()))
    }

    /// Polls; returns the payloads placed and keeps the placements.
    pub(super) fn poll(&mut self, now: Time) -> Vec<u64> {
        self.s.poll(now, &mut self.fx);
        let ids: Vec<u64> = self.fx.placements.iter().map(|p| p.payload).collect();
        self.placed.append(&mut self.fx.placements);
        ids
    }

    /// The rejections handed out since the last call, as (payload, kind).
    pub(super) fn rejected(&mut self) -> Vec<(u64, RejectKind)> {
        self.fx
            .rejections
            .drain(..)
            .map(|r| (r.payload, r.reason.kind()))
            .collect()
    }

    pub(super) fn submit(&mut self, m: RequestMeta, now: Time) {
        let id = m.id.0;
        self.s.submit(m, id, now);
    }

    pub(super) fn attempt_of(&self, payload: u64) -> AttemptId {
        self.placed
            .iter()
            .rev()
            .find(|p| p.payload == payload)
            .map(|p| p.attempt)
            .unwrap()
    }

    pub(super) fn instance_of(&self, payload: u64) -> InstanceId {
        self.placed
            .iter()
            .rev()
            .find(|p| p.payload == payload)
            .map(|p| p.instance.clone())
            .unwrap()
    }

    pub(super) fn finish(
        &mut self,
        payload: u64,
        outcome: Outcome,
        now: Time,
    ) -> Option<Completion> {
        let a = self.attempt_of(payload);
        self.s.complete(a, outcome, now)
    }
}

pub(super) fn success(first_ms: u64, latency_ms: u64) -> Outcome {
    Outcome::Success {
        prompt_tokens: 10,
        completion_tokens: 10,
        cached_tokens: None,
        first_token: Some(std::time::Duration::from_millis(first_ms)),
        latency: std::time::Duration::from_millis(latency_ms),
    }
}

use crate::outcome::AttemptId;

#[test]
fn placements_never_exceed_the_limit_and_the_rest_wait_in_order() {
    let mut h = H::fifo(&[2, 1]);
    for i in 0..5 {
        h.submit(meta(i, Time::ZERO), Time::ZERO);
    }
    assert_eq!(h.poll(Time::ZERO), [0, 1, 2]);
    assert_eq!(h.s.queue_len(), 2);
    assert!(h.s.instances().all(|i| i.inflight <= i.limit()));
    h.finish(1, Outcome::Failed { retrying: false }, Time::ZERO);
    assert_eq!(
        h.poll(Time::ZERO),
        [3],
        "FIFO: the oldest waiting goes next"
    );
}

#[test]
fn at_low_load_a_request_goes_at_once_and_the_engine_batch_limit_applies_without_a_cap() {
    let mut h = H::fifo(&[]);
    let mut spec = InstanceSpec::new("e", "u", "m", 1);
    spec.max_inflight = None;
    let id = spec.id.clone();
    h.s.add_instance(spec).unwrap();
    h.s.set_ready(&id, true);
    h.s.set_engine_info(
        &id,
        crate::instance::EngineInfo {
            max_batch: Some(2),
            ..Default::default()
        },
    );
    for i in 0..3 {
        h.submit(meta(i, Time::ZERO), Time::ZERO);
    }
    assert_eq!(h.poll(Time::ZERO), [0, 1], "llama.cpp with 2 slots takes 2");
    assert_eq!(h.s.instance(&id).unwrap().limit(), 2);
}

#[test]
fn an_engine_reporting_waiting_requests_in_a_full_cache_is_saturated_until_enough_finish() {
    let mut h = H::fifo(&[100]);
    let id = InstanceId::new("i0");
    for i in 0..3 {
        h.submit(meta(i, Time::ZERO), Time::ZERO);
    }
    assert_eq!(h.poll(Time::ZERO), [0, 1, 2]);
    h.s.update_load(
        &id,
        EngineLoad {
            running: Some(2.0),
            waiting: Some(1.0),
            kv_usage: Some(0.97),
        },
        ms(10),
    );
    h.submit(meta(3, ms(10)), ms(10));
    assert!(h.poll(ms(10)).is_empty(), "saturated: the gateway holds it");
    assert_eq!(h.s.with_room(), 0);
    h.finish(0, success(5, 20), ms(20));
    assert!(
        h.poll(ms(20)).is_empty(),
        "the engine's waiting one moved in"
    );
    h.finish(1, success(5, 25), ms(25));
    assert_eq!(h.poll(ms(25)), [3], "now there is a free place");
    // a fresh reading with nothing waiting opens it up at once
    h.s.update_load(&id, EngineLoad::default(), ms(30));
    assert!(h.s.with_room() > 0);
}

#[test]
fn a_plain_router_never_holds_a_request() {
    let mut h = H::with(
        &[1, 1],
        SchedulerConfig {
            queue_at: QueueAt::Engine,
            policy: PolicyConfig::Fifo(Default::default()),
            routing: RoutingConfig::RoundRobin(Default::default()),
            ..SchedulerConfig::default()
        },
    );
    for i in 0..6 {
        h.submit(meta(i, Time::ZERO), Time::ZERO);
    }
    assert_eq!(h.poll(Time::ZERO), [0, 1, 2, 3, 4, 5]);
    let on_i0 = h
        .placed
        .iter()
        .filter(|p| p.instance.as_str() == "i0")
        .count();
    assert_eq!(on_i0, 3, "round robin, the engines queue");
}

#[test]
fn unready_and_draining_instances_get_nothing() {
    let mut h = H::fifo(&[4, 4]);
    h.s.set_ready(&InstanceId::new("i0"), false);
    h.s.set_draining(&InstanceId::new("i1"), true);
    h.submit(meta(1, Time::ZERO), Time::ZERO);
    assert!(h.poll(Time::ZERO).is_empty());
    h.s.set_ready(&InstanceId::new("i0"), true);
    assert_eq!(h.poll(Time::ZERO), [1]);
    assert_eq!(h.placed[0].instance.as_str(), "i0");
}

#[test]
fn queue_timeout_and_deadlines_expire_waiting_requests_and_a_full_queue_rejects() {
    let mut h = H::with(
        &[],
        SchedulerConfig {
            max_queue: 2,
            queue_timeout: Some(std::time::Duration::from_secs(5)),
            policy: PolicyConfig::Fifo(Default::default()),
            ..SchedulerConfig::default()
        },
    );
    h.s.add_instance(InstanceSpec::new("a", "u", "m", 1))
        .unwrap(); // never ready
    let mut m = meta(1, Time::ZERO);
    m.deadline = Some(std::time::Duration::from_secs(1));
    h.submit(m, Time::ZERO);
    h.submit(meta(2, Time::ZERO), Time::ZERO);
    h.submit(meta(3, Time::ZERO), Time::ZERO);
    h.poll(Time::ZERO);
    assert_eq!(h.rejected(), [(3, RejectKind::QueueFull)]);
    assert_eq!(h.fx.wake_at, Some(ms(1000)));
    h.poll(ms(1000));
    assert_eq!(h.rejected(), [(1, RejectKind::DeadlineMissed)]);
    h.poll(ms(5000));
    assert_eq!(h.rejected(), [(2, RejectKind::QueueTimeout)]);
    assert_eq!(h.s.queue_len(), 0);
    assert_eq!(h.fx.wake_at, None);
}

#[test]
fn cancel_removes_queued_requests_and_a_cancelled_attempt_frees_its_place() {
    let mut h = H::fifo(&[1]);
    h.submit(meta(1, Time::ZERO), Time::ZERO);
    h.submit(meta(2, Time::ZERO), Time::ZERO);
    h.poll(Time::ZERO);
    assert_eq!(h.s.cancel(RequestId(2), Time::ZERO), Some(2));
    assert_eq!(h.s.cancel(RequestId(1), Time::ZERO), None, "in flight");
    let c = h.finish(1, Outcome::Cancelled, Time::ZERO).unwrap();
    assert_eq!(c.slo_met, None);
    assert_eq!(h.s.inflight_len(), 0);
    assert_eq!(h.s.instances().next().unwrap().inflight, 0);
    assert_eq!(h.s.stats().cancelled, 2);
}

#[test]
fn a_retry_goes_first_avoids_the_failed_instance_and_is_the_next_attempt() {
    let mut h = H::fifo(&[1, 1]);
    let mut m = meta(1, Time::ZERO);
    m.ttft_target = Some(std::time::Duration::from_secs(1));
    h.submit(m.clone(), Time::ZERO);
    h.poll(Time::ZERO);
    let first = h.attempt_of(1);
    let failed_on = h.instance_of(1);
    let c = h
        .finish(1, Outcome::Failed { retrying: true }, ms(5))
        .unwrap();
    assert_eq!(c.slo_met, None, "a retried attempt is not judged");
    assert_eq!(h.s.stats().slo.missed, 0, "and is no SLO miss");
    h.submit(meta(2, ms(5)), ms(5));
    h.s.retry(first, m, 1, &failed_on, ms(5));
    assert_eq!(h.poll(ms(5)), [1, 2]);
    assert_ne!(h.placed[1].instance, failed_on);
    assert_eq!(h.placed[1].attempt.attempt, 2);
    let c = h.finish(1, success(100, 200), ms(205)).unwrap();
    assert_eq!(c.slo_met, Some(true));
    assert_eq!(h.s.stats().slo.met, 1);
    assert!(
        h.s.complete(first, success(1, 1), ms(300)).is_none(),
        "the old attempt is gone"
    );
}

#[test]
fn an_empty_pool_rejects_at_once_and_a_reused_slot_is_never_the_old_instance() {
    let mut h = H::fifo(&[]);
    h.submit(meta(1, Time::ZERO), Time::ZERO);
    h.poll(Time::ZERO);
    assert_eq!(h.rejected(), [(1, RejectKind::NoInstances)]);
    let mut h = H::fifo(&[1]);
    h.submit(meta(1, Time::ZERO), Time::ZERO);
    h.poll(Time::ZERO);
    let old = h.placed[0].ix;
    assert!(h.s.remove_instance(&InstanceId::new("i0")));
    let new =
        h.s.add_instance(InstanceSpec::new("i9", "u", "m", 1))
            .unwrap();
    assert_eq!(new.slot(), old.slot());
    assert_ne!(new, old, "the next generation");
    assert!(h.finish(1, success(1, 2), Time::ZERO).is_none());
    assert_eq!(
        h.s.instances().next().unwrap().inflight,
        0,
        "not charged to i9"
    );
    assert_eq!(
        h.s.add_instance(InstanceSpec::new("i9", "u", "m", 1)),
        Err(DuplicateInstance(InstanceId::new("i9")))
    );
}

#[test]
fn a_request_that_cannot_be_placed_never_blocks_the_ones_behind_it() {
    // a context limit is hard: the long one waits for the big instance while the short
    // ones go past it
    let mut h2 = H::fifo(&[]);
    for (id, len) in [("big", 100_000), ("small", 8192)] {
        let spec = InstanceSpec::new(id, "u", "m", 1);
        let id = spec.id.clone();
        h2.s.add_instance(spec).unwrap();
        h2.s.set_engine_info(&id, context(len));
        h2.s.set_ready(&id, true);
    }
    let mut long = meta(0, Time::ZERO);
    long.prompt_tokens = 60_000;
    h2.submit(long.clone(), Time::ZERO);
    h2.poll(Time::ZERO);
    assert_eq!(h2.placed[0].instance.as_str(), "big");
    let mut long2 = long;
    long2.id = RequestId(1);
    h2.submit(long2, Time::ZERO);
    h2.submit(meta(2, Time::ZERO), Time::ZERO);
    h2.submit(meta(3, Time::ZERO), Time::ZERO);
    assert_eq!(h2.poll(Time::ZERO), [2], "2 passes the waiting long one");
    assert_eq!(h2.placed[1].instance.as_str(), "small");
    h2.finish(0, success(1, 2), ms(1));
    assert_eq!(
        h2.poll(ms(1)),
        [1],
        "the long one keeps its place at the head"
    );
}

#[test]
fn a_context_no_instance_has_is_rejected_with_context_length_exceeded() {
    let mut h = H::fifo(&[]);
    for (id, len) in [("a", 8192), ("b", 32_768)] {
        h.s.add_instance(InstanceSpec::new(id, "u", "m", 4))
            .unwrap();
        h.s.set_engine_info(&InstanceId::new(id), context(len));
        h.s.set_ready(&InstanceId::new(id), true);
    }
    let mut m = meta(1, Time::ZERO);
    m.prompt_tokens = 60_000;
    h.submit(m, Time::ZERO);
    let mut fits = meta(2, Time::ZERO);
    fits.prompt_tokens = 30_000;
    fits.max_tokens_requested = Some(2_000);
    h.submit(fits, Time::ZERO);
    let mut asks_too_much = meta(3, Time::ZERO);
    asks_too_much.prompt_tokens = 30_000;
    asks_too_much.max_tokens_requested = Some(4_000);
    h.submit(asks_too_much, Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [2]);
    assert_eq!(h.placed[0].instance.as_str(), "b", "only b holds 32k");
    assert_eq!(
        h.rejected(),
        [
            (1, RejectKind::ContextLengthExceeded),
            (3, RejectKind::ContextLengthExceeded)
        ]
    );
    // an instance of unknown context might hold it: then it is not refused
    h.s.add_instance(InstanceSpec::new("c", "u", "m", 4))
        .unwrap();
    let mut m = meta(4, Time::ZERO);
    m.prompt_tokens = 60_000;
    h.submit(m, Time::ZERO);
    h.s.set_ready(&InstanceId::new("c"), true);
    assert_eq!(h.poll(Time::ZERO), [4]);
}

fn context(len: u32) -> crate::instance::EngineInfo {
    crate::instance::EngineInfo {
        max_model_len: Some(len),
        ..Default::default()
    }
}

pub(super) fn classed(id: u64, class: Priority, now: Time) -> RequestMeta {
    let mut m = meta(id, now);
    m.priority = class;
    m
}

#[test]
fn priority_serves_by_class_and_ages_relative_to_the_class_wait_targets() {
    let mut h = H::new(&[1], PolicyConfig::Priority(Default::default()));
    h.submit(classed(0, Priority::Normal, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [0]);
    h.submit(classed(1, Priority::Low, Time::ZERO), Time::ZERO);
    h.submit(classed(2, Priority::Normal, Time::ZERO), Time::ZERO);
    h.submit(classed(3, Priority::Critical, Time::ZERO), Time::ZERO);
    assert_eq!(h.s.queue_len_by_priority(), [1, 0, 1, 1]);
    let mut order = Vec::new();
    let mut last = 0;
    for _ in 0..3 {
        h.finish(last, success(1, 2), ms(1));
        let p = h.poll(ms(1));
        last = p[0];
        order.extend(p);
    }
    assert_eq!(order, [3, 2, 1]);
    // aging (with shedding off): a low request (rank 3, step 20 s: 60 s) goes before a
    // critical one arriving 60 s later
    let mut h = H::with(
        &[1],
        SchedulerConfig {
            policy: PolicyConfig::Priority(Default::default()),
            queue_timeout: None,
            overload: OverloadConfig {
                shed: false,
                ..OverloadConfig::default()
            },
            ..SchedulerConfig::default()
        },
    );
    h.submit(classed(0, Priority::Normal, Time::ZERO), Time::ZERO);
    h.poll(Time::ZERO);
    h.submit(classed(1, Priority::Low, Time::ZERO), Time::ZERO);
    let t = Time::from_secs_f64(60.001);
    h.submit(classed(2, Priority::Critical, t), t);
    h.finish(0, success(1, 2), t);
    assert_eq!(h.poll(t), [1], "its virtual start came first");
}

#[test]
fn a_full_queue_sheds_the_newest_lowest_class_request_and_fifo_rejects_the_newcomer() {
    let mut h = H::with(
        &[1],
        SchedulerConfig {
            policy: PolicyConfig::Priority(Default::default()),
            max_queue: 3,
            ..SchedulerConfig::default()
        },
    );
    h.s.set_ready(&InstanceId::new("i0"), false);
    for id in 1..=3 {
        h.submit(classed(id, Priority::Low, Time::ZERO), Time::ZERO);
    }
    h.submit(classed(4, Priority::High, ms(5)), ms(5));
    assert_eq!(h.s.queue_len(), 3);
    h.poll(ms(5));
    assert_eq!(h.rejected(), [(3, RejectKind::Shed)]);
    h.submit(classed(5, Priority::Low, ms(6)), ms(6));
    h.poll(ms(6));
    assert_eq!(h.rejected(), [(5, RejectKind::QueueFull)]);
    assert_eq!(h.s.stats().rejects_of(RejectKind::Shed), 1);
    let mut f = H::with(
        &[1],
        SchedulerConfig {
            policy: PolicyConfig::Fifo(Default::default()),
            max_queue: 1,
            ..SchedulerConfig::default()
        },
    );
    f.s.set_ready(&InstanceId::new("i0"), false);
    f.submit(classed(1, Priority::Low, Time::ZERO), Time::ZERO);
    f.submit(classed(2, Priority::Critical, Time::ZERO), Time::ZERO);
    f.poll(Time::ZERO);
    assert_eq!(f.rejected(), [(2, RejectKind::QueueFull)]);
}

/// A saturated pool of one instance serving 10 requests per second at its batch of 1.
fn overloaded(policy: PolicyConfig) -> H {
    let mut h = H::new(&[1], policy);
    let id = InstanceId::new("i0");
    h.s.set_rates(
        &id,
        Rates {
            prefill_tokens_per_sec: 1e9,
            decode_secs_per_token: 0.01,
            overhead_secs: 0.0,
            samples: 0,
            decode: crate::predict::DecodeModel::default(),
        },
    );
    // one completion at the set speed (10 tokens in 100 ms) calibrates the predictions
    h.submit(meta(999, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [999]);
    h.finish(999, success(1, 100), Time::ZERO);
    h.submit(meta(1000, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [1000]);
    h
}

#[test]
fn nothing_is_shed_on_a_prior_before_the_first_completion() {
    let mut h = H::new(&[1], PolicyConfig::Priority(Default::default()));
    h.submit(meta(1000, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [1000]);
    for i in 0..400u64 {
        h.submit(classed(i, Priority::Low, ms(i)), ms(i));
        h.poll(ms(i));
    }
    assert_eq!(h.rejected(), [], "a guess sheds nothing");
    assert_eq!(h.s.queue_len(), 400);
    // the class target still bounds the wait
    h.poll(Time::from_millis(3_001));
    let expired = h.rejected();
    assert!(!expired.is_empty());
    assert!(expired.iter().all(|(_, k)| *k == RejectKind::QueueTimeout));
}

#[test]
fn under_overload_the_lowest_class_is_shed_at_once_and_critical_is_admitted() {
    let mut h = overloaded(PolicyConfig::Priority(Default::default()));
    // 100 ms per request: the low budget (3 s) holds 30 ahead, the critical one (20 s) 200
    let mut t = Time::ZERO;
    for i in 0..400u64 {
        t = ms(i);
        h.submit(classed(i, Priority::Low, t), t);
        h.poll(t);
    }
    let shed: Vec<_> = h.rejected();
    assert!(shed.iter().all(|(_, k)| *k == RejectKind::Shed));
    assert!(
        (360..=375).contains(&shed.len()),
        "about 30 low requests fit their 3 s budget: {} shed",
        shed.len()
    );
    for i in 0..10u64 {
        h.submit(classed(500 + i, Priority::Critical, t), t);
    }
    h.poll(t);
    let rej = h.rejected();
    assert!(
        rej.iter()
            .all(|(id, k)| *id < 500 && *k == RejectKind::Shed),
        "{rej:?}"
    );
    assert!(
        (8..=15).contains(&rej.len()),
        "each critical one pushed about one low one out: {}",
        rej.len()
    );
    assert_eq!(h.s.queue_len_of(Priority::Critical), 10);
    h.finish(1000, success(1, 100), t);
    assert_eq!(h.poll(t), [500], "critical goes first");
}

#[test]
fn fifo_sheds_nothing_by_class_and_waits_for_its_timeout() {
    let mut h = overloaded(PolicyConfig::Fifo(Default::default()));
    for i in 0..400u64 {
        h.submit(classed(i, Priority::Low, ms(i)), ms(i));
        h.poll(ms(i));
    }
    assert!(h.rejected().is_empty());
    assert_eq!(h.s.queue_len(), 400);
}

#[test]
fn a_switch_of_policy_keeps_every_queued_request_and_reorders_them() {
    let mut h = H::new(&[1], PolicyConfig::Fifo(Default::default()));
    h.submit(meta(0, Time::ZERO), Time::ZERO);
    h.poll(Time::ZERO);
    h.submit(classed(1, Priority::Low, Time::ZERO), Time::ZERO);
    h.submit(classed(2, Priority::Critical, Time::ZERO), Time::ZERO);
    h.s.set_policy(PolicyConfig::Priority(Default::default()));
    assert_eq!(h.s.queue_len(), 2);
    h.finish(0, success(1, 2), ms(1));
    assert_eq!(h.poll(ms(1)), [2]);
    assert_eq!(h.s.policy_name(), "priority");
}

#[test]
fn a_switch_of_routing_or_balancing_takes_effect_on_the_next_pick() {
    let mut h = H::fifo(&[4, 4]);
    h.s.set_routing(RoutingConfig::RoundRobin(Default::default()));
    assert_eq!(h.s.routing_name(), "round_robin");
    assert_eq!(h.s.balancing_name(), None);
    h.s.set_balancing(BalanceConfig::PowerOfTwo(Default::default()));
    assert_eq!(h.s.routing_name(), "load_balanced");
    assert_eq!(h.s.balancing_name(), Some("power_of_two"));
    h.submit(meta(1, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [1]);
}

fn slow_fast(policy: PolicyConfig) -> H {
    let mut h = H::new(&[4, 4], policy);
    for (id, prefill, price) in [("i0", 1_000.0, 1.0), ("i1", 10_000.0, 3.0)] {
        let id = InstanceId::new(id);
        h.s.set_rates(
            &id,
            Rates {
                prefill_tokens_per_sec: prefill,
                decode_secs_per_token: 0.01,
                overhead_secs: 0.0,
                samples: 0,
                decode: crate::predict::DecodeModel::default(),
            },
        );
        let _ = price;
    }
    h
}

#[test]
fn slo_aware_places_where_the_slo_holds_and_rejects_what_it_cannot_serve() {
    let mut h = slow_fast(PolicyConfig::SloAware(SloAwareConfig::default()));
    // 2000-token prompt: 2 s on i0, 0.2 s on i1; 10 tokens of output
    let mut m = meta(1, Time::ZERO);
    m.prompt_tokens = 2000;
    m.ttft_target = Some(std::time::Duration::from_millis(500));
    h.submit(m.clone(), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [1]);
    assert_eq!(h.placed[0].instance.as_str(), "i1");
    let mut impossible = m;
    impossible.id = RequestId(2);
    impossible.ttft_target = Some(std::time::Duration::from_millis(100));
    h.submit(impossible.clone(), Time::ZERO);
    h.poll(Time::ZERO);
    assert_eq!(h.rejected(), [(2, RejectKind::SloInfeasible)]);
    let mut be = slow_fast(PolicyConfig::SloAware(SloAwareConfig {
        best_effort: true,
        ..Default::default()
    }));
    be.submit(impossible, Time::ZERO);
    assert_eq!(be.poll(Time::ZERO), [2]);
    assert_eq!(be.s.stats().best_effort, 1);
}

#[test]
fn cost_optimized_fills_the_cheaper_kind_and_refuses_over_budget_requests() {
    let mut h = H::new(
        &[],
        PolicyConfig::CostOptimized(CostOptimizedConfig::default()),
    );
    for (id, price) in [("a", 1.0), ("b", 1.0), ("c", 5.0)] {
        let mut spec = InstanceSpec::new(id, "u", "m", 2);
        spec.price = Some(Price::PerGpuHour(price));
        h.s.add_instance(spec).unwrap();
        h.s.set_ready(&InstanceId::new(id), true);
    }
    for i in 0..6 {
        h.submit(meta(i, Time::ZERO), Time::ZERO);
    }
    assert_eq!(h.poll(Time::ZERO).len(), 6);
    let on = |name: &str| {
        h.placed
            .iter()
            .filter(|p| p.instance.as_str() == name)
            .count()
    };
    assert_eq!(
        (on("a"), on("b"), on("c")),
        (2, 2, 2),
        "a and b fill, c takes the rest"
    );
    let mut poor = meta(9, Time::ZERO);
    poor.cost_budget = Some(1e-12);
    h.submit(poor, Time::ZERO);
    h.poll(Time::ZERO);
    assert_eq!(h.rejected(), [(9, RejectKind::OverBudget)]);
}

#[test]
fn completions_teach_rates_output_lengths_and_slo_attainment() {
    let mut h = H::fifo(&[4]);
    let mut m = meta(1, Time::ZERO);
    m.prompt_tokens = 1000;
    m.ttft_target = Some(std::time::Duration::from_millis(100));
    m.max_tokens = 500;
    h.submit(m, Time::ZERO);
    h.poll(Time::ZERO);
    let before = h.s.instances().next().unwrap().rates;
    let outcome = Outcome::Success {
        prompt_tokens: 1000,
        completion_tokens: 40,
        cached_tokens: Some(0),
        first_token: Some(std::time::Duration::from_millis(200)),
        latency: std::time::Duration::from_millis(600),
    };
    let c = h.finish(1, outcome, ms(600)).unwrap();
    assert_eq!(c.slo_met, Some(false), "first token after 200 ms > 100 ms");
    assert_eq!(c.concurrency, 1);
    let after = h.s.instances().next().unwrap().rates;
    assert_ne!(before.prefill_tokens_per_sec, after.prefill_tokens_per_sec);
    assert_eq!(after.samples, 1);
    assert_eq!(h.s.stats().slo.attainment(), Some(0.0));
    assert_eq!(h.s.stats().succeeded, 1);
}

#[test]
fn first_tokens_clear_the_prefill_backlog_and_teach_the_prefill_rate() {
    let mut h = H::fifo(&[8]);
    let id = InstanceId::new("i0");
    h.s.set_rates(
        &id,
        Rates {
            prefill_tokens_per_sec: 1000.0,
            decode_secs_per_token: 0.01,
            overhead_secs: 0.0,
            samples: 0,
            decode: crate::predict::DecodeModel::default(),
        },
    );
    for i in 0..3 {
        let mut m = meta(i, Time::ZERO);
        m.prompt_tokens = 1000;
        h.submit(m, Time::ZERO);
    }
    h.poll(Time::ZERO);
    let inst = |h: &H| h.s.instance(&id).unwrap().clone();
    assert_eq!(
        inst(&h).signals.prefill_pending,
        3000,
        "3 prompts of 1000 tokens"
    );
    let before = inst(&h).ttft_secs(100, Time::ZERO);
    // the second (1000 ahead of it) came after 1 s: 2000 tokens/s, faster than the seed
    let a = h.attempt_of(1);
    h.s.first_token(a, ms(1000));
    let i = inst(&h);
    assert_eq!(i.signals.prefill_pending, 2000);
    assert!(i.rates.prefill_tokens_per_sec > 1000.0, "{:?}", i.rates);
    assert!(i.ttft_secs(100, ms(1000)) < before);
    // a whole answer's prompt leaves the backlog when it ends
    h.finish(0, success(0, 1500), ms(1500));
    assert_eq!(inst(&h).signals.prefill_pending, 1000);
}

#[test]
fn a_parallelism_hint_prefers_matching_instances_while_they_have_room() {
    let mut h = H::fifo(&[]);
    for (id, tp) in [("tp1", 1), ("tp4", 4)] {
        let mut spec = InstanceSpec::new(id, "u", "m", 1);
        spec.layout = Layout {
            tp,
            ..Layout::SINGLE
        };
        h.s.add_instance(spec).unwrap();
        h.s.set_ready(&InstanceId::new(id), true);
    }
    let mut m = meta(1, Time::ZERO);
    m.parallelism_hint = Some(ParallelismKind::Tp);
    h.submit(m.clone(), Time::ZERO);
    h.poll(Time::ZERO);
    assert_eq!(h.placed[0].instance.as_str(), "tp4");
    m.id = RequestId(2);
    h.submit(m, Time::ZERO);
    h.poll(Time::ZERO);
    assert_eq!(
        h.placed[1].instance.as_str(),
        "tp1",
        "a preference, not a wait"
    );
}

#[test]
fn the_adaptive_default_shows_its_active_policy_and_why() {
    let mut h = H::new(&[4], PolicyConfig::default());
    assert_eq!(h.s.policy_name(), "adaptive");
    assert_eq!(h.s.active_policy(), "fifo");
    // requests of two classes without SLOs: class order
    for i in 0..8u64 {
        let mut m = meta(i, ms(10 * i));
        if i % 2 == 0 {
            m.priority = crate::request::Priority::High;
        }
        h.submit(m, ms(10 * i));
        h.poll(ms(10 * i));
    }
    assert_eq!(h.s.active_policy(), "priority");
    // requests with SLOs: urgency order and SLO-aware placement and admission
    for i in 8..300u64 {
        let mut m = meta(i, ms(10 * i));
        m.ttft_target = Some(std::time::Duration::from_secs(10));
        h.submit(m, ms(10 * i));
        h.poll(ms(10 * i));
        let placed: Vec<_> = h.placed.drain(..).collect();
        for p in placed {
            h.s.complete(p.attempt, success(10, 20), ms(10 * i));
        }
    }
    assert_eq!(h.s.active_policy(), "slo_aware");
    assert!(h.s.policy_switches() >= 2);
    let (reason, signals) = h.s.policy_reason().unwrap();
    assert_eq!(reason, crate::schedule::adaptive::SwitchReason::Deadlines);
    assert!(signals.deadline_share > 0.5);
    let sw = h.s.policy_switch_history().last().unwrap();
    assert_eq!((sw.from, sw.to), ("priority", "slo_aware"));
}
