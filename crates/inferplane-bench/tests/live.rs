//! Live load through the gateway in front of simulated engines, and the agreement check
//! between a live run and the discrete-event simulation of the same cluster and trace.

#![allow(clippy::unwrap_used)]

mod common;

use inferplane_bench::cluster::{Cluster, Limits, PolicyChoice, SimInstance};
use inferplane_bench::load::{self, LoadConfig};
use inferplane_bench::report::{self, Summary};
use inferplane_bench::workload::{Arrival, LengthDist, PrefixSpec, SessionSpec, WorkloadSpec};
use inferplane_bench::{des, plot};
use inferplane_core::InstanceSpec;
use inferplane_sim::EngineProfile;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_live_run_through_the_gateway_produces_a_complete_report() {
    let _turn = common::one_at_a_time().await;
    let profile = EngineProfile::preset("tiny").unwrap();
    let sims = common::sims(2, &profile, 1.0).await;
    let gw = common::gateway(&sims, 8).await;
    let items = WorkloadSpec {
        requests: 200,
        rate: 100.0,
        prompt: LengthDist::Uniform { min: 16, max: 200 },
        output: LengthDist::Uniform { min: 2, max: 24 },
        ..WorkloadSpec::default()
    }
    .generate()
    .unwrap();
    let mut cfg = LoadConfig::new(gw.url(), common::MODEL);
    cfg.max_requests = Some(60); // bounded by count ...
    cfg.max_duration = Some(Duration::from_secs(20)); // ... and by time
    cfg.request_timeout = Duration::from_secs(20);
    let run = load::run(&cfg, &items).await.unwrap();

    assert_eq!(run.records.len(), 60, "exactly the bounded count was sent");
    let failed: Vec<_> = run.records.iter().filter(|r| r.failure.is_some()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    for r in &run.records {
        let item = &items[r.item as usize];
        assert_eq!(r.output_tokens, item.output_tokens, "every token streamed");
        assert!(r.ttft.unwrap() <= r.e2e);
        assert!(r.instance.is_some(), "the gateway names the instance");
    }
    let s = Summary::new(&run, &items);
    assert_eq!((s.requests, s.completed), (60, 60));
    assert!(s.ttft_ms.p50 > 0.0 && s.e2e_ms.p99 >= s.e2e_ms.p50);
    assert!(s.itl_ms.is_some_and(|i| i.count > 0));
    assert!(s.throughput_rps > 0.0 && s.output_tokens_per_s > 0.0);
    assert_eq!(s.instances.len(), 2, "both instances served");
    assert!((s.instances.iter().map(|i| i.share).sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(
        s.prefix_hit_rate.is_some(),
        "cached tokens come back in usage"
    );
    assert!(s.slo_attainment.is_some() && !s.classes.is_empty());
    let md = report::markdown("live", std::slice::from_ref(&s), None);
    for section in ["TTFT p99", "SLO attainment by class", "Load share"] {
        assert!(md.contains(section), "{md}");
    }
    assert!(report::json(&[s]).unwrap().contains("\"ttft_ms\""));
    let plots = plot::all(&[run], &items);
    assert_eq!(plots.len(), 4);
    assert!(plots.iter().all(|(_, svg)| svg.contains("</svg>")));
    gw.shutdown().await;
    for s in sims {
        s.shutdown().await;
    }
}

/// Steps of 40 ms plus 0.2 ms per prompt token and 0.4 ms per sequence (virtual time):
/// slow enough that HTTP overhead is small beside a step even at 4x speed.
fn agreement_profile() -> EngineProfile {
    EngineProfile {
        name: "agreement".into(),
        prefill_secs_per_token: 0.000_2,
        decode_step_base_secs: 0.040,
        decode_secs_per_seq: 0.000_4,
        decode_secs_per_kv_token: 0.0,
        kv_blocks: 8192,
        max_num_seqs: 64,
        max_num_batched_tokens: 4096,
        max_model_len: 8192,
    }
}

/// The agreement check: the same trace on the same two-instance cluster, once live
/// (simulators at 2x real time behind the gateway) and once in the DES. TTFT p50 and p99
/// must agree within `|live - sim| <= 25% of sim + 20 ms` (p50) and `35% + 40 ms` (p99),
/// in virtual time. The slack covers what the DES leaves out on purpose: HTTP and gateway
/// overhead (in these debug builds about 5-6 ms wall per request: live p50 is 23 ms
/// virtual above the DES at 4x and 13 ms at 2x), the sims' real-time step timers
/// oversleeping on a loaded 2-core machine, and the gateway acting on load scraped every
/// 50 ms rather than after every step. Every wall millisecond counts `SCALE` times in
/// virtual time, so the scale is kept low: at 4x one 30 ms stall of a loaded CI machine
/// put the live p99 120 ms above the DES's (285 vs 166 ms) and failed the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_and_live_run_agree_on_ttft_percentiles() {
    let _turn = common::one_at_a_time().await;
    const SCALE: f64 = 2.0;
    const INFLIGHT: u32 = 8;
    let profile = agreement_profile();
    let items = WorkloadSpec {
        seed: 11,
        requests: 240,
        rate: 10.0, // about 60% of the two instances' capacity for these sizes
        arrival: Arrival::Poisson,
        prompt: LengthDist::LogNormal {
            median: 100.0,
            sigma: 0.6,
            min: 16,
            max: 400,
        },
        output: LengthDist::LogNormal {
            median: 16.0,
            sigma: 0.5,
            min: 4,
            max: 48,
        },
        max_tokens: None,
        classes: vec![],
        sessions: SessionSpec {
            share: 0.0,
            ..SessionSpec::default()
        },
        prefixes: PrefixSpec {
            share: 0.5,
            groups: 2,
            tokens: 64,
            zipf: 0.0,
        },
    }
    .generate()
    .unwrap();

    let cluster = Cluster {
        policy: PolicyChoice::default(),
        limits: Limits::default(),
        instances: (0..2)
            .map(|k| SimInstance {
                spec: InstanceSpec::new(format!("sim-{k}"), "sim://", common::MODEL, INFLIGHT),
                profile: profile.clone(),
            })
            .collect(),
    };
    let sim = Summary::new(
        &des::simulate(&cluster, &items, "simulated").unwrap(),
        &items,
    );

    let sims = common::sims(2, &profile, SCALE).await;
    let gw = common::gateway(&sims, INFLIGHT).await;
    let mut cfg = LoadConfig::new(gw.url(), common::MODEL);
    cfg.time_scale = SCALE;
    cfg.request_timeout = Duration::from_secs(30);
    cfg.max_duration = Some(Duration::from_secs(30));
    let live_run = load::run(&cfg, &items).await.unwrap();
    let live = Summary::new(&live_run, &items);
    gw.shutdown().await;
    for s in sims {
        s.shutdown().await;
    }

    assert_eq!(live.completed, items.len() as u64, "{:?}", live.errors);
    assert_eq!(sim.completed, items.len() as u64);
    let report = format!(
        "TTFT ms  sim p50 {:.1} p99 {:.1} | live p50 {:.1} p99 {:.1}",
        sim.ttft_ms.p50, sim.ttft_ms.p99, live.ttft_ms.p50, live.ttft_ms.p99
    );
    eprintln!("{report}");
    let within = |l: f64, s: f64, rel: f64, abs: f64| (l - s).abs() <= rel * s + abs;
    assert!(
        within(live.ttft_ms.p50, sim.ttft_ms.p50, 0.25, 20.0),
        "p50: {report}"
    );
    assert!(
        within(live.ttft_ms.p99, sim.ttft_ms.p99, 0.35, 40.0),
        "p99: {report}"
    );
    // Cache hits agree too: the live client sends the very text the DES hashes.
    let (lh, sh) = (live.prefix_hit_rate.unwrap(), sim.prefix_hit_rate.unwrap());
    assert!(
        (lh - sh).abs() < 0.1,
        "prefix hit rate live {lh:.3} vs sim {sh:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_compare_switches_the_gateways_policy_before_each_run() {
    let _turn = common::one_at_a_time().await;
    let profile = EngineProfile::preset("tiny").unwrap();
    let sims = common::sims(2, &profile, 1.0).await;
    let gw = common::gateway(&sims, 4).await;
    let items = WorkloadSpec {
        requests: 30,
        rate: 200.0,
        prompt: LengthDist::Fixed { tokens: 32 },
        output: LengthDist::Fixed { tokens: 4 },
        ..WorkloadSpec::default()
    }
    .generate()
    .unwrap();
    let mut cfg = LoadConfig::new(gw.url(), common::MODEL);
    cfg.max_duration = Some(Duration::from_secs(20));
    cfg.request_timeout = Duration::from_secs(20);
    let choices = [
        PolicyChoice::parse("fifo/round_robin").unwrap(),
        PolicyChoice::parse("priority/load_balanced/power_of_two").unwrap(),
    ];
    let runs = inferplane_bench::compare::live_policies(&cfg, &choices, &items, None)
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].label, "fifo/round_robin/least_ttft");
    for run in &runs {
        assert_eq!(run.records.len(), 30);
        assert!(run.records.iter().all(|r| r.failure.is_none()));
    }
    // The gateway runs the last choice now.
    let v: serde_json::Value = reqwest::get(format!("{}/admin/policy", gw.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["pools"][0]["policy"]["kind"], "priority");
    assert_eq!(v["pools"][0]["balancing"], "power_of_two");
    // A target without the admin API is a clear error, not a silent run.
    let sim_cfg = LoadConfig::new(sims[0].url(), common::MODEL);
    let err = inferplane_bench::compare::live_policies(&sim_cfg, &choices, &items, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}
