//! `inferplane demo`: the system on built-in simulated engines.
//!
//! Until the gateway lands, the demo starts four simulated engines of different speeds,
//! streams a small mixed workload straight to them (round robin), and prints per-instance
//! TTFT and latency. The gateway issue replaces the round robin with the real data path.

use anyhow::Context;
use futures_util::StreamExt;
use inferplane_sim::{EngineProfile, SimConfig, SimServer};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Arguments of `inferplane demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Requests to send.
    #[arg(long, default_value_t = 48)]
    pub requests: usize,
}

struct Sample {
    instance: usize,
    ttft: Duration,
    total: Duration,
    tokens: usize,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let presets = ["llama-3.1-8b-h100", "llama-3.1-8b-h100", "llama-3.1-8b-a10g", "tiny"];
    let mut servers = Vec::new();
    for (i, p) in presets.iter().enumerate() {
        let mut cfg = SimConfig::new("llama-3.1-8b", EngineProfile::preset(p)?);
        cfg.instance_id = format!("sim-{i}");
        let s = SimServer::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        println!("started sim-{i} ({p}) on {}", s.url());
        servers.push(s);
    }
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..args.requests {
        let instance = r % servers.len();
        let url = format!("{}/v1/chat/completions", servers[instance].url());
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({
                "model": "llama-3.1-8b",
                "messages": [{"role": "user", "content": format!("request {r}: {}", "tell me about gpus ".repeat(r % 7 * 20 + 5))}],
                "max_tokens": 32 + (r % 5) * 16,
                "stream": true,
            });
            let t0 = Instant::now();
            let resp = client.post(url).json(&body).send().await?.error_for_status()?;
            let mut stream = resp.bytes_stream();
            let mut ttft = None;
            let mut tokens = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                let text = String::from_utf8_lossy(&chunk);
                let n = text.matches("\"content\"").count();
                if n > 0 && ttft.is_none() {
                    ttft = Some(t0.elapsed());
                }
                tokens += n;
            }
            anyhow::Ok(Sample {
                instance,
                ttft: ttft.unwrap_or_default(),
                total: t0.elapsed(),
                tokens,
            })
        }));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.push(t.await.context("request task")??);
    }
    let wall = started.elapsed();
    println!("\n{} requests in {:.2}s, round robin straight to the engines (the gateway replaces this)\n", samples.len(), wall.as_secs_f64());
    println!("{:<8} {:>5} {:>12} {:>12} {:>10}", "instance", "reqs", "ttft p50 ms", "e2e p50 ms", "tokens/s");
    for (i, p) in presets.iter().enumerate() {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.instance == i).collect();
        let mut ttft: Vec<f64> = mine.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect();
        let mut e2e: Vec<f64> = mine.iter().map(|s| s.total.as_secs_f64() * 1e3).collect();
        ttft.sort_by(f64::total_cmp);
        e2e.sort_by(f64::total_cmp);
        let tokens: usize = mine.iter().map(|s| s.tokens).sum();
        let p50 = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
        println!(
            "sim-{i:<4} {:>5} {:>12.1} {:>12.1} {:>10.0}   ({p})",
            mine.len(),
            p50(&ttft),
            p50(&e2e),
            tokens as f64 / wall.as_secs_f64()
        );
    }
    for s in servers {
        s.shutdown().await;
    }
    Ok(())
}
