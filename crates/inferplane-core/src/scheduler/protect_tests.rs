//! Tests of protected traffic: the deadline limit holds other work back, not protected
//! newcomers; a reserve planned from recent protected deadlines bounds the batch before
//! they arrive; hopeless deadlines hold nothing.

use super::tests::{H, classed, meta, ms};
use super::*;
use crate::outcome::Outcome;
use crate::predict::{DecodeModel, Rates};
use crate::request::Priority;
use crate::schedule::PolicyConfig;
use std::time::Duration;

/// One instance taking up to 10 at once, decoding at `10 ms + 1 ms x batch` per token.
fn pool(config: SchedulerConfig) -> H {
    let mut h = H::with(&[10], config);
    let id = InstanceId::new("i0");
    h.s.set_rates(
        &id,
        Rates {
            prefill_tokens_per_sec: 1e9,
            decode_secs_per_token: 0.02,
            overhead_secs: 0.0,
            samples: 0,
            decode: DecodeModel::new(0.01, 0.001),
        },
    );
    h
}

fn priority() -> SchedulerConfig {
    SchedulerConfig {
        policy: PolicyConfig::Priority(Default::default()),
        ..SchedulerConfig::default()
    }
}

// Outcomes here teach nothing (cancellations), so the decode model stays as set.

/// A critical request of 100 tokens at most that must be done within `deadline_ms`.
fn critical(id: u64, deadline_ms: u64, now: Time) -> RequestMeta {
    let mut m = classed(id, Priority::Critical, now);
    m.max_tokens = 100;
    m.deadline = Some(Duration::from_millis(deadline_ms));
    m
}

#[test]
fn protected_deadlines_hold_other_work_back_but_not_protected_newcomers() {
    let mut h = pool(priority());
    for i in 0..3 {
        h.submit(meta(i, Time::ZERO), Time::ZERO);
    }
    assert_eq!(
        h.poll(Time::ZERO),
        [0, 1, 2],
        "no protected traffic: no bound"
    );
    // 1.55 s for 100 tokens needs 15.5 ms per token: a batch of 5 at most
    h.submit(critical(100, 1550, ms(1)), ms(1));
    assert_eq!(h.poll(ms(1)), [100]);
    for i in 3..9 {
        h.submit(meta(i, ms(2)), ms(2));
    }
    assert_eq!(h.poll(ms(2)), [3], "the batch stops at 5 for other work");
    assert_eq!(h.s.queue_len(), 5);
    h.submit(critical(101, 1550, ms(3)), ms(3));
    assert_eq!(
        h.poll(ms(3)),
        [101],
        "a critical newcomer still gets in: two protected deadlines are within the bound"
    );
    // finishing three of the others brings the batch to 3: two more may go
    for i in 0..3 {
        h.finish(i, Outcome::Cancelled, ms(4));
    }
    assert_eq!(h.poll(ms(4)), [4, 5]);
    assert_eq!(h.s.queue_len(), 3);
}

#[test]
fn the_reserve_bounds_batches_before_protected_requests_arrive_and_is_forgotten() {
    let mut h = pool(priority());
    h.submit(critical(100, 1550, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [100]);
    h.finish(100, Outcome::Cancelled, ms(1));
    // nothing protected in flight now, but one arrived lately: other work stops at 5
    for i in 0..8 {
        h.submit(meta(i, ms(2)), ms(2));
    }
    assert_eq!(h.poll(ms(2)).len(), 5);
    // a minute without protected deadlines forgets the reserve: the limit alone decides
    // (the three held back waited past their class's wait target meanwhile)
    let later = Time::from_millis(70_000);
    for i in 10..15 {
        h.submit(meta(i, later), later);
    }
    assert_eq!(h.poll(later), [10, 11, 12, 13, 14]);
}

#[test]
fn a_hopeless_deadline_holds_nothing_and_plans_nothing() {
    let mut h = pool(priority());
    // 0.5 s for 100 tokens needs 5 ms per token: slower than 11 ms even alone
    h.submit(critical(100, 500, Time::ZERO), Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [100]);
    for i in 0..9 {
        h.submit(meta(i, ms(1)), ms(1));
    }
    assert_eq!(h.poll(ms(1)).len(), 9, "the batch fills to its limit of 10");
}

#[test]
fn with_deadlines_off_nothing_is_held() {
    let mut config = priority();
    config.saturation.deadlines = false;
    let mut h = pool(config);
    h.submit(critical(100, 1550, Time::ZERO), Time::ZERO);
    for i in 0..9 {
        h.submit(meta(i, Time::ZERO), Time::ZERO);
    }
    assert_eq!(h.poll(Time::ZERO).len(), 10);
}

#[test]
fn protected_requests_gather_on_lanes_unless_their_first_token_would_be_late_there() {
    let mut h = H::with(&[10, 10], priority());
    for id in ["i0", "i1"] {
        h.s.set_rates(
            &InstanceId::new(id),
            Rates {
                prefill_tokens_per_sec: 1000.0,
                decode_secs_per_token: 0.02,
                overhead_secs: 0.0,
                samples: 0,
                decode: DecodeModel::new(0.01, 0.001),
            },
        );
    }
    // a long prompt makes its instance a lane with 2 s of prefill ahead
    let mut first = critical(100, 60_000, Time::ZERO);
    first.prompt_tokens = 2000;
    h.submit(first, Time::ZERO);
    h.poll(Time::ZERO);
    let lane = h.instance_of(100);
    // it joins the lane, though the other instance would start it sooner
    h.submit(critical(101, 60_000, ms(1)), ms(1));
    h.poll(ms(1));
    assert_eq!(h.instance_of(101), lane);
    // with a 1 s TTFT target the lane is too slow: it goes elsewhere
    let mut hurried = critical(102, 60_000, ms(2));
    hurried.ttft_target = Some(Duration::from_secs(1));
    h.submit(hurried, ms(2));
    h.poll(ms(2));
    assert_ne!(h.instance_of(102), lane);
    // other work goes by the balancer alone
    h.submit(meta(103, ms(3)), ms(3));
    h.poll(ms(3));
    assert_ne!(h.instance_of(103), lane);
}
