//! [`Limiter`]: tenants' limits at admission. A request of a limited tenant reserves its
//! prompt plus its predicted output (learned here per model and class from the answers,
//! like the scheduler's own estimate, and bounded by `max_tokens`) and gets a
//! [`Reservation`]; the reservation settles what was really used when it is dropped,
//! whichever way the request ended: an answer, a stream that ran to its end or broke, a
//! client that left (what streamed so far counts), or no answer at all (refunded).
//!
//! With `[shared]` the counts live in Redis ([`LimitStore`]), one count for the fleet.
//! When the store fails or is slow, the replica counts on its own, each limit divided by
//! the replicas last seen live (so the fleet still stays near its limits), says so in a
//! log line and `inferplane_tenant_limits_store_up` 0, and tries the store again a second
//! later.
//!
//! Locks: one small mutex per limited tenant (its counts and its output estimates), held
//! for a few additions and never across an await; requests of different tenants, and of
//! tenants without limits, never meet on one. The store's state is atomics.
#![allow(clippy::disallowed_types)] // per-tenant std Mutex, see above

use super::period::period_of;
use super::store::{LimitStore, StoreAnswer};
use super::window::{Ask, Held, Refusal, Standing, Usage};
use crate::config::{TenantConfig, TenantLimits};
use crate::telemetry::{Telemetry, TenantMetrics, TenantTotals};
use inferplane_core::predict::OutputLengths;
use inferplane_core::{Priority, RequestMeta, TenantId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

mod usage;

pub use usage::{TenantUsage, WindowUsage};

/// How long the store is left alone after it failed.
const STORE_RETRY_MS: u64 = 1_000;

/// A tenant as the limiter knows it.
#[derive(Debug)]
struct Limited {
    id: String,
    limits: TenantLimits,
    metrics: TenantMetrics,
    /// Its local counts and output estimates.
    state: Mutex<TenantState>,
}

/// What one tenant's lock guards.
#[derive(Debug, Default)]
struct TenantState {
    usage: Usage,
    /// Output lengths of its answers, per model.
    outputs: HashMap<String, OutputLengths>,
    /// Spend the store did not take (it was unreachable), with the budget period it
    /// belongs to: sent by the next report or with the tenant's next spend, in the same
    /// period.
    unsent: Option<(Option<u64>, f64)>,
    /// Its totals as last added to the store's (with `[shared]`).
    reported: TenantTotals,
}

/// Whether the store is in use.
#[derive(Debug)]
struct StoreState {
    up: AtomicBool,
    /// While down: when to try it again.
    retry_at_ms: AtomicU64,
    /// Live replicas at the last good answer.
    replicas: AtomicU32,
}

/// Every tenant's limits and counts.
#[derive(Debug)]
pub struct Limiter {
    tenants: Vec<Limited>,
    store: Option<LimitStore>,
    state: StoreState,
    store_up: Gauge,
    fallbacks: Counter,
    /// Held while totals are reported to the store.
    reporting: tokio::sync::Mutex<()>,
}

impl Limited {
    fn lock(&self) -> std::sync::MutexGuard<'_, TenantState> {
        // the guarded arithmetic cannot panic halfway; a poisoned lock's data stands
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this process counted that it has not reported to the store yet.
    fn unreported(&self) -> TenantTotals {
        self.metrics.totals().since(&self.lock().reported)
    }
}

/// Refused: why, and where the tenant stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    /// Why.
    pub refusal: Refusal,
    /// Its standing.
    pub standing: Standing,
}

/// What a limited tenant's admitted request holds until it ends; dropping it settles.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<Limiter>,
    tenant: u32,
    model: String,
    class: Priority,
    held: Held,
    via_store: bool,
    /// Where the tenant stood once this was admitted.
    pub standing: Standing,
    prompt: AtomicU32,
    completion: AtomicU32,
    succeeded: AtomicBool,
}

impl Limiter {
    /// The limiter of `tenants`, fleet-wide through `store` when given.
    pub fn new(tenants: &[TenantConfig], telemetry: &Telemetry, store: Option<LimitStore>) -> Self {
        let (store_up, fallbacks) = telemetry.limits_store();
        store_up.set(i64::from(store.is_some()));
        Limiter {
            tenants: tenants
                .iter()
                .map(|t| Limited {
                    id: t.id.clone(),
                    limits: t.limits,
                    metrics: telemetry.tenant(&t.id),
                    state: Mutex::default(),
                })
                .collect(),
            store,
            state: StoreState {
                up: AtomicBool::new(true),
                retry_at_ms: AtomicU64::new(0),
                replicas: AtomicU32::new(1),
            },
            store_up,
            fallbacks,
            reporting: tokio::sync::Mutex::new(()),
        }
    }

    /// What `meta` reserves: its prompt and predicted output, and what it may use beyond.
    fn ask(t: &Limited, meta: &RequestMeta) -> Ask {
        let outputs = t.lock().outputs.get(meta.model.as_str()).copied();
        let predicted = outputs.unwrap_or_default().predict(meta);
        let max = meta.max_tokens.max(predicted);
        Ask {
            reserve: u64::from(meta.prompt_tokens) + u64::from(predicted),
            excess: u64::from(max - predicted),
        }
    }

    /// Admits `meta` at `now_ms` (milliseconds since the Unix epoch): `Ok(None)` when its
    /// tenant has no limit (or it has no tenant), a reservation when admitted.
    pub async fn admit(
        self: &Arc<Self>,
        meta: &RequestMeta,
        now_ms: u64,
    ) -> Result<Option<Reservation>, Refused> {
        let Some(TenantId(ix)) = meta.tenant else {
            return Ok(None);
        };
        let Some(t) = self.tenants.get(ix as usize).filter(|t| t.limits.any()) else {
            return Ok(None);
        };
        let ask = Self::ask(t, meta);
        let (result, via_store) = match self.ask_store(t, ask, now_ms).await {
            Some(a) => (
                a.result
                    .map(|h| (h, a.standing))
                    .map_err(|r| (r, a.standing)),
                true,
            ),
            None => (self.locally(t, ask, now_ms), false),
        };
        match result {
            Ok((held, standing)) => Ok(Some(Reservation {
                limiter: self.clone(),
                tenant: ix,
                model: meta.model.clone(),
                class: meta.priority,
                held,
                via_store,
                standing,
                prompt: AtomicU32::new(0),
                completion: AtomicU32::new(0),
                succeeded: AtomicBool::new(false),
            })),
            Err((refusal, standing)) => {
                t.metrics.rejected(refusal.reason());
                Err(Refused { refusal, standing })
            }
        }
    }

    /// The store's answer, or `None` to count locally (no store, or it failed).
    async fn ask_store(&self, t: &Limited, ask: Ask, now_ms: u64) -> Option<StoreAnswer> {
        let store = self.store.as_ref()?;
        let s = &self.state;
        if !s.up.load(Ordering::Relaxed) && now_ms < s.retry_at_ms.load(Ordering::Relaxed) {
            return None;
        }
        match store.admit(&t.id, &t.limits, ask, now_ms).await {
            Ok(a) => {
                s.replicas.store(a.replicas, Ordering::Relaxed);
                if !s.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("tenants' limits are fleet-wide again (shared store back)");
                    self.store_up.set(1);
                }
                Some(a)
            }
            Err(e) => {
                self.store_failed(&e, now_ms);
                None
            }
        }
    }

    fn store_failed(&self, e: &crate::shared::StoreError, now_ms: u64) {
        let s = &self.state;
        s.retry_at_ms
            .store(now_ms + STORE_RETRY_MS, Ordering::Relaxed);
        if s.up.swap(false, Ordering::Relaxed) {
            let replicas = s.replicas.load(Ordering::Relaxed);
            tracing::warn!(error = %e, replicas, "shared store unreachable: tenants' limits are counted by this replica alone, each divided by the replicas last seen");
            self.fallbacks.inc();
            self.store_up.set(0);
        }
    }

    /// Admits locally: with a store configured (but failing), each limit is this
    /// replica's share of it.
    fn locally(
        &self,
        t: &Limited,
        ask: Ask,
        now_ms: u64,
    ) -> Result<(Held, Standing), (Refusal, Standing)> {
        let replicas = match self.store {
            Some(_) => self.state.replicas.load(Ordering::Relaxed).max(1),
            None => 1,
        };
        let limits = share(&t.limits, replicas);
        t.lock().usage.admit(&limits, ask, now_ms)
    }

    /// Counts `usd` spent by `tenant` (from the dispatcher, at a request's end).
    pub fn spend(self: &Arc<Self>, tenant: Option<TenantId>, usd: f64) {
        let Some(TenantId(ix)) = tenant else { return };
        let Some(t) = self.tenants.get(ix as usize) else {
            return;
        };
        if t.limits.budget_usd.is_none() || !(usd.is_finite() && usd > 0.0) {
            return;
        }
        let now = now_ms();
        t.lock().usage.spend(&t.limits, usd, now);
        if self.store.is_some() {
            let me = self.clone();
            spawn(async move { me.send_spend(ix as usize, usd, now).await });
        }
    }

    /// Adds `usd` spent by tenant `ix` at `now_ms`, with what earlier failures left in
    /// the same budget period, to the store's count; a failure keeps it all to send with
    /// the tenant's next spend or the next report (`usage.rs`), whichever comes first.
    async fn send_spend(&self, ix: usize, usd: f64, now_ms: u64) {
        let (Some(t), Some(store)) = (self.tenants.get(ix), self.store.as_ref()) else {
            return;
        };
        // what an earlier failure left, if still of this period (a past period's
        // budget no longer refuses anything)
        let period = period_of(t.limits.budget_period, now_ms).map(|p| p.id);
        let owed = usd + of_period(t.lock().unsent.take(), period);
        if owed <= 0.0 {
            return;
        }
        if let Err(e) = store.spend(&t.id, &t.limits, owed, now_ms).await {
            if usd > 0.0 {
                tracing::warn!(error = %e, usd = owed, "shared store: spend kept to send later");
            }
            let mut st = t.lock();
            let before = of_period(st.unsent, period);
            st.unsent = Some((period, before + owed));
        }
    }

    /// Sends the spend earlier failures left (at `now_ms`), tenant by tenant.
    async fn resend_spend(&self, now_ms: u64) {
        for ix in 0..self.tenants.len() {
            if self.tenants[ix].lock().unsent.is_some() {
                self.send_spend(ix, 0.0, now_ms).await;
            }
        }
    }

    fn settle(self: &Arc<Self>, r: &Reservation, now_ms: u64) {
        let prompt = r.prompt.load(Ordering::Relaxed);
        let completion = r.completion.load(Ordering::Relaxed);
        let used = u64::from(prompt) + u64::from(completion);
        let Some(t) = self.tenants.get(r.tenant as usize) else {
            return;
        };
        {
            let mut state = t.lock();
            if r.succeeded.load(Ordering::Relaxed) {
                // a new model's entry is made once, by its first answer
                match state.outputs.get_mut(r.model.as_str()) {
                    Some(o) => o.observe(r.class, completion),
                    None => {
                        let mut o = OutputLengths::default();
                        o.observe(r.class, completion);
                        state.outputs.insert(r.model.clone(), o);
                    }
                }
            }
            if !r.via_store {
                state.usage.settle(r.held, used, now_ms);
                return;
            }
        }
        let (me, tenant, held) = (self.clone(), r.tenant, r.held);
        spawn(async move {
            if let Some(store) = me.store.as_ref()
                && let Err(e) = store
                    .settle(&me.tenants[tenant as usize].id, held, used)
                    .await
            {
                tracing::warn!(error = %e, "shared store: a request's tokens were not settled fleet-wide");
            }
        });
    }
}

/// The spend left `unsent` if it belongs to budget period `period`, else nothing.
fn of_period(unsent: Option<(Option<u64>, f64)>, period: Option<u64>) -> f64 {
    match unsent {
        Some((p, v)) if p == period => v,
        _ => 0.0,
    }
}

/// `limits` divided among `replicas` (rounded up, at least 1).
fn share(limits: &TenantLimits, replicas: u32) -> TenantLimits {
    if replicas <= 1 {
        return *limits;
    }
    TenantLimits {
        requests_per_minute: limits.requests_per_minute.map(|l| l.div_ceil(replicas)),
        tokens_per_minute: limits
            .tokens_per_minute
            .map(|l| l.div_ceil(u64::from(replicas))),
        concurrent: limits.concurrent.map(|l| l.div_ceil(replicas)),
        budget_usd: limits.budget_usd,
        budget_period: limits.budget_period,
    }
}

/// Runs `fut` on the current runtime, if there is one (a drop outside one settles nothing
/// fleet-wide; the store's counts then expire with the window).
fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(fut);
    }
}

/// Milliseconds since the Unix epoch, read at the edge (the limiter itself takes time as
/// an input).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Reservation {
    /// What a stream has used so far (counted if it ends without its usage).
    pub fn progress(&self, prompt_tokens: u32, completion_tokens: u32) {
        self.prompt.store(prompt_tokens, Ordering::Relaxed);
        self.completion.store(completion_tokens, Ordering::Relaxed);
    }

    /// The request was answered, having used these tokens.
    pub fn answered(&self, prompt_tokens: u32, completion_tokens: u32) {
        self.progress(prompt_tokens, completion_tokens);
        self.succeeded.store(true, Ordering::Relaxed);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let limiter = self.limiter.clone();
        limiter.settle(self, now_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_on_its_own_takes_its_share_of_each_limit() {
        let l = TenantLimits {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(1_001),
            concurrent: Some(3),
            budget_usd: Some(2.0),
            budget_period: None,
        };
        let s = share(&l, 2);
        assert_eq!(s.requests_per_minute, Some(5));
        assert_eq!(s.tokens_per_minute, Some(501));
        assert_eq!(s.concurrent, Some(2));
        assert_eq!(s.budget_usd, Some(2.0));
        assert_eq!(share(&l, 1), l);
    }
}
