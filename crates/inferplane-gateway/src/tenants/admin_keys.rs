//! Keys changed at run time (the admin API): made, revoked, listed, and, with `[shared]`,
//! the fleet's view from the store applied over the config's keys.

use super::{KeyAdminError, KeyDigest, KeyEntry, NewKey, SharedKeys, StoredKey, Tenants};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

impl Tenants {
    /// Every key (of `tenant`, if given), sorted by id, without secrets.
    pub fn keys(&self, tenant: Option<&str>) -> Vec<KeyEntry> {
        let mut v: Vec<KeyEntry> = self
            .by_digest
            .load()
            .values()
            .filter(|e| tenant.is_none_or(|t| e.tenant == t))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// A key for the tenant named `tenant` from `secret` (fresh random bytes: the caller
    /// draws them), labelled `name`, not in use yet ([`Tenants::insert`]). Its id is
    /// `<tenant>-a` and the first 10 hex digits of its digest: the same on every replica,
    /// and 40 bits of a hash tell nothing of a 256-bit key.
    pub fn prepare_key(
        &self,
        tenant: &str,
        name: Option<String>,
        secret: String,
    ) -> Result<NewKey, KeyAdminError> {
        let ix = self
            .position(tenant)
            .ok_or_else(|| KeyAdminError::UnknownTenant(tenant.to_string()))?;
        let digest = KeyDigest::of(&secret);
        let entry = KeyEntry {
            id: format!("{tenant}-a{}", &digest.hex()[..10]),
            tenant: tenant.to_string(),
            source: "admin",
            name,
            ix: ix as u32,
        };
        Ok(NewKey {
            entry,
            digest,
            secret,
        })
    }

    /// Puts a prepared key in use.
    pub fn insert(&self, key: &NewKey) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.by_digest.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(key.digest, key.entry.clone());
            m
        });
        self.required.store(true, Ordering::Relaxed);
    }

    /// [`Tenants::prepare_key`] and [`Tenants::insert`] (no shared store).
    pub fn create_key(
        &self,
        tenant: &str,
        name: Option<String>,
        secret: String,
    ) -> Result<NewKey, KeyAdminError> {
        let key = self.prepare_key(tenant, name, secret)?;
        self.insert(&key);
        Ok(key)
    }

    /// The key `id` and its digest.
    pub fn lookup(&self, id: &str) -> Result<(KeyDigest, KeyEntry), KeyAdminError> {
        self.by_digest
            .load()
            .iter()
            .find(|(_, e)| e.id == id)
            .map(|(d, e)| (*d, e.clone()))
            .ok_or_else(|| KeyAdminError::UnknownKey(id.to_string()))
    }

    /// Takes the key with `digest` out of use.
    pub fn remove(&self, digest: &KeyDigest) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.by_digest.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(digest);
            m
        });
    }

    /// Revokes the key `id` (no shared store): from now on it gets a 401.
    pub fn revoke(&self, id: &str) -> Result<KeyEntry, KeyAdminError> {
        let (digest, entry) = self.lookup(id)?;
        self.remove(&digest);
        Ok(entry)
    }

    /// How many key changes this replica made so far (see [`Tenants::apply_since`]).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// [`Tenants::apply`] unless this replica changed a key since [`Tenants::changes`] said
    /// `changes` (the view was read before that change reached the store); returns
    /// whether it applied.
    pub fn apply_since(&self, shared: &SharedKeys, changes: u64) -> bool {
        if self.changes() != changes {
            return false;
        }
        self.apply(shared);
        true
    }

    /// Uses the fleet's keys: the config's but those revoked, and those made through the
    /// admin API of any replica (for tenants this config knows).
    pub fn apply(&self, shared: &SharedKeys) {
        let mut m = self.config_keys.clone();
        for d in &shared.revoked {
            m.remove(d);
        }
        for (d, k) in &shared.keys {
            let Some(ix) = self.position(&k.tenant) else {
                continue;
            };
            if shared.revoked.contains(d) {
                continue;
            }
            m.insert(*d, entry_of(k, ix));
        }
        if !m.is_empty() {
            self.required.store(true, Ordering::Relaxed);
        }
        self.by_digest.store(std::sync::Arc::new(m));
    }
}

fn entry_of(k: &StoredKey, ix: usize) -> KeyEntry {
    KeyEntry {
        id: k.id.clone(),
        tenant: k.tenant.clone(),
        source: "admin",
        name: k.name.clone(),
        ix: ix as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;

    #[test]
    fn the_fleets_view_replaces_run_time_changes_over_the_config() {
        let cfg = TenantConfig {
            id: "a".into(),
            keys: vec![("a-0".into(), KeyDigest::of("config-key-of-tenant-a"))],
            default_priority: None,
            max_priority: None,
            models: vec![],
            weight: 1,
            limits: Default::default(),
        };
        let t = Tenants::new(&[cfg]);
        let k = t
            .prepare_key("a", None, "made-elsewhere-0123456789".into())
            .unwrap();
        let stored = StoredKey {
            id: k.entry.id.clone(),
            tenant: "a".into(),
            name: None,
        };
        let other = StoredKey {
            tenant: "unknown-here".into(),
            ..stored.clone()
        };
        t.apply(&SharedKeys {
            keys: vec![
                (k.digest, stored),
                (KeyDigest::of("x-0123456789abcdef"), other),
            ],
            revoked: vec![KeyDigest::of("config-key-of-tenant-a")],
        });
        let ids: Vec<String> = t.keys(None).into_iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            vec![k.entry.id.clone()],
            "config key revoked, unknown tenant skipped"
        );
        t.apply(&SharedKeys::default());
        assert_eq!(t.keys(None).len(), 1, "back to the config's key");
        assert!(t.required());
        // a view read before a local change is not applied over it
        let before = t.changes();
        t.insert(&k);
        assert!(!t.apply_since(&SharedKeys::default(), before));
        assert_eq!(t.keys(None).len(), 2);
        assert!(t.apply_since(&SharedKeys::default(), t.changes()));
    }
}
