//! Bad input gets an OpenAI-style error with the right status, never a panic.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{MODEL, start, start_with};
use serde_json::{Value, json};

async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn assert_openai_error(v: &Value) -> &str {
    let err = &v["error"];
    assert!(err["type"].is_string(), "{v}");
    assert!(
        err.get("param").is_some() && err.get("code").is_some(),
        "{v}"
    );
    err["message"].as_str().unwrap()
}

#[tokio::test]
async fn each_kind_of_bad_request_gets_a_clear_4xx() {
    let server = start().await;
    let chat = format!("{}/v1/chat/completions", server.url());
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid request body"),
        (json!({"messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "model"),
        (json!({"model": MODEL}).to_string(), 400, "messages"),
        (json!({"model": MODEL, "messages": []}).to_string(), 400, "must not be empty"),
        (json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}).to_string(), 400, "invalid type"),
        (json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).to_string(), 400, "at least 1"),
        (json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3}).to_string(), 400, "n = 3"),
        (json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}).to_string(), 400, "maximum context length"),
        (json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).to_string(), 404, "does not exist"),
    ];
    for (body, status, needle) in cases {
        let (got, v) = post(&chat, body.clone()).await;
        assert_eq!(got, status, "{body} -> {v}");
        let msg = assert_openai_error(&v);
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }
    let (_, v) = post(
        &chat,
        json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).to_string(),
    )
    .await;
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");

    let completions = format!("{}/v1/completions", server.url());
    let (got, v) = post(
        &completions,
        json!({"model": MODEL, "prompt": ["a", "b"]}).to_string(),
    )
    .await;
    assert_eq!(got, 400);
    assert!(assert_openai_error(&v).contains("one prompt per request"));
}

#[tokio::test]
async fn wrong_method_unknown_route_and_oversized_body_are_json_errors() {
    let server = start_with(|c| c.max_body_bytes = 1024).await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/v1/chat/completions", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_openai_error(&resp.json().await.unwrap());
    let resp = http
        .get(format!("{}/v2/nothing", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_openai_error(&resp.json().await.unwrap());
    let big = json!({"model": MODEL, "messages": [{"role": "user", "content": "x".repeat(5000)}]})
        .to_string();
    let (status, v) = post(&format!("{}/v1/chat/completions", server.url()), big).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    // The server is still fine afterwards.
    let (status, _) = post(
        &format!("{}/v1/chat/completions", server.url()),
        json!({"model": MODEL, "messages": [{"role": "user", "content": "ok"}], "max_tokens": 1})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn with_an_api_key_v1_routes_need_the_bearer_token_and_health_does_not() {
    let server = start_with(|c| c.api_key = Some("k3y".into())).await;
    let http = reqwest::Client::new();
    let body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1});
    let url = format!("{}/v1/chat/completions", server.url());
    let resp = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let resp = http
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(&url)
        .bearer_auth("k3y")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        http.get(format!("{}/health", server.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/v1/models", server.url()))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}
