//! Balancing algorithms: how `load_balanced` compares instances.
//!
//! The registry is [`Balancer`], an exhaustive `match` over [`BalanceConfig`].

pub mod least_connections;
pub mod least_response_time;
pub mod least_ttft;
pub mod power_of_two;
pub mod weighted_round_robin;

use super::{Allowed, PoolView, RoutingStrategy};
use crate::pool::Slot;
use crate::request::RequestMeta;
use rand::Rng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

pub use least_connections::{LeastConnections, LeastConnectionsConfig};
pub use least_response_time::{LeastResponseTime, LeastResponseTimeConfig};
pub use least_ttft::{LeastTtft, LeastTtftConfig};
pub use power_of_two::{PowerOfTwo, PowerOfTwoConfig};
pub use weighted_round_robin::{WeightBy, WeightedRoundRobin, WeightedRoundRobinConfig};

/// Which balancing algorithm `load_balanced` uses; the config tag is `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BalanceConfig {
    /// Smooth weighted round robin, weights from capacity or GPU count.
    WeightedRoundRobin(WeightedRoundRobinConfig),
    /// Fewest in-flight plus engine-waiting requests, relative to capacity.
    LeastConnections(LeastConnectionsConfig),
    /// Lowest peak-EWMA latency times outstanding work.
    LeastResponseTime(LeastResponseTimeConfig),
    /// The less loaded of two seeded random candidates.
    PowerOfTwo(PowerOfTwoConfig),
    /// The least predicted time to first token (prefill backlog plus own prefill).
    LeastTtft(LeastTtftConfig),
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig::LeastTtft(LeastTtftConfig::default())
    }
}

impl BalanceConfig {
    /// Every algorithm with its default settings, in the seed's order.
    pub fn all() -> [BalanceConfig; 5] {
        [
            BalanceConfig::WeightedRoundRobin(WeightedRoundRobinConfig::default()),
            BalanceConfig::LeastConnections(LeastConnectionsConfig::default()),
            BalanceConfig::LeastResponseTime(LeastResponseTimeConfig::default()),
            BalanceConfig::PowerOfTwo(PowerOfTwoConfig::default()),
            BalanceConfig::LeastTtft(LeastTtftConfig::default()),
        ]
    }

    /// The config tag.
    pub const fn name(&self) -> &'static str {
        match self {
            BalanceConfig::WeightedRoundRobin(_) => weighted_round_robin::NAME,
            BalanceConfig::LeastConnections(_) => least_connections::NAME,
            BalanceConfig::LeastResponseTime(_) => least_response_time::NAME,
            BalanceConfig::PowerOfTwo(_) => power_of_two::NAME,
            BalanceConfig::LeastTtft(_) => least_ttft::NAME,
        }
    }

    /// Builds the algorithm; `seed` feeds its random choices.
    pub fn build(&self, seed: u64) -> Balancer {
        match self {
            BalanceConfig::WeightedRoundRobin(c) => {
                Balancer::WeightedRoundRobin(WeightedRoundRobin::new(c.clone()))
            }
            BalanceConfig::LeastConnections(c) => {
                Balancer::LeastConnections(LeastConnections::new(c.clone()))
            }
            BalanceConfig::LeastResponseTime(c) => {
                Balancer::LeastResponseTime(LeastResponseTime::new(c.clone()))
            }
            BalanceConfig::PowerOfTwo(c) => Balancer::PowerOfTwo(PowerOfTwo::new(c.clone(), seed)),
            BalanceConfig::LeastTtft(c) => Balancer::LeastTtft(LeastTtft::new(c.clone())),
        }
    }
}

/// A built algorithm: one variant per config variant, static dispatch.
#[derive(Debug)]
pub enum Balancer {
    /// `weighted_round_robin`.
    WeightedRoundRobin(WeightedRoundRobin),
    /// `least_connections`.
    LeastConnections(LeastConnections),
    /// `least_response_time`.
    LeastResponseTime(LeastResponseTime),
    /// `power_of_two`.
    PowerOfTwo(PowerOfTwo),
    /// `least_ttft`.
    LeastTtft(LeastTtft),
}

macro_rules! each {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Balancer::WeightedRoundRobin($b) => $e,
            Balancer::LeastConnections($b) => $e,
            Balancer::LeastResponseTime($b) => $e,
            Balancer::PowerOfTwo($b) => $e,
            Balancer::LeastTtft($b) => $e,
        }
    };
}

impl RoutingStrategy for Balancer {
    fn name(&self) -> &'static str {
        each!(self, b => b.name())
    }
    fn rebuild(&mut self, view: &PoolView<'_>) {
        each!(self, b => b.rebuild(view))
    }
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        each!(self, b => b.pick(req, view, allowed))
    }
}

/// A uniformly random eligible instance: up to 8 random probes, then an exact draw over
/// the eligible ones (O(instances), only when eligible instances are rare). No allocation.
pub fn sample_eligible(
    rng: &mut SmallRng,
    view: &PoolView<'_>,
    allowed: Allowed<'_>,
    except: Option<Slot>,
) -> Option<Slot> {
    let n = view.instances.len();
    if n == 0 {
        return None;
    }
    let ok = |ix: Slot| Some(ix) != except && view.eligible(ix, allowed);
    for _ in 0..8 {
        let ix = rng.random_range(0..n);
        if ok(ix) {
            return Some(ix);
        }
    }
    let count = (0..n).filter(|&ix| ok(ix)).count();
    if count == 0 {
        return None;
    }
    let k = rng.random_range(0..count);
    (0..n).filter(|&ix| ok(ix)).nth(k)
}
