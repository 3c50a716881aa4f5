//! Tokenizing a 2,048-token chat prompt at the edge (the tiny test tokenizer: a word-level
//! model, cheaper per token than a real BPE, so read it as a lower bound), with and
//! without block hashing.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use inferplane_gateway::meta::BodyMeta;
use inferplane_gateway::prompt::{BlockRouting, facts};
use inferplane_tokenize::{PromptTokenizer, testing};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = testing::write_tiny_tokenizer(dir.path()).unwrap();
    let tk = PromptTokenizer::load(&path, None).unwrap();
    // the template adds 6 tokens to the message's 2,042
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": testing::words(2042)}],
    }))
    .unwrap();
    let bm = BodyMeta::parse(&body).unwrap();
    let on = BlockRouting::default();
    on.set(true);
    assert_eq!(facts("m", &bm, Some(&tk), Some(&on)).prompt_tokens, 2048);
    c.bench_function("tokenize_chat_2048_tokens_and_hash", |b| {
        b.iter(|| facts("m", &bm, Some(&tk), Some(&on)))
    });
    let off = BlockRouting::default();
    c.bench_function("tokenize_chat_2048_tokens_no_hash", |b| {
        b.iter(|| facts("m", &bm, Some(&tk), Some(&off)))
    });
    c.bench_function("stand_in_chat_2048_tokens_and_hash", |b| {
        b.iter(|| facts("m", &bm, None, Some(&on)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
