//! Gateway configuration: the TOML file's shape (`FileConfig`, parsed with
//! `deny_unknown_fields` and humantime durations), and its validation into the typed
//! [`GatewayConfig`], whose errors name the offending path (`pools[1].instances[0].url`).
//!
//! Flags and `INFERPLANE_*` variables are applied by the binary on top of the file
//! (see `inferplane serve --help`) before validation.

use inferplane_core::{
    InstanceSpec, Layout, PolicyConfig, Price, Priority, RoutingConfig, SchedulerConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A configuration error that names where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending value, e.g. `pools[0].instances[1].url`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Errors loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's error (names the key and line).
        #[source]
        source: toml::de::Error,
    },
    /// The values are invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

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
    /// Output tokens assumed for requests that give no `max_tokens` (for predictions).
    pub default_max_tokens: u32,
    /// Priority of requests without `x-priority`.
    pub default_priority: Priority,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 8 << 20,
            shutdown_grace: Duration::from_secs(30),
            default_max_tokens: 256,
            default_priority: Priority::Normal,
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
    /// Consecutive connect errors or 5xx answers that open the breaker.
    pub failures_to_open: u32,
    /// How long the breaker stays open before letting a probe request through.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Consecutive successes in half-open that close it again.
    pub successes_to_close: u32,
}

impl Default for CircuitSection {
    fn default() -> Self {
        CircuitSection {
            failures_to_open: 5,
            open_for: Duration::from_secs(10),
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
            interval: Duration::from_secs(1),
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
    /// From sending the request to the response headers.
    #[serde(with = "humantime_serde")]
    pub first_byte: Duration,
    /// The whole request, body included.
    #[serde(with = "humantime_serde")]
    pub total: Duration,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        TimeoutSection {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// `[scheduler]`: the scheduling policy and routing strategy of every pool that does not
/// choose its own. TOML: `policy = { kind = "priority", aging_step = "2s" }`,
/// `routing = { kind = "load_balanced", algorithm = { kind = "power_of_two" } }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Which queued request goes next (default `adaptive`).
    pub policy: PolicyConfig,
    /// Which instance serves it (default `load_balanced` with `least_connections`).
    pub routing: RoutingConfig,
    /// Seed of the `random` strategy and `power_of_two`.
    pub seed: u64,
}

/// One `[[pools.instances]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSection {
    /// Unique id; defaults to the URL's host:port.
    #[serde(default)]
    pub id: Option<String>,
    /// Base URL, e.g. `http://10.0.0.5:8000`.
    pub url: String,
    /// Most requests sent at once; defaults to the pool's `max_inflight`.
    #[serde(default)]
    pub max_inflight: Option<u32>,
    /// Parallelism layout.
    #[serde(default)]
    pub layout: Layout,
    /// GPU kind (e.g. `h100-sxm`).
    #[serde(default)]
    pub gpu: Option<String>,
    /// Price.
    #[serde(default)]
    pub price: Option<Price>,
}

/// One `[[pools]]` entry: the instances serving one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// The model name clients ask for.
    pub model: String,
    /// Default per-instance in-flight limit.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u32,
    /// Most requests waiting in the gateway's queue for this model.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Longest a request may wait in the queue.
    #[serde(default = "default_queue_timeout", with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// This pool's scheduling policy (default: `[scheduler] policy`).
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// This pool's routing strategy (default: `[scheduler] routing`).
    #[serde(default)]
    pub routing: Option<RoutingConfig>,
    /// The instances.
    #[serde(default)]
    pub instances: Vec<InstanceSection>,
}

fn default_max_inflight() -> u32 {
    64
}
fn default_max_queue() -> usize {
    10_000
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The configuration file, as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[admin]`.
    #[serde(default)]
    pub admin: AdminSection,
    /// `[health]`.
    #[serde(default)]
    pub health: HealthSection,
    /// `[circuit]`.
    #[serde(default)]
    pub circuit: CircuitSection,
    /// `[scrape]`.
    #[serde(default)]
    pub scrape: ScrapeSection,
    /// `[retry]`.
    #[serde(default)]
    pub retry: RetrySection,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: TimeoutSection,
    /// `[scheduler]`.
    #[serde(default)]
    pub scheduler: SchedulerSection,
    /// `[[pools]]`.
    #[serde(default)]
    pub pools: Vec<PoolSection>,
}

/// A validated pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Model name.
    pub model: String,
    /// Default per-instance in-flight limit for instances added later.
    pub max_inflight: u32,
    /// Queue limit, queue timeout, policy, routing and seed.
    pub scheduler: SchedulerConfig,
    /// Instances from the file.
    pub instances: Vec<InstanceSpec>,
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Listener address.
    pub listen: SocketAddr,
    /// Body size cap.
    pub max_body_bytes: usize,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Assumed output tokens when a request gives none.
    pub default_max_tokens: u32,
    /// Priority of requests without `x-priority`.
    pub default_priority: Priority,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// Health checks.
    pub health: HealthSection,
    /// Circuit breakers.
    pub circuit: CircuitSection,
    /// Load scraping.
    pub scrape: ScrapeSection,
    /// Retries.
    pub retry: RetrySection,
    /// Timeouts.
    pub timeouts: TimeoutSection,
    /// Scheduling defaults for pools created at run time (instances registered for a
    /// model no pool serves yet).
    pub scheduler: SchedulerSection,
    /// Pools by model.
    pub pools: Vec<PoolConfig>,
}

impl GatewayConfig {
    /// The scheduler configuration of `model`'s pool (the defaults for a new model).
    pub fn scheduler_for(&self, model: &str) -> SchedulerConfig {
        match self.pools.iter().find(|p| p.model == model) {
            Some(p) => p.scheduler.clone(),
            None => SchedulerConfig {
                max_queue: default_max_queue(),
                queue_timeout: Some(default_queue_timeout()),
                policy: self.scheduler.policy.clone(),
                routing: self.scheduler.routing.clone(),
                seed: self.scheduler.seed,
            },
        }
    }

    /// The default in-flight limit for a new instance of `model`.
    pub fn max_inflight_for(&self, model: &str) -> u32 {
        self.pools
            .iter()
            .find(|p| p.model == model)
            .map(|p| p.max_inflight)
            .unwrap_or_else(default_max_inflight)
    }
}

impl FileConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, LoadError> {
        toml::from_str(text).map_err(|source| LoadError::Parse {
            path: origin.to_string(),
            source,
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Adds an instance given only by URL (from `--instance`) to the pool of `model`,
    /// creating the pool if needed.
    pub fn add_instance_url(&mut self, model: &str, url: &str) {
        let section = InstanceSection {
            id: None,
            url: url.to_string(),
            max_inflight: None,
            layout: Layout::SINGLE,
            gpu: None,
            price: None,
        };
        match self.pools.iter_mut().find(|p| p.model == model) {
            Some(p) => p.instances.push(section),
            None => self.pools.push(PoolSection {
                model: model.to_string(),
                max_inflight: default_max_inflight(),
                max_queue: default_max_queue(),
                queue_timeout: default_queue_timeout(),
                policy: None,
                routing: None,
                instances: vec![section],
            }),
        }
    }

    /// Checks every value and builds the typed configuration.
    pub fn validate(&self) -> Result<GatewayConfig, ConfigError> {
        let listen: SocketAddr = self.server.listen.parse().map_err(|e| {
            ConfigError::new(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080 ({e})",
                    self.server.listen
                ),
            )
        })?;
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::new(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.server.default_max_tokens == 0 {
            return Err(ConfigError::new(
                "server.default_max_tokens",
                "must be at least 1",
            ));
        }
        if let Some(t) = &self.admin.token
            && t.trim().is_empty()
        {
            return Err(ConfigError::new(
                "admin.token",
                "must not be empty; omit it instead",
            ));
        }
        positive("health.interval", self.health.interval)?;
        positive("health.timeout", self.health.timeout)?;
        at_least_one("health.unhealthy_after", self.health.unhealthy_after)?;
        at_least_one("health.healthy_after", self.health.healthy_after)?;
        at_least_one("circuit.failures_to_open", self.circuit.failures_to_open)?;
        at_least_one(
            "circuit.successes_to_close",
            self.circuit.successes_to_close,
        )?;
        positive("circuit.open_for", self.circuit.open_for)?;
        positive("scrape.interval", self.scrape.interval)?;
        positive("scrape.timeout", self.scrape.timeout)?;
        if self.scrape.stale_after < self.scrape.interval {
            return Err(ConfigError::new(
                "scrape.stale_after",
                "must be at least scrape.interval, or every reading would count as stale",
            ));
        }
        at_least_one("retry.max_attempts", self.retry.max_attempts)?;
        positive("timeouts.connect", self.timeouts.connect)?;
        positive("timeouts.first_byte", self.timeouts.first_byte)?;
        positive("timeouts.total", self.timeouts.total)?;

        let mut models = HashSet::new();
        let mut ids = HashSet::new();
        let mut pools = Vec::new();
        for (p, pool) in self.pools.iter().enumerate() {
            let at = |field: &str| format!("pools[{p}].{field}");
            if pool.model.trim().is_empty() {
                return Err(ConfigError::new(at("model"), "must not be empty"));
            }
            if !models.insert(pool.model.clone()) {
                return Err(ConfigError::new(
                    at("model"),
                    format!("model {:?} has two pools; merge them", pool.model),
                ));
            }
            at_least_one(&at("max_inflight"), pool.max_inflight)?;
            if pool.max_queue == 0 {
                return Err(ConfigError::new(at("max_queue"), "must be at least 1"));
            }
            positive(&at("queue_timeout"), pool.queue_timeout)?;
            let mut instances = Vec::new();
            for (i, inst) in pool.instances.iter().enumerate() {
                let at = |field: &str| format!("pools[{p}].instances[{i}].{field}");
                let spec = instance_spec(inst, &pool.model, pool.max_inflight)
                    .map_err(|(field, msg)| ConfigError::new(at(field), msg))?;
                if !ids.insert(spec.id.clone()) {
                    return Err(ConfigError::new(
                        at("id"),
                        format!("instance id {:?} is used twice", spec.id.as_str()),
                    ));
                }
                instances.push(spec);
            }
            pools.push(PoolConfig {
                model: pool.model.clone(),
                max_inflight: pool.max_inflight,
                scheduler: SchedulerConfig {
                    max_queue: pool.max_queue,
                    queue_timeout: Some(pool.queue_timeout),
                    policy: pool
                        .policy
                        .clone()
                        .unwrap_or_else(|| self.scheduler.policy.clone()),
                    routing: pool
                        .routing
                        .clone()
                        .unwrap_or_else(|| self.scheduler.routing.clone()),
                    seed: self.scheduler.seed,
                },
                instances,
            });
        }
        Ok(GatewayConfig {
            listen,
            max_body_bytes: self.server.max_body_bytes,
            shutdown_grace: self.server.shutdown_grace,
            default_max_tokens: self.server.default_max_tokens,
            default_priority: self.server.default_priority,
            admin_token: self.admin.token.clone(),
            health: self.health.clone(),
            circuit: self.circuit.clone(),
            scrape: self.scrape.clone(),
            retry: self.retry.clone(),
            timeouts: self.timeouts.clone(),
            scheduler: self.scheduler.clone(),
            pools,
        })
    }
}

/// Builds and checks an instance spec; errors name the field.
pub fn instance_spec(
    inst: &InstanceSection,
    model: &str,
    default_max_inflight: u32,
) -> Result<InstanceSpec, (&'static str, String)> {
    let url = check_url(&inst.url).map_err(|m| ("url", m))?;
    let id = match &inst.id {
        Some(id) if id.trim().is_empty() => return Err(("id", "must not be empty".into())),
        Some(id) => id.clone(),
        None => url.trim_start_matches("http://").to_string(),
    };
    let max_inflight = inst.max_inflight.unwrap_or(default_max_inflight);
    if max_inflight == 0 {
        return Err(("max_inflight", "must be at least 1".into()));
    }
    let l = inst.layout;
    if l.tp == 0 || l.pp == 0 || l.dp == 0 || l.ep == 0 {
        return Err(("layout", "tp, pp, dp and ep must each be at least 1".into()));
    }
    match inst.price {
        Some(Price::PerGpuHour(p)) if !(p.is_finite() && p >= 0.0) => {
            return Err(("price", "per_gpu_hour must be a non-negative number".into()));
        }
        Some(Price::PerMillionTokens { input, output })
            if !(input.is_finite() && output.is_finite() && input >= 0.0 && output >= 0.0) =>
        {
            return Err((
                "price",
                "per_million_tokens prices must be non-negative numbers".into(),
            ));
        }
        _ => {}
    }
    Ok(InstanceSpec {
        id: inferplane_core::InstanceId::new(id),
        url,
        model: model.to_string(),
        layout: l,
        gpu: inst.gpu.clone(),
        price: inst.price,
        max_inflight,
    })
}

/// Checks an engine base URL: `http://host:port` with nothing after the authority but an
/// optional trailing slash. Returns it without the slash.
pub fn check_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!("{url:?}: https to engines is not supported (engines are reached inside the cluster over plain http)")
        } else {
            format!("{url:?} must start with http://")
        }
    })?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains(' ') {
        return Err(format!(
            "{url:?} must be a base URL like http://10.0.0.5:8000, without a path"
        ));
    }
    Ok(format!("http://{authority}"))
}

fn positive(path: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError::new(path, "must be longer than zero"))
    } else {
        Ok(())
    }
}

fn at_least_one(path: &str, n: u32) -> Result<(), ConfigError> {
    if n == 0 {
        Err(ConfigError::new(path, "must be at least 1"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<GatewayConfig, String> {
        FileConfig::parse(text, "test.toml")
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_config_parses_with_durations_and_defaults() {
        let c = validate(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            [admin]
            token = "s3cret"
            [health]
            interval = "2s"
            [[pools]]
            model = "llama"
            max_inflight = 8
            queue_timeout = "1m"
            [[pools.instances]]
            url = "http://10.0.0.1:8000/"
            layout = { tp = 2 }
            price = { per_gpu_hour = 2.5 }
            [[pools.instances]]
            id = "b"
            url = "http://10.0.0.2:8000"
            max_inflight = 4
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.health.interval, Duration::from_secs(2));
        assert_eq!(c.health.timeout, Duration::from_secs(2), "default kept");
        let pool = &c.pools[0];
        assert_eq!(pool.scheduler.queue_timeout, Some(Duration::from_secs(60)));
        assert_eq!(pool.scheduler.policy, PolicyConfig::default());
        assert_eq!(pool.instances[0].id.as_str(), "10.0.0.1:8000");
        assert_eq!(pool.instances[0].url, "http://10.0.0.1:8000");
        assert_eq!(pool.instances[0].max_inflight, 8, "pool default");
        assert_eq!(pool.instances[0].layout.tp, 2);
        assert_eq!(pool.instances[1].max_inflight, 4);
    }

    #[test]
    fn scheduling_choices_come_from_the_section_or_the_pool() {
        let c = validate(
            r#"
            [scheduler]
            policy = { kind = "priority", aging_step = "2s" }
            routing = { kind = "load_balanced", algorithm = { kind = "power_of_two" } }
            seed = 9
            [[pools]]
            model = "a"
            [[pools]]
            model = "b"
            policy = { kind = "fifo" }
            routing = { kind = "affinity" }
            "#,
        )
        .unwrap();
        assert!(matches!(
            c.pools[0].scheduler.policy,
            PolicyConfig::Priority(_)
        ));
        assert_eq!(c.pools[0].scheduler.seed, 9);
        assert!(matches!(c.pools[1].scheduler.policy, PolicyConfig::Fifo(_)));
        assert!(matches!(
            c.pools[1].scheduler.routing,
            RoutingConfig::Affinity(_)
        ));
        assert!(matches!(
            c.scheduler_for("new").policy,
            PolicyConfig::Priority(_)
        ));
        let err = validate("[scheduler]\npolicy = { kind = \"fastest\" }").unwrap_err();
        assert!(err.contains("fastest"), "{err}");
    }

    #[test]
    fn errors_name_the_offending_path() {
        let cases = [
            (
                "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"ftp://x\"",
                "pools[0].instances[0].url",
            ),
            (
                "[[pools]]\nmodel = \"m\"\n[[pools]]\nmodel = \"n\"\n[[pools.instances]]\nurl = \"http://a:1\"\nmax_inflight = 0",
                "pools[1].instances[0].max_inflight",
            ),
            (
                "[[pools]]\nmodel = \"m\"\n[[pools]]\nmodel = \"m\"",
                "pools[1].model",
            ),
            (
                "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"http://a:1\"\n[[pools.instances]]\nurl = \"http://a:1\"",
                "pools[0].instances[1].id",
            ),
            ("[server]\nlisten = \"nowhere\"", "server.listen"),
            ("[health]\nunhealthy_after = 0", "health.unhealthy_after"),
            (
                "[scrape]\ninterval = \"5s\"\nstale_after = \"1s\"",
                "scrape.stale_after",
            ),
            (
                "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"http://a:1\"\nlayout = { tp = 0 }",
                "pools[0].instances[0].layout",
            ),
        ];
        for (text, path) in cases {
            let err = validate(text).unwrap_err();
            assert!(err.starts_with(path), "{text}\n -> {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_parse_errors() {
        let err = validate("[server]\nlisten_on = \"x\"").unwrap_err();
        assert!(err.contains("listen_on"), "{err}");
        let err = validate("[health]\ninterval = \"soon\"").unwrap_err();
        assert!(err.contains("interval") || err.contains("soon"), "{err}");
    }

    #[test]
    fn instance_urls_from_flags_join_or_create_pools() {
        let mut f = FileConfig::default();
        f.add_instance_url("m", "http://127.0.0.1:9001");
        f.add_instance_url("m", "http://127.0.0.1:9002");
        let c = f.validate().unwrap();
        assert_eq!(c.pools.len(), 1);
        assert_eq!(c.pools[0].instances.len(), 2);
        assert!(check_url("https://x:1").unwrap_err().contains("https"));
        assert!(check_url("http://x:1/v1").is_err());
    }
}
