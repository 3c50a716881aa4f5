//! Tenants as the HTTP edge sees them: who a bearer token belongs to, which class its
//! requests get, and which models it may use. Built once from `[[tenants]]`; a tenant's
//! index in the file is its core [`TenantId`], which the scheduler's fair share counts by
//! (weights set by the dispatcher from the same config).
//!
//! With no key configured the gateway stays open: every request is anonymous and no
//! tenant is known. With any key configured, every OpenAI route needs one. Keys can be
//! created and revoked at run time (`/admin/tenants/{id}/keys`, `/admin/keys/{id}`); those
//! changes live in this process only (a restart goes back to the config) unless `[shared]`
//! is set, which keeps them in Redis for every replica (`keystore.rs`); once any key
//! exists the gateway never opens again by revoking them all.
//!
//! A tenant's limits are counted by [`Limiter`] (`limiter/`; the arithmetic in
//! `window.rs`, its fleet-wide twin in Redis in `store.rs`, the fleet's usage totals
//! in `fleet_totals.rs`).

mod admin_keys;
mod fleet_totals;
mod keys;
pub mod keystore;
mod limiter;
mod period;
mod store;
mod window;

pub use keys::{KeyDigest, KeyError, check_key};
pub use keystore::{KeyStore, SharedKeys, StoredKey};
pub use limiter::{Limiter, Refused, Reservation, TenantUsage, WindowUsage, now_ms};
pub use store::{LimitStore, StoreAnswer};
pub use window::{Ask, Held, Refusal, Standing, Usage, WINDOW_MS, window_of};

use crate::config::TenantConfig;
use arc_swap::ArcSwap;
use axum::http::{HeaderMap, header};
use inferplane_core::{Priority, TenantId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header while keys are required.
    #[error(
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )]
    Missing,
    /// A key that no tenant has (never echoed back).
    #[error("Incorrect API key provided.")]
    Unknown,
}

/// The configured tenants and a digest index of their keys (a snapshot, replaced whole
/// when the admin API creates or revokes a key).
#[derive(Debug, Default)]
pub struct Tenants {
    list: Vec<TenantConfig>,
    by_digest: ArcSwap<HashMap<KeyDigest, KeyEntry>>,
    /// Set once any key exists: then every caller needs one, even if all are revoked.
    required: AtomicBool,
    /// The config's keys, as they were at start (what the shared store's view starts from).
    config_keys: HashMap<KeyDigest, KeyEntry>,
    /// Counts this replica's own key changes, so a view of the store read before one is
    /// not applied over it.
    changes: std::sync::atomic::AtomicU64,
}

/// A key, as the admin API lists it (never its secret or digest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyEntry {
    /// The key's id (`<tenant>-<n>` from the config, `<tenant>-a<10 hex digits>` from the
    /// admin API).
    pub id: String,
    /// Its tenant's name.
    pub tenant: String,
    /// `config` or `admin`.
    pub source: &'static str,
    /// Its label, given when created through the admin API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Index of its tenant.
    #[serde(skip)]
    ix: u32,
}

/// A key the admin API made: its secret is in this value only.
#[derive(Debug)]
pub struct NewKey {
    /// What the admin API lists.
    pub entry: KeyEntry,
    /// Its digest.
    pub digest: KeyDigest,
    /// The key itself, shown once.
    pub secret: String,
}

/// Why a key could not be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    /// No such tenant.
    #[error("no tenant is named {0:?}")]
    UnknownTenant(String),
    /// No such key.
    #[error("no key has the id {0:?}")]
    UnknownKey(String),
    /// The shared store did not take the change (nothing changed).
    #[error("the shared store (Redis) did not take the change, so nothing changed; try again")]
    Store(#[source] crate::shared::StoreError),
}

/// A caller known by its key.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Its id in the core.
    pub id: TenantId,
    /// Its configuration.
    pub tenant: &'a TenantConfig,
}

impl AuthError {
    /// The `reason` label of `inferplane_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Unknown => "unknown",
        }
    }
}

impl Tenants {
    /// Indexes `tenants` (validated: digests unique).
    pub fn new(tenants: &[TenantConfig]) -> Self {
        let mut by_digest = HashMap::new();
        for (i, t) in tenants.iter().enumerate() {
            for (id, d) in &t.keys {
                let entry = KeyEntry {
                    id: id.clone(),
                    tenant: t.id.clone(),
                    source: "config",
                    name: None,
                    ix: i as u32,
                };
                by_digest.insert(*d, entry);
            }
        }
        Tenants {
            list: tenants.to_vec(),
            required: AtomicBool::new(!by_digest.is_empty()),
            config_keys: by_digest.clone(),
            changes: Default::default(),
            by_digest: ArcSwap::from_pointee(by_digest),
        }
    }

    /// Whether callers must present a key.
    pub fn required(&self) -> bool {
        self.required.load(Ordering::Relaxed)
    }

    /// The index of the tenant named `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.list.iter().position(|t| t.id == id)
    }

    /// The tenants, in config order.
    pub fn list(&self) -> &[TenantConfig] {
        &self.list
    }

    /// Who sent `headers`: `Ok(None)` when no key is configured (the gateway is open).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Caller<'_>>, AuthError> {
        if !self.required() {
            return Ok(None);
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let presented = KeyDigest::of(token);
        let keys = self.by_digest.load();
        let (stored, entry) = keys.get_key_value(&presented).ok_or(AuthError::Unknown)?;
        if !stored.matches(&presented) {
            return Err(AuthError::Unknown);
        }
        let ix = entry.ix;
        Ok(Some(Caller {
            id: TenantId(ix),
            tenant: &self.list[ix as usize],
        }))
    }
}

impl Caller<'_> {
    /// The class of its request: its own default without `x-priority` (`asked` is `None`),
    /// and never above its highest allowed class.
    pub fn priority(&self, asked: Option<Priority>, gateway_default: Priority) -> Priority {
        let p = asked
            .or(self.tenant.default_priority)
            .unwrap_or(gateway_default);
        match self.tenant.max_priority {
            Some(max) if p > max => max,
            _ => p,
        }
    }

    /// Whether it may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.tenant.models.is_empty() || self.tenant.models.iter().any(|m| m == model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tenant(id: &str, key: &str) -> TenantConfig {
        TenantConfig {
            id: id.into(),
            keys: vec![(format!("{id}-0"), KeyDigest::of(key))],
            default_priority: Some(Priority::Low),
            max_priority: Some(Priority::Normal),
            models: vec!["m".into()],
            weight: 1,
            limits: Default::default(),
        }
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn keys_name_their_tenant_and_anything_else_is_refused() {
        let t = Tenants::new(&[
            tenant("a", "key-of-tenant-a-0001"),
            tenant("b", "key-of-tenant-b-0001"),
        ]);
        let c = t
            .authenticate(&bearer("Bearer key-of-tenant-b-0001"))
            .unwrap()
            .unwrap();
        assert_eq!((c.id, c.tenant.id.as_str()), (TenantId(1), "b"));
        assert_eq!(
            t.authenticate(&bearer("Bearer key-of-tenant-c-0001"))
                .unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(
            t.authenticate(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            t.authenticate(&bearer("Basic abc")).unwrap_err(),
            AuthError::Missing
        );
        // no key configured: open
        assert!(
            Tenants::new(&[])
                .authenticate(&HeaderMap::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_tenant_gets_its_default_class_and_cannot_promote_itself() {
        let t = Tenants::new(&[tenant("a", "key-of-tenant-a-0001")]);
        let c = t
            .authenticate(&bearer("Bearer key-of-tenant-a-0001"))
            .unwrap()
            .unwrap();
        assert_eq!(c.priority(None, Priority::Normal), Priority::Low);
        assert_eq!(
            c.priority(Some(Priority::Critical), Priority::Normal),
            Priority::Normal
        );
        assert_eq!(
            c.priority(Some(Priority::Low), Priority::High),
            Priority::Low
        );
        assert!(c.allows("m") && !c.allows("other"));
    }

    #[test]
    fn keys_made_at_run_time_work_until_revoked_and_revoking_all_never_opens_the_gateway() {
        let t = Tenants::new(&[TenantConfig {
            keys: vec![],
            ..tenant("a", "key-of-tenant-a-0001")
        }]);
        assert!(!t.required());
        assert!(matches!(
            t.create_key("zz", None, "x".repeat(40)).unwrap_err(),
            KeyAdminError::UnknownTenant(_)
        ));
        let k = t
            .create_key("a", Some("ci".into()), "made-at-run-time-0123456789".into())
            .unwrap();
        let id = format!("a-a{}", &k.digest.hex()[..10]);
        assert_eq!(
            (k.entry.id.as_str(), k.entry.source),
            (id.as_str(), "admin")
        );
        assert!(t.required());
        let auth = bearer("Bearer made-at-run-time-0123456789");
        assert_eq!(t.authenticate(&auth).unwrap().unwrap().id, TenantId(0));
        assert_eq!(t.keys(Some("a")), vec![k.entry.clone()]);
        assert_eq!(t.revoke(&id).unwrap(), k.entry);
        assert_eq!(t.authenticate(&auth).unwrap_err(), AuthError::Unknown);
        assert_eq!(
            t.authenticate(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
        assert!(t.revoke(&id).is_err());
    }
}
