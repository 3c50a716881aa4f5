//! Bad input gets a clear 4xx in the OpenAI error shape; the admin API refuses without
//! its token.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use serde_json::{Value, json};

/// (headers, body, expected status, message fragment, blamed param)
type Case<'a> = (
    &'a [(&'a str, &'a str)],
    String,
    u16,
    &'a str,
    Option<&'a str>,
);

async fn post_raw(url: &str, headers: &[(&str, &str)], body: String) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn malformed_oversized_badly_headed_and_unknown_model_requests_are_clear_4xx() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    f.server.max_body_bytes = 2048;
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let ok = chat(MODEL, 1, false).to_string();
    let cases: Vec<Case> = vec![
        (&[], "{oops".into(), 400, "invalid request body", None),
        (
            &[],
            json!({"messages": []}).to_string(),
            400,
            "missing field `model`",
            Some("model"),
        ),
        (
            &[],
            json!({"model": MODEL, "max_tokens": "many"}).to_string(),
            400,
            "invalid type",
            None,
        ),
        (
            &[],
            json!({"model": "nope", "messages": []}).to_string(),
            404,
            "`nope` does not exist",
            Some("model"),
        ),
        (
            &[],
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x".repeat(4000)}]})
                .to_string(),
            413,
            "",
            None,
        ),
        (
            &[("x-priority", "urgent")],
            ok.clone(),
            400,
            "x-priority",
            Some("x-priority"),
        ),
        (
            &[("x-slo-ms", "fast")],
            ok.clone(),
            400,
            "x-slo-ms",
            Some("x-slo-ms"),
        ),
        (
            &[("x-cost-budget", "-2")],
            ok.clone(),
            400,
            "x-cost-budget",
            Some("x-cost-budget"),
        ),
        (
            &[("x-parallelism-hint", "wide")],
            ok.clone(),
            400,
            "x-parallelism-hint",
            Some("x-parallelism-hint"),
        ),
    ];
    for (headers, body, status, needle, param) in cases {
        let (got, v) = post_raw(&url, headers, body.clone()).await;
        assert_eq!(got, status, "{headers:?} {body:.80} -> {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert!(v["error"]["type"].is_string());
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{v}");
        }
    }
    let http = reqwest::Client::new();
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
    let resp = http
        .get(format!("{}/v1/nothing", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // None of it reached an instance, and the gateway still serves.
    let text = metrics_text(&gw).await;
    assert!(
        text.contains("inferplane_invalid_requests_total 9"),
        "{text}"
    );
    // and every refusal is in the request count by status, under no client-chosen model
    let invalid: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("inferplane_requests_total{model=\"\"")
                && l.contains("status=\"invalid\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(invalid, 9, "{text}");
    assert_eq!(post_chat(&http, &gw, &chat(MODEL, 1, false)).await.0, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_api_requires_the_configured_token() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    f.admin.token = Some("s3cret".into());
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let url = format!("{}/admin/instances", gw.url());
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("Bearer"));
    let resp = http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["instances"][0]["id"], "a");
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_api_without_a_token_is_off_on_a_non_loopback_listener_and_says_why() {
    let mut f = fast_config();
    f.server.listen = "0.0.0.0:0".into();
    let gw = gateway(f, 0).await;
    let port = gw.addr().port();
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/admin/instances"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("not a loopback address") && msg.contains("INFERPLANE_ADMIN_TOKEN"),
        "{msg}"
    );
    gw.shutdown().await;
}
