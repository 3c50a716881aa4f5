//! The sync task: every `period`, and early when requests wait in this replica's queue
//! (at most every 5 ms), this replica's counts from the dispatcher go to the store and
//! the others' come back to the dispatcher; failures are bounded in time by
//! [`Fallback`](super::Fallback).

use super::{Fallback, FleetMsg, FleetView, RedisFleet, SharedSettings, StoreError, Transition};
use crate::dispatcher::Ctl;
use crate::telemetry::SharedMetrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// The shortest time a sync may take before it counts as failed.
const MIN_SYNC_TIME: Duration = Duration::from_millis(50);
/// Early syncs (requests waiting) come at most this often, at most every period.
const MIN_EARLY_SPACING: Duration = Duration::from_millis(5);

/// Starts the sync task (it ends when the dispatcher does).
pub(crate) fn spawn(
    settings: &SharedSettings,
    ctl: mpsc::UnboundedSender<Ctl>,
    metrics: SharedMetrics,
    early: Arc<Notify>,
) -> Result<JoinHandle<()>, StoreError> {
    // a replica's counts outlive a few missed syncs, never the fallback bound
    let ttl = (settings.period * 3).max(settings.fallback_after);
    let store = RedisFleet::new(
        settings.redis.expose(),
        &settings.key_prefix,
        &settings.replica_id,
        ttl,
    )?;
    let settings = settings.clone();
    Ok(tokio::spawn(run(store, settings, ctl, metrics, early)))
}

async fn run(
    mut store: RedisFleet,
    settings: SharedSettings,
    ctl: mpsc::UnboundedSender<Ctl>,
    metrics: SharedMetrics,
    early: Arc<Notify>,
) {
    let mut fallback = Fallback::new(settings.fallback_after, Instant::now());
    let mut reached = false;
    let mut tick = tokio::time::interval(settings.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = settings.period.max(MIN_SYNC_TIME);
    let spacing = MIN_EARLY_SPACING.min(settings.period);
    let mut last = tokio::time::Instant::now();
    loop {
        // every period, and early (but not more often than `spacing`) when requests wait
        // in this replica's queue: an idle replica reserved only one place per instance
        tokio::select! {
            _ = tick.tick() => {}
            () = early.notified() => {
                tokio::time::sleep_until(last + spacing).await;
            }
        }
        last = tokio::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        if ctl.send(Ctl::Fleet(FleetMsg::Counts(tx))).is_err() {
            return;
        }
        let Ok(own) = rx.await else { return };
        match store.sync(&own, limit).await {
            Ok(view) => {
                metrics.syncs.inc();
                metrics.up.set(1);
                metrics.replicas.set(i64::from(view.replicas));
                let recovered = fallback.succeeded(Instant::now()) == Transition::Recovered;
                if recovered || !reached {
                    tracing::info!(
                        replica = %settings.replica_id,
                        replicas = view.replicas,
                        "shared store reached: scheduling on fleet-wide counts"
                    );
                }
                reached = true;
                if ctl.send(Ctl::Fleet(FleetMsg::Apply(view))).is_err() {
                    return;
                }
            }
            Err(e) => {
                metrics.failures.inc();
                if fallback.failed(Instant::now()) == Transition::FellBack {
                    metrics.up.set(0);
                    metrics.fallbacks.inc();
                    tracing::warn!(
                        replica = %settings.replica_id,
                        after = ?settings.fallback_after,
                        error = %chain(&e),
                        "shared store unreachable: scheduling on this replica's own counts until it returns"
                    );
                    if ctl
                        .send(Ctl::Fleet(FleetMsg::Apply(FleetView::alone())))
                        .is_err()
                    {
                        return;
                    }
                } else {
                    tracing::debug!(error = %chain(&e), "shared store sync failed");
                }
            }
        }
    }
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
