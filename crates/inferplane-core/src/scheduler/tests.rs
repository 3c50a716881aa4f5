//! Unit tests of the `Scheduler` state machine: limits, ordering, expiry, cancellation,
//! retries, instance changes, runtime switching and the metrics it keeps.

use super::*;
use crate::instance::InstanceSpec;
use crate::request::RequestId;
use crate::time::Time;

fn meta(id: u64, now: Time) -> RequestMeta {
    RequestMeta::new(RequestId(id), "m", 10, 10, now)
}

fn pool(limits: &[u32]) -> Scheduler<u64> {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for (i, l) in limits.iter().enumerate() {
        let id = InstanceId::new(format!("i{i}"));
        s.add_instance(InstanceSpec::new(id.as_str(), "http://x", "m", *l))
            .unwrap();
        s.set_ready(&id, true);
    }
    s
}

#[test]
fn placements_never_exceed_max_inflight_and_the_rest_wait_in_order() {
    let mut s = pool(&[2, 1]);
    for i in 0..5 {
        s.submit(meta(i, Time::ZERO), i, Time::ZERO).unwrap();
    }
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(out.iter().map(|p| p.payload).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(s.queue_len(), 2);
    assert!(s.instances().all(|i| i.inflight <= i.spec.max_inflight));
    s.complete(RequestId(1), Outcome::Failure, Time::ZERO);
    out.clear();
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload, 3, "FIFO: the oldest waiting goes next");
}

#[test]
fn unready_and_draining_instances_get_nothing() {
    let mut s = pool(&[4, 4]);
    s.set_ready(&InstanceId::new("i0"), false);
    s.set_draining(&InstanceId::new("i1"), true);
    s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    assert!(out.is_empty());
    s.set_ready(&InstanceId::new("i0"), true);
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(out[0].instance.as_str(), "i0");
}

#[test]
fn queue_timeout_and_deadlines_expire_waiting_requests() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_queue: 2,
        queue_timeout: Some(Duration::from_secs(5)),
        ..SchedulerConfig::default()
    });
    s.add_instance(InstanceSpec::new("a", "u", "m", 1)).unwrap(); // never ready
    let mut m = meta(1, Time::ZERO);
    m.deadline = Some(Duration::from_secs(1));
    s.submit(m, 1, Time::ZERO).unwrap();
    s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
    let full = s.submit(meta(3, Time::ZERO), 3, Time::ZERO).unwrap_err();
    assert_eq!(full.reason, RejectReason::QueueFull { max_queue: 2 });
    assert_eq!(s.next_expiry(), Some(Time::from_millis(1000)));
    let mut out = Vec::new();
    s.expire(Time::from_millis(1000), &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].reason, RejectReason::DeadlineMissed { .. }));
    s.expire(Time::from_millis(5000), &mut out);
    assert!(matches!(out[1].reason, RejectReason::QueueTimeout { .. }));
    assert_eq!(s.queue_len(), 0);
}

#[test]
fn cancel_removes_queued_requests_and_frees_placed_ones() {
    let mut s = pool(&[1]);
    s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
    s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(s.cancel(RequestId(2), Time::ZERO), Some(2));
    assert_eq!(s.cancel(RequestId(1), Time::ZERO), None);
    assert_eq!(s.inflight_len(), 0);
    assert_eq!(s.instances().next().unwrap().inflight, 0);
}

#[test]
fn requeued_request_goes_first_and_avoids_the_failed_instance() {
    let mut s = pool(&[1, 1]);
    s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    let first = out.pop().unwrap();
    s.complete(first.meta.id, Outcome::Failure, Time::ZERO);
    s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
    s.requeue(first.meta, first.payload, &first.instance, Time::ZERO);
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(out[0].payload, 1);
    assert_ne!(out[0].instance, first.instance);
}

#[test]
fn an_empty_pool_rejects_at_once_and_removed_instances_forget_their_requests() {
    let mut s: Scheduler<u64> = Scheduler::new(SchedulerConfig::default());
    let r = s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap_err();
    assert_eq!(r.reason, RejectReason::NoInstances);
    let mut s = pool(&[1]);
    s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    assert!(s.remove_instance(&InstanceId::new("i0")));
    assert!(!s.complete(RequestId(1), Outcome::Failure, Time::ZERO));
    assert!(s.add_instance(InstanceSpec::new("i0", "u", "m", 1)).is_ok());
    assert_eq!(
        s.add_instance(InstanceSpec::new("i0", "u", "m", 1)),
        Err(DuplicateInstance(InstanceId::new("i0")))
    );
}

use crate::instance::{Layout, Price};
use crate::predict::Rates;
use crate::request::{ParallelismKind, Priority};
use crate::route::{BalanceConfig, RoutingConfig};
use crate::schedule::{PolicyConfig, PriorityConfig, SloAwareConfig};

fn with_policy(limits: &[u32], policy: PolicyConfig, max_queue: usize) -> Scheduler<u64> {
    let mut s = pool(limits);
    s.set_policy(policy);
    s.config.max_queue = max_queue;
    s
}

fn classed(id: u64, class: Priority) -> RequestMeta {
    let mut m = meta(id, Time::ZERO);
    m.priority = class;
    m
}

fn placed(s: &mut Scheduler<u64>, now: Time) -> Vec<u64> {
    let mut out = Vec::new();
    s.dispatch(now, &mut out);
    out.into_iter().map(|p| p.payload).collect()
}

fn fast_rates() -> Rates {
    Rates {
        prefill_tokens_per_sec: 1000.0,
        decode_secs_per_token: 0.01,
        overhead_secs: 0.0,
        samples: 0,
    }
}

#[test]
fn priority_policy_dispatches_by_class_and_counts_queue_depth_per_class() {
    let mut s = with_policy(&[1], PolicyConfig::Priority(PriorityConfig::default()), 100);
    s.submit(classed(0, Priority::Normal), 0, Time::ZERO)
        .unwrap();
    assert_eq!(placed(&mut s, Time::ZERO), [0]);
    for (id, c) in [
        (1, Priority::Low),
        (2, Priority::Normal),
        (3, Priority::Critical),
    ] {
        s.submit(classed(id, c), id, Time::ZERO).unwrap();
    }
    assert_eq!(s.queue_len_by_priority(), [1, 0, 1, 1]);
    assert_eq!(s.queue_len_of(Priority::Low), 1);
    let mut order = Vec::new();
    for id in 0..3 {
        s.complete(
            RequestId(order.last().copied().unwrap_or(id)),
            Outcome::Failure,
            Time::ZERO,
        );
        order.extend(placed(&mut s, Time::ZERO));
    }
    assert_eq!(order, [3, 2, 1]);
}

#[test]
fn a_full_queue_sheds_the_newest_lowest_class_request_for_a_higher_class_newcomer() {
    let mut s = with_policy(&[1], PolicyConfig::Priority(PriorityConfig::default()), 3);
    s.set_ready(&InstanceId::new("i0"), false);
    for id in 1..=3 {
        s.submit(classed(id, Priority::Low), id, Time::ZERO)
            .unwrap();
    }
    assert_eq!(s.next_expiry(), Some(Time::from_secs_f64(30.0)));
    s.submit(classed(4, Priority::High), 4, Time::from_millis(5))
        .unwrap();
    assert_eq!(s.queue_len(), 3);
    assert_eq!(
        s.next_expiry(),
        Some(Time::from_millis(5)),
        "a pending reject is due now"
    );
    let mut out = Vec::new();
    s.expire(Time::from_millis(5), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload, 3);
    assert_eq!(out[0].reason.kind(), crate::RejectKind::Shed);
    assert_eq!(out[0].reason.as_str(), "shed");
    let low = s
        .submit(classed(5, Priority::Low), 5, Time::ZERO)
        .unwrap_err();
    assert_eq!(low.reason, RejectReason::QueueFull { max_queue: 3 });
    assert_eq!(s.stats().rejects_of("shed"), 1);
    assert_eq!(s.stats().rejects_of("queue_full"), 1);
}

#[test]
fn fifo_rejects_the_newcomer_when_the_queue_is_full_instead_of_shedding() {
    let mut s = with_policy(&[1], PolicyConfig::Fifo(Default::default()), 1);
    s.set_ready(&InstanceId::new("i0"), false);
    s.submit(classed(1, Priority::Low), 1, Time::ZERO).unwrap();
    let r = s
        .submit(classed(2, Priority::Critical), 2, Time::ZERO)
        .unwrap_err();
    assert_eq!(r.reason.as_str(), "queue_full");
}

#[test]
fn switching_policy_at_run_time_keeps_every_queued_request_and_reorders_them() {
    let mut s = with_policy(&[1], PolicyConfig::Fifo(Default::default()), 100);
    s.set_ready(&InstanceId::new("i0"), false);
    for (id, c) in [
        (1, Priority::Low),
        (2, Priority::High),
        (3, Priority::Normal),
    ] {
        s.submit(classed(id, c), id, Time::ZERO).unwrap();
    }
    assert_eq!(s.cancel(RequestId(3), Time::ZERO), Some(3));
    s.set_policy(PolicyConfig::Priority(PriorityConfig::default()));
    assert_eq!(s.policy_name(), "priority");
    assert_eq!(s.queue_len(), 2);
    s.set_ready(&InstanceId::new("i0"), true);
    assert_eq!(placed(&mut s, Time::ZERO), [2]);
    s.complete(RequestId(2), Outcome::Failure, Time::ZERO);
    assert_eq!(placed(&mut s, Time::ZERO), [1]);
}

#[test]
fn switching_routing_and_balancing_at_run_time_takes_effect_on_the_next_pick() {
    let mut s = pool(&[4, 4, 4]);
    s.set_routing(RoutingConfig::RoundRobin(Default::default()));
    assert_eq!(s.routing_name(), "round_robin");
    assert_eq!(s.balancing_name(), None);
    for id in 0..3 {
        s.submit(meta(id, Time::ZERO), id, Time::ZERO).unwrap();
    }
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    let ixs: Vec<_> = out.iter().map(|p| p.ix).collect();
    assert_eq!(ixs, [0, 1, 2]);
    s.set_balancing(BalanceConfig::PowerOfTwo(Default::default()));
    assert_eq!(s.routing_name(), "load_balanced");
    assert_eq!(s.balancing_name(), Some("power_of_two"));
    s.complete(RequestId(0), Outcome::Failure, Time::ZERO);
    s.complete(RequestId(1), Outcome::Failure, Time::ZERO);
    s.submit(meta(9, Time::ZERO), 9, Time::ZERO).unwrap();
    out.clear();
    s.dispatch(Time::ZERO, &mut out);
    assert_ne!(out[0].ix, 2, "p2c never takes the busier of two");
}

#[test]
fn slo_aware_rejects_an_unreachable_deadline_at_submit_or_serves_it_best_effort() {
    let mut s = with_policy(&[4], PolicyConfig::SloAware(SloAwareConfig::default()), 100);
    s.set_rates(&InstanceId::new("i0"), fast_rates());
    // 1000 prompt tokens + 100 output: 1 s + 1 s
    let mut m = RequestMeta::new(RequestId(1), "m", 1000, 100, Time::ZERO);
    m.deadline = Some(std::time::Duration::from_millis(1500));
    let r = s.submit(m.clone(), 1, Time::ZERO).unwrap_err();
    assert_eq!(
        r.reason,
        RejectReason::SloInfeasible {
            short_by: std::time::Duration::from_millis(500)
        }
    );
    assert_eq!(s.stats().slo.missed, 1);
    s.set_policy(PolicyConfig::SloAware(SloAwareConfig {
        best_effort: true,
        ..SloAwareConfig::default()
    }));
    s.submit(m, 1, Time::ZERO).unwrap();
    assert_eq!(placed(&mut s, Time::ZERO), [1]);
    assert_eq!(s.stats().best_effort, 1);
}

#[test]
fn cost_optimized_places_on_the_cheapest_instance_and_rejects_over_budget_requests() {
    let mut s: Scheduler<u64> = Scheduler::new(SchedulerConfig {
        policy: PolicyConfig::CostOptimized(Default::default()),
        ..SchedulerConfig::default()
    });
    for (id, price) in [("dear", 10.0), ("cheap", 1.0)] {
        let mut spec = InstanceSpec::new(id, "u", "m", 2);
        spec.price = Some(Price::PerMillionTokens {
            input: price,
            output: price,
        });
        s.add_instance(spec).unwrap();
        s.set_ready(&InstanceId::new(id), true);
    }
    for id in 0..3 {
        s.submit(meta(id, Time::ZERO), id, Time::ZERO).unwrap();
    }
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    let names: Vec<_> = out.iter().map(|p| p.instance.as_str()).collect();
    assert_eq!(
        names,
        ["cheap", "cheap", "dear"],
        "the dear one only once cheap is full"
    );
    let mut m = meta(7, Time::ZERO); // 20 tokens at $1/M = $0.00002
    m.cost_budget = Some(0.00001);
    let r = s.submit(m, 7, Time::ZERO).unwrap_err();
    assert_eq!(r.reason.as_str(), "over_budget");
}

#[test]
fn completions_update_rates_latency_and_slo_attainment() {
    let mut s = pool(&[4]);
    let id = InstanceId::new("i0");
    s.set_rates(&id, fast_rates());
    let mut m = RequestMeta::new(RequestId(1), "m", 1000, 11, Time::ZERO);
    m.deadline = Some(std::time::Duration::from_secs(3));
    s.submit(m, 1, Time::ZERO).unwrap();
    assert_eq!(placed(&mut s, Time::from_millis(500)).len(), 1);
    // placed at 0.5 s, first token at 1.0 s (0.5 s after placement: 2000 tok/s),
    // done at 2.5 s (1.5 s of decode for 10 tokens: 0.15 s/token)
    let outcome = Outcome::Success {
        prompt_tokens: 1000,
        completion_tokens: 11,
        ttft: Some(std::time::Duration::from_secs(1)),
    };
    assert!(s.complete(RequestId(1), outcome, Time::from_millis(2500)));
    let inst = s.instance(&id).unwrap();
    assert!((inst.rates.prefill_tokens_per_sec - 1200.0).abs() < 1e-6);
    assert!((inst.rates.decode_secs_per_token - (0.8 * 0.01 + 0.2 * 0.15)).abs() < 1e-9);
    assert_eq!(inst.latency.secs, 2.0);
    assert_eq!(s.stats().slo.attainment(), Some(1.0));
    assert_eq!(s.stats().succeeded, 1);
    assert_eq!(inst.inflight, 0);
}

#[test]
fn a_parallelism_hint_prefers_matching_instances_while_they_have_room() {
    let mut s: Scheduler<u64> = Scheduler::new(SchedulerConfig::default());
    let mut tp = InstanceSpec::new("tp4", "u", "m", 1);
    tp.layout = Layout {
        tp: 4,
        ..Layout::SINGLE
    };
    s.add_instance(InstanceSpec::new("single", "u", "m", 4))
        .unwrap();
    s.add_instance(tp).unwrap();
    for id in ["single", "tp4"] {
        s.set_ready(&InstanceId::new(id), true);
    }
    for id in 0..2 {
        let mut m = meta(id, Time::ZERO);
        m.parallelism_hint = Some(ParallelismKind::Tp);
        s.submit(m, id, Time::ZERO).unwrap();
    }
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    let names: Vec<_> = out.iter().map(|p| p.instance.as_str()).collect();
    assert_eq!(
        names,
        ["tp4", "single"],
        "tp4 while it has room, then anywhere"
    );
}

#[test]
fn the_adaptive_default_shows_its_active_policy_and_counts_switches() {
    let mut s = pool(&[1]);
    assert_eq!(s.policy_name(), "adaptive");
    assert_eq!(s.active_policy(), "fifo");
    for id in 0..3 {
        s.submit(meta(id, Time::ZERO), id, Time::ZERO).unwrap();
    }
    placed(&mut s, Time::ZERO); // pressure (2 + 1) / 1 = 3: overloaded
    assert_eq!(s.active_policy(), "priority");
    assert_eq!(s.policy_switches(), 1);
    let h: Vec<_> = s.policy_switch_history().map(|e| (e.from, e.to)).collect();
    assert_eq!(h, [("fifo", "priority")]);
}

#[test]
fn a_request_infeasible_at_dispatch_is_rejected_and_handed_out_by_expire() {
    let mut s = with_policy(&[1], PolicyConfig::SloAware(SloAwareConfig::default()), 100);
    s.set_rates(&InstanceId::new("i0"), fast_rates());
    let mut m = RequestMeta::new(RequestId(1), "m", 1000, 100, Time::ZERO);
    m.deadline = Some(std::time::Duration::from_millis(2500));
    s.submit(m, 1, Time::ZERO).unwrap(); // 2 s of work, 2.5 s deadline: fine now
    let mut out = Vec::new();
    s.dispatch(Time::from_millis(1000), &mut out); // 1 s later: 0.5 s short
    assert!(out.is_empty());
    assert_eq!(s.next_expiry(), Some(Time::from_millis(1000)));
    let mut rejected = Vec::new();
    s.expire(Time::from_millis(1000), &mut rejected);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason.as_str(), "slo_infeasible");
    assert_eq!(s.queue_len(), 0);
}
