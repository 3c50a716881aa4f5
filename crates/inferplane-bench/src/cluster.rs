//! Simulated clusters: the `cluster.toml` format, the policy choice, and the one function
//! that turns a choice into the core [`SchedulerConfig`].
//!
//! ```toml
//! [policy]                      # plain strings, the seed's snake_case names
//! policy = "fifo"               # fifo, priority, slo_aware, cost_optimized, adaptive
//! routing = "round_robin"       # load_balanced, round_robin, random, affinity, locality, prefix
//! prefix_mode = "approximate"   # with prefix: approximate, precise, oracle (crate::des_cache)
//! balance = "least_ttft"        # weighted_round_robin, least_connections,
//!                               # least_response_time, power_of_two
//!
//! [scheduler]
//! max_queue = 10000
//! queue_timeout = "30s"
//! kv_event_delay = "20ms"       # precise mode: engine step end -> the strategy
//!
//! [[instances]]
//! id = "h100"                   # prefix; `count` instances become h100-0, h100-1, ...
//! model = "llama-3.1-8b"        # planner catalogue model
//! gpu = "h100-sxm"              # planner catalogue GPU: the cost model gives the engine
//! layout = { tp = 1 }
//! count = 2
//! max_inflight = 64             # default: the engine's max_num_seqs
//! price_per_gpu_hour = 2.49
//! # profile = "tiny"            # a simulator preset instead of model + gpu
//! # kv_blocks = 4000            # override the engine's KV blocks (a small-KV cluster)
//! ```

use crate::des_cache::{DEFAULT_KV_EVENT_DELAY, PrefixMode};
use crate::error::BenchError;
use inferplane_core::{
    InstanceSpec, Layout, PolicyConfig, Price, QueueAt, RoutingConfig, SchedulerConfig,
};
use inferplane_sim::EngineProfile;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Scheduling policy names, from the core's own list.
pub fn policies() -> Vec<&'static str> {
    PolicyConfig::all().iter().map(PolicyConfig::name).collect()
}

/// Routing strategy names, from the core's own list.
pub fn routings() -> Vec<&'static str> {
    RoutingConfig::all()
        .iter()
        .map(RoutingConfig::name)
        .collect()
}

/// Balancing algorithm names, from the core's own list.
pub fn balances() -> Vec<&'static str> {
    inferplane_core::BalanceConfig::all()
        .iter()
        .map(inferplane_core::BalanceConfig::name)
        .collect()
}

/// Which scheduling policy, routing strategy and balancing algorithm a run uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyChoice {
    /// Scheduling policy name.
    pub policy: String,
    /// Routing strategy name.
    pub routing: String,
    /// Balancing algorithm name (used by `load_balanced`).
    pub balance: String,
    /// A plain router instead of the control plane (a baseline): round robin over ready
    /// instances, no gateway queue, every request sent at once so the engines queue.
    pub plain_router: bool,
    /// With `prefix` routing: what the strategy knows of the engines' caches.
    pub prefix_mode: PrefixMode,
}

/// The label (and `--policies` entry) of the plain-router baseline.
pub const PLAIN_ROUTER: &str = "plain_router";

impl Default for PolicyChoice {
    fn default() -> Self {
        PolicyChoice {
            policy: "fifo".into(),
            routing: "load_balanced".into(),
            balance: inferplane_core::BalanceConfig::default().name().into(),
            plain_router: false,
            prefix_mode: PrefixMode::Approximate,
        }
    }
}

impl PolicyChoice {
    /// Parses `policy[/routing[/balance]]`; omitted parts take the defaults. The routing
    /// words `prefix_precise` and `prefix_oracle` are `prefix` in those [`PrefixMode`]s.
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        if s.trim() == PLAIN_ROUTER {
            return Ok(PolicyChoice::plain());
        }
        let mut parts = s.split('/').map(str::trim);
        let d = PolicyChoice::default();
        let policy = parts.next().filter(|p| !p.is_empty()).unwrap_or(&d.policy);
        let (routing, prefix_mode) = PrefixMode::split_routing(parts.next().unwrap_or(&d.routing));
        let c = PolicyChoice {
            policy: policy.into(),
            routing: routing.into(),
            balance: parts.next().unwrap_or(&d.balance).into(),
            plain_router: false,
            prefix_mode,
        };
        if parts.next().is_some() {
            return Err(BenchError::Cluster(format!(
                "{s:?}: expected policy/routing/balance"
            )));
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks every name is one the seed defines.
    pub fn validate(&self) -> Result<(), BenchError> {
        let check = |what: &str, v: &str, known: &[&str]| {
            if known.contains(&v) {
                Ok(())
            } else {
                Err(BenchError::Cluster(format!(
                    "policy.{what} {v:?}: expected one of {}",
                    known.join(", ")
                )))
            }
        };
        check("policy", &self.policy, &policies())?;
        check("routing", &self.routing, &routings())?;
        if self.prefix_mode != PrefixMode::Approximate && self.routing != "prefix" {
            return Err(BenchError::Cluster(format!(
                "policy.prefix_mode {:?} needs routing \"prefix\", not {:?}",
                self.prefix_mode, self.routing
            )));
        }
        check("balance", &self.balance, &balances())
    }

    /// The plain-router baseline (see [`PolicyChoice::plain_router`]).
    pub fn plain() -> Self {
        PolicyChoice {
            policy: "fifo".into(),
            routing: "round_robin".into(),
            balance: "least_connections".into(),
            plain_router: true,
            prefix_mode: PrefixMode::Approximate,
        }
    }

    /// `policy/routing/balance` (routing `prefix_precise`, `prefix_oracle` in those
    /// modes), or `plain_router`.
    pub fn label(&self) -> String {
        if self.plain_router {
            return PLAIN_ROUTER.to_string();
        }
        let routing = if self.routing == "prefix" {
            self.prefix_mode.routing_word()
        } else {
            &self.routing
        };
        format!("{}/{routing}/{}", self.policy, self.balance)
    }
}

/// Pool limits of the simulated control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most queued requests per pool.
    pub max_queue: usize,
    /// Longest wait in the queue.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    /// Seed of the `random` strategy and `power_of_two`.
    pub seed: u64,
    /// How often engine load is read (the gateway's scrape interval).
    #[serde(with = "humantime_serde")]
    pub reading_interval: Duration,
    /// Precise prefix mode: from the end of an engine step to its cache changes reaching
    /// the routing strategy (see [`DEFAULT_KV_EVENT_DELAY`]).
    #[serde(with = "humantime_serde")]
    pub kv_event_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let d = SchedulerConfig::default();
        Limits {
            max_queue: d.max_queue,
            queue_timeout: d.queue_timeout,
            seed: d.seed,
            reading_interval: inferplane_core::load::DEFAULT_READING_INTERVAL,
            kv_event_delay: DEFAULT_KV_EVENT_DELAY,
        }
    }
}

/// The scheduler configuration for a policy choice: the ONE place where a choice becomes
/// a `SchedulerConfig`, for the simulation and the live comparison alike. Names are read
/// through the core configs' own serde tags (the same snake_case words as the gateway's
/// config and `/admin/policy`), each with its defaults; `balance` applies when routing is
/// `load_balanced`.
pub fn scheduler_config(
    choice: &PolicyChoice,
    limits: &Limits,
) -> Result<SchedulerConfig, BenchError> {
    let bad = |what: &str, e: serde_json::Error| BenchError::Cluster(format!("policy.{what}: {e}"));
    let policy: PolicyConfig = serde_json::from_value(serde_json::json!({ "kind": choice.policy }))
        .map_err(|e| bad("policy", e))?;
    let routing: RoutingConfig = if choice.routing == "load_balanced" {
        serde_json::from_value(serde_json::json!({
            "kind": "load_balanced",
            "algorithm": { "kind": choice.balance },
        }))
    } else {
        serde_json::from_value(serde_json::json!({ "kind": choice.routing }))
    }
    .map_err(|e| bad("routing", e))?;
    Ok(SchedulerConfig {
        max_queue: limits.max_queue,
        queue_timeout: limits.queue_timeout,
        policy,
        routing,
        seed: limits.seed,
        queue_at: if choice.plain_router {
            QueueAt::Engine
        } else {
            QueueAt::Gateway
        },
        ..SchedulerConfig::default()
    })
}

/// A group of identical instances in `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGroup {
    /// Id, or id prefix when `count > 1`; defaults to `model@gpu` names.
    #[serde(default)]
    pub id: Option<String>,
    /// Model name (a planner catalogue name unless `profile` is given).
    pub model: String,
    /// GPU (planner catalogue name).
    #[serde(default)]
    pub gpu: Option<String>,
    /// Parallelism layout.
    #[serde(default)]
    pub layout: Layout,
    /// A simulator preset instead of the planner's cost model.
    #[serde(default)]
    pub profile: Option<String>,
    /// How many identical instances.
    #[serde(default = "one")]
    pub count: u32,
    /// The control plane's in-flight limit; default the engine's `max_num_seqs`.
    #[serde(default)]
    pub max_inflight: Option<u32>,
    /// Price in dollars per GPU-hour.
    #[serde(default)]
    pub price_per_gpu_hour: Option<f64>,
    /// KV-cache blocks of each engine, overriding its profile's (a small-KV cluster puts
    /// the prefix caches under pressure).
    #[serde(default)]
    pub kv_blocks: Option<u32>,
}

fn one() -> u32 {
    1
}

/// `cluster.toml` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Policy choice.
    #[serde(default)]
    pub policy: PolicyChoice,
    /// Pool limits.
    #[serde(default)]
    pub scheduler: Limits,
    /// Instance groups.
    pub instances: Vec<InstanceGroup>,
}

/// One simulated instance: what the scheduler sees and how its engine behaves.
#[derive(Debug, Clone)]
pub struct SimInstance {
    /// The scheduler's view.
    pub spec: InstanceSpec,
    /// The engine's step-time model and limits.
    pub profile: EngineProfile,
}

/// A resolved cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Policy choice.
    pub policy: PolicyChoice,
    /// Pool limits.
    pub limits: Limits,
    /// Instances, in file order.
    pub instances: Vec<SimInstance>,
}

impl Cluster {
    /// Reads and resolves a `cluster.toml`.
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        let file: ClusterFile = toml::from_str(&text).map_err(|source| BenchError::Toml {
            path: path.to_path_buf(),
            source,
        })?;
        Cluster::resolve(file)
    }

    /// Resolves a parsed file: builds every engine profile, names every instance.
    pub fn resolve(file: ClusterFile) -> Result<Self, BenchError> {
        file.policy.validate()?;
        if file.instances.is_empty() {
            return Err(BenchError::Cluster(
                "instances: at least one is needed".into(),
            ));
        }
        let mut instances = Vec::new();
        for (g, group) in file.instances.iter().enumerate() {
            let path = format!("instances[{g}]");
            let prefix = group.id.clone().unwrap_or_else(|| {
                format!("{}@{}", group.model, group.gpu.as_deref().unwrap_or("sim"))
            });
            let profile = match (&group.profile, &group.gpu) {
                (Some(p), _) => EngineProfile::preset(p)
                    .map_err(|e| BenchError::Cluster(format!("{path}.profile: {e}")))?,
                (None, Some(gpu)) => EngineProfile::from_planner(
                    &group.model,
                    gpu,
                    group.layout,
                    &inferplane_planner::EngineOptions::default(),
                )
                .map_err(|source| BenchError::Profile {
                    instance: prefix.clone(),
                    source,
                })?,
                (None, None) => {
                    return Err(BenchError::Cluster(format!(
                        "{path}: give a gpu (planner cost model) or a profile (preset)"
                    )));
                }
            };
            let mut profile = profile;
            if let Some(b) = group.kv_blocks {
                profile.kv_blocks = b;
            }
            if group.max_inflight == Some(0) || group.count == 0 || group.kv_blocks == Some(0) {
                return Err(BenchError::Cluster(format!(
                    "{path}: count, max_inflight and kv_blocks must be at least 1"
                )));
            }
            for k in 0..group.count {
                let id = if group.count == 1 {
                    prefix.clone()
                } else {
                    format!("{prefix}-{k}")
                };
                let mut spec = InstanceSpec::new(&id, format!("sim://{id}"), &group.model, 1);
                spec.max_inflight = group.max_inflight;
                spec.layout = group.layout;
                spec.gpu = group.gpu.clone();
                spec.price = group.price_per_gpu_hour.map(Price::PerGpuHour);
                instances.push(SimInstance {
                    spec,
                    profile: profile.clone(),
                });
            }
        }
        let mut ids: Vec<_> = instances.iter().map(|i| i.spec.id.clone()).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(BenchError::Cluster(format!(
                "instance id {} is used twice",
                w[0]
            )));
        }
        Ok(Cluster {
            policy: file.policy,
            limits: file.scheduler,
            instances,
        })
    }

    /// Number of instances.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Estimated saturated throughput of the whole cluster, requests per second, for
    /// requests of the given mean sizes: per instance, a full batch (in-flight limit,
    /// `max_num_seqs` and KV capacity permitting) decodes one token per sequence per step,
    /// and every prompt token costs its prefill time. Ignores prefix-cache hits.
    pub fn capacity_rps(&self, mean_prompt: f64, mean_output: f64) -> Result<f64, BenchError> {
        Ok(self
            .instance_capacity_rps(mean_prompt, mean_output)?
            .iter()
            .sum())
    }

    /// Each instance's part of [`Cluster::capacity_rps`], in instance order: its fair
    /// share of the load is its part of the sum.
    pub fn instance_capacity_rps(
        &self,
        mean_prompt: f64,
        mean_output: f64,
    ) -> Result<Vec<f64>, BenchError> {
        if !(mean_prompt >= 1.0 && mean_output >= 1.0) {
            return Err(BenchError::Workload(
                "empty workload: no sizes to plan for".into(),
            ));
        }
        let mut out = Vec::with_capacity(self.instances.len());
        for i in &self.instances {
            let p = &i.profile;
            let kv_batch = p.kv_capacity_tokens() as f64 / (mean_prompt + mean_output);
            let cap = i.spec.max_inflight.unwrap_or(p.max_num_seqs);
            let b = f64::from(cap.min(p.max_num_seqs)).min(kv_batch).max(1.0);
            let ctx = b * (mean_prompt + mean_output / 2.0);
            let step = p.decode_step_base_secs
                + b * p.decode_secs_per_seq
                + ctx * p.decode_secs_per_kv_token;
            let per_request = mean_output * step / b + mean_prompt * p.prefill_secs_per_token;
            out.push(1.0 / per_request.max(1e-12));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
