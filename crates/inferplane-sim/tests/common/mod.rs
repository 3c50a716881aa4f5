//! Shared helpers for the simulator's wire tests: start a server on 127.0.0.1:0.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
#![allow(dead_code)] // each test binary uses a different subset of the helpers

use inferplane_sim::{EngineProfile, SimConfig, SimServer};
use std::net::SocketAddr;

/// The model the test servers serve.
pub const MODEL: &str = "test-model";

/// Starts a simulator with the `tiny` profile, adjusted by `f`.
pub async fn start_with(f: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut cfg = SimConfig::new(MODEL, EngineProfile::preset("tiny").unwrap());
    f(&mut cfg);
    SimServer::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

/// Starts a default `tiny` simulator.
pub async fn start() -> SimServer {
    start_with(|_| {}).await
}

/// An async-openai client pointed at `server`.
pub fn openai(server: &SimServer) -> async_openai::Client<async_openai::config::OpenAIConfig> {
    let cfg = async_openai::config::OpenAIConfig::new()
        .with_api_base(format!("{}/v1", server.url()))
        .with_api_key("unused");
    async_openai::Client::with_config(cfg)
}

/// Reads a metric's value (first sample whose line starts with `prefix`).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {prefix} not found in\n{text}"))
}
