use super::*;
use crate::prefix::Matches;
use proptest::prelude::*;

fn ix(slot: u32, generation: u32) -> InstanceIx {
    InstanceIx::new(slot, generation)
}

fn hits(index: &PrefixIndex, hashes: &[u64], slots: usize) -> Vec<u32> {
    let mut m = Matches::default();
    m.reserve(slots);
    index.matches(hashes, Time::ZERO, &mut m);
    (0..slots).map(|s| m.blocks(s)).collect()
}

#[test]
fn index_entry_and_bucket_sizes_match_the_stated_bytes_per_block() {
    assert_eq!(std::mem::size_of::<Entry>(), ENTRY_BYTES);
    assert_eq!(std::mem::size_of::<(u64, u32)>() + 1, BUCKET_BYTES);
    assert_eq!(BYTES_PER_BLOCK, 79);
}

#[test]
fn index_counts_leading_blocks_each_instance_holds() {
    let mut p = PrefixIndex::new(100, None);
    p.placed(ix(0, 0), &[1, 2, 3], Time::ZERO);
    p.placed(ix(1, 0), &[1, 2, 9], Time::ZERO);
    p.placed(ix(2, 0), &[2, 3], Time::ZERO); // not a prefix of the query
    assert_eq!(hits(&p, &[1, 2, 3, 4], 3), [3, 2, 0]);
    assert_eq!(p.len(), 8);
    assert!(p.holds(ix(1, 0), 9) && !p.holds(ix(1, 0), 3));
}

#[test]
fn index_never_holds_more_than_max_blocks_dropping_the_oldest() {
    let mut p = PrefixIndex::new(10, None);
    for i in 0..20u64 {
        p.placed(
            ix((i % 3) as u32, 0),
            &[i * 100, i * 100 + 1],
            Time::from_secs_f64(i as f64),
        );
        assert!(p.len() <= 10);
    }
    assert_eq!(p.len(), 10);
    assert!(p.holds(ix(1, 0), 1900) && !p.holds(ix(0, 0), 0));
    assert!(p.heap_bytes() <= 10 * BYTES_PER_BLOCK + 64 * ENTRY_BYTES);
}

#[test]
fn index_keeps_an_instance_within_its_kv_capacity_lru_first_blocks_last() {
    let mut p = PrefixIndex::new(1_000, None);
    // 64 tokens = 4 blocks
    p.set_capacity(ix(0, 0), Some(64));
    p.placed(ix(0, 0), &[1, 2, 3], Time::ZERO);
    p.placed(ix(0, 0), &[10, 11, 12], Time::ZERO);
    assert_eq!(p.blocks_of(ix(0, 0)), 4);
    // the newest prompt whole, and the first block of the older one (touched last)
    assert!(p.holds(ix(0, 0), 1) && !p.holds(ix(0, 0), 2) && !p.holds(ix(0, 0), 3));
    assert_eq!(hits(&p, &[10, 11, 12], 1), [3]);
    // re-placing refreshes: the older prompt's first block moves ahead of block 12
    p.placed(ix(0, 0), &[1], Time::ZERO);
    p.placed(ix(0, 0), &[20], Time::ZERO);
    assert!(p.holds(ix(0, 0), 1) && !p.holds(ix(0, 0), 12));
    p.set_capacity(ix(0, 0), Some(16));
    assert_eq!(p.blocks_of(ix(0, 0)), 1);
    assert!(p.holds(ix(0, 0), 20));
}

#[test]
fn index_drops_a_removed_instance_and_a_reused_slot_inherits_nothing() {
    let mut p = PrefixIndex::new(100, None);
    p.placed(ix(0, 0), &[1, 2], Time::ZERO);
    p.placed(ix(1, 0), &[1, 2], Time::ZERO);
    p.remove_instance(ix(0, 0));
    assert_eq!(p.len(), 2);
    assert_eq!(hits(&p, &[1, 2], 2), [0, 2]);
    // slot 1 reused by a newer generation without a removal first
    p.placed(ix(1, 1), &[7], Time::ZERO);
    assert!(!p.holds(ix(1, 1), 1) && p.holds(ix(1, 1), 7));
    assert_eq!(p.blocks_of(ix(1, 0)), 0);
    // news of the old generation is ignored
    p.placed(ix(1, 0), &[1], Time::ZERO);
    assert!(!p.holds(ix(1, 1), 1));
    assert_eq!(p.len(), 1);
    // nor is late news of a removed instance
    p.placed(ix(0, 0), &[1], Time::ZERO);
    assert_eq!(p.blocks_of(ix(0, 0)), 0);
    assert_eq!(p.len(), 1);
}

#[test]
fn index_applies_stored_removed_and_cleared_events() {
    let mut p = PrefixIndex::new(100, None);
    p.stored(ix(0, 0), &[1, 2, 3], Time::ZERO);
    p.stored(ix(1, 0), &[1, 2], Time::ZERO);
    p.removed(ix(0, 0), &[2]);
    assert_eq!(hits(&p, &[1, 2, 3], 2), [1, 2]);
    p.cleared(ix(1, 0));
    assert_eq!(p.blocks_of(ix(1, 0)), 0);
    assert_eq!(p.instances().count(), 2, "a cleared instance stays known");
    assert_eq!(hits(&p, &[1, 2, 3], 2), [1, 0]);
    assert_eq!(p.len(), 2);
}

#[test]
fn index_ages_out_entries_older_than_max_age() {
    let mut p = PrefixIndex::new(100, Some(Duration::from_secs(10)));
    p.placed(ix(0, 0), &[1], Time::ZERO);
    p.placed(ix(1, 0), &[1], Time::from_secs_f64(8.0));
    let mut m = Matches::default();
    m.reserve(2);
    p.matches(&[1], Time::from_secs_f64(12.0), &mut m);
    assert_eq!(
        (m.blocks(0), m.blocks(1)),
        (0, 1),
        "an old entry no longer counts"
    );
    p.placed(ix(1, 0), &[5], Time::from_secs_f64(12.0));
    assert!(!p.holds(ix(0, 0), 1), "and is dropped at the next change");
}

#[derive(Debug, Clone)]
enum Op {
    Placed(u32, u32, Vec<u64>),
    Removed(u32, u32, Vec<u64>),
    Cleared(u32, u32),
    Gone(u32, u32),
    Capacity(u32, u32, Option<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    let hashes = prop::collection::vec(0u64..64, 0..12);
    let (s, g) = (0u32..6, 0u32..3);
    prop_oneof![
        4 => (s.clone(), g.clone(), hashes.clone()).prop_map(|(s, g, h)| Op::Placed(s, g, h)),
        1 => (s.clone(), g.clone(), hashes).prop_map(|(s, g, h)| Op::Removed(s, g, h)),
        1 => (s.clone(), g.clone()).prop_map(|(s, g)| Op::Cleared(s, g)),
        1 => (s.clone(), g.clone()).prop_map(|(s, g)| Op::Gone(s, g)),
        1 => (s, g, prop::option::of(0u64..200)).prop_map(|(s, g, c)| Op::Capacity(s, g, c)),
    ]
}

proptest! {
    #[test]
    fn index_bounds_hold_under_any_sequence_of_operations(
        max in 1usize..40,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut p = PrefixIndex::new(max, None);
        let mut caps: Vec<Option<(InstanceIx, u64)>> = vec![None; 6];
        for (t, op) in ops.into_iter().enumerate() {
            let now = Time::from_millis(t as u64);
            match op {
                Op::Placed(s, g, h) => p.placed(ix(s, g), &h, now),
                Op::Removed(s, g, h) => p.removed(ix(s, g), &h),
                Op::Cleared(s, g) => p.cleared(ix(s, g)),
                Op::Gone(s, g) => {
                    p.remove_instance(ix(s, g));
                    if caps[s as usize].is_some_and(|(c, _)| c == ix(s, g)) {
                        caps[s as usize] = None;
                    }
                }
                Op::Capacity(s, g, c) => {
                    p.set_capacity(ix(s, g), c);
                    caps[s as usize] = c.map(|c| (ix(s, g), c));
                }
            }
            prop_assert!(p.len() <= max);
            prop_assert!(p.entries.len() <= max);
            let total: usize = p.instances().map(|(_, n)| n).sum();
            prop_assert_eq!(total, p.len());
            for (i, n) in p.instances() {
                if let Some((cix, c)) = caps[i.slot()] && cix == i {
                    prop_assert!(n as u64 <= c / u64::from(BLOCK_TOKENS));
                }
                prop_assert_eq!(p.insts[i.slot()].map(|h| h.ix), Some(i));
            }
            let chained: usize = p.heads.values().map(|&first| {
                let mut n = 0;
                let mut e = first;
                while e != NIL { n += 1; e = p.entries[e as usize].chain; }
                n
            }).sum();
            prop_assert_eq!(chained, p.len());
        }
    }
}

proptest! {
    /// Past the point where one instance alone matches, the run's end is searched, not
    /// walked: it must agree with a block-by-block count whenever instances hold prefixes.
    #[test]
    fn index_search_for_a_lone_holder_s_run_agrees_with_counting_every_block(
        runs in prop::collection::vec(0usize..300, 1..5),
        query in 0usize..320,
    ) {
        let prompt: Vec<u64> = (1000..1320).collect();
        let mut p = PrefixIndex::new(10_000, None);
        for (s, &run) in runs.iter().enumerate() {
            p.placed(ix(s as u32, 0), &prompt[..run], Time::ZERO);
        }
        let got = hits(&p, &prompt[..query], runs.len());
        let want: Vec<u32> = runs.iter().map(|&r| r.min(query) as u32).collect();
        prop_assert_eq!(got, want);
    }
}
