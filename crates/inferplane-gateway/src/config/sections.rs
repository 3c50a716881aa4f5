//! The file's operational sections: `[server]`, `[admin]`, `[health]`, `[circuit]`,
//! `[scrape]`, `[retry]` and `[timeouts]`, with their defaults, and an instance's
//! `kv_events` table.

use inferplane_core::Priority;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[server]`: the listener and request limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long the gateway keeps serving with `/ready` failing before it
    /// stops accepting connections, so load balancers (a Kubernetes Service) stop sending
    /// it traffic first. SIGINT (Ctrl-C) skips it. `0s`: no delay.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// Output tokens assumed for requests that give no `max_tokens` (for predictions).
    pub default_max_tokens: u32,
    /// Priority of requests without `x-priority`.
    pub default_priority: Priority,
    /// Longest time to receive a request's headers, from a connection's start or the end
    /// of its previous response: also the idle keep-alive timeout.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time to receive a request's body once its headers are in.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most client connections open at once; beyond it a newcomer gets a 503 and is
    /// closed. Default: three quarters of the process's open-file limit (the rest for
    /// engine connections and files), 4096 where the limit cannot be read.
    pub max_connections: Option<usize>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 8 << 20,
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::from_secs(5),
            default_max_tokens: inferplane_core::request::DEFAULT_MAX_TOKENS,
            default_priority: Priority::Normal,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_connections: None,
        }
    }
}

/// `[admin]`: the admin API's guard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Bearer token required by `/admin/*`. Without one, the admin API answers only when
    /// the gateway listens on a loopback address.
    pub token: Option<String>,
}

/// `[health]`: active health checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Probe each instance's `GET /health`. With `false`, the embedding program reports
    /// health itself (`ControlPlane::report_health`); instances start unready.
    pub active: bool,
    /// Time between checks of one instance.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Timeout of one check.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures that make a healthy instance unhealthy.
    pub unhealthy_after: u32,
    /// Consecutive successes that make an unhealthy instance healthy.
    pub healthy_after: u32,
    /// After registration, failures do not count for this long (slow-starting engines).
    #[serde(with = "humantime_serde")]
    pub startup_grace: Duration,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            active: true,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_after: 3,
            healthy_after: 2,
            startup_grace: Duration::from_secs(300),
        }
    }
}

/// `[circuit]`: passive outlier detection per instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitSection {
    /// Consecutive failed attempts (connect errors, 5xx, timeouts, broken answers) that
    /// open the breaker.
    pub failures_to_open: u32,
    /// How long the breaker stays open the first time before letting a probe through;
    /// each time it opens again without having closed, twice as long.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The longest it stays open.
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
    /// Requests in flight at once on a half-open instance (the probes).
    pub half_open_requests: u32,
    /// Consecutive successes in half-open that close it again.
    pub successes_to_close: u32,
}

impl Default for CircuitSection {
    fn default() -> Self {
        CircuitSection {
            failures_to_open: 5,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(300),
            half_open_requests: 1,
            successes_to_close: 2,
        }
    }
}

/// `[scrape]`: polling engines' `/metrics` for load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeSection {
    /// Poll each instance's `GET /metrics`. With `false`, load is only what the gateway
    /// counts itself, plus what the embedding program reports (`ControlPlane::report_load`).
    pub active: bool,
    /// Time between scrapes of one instance.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Timeout of one scrape.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Load older than this counts as unknown, not as idle.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
}

impl Default for ScrapeSection {
    fn default() -> Self {
        ScrapeSection {
            active: true,
            interval: inferplane_core::load::DEFAULT_READING_INTERVAL,
            timeout: Duration::from_secs(1),
            stale_after: Duration::from_secs(5),
        }
    }
}

/// `[retry]`: retries on another instance before the first byte reached the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Most attempts per request, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles per retry, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Largest backoff.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            max_attempts: 3,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
        }
    }
}

/// `[timeouts]`: per attempt against an engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSection {
    /// TCP connect.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From sending an attempt to the response headers, and for streams to the first
    /// event; past it the attempt is abandoned and retried elsewhere (nothing reached the
    /// client) and counts against the instance's circuit breaker.
    #[serde(with = "humantime_serde")]
    pub first_byte: Duration,
    /// Longest silence between two events of a stream once it has started.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// The whole request from its arrival, every attempt and the queue wait included.
    #[serde(with = "humantime_serde")]
    pub total: Duration,
}

/// `[pools.timeouts]`: a pool's own attempt timeouts (a large model's first byte comes
/// later than a small one's); those not set are `[timeouts]`'s. The connect timeout is
/// gateway-wide: one connection pool serves every engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolTimeouts {
    /// `first_byte` for this pool.
    #[serde(with = "humantime_serde")]
    pub first_byte: Option<Duration>,
    /// `idle` for this pool.
    #[serde(with = "humantime_serde")]
    pub idle: Option<Duration>,
    /// `total` for this pool.
    #[serde(with = "humantime_serde")]
    pub total: Option<Duration>,
}

impl PoolTimeouts {
    /// These timeouts over `base`.
    pub fn over(&self, base: &TimeoutSection) -> TimeoutSection {
        TimeoutSection {
            connect: base.connect,
            first_byte: self.first_byte.unwrap_or(base.first_byte),
            idle: self.idle.unwrap_or(base.idle),
            total: self.total.unwrap_or(base.total),
        }
    }
}

impl Default for TimeoutSection {
    fn default() -> Self {
        TimeoutSection {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(600),
        }
    }
}

/// An instance's `kv_events = { endpoint = "tcp://10.0.0.5:5557", replay_endpoint =
/// "tcp://10.0.0.5:5558", topic = "" }`: where its engine publishes vLLM's KV cache events
/// (`--kv-events-config`), which feed the `prefix` routing strategy's index (precise
/// mode). The same field in `[[pools.instances]]` and in `POST /admin/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvEventsSection {
    /// The engine's PUB socket, `tcp://host:port` (vLLM's `endpoint`, with the engine's
    /// address in place of `*`).
    pub endpoint: String,
    /// The engine's replay (ROUTER) socket, `tcp://host:port` (vLLM's
    /// `replay_endpoint`); without it a missed batch cannot be recovered and the
    /// instance's entries are dropped.
    #[serde(default)]
    pub replay_endpoint: Option<String>,
    /// The topic the engine publishes under (vLLM's `topic`, empty by default).
    #[serde(default)]
    pub topic: String,
}
