//! `ControlPlaneBuilder`: the library way to configure and start a [`ControlPlane`] with
//! its policy choices, pools and instances, without a TOML file.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use inferplane_core::{InstanceSpec, PolicyConfig};
//! use inferplane_gateway::ControlPlane;
//! let cp = ControlPlane::builder()
//!     .policy(PolicyConfig::Priority(Default::default()))
//!     .instance(InstanceSpec::new("a", "http://127.0.0.1:8000", "llama-3.1-8b", 32))
//!     .start()?;
//! # Ok(()) }
//! ```

use crate::config::{ConfigError, FileConfig, PoolSection, Secret};
use crate::control_plane::{ControlPlane, StartError};
use inferplane_core::{InstanceSpec, PolicyConfig, RoutingConfig};
use std::time::Duration;

/// Why a control plane could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// It could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Two instances share an id.
    #[error("instance {0} is given twice")]
    DuplicateInstance(String),
}

/// Configures a [`ControlPlane`]. Start from [`ControlPlane::builder`].
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneBuilder {
    file: FileConfig,
    instances: Vec<InstanceSpec>,
    api_keys: Vec<(inferplane_core::InstanceId, Secret)>,
}

impl ControlPlane {
    /// A builder with the defaults of an empty configuration file: adaptive policy,
    /// load-balanced routing with least connections, active health checks.
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }
}

impl ControlPlaneBuilder {
    /// The scheduling policy of every pool that does not set its own.
    pub fn policy(mut self, policy: PolicyConfig) -> Self {
        self.file.scheduler.policy = policy;
        self
    }

    /// The routing strategy of every pool that does not set its own.
    pub fn routing(mut self, routing: RoutingConfig) -> Self {
        self.file.scheduler.routing = routing;
        self
    }

    /// Seed of the random strategy and power-of-two choices.
    pub fn seed(mut self, seed: u64) -> Self {
        self.file.scheduler.seed = seed;
        self
    }

    /// A pool for `model` with its own queue limits (and, optionally, policy).
    pub fn pool(
        mut self,
        model: &str,
        max_queue: usize,
        queue_timeout: Duration,
        policy: Option<PolicyConfig>,
    ) -> Self {
        let mut section: PoolSection = match self.file.pools.iter().position(|p| p.model == model) {
            Some(i) => self.file.pools.remove(i),
            None => PoolSection::new(model),
        };
        section.max_queue = max_queue;
        section.queue_timeout = queue_timeout;
        section.policy = policy;
        self.file.pools.push(section);
        self
    }

    /// An instance, in the pool of its model (created with defaults if needed).
    pub fn instance(mut self, spec: InstanceSpec) -> Self {
        self.instances.push(spec);
        self
    }

    /// An instance whose engine requires a bearer token (`vllm serve --api-key`).
    pub fn instance_with_api_key(mut self, spec: InstanceSpec, api_key: Secret) -> Self {
        self.api_keys.push((spec.id.clone(), api_key));
        self.instances.push(spec);
        self
    }

    /// Turns active health checks on or off; off, report health with
    /// [`ControlPlane::report_health`].
    pub fn health_checks(mut self, active: bool) -> Self {
        self.file.health.active = active;
        self
    }

    /// Turns scraping engines' `/metrics` on or off.
    pub fn scrape_engines(mut self, active: bool) -> Self {
        self.file.scrape.active = active;
        self
    }

    /// Any other setting, on the file-shaped configuration.
    pub fn configure(mut self, f: impl FnOnce(&mut FileConfig)) -> Self {
        f(&mut self.file);
        self
    }

    /// Validates everything and starts the dispatcher (inside a tokio runtime).
    pub fn start(mut self) -> Result<ControlPlane, BuildError> {
        for spec in &self.instances {
            if !self.file.pools.iter().any(|p| p.model == spec.model) {
                self.file.pools.push(PoolSection {
                    max_inflight: spec.max_inflight,
                    ..PoolSection::new(&spec.model)
                });
            }
        }
        let mut config = self.file.validate()?;
        let mut seen: Vec<&str> = config
            .pools
            .iter()
            .flat_map(|p| p.instances.iter().map(|i| i.id.as_str()))
            .collect();
        for spec in &self.instances {
            if seen.contains(&spec.id.as_str()) {
                return Err(BuildError::DuplicateInstance(spec.id.to_string()));
            }
            seen.push(spec.id.as_str());
        }
        for spec in self.instances {
            if let Some(pool) = config.pools.iter_mut().find(|p| p.model == spec.model) {
                pool.instances.push(spec);
            }
        }
        config.api_keys.extend(self.api_keys);
        Ok(ControlPlane::start(config)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_builder_makes_pools_for_its_instances_and_refuses_duplicates() {
        let cp = ControlPlane::builder()
            .policy(PolicyConfig::Fifo(Default::default()))
            .health_checks(false)
            .scrape_engines(false)
            .instance(InstanceSpec::new("a", "http://127.0.0.1:9", "m1", 4))
            .instance(InstanceSpec::new("b", "http://127.0.0.1:10", "m2", 4))
            .start()
            .unwrap();
        assert_eq!(cp.models(), ["m1", "m2"]);
        let p = cp.policies().await.unwrap();
        assert_eq!(p[0].active_policy, "fifo");
        assert_eq!(cp.instances().await.unwrap().len(), 2);
        let dup = ControlPlane::builder()
            .instance(InstanceSpec::new("a", "http://127.0.0.1:9", "m1", 4))
            .instance(InstanceSpec::new("a", "http://127.0.0.1:10", "m1", 4))
            .start();
        assert!(matches!(dup, Err(BuildError::DuplicateInstance(_))));
    }
}
