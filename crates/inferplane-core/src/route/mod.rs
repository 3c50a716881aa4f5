//! Routing strategies: which instance serves the request the scheduling policy chose.
//!
//! A strategy sees the pool through a [`PoolView`] (the instance table plus pool totals
//! kept by the scheduler) and may only choose an instance that has room and is in the
//! [`Allowed`] set (narrowed by the policy, by a parallelism hint or by a retry's
//! `avoid`). It never allocates in `pick`; tables such as hash rings are built in
//! `rebuild`, which the scheduler calls whenever the set of routable instances changes.
//!
//! The registry is [`Router`], an exhaustive `match` over [`RoutingConfig`].

pub mod affinity;
pub mod balance;
pub mod load_balanced;
pub mod locality;
pub mod prefix;
pub mod random;
pub mod round_robin;

use crate::pool::InstanceIx;
use crate::prefix::CacheChange;
use crate::request::RequestMeta;
use crate::time::Time;
use serde::{Deserialize, Serialize};

pub use crate::pool::{Allowed, CandidateSet, PoolView, Slot};

pub use affinity::{Affinity, AffinityConfig};
pub use balance::{BalanceConfig, Balancer};
pub use load_balanced::{LoadBalanced, LoadBalancedConfig};
pub use locality::{Locality, LocalityConfig};
pub use prefix::{Prefix, PrefixConfig};
pub use random::{Random, RandomConfig};
pub use round_robin::{RoundRobin, RoundRobinConfig};

/// Picks the instance. Runs against the pool view; never blocks or allocates in `pick`.
pub trait RoutingStrategy: Send {
    /// The config tag.
    fn name(&self) -> &'static str;
    /// Precomputes rings and weight tables; called when the routable set changes.
    fn rebuild(&mut self, _view: &PoolView<'_>) {}
    /// An eligible instance, or `None` when no allowed instance has room.
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot>;
    /// Told after the scheduler placed `req` on `ix` (whatever picked it); may record the
    /// placement (and allocate, within the strategy's own bound). Default: nothing.
    fn placed(&mut self, _req: &RequestMeta, _ix: InstanceIx, _now: Time) {}
    /// The engine of `ix` reported a change to its KV cache (strategies without a prefix
    /// index ignore it).
    fn cache_changed(&mut self, _ix: InstanceIx, _change: CacheChange<'_>, _now: Time) {}
    /// Whether this strategy reads [`RequestMeta::prefix_blocks`] (the gateway hashes a
    /// prompt's blocks only for pools whose strategy does).
    fn routes_by_blocks(&self) -> bool {
        false
    }
    /// What the last `pick` found about the request's cached prefix (prefix-aware
    /// strategies only), for the access log, a response header and metrics.
    fn note(&self) -> Option<PrefixNote> {
        None
    }
}

/// What a prefix-aware pick found: the prompt tokens cached where the request goes, the
/// most any instance holds, and why it went where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixNote {
    /// Prompt tokens in leading blocks the chosen instance holds (by the index).
    pub matched_tokens: u32,
    /// The most prompt tokens any instance holds.
    pub best_tokens: u32,
    /// Why this instance.
    pub reason: PrefixReason,
}

/// Why a prefix-aware pick chose as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixReason {
    /// The chosen instance holds the longest cached prefix of any.
    Hit,
    /// An instance holding more was busier (past `spread_load`, or its load outweighed
    /// the reuse): the prefix spreads.
    Spread,
    /// No instance holds the prompt's first block: the least loaded.
    Miss,
    /// The prompt is shorter than one block (or has no text to hash): the least loaded.
    Unhashed,
    /// Not placed yet: it waits for a busy holder (only ever seen on a skipped pick).
    Wait,
}

impl PrefixReason {
    /// The snake_case word used in headers, logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            PrefixReason::Hit => "hit",
            PrefixReason::Spread => "spread",
            PrefixReason::Miss => "miss",
            PrefixReason::Unhashed => "unhashed",
            PrefixReason::Wait => "wait",
        }
    }
}

/// Which routing strategy a pool runs, with its settings; the config tag is `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoutingConfig {
    /// The least-busy instance by a balancing algorithm.
    LoadBalanced(LoadBalancedConfig),
    /// Each instance in turn.
    RoundRobin(RoundRobinConfig),
    /// A seeded uniform choice.
    Random(RandomConfig),
    /// A session sticks to its instance (consistent hashing with bounded loads).
    Affinity(AffinityConfig),
    /// Equal prompt prefixes go where they are likely cached.
    Locality(LocalityConfig),
    /// Prompt blocks go where they are likely cached, weighed against capacity-relative load.
    Prefix(PrefixConfig),
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig::LoadBalanced(LoadBalancedConfig::default())
    }
}

impl RoutingConfig {
    /// Every strategy with its default settings, in the seed's order (names for CLIs,
    /// benchmarks and metric labels derive from this list).
    pub fn all() -> [RoutingConfig; 6] {
        [
            RoutingConfig::LoadBalanced(LoadBalancedConfig::default()),
            RoutingConfig::RoundRobin(RoundRobinConfig::default()),
            RoutingConfig::Random(RandomConfig::default()),
            RoutingConfig::Affinity(AffinityConfig::default()),
            RoutingConfig::Locality(LocalityConfig::default()),
            RoutingConfig::Prefix(PrefixConfig::default()),
        ]
    }

    /// The config tag.
    pub const fn name(&self) -> &'static str {
        match self {
            RoutingConfig::LoadBalanced(_) => load_balanced::NAME,
            RoutingConfig::RoundRobin(_) => round_robin::NAME,
            RoutingConfig::Random(_) => random::NAME,
            RoutingConfig::Affinity(_) => affinity::NAME,
            RoutingConfig::Locality(_) => locality::NAME,
            RoutingConfig::Prefix(_) => prefix::NAME,
        }
    }

    /// Builds the strategy; `seed` feeds every random choice.
    pub fn build(&self, seed: u64) -> Router {
        match self {
            RoutingConfig::LoadBalanced(c) => {
                Router::LoadBalanced(LoadBalanced::new(c.clone(), seed))
            }
            RoutingConfig::RoundRobin(c) => Router::RoundRobin(RoundRobin::new(c.clone())),
            RoutingConfig::Random(c) => Router::Random(Random::new(c.clone(), seed)),
            RoutingConfig::Affinity(c) => Router::Affinity(Affinity::new(c.clone())),
            RoutingConfig::Locality(c) => Router::Locality(Locality::new(c.clone())),
            RoutingConfig::Prefix(c) => Router::Prefix(Box::new(Prefix::new(c.clone()))),
        }
    }
}

/// A built strategy: the registry, one variant per config variant, static dispatch.
#[derive(Debug)]
pub enum Router {
    /// `load_balanced`.
    LoadBalanced(LoadBalanced),
    /// `round_robin`.
    RoundRobin(RoundRobin),
    /// `random`.
    Random(Random),
    /// `affinity`.
    Affinity(Affinity),
    /// `locality`.
    Locality(Locality),
    /// `prefix`.
    Prefix(Box<Prefix>),
}

macro_rules! each {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            Router::LoadBalanced($r) => $e,
            Router::RoundRobin($r) => $e,
            Router::Random($r) => $e,
            Router::Affinity($r) => $e,
            Router::Locality($r) => $e,
            Router::Prefix($r) => $e,
        }
    };
}

impl RoutingStrategy for Router {
    fn name(&self) -> &'static str {
        each!(self, r => r.name())
    }
    fn rebuild(&mut self, view: &PoolView<'_>) {
        each!(self, r => r.rebuild(view))
    }
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        each!(self, r => r.pick(req, view, allowed))
    }
    fn placed(&mut self, req: &RequestMeta, ix: InstanceIx, now: Time) {
        each!(self, r => r.placed(req, ix, now))
    }
    fn cache_changed(&mut self, ix: InstanceIx, change: CacheChange<'_>, now: Time) {
        each!(self, r => r.cache_changed(ix, change, now))
    }
    fn routes_by_blocks(&self) -> bool {
        each!(self, r => r.routes_by_blocks())
    }
    fn note(&self) -> Option<PrefixNote> {
        each!(self, r => r.note())
    }
}

#[cfg(test)]
pub(crate) use crate::pool::testkit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_configs_use_the_snake_case_kind_tag() {
        for (json, name) in [
            (
                r#"{"kind":"load_balanced","algorithm":{"kind":"power_of_two"}}"#,
                "load_balanced",
            ),
            (r#"{"kind":"round_robin"}"#, "round_robin"),
            (r#"{"kind":"random"}"#, "random"),
            (r#"{"kind":"affinity","load_factor":1.5}"#, "affinity"),
            (r#"{"kind":"locality","capacity":1024}"#, "locality"),
            (
                r#"{"kind":"prefix","max_blocks":4096,"max_age":"10m"}"#,
                "prefix",
            ),
        ] {
            let c: RoutingConfig = serde_json::from_str(json).unwrap();
            assert_eq!(c.name(), name);
            assert_eq!(c.build(1).name(), name);
        }
        assert!(serde_json::from_str::<RoutingConfig>(r#"{"kind":"sticky"}"#).is_err());
    }
}
