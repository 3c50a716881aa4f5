//! A tenant's usage as `/admin/tenants/{id}/usage` shows it: the current window (the
//! fleet's with `[shared]`), this process's totals, and with `[shared]` the fleet's
//! totals, which each replica reports to the store every second (`fleet_totals.rs`).

use super::{Limited, Limiter};
use crate::config::TenantLimits;
use crate::telemetry::TenantTotals;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// One tenant's usage (`GET /admin/tenants/{id}/usage`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: String,
    /// Its limits.
    pub limits: TenantLimits,
    /// The current window's counts (the fleet's with `[shared]`, while the store answers).
    pub window: WindowUsage,
    /// Totals since this process started.
    pub totals: TenantTotals,
    /// Every replica's totals (with `[shared]`, while the store answers): this one's up
    /// to now, the others' up to their last report (at most a second or a sync period
    /// old), since the store first counted the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_totals: Option<TenantTotals>,
}

/// A window's counts.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct WindowUsage {
    /// Requests admitted in it.
    pub requests: u32,
    /// Tokens reserved or used in it.
    pub tokens: u64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Seconds until it ends.
    pub resets_in_secs: u64,
    /// Spend counted against the budget.
    pub spent_usd: f64,
    /// Whether the counts are this replica's own (`local`) or the fleet's (`shared`).
    pub scope: &'static str,
}

impl Limiter {
    /// The totals of the tenant named `id` (this process's counts, no store call).
    pub fn totals(&self, id: &str) -> Option<TenantTotals> {
        self.tenants
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.metrics.totals())
    }

    /// The usage of the tenant named `id` at `now_ms`: its window as the fleet counts it
    /// when the store answers, else as this replica does.
    pub async fn usage(&self, id: &str, now_ms: u64) -> Option<TenantUsage> {
        let ix = self.tenants.iter().position(|t| t.id == id)?;
        let t = &self.tenants[ix];
        let fleet = match &self.store {
            Some(store) => store.window(&t.id, &t.limits, now_ms).await.ok(),
            None => None,
        };
        let window = match fleet {
            Some(w) => WindowUsage {
                requests: w.requests,
                tokens: w.tokens,
                in_flight: w.in_flight,
                resets_in_secs: w.reset_ms.div_ceil(1000),
                spent_usd: w.spent,
                scope: "shared",
            },
            None => {
                let mut state = t.lock();
                let u = &mut state.usage;
                let standing = u.standing(&t.limits, now_ms);
                WindowUsage {
                    requests: u.requests,
                    tokens: u.tokens,
                    in_flight: u.inflight,
                    resets_in_secs: standing.reset_ms.div_ceil(1000),
                    spent_usd: u.spent(&t.limits, now_ms),
                    scope: "local",
                }
            }
        };
        let fleet_totals = self
            .fleet_totals_of(&[t])
            .await
            .and_then(|f| f.first().copied());
        Some(TenantUsage {
            tenant: t.id.clone(),
            limits: t.limits,
            window,
            totals: t.metrics.totals(),
            fleet_totals,
        })
    }

    /// Every tenant's totals across the fleet, by id (with `[shared]`, while the store
    /// answers; `None` otherwise).
    pub async fn fleet_totals(&self) -> Option<HashMap<String, TenantTotals>> {
        let all: Vec<&Limited> = self.tenants.iter().collect();
        let fleet = self.fleet_totals_of(&all).await?;
        Some(all.iter().map(|t| t.id.clone()).zip(fleet).collect())
    }

    /// The fleet's totals of `tenants`, in order, in one store call: the store's, with
    /// what this replica has not reported yet.
    async fn fleet_totals_of(&self, tenants: &[&Limited]) -> Option<Vec<TenantTotals>> {
        let store = self.store.as_ref()?;
        let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
        let fleet = store.totals_of(&ids).await.ok()?;
        Some(
            tenants
                .iter()
                .zip(fleet)
                .map(|(t, f)| f.plus(&t.unreported()))
                .collect(),
        )
    }

    /// Reports to the store at `now_ms`: the spend it missed before, then what every
    /// tenant counted since the last report (a failed report is carried, whole, by the
    /// next). The periodic task and shutdown both call this.
    pub async fn report(&self, now_ms: u64) -> Result<(), crate::shared::StoreError> {
        self.resend_spend(now_ms).await;
        self.report_totals().await
    }

    /// Adds what every tenant counted since the last report to the store's totals (with
    /// `[shared]`; nothing to do without). A report that fails is carried, whole, by the
    /// next one; reports never run two at a time (each would send the same counts).
    async fn report_totals(&self) -> Result<(), crate::shared::StoreError> {
        let Some(store) = self.store.as_ref() else {
            return Ok(());
        };
        let _one = self.reporting.lock().await;
        let deltas: Vec<(usize, TenantTotals)> = self
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (i, t.unreported()))
            .filter(|(_, d)| !d.is_zero())
            .collect();
        let named: Vec<(&str, TenantTotals)> = deltas
            .iter()
            .map(|(i, d)| (self.tenants[*i].id.as_str(), *d))
            .collect();
        store.add_totals(&named).await?;
        for (i, d) in &deltas {
            let mut state = self.tenants[*i].lock();
            state.reported = state.reported.plus(d);
        }
        Ok(())
    }

    /// Reports the totals every `every` until the returned task is aborted or the
    /// limiter is gone (`None` without a store), and sends the spend the store missed
    /// before. A failure is logged once, until a report succeeds again.
    pub fn spawn_reports(self: &Arc<Self>, every: Duration) -> Option<JoinHandle<()>> {
        self.store.as_ref()?;
        let me = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                let Some(limiter) = me.upgrade() else { return };
                match limiter.report(super::now_ms()).await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("tenants' usage totals reach the shared store again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "shared store: tenants' usage totals kept to report later");
                    }
                    Err(_) => {}
                }
            }
        }))
    }
}
