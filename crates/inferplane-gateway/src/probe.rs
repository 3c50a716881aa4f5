//! One probe task per instance: active health checks (`GET /health` with a timeout) and
//! load scraping (`GET /metrics`, at most [`MAX_SCRAPE_BYTES`]), each on its own interval
//! and independent of the other, reported to the dispatcher.
//! A scrape that fails, or load older than `stale_after`, is reported as unknown, never as
//! idle.
//!
//! Results are coalesced, not queued: each instance has one [`Reports`] slot that the
//! newest result replaces (consecutive health results of the same kind are counted), and
//! the dispatcher is sent one [`Ctl::Probed`] only when the slot goes from empty to
//! filled. However long the dispatcher is busy, an instance's probes hold at most one
//! message in its channel.

use crate::config::{HealthSection, ScrapeSection};
use crate::dispatcher::{Backend, Ctl};
use crate::scrape::parse_load;
use arc_swap::ArcSwap;
use inferplane_core::EngineLoad;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Largest `/metrics` page read; a larger one counts as a failed scrape (an engine's own
/// page is tens of kilobytes).
pub const MAX_SCRAPE_BYTES: usize = 4 << 20;

/// An instance's probe results not yet taken by the dispatcher (a snapshot swapped
/// atomically: the probe task writes, the dispatcher takes).
#[derive(Debug, Default)]
pub struct Reports {
    pending: ArcSwap<Pending>,
}

/// What [`Reports::take`] hands the dispatcher.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pending {
    /// The latest health result and how many checks in a row had it.
    pub health: Option<(bool, u32)>,
    /// The latest load reading.
    pub load: Option<EngineLoad>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.health.is_none() && self.load.is_none()
    }
}

impl Reports {
    /// Records a result; true when the dispatcher must be told (nothing was pending).
    fn put(&self, f: impl Fn(&mut Pending)) -> bool {
        let before = self.pending.rcu(|p| {
            let mut next = **p;
            f(&mut next);
            next
        });
        before.is_empty()
    }

    /// Records a health check result.
    pub fn put_health(&self, ok: bool) -> bool {
        self.put(|p| {
            p.health = Some(match p.health {
                Some((last, n)) if last == ok => (ok, n.saturating_add(1)),
                _ => (ok, 1),
            });
        })
    }

    /// Records a load reading (replacing an older one not yet taken).
    pub fn put_load(&self, load: EngineLoad) -> bool {
        self.put(|p| p.load = Some(load))
    }

    /// Takes what is pending, leaving the slot empty.
    pub fn take(&self) -> Pending {
        *self.pending.swap(Arc::default())
    }
}

/// Starts probing `backend`; abort the handle to stop. Health checks and scrapes run
/// independently: a slow `/metrics` never delays a health check.
pub fn spawn(
    backend: Arc<Backend>,
    http: reqwest::Client,
    health: HealthSection,
    scrape: ScrapeSection,
    reports: Arc<Reports>,
    ctl: mpsc::UnboundedSender<Ctl>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let tell = |fresh: bool| {
            !fresh
                || ctl
                    .send(Ctl::Probed {
                        instance: backend.spec.id.clone(),
                    })
                    .is_ok()
        };
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
            let url = format!("{}/health", backend.spec.url);
            let mut tick = tokio::time::interval(health.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ok = matches!(
                    get(&url).timeout(health.timeout).send().await,
                    Ok(r) if r.status().is_success()
                );
                if !tell(reports.put_health(ok)) {
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
                if !tell(reports.put_load(load)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_coalesce_until_taken() {
        let r = Reports::default();
        assert!(r.put_health(true), "the first result is told");
        assert!(!r.put_health(true));
        assert!(!r.put_load(EngineLoad::default()));
        let busy = EngineLoad {
            running: Some(3.0),
            ..EngineLoad::default()
        };
        assert!(!r.put_load(busy), "a newer reading replaces the older");
        assert_eq!(
            r.take(),
            Pending {
                health: Some((true, 2)),
                load: Some(busy),
            }
        );
        assert_eq!(r.take(), Pending::default(), "taken once");
        assert!(r.put_health(true), "told again once taken");
        assert!(!r.put_health(false));
        assert_eq!(
            r.take().health,
            Some((false, 1)),
            "a change restarts the run"
        );
    }
}
