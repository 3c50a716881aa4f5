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
//!   `max_inflight = 16` (the gateway holds the queue): hetero 0.9x 0.073 / 0.076 (1.05x)
//!   / 0.96 s, hetero 1.5x 0.072 / 0.078 (1.08x) / 2.0 s (served 2105 / 2545), h100x8 0.9x
//!   0.071 / 0.079 (1.12x) / 0.44 s, h100x8 1.5x 0.073 / 0.072 (0.99x) / 2.0 s (2194 /
//!   2559). Seeds 5, 7, 77 and 101 gave 1.02x to 1.22x (77 on hetero at 0.9x the most).
//!   The price: the heavy tenant's p99 at 0.9x goes from 0.87 to 1.98 s (hetero) and 0.46
//!   to 1.77 s (h100x8), 2-5% of its requests are shed at 0.9x on hetero, and overloaded
//!   it is served 10-20% fewer requests.
//! - **How it got there.** Before the kept slots were placed on the fastest instances
//!   (`schedule/headroom.rs`) and before shedding knew tenants (`scheduler/overload.rs`),
//!   hetero gave 7.5x and 9.8x. With those, and the margin the light tenant's recent
//!   peak + 1 (`tenant_headroom = "peak"`), 1.01x to 1.95x over the five seeds: the tail was a
//!   burst of light requests (four in 60 ms) finding the H100s full and waiting 0.3-0.5 s
//!   on loaded A10Gs, and the light tenant leaving the fast slots to the heavy one when
//!   the heavy one was under its share. Now a tenant keeps nothing for one holding more
//!   than itself, and over its share it leaves room for a burst (the default `"wide"`:
//!   peak + twice its square root + 2). Tried and dropped: ranking kept slots by the
//!   instances' speed without their prefill backlog, and keeping the flooding tenant off
//!   every instance a kept slot is on (no better on hetero, worse on h100x8).
//! - **The cluster files' policy** (`fifo`, round robin), `max_inflight = 16`: hetero 0.9x
//!   0.41 / 0.10 / 1.27 s, hetero 1.5x 0.39 / 0.08 / 30.1 s, h100x8 0.9x 0.071 / 0.079
//!   (1.11x) / 0.44 s, h100x8 1.5x 0.073 / 0.077 (1.05x) / 20.6 s.
//! - **Engines queue on their own** (no `max_inflight`), default policy: hetero 0.9x 0.075
//!   / 0.138 / 0.136 s, hetero 1.5x 0.076 / 0.218 / 2.0 s, h100x8 0.9x 0.078 / 0.114 /
//!   0.114 s, h100x8 1.5x 0.072 / 0.183 / 0.183 s. The light tenant made a higher class
//!   outright gets 0.136, 0.472, 0.114 and 0.183 s: the gateway's queue is short, and what
//!   the light tenant loses against alone is the busy engines' slower steps, which no
//!   order at the gateway removes (capping the engines with `max_inflight` does, above).

use crate::cluster::{Cluster, PolicyChoice};
use crate::des::simulate;
use crate::workload::{WorkItem, WorkloadSpec, mean_sizes};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench"))
}

/// The workload at `load` times the cluster's estimated capacity, with the file's seed
/// or another.
fn workload(cluster: &Cluster, load: f64, requests: usize, seed: Option<u64>) -> Vec<WorkItem> {
    let text = std::fs::read_to_string(root().join("workloads/tenants.toml")).unwrap();
    let mut spec: WorkloadSpec = toml::from_str(&text).unwrap();
    spec.requests = requests;
    if let Some(seed) = seed {
        spec.seed = seed;
    }

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
    let items: Vec<WorkItem> = workload(&cluster, load, 4000, None)
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
    check_seeded(cluster_file, setup, load, None)
}

fn check_seeded(cluster_file: &str, setup: Setup, load: f64, seed: Option<u64>) -> Outcome {
    let cluster = cluster_for(cluster_file, setup);
    let items = workload(&cluster, load, 4000, seed);
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
    for default_policy in [true, false] {
        let setup = Setup {
            default_policy,
            max_inflight: Some(16),
        };
        for cluster in ["hetero.toml", "h100x8.toml"] {
            for load in [0.9, 1.5] {
                let o = check(cluster, setup, load);
                assert!(
                    o.shared <= 1.2 * o.solo,
                    "{cluster} {setup:?} at {load}: light p99 {:.3}s vs {:.3}s alone",
                    o.shared,
                    o.solo
                );
                // what the heavy tenant gives up for it stays small
                assert!(
                    o.heavy.1 as f64 >= 0.8 * o.heavy_unfair.1 as f64,
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

#[test]
fn other_seeds_of_the_workload_stay_near_alone_too() {
    // the default policy where the gateway queues, on two more draws of the same workload:
    // the light tenant's p99 is a handful of its 364 requests, so one seed proves little
    let setup = Setup {
        default_policy: true,
        max_inflight: Some(16),
    };
    for seed in [7, 77] {
        for cluster in ["hetero.toml", "h100x8.toml"] {
            for load in [0.9, 1.5] {
                let o = check_seeded(cluster, setup, load, Some(seed));
                assert!(
                    o.shared <= 1.3 * o.solo,
                    "seed {seed}, {cluster} at {load}: light p99 {:.3}s vs {:.3}s alone",
                    o.shared,
                    o.solo
                );
            }
        }
    }
}
