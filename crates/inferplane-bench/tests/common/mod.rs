//! Shared helpers: simulated engines and a gateway in front of them, all on 127.0.0.1:0.

#![allow(dead_code, clippy::unwrap_used)] // a failed unwrap fails the test

use inferplane_gateway::config::{FileConfig, InstanceSection, PoolSection};
use inferplane_gateway::{Gateway, GatewayConfig};
use inferplane_sim::{EngineProfile, SimConfig, SimServer};
use std::net::SocketAddr;
use std::time::Duration;

/// The model the simulated instances serve.
pub const MODEL: &str = "sim-model";

/// Starts `n` simulators with `profile`, running `time_scale` times faster than real time.
pub async fn sims(n: usize, profile: &EngineProfile, time_scale: f64) -> Vec<SimServer> {
    let mut out = Vec::new();
    for k in 0..n {
        let mut cfg = SimConfig::new(MODEL, profile.clone());
        cfg.instance_id = format!("sim-{k}");
        cfg.time_scale = time_scale;
        out.push(
            SimServer::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap(),
        );
    }
    out
}

/// A gateway in front of `servers` (ids `sim-0`, `sim-1`, ...), each taking at most
/// `max_inflight` requests; waits until all are ready.
pub async fn gateway(servers: &[SimServer], max_inflight: u32) -> Gateway {
    let mut f = FileConfig::default();
    f.server.listen = "127.0.0.1:0".into();
    f.server.shutdown_grace = Duration::from_secs(5);
    f.health.interval = Duration::from_millis(50);
    f.health.timeout = Duration::from_millis(500);
    f.health.startup_grace = Duration::from_secs(5);
    f.health.unhealthy_after = 2;
    f.health.healthy_after = 1;
    f.scrape.interval = Duration::from_millis(50);
    f.timeouts.first_byte = Duration::from_secs(20);
    f.timeouts.total = Duration::from_secs(60);
    let mut pool: PoolSection = toml::from_str(&format!(
        "model = \"{MODEL}\"\nmax_inflight = {max_inflight}\nqueue_timeout = \"30s\""
    ))
    .unwrap();
    for (k, s) in servers.iter().enumerate() {
        pool.instances.push(InstanceSection {
            id: Some(format!("sim-{k}")),
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
    let cfg: GatewayConfig = f.validate().unwrap();
    let gw = Gateway::start(cfg).await.unwrap();
    for _ in 0..500 {
        let views = gw.control_plane().instances().await.unwrap();
        if views.iter().filter(|i| i.ready).count() >= servers.len() {
            return gw;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("instances did not become ready");
}

/// Live tests in one binary take turns: they measure timings, which a concurrent live test
/// on the same two cores would distort.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}
