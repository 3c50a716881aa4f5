//! HTTP stand-ins on 127.0.0.1:0 that answer like vLLM, SGLang and llama.cpp's server
//! (shapes from their sources; see `engine_info.rs` in the gateway).

use super::common::MODEL;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

pub use super::common::engines::serve;

/// An engine that is healthy and answers chat requests, plus `extra` routes.
pub fn engine(extra: Router) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/chat/completions",
            post(|| async {
                axum::Json(
                    json!({"id": "c-1", "object": "chat.completion", "created": 1,
                    "model": MODEL, "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hi"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
                )
            }),
        )
        .merge(extra)
}

pub fn json_route(path: &str, body: Value) -> Router {
    Router::new().route(path, get(move || async move { axum::Json(body) }))
}

pub fn text_route(path: &str, body: &'static str) -> Router {
    Router::new().route(path, get(move || async move { body }))
}

pub fn status_route(path: &str, status: StatusCode) -> Router {
    Router::new().route(path, get(move || async move { (status, "engine error") }))
}

/// Answers like vLLM: context in `/v1/models`, KV blocks in `/metrics`, no batch limit.
pub fn vllm_like() -> Router {
    engine(
        json_route(
            "/v1/models",
            json!({"object": "list", "data": [{"id": MODEL, "object": "model",
                "owned_by": "vllm", "root": MODEL, "parent": null, "max_model_len": 16384}]}),
        )
        .merge(text_route(
            "/metrics",
            "# TYPE vllm:cache_config_info gauge\n\
             vllm:cache_config_info{block_size=\"16\",engine=\"0\",num_gpu_blocks=\"1000\",num_cpu_blocks=\"None\"} 1.0\n\
             vllm:num_requests_running{engine=\"0\",model_name=\"sim-model\"} 0.0\n",
        )),
    )
}

/// Answers like SGLang: context in `/v1/models`, limits in `/get_server_info`.
pub fn sglang_like() -> Router {
    engine(
        json_route(
            "/v1/models",
            json!({"object": "list", "data": [{"id": "served-name", "object": "model",
                "owned_by": "sglang", "root": "served-name", "max_model_len": 32768}]}),
        )
        .merge(json_route(
            "/get_server_info",
            json!({"model_path": "qwen/qwen2.5-0.5b-instruct", "context_length": null,
                "max_running_requests": null, "dp_size": 1, "page_size": 1,
                "status": "ready", "max_total_num_tokens": 70000, "max_req_input_len": 69994,
                "internal_states": [{"last_gen_throughput": 0.0,
                    "effective_max_running_requests_per_dp": 48}], "version": "0.5.9"}),
        ))
        .merge(text_route(
            "/metrics",
            "sglang:num_running_reqs{model_name=\"m\"} 0\n",
        )),
    )
}

/// Answers like llama.cpp's server: slots and a slot's context in `/props`.
pub fn llamacpp_like() -> Router {
    engine(
        json_route(
            "/props",
            json!({"default_generation_settings": {"id": 0, "n_ctx": 4096, "params": {}},
                "total_slots": 4, "model_path": "/models/m.gguf",
                "modalities": {"vision": false, "audio": false}, "build_info": "b5000"}),
        )
        .merge(json_route(
            "/v1/models",
            json!({"models": [{"name": "m.gguf", "model": "m.gguf"}], "object": "list",
                "data": [{"id": "m.gguf", "object": "model", "meta": {"n_ctx_train": 8192}}]}),
        ))
        .merge(text_route("/metrics", "llamacpp:requests_processing 0\n")),
    )
}
