//! The planner's Hugging Face `config.json` reader (`ModelSpec::from_config_json`), and the
//! planner's parameter count, memory and performance models run on what it accepted.
//!
//! Checks: a config the reader accepts has the shape it promises (no zero sizes, heads
//! divisible by KV heads) and the planner then plans for it without panicking (no
//! overflow, no division by zero), with plans that fit the GPU and finite estimates.
#![no_main]

use inferplane_planner::{
    Cluster, CostModel, EngineOptions, Layout, ModelSpec, Objective, Workload, find_gpu, plan,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = ModelSpec::from_config_json("fuzz/model", text) else {
        return;
    };
    for v in [
        model.hidden,
        model.layers,
        model.heads,
        model.kv_heads,
        model.head_dim,
        model.vocab,
        model.intermediate,
    ] {
        assert!(v > 0, "{model:?}");
    }
    assert_eq!(model.heads % model.kv_heads, 0, "{model:?}");

    let counts = model.param_counts();
    assert!(counts.total >= counts.active_non_embedding, "{counts:?}");
    assert!(counts.total >= counts.routed_experts, "{counts:?}");

    let gpu = find_gpu("h100-sxm").expect("catalogue GPU");
    let est = CostModel::default().engine_estimate(
        &model,
        &gpu,
        Layout::SINGLE,
        &EngineOptions::default(),
    );
    if let Ok(e) = est {
        assert!(e.prefill_secs_per_token.is_finite() && e.prefill_secs_per_token >= 0.0);
    }
    let cluster = Cluster {
        gpu: gpu.clone(),
        gpus_per_node: 8,
        nodes: 1,
    };
    let objective = [
        Objective::Throughput,
        Objective::Latency,
        Objective::Cost,
        Objective::Slo,
    ][data.len() % 4];
    let workload = Workload {
        input_tokens: 512,
        output_tokens: 128,
        ..Workload::default()
    };
    if let Ok(plans) = plan(&model, &cluster, &workload, objective) {
        for p in &plans {
            let m = &p.memory;
            assert!(
                m.weights_gib + m.activation_gib + m.other_gib + m.kv_gib
                    <= m.gpu_memory_gib * m.utilization + 1e-6,
                "plan over GPU memory: {m:?}"
            );
            assert!(m.kv_gib >= 0.0 && m.weights_gib.is_finite(), "{m:?}");
            assert!(
                p.perf.tpot_ms.is_finite() && p.perf.ttft_ms.is_finite(),
                "{:?}",
                p.perf
            );
        }
    }
});
