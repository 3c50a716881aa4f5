//! Pod-selector mode: annotations (limits, an API key from a Secret), pods terminating,
//! not ready and ready again, and the time from a ready event to a routable instance.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::kube_api::secret;
use std::time::Instant;

#[tokio::test]
async fn pod_annotations_set_limits_and_an_api_key_from_a_secret_and_terminating_pods_drain() {
    let a = sim_with("a", MODEL, |c| c.api_key = Some("s3cret".into())).await;
    let b = sim("b", MODEL).await;
    let api = KubeApi::start().await;
    api.put(
        Kind::Secret,
        NS,
        secret("engine-key", &[("api-key", "s3cret")]),
    );
    // no model label: the engines' /v1/models say; engine-a needs its key to answer it
    api.put(
        Kind::Pod,
        NS,
        pod(
            "engine-a",
            &[("app", "vllm")],
            &[
                ("inferplane.io/api-key-secret", "engine-key"),
                ("inferplane.io/max-inflight", "2"),
                ("inferplane.io/gpu", "a100-80g"),
            ],
            "127.0.0.1",
            ("http", port_of(&a)),
            true,
        ),
    );
    api.put(
        Kind::Pod,
        NS,
        pod(
            "engine-b",
            &[("app", "vllm")],
            &[
                ("inferplane.io/max-inflight", "lots"),
                ("inferplane.io/layout", "{ tp = 2 }"),
            ],
            "127.0.0.1",
            ("http", port_of(&b)),
            true,
        ),
    );
    let gw = discovering(&api, |k| {
        k.selector = Some("app=vllm".into());
        k.port = Some(inferplane_gateway::config::PortRef::Name("http".into()));
    })
    .await;
    let http = reqwest::Client::new();
    until(&http, &gw, "both routable", |m| {
        ready(m, "engine-a") && ready(m, "engine-b")
    })
    .await;
    let m = instances(&http, &gw).await;
    assert_eq!(
        m["engine-a"]["model"], MODEL,
        "the model from /v1/models, asked with the key"
    );
    assert_eq!(m["engine-a"]["max_inflight"], 2);
    assert_eq!(m["engine-a"]["gpu"], "a100-80g");
    assert_eq!(
        m["engine-b"]["max_inflight"],
        Value::Null,
        "a bad annotation is left out"
    );
    assert_eq!(
        m["engine-b"]["layout"]["tp"], 2,
        "the other annotations still apply"
    );
    let mut served_by_a = false;
    for _ in 0..20 {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
        assert_eq!(status, 200, "{body}");
        served_by_a |= inst.as_deref() == Some("engine-a");
    }
    assert!(
        served_by_a,
        "engine-a answered: the key from the Secret reached it"
    );
    assert!(
        !format!("{m:?}").contains("s3cret"),
        "the key is never shown"
    );

    // a pod being deleted (deletionTimestamp) drains, then goes
    let mut terminating = pod(
        "engine-a",
        &[("app", "vllm")],
        &[
            ("inferplane.io/api-key-secret", "engine-key"),
            ("inferplane.io/max-inflight", "2"),
            ("inferplane.io/gpu", "a100-80g"),
        ],
        "127.0.0.1",
        ("http", port_of(&a)),
        true,
    );
    terminating["metadata"]["deletionTimestamp"] = serde_json::json!("2026-01-01T00:01:00Z");
    api.put(Kind::Pod, NS, terminating);
    until(&http, &gw, "engine-a draining", |m| {
        m.get("engine-a").is_some_and(|i| i["draining"] == true)
    })
    .await;
    api.delete(Kind::Pod, NS, "engine-a");
    until(&http, &gw, "engine-a removed", |m| {
        !m.contains_key("engine-a")
    })
    .await;
    drop(b);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pod_ready_again_after_a_drain_takes_work_again() {
    let a = sim("a", MODEL).await;
    let api = KubeApi::start().await;
    let p = |ready| {
        pod(
            "engine-a",
            &[("app", "vllm"), LABEL],
            &[],
            "127.0.0.1",
            ("http", port_of(&a)),
            ready,
        )
    };
    api.put(Kind::Pod, NS, p(true));
    let gw = discovering(&api, |k| k.selector = Some("app=vllm".into())).await;
    let http = reqwest::Client::new();
    // port: the default (8000) is not the simulator's; with the number set, it is
    let m = {
        until(&http, &gw, "registered", |m| m.contains_key("engine-a")).await;
        instances(&http, &gw).await
    };
    assert!(
        m["engine-a"]["url"].as_str().unwrap().ends_with(":8000"),
        "the default port"
    );
    gw.shutdown().await;
    let gw = discovering(&api, |k| {
        k.selector = Some("app=vllm".into());
        k.port = Some(inferplane_gateway::config::PortRef::Number(port_of(&a)));
    })
    .await;
    until(&http, &gw, "routable", |m| ready(m, "engine-a")).await;
    api.put(Kind::Pod, NS, p(false));
    until(&http, &gw, "drained when not ready", |m| {
        m.get("engine-a").is_some_and(|i| i["draining"] == true)
    })
    .await;
    let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 1, false)).await;
    assert_eq!(status, 503, "a drained instance takes no work: {body}");
    api.put(Kind::Pod, NS, p(true));
    until(&http, &gw, "routable again", |m| ready(m, "engine-a")).await;
    let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 1, false)).await;
    assert_eq!(
        (status, inst.as_deref()),
        (200, Some("engine-a")),
        "taken back, it serves: {body}"
    );
    gw.shutdown().await;
}

/// Not asserted: the time from the stand-in's watch event to `/admin/instances` listing
/// the instance ready, printed for the record (`--nocapture`).
#[tokio::test]
async fn time_from_a_ready_event_to_a_routable_instance_is_printed() {
    let a = sim("a", MODEL).await;
    let api = KubeApi::start().await;
    let gw = discovering(&api, |k| {
        k.selector = Some("app=vllm".into());
        k.port = Some(inferplane_gateway::config::PortRef::Number(port_of(&a)));
    })
    .await;
    let http = reqwest::Client::new();
    eventually("the watch is open", || async { api.watchers() > 0 }).await;
    let mut samples = Vec::new();
    for i in 0..5 {
        let name = format!("engine-{i}");
        let t0 = Instant::now();
        api.put(
            Kind::Pod,
            NS,
            pod(
                &name,
                &[("app", "vllm"), LABEL],
                &[],
                "127.0.0.1",
                ("http", 1),
                true,
            ),
        );
        // polled back to back (one admin call takes well under a millisecond here), so
        // the figure is not the polling interval's
        let mut listed = false;
        for _ in 0..20_000 {
            if ready(&instances(&http, &gw).await, &name) {
                listed = true;
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        assert!(listed, "{name} never became routable");
        samples.push(t0.elapsed());
        api.delete(Kind::Pod, NS, &name);
        until(&http, &gw, "removed", |m| !m.contains_key(&name)).await;
    }
    eprintln!("watch event -> listed ready by /admin/instances: {samples:?}");
    assert_eq!(samples.len(), 5);
    gw.shutdown().await;
}
