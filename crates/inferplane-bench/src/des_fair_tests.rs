//! The fair share between tenants in the DES: two tenants in one class, one sending ten
//! times the other's rate (`bench/workloads/tenants.toml`), on real cluster files. The
//! light tenant's TTFT p99 is compared with what the very same requests get alone and with
//! what they get without fair share (the same run, no tenants known).
//!
//! Measured (release, 4000 requests): hetero at 1.5x capacity, alone 0.40 s, with the heavy
//! tenant 2.52 s, without fair share 8.42 s; h100x8 at 1.5x, 0.072 s, 0.183 s, 0.183 s (the
//! queue there is short: what the light tenant loses is the saturated engines' slower
//! steps, which no gateway order removes). At 0.9x: hetero 0.40 s alone, 1.65 s shared (with
//! or without fair share), h100x8 0.078 s, 0.114 s. The 1.2x target is not met.

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

/// The light tenant's TTFT p99 (seconds) in a run of `items`, and how many of its requests
/// got no first token.
fn light_p99(cluster: &Cluster, items: &[WorkItem]) -> (f64, usize) {
    let run = simulate(cluster, items, "fair").unwrap();
    let mut ttft = Vec::new();
    let mut failed = 0;
    for r in &run.records {
        // by class: the run without fair share has no tenants
        if items[r.item as usize].class.as_deref() != Some("light") {
            continue;
        }
        match r.ttft {
            Some(t) => ttft.push(t),
            None => failed += 1,
        }
    }
    (p99(ttft), failed)
}

fn check(cluster_file: &str, load: f64) -> f64 {
    check_with(cluster_file, load, None)
}

fn check_with(cluster_file: &str, load: f64, max_inflight: Option<u32>) -> f64 {
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
    let (solo, _) = light_p99(&cluster, &alone);
    let (shared, failed) = light_p99(&cluster, &items);
    let (unfair, _) = light_p99(&cluster, &blind);
    eprintln!(
        "{cluster_file} load {load}: light TTFT p99 alone {solo:.3}s, with the heavy tenant {shared:.3}s ({:.2}x), without fair share {unfair:.3}s ({:.2}x); light failures {failed}",
        shared / solo,
        unfair / solo
    );
    assert_eq!(failed, 0, "{cluster_file}: the light tenant lost requests");
    // what fair share changes: the light tenant never does worse than without it, and
    // where the heavy tenant's flood queues at the gateway it does far better. The issue's
    // target (within 1.2x of alone) is not met: a saturated engine's slower steps and the
    // wait for a free slot remain (see the module docs).
    assert!(
        shared <= unfair * 1.05,
        "{cluster_file} at load {load}: fair share made the light tenant worse: {shared:.3}s vs {unfair:.3}s"
    );
    shared / unfair
}

#[test]
fn fair_share_cuts_the_light_tenants_ttft_on_hetero() {
    // overloaded, the heavy flood queues at the gateway: fair share cuts the light p99
    assert!(check("hetero.toml", 1.5) < 0.5);
    check("hetero.toml", 0.9);
}

#[test]
fn fair_share_never_hurts_the_light_tenant_on_h100x8() {
    check("h100x8.toml", 1.5);
    check("h100x8.toml", 0.9);
}

#[test]
#[ignore]
fn experiment_max_inflight() {
    for m in [8, 16, 32] {
        for (c, l) in [
            ("hetero.toml", 0.9),
            ("hetero.toml", 1.5),
            ("h100x8.toml", 0.9),
            ("h100x8.toml", 1.5),
        ] {
            eprintln!("max_inflight {m}");
            check_with(c, l, Some(m));
        }
    }
}
