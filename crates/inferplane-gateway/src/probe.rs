//! One probe task per instance: active health checks (`GET /health` with a timeout) and
//! load scraping (`GET /metrics`, at most [`MAX_SCRAPE_BYTES`]), each on its own interval
//! and independent of the other, reported to the dispatcher.
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

/// Largest `/metrics` page read; a larger one counts as a failed scrape (an engine's own
/// page is tens of kilobytes).
pub const MAX_SCRAPE_BYTES: usize = 4 << 20;

/// Starts probing `backend`; abort the handle to stop. Health checks and scrapes run
/// independently: a slow `/metrics` never delays a health check.
pub fn spawn(
    backend: Arc<Backend>,
    http: reqwest::Client,
    health: HealthSection,
    scrape: ScrapeSection,
    ctl: mpsc::UnboundedSender<Ctl>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let get = |url: &str| {
            let req = http.get(url);
            match &backend.api_key {
                Some(key) => req.bearer_auth(key.expose()),
                None => req,
            }
        };
        let checks = async {
            if !health.active {
                return;
            }
            let id = backend.spec.id.clone();
            let url = format!("{}/health", backend.spec.url);
            let mut tick = tokio::time::interval(health.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ok = matches!(
                    get(&url).timeout(health.timeout).send().await,
                    Ok(r) if r.status().is_success()
                );
                if ctl
                    .send(Ctl::Health {
                        instance: id.clone(),
                        ok,
                    })
                    .is_err()
                {
                    return;
                }
            }
        };
        let scrapes = async {
            if !scrape.active {
                return;
            }
            let id = backend.spec.id.clone();
            let url = format!("{}/metrics", backend.spec.url);
            let mut tick = tokio::time::interval(scrape.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut last_good: Option<Instant> = None;
            let mut warned = false;
            loop {
                tick.tick().await;
                let text = read_page(get(&url).timeout(scrape.timeout)).await;
                let load = match text {
                    Some(t) => {
                        last_good = Some(Instant::now());
                        let load = parse_load(&t);
                        let none = load.running.is_none()
                            && load.waiting.is_none()
                            && load.kv_usage.is_none();
                        if none && !warned {
                            warned = true;
                            tracing::warn!(
                                instance = %id,
                                "the engine's /metrics has no load figures the gateway knows \
                                 (vLLM, SGLang or llama.cpp names): it is placed on without them"
                            );
                        }
                        load
                    }
                    None if last_good.is_some_and(|t| t.elapsed() < scrape.stale_after) => {
                        continue;
                    }
                    None => EngineLoad::default(),
                };
                if ctl
                    .send(Ctl::Load {
                        instance: id.clone(),
                        load,
                    })
                    .is_err()
                {
                    return;
                }
            }
        };
        tokio::join!(checks, scrapes);
    })
}

/// A `/metrics` page, `None` when the request fails, the status is not a success, or
/// the page is larger than [`MAX_SCRAPE_BYTES`].
async fn read_page(req: reqwest::RequestBuilder) -> Option<String> {
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let bytes = crate::backend::read_limited(resp, MAX_SCRAPE_BYTES + 1)
        .await
        .ok()?;
    (bytes.len() <= MAX_SCRAPE_BYTES).then(|| String::from_utf8_lossy(&bytes).into_owned())
}
