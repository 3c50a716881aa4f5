//! Scripted faults: set by flags at start and changed at run time through
//! `GET/PUT/DELETE /sim/faults`, so tests can make a simulated engine misbehave on cue.
//!
//! The active configuration lives in a `tokio::sync::watch` channel: readers take a cheap
//! snapshot per request, and the listener wakes up when connections must be refused or
//! accepted again.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// What a simulated engine should get wrong. The default is a healthy engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Fail the Nth completion request after this config was set (1-based), once.
    pub fail_nth: Option<u64>,
    /// Fail every completion request.
    pub fail_all: bool,
    /// Status for failed requests (default 500).
    pub fail_status: u16,
    /// Accept the request, then never send a byte (not even headers).
    pub hang_before_first_token: bool,
    /// Send this many tokens, then stall forever (streams) or never answer (non-streaming).
    pub hang_after_tokens: Option<u32>,
    /// Multiply every step's duration by this factor (1.0 = normal speed).
    pub slowdown: f64,
    /// Answer `GET /health` with 503.
    pub unhealthy: bool,
    /// Close the listening socket (new connections are refused) and reset open ones.
    pub refuse_connections: bool,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            fail_nth: None,
            fail_all: false,
            fail_status: 500,
            hang_before_first_token: false,
            hang_after_tokens: None,
            slowdown: 1.0,
            unhealthy: false,
            refuse_connections: false,
        }
    }
}

/// A simulator setting (profile or faults) out of its range: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidSetting {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidSetting {
    /// `field` is wrong for `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        InvalidSetting {
            field,
            reason: reason.into(),
        }
    }
}

impl FaultConfig {
    /// Checks the values; says which is wrong otherwise.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(400..=599).contains(&self.fail_status) {
            return Err(InvalidSetting::new(
                "fail_status",
                format!(
                    "must be an HTTP error status (400-599), got {}",
                    self.fail_status
                ),
            ));
        }
        if !self.slowdown.is_finite() || self.slowdown <= 0.0 {
            return Err(InvalidSetting::new(
                "slowdown",
                format!("must be positive, got {}", self.slowdown),
            ));
        }
        if self.fail_nth == Some(0) {
            return Err(InvalidSetting::new("fail_nth", "counts from 1"));
        }
        Ok(())
    }
}

/// Shared fault state of one simulated engine.
#[derive(Debug, Clone)]
pub struct Faults {
    tx: Arc<watch::Sender<FaultConfig>>,
    seen: Arc<AtomicU64>,
}

/// What to do with one completion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it normally (subject to hangs).
    Serve,
    /// Answer with this error status.
    Fail(u16),
}

impl Faults {
    /// Fault state starting from `config`.
    pub fn new(config: FaultConfig) -> Self {
        let (tx, _) = watch::channel(config);
        Faults {
            tx: Arc::new(tx),
            seen: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The current configuration.
    pub fn get(&self) -> FaultConfig {
        self.tx.borrow().clone()
    }

    /// Replaces the configuration and restarts the request count for `fail_nth`.
    pub fn set(&self, config: FaultConfig) {
        self.seen.store(0, Ordering::SeqCst);
        self.tx.send_replace(config);
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<FaultConfig> {
        self.tx.subscribe()
    }

    /// Counts a completion request and decides whether it fails.
    pub fn admit(&self) -> Verdict {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let cfg = self.tx.borrow();
        if cfg.fail_all || cfg.fail_nth == Some(n) {
            Verdict::Fail(cfg.fail_status)
        } else {
            Verdict::Serve
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_nth_fails_exactly_the_nth_request_after_it_was_set() {
        let f = Faults::new(FaultConfig::default());
        assert_eq!(f.admit(), Verdict::Serve);
        f.set(FaultConfig {
            fail_nth: Some(2),
            fail_status: 503,
            ..FaultConfig::default()
        });
        assert_eq!(f.admit(), Verdict::Serve);
        assert_eq!(f.admit(), Verdict::Fail(503));
        assert_eq!(f.admit(), Verdict::Serve);
    }

    #[test]
    fn fail_all_fails_everything_and_validation_rejects_nonsense() {
        let f = Faults::new(FaultConfig {
            fail_all: true,
            ..FaultConfig::default()
        });
        assert_eq!(f.admit(), Verdict::Fail(500));
        assert_eq!(f.admit(), Verdict::Fail(500));
        let bad = FaultConfig {
            fail_status: 200,
            ..FaultConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("400-599"));
        let slow = FaultConfig {
            slowdown: 0.0,
            ..FaultConfig::default()
        };
        assert!(slow.validate().is_err());
        assert!(FaultConfig::default().validate().is_ok());
    }

    #[test]
    fn partial_json_fills_in_defaults_and_unknown_fields_are_refused() {
        let c: FaultConfig = serde_json::from_str(r#"{"unhealthy":true}"#).unwrap();
        assert!(c.unhealthy);
        assert_eq!(c.fail_status, 500);
        assert!(serde_json::from_str::<FaultConfig>(r#"{"explode":true}"#).is_err());
    }
}
