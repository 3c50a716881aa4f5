//! The fair share between tenants through the scheduler: a tenant that floods one class
//! gets its weighted turn and no more while another waits, under every policy; one tenant
//! (or none) is served exactly as before; and a tenant that floods the slots leaves a few
//! free for another active a moment ago (`schedule/headroom.rs`).

use super::tests::{H, meta, ms, success};
use crate::request::{Priority, TenantId};
use crate::schedule::PolicyConfig;
use crate::time::Time;

fn policies() -> Vec<PolicyConfig> {
    vec![
        PolicyConfig::Fifo(Default::default()),
        PolicyConfig::Priority(Default::default()),
        PolicyConfig::SloAware(Default::default()),
        PolicyConfig::Adaptive(Default::default()),
    ]
}

/// Tenant `a` queues ids 1..=6 at 0 ms, tenant `b` ids 101 and 102 at 1 ms, one instance
/// running one at a time; every request uses its 20 predicted tokens. Returns the order
/// they were placed in.
fn served(
    policy: PolicyConfig,
    a: Option<TenantId>,
    b: Option<TenantId>,
    weight_b: u32,
) -> Vec<u64> {
    let mut h = H::new(&[1], policy);
    if let Some(t) = b {
        h.s.set_tenant_weight(t, weight_b);
    }
    for id in 1..=6 {
        let mut m = meta(id, Time::ZERO);
        m.tenant = a;
        h.submit(m, Time::ZERO);
    }
    let mut order = h.poll(Time::ZERO);
    for id in [101, 102] {
        let mut m = meta(id, ms(1));
        m.tenant = b;
        h.submit(m, ms(1));
    }
    order.extend(h.poll(ms(1)));
    let mut now = 2;
    while order.len() < 8 && now < 100 {
        let last = *order.last().unwrap();
        h.finish(last, success(1, 2), ms(now));
        order.extend(h.poll(ms(now)));
        now += 1;
    }
    order
}

const A: Option<TenantId> = Some(TenantId(0));
const B: Option<TenantId> = Some(TenantId(1));

#[test]
fn a_flooding_tenant_takes_turns_with_a_waiting_one() {
    for p in policies() {
        // b starts at a's counter: turns alternate, ties to the older request
        assert_eq!(
            served(p.clone(), A, B, 1),
            [1, 2, 101, 3, 102, 4, 5, 6],
            "{p:?}"
        );
        // weight 2: b's two go before a's third
        assert_eq!(
            served(p.clone(), A, B, 2),
            [1, 2, 101, 102, 3, 4, 5, 6],
            "{p:?}"
        );
    }
}

#[test]
fn one_tenant_is_served_as_if_none_were_known() {
    for p in policies() {
        let plain = served(p.clone(), None, None, 1);
        assert_eq!(plain, [1, 2, 3, 4, 5, 6, 101, 102], "{p:?}");
        assert_eq!(served(p.clone(), A, A, 1), plain, "{p:?}");
    }
}

#[test]
fn counters_are_corrected_by_what_a_request_really_used() {
    let mut h = H::fifo(&[1]);
    let mut m = meta(1, Time::ZERO);
    m.tenant = A;
    h.submit(m, Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [1]);
    // charged 10 prompt + 10 predicted (max_tokens before anything is learned)
    assert_eq!(h.s.tenant_counter(Priority::Normal, A), 20.0);
    h.finish(
        1,
        crate::outcome::Outcome::Success {
            prompt_tokens: 10,
            completion_tokens: 3,
            cached_tokens: None,
            first_token: None,
            latency: std::time::Duration::from_millis(5),
        },
        ms(5),
    );
    assert_eq!(h.s.tenant_counter(Priority::Normal, A), 13.0);
    let mut m = meta(2, ms(6));
    m.tenant = A;
    h.submit(m, ms(6));
    h.poll(ms(6));
    let placed = h.s.tenant_counter(Priority::Normal, A);
    h.finish(2, crate::outcome::Outcome::Failed { retrying: true }, ms(7));
    assert_eq!(
        h.s.tenant_counter(Priority::Normal, A),
        placed - 20.0,
        "a failed attempt is refunded"
    );
}

/// The light tenant (B) sends one request at 0 ms, served at once and done at 1 ms.
fn light_one_a_moment_ago(h: &mut H) {
    let mut m = meta(100, Time::ZERO);
    m.tenant = B;
    h.submit(m, Time::ZERO);
    assert_eq!(h.poll(Time::ZERO), [100]);
    h.finish(100, success(1, 2), ms(1));
}

#[test]
fn a_flooding_tenant_leaves_slots_free_for_a_tenant_active_a_moment_ago() {
    for p in policies() {
        let mut h = H::new(&[8], p.clone());
        light_one_a_moment_ago(&mut h);
        for id in 1..=20 {
            let mut m = meta(id, ms(2));
            m.tenant = A;
            h.submit(m, ms(2));
        }
        // 8 slots: over its share (4) the heavy tenant leaves the light one its peak (1)
        // + room for a burst (2 + 2), no more than the light one's share (4)
        assert_eq!(h.poll(ms(2)).len(), 4, "{p:?}");
        let mut m = meta(101, ms(3));
        m.tenant = B;
        h.submit(m, ms(3));
        assert_eq!(
            h.poll(ms(3)),
            [101],
            "{p:?}: the light tenant starts at once"
        );
    }
    // with the other tenant quiet past the horizon, the heavy one takes every slot
    let mut h = H::fifo(&[8]);
    let mut m = meta(100, Time::ZERO);
    m.tenant = B;
    h.submit(m, Time::ZERO);
    h.poll(Time::ZERO);
    h.finish(100, success(1, 2), ms(1));
    let later = ms(1 + (crate::schedule::headroom::HORIZON_SECS * 1000.0) as u64 + 10);
    for id in 1..=20 {
        let mut m = meta(id, later);
        m.tenant = A;
        h.submit(m, later);
    }
    assert_eq!(h.poll(later).len(), 8);
}

#[test]
fn the_slots_left_free_are_on_the_instance_with_the_soonest_first_token() {
    for p in policies() {
        // i0 prefills at 1,000 tokens/s, i1 at 10,000; 4 slots each
        let mut h = super::policy_tests::slow_fast(p.clone());
        light_one_a_moment_ago(&mut h);
        for id in 1..=20 {
            let mut m = meta(id, ms(2));
            m.tenant = A;
            h.submit(m, ms(2));
        }
        // under its share (4 of 8) the heavy tenant keeps the light one's peak + 1 free on
        // the fast instance and goes to the slow one; at its share it stops
        let heavy = h.poll(ms(2));
        assert_eq!(heavy.len(), 4, "{p:?}");
        let on_fast = heavy
            .iter()
            .filter(|&&id| h.instance_of(id).as_str() == "i1")
            .count();
        assert_eq!(on_fast, 2, "{p:?}: heavy on i1");
        let mut m = meta(101, ms(3));
        m.tenant = B;
        h.submit(m, ms(3));
        assert_eq!(h.poll(ms(3)), [101], "{p:?}");
        assert_eq!(h.instance_of(101).as_str(), "i1", "{p:?}");
    }
}

#[test]
fn under_overload_the_flooding_tenant_is_shed_and_the_light_one_admitted() {
    // 100 ms per request and normal's 5 s budget: the queue holds about 50
    let run = |light: Option<TenantId>| {
        let mut h = super::policy_tests::overloaded(PolicyConfig::Priority(Default::default()));
        let mut rejected = Vec::new();
        for i in 0..200u64 {
            let mut m = meta(i, ms(i));
            m.tenant = A;
            h.submit(m, ms(i));
            h.poll(ms(i));
            if i % 20 == 19 {
                // the light tenant sends one now and then
                let mut m = meta(1000 + i, ms(i));
                m.tenant = light;
                h.submit(m, ms(i));
                h.poll(ms(i));
            }
            rejected.extend(h.rejected());
        }
        let light_shed = rejected.iter().filter(|(id, _)| *id >= 1000).count();
        (rejected.len(), light_shed)
    };
    let (shed, light_shed) = run(B);
    assert!(shed > 100, "the pool is overloaded: {shed} shed");
    assert_eq!(light_shed, 0, "the light tenant's requests wait their turn");
    // the same traffic as one tenant: the light requests wait behind the flood and go
    let (_, blind) = run(A);
    assert!(blind > 5, "as one tenant, {blind} of 10 were shed");
}
