//! [`KeyStore`]: keys made and revoked through the admin API, shared by the replicas in
//! the `[shared]` Redis: `{prefix}:keys` (a hash from a key's SHA-256 digest in hex to its
//! id, tenant and name; never the key) and `{prefix}:revoked` (the digests revoked,
//! config keys included). A change is made in the store first and used only once the
//! store took it; every replica reads both back every second ([`spawn_sync`]).

use super::{KeyDigest, Tenants};
use crate::shared::StoreError;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use std::sync::Weak;
use std::time::Duration;

/// How often a replica reads the fleet's keys.
pub const SYNC_PERIOD: Duration = Duration::from_secs(1);

/// A key as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Its id.
    pub id: String,
    /// Its tenant's name.
    pub tenant: String,
    /// Its label.
    pub name: Option<String>,
}

/// The fleet's keys as the store has them.
#[derive(Debug, Clone, Default)]
pub struct SharedKeys {
    /// Keys made through the admin API.
    pub keys: Vec<(KeyDigest, StoredKey)>,
    /// Digests revoked.
    pub revoked: Vec<KeyDigest>,
}

/// A replica's connection to the store for keys.
pub struct KeyStore {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    keys: String,
    revoked: String,
    timeout: Duration,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn digest_of(hex: &str) -> Option<KeyDigest> {
    KeyDigest::from_config(&format!("sha256:{hex}")).ok()
}

impl KeyStore {
    /// The store at `url`, keys under `{prefix}`; every call gives up after `timeout`.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        Ok(KeyStore {
            client: redis::Client::open(url).map_err(StoreError::Url)?,
            conn: tokio::sync::Mutex::new(None),
            keys: format!("{{{prefix}}}:keys"),
            revoked: format!("{{{prefix}}}:revoked"),
            timeout,
        })
    }

    async fn run<T, F>(&self, f: impl FnOnce(MultiplexedConnection) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        let work = async {
            let c = {
                let mut slot = self.conn.lock().await;
                match slot.as_ref() {
                    Some(c) => c.clone(),
                    None => {
                        let c = self.client.get_multiplexed_async_connection().await?;
                        *slot = Some(c.clone());
                        c
                    }
                }
            };
            Ok(f(c).await?)
        };
        let out = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if out.is_err() {
            *self.conn.lock().await = None;
        }
        out
    }

    /// Records a key made through the admin API.
    pub async fn put(&self, digest: &KeyDigest, key: &StoredKey) -> Result<(), StoreError> {
        let value = serde_json::to_string(key).map_err(|e| StoreError::Answer(e.to_string()))?;
        let hex = digest.hex();
        self.run(|mut c| async move {
            redis::pipe()
                .atomic()
                .hset(&self.keys, &hex, value)
                .srem(&self.revoked, &hex)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Records a revocation.
    pub async fn revoke(&self, digest: &KeyDigest) -> Result<(), StoreError> {
        let hex = digest.hex();
        self.run(|mut c| async move {
            redis::pipe()
                .atomic()
                .hdel(&self.keys, &hex)
                .sadd(&self.revoked, &hex)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// The fleet's keys (entries that do not parse are skipped).
    pub async fn load(&self) -> Result<SharedKeys, StoreError> {
        let (keys, revoked): (Vec<(String, String)>, Vec<String>) = self
            .run(|mut c| async move {
                redis::pipe()
                    .hgetall(&self.keys)
                    .smembers(&self.revoked)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(SharedKeys {
            keys: keys
                .iter()
                .filter_map(|(h, v)| Some((digest_of(h)?, serde_json::from_str(v).ok()?)))
                .collect(),
            revoked: revoked.iter().filter_map(|h| digest_of(h)).collect(),
        })
    }
}

/// Reads the fleet's keys into `tenants` every [`SYNC_PERIOD`] while they are in use
/// (the task ends when the gateway drops them), logging when the store fails and when it
/// answers again; between good reads the last view stands.
pub fn spawn_sync(store: std::sync::Arc<KeyStore>, tenants: Weak<Tenants>) {
    tokio::spawn(async move {
        let mut up = true;
        loop {
            let Some(changes) = tenants.upgrade().map(|t| t.changes()) else {
                return;
            };
            let result = store.load().await;
            let Some(t) = tenants.upgrade() else { return };
            match result {
                Ok(shared) => {
                    // read before a change of this replica's own: the next read has it
                    t.apply_since(&shared, changes);
                    if !up {
                        tracing::info!("API keys are read from the shared store again");
                        up = true;
                    }
                }
                Err(e) if up => {
                    tracing::warn!(error = %e, "shared store unreachable: API keys stay as last read");
                    up = false;
                }
                Err(_) => {}
            }
            drop(t);
            tokio::time::sleep(SYNC_PERIOD).await;
        }
    });
}
