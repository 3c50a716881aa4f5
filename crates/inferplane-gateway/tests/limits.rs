//! Tenants' limits end to end over real HTTP, on one gateway: requests per minute,
//! concurrent requests, tokens per minute (a request larger than the window refused for
//! good) and a spend budget, refused with OpenAI's 429 and `Retry-After`, OpenAI's
//! `x-ratelimit-*` headers on every response; keys made, listed without secrets and
//! revoked through the admin API. The same limits across replicas: `limits_fleet.rs`.
//!
//! Windows are anchored minutes: each test first waits (at most its margin) until the
//! current minute has enough left for all it does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::limits::*;
use common::*;
use inferplane_gateway::tenants::KeyDigest;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn requests_per_minute_refuse_with_openais_429_and_headers_on_every_response() {
    fresh_window(15).await;
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 8);
    f.tenants = vec![
        tenant(
            "rpm",
            "key-of-rpm-tenant-000001",
            "requests_per_minute = 3\ntokens_per_minute = 100000",
        ),
        tenant(
            "small",
            "key-of-small-tenant-00001",
            "tokens_per_minute = 40",
        ),
        tenant("open", "key-of-open-tenant-000001", ""),
    ];
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    for left in ["2", "1", "0"] {
        let r = post(
            &http,
            &gw,
            "key-of-rpm-tenant-000001",
            &chat(MODEL, 4, false),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), Some(left));
        assert_eq!(header(&r, "x-ratelimit-limit-tokens"), Some("100000"));
        assert!(
            header(&r, "x-ratelimit-reset-requests")
                .unwrap()
                .ends_with('s')
        );
        assert!(header(&r, "x-ratelimit-remaining-tokens").is_some());
    }
    let r = post(
        &http,
        &gw,
        "key-of-rpm-tenant-000001",
        &chat(MODEL, 4, true),
    )
    .await;
    assert_eq!(r.status(), 429);
    let after: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), Some("0"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "requests");
    assert!(v["error"]["message"].as_str().unwrap().contains("Limit 3"));

    // a prompt larger than the whole token window is refused, and waiting would not help
    let long = "word ".repeat(400);
    let body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": long}], "max_tokens": 4});
    let r = post(&http, &gw, "key-of-small-tenant-00001", &body).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "tokens");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large")
    );

    // a tenant without limits gets no rate-limit headers
    let r = post(
        &http,
        &gw,
        "key-of-open-tenant-000001",
        &chat(MODEL, 4, false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "x-ratelimit-limit-requests").is_none());

    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            "inferplane_tenant_rejections_total{tenant=\"rpm\",reason=\"requests_per_minute\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "inferplane_tenant_rejections_total{tenant=\"small\",reason=\"tokens_per_minute\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "inferplane_tenant_requests_total{tenant=\"rpm\",status=\"rejected\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn concurrent_requests_and_spend_budgets_are_limits_too() {
    fresh_window(15).await;
    let a = sim_with("a", MODEL, |c| {
        // a real step time: a long stream stays in flight while the test looks
        c.profile = inferplane_sim::EngineProfile::preset("llama-3.1-8b-h100").unwrap();
    })
    .await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 8);
    f.pools[0].instances[0].price =
        Some(toml::from_str("per_million_tokens = { input = 1000.0, output = 1000.0 }").unwrap());
    f.tenants = vec![
        tenant("conc", "key-of-conc-tenant-000001", "concurrent = 2"),
        tenant("budget", "key-of-budget-tenant-0001", "budget_usd = 0.001"),
    ];
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let key = "key-of-conc-tenant-000001";
    // two long streams in flight (their headers arrived: admitted and running)
    let s1 = post(&http, &gw, key, &chat(MODEL, 400, true)).await;
    let s2 = post(&http, &gw, key, &chat(MODEL, 400, true)).await;
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    let r = post(&http, &gw, key, &chat(MODEL, 4, false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), Some("1"));
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent")
    );
    // one ends: room again
    assert!(s1.text().await.unwrap().contains("[DONE]"));
    let mut ok = false;
    for _ in 0..200 {
        if post(&http, &gw, key, &chat(MODEL, 4, false)).await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "a finished stream frees its place");
    // a client that leaves mid-stream frees its place too (what streamed is settled)
    drop(s2);
    let usage = format!("{}/admin/tenants/conc/usage", gw.url());
    eventually("the left stream is settled", || async {
        let v: Value = get_json(&http, &usage).await;
        // without `[shared]` there are no fleet totals to show
        v["window"]["in_flight"] == 0
            && v["window"]["scope"] == "local"
            && v.get("fleet_totals").is_none()
    })
    .await;

    // the first request spends more than the budget; from then on: insufficient_quota
    let key = "key-of-budget-tenant-0001";
    let r = post(&http, &gw, key, &chat(MODEL, 8, false)).await;
    assert_eq!(r.status(), 200);
    let mut refused = None;
    for _ in 0..200 {
        let r = post(&http, &gw, key, &chat(MODEL, 8, false)).await;
        if r.status() == 429 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let v = refused.expect("the spent budget refuses");
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert_eq!(v["error"]["type"], "insufficient_quota");
}

#[tokio::test]
async fn keys_are_made_listed_without_secrets_and_revoked_through_the_admin_api() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 8);
    f.tenants = vec![tenant(
        "team",
        "key-of-team-tenant-000001",
        "requests_per_minute = 1000",
    )];
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}/admin{path}", gw.url());
    let r = http
        .post(admin("/tenants/team/keys"))
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let secret = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["tenant"], "team");
    let r = post(&http, &gw, &secret, &chat(MODEL, 4, false)).await;
    assert_eq!(r.status(), 200);

    let listed = http
        .get(admin("/tenants"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains(&id) && listed.contains("\"ci\""),
        "{listed}"
    );
    let v: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v["tenants"][0]["id"], "team");
    assert!(
        v["tenants"][0]["totals"]["requests"].is_u64(),
        "the dashboard ranks by these: {v}"
    );
    let digest = KeyDigest::of(&secret).hex();
    let config_digest = KeyDigest::of("key-of-team-tenant-000001").hex();
    let metrics = metrics_text(&gw).await;
    for text in [&listed, &metrics] {
        assert!(
            !text.contains(&secret) && !text.contains(&digest) && !text.contains(&config_digest)
        );
        assert!(!text.contains("key-of-team-tenant-000001"));
    }
    let keys: Value = get_json(&http, admin("/tenants/team/keys")).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2, "{keys}");

    // counted when the dispatcher hears of the end, just after the answer
    eventually("the answer is counted", || async {
        let v: Value = get_json(&http, admin("/tenants/team/usage")).await;
        v["totals"]["succeeded"] == 1
    })
    .await;
    let usage: Value = get_json(&http, admin("/tenants/team/usage")).await;
    assert_eq!(usage["tenant"], "team");
    assert_eq!(usage["limits"]["requests_per_minute"], 1000);
    assert_eq!(usage["totals"]["succeeded"], 1, "{usage}");
    assert!(usage["totals"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(usage["window"]["requests"].as_u64().unwrap() >= 1);

    // malformed bodies name the field; unknown tenants and keys are 404s
    for (body, param) in [
        (json!({"name": 7}), "name"),
        (json!({"label": "x"}), "label"),
    ] {
        let r = http
            .post(admin("/tenants/team/keys"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param);
    }
    let r = http
        .post(admin("/tenants/nobody/keys"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(admin("/tenants/nobody/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = http
        .delete(admin(&format!("/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains(&secret));
    let r = post(&http, &gw, &secret, &chat(MODEL, 4, false)).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let r = http
        .delete(admin(&format!("/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
