//! `inferplane demo`: the whole system on built-in simulated engines.
//!
//! Starts four simulated instances of one model on loopback (two H100 TP1, one H100 TP2,
//! one A10G; step times and KV capacity from the planner's cost model), the gateway in
//! front of them, and an open-loop mixed workload (priorities, SLOs, sessions, shared
//! system prompts, streaming and not) for `--duration`, with a progress line; then prints
//! per-instance share, TTFT and latency percentiles, SLO attainment and tokens/s, and ends
//! with the same cluster and mix in the discrete-event simulation, the default against a
//! plain round-robin router (`demo_sim`). No instance is capped: each engine's own batch
//! limit (the planner's `max_num_seqs` for its GPU, as the gateway discovers it) and its
//! saturation decide admission.

use anyhow::Context;
use futures_util::StreamExt;
use inferplane_core::Layout;
use inferplane_gateway::config::{FileConfig, InstanceSection, PoolSection};
use inferplane_gateway::{Gateway, GatewayConfig};
use inferplane_sim::{EngineProfile, SimConfig, SimServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The model the demo serves.
const MODEL: &str = "llama-3.1-8b";

/// Arguments of `inferplane demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to send load, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = humantime_duration)]
    pub duration: Duration,
    /// Mean arrival rate, requests per second (Poisson).
    #[arg(long, default_value_t = 24.0)]
    pub rate: f64,
    /// Workload seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Keep the gateway and engines running after the summary, for trying it by hand.
    #[arg(long)]
    pub serve: bool,
    /// Gateway port with --serve (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let secs = s
        .trim_end_matches('s')
        .parse::<f64>()
        .map_err(|_| format!("{s:?} is not a duration like 20s"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err("duration must be between 0 and 3600 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

struct Node {
    id: &'static str,
    gpu: &'static str,
    layout: Layout,
    price: f64,
}

const NODES: [Node; 4] = [
    Node {
        id: "h100-tp1-a",
        gpu: "h100-sxm",
        layout: Layout::SINGLE,
        price: 2.49,
    },
    Node {
        id: "h100-tp1-b",
        gpu: "h100-sxm",
        layout: Layout::SINGLE,
        price: 2.49,
    },
    Node {
        id: "h100-tp2",
        gpu: "h100-sxm",
        layout: Layout {
            tp: 2,
            pp: 1,
            dp: 1,
            ep: 1,
        },
        price: 2.49,
    },
    Node {
        id: "a10g",
        gpu: "a10g",
        layout: Layout::SINGLE,
        price: 1.01,
    },
];

/// One request's client-side measurements.
struct Sample {
    ok: bool,
    ttft: Option<Duration>,
    e2e: Duration,
}

async fn start_engines() -> anyhow::Result<Vec<SimServer>> {
    let mut out = Vec::new();
    for n in &NODES {
        let profile = EngineProfile::from_planner(
            MODEL,
            n.gpu,
            n.layout,
            &inferplane_planner::EngineOptions::default(),
        )
        .or_else(|_| EngineProfile::preset("llama-3.1-8b-a10g"))
        .with_context(|| format!("profile for {}", n.id))?;
        let mut cfg = SimConfig::new(MODEL, profile);
        cfg.instance_id = n.id.to_string();
        out.push(SimServer::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await?);
    }
    Ok(out)
}

fn gateway_config(engines: &[SimServer], port: u16) -> anyhow::Result<GatewayConfig> {
    let mut f = FileConfig::default();
    f.server.listen = format!("127.0.0.1:{port}");
    f.server.shutdown_grace = Duration::from_secs(5);
    f.health.interval = Duration::from_millis(500);
    f.scrape.interval = Duration::from_millis(250);
    let mut pool: PoolSection =
        toml::from_str(&format!("model = \"{MODEL}\"\nqueue_timeout = \"20s\""))?;
    for (n, e) in NODES.iter().zip(engines) {
        pool.instances.push(InstanceSection {
            id: Some(n.id.to_string()),
            url: e.url(),
            max_inflight: None,
            layout: n.layout,
            gpu: Some(n.gpu.to_string()),
            price: Some(inferplane_core::Price::PerGpuHour(n.price)),
            api_key: None,
            max_model_len: None,
            max_batch: None,
            kv_events: None,
        });
    }
    f.pools.push(pool);
    Ok(f.validate()?)
}

/// One request of the mix, as (headers, body).
fn request(
    rng: &mut SmallRng,
    n: u64,
    prompts: &[String],
) -> (Vec<(&'static str, String)>, serde_json::Value, bool) {
    let mut headers = Vec::new();
    let p: f64 = rng.random();
    let priority = if p < 0.1 {
        "high"
    } else if p < 0.25 {
        "low"
    } else {
        "normal"
    };
    headers.push(("x-priority", priority.to_string()));
    if rng.random_bool(0.5) {
        headers.push(("x-slo-ms", "8000".to_string()));
        headers.push(("x-slo-ttft-ms", "1500".to_string()));
    }
    let session = rng.random_range(0..40u64);
    headers.push(("x-session-id", format!("user-{session}")));
    let system = &prompts[(session % prompts.len() as u64) as usize];
    let question = "explain how continuous batching shares a GPU between requests "
        .repeat(rng.random_range(1..12));
    let stream = rng.random_bool(0.7);
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("question {n}: {question}")},
        ],
        "max_tokens": rng.random_range(16..200u32),
        "stream": stream,
    });
    (headers, body, stream)
}

async fn send(
    http: reqwest::Client,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: serde_json::Value,
    stream: bool,
) -> Sample {
    let t0 = Instant::now();
    let mut req = http.post(url).json(&body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let Ok(resp) = req.send().await else {
        return Sample {
            ok: false,
            ttft: None,
            e2e: t0.elapsed(),
        };
    };
    if !resp.status().is_success() {
        let _ = resp.bytes().await;
        return Sample {
            ok: false,
            ttft: None,
            e2e: t0.elapsed(),
        };
    }
    if !stream {
        // a whole answer has no first token to time: TTFT is over streamed requests
        let ok = resp.bytes().await.is_ok();
        return Sample {
            ok,
            ttft: None,
            e2e: t0.elapsed(),
        };
    }
    let mut body = resp.bytes_stream();
    let mut ttft = None;
    let mut ok = true;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                if ttft.is_none() && c.windows(10).any(|w| w == b"\"content\":") {
                    ttft = Some(t0.elapsed());
                }
                if c.windows(9).any(|w| w == b"{\"error\":") {
                    ok = false;
                }
            }
            Err(_) => ok = false,
        }
    }
    Sample {
        ok,
        ttft,
        e2e: t0.elapsed(),
    }
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let engines = start_engines().await?;
    let gw = Gateway::start(gateway_config(
        &engines,
        if args.serve { args.port } else { 0 },
    )?)
    .await?;
    println!(
        "inferplane demo: 4 simulated engines serving {MODEL} behind the gateway at {}",
        gw.url()
    );
    // Wait (bounded) for the first health checks and what the engines say about themselves.
    for _ in 0..150 {
        let views = gw.control_plane().instances().await?;
        if views
            .iter()
            .all(|i| i.ready && i.engine_max_batch.is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let views = gw.control_plane().instances().await?;
    for (n, e) in NODES.iter().zip(&engines) {
        let batch = views
            .iter()
            .find(|v| v.spec.id.as_str() == n.id)
            .and_then(|v| v.engine_max_batch)
            .map_or_else(|| "?".to_string(), |b| b.to_string());
        println!(
            "  {:<11} {:>9} {:<14} batch limit {:>4}  ${:.2}/GPU-h  {}",
            n.id,
            n.gpu,
            n.layout.to_string(),
            batch,
            n.price,
            e.url()
        );
    }
    let prompts: Vec<String> = (0..4)
        .map(|i| format!("You are assistant #{i} of team {i}. ").repeat(40))
        .collect();
    let url = format!("{}/v1/chat/completions", gw.url());
    let http = reqwest::Client::new();
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut next = Duration::ZERO;
    let mut last_print = Duration::ZERO;
    println!(
        "\nsending an open-loop mix at {:.0} req/s for {:?} (priorities, SLOs, 40 sessions, 4 shared system prompts, 70% streaming)",
        args.rate, args.duration
    );
    while next < args.duration {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + next)).await;
        let n = sent.fetch_add(1, Ordering::Relaxed);
        let (headers, body, stream) = request(&mut rng, n, &prompts);
        let (http, url, d, f) = (http.clone(), url.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let s = send(http, url, headers, body, stream).await;
            d.fetch_add(1, Ordering::Relaxed);
            if !s.ok {
                f.fetch_add(1, Ordering::Relaxed);
            }
            s
        }));
        // Exponential inter-arrival times: a Poisson process.
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        next += Duration::from_secs_f64(-u.ln() / args.rate.max(0.1));
        let el = start.elapsed();
        if el - last_print >= Duration::from_millis(500) {
            last_print = el;
            let (s, d, f) = (
                sent.load(Ordering::Relaxed),
                done.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
            );
            print!(
                "\r  {:>5.1}s  sent {s:>5}  done {d:>5}  in flight {:>4}  failed {f:>3}   ",
                el.as_secs_f64(),
                s - d
            );
            let _ = std::io::stdout().flush();
        }
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.push(t.await?);
    }
    let wall = start.elapsed();
    println!(
        "\r  {:>5.1}s  sent {:>5}  done {:>5}  failed {:>3}                    ",
        wall.as_secs_f64(),
        samples.len(),
        samples.len(),
        samples.iter().filter(|s| !s.ok).count()
    );

    let m = gw.control_plane().metrics().await?;
    println!("\nper instance (measured at the gateway)");
    println!(
        "  {:<11} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "instance",
        "reqs",
        "share",
        "ttft p50",
        "ttft p99",
        "e2e p50",
        "e2e p99",
        "tok/s",
        "cost $"
    );
    for n in &NODES {
        if let Some(s) = m.instances.get(n.id) {
            println!(
                "  {:<11} {:>6} {:>5.1}% {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>9.0} {:>9.4}",
                n.id,
                s.completed,
                100.0 * s.completed as f64 / m.total.completed.max(1) as f64,
                s.ttft_ms.p50,
                s.ttft_ms.p99,
                s.latency_ms.p50,
                s.latency_ms.p99,
                s.completion_tokens as f64 / wall.as_secs_f64(),
                s.cost_usd
            );
        }
    }
    let mut ttft: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.ttft)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    let mut e2e: Vec<f64> = samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.e2e.as_secs_f64() * 1e3)
        .collect();
    ttft.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    let t = &m.total;
    println!("\noverall (measured by the client)");
    println!(
        "  requests {}  completed {}  failed {}  rejected {}",
        samples.len(),
        t.completed,
        t.failed,
        t.rejected
    );
    println!(
        "  TTFT ms   p50 {:>7.0}  p95 {:>7.0}  p99 {:>7.0}  (streamed requests)",
        pct(&ttft, 0.5),
        pct(&ttft, 0.95),
        pct(&ttft, 0.99)
    );
    println!(
        "  e2e  ms   p50 {:>7.0}  p95 {:>7.0}  p99 {:>7.0}",
        pct(&e2e, 0.5),
        pct(&e2e, 0.95),
        pct(&e2e, 0.99)
    );
    println!(
        "  SLO attainment {}  ({} of {} requests with an SLO met it)",
        t.slo_compliance_rate
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "n/a".into()),
        t.slo_tracked - t.slo_violations,
        t.slo_tracked
    );
    println!(
        "  throughput {:.1} req/s, {:.0} completion tokens/s, estimated cost ${:.4}",
        t.completed as f64 / wall.as_secs_f64(),
        t.completion_tokens as f64 / wall.as_secs_f64(),
        t.cost_usd
    );
    if let Some(p) = gw.control_plane().policies().await?.first() {
        println!(
            "  scheduling: {} policy (ordering by {} now, {} switch{}), routing {}{}",
            serde_json::to_value(&p.policy)?["kind"]
                .as_str()
                .unwrap_or("?"),
            p.active_policy,
            p.policy_switches,
            if p.policy_switches == 1 { "" } else { "es" },
            serde_json::to_value(&p.routing)?["kind"]
                .as_str()
                .unwrap_or("?"),
            p.balancing.map(|b| format!(" / {b}")).unwrap_or_default(),
        );
    }

    let nodes: Vec<crate::demo_sim::Node> = NODES
        .iter()
        .map(|n| (n.id, n.gpu, n.layout, n.price))
        .collect();
    if let Err(e) = crate::demo_sim::compare(MODEL, &nodes) {
        println!("  (the simulated comparison could not run: {e:#})");
    }

    let curl = format!(
        "curl -s {}/v1/chat/completions -H 'content-type: application/json' -H 'x-priority: high' \\\n    -d '{{\"model\":\"{MODEL}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}],\"max_tokens\":16}}'",
        gw.url()
    );
    if args.serve {
        println!(
            "\nstill serving; try:\n  {curl}\n  curl -s {}/admin/metrics\n  curl -s {}/metrics\npress Ctrl-C to stop",
            gw.url(),
            gw.url()
        );
        gw.run_until_signal().await;
    } else {
        println!("\nto try it by hand, run `inferplane demo --serve` and then:\n  {curl}");
        gw.shutdown().await;
    }
    for e in engines {
        e.shutdown().await;
    }
    Ok(())
}
