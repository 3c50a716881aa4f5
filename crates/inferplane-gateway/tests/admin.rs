//! The admin API: register, list, drain and remove instances at run time; JSON metrics.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn instances_can_be_registered_drained_and_removed_at_run_time() {
    let a = sim("a", MODEL).await;
    let b = sim("b", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let admin = format!("{}/admin/instances", gw.url());

    // Register b with a layout and a price.
    let resp = http
        .post(&admin)
        .json(&json!({"id": "b", "model": MODEL, "url": b.url(), "max_inflight": 2, "layout": {"tp": 2}, "price": {"per_gpu_hour": 3.6}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["id"].as_str(), v["max_inflight"].as_u64()),
        (Some("b"), Some(2))
    );
    wait_ready(&gw, 2).await;

    // Invalid registrations name the field.
    let resp = http
        .post(&admin)
        .json(&json!({"model": MODEL, "url": "ftp://x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["param"], "url");
    let resp = http
        .post(&admin)
        .json(&json!({"id": "b", "model": MODEL, "url": b.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);

    // Drain a while a long request runs there: it finishes, nothing new goes to a.
    let long = {
        let (http, url) = (http.clone(), gw.url());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .json(&chat(MODEL, 150, false))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()["x-inferplane-instance"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            )
        })
    };
    wait_instance(&gw, "a", |v| v.inflight == 1).await;
    let resp = http.post(format!("{admin}/a/drain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["draining"], true);
    for _ in 0..4 {
        let (status, inst, _) = post_chat(&http, &gw, &chat(MODEL, 1, false)).await;
        assert_eq!((status, inst.as_deref()), (200, Some("b")));
    }
    assert_eq!(
        long.await.unwrap(),
        (200, "a".to_string()),
        "in-flight work on a drained instance finishes"
    );

    // The JSON metrics name both instances; cost is estimated from b's price.
    let m: Value = http
        .get(format!("{}/admin/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["total"]["completed"], 5);
    assert_eq!(m["instances"]["b"]["completed"], 4);
    assert!(m["instances"]["b"]["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(m["total"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    // Remove a; b keeps serving; removing twice is a 404.
    assert_eq!(
        http.delete(format!("{admin}/a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.delete(format!("{admin}/a"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let v: Value = http.get(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["instances"].as_array().unwrap().len(), 1);
    assert_eq!(post_chat(&http, &gw, &chat(MODEL, 1, false)).await.0, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn requests_wait_in_the_gateway_queue_when_every_instance_is_full() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 1);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (http, url) = (http.clone(), gw.url());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .json(&chat(MODEL, 30, false))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    // While one runs, the others are queued in the gateway, not in the engine.
    let mut saw_queue = false;
    for _ in 0..200 {
        let m = gw.control_plane().metrics().await.unwrap();
        assert!(m.total.active <= 1, "max_inflight 1 is never exceeded");
        if m.total.queued > 0 {
            saw_queue = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(saw_queue);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn engines_that_need_an_api_key_get_it_from_the_pool_the_instance_or_the_admin_api_and_it_is_never_shown()
 {
    let a = sim_with("a", MODEL, |c| c.api_key = Some("key-a".into())).await;
    let b = sim_with("b", MODEL, |c| c.api_key = Some("key-b".into())).await;
    let c = sim_with("c", MODEL, |c| c.api_key = Some("key-c".into())).await;
    let mut f = fast_config();
    f.pools.push(
        toml::from_str(&format!(
            "model = \"{MODEL}\"\nmax_inflight = 4\napi_key = \"key-a\"\n\
             [[instances]]\nid = \"a\"\nurl = \"{}\"\n\
             [[instances]]\nid = \"b\"\nurl = \"{}\"\napi_key = \"key-b\"\n",
            a.url(),
            b.url()
        ))
        .unwrap(),
    );
    let gw = gateway(f, 2).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/admin/instances", gw.url()))
        .json(&json!({"id": "c", "model": MODEL, "url": c.url(), "api_key": "key-c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    wait_ready(&gw, 3).await;
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 1, false)).await;
        assert_eq!(status, 200, "{body}");
        served.insert(inst.unwrap());
    }
    assert_eq!(served.len(), 3, "every engine accepted its key: {served:?}");
    let listing = http
        .get(format!("{}/admin/instances", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !listing.contains("key-"),
        "keys never appear in the admin API: {listing}"
    );
    assert!(
        !format!("{:?}", gw.control_plane().config()).contains("key-"),
        "nor in Debug output"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_web_page_cannot_drive_the_admin_api_and_urls_with_credentials_are_refused() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let drain = format!("{}/admin/instances/a/drain", gw.url());
    // a cross-origin "simple" request (no preflight): refused, nothing drained
    let resp = http
        .post(&drain)
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another origin")
    );
    // the same origin, but not JSON
    let host = gw.url();
    let resp = http
        .put(format!("{}/admin/policy", gw.url()))
        .header("origin", host.as_str())
        .header("content-type", "text/plain")
        .body(r#"{"policy":{"kind":"fifo"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let views = gw.control_plane().instances().await.unwrap();
    assert!(views.iter().all(|v| !v.draining), "nothing was drained");
    // the dashboard's own origin with JSON works
    let resp = http
        .put(format!("{}/admin/policy", gw.url()))
        .header("origin", host.as_str())
        .json(&json!({"policy": {"kind": "fifo"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // credentials in an engine URL are refused without being echoed
    let resp = http
        .post(format!("{}/admin/instances", gw.url()))
        .json(&json!({"id": "c", "model": MODEL, "url": "http://user:s3cret@127.0.0.1:9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("credentials") && !body.contains("s3cret"),
        "{body}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn re_registering_an_instance_under_streams_never_mixes_old_attempts_into_the_new_one() {
    // slowed down so the streams are still running when the instance is replaced
    let a = sim_with("a", MODEL, |c| c.faults.slowdown = 60.0).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 16);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let streams: Vec<_> = (0..8)
        .map(|_| {
            let (http, url) = (http.clone(), gw.url());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&chat(MODEL, 20, true))
                    .send()
                    .await
                    .unwrap();
                r.text().await.unwrap()
            })
        })
        .collect();
    wait_instance(&gw, "a", |v| v.inflight == 8).await;
    let admin = format!("{}/admin/instances", gw.url());
    let resp = http.delete(format!("{admin}/a")).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = http
        .post(&admin)
        .json(&json!({"id": "a", "model": MODEL, "url": a.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    for s in streams {
        s.await.unwrap();
    }
    // the old streams ended on the old registration: the new one has nothing in flight,
    // no failure or success of theirs, and its gauge is not negative
    let views = gw.control_plane().instances().await.unwrap();
    let v = views.iter().find(|v| v.spec.id.as_str() == "a").unwrap();
    assert_eq!(v.inflight, 0);
    assert_eq!(v.circuit, "closed");
    let text = metrics_text(&gw).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("inferplane_instance_inflight{") && l.contains("instance=\"a\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with(" 0"), "{line}");
    assert!(
        !text.contains("inferplane_instance_requests_total{model=\"sim-model\",instance=\"a\",outcome=\"failure\"} 1")
    );
    gw.shutdown().await;
}
