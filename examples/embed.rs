//! Embedding the control plane as a library, with no GPU: two simulated engines, a
//! `ControlPlane` built in code with the priority policy and least-response-time balancing,
//! requests placed by the control plane and executed by this program, a policy switch at
//! run time, and the seed's `PerformanceMetrics` at the end.
//!
//! Run: `cargo run -p inferplane-gateway --example embed`

use inferplane_core::{
    BalanceConfig, InstanceSpec, Outcome, PolicyConfig, Priority, RequestMeta, RoutingConfig,
};
use inferplane_gateway::ControlPlane;
use inferplane_gateway::dispatcher::PolicyChange;
use inferplane_gateway::telemetry::Route;
use inferplane_sim::{EngineProfile, SimConfig, SimServer};
use std::net::SocketAddr;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Two simulated engines (real HTTP servers on loopback).
    let mut engines = Vec::new();
    for (i, profile) in ["llama-3.1-8b-h100", "llama-3.1-8b-a10g"]
        .iter()
        .enumerate()
    {
        let mut cfg = SimConfig::new("llama-3.1-8b", EngineProfile::preset(profile)?);
        cfg.instance_id = format!("sim-{i}");
        engines.push(SimServer::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await?);
    }

    // The control plane: policy, routing and instances chosen in code.
    let mut builder = ControlPlane::builder()
        .policy(PolicyConfig::Priority(Default::default()))
        .routing(RoutingConfig::LoadBalanced(
            inferplane_core::route::LoadBalancedConfig {
                algorithm: BalanceConfig::LeastResponseTime(Default::default()),
            },
        ));
    for (i, e) in engines.iter().enumerate() {
        builder = builder.instance(InstanceSpec::new(
            format!("sim-{i}"),
            e.url(),
            "llama-3.1-8b",
            8,
        ));
    }
    let cp = builder.start()?;
    while !cp.instances().await?.iter().all(|i| i.ready) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Submit requests: the control plane queues and places them; we do the I/O.
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for n in 0..24u32 {
        let (cp, http) = (cp.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut meta = RequestMeta::new(cp.next_request_id(), "llama-3.1-8b", 20, 32, cp.now());
            meta.priority = if n % 4 == 0 {
                Priority::High
            } else {
                Priority::Normal
            };
            let started = Instant::now();
            let placed = cp.submit(meta, Route::chat_completions).await?;
            let url = format!("{}/v1/chat/completions", placed.backend.spec.url);
            let body = serde_json::json!({
                "model": "llama-3.1-8b",
                "messages": [{"role": "user", "content": format!("request {n}")}],
                "max_tokens": 32,
            });
            let reply: serde_json::Value = http.post(url).json(&body).send().await?.json().await?;
            let latency = started.elapsed();
            placed.guard.finish(Outcome::Success {
                prompt_tokens: reply["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as u32,
                completion_tokens: reply["usage"]["completion_tokens"].as_u64().unwrap_or(0) as u32,
                cached_tokens: None,
                // a whole answer: its first token came with its last
                first_token: None,
                latency,
            });
            anyhow::Ok(placed.backend.spec.id.to_string())
        }));
    }
    let mut served = std::collections::BTreeMap::<String, u32>::new();
    for t in tasks {
        *served.entry(t.await??).or_default() += 1;
    }
    println!("served per instance: {served:?}");

    // Switch policy at run time; queued requests (none now) would be kept.
    let views = cp
        .set_policy(PolicyChange {
            policy: Some(PolicyConfig::Adaptive(Default::default())),
            ..Default::default()
        })
        .await?;
    println!(
        "policy now {:?}, ordering by {}",
        views[0].policy, views[0].active_policy
    );

    let m = cp.metrics().await?;
    println!(
        "completed {} requests, latency p50 {:.1} ms p99 {:.1} ms, {:.0} completion tokens/s",
        m.total.completed,
        m.total.latency_ms.p50,
        m.total.latency_ms.p99,
        m.total.completion_tokens_per_sec
    );
    cp.shutdown();
    for e in engines {
        e.shutdown().await;
    }
    Ok(())
}
