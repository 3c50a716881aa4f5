//! `load_balanced`: the least-busy instance, as judged by one of the balancing algorithms
//! in `balance/` (default `least_ttft`). The seed's default strategy.

use super::balance::{BalanceConfig, Balancer};
use super::{Allowed, PoolView, RoutingStrategy};
use crate::pool::Slot;
use crate::request::RequestMeta;
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "load_balanced";

/// Settings of `load_balanced`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadBalancedConfig {
    /// The balancing algorithm.
    pub algorithm: BalanceConfig,
}

/// Load-balanced routing.
#[derive(Debug)]
pub struct LoadBalanced {
    balancer: Balancer,
}

impl LoadBalanced {
    /// A new strategy; `seed` feeds the algorithm's random choices.
    pub fn new(config: LoadBalancedConfig, seed: u64) -> Self {
        LoadBalanced {
            balancer: config.algorithm.build(seed),
        }
    }

    /// The balancing algorithm's config tag.
    pub fn algorithm(&self) -> &'static str {
        self.balancer.name()
    }
}

impl RoutingStrategy for LoadBalanced {
    fn name(&self) -> &'static str {
        NAME
    }
    fn rebuild(&mut self, view: &PoolView<'_>) {
        self.balancer.rebuild(view);
    }
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        self.balancer.pick(req, view, allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testkit;

    #[test]
    fn load_balanced_delegates_to_its_algorithm_and_respects_the_allowed_set() {
        let st = testkit::states(&[(4, 0), (4, 3), (4, 1)]);
        let view = testkit::view(&st);
        let mut lb = LoadBalanced::new(LoadBalancedConfig::default(), 1);
        assert_eq!(lb.algorithm(), "least_ttft", "the default");
        assert_eq!(
            lb.pick(&testkit::req(1, None, None), &view, Allowed::All),
            Some(0)
        );
        let mut only = crate::route::CandidateSet::default();
        only.reset(3);
        only.insert(1);
        only.insert(2);
        assert_eq!(
            lb.pick(&testkit::req(2, None, None), &view, Allowed::Only(&only)),
            Some(2)
        );
    }
}
