//! `prefix` routing at 1,000 instances and 1,032,000 indexed blocks: the cost of one
//! `pick` (matching a 292-block follow-up against the index and scoring every instance)
//! and of one `placed` (recording its blocks).
//!
//! 4,000 conversations of 282 blocks (4,512 tokens) each, the first 32 blocks one of 250
//! shared system prompts, are placed round the 1,000 instances (KV capacity 1,032 blocks
//! each: four conversations sharing one system prompt), so the index holds 1,032,000
//! entries and each system-prompt block is held by 4 instances. Before the criterion runs a plain loop of 20,000 picks prints p50 / p99 /
//! max.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::unwrap_used
)]

use criterion::{Criterion, criterion_group, criterion_main};
use inferplane_core::load::{SaturationConfig, refresh};
use inferplane_core::pool::{Allowed, InstanceIx, InstanceState, PoolView};
use inferplane_core::predict::OutputLengths;
use inferplane_core::route::{Prefix, PrefixConfig, RoutingStrategy};
use inferplane_core::{InstanceSpec, Priority, RequestId, RequestMeta, Time};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const INSTANCES: usize = 1_000;
const CONVERSATIONS: u64 = 4_000;
const BLOCKS: u64 = 282;
const SYSTEM: u64 = 32;

fn blocks(conversation: u64, extra: u64) -> Arc<[u64]> {
    let system = (0..SYSTEM).map(|b| (conversation % 250) << 32 | b);
    let own = (SYSTEM..BLOCKS + extra).map(|b| (1 << 63) | conversation << 32 | b);
    system.chain(own).collect()
}

fn request(id: u64, conversation: u64, extra: u64) -> RequestMeta {
    let mut m = RequestMeta::new(
        RequestId(id),
        "m",
        16 * (BLOCKS + extra) as u32,
        128,
        Time::ZERO,
    );
    m.prefix_blocks = blocks(conversation, extra);
    m
}

fn instances() -> Vec<Option<InstanceState>> {
    (0..INSTANCES)
        .map(|i| {
            let spec = InstanceSpec::new(format!("i{i}"), "u", "m", 64);
            let mut s = InstanceState::new(spec, InstanceIx::new(i as u32, 0));
            s.ready = true;
            s.inflight = (i % 7) as u32;
            s.engine.kv_capacity_tokens = Some(16 * 1_032);
            refresh(&mut s, &SaturationConfig::default(), None, Time::ZERO);
            Some(s)
        })
        .collect()
}

fn view<'a>(st: &'a [Option<InstanceState>], outputs: &'a OutputLengths) -> PoolView<'a> {
    PoolView {
        instances: st,
        routable: st.len(),
        routable_inflight: st.iter().flatten().map(|s| u64::from(s.inflight)).sum(),
        with_room: st.len(),
        capacity: 64 * st.len() as u64,
        queued: 0,
        epoch: 0,
        now: Time::ZERO,
        outputs,
        protect: Priority::Critical,
        protected: false,
    }
}

fn bench(c: &mut Criterion) {
    let st = instances();
    let outputs = OutputLengths::default();
    let v = view(&st, &outputs);
    let mut p = Prefix::new(PrefixConfig::default());
    p.rebuild(&v);
    for conv in 0..CONVERSATIONS {
        let ix = st[(conv % INSTANCES as u64) as usize].as_ref().unwrap().ix;
        p.placed(&request(conv, conv, 0), ix, Time::ZERO);
    }
    assert_eq!(p.index().len(), 1_032_000);
    let follow_ups: Vec<RequestMeta> = (0..1_000)
        .map(|i| request(i, i * 4 % CONVERSATIONS, 10))
        .collect();

    let mut samples: Vec<u64> = (0..20_000)
        .map(|i| {
            let r = &follow_ups[i % follow_ups.len()];
            let t = Instant::now();
            black_box(p.pick(r, &v, Allowed::All));
            t.elapsed().as_nanos() as u64
        })
        .collect();
    samples.sort_unstable();
    let q = |f: f64| samples[((samples.len() - 1) as f64 * f) as usize] as f64 / 1e3;
    println!(
        "prefix/pick 1,000 instances, 1,032,000 blocks: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
        q(0.5),
        q(0.99),
        q(1.0)
    );

    let mut i = 0usize;
    c.bench_function("prefix/pick", |b| {
        b.iter(|| {
            i += 1;
            black_box(p.pick(&follow_ups[i % follow_ups.len()], &v, Allowed::All))
        })
    });
    let mut n = 0u64;
    c.bench_function("prefix/placed", |b| {
        b.iter(|| {
            n += 1;
            let conv = n % CONVERSATIONS;
            let ix = st[(conv % INSTANCES as u64) as usize].as_ref().unwrap().ix;
            p.placed(&follow_ups[(n % 1_000) as usize], ix, Time::ZERO);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
