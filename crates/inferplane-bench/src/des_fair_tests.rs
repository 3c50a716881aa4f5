//! The fair share between tenants in the DES: two tenants in one class, one sending ten
//! times the other's rate (`bench/workloads/tenants.toml`), on real cluster files. The
//! light tenant's TTFT p99 is compared with what the very same requests get alone and with
//! what they get without fair share (the same run, no tenants known); the heavy tenant's
//! p99 and requests served say what it gives up.
//!
//! Measured (release, 4000 requests, seed 23; `cargo test --release -p inferplane-bench
//! --lib des_fair -- --nocapture`), light p99 alone / with the heavy tenant / without
//! fair share, and how many requests the heavy tenant was served with / without:
//!
//! - **Default policy** (`adaptive`, least predicted TTFT), every instance
//!   `max_inflight = 16` (the gateway holds the queue): hetero 0.9x 0.073 / 0.098 (1.35x)
//!   / 0.96 s, hetero 1.5x 0.072 / 0.109 (1.51x) / 2.0 s (served 2269 / 2545), h100x8 0.9x
//!   0.071 / 0.079 (1.12x) / 0.44 s, h100x8 1.5x 0.073 / 0.095 (1.30x) / 2.0 s (2363 /
//!   2559). Seeds 5 and 77 gave 1.48x, 2.53x, 1.05x, 1.13x and 1.37x, 1.34x, 1.02x, 1.09x.
//!   Before the kept slots were placed on the fastest instances (`schedule/headroom.rs`)
//!   and before shedding knew tenants (`scheduler/overload.rs`), hetero gave 7.5x and
//!   9.8x, and at 1.5x the light tenant had requests shed. The price: the heavy tenant's
//!   p99 at 0.9x goes from 0.87 to 1.70 s (hetero) and 0.46 to 0.72 s (h100x8), and
//!   overloaded it is served 8-11% fewer requests.
//! - **The cluster files' policy** (`fifo`, round robin), `max_inflight = 16`: hetero 0.9x
//!   0.41 / 0.46 (1.12x) / 1.27 s, hetero 1.5x 0.39 / 0.10 / 30.1 s, h100x8 0.9x 0.071 /
//!   0.079 (1.12x) / 0.44 s, h100x8 1.5x 0.073 / 0.102 (1.40x) / 20.6 s.
//! - **Engines queue on their own** (no `max_inflight`), default policy: hetero 0.9x 0.075
//!   / 0.138 / 0.136 s, hetero 1.5x 0.076 / 0.209 / 2.0 s, h100x8 0.9x 0.078 / 0.114 /
//!   0.114 s, h100x8 1.5x 0.072 / 0.183 / 0.183 s. The light tenant made a higher class
//!   outright gets 0.136, 0.472, 0.114 and 0.183 s: the gateway's queue is short, and what
//!   the light tenant loses against alone is the busy engines' slower steps, which no
//!   order at the gateway removes (holding capacity back would, at the heavy tenant's
//!   throughput).
//! - A wider margin (`tenant_headroom = "wide"`: the light tenant's recent peak + its
//!   square root + 1 slots) brought the cluster-policy cases within 1.14x before the kept
//!   slots were placed on the fastest instances, at 11-17% of the heavy tenant's requests
//!   when overloaded: not the default.

use crate::cluster::{Cluster, PolicyChoice};
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

/// How a run is set up: the cluster file's policy or the product's default (`adaptive`,
/// load balanced by least predicted TTFT), and every instance's `max_inflight` (the
/// gateway, not the engines, then holds the queue).
#[derive(Debug, Clone, Copy)]
struct Setup {
    default_policy: bool,
    max_inflight: Option<u32>,
}

const FILE_POLICY: Setup = Setup {
    default_policy: false,
    max_inflight: None,
};

fn cluster_for(cluster_file: &str, setup: Setup) -> Cluster {
    let mut cluster = Cluster::load(&root().join(cluster_file)).unwrap();
    if setup.default_policy {
        cluster.policy = PolicyChoice {
            policy: inferplane_core::PolicyConfig::default().name().into(),
            ..PolicyChoice::default()
        };
    }
    if let Some(m) = setup.max_inflight {
        for i in &mut cluster.instances {
            i.spec.max_inflight = Some(m);
        }
    }
    cluster
}

/// The light tenant's TTFT p99 when it is simply a higher class than the heavy one (and
/// no tenants are known): the best any order at the gateway gives it without holding
/// capacity back.
fn higher_class_floor(cluster_file: &str, setup: Setup, load: f64) -> f64 {
    let cluster = cluster_for(cluster_file, setup);
    let items: Vec<WorkItem> = workload(&cluster, load, 4000)
        .into_iter()
        .map(|mut i| {
            if i.tenant.as_deref() == Some("light") {
                i.priority = inferplane_core::Priority::High;
            }
            i.tenant = None;
            i
        })
        .collect();
    class_stats(&cluster, &items, "light").0
}

fn check(cluster_file: &str, setup: Setup, load: f64) -> Outcome {
    let cluster = cluster_for(cluster_file, setup);
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
        "{cluster_file} {setup:?} load {load}: light TTFT p99 alone {solo:.3}s, with the heavy tenant {shared:.3}s ({:.2}x), without fair share {unfair:.3}s ({:.2}x); heavy p99 {hp:.3}s / {hpu:.3}s, served {hs} / {hsu}; light failures {failed}",
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
    // where the fair share and the headroom decide; under the default policy (least TTFT
    // routing) and under the cluster files' own (fifo, round robin)
    for (default_policy, bound) in [(true, 1.7), (false, 1.6)] {
        let setup = Setup {
            default_policy,
            max_inflight: Some(16),
        };
        for cluster in ["hetero.toml", "h100x8.toml"] {
            for load in [0.9, 1.5] {
                let o = check(cluster, setup, load);
                assert!(
                    o.shared <= bound * o.solo,
                    "{cluster} {setup:?} at {load}: light p99 {:.3}s vs {:.3}s alone",
                    o.shared,
                    o.solo
                );
                // what the heavy tenant gives up for it stays small
                assert!(
                    o.heavy.1 as f64 >= 0.85 * o.heavy_unfair.1 as f64,
                    "{cluster} {setup:?} at {load}: heavy served {} vs {} without fair share",
                    o.heavy.1,
                    o.heavy_unfair.1
                );
            }
        }
    }
}

#[test]
fn where_engines_queue_fair_share_gives_what_a_higher_class_would() {
    // the default policy, no max_inflight: the gateway holds little, and what the light
    // tenant loses against alone is the busy engines' slower steps; no order at the gateway
    // does better than the light tenant being a higher class outright
    let setup = Setup {
        default_policy: true,
        max_inflight: None,
    };
    for cluster in ["hetero.toml", "h100x8.toml"] {
        for load in [0.9, 1.5] {
            let o = check(cluster, setup, load);
            let floor = higher_class_floor(cluster, setup, load);
            eprintln!("  as a higher class: {floor:.3}s");
            assert!(
                o.shared <= 1.1 * floor,
                "{cluster} at {load}: light p99 {:.3}s, as a higher class {floor:.3}s",
                o.shared
            );
        }
    }
}

#[test]
fn fair_share_cuts_the_light_tenants_ttft_on_hetero() {
    // the cluster file's policy, engines queue on their own (no max_inflight); overloaded,
    // the heavy flood still queues at the gateway: fair share cuts the light p99
    let o = check("hetero.toml", FILE_POLICY, 1.5);
    assert!(o.shared < 0.5 * o.unfair);
    check("hetero.toml", FILE_POLICY, 0.9);
}

#[test]
fn fair_share_never_hurts_the_light_tenant_on_h100x8() {
    check("h100x8.toml", FILE_POLICY, 1.5);
    check("h100x8.toml", FILE_POLICY, 0.9);
}
