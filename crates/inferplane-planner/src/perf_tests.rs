//! Tests of the performance estimate against research §2.6-§2.7 figures.

use super::*;
use crate::catalog::find_model;
use crate::gpu::find_gpu;

fn timing(model: &str, gpu: &str, l: Layout, opts: &EngineOptions) -> Timing {
    let m = find_model(model).unwrap();
    let g = find_gpu(gpu).unwrap();
    let dtype = opts.weight_dtype_for(&m).unwrap();
    let ctx = (opts.typical_input_tokens + opts.typical_output_tokens) as u64;
    let (mem, st) = memory::estimate(&m, &g, l, opts, dtype, ctx).unwrap();
    CostModel::default().timing(&m, &g, l, opts, dtype, &st, &mem)
}

fn tp(t: u32) -> Layout {
    Layout {
        tp: t,
        pp: 1,
        dp: 1,
        ep: 1,
    }
}

fn fp8() -> EngineOptions {
    EngineOptions {
        weight_dtype: Some(WeightDtype::Fp8),
        ..EngineOptions::default()
    }
}

#[test]
fn tpot_from_the_step_coefficients_equals_the_workload_estimate() {
    let opts = EngineOptions {
        typical_input_tokens: 2048,
        typical_output_tokens: 256,
        ..fp8()
    };
    for (model, l) in [
        ("llama-3.1-70b", tp(4)),
        (
            "qwen3-30b-a3b",
            Layout {
                tp: 1,
                pp: 1,
                dp: 2,
                ep: 2,
            },
        ),
    ] {
        let t = timing(model, "h100-sxm", l, &opts);
        let perf = workload_perf(&t, Load::Concurrency(48.0), 2048, 256, l.gpu_count());
        let e = &t.estimate;
        let b = perf.running_per_replica;
        let by_hand = e.decode_step_base_secs
            + b * e.decode_secs_per_seq
            + b * (2048.0 + 128.0) * e.decode_secs_per_kv_token
            + b * 2048.0 / 256.0 * e.prefill_secs_per_token;
        assert!(
            (perf.tpot_ms - by_hand * 1e3).abs() < 1e-9,
            "{model}: {} vs {}",
            perf.tpot_ms,
            by_hand * 1e3
        );
    }
}

#[test]
fn tp8_all_reduce_traffic_matches_research_for_nvlink_and_pcie() {
    // research §2.6: Llama-70B TP8, decode batch 64: 294 MB per step -> 0.65 ms on NVLink4,
    // about 9 ms on PCIe Gen4 (32 GB/s).
    let cm = CostModel::default();
    let opts = EngineOptions {
        weight_dtype: Some(WeightDtype::Bf16),
        ..EngineOptions::default()
    };
    for (gpu, want_ms) in [("h100-sxm", 0.65), ("l40s", 9.2)] {
        let t = timing("llama-3.1-70b", gpu, tp(8), &opts);
        let comm_ms = (t.estimate.decode_secs_per_seq - cm.per_seq_overhead_secs) * 64.0 * 1e3;
        assert!(
            (comm_ms - want_ms).abs() / want_ms < 0.05,
            "{gpu}: {comm_ms:.3} ms vs {want_ms}"
        );
    }
}

#[test]
fn prefill_flops_match_the_research_llama_70b_example() {
    // research §2.7: Llama-70B, ISL 8192: 1.25 PFLOP -> 79 ms at 100% of 8 x 1979 TFLOPS.
    let cm = CostModel::default();
    let opts = EngineOptions {
        typical_input_tokens: 8192,
        typical_output_tokens: 1,
        ..fp8()
    };
    let t = timing("llama-3.1-70b", "h200", tp(8), &opts);
    let ar = t.prefill_latency_secs_per_token - t.estimate.prefill_secs_per_token * 0.0;
    let t_nocomm = timing("llama-3.1-70b", "h200", tp(1), &opts);
    let compute_100 = t_nocomm.prefill_latency_secs_per_token * 8192.0 * cm.prefill_mfu / 8.0;
    assert!(
        (compute_100 * 1e3 - 79.0).abs() / 79.0 < 0.05,
        "{:.1} ms",
        compute_100 * 1e3
    );
    assert!(
        ar > t_nocomm.prefill_latency_secs_per_token / 8.0,
        "TP8 adds all-reduce time"
    );
}

#[test]
fn tp8_decode_is_about_half_of_tp2_for_70b() {
    // research §2.8: "TP8 TPOT is about half of TP2 for 70B".
    let opts = fp8();
    let at4 = |t: u32| {
        timing("llama-3.1-70b", "h100-sxm", tp(t), &opts)
            .estimate
            .tpot_secs(4.0, 1024.0, 1024.0)
    };
    let ratio = at4(8) / at4(2);
    assert!((0.4..0.65).contains(&ratio), "TP8/TP2 = {ratio:.2}");
}

#[test]
fn pipeline_parallel_does_not_cut_single_stream_latency_but_tp_does() {
    let opts = EngineOptions::default();
    // The weight-read part of a step: what a single stream waits for.
    let lat = |l: Layout| {
        timing("llama-3.1-8b", "h100-sxm", l, &opts)
            .estimate
            .decode_step_base_secs
    };
    let one = lat(tp(1));
    assert!(
        lat(Layout {
            tp: 1,
            pp: 2,
            dp: 1,
            ep: 1
        }) >= one
    );
    assert!(lat(tp(2)) < one);
}

#[test]
fn moe_decode_reads_only_the_experts_a_small_batch_touches() {
    let small = EngineOptions {
        reference_concurrency: 1,
        ..EngineOptions::default()
    };
    let large = EngineOptions {
        reference_concurrency: 256,
        ..EngineOptions::default()
    };
    let l = Layout {
        tp: 8,
        pp: 1,
        dp: 1,
        ep: 8,
    };
    let a = timing("deepseek-v3", "h200", l, &small)
        .estimate
        .decode_step_base_secs;
    let b = timing("deepseek-v3", "h200", l, &large)
        .estimate
        .decode_step_base_secs;
    assert!(a < b / 3.0, "batch 1 {a:.4}s vs batch 256 {b:.4}s");
}

#[test]
fn kv_saturation_makes_ttft_jump() {
    // research §0 item 5 / §2.4: queueing starts when c * (ISL + OSL/2) > KV tokens.
    let opts = EngineOptions {
        typical_input_tokens: 8192,
        typical_output_tokens: 1024,
        ..fp8()
    };
    let t = timing("llama-3.1-70b", "h100-sxm", tp(2), &opts);
    let per_seq = 8192.0 + 512.0;
    let fits = (t.estimate.kv_capacity_tokens as f64 / per_seq).floor();
    let below = workload_perf(&t, Load::Concurrency(fits - 2.0), 8192, 1024, 2);
    let above = workload_perf(&t, Load::Concurrency(fits * 2.0), 8192, 1024, 2);
    assert!(!below.kv_saturated && above.kv_saturated);
    assert!(
        above.ttft_ms > 5.0 * below.ttft_ms,
        "{} vs {}",
        above.ttft_ms,
        below.ttft_ms
    );
}

#[test]
fn request_rate_load_converts_to_concurrency_by_littles_law() {
    let t = timing("llama-3.1-8b", "h100-sxm", tp(1), &EngineOptions::default());
    let p = workload_perf(&t, Load::RequestRate(2.0), 1024, 256, 1);
    let e2e = (p.ttft_ms + 255.0 * p.tpot_ms) / 1e3;
    assert!((p.concurrency_per_replica - 2.0 * e2e).abs() / p.concurrency_per_replica < 0.02);
}

#[test]
fn engine_estimate_rejects_an_invalid_layout_with_the_reason() {
    let m = find_model("llama-3.1-70b").unwrap();
    let g = find_gpu("h100-sxm").unwrap();
    let err = CostModel::default()
        .engine_estimate(&m, &g, tp(1), &EngineOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("exceed"), "{err}");
    let err = CostModel::default()
        .engine_estimate(&m, &g, tp(3), &EngineOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("num_attention_heads"), "{err}");
    let ok = CostModel::default()
        .engine_estimate(&m, &g, tp(4), &EngineOptions::default())
        .unwrap();
    assert!(ok.max_num_seqs >= 1 && ok.kv_capacity_tokens > 100_000);
}
