//! Gateway configuration: the TOML file's shape (`FileConfig`, parsed with
//! `deny_unknown_fields` and humantime durations), and its validation into the typed
//! [`GatewayConfig`], whose errors name the offending path (`pools[1].instances[0].url`).
//!
//! Flags and `INFERPLANE_*` variables are applied by the binary on top of the file
//! (see `inferplane serve --help`) before validation, which lives in `validate.rs`.

mod discovery;
mod secret;
mod sections;
mod shared;
mod tenants;
mod validate;
pub use discovery::{
    DEFAULT_MODEL_LABEL, DEFAULT_PORT, DiscoverySection, KubernetesDiscovery, KubernetesSection,
    PortRef, Target,
};
pub use secret::Secret;
pub use sections::{
    AdminSection, CircuitSection, HealthSection, KvEventsSection, PoolTimeouts, RetrySection,
    ScrapeSection, ServerSection, TimeoutSection,
};
pub use shared::SharedSection;
pub use tenants::{
    BudgetPeriod, TenantConfig, TenantLimits, TenantSection, check_tenant_id, validate_tenants,
};
pub use validate::{UrlError, check_url, engine_override, instance_spec, kv_events_of};

use inferplane_core::{
    EngineInfo, InstanceSpec, Layout, OverloadConfig, PolicyConfig, Price, Priority, RoutingConfig,
    SaturationConfig, SchedulerConfig,
};
use serde::{Deserialize, Serialize};
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

/// `[scheduler]`: the scheduling policy and routing strategy of every pool that does not
/// choose its own, and the admission and overload rules of all pools. TOML:
/// `policy = { kind = "slo_aware" }`,
/// `routing = { kind = "load_balanced", algorithm = { kind = "power_of_two" } }`,
/// `overload = { wait = { critical = "2s", high = "4s", normal = "12s", low = "32s" } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Which queued request goes next (default `adaptive`).
    pub policy: PolicyConfig,
    /// Which instance serves it (default `load_balanced` with `least_ttft`).
    pub routing: RoutingConfig,
    /// Seed of the `random` strategy and `power_of_two`.
    pub seed: u64,
    /// When an instance has room: `default_limit` (in-flight limit of an instance with no
    /// `max_inflight` whose engine did not say its batch limit), `kv_full` (KV usage at
    /// which an engine with waiting requests is full), `deadlines` and `protect` (whether
    /// requests of class `protect` and above with end-to-end deadlines hold batches down
    /// for themselves).
    pub saturation: SaturationConfig,
    /// Class-aware overload control: each class's queue-wait target (`wait`) and whether
    /// to shed by predicted wait (`shed`).
    pub overload: OverloadConfig,
    /// How many queued requests one dispatch may pass over when the head cannot be placed.
    pub look_ahead: usize,
    /// What a tenant above its fair share leaves free for tenants active in the last 10 s:
    /// `peak` (default: their recent peak in flight + 1), `wide` (+ its square root too),
    /// `off`.
    pub tenant_headroom: inferplane_core::schedule::headroom::TenantHeadroom,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        let d = SchedulerConfig::default();
        SchedulerSection {
            policy: d.policy,
            routing: d.routing,
            seed: d.seed,
            saturation: d.saturation,
            overload: d.overload,
            look_ahead: d.look_ahead,
            tenant_headroom: d.tenant_headroom,
        }
    }
}

impl SchedulerSection {
    /// Checks the admission and overload settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.saturation.default_limit == 0 {
            return Err(ConfigError::new(
                "scheduler.saturation.default_limit",
                "must be at least 1",
            ));
        }
        if !(self.saturation.kv_full > 0.0 && self.saturation.kv_full <= 1.0) {
            return Err(ConfigError::new(
                "scheduler.saturation.kv_full",
                "must be within (0, 1]",
            ));
        }
        for p in inferplane_core::Priority::ALL {
            if self.overload.wait.get(p).is_zero() {
                return Err(ConfigError::new(
                    format!("scheduler.overload.wait.{}", p.as_str()),
                    "must be longer than zero",
                ));
            }
        }
        Ok(())
    }
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
    /// The most requests sent at once, an upper bound (below it the engine's own
    /// saturation decides); defaults to the pool's `max_inflight`, else the engine's batch
    /// limit where known.
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
    /// Bearer token the engine requires (`vllm serve --api-key`), or `env:NAME` to read
    /// it from an environment variable; defaults to the pool's `api_key`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Longest context (prompt plus output) the engine accepts, in tokens; wins over what
    /// the engine reports and over the pool's value.
    #[serde(default)]
    pub max_model_len: Option<u32>,
    /// Most requests the engine runs at once (its `max_num_seqs`); wins over what the
    /// engine reports and over the pool's value.
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// Where the engine publishes its KV cache events (vLLM's `--kv-events-config`), for
    /// the `prefix` routing strategy's precise mode; none: placements only.
    #[serde(default)]
    pub kv_events: Option<KvEventsSection>,
}

/// One `[[pools]]` entry: the instances serving one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// The model name clients ask for.
    pub model: String,
    /// Default per-instance in-flight cap (none: each engine's own batch limit and
    /// saturation decide).
    #[serde(default)]
    pub max_inflight: Option<u32>,
    /// Most requests waiting in the gateway's queue for this model.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Longest a request may wait in the queue.
    #[serde(default = "default_queue_timeout", with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Bearer token of this pool's engines, or `env:NAME` (an instance's own wins).
    #[serde(default)]
    pub api_key: Option<String>,
    /// This pool's scheduling policy (default: `[scheduler] policy`).
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// This pool's routing strategy (default: `[scheduler] routing`).
    #[serde(default)]
    pub routing: Option<RoutingConfig>,
    /// Context length of every instance that does not set its own; wins over what the
    /// engines report.
    #[serde(default)]
    pub max_model_len: Option<u32>,
    /// Batch limit of every instance that does not set its own; wins over what the engines
    /// report.
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// This pool's own attempt timeouts (default: `[timeouts]`).
    #[serde(default)]
    pub timeouts: PoolTimeouts,
    /// The model's Hugging Face `tokenizer.json` (a path, relative to the working
    /// directory): prompts are tokenized with it for block hashes and prompt counts
    /// (none: the stand-in, 4 bytes per token).
    #[serde(default)]
    pub tokenizer: Option<std::path::PathBuf>,
    /// The chat template (Jinja text, or a JSON file with a `chat_template` field); by
    /// default the `tokenizer_config.json` beside `tokenizer`.
    #[serde(default)]
    pub chat_template: Option<std::path::PathBuf>,
    /// The instances.
    #[serde(default)]
    pub instances: Vec<InstanceSection>,
}

impl PoolSection {
    /// A pool of `model` with every default and no instances.
    pub fn new(model: &str) -> Self {
        PoolSection {
            model: model.to_string(),
            max_inflight: None,
            max_queue: default_max_queue(),
            queue_timeout: default_queue_timeout(),
            api_key: None,
            policy: None,
            routing: None,
            max_model_len: None,
            max_batch: None,
            timeouts: PoolTimeouts::default(),
            tokenizer: None,
            chat_template: None,
            instances: Vec::new(),
        }
    }
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
    /// `[shared]`.
    #[serde(default)]
    pub shared: SharedSection,
    /// `[[pools]]`.
    #[serde(default)]
    pub pools: Vec<PoolSection>,
    /// `[[tenants]]`: API keys, per-tenant priorities, models and fair-share weights.
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
    /// `[discovery]`: instances from the Kubernetes API.
    #[serde(default)]
    pub discovery: DiscoverySection,
}

/// A validated pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Model name.
    pub model: String,
    /// Default per-instance in-flight cap for instances added later.
    pub max_inflight: Option<u32>,
    /// Queue limit, queue timeout, policy, routing and seed.
    pub scheduler: SchedulerConfig,
    /// Engine facts configured for every instance of the pool (an instance's own win).
    pub engine: EngineInfo,
    /// Attempt timeouts (`[timeouts]` with the pool's own over it).
    pub timeouts: TimeoutSection,
    /// The model's tokenizer and chat template, loaded at validation (none: the stand-in).
    pub tokenizer: Option<std::sync::Arc<inferplane_tokenize::PromptTokenizer>>,
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
    /// After SIGTERM: how long to keep serving with `/ready` failing before draining.
    pub shutdown_delay: Duration,
    /// Limits on client connections and request reads.
    pub client: crate::listener::ClientLimits,
    /// Assumed output tokens when a request gives none.
    pub default_max_tokens: u32,
    /// Priority of requests without `x-priority`.
    pub default_priority: Priority,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// Tenants (`[[tenants]]`), in file order: a tenant's index is its core `TenantId`.
    pub tenants: Vec<TenantConfig>,
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
    /// API keys of the engines that need one, by instance.
    pub api_keys: std::collections::HashMap<inferplane_core::InstanceId, Secret>,
    /// Engine facts configured per instance (`max_model_len`, `max_batch`); they win over
    /// the pool's and over what the engine reports.
    pub engine_overrides: std::collections::HashMap<inferplane_core::InstanceId, EngineInfo>,
    /// Where each instance that publishes KV cache events publishes them.
    pub kv_events: std::collections::HashMap<inferplane_core::InstanceId, KvEventsSection>,
    /// The state shared with other gateway replicas (`None`: this replica alone).
    pub shared: Option<crate::shared::SharedSettings>,
    /// Pools by model.
    pub pools: Vec<PoolConfig>,
    /// `[discovery.kubernetes]`, checked: instances discovered from the Kubernetes API.
    pub kubernetes: Option<KubernetesDiscovery>,
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
                queue_at: inferplane_core::QueueAt::Gateway,
                saturation: self.scheduler.saturation.clone(),
                overload: self.scheduler.overload.clone(),
                look_ahead: self.scheduler.look_ahead,
                tenant_headroom: self.scheduler.tenant_headroom,
            },
        }
    }

    /// The engine facts configured for `model`'s pool (unknown for a model no pool serves).
    pub fn engine_for(&self, model: &str) -> EngineInfo {
        self.pools
            .iter()
            .find(|p| p.model == model)
            .map(|p| p.engine)
            .unwrap_or_default()
    }

    /// The attempt timeouts of `model`'s pool (`[timeouts]` for a model no pool serves).
    pub fn timeouts_for(&self, model: &str) -> &TimeoutSection {
        self.pools
            .iter()
            .find(|p| p.model == model)
            .map_or(&self.timeouts, |p| &p.timeouts)
    }

    /// The tokenizer of `model`'s pool (none: the stand-in).
    pub fn tokenizer_for(&self, model: &str) -> Option<&inferplane_tokenize::PromptTokenizer> {
        self.pools
            .iter()
            .find(|p| p.model == model)
            .and_then(|p| p.tokenizer.as_deref())
    }

    /// The default in-flight cap for a new instance of `model` (none: the engine's own).
    pub fn max_inflight_for(&self, model: &str) -> Option<u32> {
        self.pools
            .iter()
            .find(|p| p.model == model)
            .and_then(|p| p.max_inflight)
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
            api_key: None,
            max_model_len: None,
            max_batch: None,
            kv_events: None,
        };
        match self.pools.iter_mut().find(|p| p.model == model) {
            Some(p) => p.instances.push(section),
            None => self.pools.push(PoolSection {
                instances: vec![section],
                ..PoolSection::new(model)
            }),
        }
    }
}

#[cfg(test)]
mod tests;
