//! Tests of the engine-fact parsers, with answers shaped like the real engines' (and
//! garbage).

use super::*;
use serde_json::json;

const UNKNOWN: EngineInfo = EngineInfo {
    max_batch: None,
    max_model_len: None,
    kv_capacity_tokens: None,
};

fn info(max_batch: Option<u32>, max_model_len: Option<u32>, kv: Option<u64>) -> EngineInfo {
    EngineInfo {
        max_batch,
        max_model_len,
        kv_capacity_tokens: kv,
    }
}

#[test]
fn vllm_models_give_the_context_of_the_served_model_even_beside_lora_adapters() {
    let v = json!({"object": "list", "data": [
        {"id": "sql-lora", "object": "model", "created": 1735000000, "owned_by": "vllm",
         "root": "/adapters/sql", "parent": "meta-llama/Llama-3.1-8B-Instruct",
         "max_model_len": 4096, "permission": []},
        {"id": "meta-llama/Llama-3.1-8B-Instruct", "object": "model", "created": 1735000000,
         "owned_by": "vllm", "root": "meta-llama/Llama-3.1-8B-Instruct", "parent": null,
         "max_model_len": 131072,
         "permission": [{"id": "modelperm-1", "object": "model_permission",
                         "allow_sampling": true, "organization": "*", "group": null}]}
    ]});
    assert_eq!(
        from_models(&v, "meta-llama/Llama-3.1-8B-Instruct"),
        info(None, Some(131_072), None),
        "vLLM reports no batch limit"
    );
    // Several entries and none is ours: which context applies is unknown.
    assert_eq!(from_models(&v, "another-model"), UNKNOWN);
}

#[test]
fn a_single_model_entry_counts_whatever_its_id() {
    // SGLang's card: the served model name may differ from the pool's model name.
    let v = json!({"object": "list", "data": [{"id": "qwen/qwen2.5-0.5b-instruct",
        "object": "model", "created": 1774039934, "owned_by": "sglang",
        "root": "qwen/qwen2.5-0.5b-instruct", "max_model_len": 32768}]});
    assert_eq!(from_models(&v, "qwen"), info(None, Some(32_768), None));
}

#[test]
fn model_lists_without_a_usable_context_are_unknown() {
    for v in [
        json!({"object": "list", "data": []}),
        json!({"data": [{"id": "m"}]}), // llama.cpp: no max_model_len
        json!({"data": [{"id": "m", "max_model_len": null}]}),
        json!({"data": [{"id": "m", "max_model_len": -4096}]}),
        json!({"data": [{"id": "m", "max_model_len": 0}]}),
        json!({"data": [{"id": "m", "max_model_len": "4096"}]}),
        json!({"data": [{"id": "m", "max_model_len": 4096.5}]}),
        json!({"data": [{"id": "m", "max_model_len": 4_294_967_296u64}]}),
        json!({"data": [{"id": "m", "max_model_len": 1e300}]}),
        json!({"data": {"id": "m"}}),
        json!([1, 2, 3]),
        json!("vllm"),
    ] {
        assert_eq!(from_models(&v, "m"), UNKNOWN, "{v}");
    }
    let float = json!({"data": [{"id": "m", "max_model_len": 8192.0}]});
    assert_eq!(from_models(&float, "m").max_model_len, Some(8192));
}

/// The shape of SGLang's `/get_server_info` (server args, the scheduler's ready message,
/// one internal state per DP rank), cut down to the fields around the ones read.
fn sglang_server_info(dp: u64, per_dp: u64, max_total: u64) -> Value {
    let state = json!({"model_path": "qwen/qwen2.5-0.5b-instruct", "context_length": null,
        "max_running_requests": 128, "last_gen_throughput": 129.3,
        "memory_usage": {"weight": 0.98, "kvcache": 0.23, "token_capacity": max_total, "graph": 0},
        "effective_max_running_requests_per_dp": per_dp});
    json!({
        "model_path": "qwen/qwen2.5-0.5b-instruct", "tokenizer_mode": "auto",
        "context_length": null, "mem_fraction_static": 0.907,
        "max_running_requests": 128, "max_queued_requests": null, "max_total_tokens": null,
        "chunked_prefill_size": 8192, "max_prefill_tokens": 16384, "page_size": 1,
        "tp_size": 1, "pp_size": 1, "dp_size": dp, "served_model_name": "qwen",
        "api_key": null, "cuda_graph_bs": [1, 2, 4],
        "status": "ready", "max_total_num_tokens": max_total, "max_req_input_len": 20474,
        "internal_states": vec![state; usize::try_from(dp).unwrap()],
        "version": "0.5.9"
    })
}

#[test]
fn sglang_server_info_gives_batch_limit_and_kv_capacity_for_all_dp_ranks() {
    assert_eq!(
        from_sglang_server_info(&sglang_server_info(1, 128, 20_480)),
        info(Some(128), None, Some(20_480)),
        "context_length is null unless set: the context comes from /v1/models"
    );
    assert_eq!(
        from_sglang_server_info(&sglang_server_info(4, 64, 100_000)),
        info(Some(256), None, Some(400_000))
    );
    let mut with_context = sglang_server_info(1, 128, 20_480);
    with_context["context_length"] = json!(8192);
    assert_eq!(
        from_sglang_server_info(&with_context).max_model_len,
        Some(8192)
    );
}

#[test]
fn older_sglang_without_internal_states_falls_back_to_the_argument() {
    let v = json!({"max_running_requests": 200, "dp_size": 1, "max_total_num_tokens": 50000});
    assert_eq!(
        from_sglang_server_info(&v),
        info(Some(200), None, Some(50_000))
    );
    let unset = json!({"max_running_requests": null, "internal_states": [{}]});
    assert_eq!(from_sglang_server_info(&unset), UNKNOWN);
}

#[test]
fn sglang_garbage_and_overflow_stay_unknown() {
    for v in [
        json!({"max_running_requests": -1, "max_total_num_tokens": -20480}),
        json!({"max_running_requests": "many", "context_length": true}),
        json!({"internal_states": "none", "max_total_num_tokens": {}}),
        json!({"max_running_requests": 5_000_000_000u64}),
        json!(null),
    ] {
        assert_eq!(from_sglang_server_info(&v), UNKNOWN, "{v}");
    }
    // Huge per-rank figures times many ranks overflow: unknown, not wrapped.
    let v = json!({"dp_size": 4, "max_total_num_tokens": u64::MAX / 2,
        "internal_states": [{"effective_max_running_requests_per_dp": 2_000_000_000u64}]});
    assert_eq!(from_sglang_server_info(&v), UNKNOWN);
    // A nonsensical dp_size counts as one rank rather than spoiling the rest.
    let v = json!({"dp_size": -2, "max_total_num_tokens": 1000});
    assert_eq!(from_sglang_server_info(&v).kv_capacity_tokens, Some(1000));
}

#[test]
fn llamacpp_props_give_the_slot_count_and_one_slots_context() {
    let v = json!({
        "default_generation_settings": {"id": 0, "id_task": -1, "n_ctx": 8192,
            "speculative": false, "is_processing": false,
            "params": {"n_predict": -1, "seed": 4294967295u64, "temperature": 0.8, "top_k": 40}},
        "total_slots": 4,
        "model_path": "/models/SmolLM2-135M-Instruct-Q8_0.gguf",
        "modalities": {"vision": false, "audio": false},
        "chat_template": "{% for message in messages %}...{% endfor %}",
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "build_info": "b5000-abcdef0"
    });
    assert_eq!(
        from_llamacpp_props(&v),
        info(Some(4), Some(8192), None),
        "n_ctx is per slot; the shared KV total is not claimed"
    );
    for garbage in [
        json!({"total_slots": -4, "default_generation_settings": {"n_ctx": "8192"}}),
        json!({"total_slots": 1e30, "default_generation_settings": []}),
        json!({"total_slots": 0, "default_generation_settings": {"n_ctx": 0}}),
        json!({"n_ctx": 8192}), // an old server's total context is not a slot's
        json!(42),
    ] {
        assert_eq!(from_llamacpp_props(&garbage), UNKNOWN, "{garbage}");
    }
}

#[test]
fn vllm_cache_config_info_gives_blocks_times_block_size_summed_over_engines() {
    let text = "\
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size=\"16\",cache_dtype=\"auto\",calculate_kv_scales=\"False\",cpu_offload_gb=\"0\",enable_prefix_caching=\"True\",engine=\"0\",gpu_memory_utilization=\"0.9\",num_cpu_blocks=\"None\",num_gpu_blocks=\"27051\",num_gpu_blocks_override=\"None\",prefix_caching_hash_algo=\"builtin\",sliding_window=\"None\",swap_space=\"4\"} 1.0
vllm:cache_config_info{block_size=\"16\",cache_dtype=\"auto\",engine=\"1\",num_gpu_blocks=\"27000\",num_cpu_blocks=\"None\"} 1.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0
";
    assert_eq!(
        from_metrics(text),
        info(None, None, Some(16 * (27_051 + 27_000)))
    );
    // The simulator's form: no engine label.
    let sim = "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"2048\"} 1\n";
    assert_eq!(from_metrics(sim).kv_capacity_tokens, Some(32_768));
}

#[test]
fn label_values_with_escapes_commas_and_braces_are_read_whole() {
    let text = "vllm:cache_config_info{note=\"a \\\"quoted\\\" {brace}, comma\\\\\",block_size=\"32\",num_gpu_blocks=\"10\"} 1\n";
    assert_eq!(from_metrics(text).kv_capacity_tokens, Some(320));
}

#[test]
fn sglang_metrics_count_each_dp_rank_once_however_many_tp_ranks_report_it() {
    let labels = |tp: u32, dp: u32| {
        format!(
            "model_name=\"qwen\",engine_type=\"unified\",tp_rank=\"{tp}\",pp_rank=\"0\",moe_ep_rank=\"0\",dp_rank=\"{dp}\""
        )
    };
    let mut text = String::from("# TYPE sglang:max_total_num_tokens gauge\n");
    for (tp, dp) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
        let l = labels(tp, dp);
        text.push_str(&format!(
            "sglang:max_total_num_tokens{{{l}}} 20480.0\nsglang:context_len{{{l}}} 32768.0\n\
             sglang:num_running_reqs{{{l}}} 2.0\n"
        ));
    }
    assert_eq!(from_metrics(&text), info(None, Some(32_768), Some(40_960)));
    // Page size times pages wins over the total when both are there.
    let l = labels(0, 0);
    let paged = format!(
        "sglang:page_size{{{l}}} 64.0\nsglang:num_pages{{{l}}} 300.0\nsglang:max_total_num_tokens{{{l}}} 20480.0\n"
    );
    assert_eq!(from_metrics(&paged).kv_capacity_tokens, Some(19_200));
    // The GIE form, and the batch limit of older SGLang.
    let gie = "sglang:cache_config_info{model_name=\"m\",page_size=\"16\",num_pages=\"1000\"} 1\n\
               sglang:max_running_requests{name=\"m\"} 256\n";
    assert_eq!(from_metrics(gie), info(Some(256), None, Some(16_000)));
}

#[test]
fn garbage_metrics_are_skipped_and_leave_the_facts_unknown() {
    for text in [
        "",
        "random text\n{}{}\n\u{0}\u{1}",
        "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"27051\" 1\n", // unclosed
        "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"None\"} 1\n",
        "vllm:cache_config_info{block_size=\"-16\",num_gpu_blocks=\"100\"} 1\n",
        "vllm:cache_config_info{block_size=16,num_gpu_blocks=100} 1\n",
        "vllm:cache_config_info{block_size=\"18446744073709551615\",num_gpu_blocks=\"2\"} 1\n",
        "sglang:max_total_num_tokens -5\nsglang:context_len NaN\nsglang:max_running_requests +Inf\n",
        "sglang:max_total_num_tokens 1e300\nsglang:context_len 4294967296\n",
        "sglang:context_len 0.5\nsglang:max_running_requests\n",
    ] {
        assert_eq!(from_metrics(text), UNKNOWN, "{text:?}");
    }
}

#[test]
fn merging_keeps_the_first_known_value_of_each_field() {
    let a = info(None, Some(4096), None);
    let b = info(Some(8), Some(8192), Some(1000));
    assert_eq!(or(a, b), info(Some(8), Some(4096), Some(1000)));
    assert_eq!(or(UNKNOWN, UNKNOWN), UNKNOWN);
}
