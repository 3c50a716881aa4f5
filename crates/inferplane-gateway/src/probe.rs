//! One probe task per instance: active health checks (`GET /health` with a timeout) and
//! load scraping (`GET /metrics`), each on its own interval, reported to the dispatcher.
//! A scrape that fails, or load older than `stale_after`, is reported as unknown, never as
//! idle.

use crate::config::{HealthSection, ScrapeSection};
use crate::dispatcher::{Backend, Ctl};
use crate::scrape::parse_load;
use inferplane_core::EngineLoad;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Starts probing `backend`; abort the handle to stop.
pub fn spawn(
    backend: Arc<Backend>,
    http: reqwest::Client,
    health: HealthSection,
    scrape: ScrapeSection,
    ctl: mpsc::UnboundedSender<Ctl>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let id = backend.spec.id.clone();
        let health_url = format!("{}/health", backend.spec.url);
        let get = |url: &str| {
            let req = http.get(url);
            match &backend.api_key {
                Some(key) => req.bearer_auth(key.expose()),
                None => req,
            }
        };
        let metrics_url = format!("{}/metrics", backend.spec.url);
        let mut health_tick = tokio::time::interval(health.interval);
        let active = health.active;
        let scraping = scrape.active;
        if !active && !scraping {
            return;
        }
        health_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut scrape_tick = tokio::time::interval(scrape.interval);
        scrape_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_good: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = health_tick.tick(), if active => {
                    let ok = matches!(
                        get(&health_url).timeout(health.timeout).send().await,
                        Ok(r) if r.status().is_success()
                    );
                    if ctl.send(Ctl::Health { instance: id.clone(), ok }).is_err() {
                        return;
                    }
                }
                _ = scrape_tick.tick(), if scraping => {
                    let text = match get(&metrics_url).timeout(scrape.timeout).send().await {
                        Ok(r) if r.status().is_success() => r.text().await.ok(),
                        _ => None,
                    };
                    let load = match text {
                        Some(t) => {
                            last_good = Some(Instant::now());
                            parse_load(&t)
                        }
                        None if last_good.is_some_and(|t| t.elapsed() < scrape.stale_after) => continue,
                        None => EngineLoad::default(),
                    };
                    if ctl.send(Ctl::Load { instance: id.clone(), load }).is_err() {
                        return;
                    }
                }
            }
        }
    })
}
