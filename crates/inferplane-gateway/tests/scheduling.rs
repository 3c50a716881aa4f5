//! Scheduling end to end through the gateway with simulated instances: a high-priority
//! request overtakes a queue of low-priority ones; an SLO-infeasible request is rejected
//! early with its reason; a request over its cost budget is refused; policies switch at run
//! time over the admin API, and the choices show in /metrics.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use serde_json::{Value, json};
use tokio::time::Instant;

fn pool_with(
    f: &mut inferplane_gateway::FileConfig,
    server: &inferplane_sim::SimServer,
    max_inflight: u32,
    policy: &str,
    price: Option<&str>,
) {
    let price = price.map(|p| format!("price = {p}\n")).unwrap_or_default();
    f.pools.push(
        toml::from_str(&format!(
            "model = \"{MODEL}\"\nmax_inflight = {max_inflight}\npolicy = {policy}\n\
             [[instances]]\nid = \"a\"\nurl = \"{}\"\n{price}",
            server.url()
        ))
        .unwrap(),
    );
}

async fn queued_low(gw: &inferplane_gateway::Gateway) -> usize {
    gw.control_plane().policies().await.unwrap()[0].queued_by_priority[3]
}

#[tokio::test]
async fn a_high_priority_request_overtakes_a_queue_of_low_priority_ones() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    pool_with(&mut f, &a, 1, "{ kind = \"priority\" }", None);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let send = |priority: &'static str, max_tokens: u32| {
        let (http, url) = (http.clone(), gw.url());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .header("x-priority", priority)
                .json(&chat(MODEL, max_tokens, false))
                .send()
                .await
                .unwrap();
            let st = r.status();
            let b = r.text().await.unwrap();
            assert_eq!(st, 200, "{b}");
            Instant::now()
        })
    };
    // One long request holds the only slot; five low ones queue behind it.
    let running = send("normal", 60);
    eventually("one request active", || async {
        gw.control_plane().metrics().await.unwrap().total.active == 1
    })
    .await;
    let lows: Vec<_> = (0..5).map(|_| send("low", 10)).collect();
    eventually("five low requests queued", || async {
        queued_low(&gw).await == 5
    })
    .await;
    let high = send("high", 10);
    let high_done = high.await.unwrap();
    running.await.unwrap();
    for low in lows {
        assert!(
            low.await.unwrap() > high_done,
            "every low request finished after the high one"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_slo_infeasible_request_is_rejected_early_with_its_reason() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    pool_with(&mut f, &a, 4, "{ kind = \"slo_aware\" }", None);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    // A prompt of some 6,000 tokens cannot even be prefilled in 5 ms on any instance
    // (the check uses the best case, a one-token answer: output lengths are a guess).
    let long = json!({"model": MODEL, "max_tokens": 4,
        "messages": [{"role": "user", "content": "word ".repeat(6_000)}]});
    let resp = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-slo-ms", "5")
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "slo_infeasible");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(MODEL), "{msg}");
    // A feasible one is served.
    let resp = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-slo-ms", "30000")
        .json(&chat(MODEL, 4, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = metrics_text(&gw).await;
    assert!(
        text.contains("inferplane_rejects_total{model=\"sim-model\",reason=\"slo_infeasible\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("inferplane_active_policy{model=\"sim-model\",policy=\"slo_aware\"} 1"),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_over_its_cost_budget_is_refused() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    pool_with(
        &mut f,
        &a,
        4,
        "{ kind = \"cost_optimized\" }",
        Some("{ per_million_tokens = { input = 100.0, output = 100.0 } }"),
    );
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let post = |budget: &'static str| {
        http.post(format!("{}/v1/chat/completions", gw.url()))
            .header("x-cost-budget", budget)
            .json(&chat(MODEL, 1000, false))
            .send()
    };
    // About 1,000 tokens at $100 per million is $0.10: a $0.001 budget is too small.
    let resp = post("0.001").await.unwrap();
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "over_budget");
    assert_eq!(post("5").await.unwrap().status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn policies_switch_at_run_time_over_the_admin_api() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let url = format!("{}/admin/policy", gw.url());
    let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        v["pools"][0]["policy"]["kind"], "adaptive",
        "the recommended default"
    );
    assert_eq!(v["pools"][0]["routing"]["kind"], "load_balanced");
    let resp = http
        .put(&url)
        .json(&json!({"policy": {"kind": "priority"}, "balancing": {"kind": "power_of_two"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["pools"][0]["policy"]["kind"], "priority");
    assert_eq!(v["pools"][0]["active_policy"], "priority");
    assert_eq!(v["pools"][0]["balancing"], "power_of_two");
    for (body, status) in [
        (json!({"policy": {"kind": "fastest"}}), 400),
        (json!({}), 400),
        (json!({"model": "nope", "policy": {"kind": "fifo"}}), 404),
    ] {
        let resp = http.put(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), status, "{body}");
    }
    // settings that would overflow or allocate without bound are refused, naming the
    // field, and the dispatcher keeps serving
    for (body, param) in [
        (
            json!({"routing": {"kind": "locality", "capacity": u64::MAX}}),
            "routing.capacity",
        ),
        (
            json!({"routing": {"kind": "affinity", "virtual_nodes": u32::MAX}}),
            "routing.virtual_nodes",
        ),
        (
            json!({"policy": {"kind": "cost_optimized", "tolerance": -1.0}}),
            "policy.tolerance",
        ),
    ] {
        let resp = http.put(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        v["pools"][0]["policy"]["kind"], "priority",
        "nothing changed"
    );
    assert_eq!(post_chat(&http, &gw, &chat(MODEL, 2, false)).await.0, 200);
    gw.shutdown().await;
}
