//! Admission end to end over real HTTP: a request longer than every engine's context is a
//! 400 naming the parameter; under overload the lowest class is shed with 429 and
//! `Retry-After` while critical work is served; an engine's own batch limit (a llama.cpp
//! server's slots, discovered from `/props`) holds the rest in the gateway, where critical
//! work goes first.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#![allow(clippy::disallowed_types)] // a std Mutex for the stand-in's bookkeeping, not a hot path

mod common;
#[path = "engine_info/standins.rs"]
#[allow(dead_code)] // this binary uses a few of the stand-ins
mod standins;

use axum::Router;
use axum::routing::{get, post};
use common::*;
use inferplane_gateway::Gateway;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

async fn queued(gw: &Gateway, class: usize) -> usize {
    gw.control_plane().policies().await.unwrap()[0].queued_by_priority[class]
}

#[tokio::test]
async fn a_request_longer_than_every_engines_context_is_a_400_naming_messages() {
    let a = sim_with("a", MODEL, |c| c.profile.max_model_len = 512).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    wait_instance(&gw, "a", |v| v.engine_max_model_len == Some(512)).await;
    let http = reqwest::Client::new();
    let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 1000, false)).await;
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("512"), "the limit is named: {msg}");
    // one that fits is served
    let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 100, false)).await;
    assert_eq!(status, 200, "{body}");
    let text = metrics_text(&gw).await;
    assert!(
        text.contains(
            "inferplane_rejects_total{model=\"sim-model\",reason=\"context_length_exceeded\"} 1"
        ),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn under_overload_low_is_shed_with_429_and_retry_after_while_critical_is_served() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 1);
    f.pools[0].policy = Some(toml::from_str("kind = \"priority\"").unwrap());
    f.scheduler.overload = toml::from_str(
        "wait = { critical = \"20s\", high = \"10s\", normal = \"5s\", low = \"1ms\" }",
    )
    .unwrap();
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let send = |priority: &'static str, max_tokens: u32| {
        let (http, url) = (http.clone(), gw.url());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .header("x-priority", priority)
                .json(&chat(MODEL, max_tokens, false))
                .send()
                .await
                .unwrap()
        })
    };
    // a first answer measures the engine's speed (nothing is shed on a guess before)
    assert_eq!(send("normal", 4).await.unwrap().status(), 200);
    // one long request (about 0.8 s on the tiny simulator) holds the only place
    let holder = send("normal", 400);
    eventually("the holder runs", || async {
        gw.control_plane().metrics().await.unwrap().total.active == 1
    })
    .await;
    let critical = send("critical", 4);
    eventually("critical waits", || async { queued(&gw, 0).await == 1 }).await;
    // a low request would wait longer than its 1 ms budget: shed at once
    let low = send("low", 4).await.unwrap();
    assert_eq!(low.status(), 429);
    let after: u32 = low.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&after), "Retry-After {after}");
    let v: Value = low.json().await.unwrap();
    assert_eq!(v["error"]["code"], "shed");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("low"),
        "{v}"
    );
    assert_eq!(critical.await.unwrap().status(), 200);
    assert_eq!(holder.await.unwrap().status(), 200);
    let text = metrics_text(&gw).await;
    assert!(
        text.contains("inferplane_rejects_total{model=\"sim-model\",reason=\"shed\"} 1"),
        "{text}"
    );
    gw.shutdown().await;
}

/// A llama.cpp-like server with two slots whose answers wait for `gate`; records the
/// order in which requests reached it by their message text.
fn two_slot_engine(order: Arc<Mutex<Vec<String>>>, gate: watch::Receiver<bool>) -> Router {
    let chat = post(move |body: axum::Json<Value>| {
        let order = order.clone();
        let mut gate = gate.clone();
        async move {
            let text = body["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .to_string();
            order.lock().unwrap().push(text);
            let _ = gate.wait_for(|open| *open).await;
            axum::Json(
                json!({"id": "c-1", "object": "chat.completion", "created": 1,
                "model": MODEL, "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
            )
        }
    });
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/chat/completions", chat)
        .merge(standins::json_route(
            "/props",
            json!({"default_generation_settings": {"id": 0, "n_ctx": 4096, "params": {}},
                "total_slots": 2, "model_path": "/models/m.gguf", "build_info": "b5000"}),
        ))
        .merge(standins::text_route(
            "/metrics",
            "llamacpp:requests_processing 0\n",
        ))
}

#[tokio::test]
async fn an_engines_own_slots_hold_the_rest_in_the_gateway_where_critical_goes_first() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let (open, gate) = watch::channel(false);
    let url = standins::serve(two_slot_engine(order.clone(), gate)).await;
    let mut f = fast_config();
    // no max_inflight anywhere: the engine's two slots are the limit
    f.pools.push(
        toml::from_str(&format!(
            "model = \"{MODEL}\"\n[[instances]]\nid = \"llama\"\nurl = \"{url}\"\n"
        ))
        .unwrap(),
    );
    let gw = gateway(f, 1).await;
    wait_instance(&gw, "llama", |v| v.engine_max_batch == Some(2)).await;
    let http = reqwest::Client::new();
    let send = |priority: &'static str, text: &'static str| {
        let (http, url) = (http.clone(), gw.url());
        tokio::spawn(async move {
            let body = json!({"model": MODEL, "max_tokens": 4,
                "messages": [{"role": "user", "content": text}]});
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .header("x-priority", priority)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    let mut all = vec![send("normal", "n1"), send("normal", "n2")];
    eventually("both slots busy", || async {
        order.lock().unwrap().len() == 2
    })
    .await;
    for text in ["l1", "l2", "l3"] {
        all.push(send("low", text));
    }
    eventually("three low wait in the gateway", || async {
        queued(&gw, 3).await == 3
    })
    .await;
    all.push(send("critical", "c1"));
    eventually("critical waits", || async { queued(&gw, 0).await == 1 }).await;
    assert_eq!(order.lock().unwrap().len(), 2, "nothing past the two slots");
    open.send(true).unwrap();
    for r in all {
        assert_eq!(r.await.unwrap(), 200);
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order[2], "c1",
        "critical first once a slot frees: {order:?}"
    );
    assert_eq!(order.len(), 6);
    gw.shutdown().await;
}
