//! Criterion benchmark: one engine step at a full batch of 256 decoding sequences
//! (the `llama-3.1-8b-h100` profile, prompts of 512 tokens, shared 256-token prefixes).

use criterion::{Criterion, criterion_group, criterion_main};
use inferplane_core::Time;
use inferplane_sim::{Engine, EngineProfile, SeqInput};
use std::hint::black_box;

fn full_batch() -> Engine {
    let profile = EngineProfile::preset("llama-3.1-8b-h100").expect("preset exists");
    let mut engine = Engine::new(profile, None);
    for i in 0..256u64 {
        let hashes = (0..32u64)
            .map(|b| if b < 16 { b } else { (i << 32) | b })
            .collect();
        engine
            .add(SeqInput {
                prompt_tokens: 512,
                block_hashes: hashes,
                max_tokens: 1_000_000 / 1000,
                content_hash: i,
                block_tokens: Vec::new(),
            })
            .expect("fits");
    }
    // Run until all 256 are admitted and decoding.
    let mut now = Time::ZERO;
    let mut events = Vec::new();
    while engine.num_running() < 256 || engine.num_waiting() > 0 {
        now = engine.step(now, &mut events).expect("has work").end;
        events.clear();
    }
    for _ in 0..4 {
        now = engine.step(now, &mut events).expect("has work").end;
        events.clear();
    }
    engine
}

fn bench_step(c: &mut Criterion) {
    let base = full_batch();
    c.bench_function("engine_step_batch_256_decode", |b| {
        b.iter_batched_ref(
            || (base.clone(), Vec::with_capacity(512)),
            |(engine, events)| {
                let info = engine.step(Time::from_secs_f64(10.0), events);
                black_box(info)
            },
            criterion::BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
