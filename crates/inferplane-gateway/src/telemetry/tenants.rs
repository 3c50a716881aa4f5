//! Per-tenant usage (`[[tenants]]`): `inferplane_tenant_requests_total{tenant,status}`,
//! `inferplane_tenant_prompt_tokens_total` and `..._completion_tokens_total{tenant}`,
//! `inferplane_tenant_cost_usd_total{tenant}` (from the instances' prices), and
//! `inferplane_auth_failures_total{reason}` (`missing`, `unknown` key),
//! `inferplane_tenant_rejections_total{tenant,reason}` (a limit refused the request:
//! `requests_per_minute`, `tokens_per_minute`, `concurrent`, `budget`), and, with
//! `[shared]`, `inferplane_tenant_limits_store_up` (1 while limits are fleet-wide) and
//! `inferplane_tenant_limits_fallbacks_total` (times they fell back to this replica's own
//! counts). The tenant label
//! takes only configured tenant ids, so its cardinality is bounded by the config; a failed
//! key check is never labelled by the key.

use super::{FloatCounter, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantStatusLabels {
    tenant: String,
    status: Status,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantReasonLabels {
    tenant: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The families.
#[derive(Debug, Clone, Default)]
pub(super) struct TenantFamilies {
    requests: Family<TenantStatusLabels, Counter>,
    prompt_tokens: Family<TenantLabel, Counter>,
    completion_tokens: Family<TenantLabel, Counter>,
    cost: Family<TenantLabel, FloatCounter>,
    auth_failures: Family<ReasonLabel, Counter>,
    rejections: Family<TenantReasonLabels, Counter>,
    store_up: Gauge,
    store_fallbacks: Counter,
}

impl TenantFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "inferplane_tenant_requests",
            "Requests of a tenant by how they ended",
            self.requests.clone(),
        );
        r.register(
            "inferplane_tenant_prompt_tokens",
            "Prompt tokens served to a tenant",
            self.prompt_tokens.clone(),
        );
        r.register(
            "inferplane_tenant_completion_tokens",
            "Completion tokens served to a tenant",
            self.completion_tokens.clone(),
        );
        r.register(
            "inferplane_tenant_cost_usd",
            "What a tenant's served requests cost, from the instances' prices",
            self.cost.clone(),
        );
        r.register(
            "inferplane_auth_failures",
            "Requests refused for a missing or unknown API key",
            self.auth_failures.clone(),
        );
        r.register(
            "inferplane_tenant_rejections",
            "Requests of a tenant refused by one of its limits",
            self.rejections.clone(),
        );
        r.register(
            "inferplane_tenant_limits_store_up",
            "1 while tenants' limits are counted fleet-wide in the shared store",
            self.store_up.clone(),
        );
        r.register(
            "inferplane_tenant_limits_fallbacks",
            "Times tenants' limits fell back to this replica's own counts",
            self.store_fallbacks.clone(),
        );
    }
}

/// Every [`Status`] a tenant's request can end with, in the order of
/// [`TenantMetrics::requests`].
const STATUSES: [Status; 7] = [
    Status::success,
    Status::client_error,
    Status::rejected,
    Status::upstream_error,
    Status::stream_broken,
    Status::cancelled,
    Status::invalid,
];

/// One tenant's handles, made once when the dispatcher starts, so counting a finished
/// request allocates nothing.
#[derive(Debug, Clone)]
pub struct TenantMetrics {
    requests: [Counter; 7],
    prompt_tokens: Counter,
    completion_tokens: Counter,
    cost: FloatCounter,
    rejections: [Counter; 4],
}

/// Every rejection reason (the `reason` label of `inferplane_tenant_rejections_total`).
pub const REJECTIONS: [&str; 4] = [
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent",
    "budget",
];

/// A tenant's totals as its metrics count them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TenantTotals {
    /// Requests that reached a pool and ended, successful or not.
    pub requests: u64,
    /// Successful ones.
    pub succeeded: u64,
    /// Prompt tokens served.
    pub prompt_tokens: u64,
    /// Completion tokens served.
    pub completion_tokens: u64,
    /// Spend.
    pub cost_usd: f64,
    /// Refusals by a limit, by reason.
    pub rejected: [(&'static str, u64); 4],
}

impl Default for TenantTotals {
    fn default() -> Self {
        TenantTotals {
            requests: 0,
            succeeded: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            rejected: REJECTIONS.map(|r| (r, 0)),
        }
    }
}

impl TenantTotals {
    /// What was counted since `earlier` (totals of the same counters, taken before).
    pub fn since(&self, earlier: &TenantTotals) -> TenantTotals {
        self.each(earlier, u64::saturating_sub, |a, b| (a - b).max(0.0))
    }

    /// These totals and `more` together.
    pub fn plus(&self, more: &TenantTotals) -> TenantTotals {
        self.each(more, u64::saturating_add, |a, b| a + b)
    }

    /// Each count of these and `other` combined by `count`, the spend by `usd`.
    fn each(
        &self,
        other: &TenantTotals,
        count: impl Fn(u64, u64) -> u64,
        usd: impl Fn(f64, f64) -> f64,
    ) -> TenantTotals {
        TenantTotals {
            requests: count(self.requests, other.requests),
            succeeded: count(self.succeeded, other.succeeded),
            prompt_tokens: count(self.prompt_tokens, other.prompt_tokens),
            completion_tokens: count(self.completion_tokens, other.completion_tokens),
            cost_usd: usd(self.cost_usd, other.cost_usd),
            rejected: std::array::from_fn(|i| {
                let (reason, n) = self.rejected[i];
                (reason, count(n, other.rejected[i].1))
            }),
        }
    }

    /// Whether nothing is counted.
    pub fn is_zero(&self) -> bool {
        *self == TenantTotals::default()
    }
}

impl TenantMetrics {
    /// Counts a finished request.
    pub fn finished(
        &self,
        status: Status,
        prompt_tokens: u32,
        completion_tokens: u32,
        cost_usd: f64,
    ) {
        self.requests[status as usize].inc();
        self.prompt_tokens.inc_by(u64::from(prompt_tokens));
        self.completion_tokens.inc_by(u64::from(completion_tokens));
        if cost_usd > 0.0 {
            self.cost.inc_by(cost_usd);
        }
    }

    /// Counts a request refused by the limit named `reason` (one of [`REJECTIONS`]).
    pub fn rejected(&self, reason: &str) {
        if let Some(i) = REJECTIONS.iter().position(|r| *r == reason) {
            self.rejections[i].inc();
        }
        self.requests[Status::rejected as usize].inc();
    }

    /// The totals so far.
    pub fn totals(&self) -> TenantTotals {
        let rejected: u64 = self.rejections.iter().map(Counter::get).sum();
        TenantTotals {
            requests: self.requests.iter().map(Counter::get).sum::<u64>() - rejected,
            succeeded: self.requests[Status::success as usize].get(),
            prompt_tokens: self.prompt_tokens.get(),
            completion_tokens: self.completion_tokens.get(),
            cost_usd: self.cost.get(),
            rejected: std::array::from_fn(|i| (REJECTIONS[i], self.rejections[i].get())),
        }
    }
}

impl super::Telemetry {
    /// The handles of the tenant named `tenant` (its series appear at once, at zero).
    pub fn tenant(&self, tenant: &str) -> TenantMetrics {
        let t = &self.tenants;
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        TenantMetrics {
            requests: STATUSES.map(|status| {
                t.requests
                    .get_or_create(&TenantStatusLabels {
                        tenant: tenant.to_string(),
                        status,
                    })
                    .clone()
            }),
            prompt_tokens: t.prompt_tokens.get_or_create(&label).clone(),
            completion_tokens: t.completion_tokens.get_or_create(&label).clone(),
            cost: t.cost.get_or_create(&label).clone(),
            rejections: REJECTIONS.map(|reason| {
                t.rejections
                    .get_or_create(&TenantReasonLabels {
                        tenant: tenant.to_string(),
                        reason,
                    })
                    .clone()
            }),
        }
    }

    /// The limits store's gauge (1 while fleet-wide) and fallback counter.
    pub fn limits_store(&self) -> (Gauge, Counter) {
        (
            self.tenants.store_up.clone(),
            self.tenants.store_fallbacks.clone(),
        )
    }

    /// Counts a request refused for its key: `missing` or `unknown`.
    pub fn auth_failed(&self, reason: &'static str) {
        self.tenants
            .auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_listed_in_their_declaration_order() {
        for (i, s) in STATUSES.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
    }
}
