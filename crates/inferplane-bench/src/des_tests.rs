//! Tests of the discrete-event simulation.

use super::*;
use crate::cluster::{Limits, PolicyChoice, SimInstance};
use crate::workload::WorkloadSpec;
use inferplane_core::{InstanceSpec, RejectKind};
use inferplane_sim::EngineProfile;

/// Every step takes exactly 10 ms, whatever it does.
fn flat_profile() -> EngineProfile {
    EngineProfile {
        name: "flat".into(),
        prefill_secs_per_token: 0.0,
        decode_step_base_secs: 0.010,
        decode_secs_per_seq: 0.0,
        decode_secs_per_kv_token: 0.0,
        kv_blocks: 10_000,
        max_num_seqs: 8,
        max_num_batched_tokens: 4096,
        max_model_len: 8192,
    }
}

fn cluster(n: usize, max_inflight: u32, profile: EngineProfile, limits: Limits) -> Cluster {
    Cluster {
        policy: PolicyChoice::default(),
        limits,
        instances: (0..n)
            .map(|k| SimInstance {
                spec: InstanceSpec::new(format!("i{k}"), "sim://", "m", max_inflight),
                profile: profile.clone(),
            })
            .collect(),
    }
}

fn ms(x: Option<f64>) -> f64 {
    (x.unwrap_or(f64::NAN) * 1e3 * 1000.0).round() / 1000.0
}

#[test]
fn one_instance_with_fixed_sizes_matches_the_hand_computed_timeline() {
    // Request 0 at 0 ms, request 1 at 5 ms; 16-token prompts, 5 output tokens, 10 ms steps.
    let items = vec![WorkItem::plain(0.0, 16, 5), WorkItem::plain(0.005, 16, 5)];
    // One slot: request 1 waits for request 0 (done at 50 ms), prefills 50-60, ends at 100.
    let run = simulate(
        &cluster(1, 1, flat_profile(), Limits::default()),
        &items,
        "x",
    )
    .unwrap();
    let r = &run.records;
    assert_eq!((ms(r[0].ttft), ms(Some(r[0].e2e))), (10.0, 50.0));
    assert_eq!((ms(r[1].ttft), ms(Some(r[1].e2e))), (55.0, 95.0));
    assert_eq!(r[1].output_tokens, 5);
    assert!((run.duration - 0.100).abs() < 1e-9, "{run:?}");
    assert!((run.instances[0].busy_secs.unwrap() - 0.100).abs() < 1e-9);
    // Two slots: request 1 joins the batch at the next step (10 ms): first token at 20 ms.
    let run = simulate(
        &cluster(1, 2, flat_profile(), Limits::default()),
        &items,
        "x",
    )
    .unwrap();
    let r = &run.records;
    assert_eq!((ms(r[0].ttft), ms(Some(r[0].e2e))), (10.0, 50.0));
    assert_eq!((ms(r[1].ttft), ms(Some(r[1].e2e))), (15.0, 55.0));
    assert!((run.instances[0].busy_secs.unwrap() - 0.060).abs() < 1e-9);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let items = WorkloadSpec {
        requests: 2000,
        rate: 40.0,
        ..WorkloadSpec::default()
    }
    .generate()
    .unwrap();
    let c = cluster(
        3,
        16,
        EngineProfile::preset("tiny").unwrap(),
        Limits::default(),
    );
    let a = simulate(&c, &items, "a").unwrap();
    let b = simulate(&c, &items, "a").unwrap();
    assert_eq!(a.records, b.records);
    assert_eq!(a.instances, b.instances);
    let failed: Vec<_> = a.records.iter().filter(|r| r.failure.is_some()).collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn every_request_ends_exactly_once_under_overload() {
    // 4x more work than the cluster can do, a short queue, a queue timeout and deadlines:
    // requests are served, rejected (queue full, timeout, deadline) or refused by the engine.
    let mut items = WorkloadSpec {
        requests: 3000,
        rate: 2000.0,
        ..WorkloadSpec::default()
    }
    .generate()
    .unwrap();
    items[7].prompt_tokens = 100_000; // longer than the context: the engine refuses it
    let limits = Limits {
        max_queue: 200,
        queue_timeout: Some(Duration::from_millis(300)),
        seed: 0,
        ..Limits::default()
    };
    let run = simulate(
        &cluster(2, 8, EngineProfile::preset("tiny").unwrap(), limits),
        &items,
        "x",
    )
    .unwrap();
    assert_eq!(run.records.len(), items.len());
    for (i, r) in run.records.iter().enumerate() {
        assert_eq!(r.item as usize, i, "one record per request, in order");
        if r.failure.is_none() {
            assert_eq!(r.output_tokens, items[i].output_tokens);
            assert!(r.ttft.unwrap() <= r.e2e);
        }
    }
    let count = |f: Failure| run.records.iter().filter(|r| r.failure == Some(f)).count();
    let rejected = |k: RejectKind| count(Failure::Rejected(k));
    let served = run.records.iter().filter(|r| r.failure.is_none()).count();
    assert_eq!(count(Failure::Engine), 0, "the context check comes first");
    assert_eq!(rejected(RejectKind::ContextLengthExceeded), 1);
    assert!(
        rejected(RejectKind::Shed) + rejected(RejectKind::QueueFull) > 0,
        "overload was shed"
    );
    assert!(served > 0);
    let by_kind: usize = RejectKind::ALL.into_iter().map(rejected).sum();
    assert_eq!(served + count(Failure::Engine) + by_kind, items.len());
    assert!(
        !run.records
            .iter()
            .any(|r| r.failure == Some(Failure::Timeout))
    );
}

#[test]
fn shared_prefixes_hit_the_simulated_prefix_cache() {
    let spec = WorkloadSpec {
        requests: 400,
        rate: 50.0,
        ..WorkloadSpec::default()
    };
    let items = spec.generate().unwrap();
    let run = simulate(
        &cluster(
            1,
            16,
            EngineProfile::preset("tiny").unwrap(),
            Limits::default(),
        ),
        &items,
        "x",
    )
    .unwrap();
    let s = crate::report::Summary::new(&run, &items);
    assert!(s.prefix_hit_rate.unwrap() > 0.2, "{:?}", s.prefix_hit_rate);
    let none = WorkloadSpec {
        prefixes: crate::workload::PrefixSpec {
            share: 0.0,
            ..Default::default()
        },
        sessions: crate::workload::SessionSpec {
            share: 0.0,
            ..Default::default()
        },
        ..spec
    }
    .generate()
    .unwrap();
    let run = simulate(
        &cluster(
            1,
            16,
            EngineProfile::preset("tiny").unwrap(),
            Limits::default(),
        ),
        &none,
        "x",
    )
    .unwrap();
    let s = crate::report::Summary::new(&run, &none);
    assert!(s.prefix_hit_rate.unwrap() < 0.01, "{:?}", s.prefix_hit_rate);
}
