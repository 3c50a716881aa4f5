//! Planner speed: ranking layouts for a large MoE model on a 64-GPU cluster must take
//! milliseconds, not seconds.

use criterion::{Criterion, criterion_group, criterion_main};
use inferplane_planner::{
    Cluster, EngineOptions, Objective, Workload, find_gpu, find_model, plan, plan_report,
};
use std::hint::black_box;

fn bench_plan(c: &mut Criterion) {
    let (Some(deepseek), Some(llama), Some(h100)) = (
        find_model("deepseek-v3"),
        find_model("llama-3.1-405b"),
        find_gpu("h100-sxm"),
    ) else {
        return;
    };
    let cluster = Cluster {
        gpu: h100,
        gpus_per_node: 8,
        nodes: 8,
    };
    let workload = Workload::default();
    c.bench_function("plan deepseek-v3 on 64 x h100-sxm (throughput)", |b| {
        b.iter(|| {
            plan(
                black_box(&deepseek),
                &cluster,
                &workload,
                Objective::Throughput,
            )
        })
    });
    c.bench_function("plan deepseek-v3 on 64 x h100-sxm (cost)", |b| {
        b.iter(|| {
            plan_report(
                black_box(&deepseek),
                &cluster,
                &workload,
                Objective::Cost,
                &EngineOptions::default(),
            )
        })
    });
    c.bench_function("plan llama-3.1-405b on 64 x h100-sxm (throughput)", |b| {
        b.iter(|| {
            plan(
                black_box(&llama),
                &cluster,
                &workload,
                Objective::Throughput,
            )
        })
    });
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
