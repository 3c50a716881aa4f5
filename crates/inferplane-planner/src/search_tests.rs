//! Behaviour tests and properties of the search.

use super::*;
use crate::catalog::{catalog, find_model};
use crate::dtype::{KvDtype, WeightDtype};
use crate::gpu::{find_gpu, gpu_catalog};
use crate::launch::world_size;
use crate::options::Engine;
use proptest::prelude::*;

fn cluster(gpu: &str, gpn: u32, nodes: u32) -> Cluster {
    Cluster {
        gpu: find_gpu(gpu).unwrap(),
        gpus_per_node: gpn,
        nodes,
    }
}

fn run(
    model: &str,
    c: &Cluster,
    w: &Workload,
    obj: Objective,
    opts: &EngineOptions,
) -> Result<PlanReport, PlanError> {
    plan_report(&find_model(model).unwrap(), c, w, obj, opts)
}

#[test]
fn a_model_that_fits_one_gpu_gets_tp1_with_dp_replicas_for_throughput() {
    let plans = plan(
        &find_model("llama-3.1-8b").unwrap(),
        &cluster("h100-sxm", 8, 1),
        &Workload::default(),
        Objective::Throughput,
    )
    .unwrap();
    let best = &plans[0];
    assert_eq!(
        (best.layout, best.replicas),
        (Layout::SINGLE, 8),
        "{}",
        best.label
    );
    assert!(best.reason.starts_with("best:"));
    assert!(
        plans
            .windows(2)
            .all(|w| w[0].capacity_tokens_per_sec_total >= w[1].capacity_tokens_per_sec_total)
    );
}

#[test]
fn a_70b_model_on_80gb_gpus_needs_at_least_two_gpus_per_instance() {
    let r = run(
        "llama-3.1-70b",
        &cluster("h100-sxm", 8, 1),
        &Workload::default(),
        Objective::Throughput,
        &EngineOptions::default(),
    )
    .unwrap();
    assert!(r.plans.iter().all(|p| p.layout.tp * p.layout.pp >= 2));
    let tp1 = r
        .rejected
        .iter()
        .find(|x| x.layout == Layout::SINGLE)
        .unwrap();
    assert_eq!(tp1.rejection.rule, Rule::Memory);
    assert!(
        tp1.rejection.reason.contains("exceed"),
        "{}",
        tp1.rejection.reason
    );
}

#[test]
fn on_pcie_only_gpus_pipeline_parallel_beats_wide_tensor_parallel() {
    let w = Workload::default();
    for gpu in ["l40s", "h100-pcie"] {
        let r = run(
            "llama-3.1-70b",
            &cluster(gpu, 8, 1),
            &w,
            Objective::Throughput,
            &EngineOptions::default(),
        )
        .unwrap();
        let best = &r.plans[0];
        assert!(
            best.layout.pp > 1 && best.layout.tp < 8,
            "{gpu}: {}",
            best.label
        );
        let tp8 = r
            .plans
            .iter()
            .find(|p| p.layout.tp == 8 && p.layout.pp == 1)
            .unwrap();
        assert!(tp8.rank > best.rank);
    }
    // With NVLink, the same workload picks plain TP with replicas.
    let nv = run(
        "llama-3.1-70b",
        &cluster("h100-sxm", 8, 1),
        &w,
        Objective::Throughput,
        &EngineOptions::default(),
    )
    .unwrap();
    assert_eq!(nv.plans[0].layout.pp, 1, "{}", nv.plans[0].label);
}

#[test]
fn latency_objective_prefers_wide_tp() {
    let w = Workload {
        load: Load::Concurrency(8.0),
        ..Workload::default()
    };
    let r = run(
        "llama-3.1-70b",
        &cluster("h100-sxm", 8, 1),
        &w,
        Objective::Latency,
        &EngineOptions::default(),
    )
    .unwrap();
    assert_eq!(r.plans[0].layout.tp, 8, "{}", r.plans[0].label);
}

#[test]
fn moe_models_get_expert_parallel_layouts() {
    let fp8 = EngineOptions {
        weight_dtype: Some(WeightDtype::Fp8),
        ..EngineOptions::default()
    };
    let r = run(
        "qwen3-235b-a22b",
        &cluster("h100-sxm", 8, 1),
        &Workload::default(),
        Objective::Throughput,
        &fp8,
    )
    .unwrap();
    assert!(r.plans[0].layout.ep > 1, "{}", r.plans[0].label);
    let ds = run(
        "deepseek-v3",
        &cluster("h100-sxm", 8, 2),
        &Workload::default(),
        Objective::Throughput,
        &EngineOptions::default(),
    )
    .unwrap();
    assert!(ds.plans[0].layout.ep > 1, "{}", ds.plans[0].label);
    // TP8 without EP is rejected on the FP8 block rule (research §2.5).
    let tp8 = r
        .rejected
        .iter()
        .find(|x| {
            x.layout
                == Layout {
                    tp: 8,
                    pp: 1,
                    dp: 1,
                    ep: 1,
                }
        })
        .unwrap();
    assert_eq!(tp8.rejection.rule, Rule::QuantBlock);
}

#[test]
fn a_model_too_large_for_the_cluster_says_how_many_gpus_it_needs() {
    let err = run(
        "llama-3.1-405b",
        &cluster("h100-sxm", 8, 1),
        &Workload::default(),
        Objective::Throughput,
        &EngineOptions::default(),
    )
    .unwrap_err();
    match &err {
        PlanError::DoesNotFit {
            gpus_needed,
            gpus_available,
            ..
        } => assert!(*gpus_needed >= 11 && *gpus_available == 8),
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("needs at least") && msg.contains("h100-sxm"),
        "{msg}"
    );
    // Two nodes are enough.
    assert!(
        run(
            "llama-3.1-405b",
            &cluster("h100-sxm", 8, 2),
            &Workload::default(),
            Objective::Throughput,
            &EngineOptions::default()
        )
        .is_ok()
    );
}

#[test]
fn slo_objective_uses_the_fewest_gpus_that_meet_the_targets() {
    let w = Workload {
        ttft_ms: Some(2000.0),
        tpot_ms: Some(30.0),
        ..Workload::default()
    };
    let r = run(
        "llama-3.1-70b",
        &cluster("h100-sxm", 8, 2),
        &w,
        Objective::Slo,
        &EngineOptions::default(),
    )
    .unwrap();
    assert!(
        r.plans
            .iter()
            .all(|p| p.meets_slo == Some(true) && p.perf.tpot_ms <= 30.0)
    );
    assert!(r.plans.windows(2).all(|w| w[0].gpus_used <= w[1].gpus_used));
    let err = run(
        "llama-3.1-70b",
        &cluster("h100-sxm", 8, 1),
        &Workload {
            tpot_ms: Some(0.5),
            ..w
        },
        Objective::Slo,
        &EngineOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PlanError::NoFeasiblePlan { .. }), "{err}");
    let err = run(
        "llama-3.1-70b",
        &cluster("h100-sxm", 8, 1),
        &Workload::default(),
        Objective::Slo,
        &EngineOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("TTFT or TPOT"), "{err}");
}

#[test]
fn cost_objective_uses_only_the_replicas_the_load_needs() {
    let r = run(
        "llama-3.1-8b",
        &cluster("h100-sxm", 8, 1),
        &Workload::default(),
        Objective::Cost,
        &EngineOptions::default(),
    )
    .unwrap();
    assert_eq!(r.plans[0].gpus_used, 1, "{}", r.plans[0].label);
}

#[test]
fn invalid_inputs_are_clear_errors() {
    let c = cluster("h100-sxm", 8, 1);
    let w = Workload {
        input_tokens: 0,
        ..Workload::default()
    };
    assert!(matches!(
        run(
            "llama-3.1-8b",
            &c,
            &w,
            Objective::Throughput,
            &EngineOptions::default()
        ),
        Err(PlanError::InvalidInput { .. })
    ));
    let long = Workload {
        input_tokens: 40_000,
        output_tokens: 1000,
        ..Workload::default()
    };
    let err = run(
        "mistral-7b",
        &c,
        &long,
        Objective::Throughput,
        &EngineOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let mx = EngineOptions {
        weight_dtype: Some(WeightDtype::Mxfp4),
        ..EngineOptions::default()
    };
    assert!(matches!(
        run(
            "llama-3.1-8b",
            &c,
            &Workload::default(),
            Objective::Throughput,
            &mx
        ),
        Err(PlanError::UnsupportedDtype { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_plan_exceeds_gpu_memory_and_commands_match_their_gpus(
        mi in 0usize..13, gi in 0usize..8, gpn_pow in 0u32..4, nodes in 1u32..3,
        dtype in prop_oneof![Just(None), Just(Some(WeightDtype::Fp8)), Just(Some(WeightDtype::Int4))],
        kv8 in any::<bool>(), sglang in any::<bool>(), util in 0.8f64..0.95,
        isl in 128u32..8192, osl in 16u32..2048, conc in 1u32..512,
        obj in prop_oneof![Just(Objective::Throughput), Just(Objective::Latency), Just(Objective::Cost)],
    ) {
        let model = catalog()[mi].clone();
        let c = Cluster { gpu: gpu_catalog()[gi].clone(), gpus_per_node: 1 << gpn_pow, nodes };
        let opts = EngineOptions {
            engine: if sglang { Engine::Sglang } else { Engine::Vllm },
            weight_dtype: dtype,
            kv_dtype: if kv8 { KvDtype::Fp8 } else { KvDtype::Auto },
            gpu_memory_utilization: Some(util),
            ..EngineOptions::default()
        };
        let w = Workload { input_tokens: isl, output_tokens: osl, load: Load::Concurrency(conc as f64), ..Workload::default() };
        if let Ok(r) = plan_report(&model, &c, &w, obj, &opts) {
            for p in &r.plans {
                let m = &p.memory;
                let used = m.weights_gib + m.activation_gib + m.other_gib + m.kv_gib;
                prop_assert!(used <= m.gpu_memory_gib * m.utilization + 1e-9, "{}: {used}", p.label);
                prop_assert!(m.utilization <= 1.0 && m.kv_gib > 0.0);
                prop_assert!(p.gpus_used <= c.gpus());
                prop_assert_eq!(p.gpus_used, p.gpus_per_replica * p.replicas);
                for cmd in &p.commands {
                    prop_assert_eq!(world_size(&cmd.argv), cmd.instance_gpus, "{}", cmd.command_line());
                    prop_assert_eq!(cmd.instance_gpus, p.gpus_per_replica);
                    prop_assert_eq!(cmd.local_gpus * cmd.nodes, cmd.instance_gpus);
                }
            }
        }
    }
}
