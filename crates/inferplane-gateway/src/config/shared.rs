//! `[shared]`: the state gateway replicas share through Redis (see `crate::shared`), and
//! its validation into [`SharedSettings`].

use super::{ConfigError, Secret};
use crate::shared::SharedSettings;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[shared]`: `redis = "redis://host:6379"` (or `env:NAME`) turns on fleet-wide counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedSection {
    /// The Redis URL, `redis://[user:password@]host:port[/db]`, or `env:NAME` to read it
    /// from a variable. Absent: each replica schedules on its own counts.
    pub redis: Option<String>,
    /// This replica's name in the store; default the `HOSTNAME` variable (a pod's name in
    /// Kubernetes), else a random one. Replicas must have different names.
    pub replica_id: Option<String>,
    /// How often in-flight counts are exchanged.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// How long without a good sync before a replica schedules on its own counts.
    #[serde(with = "humantime_serde")]
    pub fallback_after: Duration,
    /// Prefix of every key, so several fleets can share one Redis.
    pub key_prefix: String,
}

impl Default for SharedSection {
    fn default() -> Self {
        SharedSection {
            redis: None,
            replica_id: None,
            period: Duration::from_millis(100),
            fallback_after: Duration::from_secs(1),
            key_prefix: "inferplane".into(),
        }
    }
}

impl SharedSection {
    /// The validated settings, `None` when no store is configured.
    pub fn validate(&self) -> Result<Option<SharedSettings>, ConfigError> {
        let Some(url) = &self.redis else {
            return Ok(None);
        };
        let redis =
            Secret::resolve(url).map_err(|e| ConfigError::new("shared.redis", e.to_string()))?;
        let scheme = redis.expose().split("://").next().unwrap_or_default();
        if !matches!(scheme, "redis" | "redis+unix" | "unix") {
            return Err(ConfigError::new(
                "shared.redis",
                if scheme == "rediss" {
                    "rediss:// (TLS) is not supported by this build; use redis://".to_string()
                } else {
                    "must be a redis:// URL".to_string()
                },
            ));
        }
        if let Err(e) = redis::Client::open(redis.expose()) {
            // the URL itself may hold a password: say what is wrong, not what it is
            return Err(ConfigError::new(
                "shared.redis",
                format!("is not a valid Redis URL ({:?})", e.kind()),
            ));
        }
        if self.period < Duration::from_millis(10) || self.period > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "shared.period",
                "must be between 10ms and 10s",
            ));
        }
        if self.fallback_after < self.period * 2 {
            return Err(ConfigError::new(
                "shared.fallback_after",
                "must be at least twice shared.period",
            ));
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !prefix_ok {
            return Err(ConfigError::new(
                "shared.key_prefix",
                "must be non-empty letters, digits, '-', '_', '.' or ':'",
            ));
        }
        let replica_id = match &self.replica_id {
            Some(id) if id.trim().is_empty() => {
                return Err(ConfigError::new(
                    "shared.replica_id",
                    "must not be empty; omit it for the host name",
                ));
            }
            Some(id) => id.clone(),
            None => std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| format!("replica-{}", uuid::Uuid::new_v4().simple())),
        };
        Ok(Some(SharedSettings {
            redis,
            replica_id,
            period: self.period,
            fallback_after: self.fallback_after,
            key_prefix: self.key_prefix.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut SharedSection)) -> Result<Option<SharedSettings>, ConfigError> {
        let mut s = SharedSection::default();
        f(&mut s);
        s.validate()
    }

    #[test]
    fn no_store_is_no_settings_and_a_good_one_validates() {
        assert_eq!(with(|_| {}), Ok(None));
        let s = with(|s| {
            s.redis = Some("redis://127.0.0.1:6379".into());
            s.replica_id = Some("a".into());
        })
        .unwrap()
        .unwrap();
        assert_eq!(s.replica_id, "a");
    }

    #[test]
    fn bad_values_name_their_field_and_never_echo_the_url() {
        type Case = (fn(&mut SharedSection), &'static str);
        let cases: [Case; 6] = [
            (|s| s.redis = Some("http://h".into()), "shared.redis"),
            (|s| s.redis = Some("rediss://h".into()), "shared.redis"),
            (
                |s| {
                    s.redis = Some("redis://u:pw@h".into());
                    s.period = Duration::ZERO;
                },
                "shared.period",
            ),
            (
                |s| {
                    s.redis = Some("redis://h".into());
                    s.fallback_after = Duration::from_millis(150);
                },
                "shared.fallback_after",
            ),
            (
                |s| {
                    s.redis = Some("redis://h".into());
                    s.key_prefix = "a b".into();
                },
                "shared.key_prefix",
            ),
            (
                |s| {
                    s.redis = Some("redis://h".into());
                    s.replica_id = Some(" ".into());
                },
                "shared.replica_id",
            ),
        ];
        for (f, path) in cases {
            let e = with(f).unwrap_err();
            assert_eq!(e.path, path, "{e}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        let e = with(|s| s.redis = Some("env:INFERPLANE_TEST_UNSET_REDIS".into())).unwrap_err();
        assert_eq!(e.path, "shared.redis");
    }
}
