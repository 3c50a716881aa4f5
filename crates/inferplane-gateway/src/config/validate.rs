//! Validation of a parsed configuration file into the typed [`GatewayConfig`]; every error
//! names the offending path (`pools[1].instances[0].url`).

use super::{ConfigError, FileConfig, GatewayConfig, InstanceSection, PoolConfig};
use inferplane_core::{EngineInfo, InstanceSpec, Price, SchedulerConfig};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

impl FileConfig {
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
        at_least_one(
            "circuit.half_open_requests",
            self.circuit.half_open_requests,
        )?;
        if self.circuit.max_open_for < self.circuit.open_for {
            return Err(ConfigError::new(
                "circuit.max_open_for",
                "must be at least circuit.open_for",
            ));
        }
        positive("scrape.interval", self.scrape.interval)?;
        positive("scrape.timeout", self.scrape.timeout)?;
        if self.scrape.stale_after < self.scrape.interval {
            return Err(ConfigError::new(
                "scrape.stale_after",
                "must be at least scrape.interval, or every reading would count as stale",
            ));
        }
        at_least_one("retry.max_attempts", self.retry.max_attempts)?;
        positive(
            "server.header_read_timeout",
            self.server.header_read_timeout,
        )?;
        positive("server.body_read_timeout", self.server.body_read_timeout)?;
        if self.server.max_connections == Some(0) {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        positive("timeouts.connect", self.timeouts.connect)?;
        positive("timeouts.first_byte", self.timeouts.first_byte)?;
        positive("timeouts.idle", self.timeouts.idle)?;
        positive("timeouts.total", self.timeouts.total)?;
        self.scheduler.validate()?;
        let kubernetes = self
            .discovery
            .kubernetes
            .as_ref()
            .map(super::KubernetesSection::validate)
            .transpose()?;

        let mut models = HashSet::new();
        let mut ids = HashSet::new();
        let mut api_keys = std::collections::HashMap::new();
        let mut engine_overrides = std::collections::HashMap::new();
        let mut kv_events = std::collections::HashMap::new();
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
            if let Some(m) = pool.max_inflight {
                at_least_one(&at("max_inflight"), m)?;
            }
            if pool.max_queue == 0 {
                return Err(ConfigError::new(at("max_queue"), "must be at least 1"));
            }
            positive(&at("queue_timeout"), pool.queue_timeout)?;
            let pool_engine = limits(pool.max_model_len, pool.max_batch)
                .map_err(|(field, msg)| ConfigError::new(at(field), msg))?;
            let mut instances = Vec::new();
            for (i, inst) in pool.instances.iter().enumerate() {
                let at = |field: &str| format!("pools[{p}].instances[{i}].{field}");
                if let Some(key) = inst.api_key.as_ref().or(pool.api_key.as_ref()) {
                    let secret = super::Secret::resolve(key).map_err(|m| {
                        let field = if inst.api_key.is_some() {
                            format!("pools[{p}].instances[{i}].api_key")
                        } else {
                            format!("pools[{p}].api_key")
                        };
                        ConfigError::new(field, m.to_string())
                    })?;
                    let id = instance_spec(inst, &pool.model, pool.max_inflight)
                        .map(|s| s.id)
                        .map_err(|(field, msg)| ConfigError::new(at(field), msg))?;
                    api_keys.insert(id, secret);
                }
                let spec = instance_spec(inst, &pool.model, pool.max_inflight)
                    .map_err(|(field, msg)| ConfigError::new(at(field), msg))?;
                if !ids.insert(spec.id.clone()) {
                    return Err(ConfigError::new(
                        at("id"),
                        format!("instance id {:?} is used twice", spec.id.as_str()),
                    ));
                }
                let engine = engine_override(inst)
                    .map_err(|(field, msg)| ConfigError::new(at(field), msg))?;
                if engine != EngineInfo::default() {
                    engine_overrides.insert(spec.id.clone(), engine);
                }
                if let Some(kv) =
                    kv_events_of(inst).map_err(|(field, msg)| ConfigError::new(at(field), msg))?
                {
                    kv_events.insert(spec.id.clone(), kv);
                }
                instances.push(spec);
            }
            let policy = pool
                .policy
                .clone()
                .unwrap_or_else(|| self.scheduler.policy.clone());
            let routing = pool
                .routing
                .clone()
                .unwrap_or_else(|| self.scheduler.routing.clone());
            let at = |what: &str, e: inferplane_core::settings::InvalidSetting| {
                ConfigError::new(format!("pools[{p}].{what}"), e.to_string())
            };
            for (what, t) in [
                ("timeouts.first_byte", pool.timeouts.first_byte),
                ("timeouts.idle", pool.timeouts.idle),
                ("timeouts.total", pool.timeouts.total),
            ] {
                if let Some(t) = t {
                    positive(&format!("pools[{p}].{what}"), t)?;
                }
            }
            inferplane_core::settings::check_policy(&policy).map_err(|e| at("policy", e))?;
            inferplane_core::settings::check_routing(&routing).map_err(|e| at("routing", e))?;
            let tokenizer = load_tokenizer(p, pool)?;
            pools.push(PoolConfig {
                model: pool.model.clone(),
                max_inflight: pool.max_inflight,
                scheduler: SchedulerConfig {
                    max_queue: pool.max_queue,
                    queue_timeout: Some(pool.queue_timeout),
                    policy,
                    routing,
                    seed: self.scheduler.seed,
                    queue_at: inferplane_core::QueueAt::Gateway,
                    saturation: self.scheduler.saturation.clone(),
                    overload: self.scheduler.overload.clone(),
                    look_ahead: self.scheduler.look_ahead,
                    tenant_headroom: self.scheduler.tenant_headroom,
                },
                engine: pool_engine,
                timeouts: pool.timeouts.over(&self.timeouts),
                tokenizer,
                instances,
            });
        }
        let models: Vec<String> = pools.iter().map(|p| p.model.clone()).collect();
        let tenants = super::validate_tenants(&self.tenants, &models)?;
        Ok(GatewayConfig {
            listen,
            max_body_bytes: self.server.max_body_bytes,
            shutdown_grace: self.server.shutdown_grace,
            shutdown_delay: self.server.shutdown_delay,
            client: crate::listener::ClientLimits {
                header_read_timeout: self.server.header_read_timeout,
                body_read_timeout: self.server.body_read_timeout,
                max_connections: self
                    .server
                    .max_connections
                    .unwrap_or_else(crate::listener::default_max_connections),
            },
            default_max_tokens: self.server.default_max_tokens,
            default_priority: self.server.default_priority,
            admin_token: self.admin.token.clone(),
            tenants,
            health: self.health.clone(),
            circuit: self.circuit.clone(),
            scrape: self.scrape.clone(),
            retry: self.retry.clone(),
            timeouts: self.timeouts.clone(),
            scheduler: self.scheduler.clone(),
            api_keys,
            engine_overrides,
            kv_events,
            shared: self.shared.validate()?,
            pools,
            kubernetes,
        })
    }
}

/// Builds and checks an instance spec; errors name the field.
pub fn instance_spec(
    inst: &InstanceSection,
    model: &str,
    default_max_inflight: Option<u32>,
) -> Result<InstanceSpec, (&'static str, String)> {
    let url = check_url(&inst.url).map_err(|e| ("url", e.to_string()))?;
    let id = match &inst.id {
        Some(id) if id.trim().is_empty() => return Err(("id", "must not be empty".into())),
        Some(id) => id.clone(),
        None => url.trim_start_matches("http://").to_string(),
    };
    let max_inflight = inst.max_inflight.or(default_max_inflight);
    if max_inflight == Some(0) {
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

/// An instance section's `kv_events`, checked: both endpoints `tcp://host:port`
/// (errors name the field, e.g. `kv_events.replay_endpoint`).
pub fn kv_events_of(
    inst: &InstanceSection,
) -> Result<Option<super::KvEventsSection>, (&'static str, String)> {
    let Some(kv) = &inst.kv_events else {
        return Ok(None);
    };
    check_tcp(&kv.endpoint).map_err(|m| ("kv_events.endpoint", m))?;
    if let Some(replay) = &kv.replay_endpoint {
        check_tcp(replay).map_err(|m| ("kv_events.replay_endpoint", m))?;
        if *replay == kv.endpoint {
            return Err((
                "kv_events.replay_endpoint",
                "must differ from kv_events.endpoint (two tcp:// sockets)".into(),
            ));
        }
    }
    Ok(Some(kv.clone()))
}

/// `tcp://host:port` with a host and a numeric port (no `*`: the engine's address).
fn check_tcp(endpoint: &str) -> Result<(), String> {
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return Err(format!(
            "{endpoint:?} must start with tcp:// (only TCP endpoints are supported)"
        ));
    };
    let ok = rest.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host != "*"
            && !host.contains(['/', ' ', '@'])
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{endpoint:?} must be tcp://host:port with the engine's address and a port"
        ))
    }
}

/// The engine facts an instance section configures (`max_model_len`, `max_batch`); errors
/// name the field.
pub fn engine_override(inst: &InstanceSection) -> Result<EngineInfo, (&'static str, String)> {
    limits(inst.max_model_len, inst.max_batch)
}

fn limits(
    max_model_len: Option<u32>,
    max_batch: Option<u32>,
) -> Result<EngineInfo, (&'static str, String)> {
    if max_model_len == Some(0) {
        return Err((
            "max_model_len",
            "must be at least 1; omit it to use what the engine reports".into(),
        ));
    }
    if max_batch == Some(0) {
        return Err((
            "max_batch",
            "must be at least 1; omit it to use what the engine reports".into(),
        ));
    }
    Ok(EngineInfo {
        max_batch,
        max_model_len,
        kv_capacity_tokens: None,
    })
}

/// Why an engine URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// `https://`: engines are reached over plain http inside the cluster.
    #[error(
        "{0:?}: https to engines is not supported (engines are reached inside the cluster over plain http)"
    )]
    Https(String),
    /// Not `http://`.
    #[error("{0:?} must start with http://")]
    NotHttp(String),
    /// A path, a space or nothing after the scheme.
    #[error("{0:?} must be a base URL like http://10.0.0.5:8000, without a path")]
    NotBase(String),
    /// `user:password@host`: the credentials would show in headers, logs and errors. The
    /// URL itself is not repeated, so the secret is not either.
    #[error(
        "an engine URL must not carry credentials (user:password@host); give the engine's key as `api_key`"
    )]
    Credentials,
}

/// Checks an engine base URL (`http://host:port`, no path, no credentials) and returns it
/// without a trailing slash.
pub fn check_url(url: &str) -> Result<String, UrlError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            UrlError::Https(url.to_string())
        } else if url.contains('@') {
            UrlError::Credentials
        } else {
            UrlError::NotHttp(url.to_string())
        }
    })?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('@') {
        return Err(UrlError::Credentials);
    }
    if authority.is_empty() || authority.contains('/') || authority.contains(' ') {
        return Err(UrlError::NotBase(url.to_string()));
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

/// Loads pool `p`'s tokenizer and chat template; the error names the pool and the file.
fn load_tokenizer(
    p: usize,
    pool: &super::PoolSection,
) -> Result<Option<std::sync::Arc<inferplane_tokenize::PromptTokenizer>>, ConfigError> {
    let Some(path) = &pool.tokenizer else {
        if pool.chat_template.is_some() {
            return Err(ConfigError::new(
                format!("pools[{p}].chat_template"),
                format!("pool {:?}: a chat template needs a tokenizer", pool.model),
            ));
        }
        return Ok(None);
    };
    inferplane_tokenize::PromptTokenizer::load(path, pool.chat_template.as_deref())
        .map(|t| Some(std::sync::Arc::new(t)))
        .map_err(|e| {
            let what = match e {
                inferplane_tokenize::LoadError::Tokenizer { .. } => "tokenizer",
                _ => "chat_template",
            };
            let message = format!(
                "pool {:?}: {}",
                pool.model,
                inferplane_tokenize::ErrorChain(&e)
            );
            ConfigError::new(format!("pools[{p}].{what}"), message)
        })
}
