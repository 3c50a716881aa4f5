//! The fair share between tenants in the DES: two tenants in one class, one sending ten
//! times the other's rate (`bench/workloads/tenants.toml`), on real cluster files. The
//! light tenant's TTFT p99 is compared with what the very same requests get alone and with
//! what they get without fair share (the same run, no tenants known); the heavy tenant's
//! p99 and requests served say what it gives up.
//!
//! Measured (release, 4000 requests; `cargo test --release -p inferplane-bench --lib
//! des_fair -- --nocapture`), light p99 alone / with the heavy tenant / without fair share:
//!
//! - Where the gateway holds the queue (every instance `max_inflight = 16`): hetero 0.9x
//!   0.41 / 0.32 / 1.27 s, hetero 1.5x 0.39 / 0.51 (1.30x) / 30.1 s, h100x8 0.9x 0.071 /
//!   0.073 (1.04x) / 0.44 s, h100x8 1.5x 0.073 / 0.089 (1.22x) / 20.6 s. The price: the
//!   heavy tenant's p99 at 0.9x goes from 1.20 to 1.70 s (hetero) and 0.46 to 0.70 s
//!   (h100x8), and at 1.5x on hetero it is served 2996 requests instead of 3210 (the slots
//!   kept free for the light tenant). With `max_inflight = 8` the light tenant gets 1.21x,
//!   0.63x, 1.06x and 1.23x of alone. A wider margin (the light tenant's recent peak +
//!   its square root + 1 slots kept) brings every one of these within 1.14x, but costs
//!   the heavy tenant 11% to 17% of its requests when overloaded and a 3x to 6x p99 at
//!   0.9x: not taken.
//! - Where engines queue on their own (no `max_inflight`): hetero 1.5x 0.40 / 2.52 / 8.42 s,
//!   hetero 0.9x 0.40 / 1.65 / 1.65 s, h100x8 1.5x 0.072 / 0.183 / 0.183 s, h100x8 0.9x
//!   0.078 / 0.114 / 0.114 s: the gateway's queue is short or empty, and what the light
//!   tenant loses is the saturated engines' slower steps, which no gateway order removes.

use crate::cluster::Cluster;
use crate::des::simulate;
use crate::workload::{WorkItem, WorkloadSpec, mean_sizes};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench"))
}

/// The workload at `load` times the cluster's estimated capacity.
fn workload(cluster: &Cluster, load: f64, requests: usize) -> Vec<WorkItem> {
    let text = std::fs::read_to_string(root().join("workloads/tenants.toml")).unwrap();
    let mut spec: WorkloadSpec = toml::from_str(&text).unwrap();
    spec.requests = requests;
    let probe = spec.generate().unwrap();
    let (p, o) = mean_sizes(&probe);
    spec.rate = load * cluster.capacity_rps(p, o).unwrap();
    spec.generate().unwrap()
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize)
        .saturating_sub(1)
        .min(v.len() - 1)]
}

/// One class's TTFT p99 (seconds), requests without a first token, and requests served,
/// in a run of `items` (by class: the run without fair share has no tenants).
fn class_stats(cluster: &Cluster, items: &[WorkItem], class: &str) -> (f64, usize, usize) {
    let run = simulate(cluster, items, "fair").unwrap();
    let mut ttft = Vec::new();
    let mut failed = 0;
    for r in &run.records {
        if items[r.item as usize].class.as_deref() != Some(class) {
            continue;
        }
        match r.ttft {
            Some(t) if r.failure.is_none() => ttft.push(t),
            _ => failed += 1,
        }
    }
    let served = ttft.len();
    (p99(ttft), failed, served)
}

/// What one cluster and load gave.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// The light tenant's TTFT p99 alone, with the heavy one, and without fair share.
    solo: f64,
    shared: f64,
    unfair: f64,
    /// The heavy tenant's TTFT p99 and requests served, with and without fair share.
    heavy: (f64, usize),
    heavy_unfair: (f64, usize),
}

fn check(cluster_file: &str, load: f64) -> Outcome {
    check_with(cluster_file, load, None)
}

/// [`check`] with every instance's `max_inflight` set (the gateway, not the engines,
/// then holds the queue).
fn check_with(cluster_file: &str, load: f64, max_inflight: Option<u32>) -> Outcome {
    let mut cluster = Cluster::load(&root().join(cluster_file)).unwrap();
    if let Some(m) = max_inflight {
        for i in &mut cluster.instances {
            i.spec.max_inflight = Some(m);
        }
    }
    let items = workload(&cluster, load, 4000);
    let alone: Vec<WorkItem> = items
        .iter()
        .filter(|i| i.tenant.as_deref() == Some("light"))
        .cloned()
        .collect();
    let blind: Vec<WorkItem> = items
        .iter()
        .cloned()
        .map(|mut i| {
            i.tenant = None;
            i
        })
        .collect();
    let (solo, _, _) = class_stats(&cluster, &alone, "light");
    let (shared, failed, _) = class_stats(&cluster, &items, "light");
    let (unfair, _, _) = class_stats(&cluster, &blind, "light");
    let (hp, _, hs) = class_stats(&cluster, &items, "heavy");
    let (hpu, _, hsu) = class_stats(&cluster, &blind, "heavy");
    eprintln!(
        "{cluster_file} max_inflight {max_inflight:?} load {load}: light TTFT p99 alone {solo:.3}s, with the heavy tenant {shared:.3}s ({:.2}x), without fair share {unfair:.3}s ({:.2}x); heavy p99 {hp:.3}s / {hpu:.3}s, served {hs} / {hsu}; light failures {failed}",
        shared / solo,
        unfair / solo
    );
    assert_eq!(failed, 0, "{cluster_file}: the light tenant lost requests");
    // the light tenant never does worse than without fair share
    assert!(
        shared <= unfair * 1.05,
        "{cluster_file} at load {load}: fair share made the light tenant worse: {shared:.3}s vs {unfair:.3}s"
    );
    Outcome {
        solo,
        shared,
        unfair,
        heavy: (hp, hs),
        heavy_unfair: (hpu, hsu),
    }
}

#[test]
fn fair_share_keeps_the_light_tenant_near_alone_where_the_gateway_queues() {
    // every instance with max_inflight 16: the heavy tenant's flood waits at the gateway,
    // where the fair share and the headroom decide
    for cluster in ["hetero.toml", "h100x8.toml"] {
        for load in [0.9, 1.5] {
            let o = check_with(cluster, load, Some(16));
            assert!(
                o.shared <= 1.35 * o.solo,
                "{cluster} at {load}: light p99 {:.3}s vs {:.3}s alone",
                o.shared,
                o.solo
            );
            // what the heavy tenant gives up for it stays small
            assert!(
                o.heavy.1 as f64 >= 0.9 * o.heavy_unfair.1 as f64,
                "{cluster} at {load}: heavy served {} vs {} without fair share",
                o.heavy.1,
                o.heavy_unfair.1
            );
        }
    }
}

#[test]
fn fair_share_cuts_the_light_tenants_ttft_on_hetero() {
    // engines queue on their own (no max_inflight); overloaded, the heavy flood still
    // queues at the gateway: fair share cuts the light p99
    let o = check("hetero.toml", 1.5);
    assert!(o.shared < 0.5 * o.unfair);
    check("hetero.toml", 0.9);
}

#[test]
fn fair_share_never_hurts_the_light_tenant_on_h100x8() {
    check("h100x8.toml", 1.5);
    check("h100x8.toml", 0.9);
}
