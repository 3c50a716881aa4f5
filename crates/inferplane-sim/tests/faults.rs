//! Each scripted fault does what it says, set at start or flipped at run time through
//! `/sim/faults`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{MODEL, start, start_with};
use futures_util::StreamExt;
use inferplane_sim::FaultConfig;
use serde_json::json;
use std::time::Duration;

fn chat_body(max_tokens: u32, stream: bool) -> serde_json::Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, "stream": stream})
}

async fn set_faults(url: &str, faults: serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!("{url}/sim/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

async fn status_of(url: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(2, false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn fail_nth_fails_only_that_request_with_the_chosen_status() {
    let server = start().await;
    let url = server.url();
    set_faults(&url, json!({"fail_nth": 3, "fail_status": 503})).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(status_of(&url).await);
    }
    assert_eq!(statuses, vec![200, 200, 503, 200, 200]);
}

#[tokio::test]
async fn fail_all_fails_every_request_until_cleared() {
    let server = start_with(|c| c.faults.fail_all = true).await;
    let url = server.url();
    assert_eq!(status_of(&url).await, 500);
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(2, false))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "injected_fault");
    reqwest::Client::new()
        .delete(format!("{url}/sim/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(&url).await, 200);
}

#[tokio::test]
async fn hang_before_first_token_sends_nothing() {
    let server = start_with(|c| c.faults.hang_before_first_token = true).await;
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .timeout(Duration::from_millis(300))
        .json(&chat_body(2, true))
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
}

#[tokio::test]
async fn hang_after_k_tokens_streams_exactly_k_then_stalls() {
    let server = start().await;
    set_faults(&server.url(), json!({"hang_after_tokens": 3})).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&chat_body(20, true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    // Read until three content chunks arrived, then expect silence.
    while text.matches("\"content\"").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("tokens before the hang arrive")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let more = tokio::time::timeout(Duration::from_millis(300), body.next()).await;
    assert!(
        more.is_err(),
        "stream should stall after 3 tokens, got {more:?}"
    );
    assert_eq!(text.matches("\"content\"").count(), 3);
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn slowdown_makes_the_engine_slower() {
    let server = start().await;
    // tiny: ~2 ms per step, so 5 tokens take ~10 ms; at 10,000x slower they take ~100 s.
    set_faults(&server.url(), json!({"slowdown": 10000.0})).await;
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .timeout(Duration::from_millis(500))
        .json(&chat_body(5, false))
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
}

#[tokio::test]
async fn unhealthy_flips_health_to_503_and_back() {
    let server = start().await;
    let http = reqwest::Client::new();
    let health = || async {
        http.get(format!("{}/health", server.url()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(health().await, 200);
    server.faults().set(FaultConfig {
        unhealthy: true,
        ..FaultConfig::default()
    });
    assert_eq!(health().await, 503);
    server.faults().set(FaultConfig::default());
    assert_eq!(health().await, 200);
}

#[tokio::test]
async fn refuse_connections_closes_the_port_and_reopens_it_on_the_same_address() {
    let server = start().await;
    let url = server.url();
    assert_eq!(status_of(&url).await, 200);
    // A client whose pooled keep-alive connection is open before the fault.
    let pooled = reqwest::Client::new();
    assert_eq!(
        pooled
            .get(format!("{url}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    set_faults(&url, json!({"refuse_connections": true})).await;
    // Its open connection is reset: the engine "died".
    let res = pooled
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(1, false))
        .send()
        .await;
    assert!(res.is_err(), "open connections must fail too, got {res:?}");
    // A fresh client (no pooled connection) cannot connect.
    let mut refused = false;
    for _ in 0..50 {
        let res = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&chat_body(1, false))
            .send()
            .await;
        if let Err(e) = res {
            assert!(e.is_connect() || e.is_request(), "{e:?}");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "connections kept being accepted");
    server.faults().set(FaultConfig::default());
    let mut back = false;
    for _ in 0..200 {
        if let Ok(resp) = reqwest::Client::new()
            .get(format!("{url}/health"))
            .send()
            .await
        {
            back = resp.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back, "the port did not reopen");
}

#[tokio::test]
async fn invalid_fault_settings_are_refused_with_a_reason() {
    let server = start().await;
    let resp = reqwest::Client::new()
        .put(format!("{}/sim/faults", server.url()))
        .json(&json!({"fail_status": 200}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("400-599"));
    let resp = reqwest::Client::new()
        .put(format!("{}/sim/faults", server.url()))
        .json(&json!({"explode": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}
