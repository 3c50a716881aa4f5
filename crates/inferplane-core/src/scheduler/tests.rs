//! Unit tests of the `Scheduler` state machine: limits and saturation, work-conserving
//! order, context limits, expiry, cancellation, retries and instance changes; the harness
//! the other scheduler tests share. Policies through the scheduler: `policy_tests`.

use super::*;
use crate::instance::InstanceSpec;
use crate::outcome::Outcome;
use crate::pool::EngineLoad;
use crate::reject::RejectKind;
use crate::request::{Priority, RequestId};
use crate::route::RoutingConfig;
use crate::schedule::PolicyConfig;
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
fn unready_and_draining_instances_get_nothing_and_with_none_ready_requests_fail_at_once() {
    let mut h = H::fifo(&[4, 4]);
    h.s.set_ready(&InstanceId::new("i0"), false);
    h.s.set_draining(&InstanceId::new("i1"), true);
    h.submit(meta(1, Time::ZERO), Time::ZERO);
    assert!(h.poll(Time::ZERO).is_empty());
    assert_eq!(h.rejected(), [(1, RejectKind::NoneReady)]);
    h.s.set_ready(&InstanceId::new("i0"), true);
    h.submit(meta(2, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [2]);
    assert_eq!(h.placed[0].instance.as_str(), "i0");
}

#[test]
fn queued_requests_fail_at_once_when_the_last_ready_instance_goes() {
    let mut h = H::fifo(&[1, 1]);
    for id in 1..=4 {
        h.submit(meta(id, Time::ZERO), Time::ZERO);
    }
    assert_eq!(h.poll(Time::ZERO), [1, 2]);
    h.s.set_ready(&InstanceId::new("i0"), false);
    h.poll(ms(1));
    assert!(h.rejected().is_empty(), "i1 still serves");
    assert_eq!(h.s.queue_len(), 2);
    h.s.set_draining(&InstanceId::new("i1"), true);
    h.poll(ms(2));
    assert_eq!(
        h.rejected(),
        [(3, RejectKind::NoneReady), (4, RejectKind::NoneReady)]
    );
    assert_eq!(h.s.queue_len(), 0);
    assert_eq!(h.s.stats().rejects_of(RejectKind::NoneReady), 2);
}

#[test]
fn queue_timeout_and_deadlines_expire_waiting_requests_and_a_full_queue_rejects() {
    let mut h = H::with(
        &[1],
        SchedulerConfig {
            max_queue: 2,
            queue_timeout: Some(std::time::Duration::from_secs(5)),
            policy: PolicyConfig::Fifo(Default::default()),
            ..SchedulerConfig::default()
        },
    );
    h.submit(meta(100, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [100], "it stays busy");
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
    h.s.retry(first, m, 1, std::slice::from_ref(&failed_on), ms(5));
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
fn a_retry_avoids_every_instance_tried_before_while_another_has_room() {
    let mut h = H::fifo(&[4, 4, 4]);
    let m = meta(1, Time::ZERO);
    h.submit(m.clone(), Time::ZERO);
    h.poll(Time::ZERO);
    let first = h.instance_of(1);
    h.finish(1, Outcome::Failed { retrying: true }, ms(1));
    let a1 = h.attempt_of(1);
    h.s.retry(a1, m.clone(), 1, std::slice::from_ref(&first), ms(1));
    h.poll(ms(1));
    let second = h.instance_of(1);
    assert_ne!(second, first);
    h.finish(1, Outcome::Failed { retrying: true }, ms(2));
    let a2 = h.attempt_of(1);
    h.s.retry(a2, m.clone(), 1, &[first.clone(), second.clone()], ms(2));
    h.poll(ms(2));
    let third = h.instance_of(1);
    assert!(
        third != first && third != second,
        "the one not tried: {third:?}"
    );
    // all tried: any instance with room rather than none
    h.finish(1, Outcome::Failed { retrying: true }, ms(3));
    let a3 = h.attempt_of(1);
    h.s.retry(a3, m, 1, &[first, second, third], ms(3));
    assert_eq!(h.poll(ms(3)), [1], "placed anyway");
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
fn a_probed_instance_takes_only_its_probes_until_released() {
    let mut h = H::fifo(&[4]);
    let i0 = InstanceId::new("i0");
    assert!(h.s.set_probe_limit(&i0, Some(1)));
    for id in 1..=3 {
        h.submit(meta(id, Time::ZERO), Time::ZERO);
    }
    assert_eq!(h.poll(Time::ZERO), [1], "one probe in flight");
    assert_eq!(h.s.queue_len(), 2);
    assert!(h.s.set_probe_limit(&i0, None));
    assert_eq!(h.poll(ms(1)), [2, 3], "its usual limit again");
    assert!(!h.s.set_probe_limit(&InstanceId::new("nope"), Some(1)));
}

#[test]
fn a_queued_request_costs_no_more_than_the_architecture_guide_states() {
    // docs/ARCHITECTURE.md ("Memory per request") states what the queue keeps per request
    // from these sizes (x86_64); at the default `max_queue` of 10,000 every 100 bytes more
    // here is another megabyte per saturated pool. A field that pushes one past its bound
    // must move the figure in the guide too.
    use std::mem::size_of;
    for (what, size, bound) in [
        ("Queued<()>", size_of::<super::machine::Queued<()>>(), 272),
        ("RequestMeta", size_of::<RequestMeta>(), 176),
        ("QueueKey", size_of::<crate::schedule::QueueKey>(), 16),
    ] {
        assert!(size <= bound, "{what}: {size} B, over {bound}");
    }
}
