//! Tenants end to end over real HTTP: API keys from `[[tenants]]` (as SHA-256 digests),
//! OpenAI's 401 for a missing or unknown key (the key never echoed), a tenant's allowed
//! models, per-tenant usage in the metrics, and the fair share between tenants inside a class, live: a tenant that floods
//! the queue does not keep another tenant's request waiting behind all of its own, and
//! leaves a slot free for a tenant active a moment ago.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use inferplane_gateway::FileConfig;
use inferplane_gateway::config::TenantSection;
use inferplane_gateway::tenants::KeyDigest;
use serde_json::Value;

const HEAVY_KEY: &str = "heavy-tenant-key-0123456789";
const LIGHT_KEY: &str = "light-tenant-key-0123456789";

fn tenant(id: &str, key: &str, models: &[&str]) -> TenantSection {
    toml::from_str(&format!(
        "id = \"{id}\"\nkeys = [\"sha256:{}\"]\nmodels = {:?}",
        KeyDigest::of(key).hex(),
        models
    ))
    .unwrap()
}

fn config(sim: &inferplane_sim::SimServer, max_inflight: u32) -> FileConfig {
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", sim)], max_inflight);
    f.tenants = vec![
        tenant("heavy", HEAVY_KEY, &[MODEL]),
        tenant("light", LIGHT_KEY, &[]),
    ];
    f
}

async fn post(
    http: &reqwest::Client,
    gw: &inferplane_gateway::Gateway,
    key: Option<&str>,
    body: &Value,
) -> (u16, String) {
    let mut req = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn keys_decide_who_may_call_and_wrong_ones_get_openais_401() {
    let a = sim("a", MODEL).await;
    let gw = gateway(config(&a, 4), 1).await;
    let http = reqwest::Client::new();
    let body = chat(MODEL, 4, false);
    let (status, text) = post(&http, &gw, None, &body).await;
    assert_eq!(status, 401, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let wrong = "not-a-key-of-anyone-0123456789";
    let (status, text) = post(&http, &gw, Some(wrong), &body).await;
    assert_eq!(status, 401, "{text}");
    assert!(!text.contains(wrong), "the key is never echoed: {text}");
    let (status, text) = post(&http, &gw, Some(HEAVY_KEY), &body).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = post(&http, &gw, Some(LIGHT_KEY), &body).await;
    assert_eq!(status, 200, "{text}");
    // heavy may use only MODEL: another model is one that does not exist for it
    let (status, text) = post(&http, &gw, Some(HEAVY_KEY), &chat("other-model", 4, false)).await;
    assert_eq!(status, 404, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    let metrics = metrics_text(&gw).await;
    for line in [
        "inferplane_auth_failures_total{reason=\"missing\"} 1",
        "inferplane_auth_failures_total{reason=\"unknown\"} 1",
        "inferplane_tenant_requests_total{tenant=\"heavy\",status=\"success\"} 1",
        "inferplane_tenant_requests_total{tenant=\"light\",status=\"success\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(metrics.contains("inferplane_tenant_completion_tokens_total{tenant=\"light\"}"));
    for k in [HEAVY_KEY, LIGHT_KEY, wrong] {
        assert!(!metrics.contains(k), "no key in the metrics");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_flooding_tenant_does_not_keep_another_waiting_behind_all_its_requests() {
    // one request at a time: the heavy tenant queues 8, then the light tenant sends one
    let a = sim("a", MODEL).await;
    let gw = gateway(config(&a, 1), 1).await;
    let http = reqwest::Client::new();
    let body = chat(MODEL, 40, false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    // sends one request as `who`, reporting its end on the channel
    let fire = |key: &'static str, who: &'static str| {
        let (http, url, body, tx) = (http.clone(), gw.url(), body.clone(), done_tx.clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = tx.send(who);
        });
    };
    for _ in 0..8 {
        fire(HEAVY_KEY, "heavy");
    }
    eventually("the heavy tenant's requests queue", || async {
        gw.control_plane().policies().await.unwrap()[0].queued_by_priority
            [inferplane_core::Priority::Normal.index()]
            >= 6
    })
    .await;
    fire(LIGHT_KEY, "light");
    drop(done_tx);
    let mut order = Vec::new();
    while let Some(who) = tokio::time::timeout(std::time::Duration::from_secs(60), done_rx.recv())
        .await
        .unwrap()
    {
        order.push(who);
    }
    assert_eq!(order.len(), 9, "{order:?}");
    let light_at = order.iter().position(|w| *w == "light").unwrap();
    // first come, first served it would finish last; by turns it is among the first
    // (the one running, at most one more by the tie to the older request, then its turn)
    assert!(
        light_at <= 3,
        "the light tenant waited behind the flood: {order:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_flooding_tenant_leaves_a_slot_for_another_active_a_moment_ago() {
    // four slots; steps of a real engine, so the heavy tenant's long answers take a while
    let a = sim_with("a", MODEL, |c| {
        c.profile = inferplane_sim::EngineProfile::preset("llama-3.1-8b-h100").unwrap();
    })
    .await;
    let gw = gateway(config(&a, 4), 1).await;
    let http = reqwest::Client::new();
    // the light tenant was active a moment ago
    let (status, text) = post(&http, &gw, Some(LIGHT_KEY), &chat(MODEL, 4, false)).await;
    assert_eq!(status, 200, "{text}");
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let fire = |key: &'static str, who: &'static str, max_tokens: u32| {
        let (http, url, tx) = (http.clone(), gw.url(), done_tx.clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat(MODEL, max_tokens, false))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = tx.send(who);
        });
    };
    for _ in 0..6 {
        fire(HEAVY_KEY, "heavy", 300);
    }
    // the heavy tenant (share: 2 of 4) leaves the light one its peak (1) + 1 slots
    eventually("the heavy tenant's flood waits", || async {
        gw.control_plane().policies().await.unwrap()[0].queued_by_priority
            [inferplane_core::Priority::Normal.index()]
            >= 2
    })
    .await;
    fire(LIGHT_KEY, "light", 4);
    drop(done_tx);
    let mut order = Vec::new();
    while let Some(who) = tokio::time::timeout(std::time::Duration::from_secs(60), done_rx.recv())
        .await
        .unwrap()
    {
        order.push(who);
    }
    assert_eq!(order.len(), 7, "{order:?}");
    // with every slot taken it would wait for a heavy answer to end first
    assert_eq!(
        order[0], "light",
        "the light tenant found no free slot: {order:?}"
    );
    gw.shutdown().await;
}
