//! Per-tenant usage (`[[tenants]]`): `inferplane_tenant_requests_total{tenant,status}`,
//! `inferplane_tenant_prompt_tokens_total` and `..._completion_tokens_total{tenant}`,
//! `inferplane_tenant_cost_usd_total{tenant}` (from the instances' prices), and
//! `inferplane_auth_failures_total{reason}` (`missing`, `unknown` key). The tenant label
//! takes only configured tenant ids, so its cardinality is bounded by the config; a failed
//! key check is never labelled by the key.

use super::{FloatCounter, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        }
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
