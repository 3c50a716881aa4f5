//! Wire tests: the async-openai client through the gateway to simulated instances,
//! streaming and not, `/v1/models` over pools, headers parsed and echoed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions,
    CreateChatCompletionRequestArgs,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use common::*;
use futures_util::StreamExt;

fn openai(url: &str) -> async_openai::Client<async_openai::config::OpenAIConfig> {
    async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(format!("{url}/v1"))
            .with_api_key("unused"),
    )
}

fn chat_req(max: u32, stream: bool) -> async_openai::types::chat::CreateChatCompletionRequest {
    let mut b = CreateChatCompletionRequestArgs::default();
    b.model(MODEL).max_completion_tokens(max).messages([
        ChatCompletionRequestUserMessageArgs::default()
            .content("hi gateway")
            .build()
            .unwrap()
            .into(),
    ]);
    if stream {
        b.stream(true).stream_options(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        });
    }
    b.build().unwrap()
}

#[tokio::test]
async fn async_openai_through_the_gateway_streaming_and_not() {
    let a = sim("a", MODEL).await;
    let b = sim("b", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a), ("b", &b)], 8);
    let gw = gateway(f, 2).await;
    let client = openai(&gw.url());

    let resp = client.chat().create(chat_req(6, false)).await.unwrap();
    assert_eq!(resp.usage.unwrap().completion_tokens, 6);
    assert_eq!(
        resp.choices[0]
            .message
            .content
            .as_ref()
            .unwrap()
            .split_whitespace()
            .count(),
        6
    );

    let mut stream = client
        .chat()
        .create_stream(chat_req(9, true))
        .await
        .unwrap();
    let (mut words, mut usage) = (0, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        usage = usage.or(chunk.usage);
        for c in chunk.choices {
            words += c
                .delta
                .content
                .unwrap_or_default()
                .split_whitespace()
                .count();
        }
    }
    assert_eq!(words, 9);
    assert_eq!(usage.unwrap().completion_tokens, 9);

    let req = CreateCompletionRequestArgs::default()
        .model(MODEL)
        .prompt("count to five")
        .max_tokens(5u32)
        .build()
        .unwrap();
    let done = client.completions().create(req).await.unwrap();
    assert_eq!(done.choices[0].text.split_whitespace().count(), 5);

    // The dispatcher accounted for all three, with tokens from the engines' usage.
    let m = gw.control_plane().metrics().await.unwrap();
    assert_eq!(m.total.completed, 3);
    assert_eq!(m.total.completion_tokens, 6 + 9 + 5);
    assert_eq!(m.total.failed, 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn models_are_aggregated_over_pools() {
    let a = sim("a", "model-one").await;
    let b = sim("b", "model-two").await;
    let mut f = fast_config();
    add_pool(&mut f, "model-one", &[("a", &a)], 4);
    add_pool(&mut f, "model-two", &[("b", &b)], 4);
    let gw = gateway(f, 2).await;
    let list = openai(&gw.url()).models().list().await.unwrap();
    let mut ids: Vec<String> = list.data.into_iter().map(|m| m.id).collect();
    ids.sort();
    assert_eq!(ids, ["model-one", "model-two"]);
    // Each model goes to its own pool.
    let http = reqwest::Client::new();
    let (status, inst, _) = post_chat(&http, &gw, &chat("model-two", 2, false)).await;
    assert_eq!((status, inst.as_deref()), (200, Some("b")));
    gw.shutdown().await;
}

#[tokio::test]
async fn request_id_is_echoed_or_generated_and_the_instance_is_named() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-request-id", "my-id-42")
        .header("x-priority", "high")
        .header("x-slo-ms", "60000")
        .header("x-session-id", "s1")
        .json(&chat(MODEL, 2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "my-id-42");
    assert_eq!(resp.headers()["x-inferplane-instance"], "a");
    let resp = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat(MODEL, 2, false))
        .send()
        .await
        .unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32, "a generated id: {generated}");
    // The SLO was tracked and met.
    let m = gw.control_plane().metrics().await.unwrap();
    assert_eq!(m.total.slo_tracked, 1);
    assert_eq!(m.total.slo_compliance_rate, Some(1.0));
    gw.shutdown().await;
}

#[tokio::test]
async fn usage_chunk_reaches_only_clients_that_asked_for_it() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let (_, _, plain) = post_chat(&http, &gw, &chat(MODEL, 4, true)).await;
    assert!(plain.ends_with("data: [DONE]\n\n"), "{plain}");
    assert!(!plain.contains("\"usage\""), "not asked for: {plain}");
    let mut asked = chat(MODEL, 4, true);
    asked["stream_options"] = serde_json::json!({"include_usage": true});
    let (_, _, with) = post_chat(&http, &gw, &asked).await;
    assert!(with.contains("\"completion_tokens\":4"), "{with}");
    // The gateway counted tokens for both (it asked the engine for usage itself).
    let m = gw.control_plane().metrics().await.unwrap();
    assert_eq!(m.total.completion_tokens, 8);
    assert!(m.total.ttft_ms.count == 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn prometheus_metrics_count_requests_by_model_route_and_status() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    post_chat(&http, &gw, &chat(MODEL, 3, true)).await;
    post_chat(&http, &gw, &chat(MODEL, 3, false)).await;
    let text = metrics_text(&gw).await;
    for needle in [
        "inferplane_requests_total{model=\"sim-model\",route=\"chat_completions\",status=\"success\"} 2",
        "inferplane_completion_tokens_total{model=\"sim-model\"} 6",
        // the time to first token of the streamed answer only: a whole answer has none
        "inferplane_ttft_seconds_count{model=\"sim-model\"} 1",
        "inferplane_e2e_latency_seconds_count{model=\"sim-model\"} 2",
        "inferplane_instance_healthy{model=\"sim-model\",instance=\"a\"} 1",
        "inferplane_instance_circuit_state{model=\"sim-model\",instance=\"a\"} 0",
        "inferplane_instance_requests_total{model=\"sim-model\",instance=\"a\",outcome=\"success\"} 2",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_page_is_served_and_reads_the_admin_api() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let resp = reqwest::get(format!("{}/dashboard", gw.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("/admin/metrics")
            && html.contains("/admin/instances")
            && html.contains("/admin/policy")
            && html.contains("/admin/tenants")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn health_fails_once_the_dispatcher_has_stopped() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let health = format!("{}/health", gw.url());
    assert_eq!(http.get(&health).send().await.unwrap().status(), 200);
    // the dispatcher ends (as it would on a bug); the server must not look healthy
    gw.control_plane().shutdown();
    for _ in 0..200 {
        if !gw.control_plane().is_alive() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(!gw.control_plane().is_alive());
    let resp = http.get(&health).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "dispatcher_stopped");
    gw.shutdown().await;
}
