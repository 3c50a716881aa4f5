//! Simulated requests per second of the discrete-event simulation: 10,000 requests of the
//! default ShareGPT-like mix over 10 H100 llama-3.1-8b instances at about 80% load.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use inferplane_bench::cluster::{Cluster, ClusterFile};
use inferplane_bench::des;
use inferplane_bench::workload::{WorkloadSpec, mean_sizes};

fn des_throughput(c: &mut Criterion) {
    let file: ClusterFile = toml::from_str(
        "[[instances]]\nid = \"h100\"\nmodel = \"llama-3.1-8b\"\ngpu = \"h100-sxm\"\ncount = 10\nmax_inflight = 64\n",
    )
    .unwrap();
    let cluster = Cluster::resolve(file).unwrap();
    let mut spec = WorkloadSpec {
        requests: 10_000,
        ..WorkloadSpec::default()
    };
    let (p, o) = mean_sizes(&spec.generate().unwrap());
    spec.rate = 0.8 * cluster.capacity_rps(p, o).unwrap();
    let items = spec.generate().unwrap();
    let mut g = c.benchmark_group("des");
    g.sample_size(10);
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("10k_requests_10_instances", |b| {
        b.iter(|| des::simulate(&cluster, &items, "bench").unwrap())
    });
    g.finish();
}

criterion_group!(benches, des_throughput);
criterion_main!(benches);
