//! Tenants as the HTTP edge sees them: who a bearer token belongs to, which class its
//! requests get, and which models it may use. Built once from `[[tenants]]`; a tenant's
//! index in the file is its core [`TenantId`], which the scheduler's fair share counts by
//! (weights set by the dispatcher from the same config).
//!
//! With no key configured the gateway stays open: every request is anonymous and no
//! tenant is known. With any key configured, every OpenAI route needs one.

mod keys;

pub use keys::{KeyDigest, KeyError, check_key};

use crate::config::TenantConfig;
use axum::http::{HeaderMap, header};
use inferplane_core::{Priority, TenantId};
use std::collections::HashMap;

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

/// The configured tenants and a digest index of their keys.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    list: Vec<TenantConfig>,
    by_digest: HashMap<KeyDigest, u32>,
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
            for (_, d) in &t.keys {
                by_digest.insert(*d, i as u32);
            }
        }
        Tenants {
            list: tenants.to_vec(),
            by_digest,
        }
    }

    /// Whether callers must present a key.
    pub fn required(&self) -> bool {
        !self.by_digest.is_empty()
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
        let (stored, ix) = self
            .by_digest
            .get_key_value(&presented)
            .ok_or(AuthError::Unknown)?;
        if !stored.matches(&presented) {
            return Err(AuthError::Unknown);
        }
        Ok(Some(Caller {
            id: TenantId(*ix),
            tenant: &self.list[*ix as usize],
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
}
