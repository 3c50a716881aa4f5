//! Tests of the engine model: exact timings, chunked prefill, preemption, prefix caching,
//! determinism, and proptest invariants over random workloads.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn tiny() -> EngineProfile {
    EngineProfile::preset("tiny").unwrap()
}

fn input(prompt: u32, max_tokens: u32, hashes: Vec<u64>) -> SeqInput {
    SeqInput {
        prompt_tokens: prompt,
        block_hashes: hashes,
        max_tokens,
        content_hash: u64::from(prompt) * 31 + u64::from(max_tokens),
        block_tokens: Vec::new(),
    }
}

/// Runs until idle; returns each event with the time it happened.
fn drain(engine: &mut Engine, mut now: Time) -> (Vec<(Time, Event)>, Time) {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut steps = 0;
    while let Some(info) = engine.step(now, &mut buf) {
        now = info.end;
        out.extend(buf.drain(..).map(|e| (now, e)));
        steps += 1;
        assert!(steps < 1_000_000, "engine did not drain");
    }
    (out, now)
}

fn first_token_time(events: &[(Time, Event)], id: SeqId) -> Time {
    events
        .iter()
        .find(|(_, e)| matches!(e, Event::Token { id: i, index: 0 } if *i == id))
        .map(|(t, _)| *t)
        .unwrap()
}

#[test]
fn single_request_timing_matches_the_profile_by_hand() {
    let mut e = Engine::new(tiny(), None);
    let id = e.add(input(32, 4, vec![])).unwrap();
    let (events, end) = drain(&mut e, Time::ZERO);
    // Prefill: 2 ms + 32 x 10 us = 2.32 ms, emits token 0.
    assert_eq!(first_token_time(&events, id), Time::from_micros(2_320));
    // Three decode steps of 2 ms + 1 x 20 us.
    assert_eq!(end, Time::from_micros(2_320 + 3 * 2_020));
    let finished: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Finished {
                reason,
                completion_tokens,
                ..
            } => Some((*reason, *completion_tokens)),
            _ => None,
        })
        .collect();
    assert_eq!(finished, vec![(FinishReason::Length, 4)]);
    assert_eq!(e.stats().generation_tokens, 4);
    assert_eq!(e.stats().prompt_tokens, 32);
    assert_eq!(e.kv_blocks_in_use(), 0, "everything freed");
}

#[test]
fn long_prompts_are_prefilled_in_chunks_of_the_token_budget() {
    let mut profile = tiny();
    profile.max_num_batched_tokens = 1000;
    let mut e = Engine::new(profile, None);
    e.add(input(2500, 1, vec![])).unwrap();
    let mut buf = Vec::new();
    let chunks: Vec<u32> = std::iter::from_fn(|| e.step(Time::ZERO, &mut buf))
        .map(|s| s.prefill_tokens)
        .collect();
    assert_eq!(chunks, vec![1000, 1000, 500]);
}

#[test]
fn batch_is_capped_by_max_num_seqs_and_the_rest_wait() {
    let mut profile = tiny();
    profile.max_num_seqs = 3;
    let mut e = Engine::new(profile, None);
    for _ in 0..5 {
        e.add(input(8, 10, vec![])).unwrap();
    }
    let mut buf = Vec::new();
    e.step(Time::ZERO, &mut buf).unwrap();
    assert_eq!(e.num_running(), 3);
    assert_eq!(e.num_waiting(), 2);
}

#[test]
fn when_kv_runs_out_the_newest_running_request_is_preempted_and_later_finishes() {
    let mut profile = tiny();
    profile.kv_blocks = 6; // 96 tokens
    let mut e = Engine::new(profile, None);
    let a = e.add(input(16, 40, vec![])).unwrap(); // needs up to 4 blocks
    let b = e.add(input(16, 40, vec![])).unwrap();
    let (events, _) = drain(&mut e, Time::ZERO);
    assert!(e.stats().preemptions >= 1, "{:?}", e.stats());
    for id in [a, b] {
        let tokens = events
            .iter()
            .filter(|(_, ev)| matches!(ev, Event::Token { id: i, .. } if *i == id))
            .count();
        assert_eq!(tokens, 40, "each request streams each token exactly once");
    }
    // The older request (a) is never the victim: it finishes first.
    let finish_order: Vec<SeqId> = events
        .iter()
        .filter_map(|(_, ev)| match ev {
            Event::Finished { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(finish_order, vec![a, b]);
}

#[test]
fn prefix_cache_hits_skip_prefill_and_shorten_ttft() {
    let hashes: Vec<u64> = (1..=10).collect(); // 160-token prompt, 10 full blocks
    let mut e = Engine::new(tiny(), None);
    let cold = e.add(input(160, 2, hashes.clone())).unwrap();
    let (ev1, t1) = drain(&mut e, Time::ZERO);
    let ttft_cold = first_token_time(&ev1, cold).saturating_since(Time::ZERO);
    let warm = e.add(input(160, 2, hashes)).unwrap();
    let (ev2, _) = drain(&mut e, t1);
    let ttft_warm = first_token_time(&ev2, warm).saturating_since(t1);
    // 9 blocks hit (one token must always be computed): 16 tokens prefilled instead of 160.
    assert_eq!(e.stats().prefix_cache_hits, 144);
    assert_eq!(e.stats().prefix_cache_queries, 320);
    assert_eq!(ttft_cold, Duration::from_micros(2_000 + 1_600));
    assert_eq!(ttft_warm, Duration::from_micros(2_000 + 160));
    let cached = ev2.iter().find_map(|(_, e)| match e {
        Event::Finished { cached_tokens, .. } => Some(*cached_tokens),
        _ => None,
    });
    assert_eq!(cached, Some(144));
}

#[test]
fn requests_that_cannot_fit_are_refused_with_the_reason() {
    let mut profile = tiny();
    profile.kv_blocks = 4;
    let mut e = Engine::new(profile, None);
    assert_eq!(e.add(input(0, 1, vec![])), Err(AddError::EmptyPrompt));
    assert_eq!(e.add(input(1, 0, vec![])), Err(AddError::ZeroMaxTokens));
    assert!(matches!(
        e.add(input(8000, 500, vec![])),
        Err(AddError::ContextTooLong { .. })
    ));
    assert_eq!(
        e.add(input(60, 10, vec![])),
        Err(AddError::ExceedsKvCache {
            needed: 5,
            total: 4
        })
    );
}

#[test]
fn seeded_stop_gives_deterministic_varied_lengths_within_max_tokens() {
    let run = |seed| {
        let mut e = Engine::new(tiny(), Some(seed));
        for i in 0..20u64 {
            let mut inp = input(8, 50, vec![]);
            inp.content_hash = i;
            e.add(inp).unwrap();
        }
        drain(&mut e, Time::ZERO)
            .0
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Finished {
                    completion_tokens,
                    reason,
                    ..
                } => Some((completion_tokens, reason)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same lengths");
    assert_ne!(a, run(8));
    assert!(a.iter().all(|(n, _)| (1..=50).contains(n)));
    assert!(a.iter().any(|(n, _)| *n < 50));
    assert!(
        a.iter()
            .all(|(n, r)| (*n == 50) == (*r == FinishReason::Length))
    );
}

fn finishes(events: &[(Time, Event)]) -> Vec<(SeqId, FinishReason, u32)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Finished {
                id,
                reason,
                completion_tokens,
                ..
            } => Some((*id, *reason, *completion_tokens)),
            _ => None,
        })
        .collect()
}

#[test]
fn min_tokens_sets_the_exact_output_length_and_overrides_the_stop_seed() {
    for seed in [None, Some(7)] {
        let mut e = Engine::new(tiny(), seed);
        let short = e.add_with_min_tokens(input(8, 50, vec![]), 3).unwrap();
        let full = e.add_with_min_tokens(input(8, 50, vec![]), 50).unwrap();
        let one = e.add_with_min_tokens(input(8, 1, vec![]), 1).unwrap();
        let mut got = finishes(&drain(&mut e, Time::ZERO).0);
        got.sort_by_key(|(id, _, _)| *id);
        assert_eq!(
            got,
            vec![
                (short, FinishReason::Stop, 3),
                (full, FinishReason::Length, 50),
                (one, FinishReason::Length, 1),
            ],
            "stop seed {seed:?}"
        );
        assert_eq!(e.stats().generation_tokens, 54);
    }
}

#[test]
fn zero_min_tokens_means_no_minimum() {
    let run = |min_tokens: Option<u32>| {
        let mut e = Engine::new(tiny(), Some(5));
        for i in 0..10u64 {
            let mut inp = input(8, 40, vec![]);
            inp.content_hash = i;
            match min_tokens {
                Some(m) => e.add_with_min_tokens(inp, m).unwrap(),
                None => e.add(inp).unwrap(),
            };
        }
        finishes(&drain(&mut e, Time::ZERO).0)
    };
    assert_eq!(
        run(Some(0)),
        run(None),
        "min_tokens = 0 keeps the seeded lengths"
    );
}

#[test]
fn min_tokens_above_max_tokens_is_refused() {
    let mut e = Engine::new(tiny(), None);
    assert_eq!(
        e.add_with_min_tokens(input(8, 5, vec![]), 6),
        Err(AddError::MinTokensAboveMax {
            min_tokens: 6,
            max_tokens: 5
        })
    );
    assert!(!e.has_work());
}

#[test]
fn preemptions_are_counted_once_per_victim_in_stats_and_step_info() {
    let mut profile = tiny();
    profile.kv_blocks = 6;
    let mut e = Engine::new(profile, None);
    e.add(input(16, 40, vec![])).unwrap();
    e.add(input(16, 40, vec![])).unwrap();
    let mut now = Time::ZERO;
    let mut buf = Vec::new();
    let mut from_steps = 0u64;
    while let Some(info) = e.step(now, &mut buf) {
        now = info.end;
        from_steps += u64::from(info.preempted);
    }
    assert!(from_steps >= 1);
    assert_eq!(e.stats().preemptions, from_steps);
}

#[test]
fn aborted_requests_free_their_blocks_and_emit_nothing_more() {
    let mut e = Engine::new(tiny(), None);
    let a = e.add(input(64, 100, vec![])).unwrap();
    let mut buf = Vec::new();
    e.step(Time::ZERO, &mut buf).unwrap();
    assert!(e.kv_blocks_in_use() > 0);
    assert!(e.abort(a));
    assert!(!e.abort(a), "already gone");
    assert_eq!(e.kv_blocks_in_use(), 0);
    assert!(!e.has_work());
    assert!(e.step(Time::ZERO, &mut buf).is_none());
    assert_eq!(e.stats().aborted, 1);
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        prompt: u32,
        max_tokens: u32,
        group: u8,
    },
    Abort(u8),
    Step,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..300, 1u32..60, 0u8..4).prop_map(|(prompt, max_tokens, group)| Op::Add { prompt, max_tokens, group }),
        1 => any::<u8>().prop_map(Op::Abort),
        6 => Just(Op::Step),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// KV budget never exceeded, batch never above max_num_seqs, every admitted request
    /// finishes exactly once with exactly its tokens (or is aborted), preempted ones resume.
    #[test]
    fn engine_invariants_hold_over_random_workloads(ops in proptest::collection::vec(op(), 1..120), kv_blocks in 8u32..64, max_seqs in 1u32..8) {
        let mut profile = tiny();
        profile.kv_blocks = kv_blocks;
        profile.max_num_seqs = max_seqs;
        profile.max_num_batched_tokens = 128;
        let mut e = Engine::new(profile, Some(3));
        let mut added: Vec<SeqId> = Vec::new();
        let mut aborted: Vec<SeqId> = Vec::new();
        let mut tokens: HashMap<SeqId, u32> = HashMap::new();
        let mut finished: HashMap<SeqId, u32> = HashMap::new();
        let mut now = Time::ZERO;
        let mut buf = Vec::new();
        let check = |e: &Engine, buf: &mut Vec<Event>, tokens: &mut HashMap<SeqId, u32>, finished: &mut HashMap<SeqId, u32>| -> Result<(), TestCaseError> {
            prop_assert!(e.kv_blocks_in_use() <= kv_blocks);
            prop_assert!(e.num_running() <= max_seqs as usize);
            for ev in buf.drain(..) {
                match ev {
                    Event::Token { id, index } => {
                        let n = tokens.entry(id).or_default();
                        prop_assert_eq!(index, *n, "tokens in order, none repeated");
                        *n += 1;
                    }
                    Event::Finished { id, completion_tokens, .. } => {
                        prop_assert!(finished.insert(id, completion_tokens).is_none(), "finished twice");
                        prop_assert_eq!(tokens.get(&id).copied(), Some(completion_tokens));
                    }
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Add { prompt, max_tokens, group } => {
                    let hashes = (0..prompt / 16).map(|b| u64::from(group) << 32 | u64::from(b)).collect();
                    if let Ok(id) = e.add(input(prompt, max_tokens, hashes)) { added.push(id); }
                }
                Op::Abort(k) => {
                    if !added.is_empty() {
                        let id = added[k as usize % added.len()];
                        if e.abort(id) { aborted.push(id); }
                    }
                }
                Op::Step => {
                    if let Some(info) = e.step(now, &mut buf) { now = info.end; }
                    check(&e, &mut buf, &mut tokens, &mut finished)?;
                }
            }
        }
        let mut steps = 0;
        while let Some(info) = e.step(now, &mut buf) {
            now = info.end;
            check(&e, &mut buf, &mut tokens, &mut finished)?;
            steps += 1;
            prop_assert!(steps < 100_000, "did not drain");
        }
        prop_assert!(!e.has_work());
        prop_assert_eq!(e.kv_blocks_in_use(), 0);
        // Conservation: each admitted request either finished once or was aborted, never both.
        for id in &added {
            let done = finished.contains_key(id);
            let gone = aborted.contains(id);
            prop_assert!(done != gone, "request {:?}: finished={} aborted={}", id, done, gone);
        }
        prop_assert_eq!(e.stats().finished, finished.len() as u64);
        prop_assert_eq!(e.stats().aborted, aborted.len() as u64);
    }

    /// The same inputs give the same event trace, step for step.
    #[test]
    fn same_inputs_same_trace(prompts in proptest::collection::vec((1u32..200, 1u32..30), 1..30)) {
        let run = || {
            let mut profile = tiny();
            profile.kv_blocks = 40;
            let mut e = Engine::new(profile, Some(11));
            for (i, (p, m)) in prompts.iter().enumerate() {
                let hashes = (0..p / 16).map(|b| (i as u64 % 3) << 32 | u64::from(b)).collect();
                e.add(input(*p, *m, hashes)).unwrap();
            }
            drain(&mut e, Time::ZERO).0
        };
        prop_assert_eq!(run(), run());
    }
}

#[test]
fn cache_events_record_stores_with_parents_and_tokens_then_lru_evictions_then_a_clear() {
    let mut p = tiny();
    p.kv_blocks = 4;
    let mut e = Engine::new(p, None);
    e.record_cache_events();
    let tokens: Vec<u32> = (0..48).collect();
    // 48-token prompt: blocks 0 and 1 are cached (the last block keeps one token to compute
    // at admission, but after prefill all three full blocks are stored).
    let mut a = input(48, 1, vec![10, 11, 12]);
    a.block_tokens = tokens.clone();
    e.add(a).unwrap();
    drain(&mut e, Time::ZERO);
    let mut out = Vec::new();
    e.drain_cache_events(&mut out);
    assert_eq!(
        out,
        vec![
            CacheEvent::Stored {
                hash: 10,
                parent: None,
                tokens: tokens[0..16].to_vec()
            },
            CacheEvent::Stored {
                hash: 11,
                parent: Some(10),
                tokens: tokens[16..32].to_vec()
            },
            CacheEvent::Stored {
                hash: 12,
                parent: Some(11),
                tokens: tokens[32..48].to_vec()
            },
        ]
    );
    // Reusing the prefix stores nothing new; a different prompt needs room: LRU evictions.
    e.add(input(48, 1, vec![10, 11, 12])).unwrap();
    e.add(input(48, 1, vec![20, 21, 22])).unwrap();
    drain(&mut e, Time::ZERO);
    out.clear();
    e.drain_cache_events(&mut out);
    let removed: Vec<u64> = out
        .iter()
        .filter_map(|ev| match ev {
            CacheEvent::Removed { hash } => Some(*hash),
            _ => None,
        })
        .collect();
    assert!(
        !removed.is_empty(),
        "a 4-block cache evicts to hold 2 x 3 blocks"
    );
    let first_removed = out
        .iter()
        .position(|ev| matches!(ev, CacheEvent::Removed { .. }));
    let stored_20 = out
        .iter()
        .position(|ev| matches!(ev, CacheEvent::Stored { hash: 20, .. }));
    assert!(
        first_removed < stored_20,
        "the eviction that made room comes first"
    );
    assert!(e.reset_prefix_cache(), "idle engine: cleared");
    out.clear();
    e.drain_cache_events(&mut out);
    assert_eq!(out.last(), Some(&CacheEvent::Cleared));
    assert_eq!(
        e.stats().prefix_cache_hits,
        32,
        "the second 10-11-12 prompt hit 2 blocks"
    );
}

#[test]
fn no_cache_events_are_kept_unless_recording() {
    let mut e = Engine::new(tiny(), None);
    e.add(input(48, 1, vec![1, 2, 3])).unwrap();
    drain(&mut e, Time::ZERO);
    let mut out = Vec::new();
    e.drain_cache_events(&mut out);
    assert!(out.is_empty());
}
