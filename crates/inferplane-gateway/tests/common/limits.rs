//! Helpers of the tenants' limits tests (`limits.rs`, `limits_fleet.rs`): a limited
//! tenant from TOML, a fresh minute to count in, a request with a key, a header, a metric.

use inferplane_gateway::Gateway;
use inferplane_gateway::config::TenantSection;
use inferplane_gateway::tenants::{KeyDigest, WINDOW_MS, now_ms};
use serde_json::Value;
use std::time::Duration;

/// A tenant named `id` with one key and the `[limits]` lines `limits`.
pub fn tenant(id: &str, key: &str, limits: &str) -> TenantSection {
    toml::from_str(&format!(
        "id = \"{id}\"\nkeys = [\"sha256:{}\"]\n[limits]\n{limits}",
        KeyDigest::of(key).hex(),
    ))
    .unwrap()
}

/// Waits until the current minute has at least `secs` left.
pub async fn fresh_window(secs: u64) {
    let left = WINDOW_MS - now_ms() % WINDOW_MS;
    if left < secs * 1000 {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

/// A chat request with `key` as its bearer token.
pub async fn post(
    http: &reqwest::Client,
    gw: &Gateway,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    http.post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
}

/// The response header `name`, if present.
pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The value of the metric line starting with `prefix` (0 if absent).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}
