//! Kubernetes discovery (feature `kubernetes`) against a stand-in API server
//! (`common/kube_api/`: not Kubernetes, but its list and watch calls for EndpointSlices
//! and Pods in the API reference's shapes, with 410 Expired and bookmarks), with
//! simulators as the engines, asserting through the gateway's own HTTP.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/kube_api/mod.rs"]
mod kube_api;
#[path = "kubernetes/pods.rs"]
mod pods;
#[path = "kubernetes/service.rs"]
mod service;
#[path = "kubernetes/watch.rs"]
mod watch;

use common::*;
use inferplane_gateway::Gateway;
use inferplane_gateway::config::KubernetesSection;
use kube_api::{Kind, KubeApi, pod};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
