//! Unit tests of what the policies do through the `Scheduler`: class order and aging,
//! overload by class, run-time switching, SLO-aware and cost-aware placement, what
//! completions teach, parallelism hints and the adaptive default's choice.

use super::tests::{H, classed, meta, ms, success};
use super::*;
use crate::instance::{InstanceSpec, Layout, Price};
use crate::outcome::Outcome;
use crate::predict::Rates;
use crate::reject::RejectKind;
use crate::request::{ParallelismKind, Priority, RequestId};
use crate::route::{BalanceConfig, RoutingConfig};
use crate::schedule::{CostOptimizedConfig, PolicyConfig, SloAwareConfig};
use crate::time::Time;

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
    occupy(&mut h);
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
    occupy(&mut f);
    f.submit(classed(1, Priority::Low, Time::ZERO), Time::ZERO);
    f.submit(classed(2, Priority::Critical, Time::ZERO), Time::ZERO);
    f.poll(Time::ZERO);
    assert_eq!(f.rejected(), [(2, RejectKind::QueueFull)]);
}

/// Fills the one place of a pool of one instance of limit 1, so what follows queues.
fn occupy(h: &mut H) {
    h.submit(classed(100, Priority::Critical, Time::ZERO), Time::ZERO);
    h.poll(Time::ZERO);
    assert_eq!(h.placed.len(), 1);
    h.placed.clear();
}

/// A saturated pool of one instance serving 10 requests per second at its batch of 1.
pub(super) fn overloaded(policy: PolicyConfig) -> H {
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
fn the_default_sheds_plain_traffic_at_once_under_overload_instead_of_timing_it_out() {
    // one class, no SLOs: adaptive orders by arrival (its fifo mode) but keeps the class
    // wait budgets, so the queue holds what can be served within normal's 5 s
    let mut h = overloaded(PolicyConfig::default());
    for i in 0..400u64 {
        h.submit(meta(i, ms(i)), ms(i));
        h.poll(ms(i));
    }
    assert_eq!(h.s.active_policy(), "fifo");
    let rejected = h.rejected();
    assert!(!rejected.is_empty());
    assert!(rejected.iter().all(|(_, k)| *k == RejectKind::Shed));
    // at 10 requests/s and a 5 s budget, about 50 wait; the rest were told at once
    let queued = h.s.queue_len();
    assert!((40..=60).contains(&queued), "{queued} queued");
    assert_eq!(queued + rejected.len(), 400);
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

pub(super) fn slow_fast(policy: PolicyConfig) -> H {
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
fn a_whole_answer_teaches_its_decode_from_its_placement_not_from_its_arrival() {
    // Latencies count from arrival. Under overload whole answers wait in the queue first:
    // were that wait taken for decoding, every queued answer would make the engines look
    // slower, the drain rate (and with it shedding) would follow, and a class that would
    // have been served in time would be shed.
    let learned = |queued_ms: u64| {
        let mut h = H::fifo(&[1]);
        h.submit(meta(0, Time::ZERO), Time::ZERO);
        h.submit(meta(1, Time::ZERO), Time::ZERO);
        assert_eq!(h.poll(Time::ZERO), [0]);
        // 0 holds the only slot for `queued_ms`, teaching nothing
        h.finish(0, Outcome::ClientError, ms(queued_ms));
        assert_eq!(h.poll(ms(queued_ms)), [1]);
        // then 1 takes 1 s on the engine, whole: 101 tokens, no first token seen
        let whole = Outcome::Success {
            prompt_tokens: 10,
            completion_tokens: 101,
            cached_tokens: None,
            first_token: None,
            latency: std::time::Duration::from_millis(queued_ms + 1000),
        };
        h.finish(1, whole, ms(queued_ms + 1000)).unwrap();
        h.s.instances().next().unwrap().rates.decode_secs_per_token
    };
    let (at_once, after_a_wait) = (learned(0), learned(3000));
    assert!(
        (at_once - after_a_wait).abs() < 1e-9,
        "{at_once} vs {after_a_wait}"
    );
    assert!((0.009..0.01).contains(&at_once), "about 10 ms: {at_once}");
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
