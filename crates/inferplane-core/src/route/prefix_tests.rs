use super::*;
use crate::pool::InstanceState;
use crate::route::testkit;
use std::sync::Arc;

/// A request of 10 blocks (160 tokens) whose blocks are `base..base + 10`.
fn req(id: u64, base: u64) -> RequestMeta {
    let mut r = testkit::req(id, None, None);
    r.prompt_tokens = 160;
    r.prefix_blocks = (base..base + 10).collect::<Arc<[u64]>>();
    r
}

/// Picks, counts the attempt in flight and tells the strategy, as the scheduler does.
fn place(p: &mut Prefix, st: &mut [Option<InstanceState>], r: &RequestMeta) -> Slot {
    let slot = p.pick(r, &testkit::view(st), Allowed::All).unwrap();
    let inst = st[slot].as_mut().unwrap();
    inst.inflight += 1;
    let ix = inst.ix;
    testkit::refresh_all(st);
    p.placed(r, ix, Time::ZERO);
    slot
}

fn strategy(st: &[Option<InstanceState>]) -> Prefix {
    let mut p = Prefix::new(PrefixConfig::default());
    p.rebuild(&testkit::view(st));
    p
}

#[test]
fn prefix_sends_follow_ups_to_the_instance_holding_their_prefix() {
    let mut st = testkit::states(&[(100, 0); 4]);
    let mut p = strategy(&st);
    let homes: Vec<Slot> = (0..4)
        .map(|c| place(&mut p, &mut st, &req(c, c * 100)))
        .collect();
    let mut sorted = homes.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [0, 1, 2, 3],
        "new conversations spread to the least loaded"
    );
    for turn in 1..4u64 {
        for c in 0..4u64 {
            // a follow-up: the same blocks and more
            let mut r = req(10 * turn + c, c * 100);
            r.prefix_blocks = (c * 100..c * 100 + 10 + turn).collect();
            assert_eq!(place(&mut p, &mut st, &r), homes[c as usize]);
        }
    }
}

#[test]
fn prefix_spreads_a_hot_prefix_once_its_holder_is_a_hotspot() {
    let mut st = testkit::states(&[(10, 0); 4]);
    let mut p = strategy(&st);
    let mut placed = [0u32; 4];
    for i in 0..5 {
        placed[place(&mut p, &mut st, &req(i, 7))] += 1;
    }
    // the first holder takes it up to half its limit (5 of 10, the others idle)
    assert_eq!(placed.iter().max(), Some(&5), "{placed:?}");
    for i in 5..20 {
        placed[place(&mut p, &mut st, &req(i, 7))] += 1;
    }
    // then it spreads: no instance above 1.5x its fair share (5)
    assert!(placed.iter().all(|&n| n <= 7), "{placed:?}");
    assert_eq!(placed.iter().sum::<u32>(), 20);
    let holders = (0..4)
        .filter(|&s| p.index().holds(st[s].as_ref().unwrap().ix, 7))
        .count();
    assert!(
        holders >= 3,
        "each instance it spread to holds it too: {placed:?}"
    );
}

#[test]
fn prefix_keeps_affinity_when_every_instance_is_busy() {
    // all four at 80% of their limit: none is a hotspot, so blocks keep their credit
    let mut st = testkit::states(&[(10, 8), (10, 8), (10, 8), (10, 7)]);
    let mut p = strategy(&st);
    p.placed(&req(0, 300), st[1].as_ref().unwrap().ix, Time::ZERO);
    assert_eq!(
        place(&mut p, &mut st, &req(1, 300)),
        1,
        "the holder, not the least loaded"
    );
}

#[test]
fn prefix_weighs_load_relative_to_each_instances_limit() {
    // a large and a small instance, both holding the prefix, equally many in flight
    let mut st = testkit::states(&[(100, 4), (8, 4)]);
    let mut p = strategy(&st);
    for (i, s) in st.iter().enumerate() {
        p.placed(&req(i as u64, 0), s.as_ref().unwrap().ix, Time::ZERO);
    }
    assert_eq!(
        place(&mut p, &mut st, &req(9, 0)),
        0,
        "4/100 is lighter than 4/8"
    );
    // a small instance with the prefix beats an idle large one without it
    let mut st = testkit::states(&[(100, 0), (8, 2)]);
    let mut p = strategy(&st);
    p.placed(&req(0, 0), st[1].as_ref().unwrap().ix, Time::ZERO);
    assert_eq!(place(&mut p, &mut st, &req(1, 0)), 1);
}

#[test]
fn prefix_forgets_a_removed_instance_so_its_reused_slot_starts_cold() {
    let mut st = testkit::states(&[(100, 0); 2]);
    let mut p = strategy(&st);
    let home = place(&mut p, &mut st, &req(0, 0));
    // the slot is reused by another instance (next generation)
    let spec = st[home].as_ref().unwrap().spec.clone();
    let mut newcomer = InstanceState::new(spec, crate::pool::InstanceIx::new(home as u32, 1));
    newcomer.ready = true;
    st[home] = Some(newcomer);
    testkit::refresh_all(&mut st);
    p.rebuild(&testkit::view(&st));
    assert_eq!(p.index().len(), 0);
    assert_eq!(p.index().blocks_of(st[home].as_ref().unwrap().ix), 0);
}

#[test]
fn prefix_keeps_each_instance_within_its_kv_capacity() {
    let mut st = testkit::states(&[(100, 0)]);
    st[0].as_mut().unwrap().engine.kv_capacity_tokens = Some(16 * 25);
    let mut p = strategy(&st);
    for c in 0..10 {
        place(&mut p, &mut st, &req(c, c * 100));
    }
    assert_eq!(p.index().len(), 25);
    // the newest conversations stay whole
    assert!(p.index().holds(st[0].as_ref().unwrap().ix, 900));
    assert!(!p.index().holds(st[0].as_ref().unwrap().ix, 0));
}

#[test]
fn prefix_without_block_hashes_goes_to_the_least_loaded() {
    let mut st = testkit::states(&[(10, 3), (10, 1), (10, 2)]);
    let mut p = strategy(&st);
    let r = testkit::req(1, None, None);
    assert_eq!(place(&mut p, &mut st, &r), 1);
    assert!(p.index().is_empty());
}

#[test]
fn prefix_follows_the_engine_s_own_account_of_its_cache() {
    let mut st = testkit::states(&[(100, 0); 2]);
    let mut p = strategy(&st);
    let home = place(&mut p, &mut st, &req(1, 0));
    let ix = st[home].as_ref().unwrap().ix;
    assert_eq!(p.index().blocks_of(ix), 10);
    // the engine evicted the tail: the leading blocks still count
    let tail: Vec<u64> = (5..10).collect();
    p.cache_changed(ix, CacheChange::Removed(&tail), Time::ZERO);
    assert_eq!(p.index().blocks_of(ix), 5);
    // the engine stored blocks no request was placed with (traffic the index never saw)
    p.cache_changed(ix, CacheChange::Stored(&[500, 501]), Time::ZERO);
    assert!(p.index().holds(ix, 501));
    // what it holds is no longer known: nothing counts, the instance stays known
    p.cache_changed(ix, CacheChange::Lost, Time::ZERO);
    assert_eq!(p.index().blocks_of(ix), 0);
    p.cache_changed(ix, CacheChange::Stored(&[7]), Time::ZERO);
    assert_eq!(p.index().blocks_of(ix), 1);
    assert!(p.routes_by_blocks());
}

/// A request of `blocks` blocks starting at block hash `base`.
fn long_req(id: u64, base: u64, blocks: u64) -> RequestMeta {
    let mut r = testkit::req(id, None, None);
    r.prompt_tokens = 16 * blocks as u32;
    r.prefix_blocks = (base..base + blocks).collect::<Arc<[u64]>>();
    r
}

#[test]
fn prefix_waits_for_a_full_holder_only_while_that_beats_prefilling_elsewhere() {
    // the holder (slot 0) is full, slot 1 is idle and cold
    let mut st = testkit::states(&[(4, 4), (4, 0)]);
    let mut p = strategy(&st);
    let holder = st[0].as_ref().unwrap().ix;
    let long = long_req(1, 0, 2_000); // 32,000 tokens: ~4 s of prefill cold
    p.placed(&long, holder, Time::ZERO);
    let v = testkit::view(&st);
    assert_eq!(
        p.pick(&long, &v, Allowed::All),
        None,
        "waits for its holder"
    );
    let note = p.note().unwrap();
    assert_eq!(note.reason, PrefixReason::Wait);
    assert_eq!(note.best_tokens, 32_000);
    // one that already waited longer than the prefill it would save goes cold
    let mut late = long.clone();
    late.arrival = Time::ZERO;
    let mut v_late = testkit::view(&st);
    v_late.now = Time::from_secs_f64(5.0);
    assert_eq!(p.pick(&late, &v_late, Allowed::All), Some(1));
    // a short prompt saves less than the wait for a slot (~0.5 s): no waiting
    let short = long_req(2, 0, 10);
    assert_eq!(p.pick(&short, &v, Allowed::All), Some(1));
    assert_eq!(p.note().unwrap().reason, PrefixReason::Spread);
    // nothing cached anywhere: a miss, never a wait
    let cold = long_req(3, 90_000, 2_000);
    assert_eq!(p.pick(&cold, &v, Allowed::All), Some(1));
    assert_eq!(p.note().unwrap().reason, PrefixReason::Miss);
    // the holder with room again: a hit
    st[0].as_mut().unwrap().inflight = 0;
    testkit::refresh_all(&mut st);
    let v = testkit::view(&st);
    assert_eq!(p.pick(&long, &v, Allowed::All), Some(0));
    let note = p.note().unwrap();
    assert_eq!(
        (note.reason, note.matched_tokens),
        (PrefixReason::Hit, 32_000)
    );
}

#[test]
fn prefix_in_a_large_pool_scores_holders_and_a_rotating_window() {
    let n = 3 * SCAN;
    let mut st = testkit::states(&vec![(10, 2); n]);
    let mut p = strategy(&st);
    // a holder far outside the first window
    let far = n - 7;
    p.placed(&req(0, 500), st[far].as_ref().unwrap().ix, Time::ZERO);
    assert_eq!(place(&mut p, &mut st, &req(1, 500)), far);
    // without a holder: the least loaded of the window, and the window moves on
    st[5].as_mut().unwrap().inflight = 0;
    testkit::refresh_all(&mut st);
    let mut p = strategy(&st);
    let first = place(&mut p, &mut st, &req(2, 9_000));
    assert_eq!(first, 5, "the idle instance in the first window");
    let next = place(&mut p, &mut st, &req(3, 19_000));
    assert!(next >= SCAN, "the next window: {next}");
}

#[test]
fn replicas_sharing_counts_send_a_new_prompt_to_the_same_home() {
    // two replicas' strategies over the same instances and the same shared loads: neither
    // knows the other's placements, yet new prompts go to the same instance on both
    let mut st = testkit::states(&[(100, 0); 4]);
    for inst in st.iter_mut().flatten() {
        inst.fleet.cap = Some(100);
    }
    testkit::refresh_all(&mut st);
    let (mut a, mut b) = (strategy(&st), strategy(&st));
    let mut spread = std::collections::HashSet::new();
    for c in 0..16u64 {
        let r = req(c, c * 1000);
        let on_a = a.pick(&r, &testkit::view(&st), Allowed::All).unwrap();
        let on_b = b.pick(&r, &testkit::view(&st), Allowed::All).unwrap();
        assert_eq!(on_a, on_b, "conversation {c}");
        spread.insert(on_a);
    }
    assert!(spread.len() > 1, "homes differ by prompt: {spread:?}");
}
