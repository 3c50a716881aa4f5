//! Shared helpers: simulated engines and a gateway in front of them, all on 127.0.0.1:0.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset; a failed unwrap fails the test

pub mod accounting;
pub mod answers;
pub mod engines;
pub mod limits;
pub mod redis;

#[allow(unused_imports)] // each test binary uses a subset
pub use accounting::{Counted, assert_accounted, assert_accounted_after_shutdown};
#[allow(unused_imports)]
pub use answers::{Answer, Seen, send, send_all};

use inferplane_gateway::config::{FileConfig, PoolSection};
use inferplane_gateway::{Gateway, GatewayConfig};
use inferplane_sim::{EngineProfile, SimConfig, SimServer};
use std::net::SocketAddr;
use std::time::Duration;

/// The model the simulated instances serve.
pub const MODEL: &str = "sim-model";

/// Starts a `tiny` simulator named `id`.
pub async fn sim(id: &str, model: &str) -> SimServer {
    sim_with(id, model, |_| {}).await
}

/// Starts a simulator adjusted by `f`.
pub async fn sim_with(id: &str, model: &str, f: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut cfg = SimConfig::new(model, EngineProfile::preset("tiny").unwrap());
    cfg.instance_id = id.to_string();
    f(&mut cfg);
    SimServer::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

/// A file config with fast health checks and timeouts, listening on 127.0.0.1:0.
pub fn fast_config() -> FileConfig {
    let mut f = FileConfig::default();
    f.server.listen = "127.0.0.1:0".into();
    f.server.shutdown_grace = Duration::from_secs(10);
    f.health.interval = Duration::from_millis(50);
    f.health.timeout = Duration::from_millis(500);
    f.health.startup_grace = Duration::from_secs(5);
    f.health.unhealthy_after = 2;
    f.health.healthy_after = 2;
    f.scrape.interval = Duration::from_millis(100);
    f.scrape.stale_after = Duration::from_millis(500);
    f.circuit.failures_to_open = 3;
    f.circuit.open_for = Duration::from_millis(300);
    f.circuit.successes_to_close = 1;
    f.retry.backoff_base = Duration::from_millis(5);
    f.timeouts.first_byte = Duration::from_secs(5);
    f.timeouts.total = Duration::from_secs(30);
    f
}

/// Adds a pool of `servers` (ids from the simulators' names) to `f`.
pub fn add_pool(
    f: &mut FileConfig,
    model: &str,
    servers: &[(&str, &SimServer)],
    max_inflight: u32,
) {
    let mut pool: PoolSection = toml_pool(model, max_inflight);
    for (id, s) in servers {
        pool.instances
            .push(inferplane_gateway::config::InstanceSection {
                id: Some(id.to_string()),
                url: s.url(),
                max_inflight: None,
                layout: Default::default(),
                gpu: None,
                price: None,
                api_key: None,
                max_model_len: None,
                max_batch: None,
                kv_events: None,
            });
    }
    f.pools.push(pool);
}

fn toml_pool(model: &str, max_inflight: u32) -> PoolSection {
    toml::from_str(&format!(
        "model = \"{model}\"\nmax_inflight = {max_inflight}\nqueue_timeout = \"10s\""
    ))
    .unwrap()
}

/// Starts a gateway and waits until `ready` instances are healthy.
pub async fn gateway(f: FileConfig, ready: usize) -> Gateway {
    let cfg: GatewayConfig = f.validate().unwrap();
    let gw = Gateway::start(cfg).await.unwrap();
    wait_ready(&gw, ready).await;
    gw
}

/// Waits (bounded) until `n` instances are ready.
pub async fn wait_ready(gw: &Gateway, n: usize) {
    for _ in 0..400 {
        let ready = gw
            .control_plane()
            .instances()
            .await
            .unwrap()
            .iter()
            .filter(|i| i.ready)
            .count();
        if ready >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("instances did not become ready");
}

/// Waits (bounded) until `pred` holds for instance `id`'s admin view.
pub async fn wait_instance(
    gw: &Gateway,
    id: &str,
    pred: impl Fn(&inferplane_gateway::dispatcher::InstanceView) -> bool,
) {
    for _ in 0..500 {
        let views = gw.control_plane().instances().await.unwrap();
        if views.iter().any(|v| v.spec.id.as_str() == id && pred(v)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("instance {id} never reached the expected state");
}

/// A chat body.
pub fn chat(model: &str, max_tokens: u32, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens, "stream": stream})
}

/// Posts a chat request and returns (status, serving instance, body text).
pub async fn post_chat(
    http: &reqwest::Client,
    gw: &Gateway,
    body: &serde_json::Value,
) -> (u16, Option<String>, String) {
    let resp = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let inst = resp
        .headers()
        .get("x-inferplane-instance")
        .map(|v| v.to_str().unwrap().to_string());
    (status, inst, resp.text().await.unwrap())
}

/// The gateway's Prometheus text.
pub async fn metrics_text(gw: &Gateway) -> String {
    reqwest::get(format!("{}/metrics", gw.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The JSON answer of a GET to `url` (any status).
pub async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Polls `cond` until it holds (bounded: 1,000 tries 5 ms apart), else fails naming `what`.
pub async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never: {what}");
}
