//! Service mode: EndpointSlices of a Service become instances; a terminating endpoint
//! drains while its stream finishes; a deleted slice's endpoints go.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::kube_api::endpoint_slice;
use futures_util::StreamExt;

#[tokio::test]
async fn service_endpoints_register_drain_while_a_stream_finishes_and_go_when_deleted() {
    let a = sim_with("a", MODEL, |c| c.time_scale = 0.1).await;
    let b = sim("b", MODEL).await;
    let api = KubeApi::start().await;
    let annotations = [("inferplane.io/max-inflight", "3")];
    api.put(
        Kind::Pod,
        NS,
        pod(
            "engine-a",
            &[LABEL],
            &annotations,
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
            &[LABEL],
            &[],
            "127.0.0.1",
            ("http", port_of(&b)),
            false,
        ),
    );
    let slice_a = |ready, terminating| {
        endpoint_slice(
            "vllm-a",
            "vllm",
            ("http", port_of(&a)),
            &[(
                Some("engine-a"),
                "127.0.0.1",
                ready,
                Some(true),
                terminating,
            )],
        )
    };
    let slice_b = |ready| {
        endpoint_slice(
            "vllm-b",
            "vllm",
            ("http", port_of(&b)),
            &[(Some("engine-b"), "127.0.0.1", ready, ready, Some(false))],
        )
    };
    api.put(Kind::EndpointSlice, NS, slice_a(None, None));
    api.put(Kind::EndpointSlice, NS, slice_b(Some(false)));
    // another Service's slice is not ours
    api.put(
        Kind::EndpointSlice,
        NS,
        endpoint_slice(
            "other",
            "other",
            ("http", 1),
            &[(None, "127.0.0.9", None, None, None)],
        ),
    );
    let gw = discovering(&api, |k| {
        k.service = Some("vllm".into());
        k.port = Some(inferplane_gateway::config::PortRef::Name("http".into()));
    })
    .await;
    let http = reqwest::Client::new();
    until(&http, &gw, "engine-a routable", |m| ready(m, "engine-a")).await;
    let m = instances(&http, &gw).await;
    assert_eq!(
        m.len(),
        1,
        "not-ready engine-b and the other Service are not instances: {m:?}"
    );
    assert_eq!(m["engine-a"]["model"], MODEL);
    assert_eq!(
        m["engine-a"]["max_inflight"], 3,
        "the pod's annotation applies"
    );
    assert_eq!(m["engine-a"]["url"], a.url());
    let list = api.requests();
    assert!(
        list.iter()
            .any(|r| r.contains("labelSelector=kubernetes.io/service-name=vllm")),
        "{list:?}"
    );
    assert!(
        list.iter().any(|r| r.ends_with("/pods/engine-a")),
        "the pod was read for its annotations"
    );

    // a slow stream in flight on engine-a
    let resp = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat(MODEL, 60, true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-inferplane-instance"], "engine-a");
    let mut body = resp.bytes_stream();
    let mut text = String::from_utf8_lossy(&body.next().await.unwrap().unwrap()).to_string();

    // engine-a terminates: drained, its stream goes on; engine-b becomes ready
    api.put(Kind::EndpointSlice, NS, slice_a(Some(false), Some(true)));
    until(&http, &gw, "engine-a draining", |m| {
        m.get("engine-a").is_some_and(|i| i["draining"] == true)
    })
    .await;
    assert_eq!(
        instances(&http, &gw).await["engine-a"]["inflight"],
        1,
        "the stream is still in flight"
    );
    api.put(Kind::EndpointSlice, NS, slice_b(Some(true)));
    until(&http, &gw, "engine-b routable", |m| ready(m, "engine-b")).await;
    for _ in 0..10 {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            inst.as_deref(),
            Some("engine-b"),
            "a terminating endpoint gets no new request"
        );
    }
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the in-flight stream finished: {text}"
    );
    assert_eq!(text.matches("\"content\"").count(), 60);

    // the slice goes: so does engine-a; engine-b stays
    api.delete(Kind::EndpointSlice, NS, "vllm-a");
    until(&http, &gw, "engine-a removed", |m| {
        !m.contains_key("engine-a") && ready(m, "engine-b")
    })
    .await;
    assert!(metric(&gw, "inferplane_discovery_instances{state=\"ready\"}").await >= 1.0);
    assert!(metric(&gw, "inferplane_discovery_events_total{kind=\"delete\"}").await >= 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_without_a_pod_is_named_by_its_address_and_its_engine_names_the_model() {
    let a = sim("a", MODEL).await;
    let api = KubeApi::start().await;
    api.put(
        Kind::EndpointSlice,
        NS,
        endpoint_slice(
            "vllm-x",
            "vllm",
            ("http", port_of(&a)),
            &[(None, "127.0.0.1", Some(true), Some(true), None)],
        ),
    );
    let gw = discovering(&api, |k| {
        k.service = Some("vllm".into());
        k.port = Some(inferplane_gateway::config::PortRef::Name("http".into()));
    })
    .await;
    let http = reqwest::Client::new();
    // no targetRef: the id is the address, the model comes from the engine's /v1/models
    until(&http, &gw, "registered by address", |m| {
        ready(m, "127.0.0.1")
    })
    .await;
    let m = instances(&http, &gw).await;
    assert_eq!(m["127.0.0.1"]["model"], MODEL);
    assert_eq!(
        m["127.0.0.1"]["url"],
        a.url(),
        "the slice's port named http"
    );
    assert!(
        !api.requests().iter().any(|r| r.contains("/pods/")),
        "no pod to read"
    );
    let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 1, false)).await;
    assert_eq!(
        (status, inst.as_deref()),
        (200, Some("127.0.0.1")),
        "{body}"
    );
    gw.shutdown().await;
}
