//! Fault tests with the simulator's scripted faults: ejection and recovery, retries that
//! the client never sees, a stream broken midway, and the circuit breaker.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use inferplane_gateway::Gateway;
use inferplane_sim::FaultConfig;
use std::time::Duration;

#[tokio::test]
async fn a_retried_request_succeeds_elsewhere_and_the_client_sees_one_clean_response() {
    // `a` is first in the table, so it gets the first placement; it answers 503.
    let a = sim_with("a", MODEL, |c| {
        c.faults.fail_all = true;
        c.faults.fail_status = 503;
    })
    .await;
    let b = sim("b", MODEL).await;
    let mut f = fast_config();
    f.circuit.failures_to_open = 100; // keep `a` in rotation: every request meets it first
    add_pool(&mut f, MODEL, &[("a", &a), ("b", &b)], 4);
    let gw = gateway(f, 2).await;
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 3, false)).await;
        assert_eq!((status, inst.as_deref()), (200, Some("b")), "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 3);
    }
    let text = metrics_text(&gw).await;
    assert!(
        text.contains("inferplane_retries_total{model=\"sim-model\"} 5"),
        "{text}"
    );
    assert!(text.contains("status=\"success\"} 5"), "{text}");
    // Streams are retried the same way before their first byte.
    let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 3, true)).await;
    assert_eq!((status, inst.as_deref()), (200, Some("b")));
    assert!(body.ends_with("data: [DONE]\n\n"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_retry_avoids_every_instance_that_failed_the_request_before() {
    // two engines answer 503 and stay in rotation; with three attempts every request
    // must reach the good one, whatever order the strategy tries them in
    let bad = |id: &'static str| {
        sim_with(id, MODEL, |c| {
            c.faults.fail_all = true;
            c.faults.fail_status = 503;
        })
    };
    let (a, b) = (bad("a").await, bad("b").await);
    let good = sim("good", MODEL).await;
    let mut f = fast_config();
    f.circuit.failures_to_open = 1000;
    f.retry.max_attempts = 3;
    f.scheduler.routing = toml::from_str(r#"kind = "round_robin""#).unwrap();
    add_pool(&mut f, MODEL, &[("a", &a), ("b", &b), ("good", &good)], 4);
    let gw = gateway(f, 3).await;
    let http = reqwest::Client::new();
    for i in 0..12 {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 2, i % 2 == 0)).await;
        assert_eq!(
            (status, inst.as_deref()),
            (200, Some("good")),
            "request {i}: {body}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failing_instance_is_ejected_by_its_circuit_and_traffic_moves() {
    let a = sim_with("a", MODEL, |c| c.faults.fail_all = true).await; // 500: not retried
    let b = sim("b", MODEL).await;
    let mut f = fast_config();
    f.circuit.open_for = Duration::from_secs(60);
    add_pool(&mut f, MODEL, &[("a", &a), ("b", &b)], 4);
    let gw = gateway(f, 2).await;
    let http = reqwest::Client::new();
    let mut failures = 0;
    for _ in 0..10 {
        let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
        if status == 500 {
            failures += 1;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                v["error"]["code"], "injected_fault",
                "the engine's error is passed through"
            );
        }
    }
    assert_eq!(failures, 3, "the breaker opens after 3 consecutive 5xx");
    wait_instance(&gw, "a", |v| v.circuit == "open" && !v.ready).await;
    for _ in 0..5 {
        let (status, inst, _) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
        assert_eq!((status, inst.as_deref()), (200, Some("b")));
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_open_circuit_half_opens_and_closes_when_the_instance_recovers() {
    let a = sim_with("a", MODEL, |c| c.faults.fail_all = true).await;
    let mut f = fast_config();
    f.retry.max_attempts = 1;
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(post_chat(&http, &gw, &chat(MODEL, 1, false)).await.0, 500);
    }
    wait_instance(&gw, "a", |v| v.circuit == "open").await;
    a.faults().set(FaultConfig::default());
    // While open nothing can serve: an immediate 503 that says why, not a queue timeout.
    let resp = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat(MODEL, 1, false))
        .send()
        .await
        .unwrap();
    if resp.status() == 503 {
        assert!(resp.headers().contains_key("retry-after"));
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "no_ready_instance", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("a: circuit open"), "{msg}");
    } else {
        // the breaker half-opened in between (its open period is short here)
        assert_eq!(resp.status(), 200);
    }
    // Placed once the breaker half-opens; a success closes it.
    wait_instance(&gw, "a", |v| v.ready).await;
    let (status, inst, _) = post_chat(&http, &gw, &chat(MODEL, 1, false)).await;
    assert_eq!((status, inst.as_deref()), (200, Some("a")));
    wait_instance(&gw, "a", |v| v.circuit == "closed" && v.ready).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unhealthy_instance_is_ejected_and_brought_back_on_recovery() {
    let a = sim("a", MODEL).await;
    let b = sim("b", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a), ("b", &b)], 4);
    let gw = gateway(f, 2).await;
    a.faults().set(FaultConfig {
        unhealthy: true,
        ..FaultConfig::default()
    });
    wait_instance(&gw, "a", |v| v.health == "unhealthy" && !v.ready).await;
    let http = reqwest::Client::new();
    for _ in 0..6 {
        let (status, inst, _) = post_chat(&http, &gw, &chat(MODEL, 1, false)).await;
        assert_eq!((status, inst.as_deref()), (200, Some("b")));
    }
    a.faults().set(FaultConfig::default());
    wait_instance(&gw, "a", |v| v.health == "healthy" && v.ready).await;
    // Back in rotation: with `b` busy, `a` takes work again.
    let slow = {
        let http = http.clone();
        let url = gw.url();
        tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .json(&chat(MODEL, 200, false))
                .send()
                .await
                .unwrap()
                .headers()["x-inferplane-instance"]
                .to_str()
                .unwrap()
                .to_string()
        })
    };
    let mut seen_a = false;
    for _ in 0..20 {
        let (_, inst, _) = post_chat(&http, &gw, &chat(MODEL, 50, false)).await;
        seen_a |= inst.as_deref() == Some("a");
    }
    let _ = slow.await;
    assert!(seen_a, "a recovered instance receives traffic again");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_broken_midway_ends_with_an_error_event_and_is_counted() {
    let a = sim_with("a", MODEL, |c| c.faults.hang_after_tokens = Some(3)).await;
    let mut f = fast_config();
    f.timeouts.first_byte = Duration::from_millis(400); // also the stream's idle timeout
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 20, true)).await;
    assert_eq!(status, 200, "the stream had started");
    assert_eq!(body.matches("\"content\"").count(), 3, "{body}");
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("data: {\"error\""), "{body}");
    assert!(last.contains("stalled"), "{last}");
    assert!(!body.contains("[DONE]"));
    let text = metrics_text(&gw).await;
    assert!(text.contains("status=\"stream_broken\"} 1"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_hang_before_the_first_byte_times_out_and_is_retried_elsewhere() {
    let a = sim_with("a", MODEL, |c| c.faults.hang_before_first_token = true).await;
    let b = sim("b", MODEL).await;
    let mut f = fast_config();
    f.timeouts.first_byte = Duration::from_millis(300);
    add_pool(&mut f, MODEL, &[("a", &a), ("b", &b)], 4);
    let gw = gateway(f, 2).await;
    let http = reqwest::Client::new();
    let (status, inst, _) = post_chat(&http, &gw, &chat(MODEL, 2, true)).await;
    assert_eq!((status, inst.as_deref()), (200, Some("b")));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pools_own_first_byte_timeout_wins_over_the_global_one() {
    let a = sim_with("a", MODEL, |c| c.faults.hang_before_first_token = true).await;
    let mut f = fast_config();
    f.timeouts.first_byte = Duration::from_secs(20);
    f.retry.max_attempts = 1;
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    f.pools[0].timeouts.first_byte = Some(Duration::from_millis(300));
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("within 300ms"), "the pool's timeout: {body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn requests_for_an_instance_that_never_comes_up_fail_at_once_saying_why() {
    let a = sim_with("a", MODEL, |c| c.faults.refuse_connections = true).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    f.retry.max_attempts = 2;
    let gw = Gateway::start(f.validate().unwrap()).await.unwrap();
    // It never passes a health check: nothing can serve, so the answer comes at once
    // (503 with Retry-After and the instance's state), not after the queue timeout.
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let resp = http
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&chat(MODEL, 2, false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "no_ready_instance", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("none of its 1 instances is ready") && msg.contains("a: "),
            "{msg}"
        );
    }
    let m = gw.control_plane().metrics().await.unwrap();
    assert_eq!(m.total.rejected, 3, "every one accounted for");
    gw.shutdown().await;
}

#[tokio::test]
async fn scraped_engine_load_is_shown_and_becomes_unknown_when_stale() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    wait_instance(&gw, "a", |v| {
        v.engine_running == Some(0.0) && v.engine_kv_usage == Some(0.0)
    })
    .await;
    // The engine stops answering: after `stale_after` its load is unknown, not zero.
    a.faults().set(FaultConfig {
        refuse_connections: true,
        ..FaultConfig::default()
    });
    wait_instance(&gw, "a", |v| {
        v.engine_running.is_none() && v.engine_kv_usage.is_none()
    })
    .await;
    // unknown is an absent series, never a NaN sample
    let text = metrics_text(&gw).await;
    assert!(
        !text.contains("inferplane_instance_engine_running{model=\"sim-model\",instance=\"a\"}"),
        "{text}"
    );
    assert!(!text.contains("NaN"), "{text}");
    gw.shutdown().await;
}
