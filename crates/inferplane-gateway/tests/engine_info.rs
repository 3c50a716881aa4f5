//! Engine facts (batch limit, context length, KV capacity) discovered from real HTTP
//! stand-ins that answer like vLLM, SGLang and llama.cpp, and from the built-in simulator;
//! configured values win, garbage leaves the facts unknown and the gateway keeps serving.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "engine_info/standins.rs"]
mod standins;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::get;
use common::*;
use inferplane_core::{EngineInfo, InstanceId, InstanceSpec};
use inferplane_gateway::Gateway;
use inferplane_gateway::config::{FileConfig, InstanceSection, PoolSection};
use inferplane_gateway::engine_info::{self, DiscoveryError};
use inferplane_gateway::{ControlPlane, config::Secret};
use serde_json::{Value, json};
use standins::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

fn instance(id: &str, url: &str) -> InstanceSection {
    InstanceSection {
        id: Some(id.to_string()),
        url: url.to_string(),
        max_inflight: None,
        layout: Default::default(),
        gpu: None,
        price: None,
        api_key: None,
        max_model_len: None,
        max_batch: None,
        kv_events: None,
    }
}

fn config(model: &str, instances: Vec<InstanceSection>) -> (FileConfig, usize) {
    let mut f = fast_config();
    let mut pool: PoolSection =
        toml::from_str(&format!("model = \"{model}\"\nmax_inflight = 4")).unwrap();
    let n = instances.len();
    pool.instances = instances;
    f.pools.push(pool);
    (f, n)
}

/// Polls `GET /admin/instances` (bounded) until instance `id` satisfies `pred`.
async fn wait_view(gw: &Gateway, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let http = reqwest::Client::new();
    let url = format!("{}/admin/instances", gw.url());
    let poll = async {
        loop {
            let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
            let found = v["instances"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["id"] == id && pred(i))
                .cloned();
            if let Some(view) = found {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), poll).await {
        Ok(view) => view,
        Err(_) => panic!("instance {id} never showed the expected engine facts"),
    }
}

fn facts(view: &Value) -> (Value, Value, Value) {
    (
        view["engine_max_batch"].clone(),
        view["engine_max_model_len"].clone(),
        view["engine_kv_capacity_tokens"].clone(),
    )
}

#[tokio::test]
async fn the_admin_api_and_metrics_show_what_vllm_sglang_and_llamacpp_say_about_themselves() {
    let (vllm, sglang, llama) = (
        serve(vllm_like()).await,
        serve(sglang_like()).await,
        serve(llamacpp_like()).await,
    );
    let (f, n) = config(
        MODEL,
        vec![
            instance("vllm", &vllm),
            instance("sglang", &sglang),
            instance("llama", &llama),
        ],
    );
    let gw = gateway(f, n).await;
    let v = wait_view(&gw, "vllm", |v| !v["engine_kv_capacity_tokens"].is_null()).await;
    assert_eq!(facts(&v), (json!(null), json!(16384), json!(16000)));
    let v = wait_view(&gw, "sglang", |v| !v["engine_max_batch"].is_null()).await;
    assert_eq!(facts(&v), (json!(48), json!(32768), json!(70000)));
    let v = wait_view(&gw, "llama", |v| !v["engine_max_batch"].is_null()).await;
    assert_eq!(facts(&v), (json!(4), json!(4096), json!(null)));

    let text = metrics_text(&gw).await;
    for needle in [
        "inferplane_instance_engine_max_model_len{model=\"sim-model\",instance=\"vllm\"} 16384",
        "inferplane_instance_engine_kv_capacity_tokens{model=\"sim-model\",instance=\"vllm\"} 16000",
        "inferplane_instance_engine_max_batch{model=\"sim-model\",instance=\"sglang\"} 48",
        "inferplane_instance_engine_max_batch{model=\"sim-model\",instance=\"llama\"} 4",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    for absent in [
        "inferplane_instance_engine_max_batch{model=\"sim-model\",instance=\"vllm\"}",
        "inferplane_instance_engine_kv_capacity_tokens{model=\"sim-model\",instance=\"llama\"}",
    ] {
        assert!(
            !text.contains(absent),
            "unknown facts have no series: {absent}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("inferplane_instance_engine_m") && l.ends_with("NaN")),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn configured_limits_win_over_the_engine_which_wins_over_the_planner() {
    let vllm = serve(vllm_like()).await;
    // A model and GPU the planner knows: it estimates all three facts.
    let model = "llama-3.1-8b";
    let mut own = instance("own", &vllm);
    own.gpu = Some("h100-sxm".into());
    own.max_model_len = Some(2048);
    own.max_batch = Some(8);
    let mut planned_only = instance("planned", &vllm);
    planned_only.gpu = Some("h100-sxm".into());
    let (f, n) = config(model, vec![own, planned_only]);
    let gw = gateway(f, n).await;

    let mut spec = InstanceSpec::new("planned", vllm.as_str(), model, 4);
    spec.gpu = Some("h100-sxm".into());
    let plan = inferplane_planner::forecast(&spec)
        .map(|f| f.info)
        .unwrap_or_default();
    assert!(plan.max_batch.is_some() && plan.kv_capacity_tokens.is_some());

    // `own`: context and batch limit from its config, the KV capacity from the engine
    // (over the planner's).
    let v = wait_view(&gw, "own", |v| v["engine_kv_capacity_tokens"] == 16000).await;
    assert_eq!(facts(&v), (json!(8), json!(2048), json!(16000)));
    // `planned`: vLLM says nothing of its batch limit, so the planner's stands; the
    // engine's context and KV capacity win over the planner's.
    let v = wait_view(&gw, "planned", |v| v["engine_kv_capacity_tokens"] == 16000).await;
    assert_eq!(
        facts(&v),
        (json!(plan.max_batch), json!(16384), json!(16000))
    );

    // Registered at run time: a limit in the body wins too, at once.
    let http = reqwest::Client::new();
    let admin = format!("{}/admin/instances", gw.url());
    let resp = http
        .post(&admin)
        .json(&json!({"id": "late", "model": model, "url": vllm, "max_model_len": 1024, "max_batch": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (
            v["engine_max_batch"].clone(),
            v["engine_max_model_len"].clone()
        ),
        (json!(2), json!(1024))
    );
    let v = wait_view(&gw, "late", |v| v["engine_kv_capacity_tokens"] == 16000).await;
    assert_eq!(facts(&v), (json!(2), json!(1024), json!(16000)));
    let resp = http
        .post(&admin)
        .json(&json!({"id": "bad", "model": model, "url": vllm, "max_batch": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "max_batch", "{err}");
    gw.shutdown().await;
}

#[tokio::test]
async fn garbage_and_oversized_answers_leave_facts_unknown_and_the_gateway_still_serves() {
    // Garbage everywhere except `/props`, whose slot count shows that discovery ran.
    let junk = serve(engine(
        text_route("/v1/models", "<html>502 Bad Gateway</html>{")
            .merge(status_route(
                "/get_server_info",
                StatusCode::INTERNAL_SERVER_ERROR,
            ))
            .merge(json_route(
                "/props",
                json!({"total_slots": 2, "default_generation_settings": {"n_ctx": -1}}),
            ))
            .merge(text_route(
                "/metrics",
                "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"oops\"} 1\n\u{0}garbage",
            )),
    ))
    .await;
    // A valid `/v1/models` padded past the 1 MiB cap, and a marker slot count.
    let padded = format!(
        "{{\"data\":[{{\"id\":\"{MODEL}\",\"max_model_len\":4096}}],\"pad\":\"{}\"}}",
        "x".repeat(2 << 20)
    );
    let huge = serve(engine(
        Router::new()
            .route("/v1/models", get(move || async move { padded }))
            .merge(json_route("/props", json!({"total_slots": 3}))),
    ))
    .await;
    let (f, n) = config(
        MODEL,
        vec![instance("junk", &junk), instance("huge", &huge)],
    );
    let gw = gateway(f, n).await;
    let v = wait_view(&gw, "junk", |v| v["engine_max_batch"] == 2).await;
    assert_eq!(facts(&v), (json!(2), json!(null), json!(null)));
    let v = wait_view(&gw, "huge", |v| v["engine_max_batch"] == 3).await;
    assert_eq!(
        facts(&v),
        (json!(3), json!(null), json!(null)),
        "an answer past the cap is not read"
    );
    let http = reqwest::Client::new();
    for _ in 0..4 {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
        assert_eq!(status, 200, "{body}");
        assert!(matches!(inst.as_deref(), Some("junk" | "huge")));
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn discovery_from_an_engine_that_fails_hangs_or_lies_everywhere_finds_nothing() {
    let url = serve(
        status_route("/v1/models", StatusCode::INTERNAL_SERVER_ERROR)
            .merge(status_route(
                "/get_server_info",
                StatusCode::SERVICE_UNAVAILABLE,
            ))
            .route("/props", get(std::future::pending::<String>))
            .route(
                "/metrics",
                get(|| async { Body::from(vec![0xff, 0xfe, b'v', b'l', b'l', b'm', b':']) }),
            ),
    )
    .await;
    let http = reqwest::Client::new();
    let key = Secret::new("k");
    let info =
        engine_info::discover(&http, &url, MODEL, Some(&key), Duration::from_millis(300)).await;
    assert_eq!(info, EngineInfo::default());
    let hang = engine_info::get_capped(
        &http,
        &format!("{url}/props"),
        None,
        Duration::from_millis(100),
        1024,
    )
    .await;
    assert!(
        matches!(hang, Err(DiscoveryError::Timeout { .. })),
        "{hang:?}"
    );
    let failed = engine_info::get_capped(
        &http,
        &format!("{url}/v1/models"),
        None,
        Duration::from_secs(5),
        1024,
    )
    .await;
    assert!(
        matches!(failed, Err(DiscoveryError::Status { status: 500, .. })),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_streamed_body_is_cut_off_past_the_cap() {
    // Chunked, without a length: the cap must hold while reading.
    let chunks = |n: usize| {
        futures_util::stream::iter(
            (0..n).map(|_| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![b'x'; 1024]))),
        )
    };
    let url = serve(
        Router::new()
            .route(
                "/big",
                get(move || async move { Body::from_stream(chunks(64)) }),
            )
            .route(
                "/fits",
                get(move || async move { Body::from_stream(chunks(4)) }),
            ),
    )
    .await;
    let http = reqwest::Client::new();
    let t = Duration::from_secs(5);
    let big = engine_info::get_capped(&http, &format!("{url}/big"), None, t, 16 * 1024).await;
    assert!(
        matches!(big, Err(DiscoveryError::TooLarge { limit: 16384, .. })),
        "{big:?}"
    );
    let fits = engine_info::get_capped(&http, &format!("{url}/fits"), None, t, 4 * 1024).await;
    assert_eq!(fits.unwrap().len(), 4 * 1024, "exactly the cap is fine");
}

#[tokio::test]
async fn the_simulator_reports_its_context_and_kv_capacity() {
    let s = sim("s", MODEL).await;
    let profile = inferplane_sim::EngineProfile::preset("tiny").unwrap();
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("s", &s)], 4);
    let gw = gateway(f, 1).await;
    let v = wait_view(&gw, "s", |v| !v["engine_kv_capacity_tokens"].is_null()).await;
    assert_eq!(v["engine_max_model_len"], json!(profile.max_model_len));
    assert_eq!(
        v["engine_kv_capacity_tokens"],
        json!(profile.kv_capacity_tokens())
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_engine_back_from_unhealthy_is_asked_again() {
    let healthy = Arc::new(AtomicBool::new(true));
    let context = Arc::new(AtomicU32::new(1000));
    let (h, c) = (healthy.clone(), context.clone());
    let app = Router::new()
        .route(
            "/health",
            get(move || {
                let up = h.load(Ordering::SeqCst);
                async move {
                    if up {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        )
        .route(
            "/v1/models",
            get(move || {
                let len = c.load(Ordering::SeqCst);
                async move { axum::Json(json!({"data": [{"id": MODEL, "max_model_len": len}]})) }
            }),
        );
    let url = serve(app).await;
    let (f, n) = config(MODEL, vec![instance("e", &url)]);
    let gw = gateway(f, n).await;
    wait_view(&gw, "e", |v| v["engine_max_model_len"] == 1000).await;
    // The engine goes down and comes back with another context length.
    healthy.store(false, Ordering::SeqCst);
    wait_view(&gw, "e", |v| v["health"] == "unhealthy").await;
    context.store(2000, Ordering::SeqCst);
    healthy.store(true, Ordering::SeqCst);
    let v = wait_view(&gw, "e", |v| v["engine_max_model_len"] == 2000).await;
    assert_eq!(v["health"], "healthy");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_embedding_program_can_report_engine_facts_and_configuration_still_wins() {
    let cp = ControlPlane::builder()
        .health_checks(false)
        .scrape_engines(false)
        .pool("m", 100, Duration::from_secs(30), None)
        .configure(|f| f.pools[0].max_batch = Some(5))
        .instance(InstanceSpec::new("a", "http://127.0.0.1:9", "m", 4))
        .start()
        .unwrap();
    let id = InstanceId::new("a");
    cp.report_engine_info(
        &id,
        EngineInfo {
            max_batch: Some(64),
            max_model_len: Some(8192),
            kv_capacity_tokens: None,
        },
    );
    let poll = async {
        loop {
            let v = cp.instances().await.unwrap();
            if v[0].engine_max_model_len.is_some() {
                return v[0].clone();
            }
            tokio::task::yield_now().await;
        }
    };
    let v = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap();
    assert_eq!(
        (
            v.engine_max_batch,
            v.engine_max_model_len,
            v.engine_kv_capacity_tokens
        ),
        (Some(5), Some(8192), None)
    );
}
