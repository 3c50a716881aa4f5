//! `[[tenants]]`: who may call the gateway (API keys), at which priority, for which models,
//! and with which fair-share weight; validated into
//! [`TenantConfig`]s, whose errors name the field (`tenants[1].keys[0]`).
//!
//! A key is configured as its SHA-256 digest (`sha256:<64 hex digits>`, e.g. from
//! `printf %s "$KEY" | sha256sum`) or as `env:NAME` (the variable holds the key itself,
//! which is hashed at load and never kept); never as plain text in the file.

use super::ConfigError;
use crate::tenants::KeyDigest;
use inferplane_core::Priority;
use serde::{Deserialize, Serialize};

/// One `[[tenants]]` entry, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// The tenant's name: 1 to 64 of `a-z`, `0-9`, `-`, `_`, `.` (a metric label value).
    pub id: String,
    /// Its API keys: `sha256:<hex digest>` or `env:NAME`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// The class of its requests without `x-priority` (default: `[server]
    /// default_priority`).
    #[serde(default)]
    pub default_priority: Option<Priority>,
    /// The highest class it may ask for with `x-priority`; higher asks are lowered to it.
    #[serde(default)]
    pub max_priority: Option<Priority>,
    /// The models it may use (empty: all).
    #[serde(default)]
    pub models: Vec<String>,
    /// Its fair-share weight inside a priority class (default 1): with weights 2 and 1,
    /// two backlogged tenants are served tokens 2:1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Its limits (`[tenants.limits]`; none by default).
    #[serde(default)]
    pub limits: TenantLimits,
}

/// `[tenants.limits]`: what a tenant may use. Windows are anchored minutes (of the Redis
/// server's clock with `[shared]`, else of this gateway's); tokens are prompt + output,
/// reserved at admission (prompt + predicted output) and settled at the end.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Requests admitted per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt + output) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight (queued or running) at once.
    #[serde(default)]
    pub concurrent: Option<u32>,
    /// Spend allowed (USD, from the instances' prices) per `budget_period`.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// When the budget starts over: each UTC `day` or calendar `month` (UTC). Left out:
    /// never, the budget is for all time (until the process, or with `[shared]` the
    /// Redis store, forgets what was spent).
    #[serde(default)]
    pub budget_period: Option<BudgetPeriod>,
}

/// When a tenant's budget starts over (`[tenants.limits] budget_period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// Every UTC day, at midnight.
    Day,
    /// Every calendar month (UTC), on the first at midnight.
    Month,
}

impl TenantLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
            || self.concurrent.is_some()
            || self.budget_usd.is_some()
    }

    /// Checks every limit, naming the field (under `at`) on error.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let bad = |f: &str, m: &str| Err(ConfigError::new(format!("{at}.{f}"), m));
        if self.requests_per_minute == Some(0) {
            return bad(
                "requests_per_minute",
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if self.tokens_per_minute == Some(0) {
            return bad(
                "tokens_per_minute",
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if self.concurrent == Some(0) {
            return bad(
                "concurrent",
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if let Some(b) = self.budget_usd
            && !(b.is_finite() && b >= 0.0)
        {
            return bad(
                "budget_usd",
                "must be a finite number of dollars, 0 or more",
            );
        }
        if self.budget_period.is_some() && self.budget_usd.is_none() {
            return bad("budget_period", "needs budget_usd: a period of no budget");
        }
        Ok(())
    }
}

fn one() -> u32 {
    1
}

/// A validated tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    /// Its name.
    pub id: String,
    /// Digests of its configured keys, each with the key's id (`<tenant>-<n>`).
    pub keys: Vec<(String, KeyDigest)>,
    /// Class without `x-priority` (`None`: the gateway's default).
    pub default_priority: Option<Priority>,
    /// Highest class allowed.
    pub max_priority: Option<Priority>,
    /// Allowed models (empty: all).
    pub models: Vec<String>,
    /// Fair-share weight, at least 1.
    pub weight: u32,
    /// Its limits.
    pub limits: TenantLimits,
}

/// Checks a tenant name.
pub fn check_tenant_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may hold only a-z, 0-9, '-', '_' and '.'");
    }
    Ok(())
}

/// Validates every `[[tenants]]` entry: names unique, keys unique across tenants.
pub fn validate_tenants(
    sections: &[TenantSection],
    models: &[String],
) -> Result<Vec<TenantConfig>, ConfigError> {
    let mut out: Vec<TenantConfig> = Vec::with_capacity(sections.len());
    let mut digests = std::collections::HashSet::new();
    for (i, t) in sections.iter().enumerate() {
        let at = |field: &str| format!("tenants[{i}].{field}");
        check_tenant_id(&t.id).map_err(|m| ConfigError::new(at("id"), m))?;
        if out.iter().any(|o| o.id == t.id) {
            return Err(ConfigError::new(
                at("id"),
                format!("tenant {:?} is configured twice", t.id),
            ));
        }
        let mut keys = Vec::with_capacity(t.keys.len());
        for (k, raw) in t.keys.iter().enumerate() {
            let digest = KeyDigest::from_config(raw)
                .map_err(|e| ConfigError::new(at(&format!("keys[{k}]")), e.to_string()))?;
            if !digests.insert(digest) {
                return Err(ConfigError::new(
                    at(&format!("keys[{k}]")),
                    "this key is already configured (for this or another tenant)",
                ));
            }
            keys.push((format!("{}-{k}", t.id), digest));
        }
        if t.weight == 0 || t.weight > 10_000 {
            return Err(ConfigError::new(at("weight"), "must be 1 to 10000"));
        }
        t.limits.validate(&at("limits"))?;
        if let (Some(d), Some(m)) = (t.default_priority, t.max_priority)
            && d > m
        {
            return Err(ConfigError::new(
                at("default_priority"),
                format!("{d} is above max_priority {m}"),
            ));
        }
        for (m, model) in t.models.iter().enumerate() {
            if model.is_empty() {
                return Err(ConfigError::new(
                    at(&format!("models[{m}]")),
                    "must not be empty",
                ));
            }
            // a model served only by discovered instances may not be in the file: warn, not fail
            if !models.is_empty() && !models.contains(model) {
                tracing::warn!(tenant = %t.id, model = %model, "tenant allows a model no configured pool serves (yet)");
            }
        }
        out.push(TenantConfig {
            id: t.id.clone(),
            keys,
            default_priority: t.default_priority,
            max_priority: t.max_priority,
            models: t.models.clone(),
            weight: t.weight,
            limits: t.limits,
        });
    }
    Ok(out)
}
