//! Kubernetes discovery (feature `kubernetes`) against a stand-in API server
//! (`common/kube_api.rs`: not Kubernetes, but its list and watch calls for EndpointSlices
//! and Pods in the API reference's shapes, with 410 Expired and bookmarks), with
//! simulators as the engines, asserting through the gateway's own HTTP.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/kube_api.rs"]
mod kube_api;

use common::*;
use futures_util::StreamExt;
use inferplane_gateway::Gateway;
use inferplane_gateway::config::KubernetesSection;
use kube_api::{Kind, KubeApi, endpoint_slice, pod, secret};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NS: &str = "llm";
const LABEL: (&str, &str) = ("inferplane.io/model", MODEL);

/// A gateway discovering from `api`: `service` or `selector` set by `f`.
async fn discovering(api: &KubeApi, f: impl FnOnce(&mut KubernetesSection)) -> Gateway {
    let mut file = fast_config();
    let mut k = KubernetesSection {
        namespace: Some(NS.into()),
        service: None,
        selector: None,
        port: None,
        scheme: "http".into(),
        model_label: "inferplane.io/model".into(),
        api_server: Some(api.url()),
    };
    f(&mut k);
    file.discovery.kubernetes = Some(k);
    Gateway::start(file.validate().unwrap()).await.unwrap()
}

/// `/admin/instances`, by id.
async fn instances(http: &reqwest::Client, gw: &Gateway) -> BTreeMap<String, Value> {
    let v: Value = http
        .get(format!("{}/admin/instances", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i.clone()))
        .collect()
}

/// Waits (bounded, 30 s: the watcher's backoff after errors is 0.8 s, 1.6 s, ...) until
/// `cond` holds on `/admin/instances`.
async fn until(
    http: &reqwest::Client,
    gw: &Gateway,
    what: &str,
    cond: impl Fn(&BTreeMap<String, Value>) -> bool,
) {
    for _ in 0..1500 {
        if cond(&instances(http, gw).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}: {:?}", instances(http, gw).await);
}

fn ready(m: &BTreeMap<String, Value>, id: &str) -> bool {
    m.get(id)
        .is_some_and(|i| i["ready"] == true && i["draining"] == false)
}

/// The port of a simulator's URL.
fn port_of(s: &inferplane_sim::SimServer) -> u16 {
    s.addr().port()
}

/// Watches `/admin/instances` every few ms until stopped; true if any of `ids` was ever
/// missing or not ready.
fn recorder(
    http: reqwest::Client,
    url: String,
    ids: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(bool, usize)> {
    tokio::spawn(async move {
        let mut flapped = false;
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            let v: Value = http
                .get(format!("{url}/admin/instances"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let list = v["instances"].as_array().unwrap();
            for id in &ids {
                let ok = list.iter().any(|i| {
                    i["id"] == id.as_str() && i["ready"] == true && i["draining"] == false
                });
                flapped |= !ok;
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (flapped, samples)
    })
}

/// Writes engine-a's pod again, unchanged (a `MODIFIED` event that changes nothing), and
/// waits until discovery saw it.
async fn touch(api: &KubeApi, gw: &Gateway, a: &inferplane_sim::SimServer) {
    let applies = metric(gw, "inferplane_discovery_events_total{kind=\"apply\"}").await;
    api.put(
        Kind::Pod,
        NS,
        pod(
            "engine-a",
            &[("app", "vllm"), LABEL],
            &[],
            "127.0.0.1",
            ("http", port_of(a)),
            true,
        ),
    );
    for _ in 0..3000 {
        if metric(gw, "inferplane_discovery_events_total{kind=\"apply\"}").await > applies {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the touch was never seen");
}

/// Waits (bounded, 30 s: the watcher backs off 0.8 s, 1.6 s, ... after errors) until
/// `cond` holds, else fails with the stand-in's requests.
async fn wait(what: &str, cond: impl Fn() -> bool, api: &KubeApi) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}; requests: {:#?}", api.requests());
}

/// The value of a metric line `name{labels} value` in the gateway's `/metrics`.
async fn metric(gw: &Gateway, line_start: &str) -> f64 {
    let text = metrics_text(gw).await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0.0)
}

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
async fn a_410_and_broken_or_failing_watches_relist_or_resume_without_an_instance_leaving() {
    let a = sim("a", MODEL).await;
    let b = sim("b", MODEL).await;
    let api = KubeApi::start().await;
    for (name, s) in [("engine-a", &a), ("engine-b", &b)] {
        api.put(
            Kind::Pod,
            NS,
            pod(
                name,
                &[("app", "vllm"), LABEL],
                &[],
                "127.0.0.1",
                ("http", port_of(s)),
                true,
            ),
        );
    }
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
    let stop = Arc::new(AtomicBool::new(false));
    let rec = recorder(
        http.clone(),
        gw.url(),
        vec!["engine-a".into(), "engine-b".into()],
        stop.clone(),
    );
    let lists = |api: &KubeApi| {
        api.requests()
            .iter()
            .filter(|r| r.contains("/pods?") && !r.contains("watch=true"))
            .count()
    };
    let watches_from = |api: &KubeApi, rv: u64| {
        api.requests()
            .iter()
            .filter(|r| r.contains("watch=true") && r.contains(&format!("resourceVersion={rv}&")))
            .count()
    };
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true"))
    );

    // 1. a bookmark carries the watch past changes it does not see: a cut connection then
    // resumes from the bookmark, with no re-list, though older history was dropped
    api.put(
        Kind::Pod,
        NS,
        pod(
            "unrelated",
            &[("app", "other")],
            &[],
            "127.0.0.2",
            ("http", 1),
            true,
        ),
    );
    let rv = api.bookmark();
    // a moment for the bookmark line to cross the loopback connection (not the assertion:
    // that is the resourceVersion the watch resumes from below)
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.compact();
    let before = lists(&api);
    api.drop_watches();
    wait(
        "the watch resumes from the bookmark",
        || watches_from(&api, rv) >= 1,
        &api,
    )
    .await;
    assert_eq!(lists(&api), before, "no re-list after a bookmark");

    touch(&api, &gw, &a).await;

    // 2. a change it does not see, history dropped, connection cut: 410 Expired, re-list
    api.put(
        Kind::Pod,
        NS,
        pod(
            "unrelated",
            &[("app", "other")],
            &[],
            "127.0.0.3",
            ("http", 1),
            true,
        ),
    );
    api.compact();
    let before = lists(&api);
    let inits = metric(&gw, "inferplane_discovery_events_total{kind=\"init\"}").await;
    api.drop_watches();
    wait("a re-list after 410", || lists(&api) > before, &api).await;
    for _ in 0..1000 {
        if metric(&gw, "inferplane_discovery_events_total{kind=\"init_done\"}").await > inits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(metric(&gw, "inferplane_discovery_events_total{kind=\"init_done\"}").await > inits);

    touch(&api, &gw, &a).await;

    // 3. watch requests answering 500, then a list answering 500 during a re-list
    api.fail_watches(2);
    api.drop_watches();
    let errors = metric(&gw, "inferplane_discovery_events_total{kind=\"error\"}").await;
    for _ in 0..1500 {
        if api.watchers() > 0
            && metric(&gw, "inferplane_discovery_events_total{kind=\"error\"}").await
                >= errors + 2.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // an event the watch sees ends the backoff's growth (kube's backoff restarts on an
    // event; it does not on a quiet watch), as any change in a cluster would
    touch(&api, &gw, &a).await;
    api.put(
        Kind::Pod,
        NS,
        pod(
            "unrelated",
            &[("app", "other")],
            &[],
            "127.0.0.4",
            ("http", 1),
            true,
        ),
    );
    api.compact();
    api.fail_lists(1);
    api.drop_watches();
    // the watch is live again: a new pod arrives
    let c = sim("c", MODEL).await;
    api.put(
        Kind::Pod,
        NS,
        pod(
            "engine-c",
            &[("app", "vllm"), LABEL],
            &[],
            "127.0.0.1",
            ("http", port_of(&c)),
            true,
        ),
    );
    until(&http, &gw, "engine-c routable after the errors", |m| {
        ready(m, "engine-c")
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (flapped, samples) = rec.await.unwrap();
    assert!(samples > 50, "recorded continuously ({samples} samples)");
    assert!(
        !flapped,
        "no instance left or stopped being ready during 410s and watch errors"
    );
    assert!(metric(&gw, "inferplane_discovery_events_total{kind=\"error\"}").await >= errors + 3.0);
    gw.shutdown().await;
}

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
        until(&http, &gw, "routable", |m| ready(m, &name)).await;
        samples.push(t0.elapsed());
        api.delete(Kind::Pod, NS, &name);
        until(&http, &gw, "removed", |m| !m.contains_key(&name)).await;
    }
    eprintln!("watch event -> listed ready by /admin/instances: {samples:?}");
    assert_eq!(samples.len(), 5);
    gw.shutdown().await;
}
