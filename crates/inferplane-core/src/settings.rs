//! Checks of the scheduling settings a user gives, in a config file or through the admin
//! API at run time: bounds that keep every policy, strategy and algorithm from dividing by
//! zero, overflowing or allocating without limit. [`check_policy`], [`check_routing`] and
//! [`check_balance`] return [`InvalidSetting`], naming the field.

use crate::route::{BalanceConfig, RoutingConfig};
use crate::schedule::PolicyConfig;

/// Largest prefix index `locality` may keep (entries).
pub const MAX_LOCALITY_CAPACITY: usize = 1 << 24;
/// Largest prefix index `prefix` may keep (block entries; see `prefix::BYTES_PER_BLOCK`).
pub const MAX_PREFIX_BLOCKS: usize = 1 << 24;
/// Most ring points per instance `affinity` may place.
pub const MAX_VIRTUAL_NODES: u32 = 1_000;
/// Largest load factor or safety margin accepted.
pub const MAX_FACTOR: f64 = 1_000.0;

/// A setting outside what the scheduler accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidSetting {
    /// The field, as in the config (`routing.capacity`).
    pub field: &'static str,
    /// What is wrong and what is accepted.
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        field,
        problem: problem.into(),
    }
}

/// `x` must be finite and within `[lo, hi]`.
fn within(field: &'static str, x: f64, lo: f64, hi: f64) -> Result<(), InvalidSetting> {
    if x.is_finite() && x >= lo && x <= hi {
        Ok(())
    } else {
        Err(invalid(field, format!("{x} is not within [{lo}, {hi}]")))
    }
}

/// Checks a scheduling policy's settings.
pub fn check_policy(p: &PolicyConfig) -> Result<(), InvalidSetting> {
    match p {
        PolicyConfig::Fifo(_) | PolicyConfig::Priority(_) => Ok(()),
        PolicyConfig::SloAware(c) => within("policy.margin", c.margin, 0.01, MAX_FACTOR),
        PolicyConfig::CostOptimized(c) => {
            within("policy.margin", c.margin, 0.01, MAX_FACTOR)?;
            within("policy.tolerance", c.tolerance, 0.0, MAX_FACTOR)
        }
        PolicyConfig::Adaptive(c) => {
            for (field, x) in [
                ("policy.deadline_enter", c.deadline_enter),
                ("policy.deadline_exit", c.deadline_exit),
                ("policy.slo_enter", c.slo_enter),
                ("policy.slo_exit", c.slo_exit),
                ("policy.class_enter", c.class_enter),
                ("policy.class_exit", c.class_exit),
                ("policy.light_enter", c.light_enter),
                ("policy.light_exit", c.light_exit),
            ] {
                within(field, x, 0.0, 1.0)?;
            }
            check_policy(&PolicyConfig::SloAware(c.slo.clone()))?;
            check_policy(&PolicyConfig::CostOptimized(c.cost.clone()))
        }
    }
}

/// Checks a routing strategy's settings (and its balancing algorithm's).
pub fn check_routing(r: &RoutingConfig) -> Result<(), InvalidSetting> {
    match r {
        RoutingConfig::LoadBalanced(c) => check_balance(&c.algorithm),
        RoutingConfig::RoundRobin(_) | RoutingConfig::Random(_) => Ok(()),
        RoutingConfig::Affinity(c) => {
            within("routing.load_factor", c.load_factor, 1.0, MAX_FACTOR)?;
            if c.virtual_nodes == 0 || c.virtual_nodes > MAX_VIRTUAL_NODES {
                return Err(invalid(
                    "routing.virtual_nodes",
                    format!("{} is not within [1, {MAX_VIRTUAL_NODES}]", c.virtual_nodes),
                ));
            }
            Ok(())
        }
        RoutingConfig::Locality(c) => {
            within("routing.load_factor", c.load_factor, 1.0, MAX_FACTOR)?;
            if c.capacity == 0 || c.capacity > MAX_LOCALITY_CAPACITY {
                return Err(invalid(
                    "routing.capacity",
                    format!("{} is not within [1, {MAX_LOCALITY_CAPACITY}]", c.capacity),
                ));
            }
            Ok(())
        }
        RoutingConfig::Prefix(c) => {
            within("routing.hit_weight", c.hit_weight, 0.0, MAX_FACTOR)?;
            within("routing.spread_load", c.spread_load, 0.0, MAX_FACTOR)?;
            within(
                "routing.spread_over_mean",
                c.spread_over_mean,
                0.0,
                MAX_FACTOR,
            )?;
            if c.max_blocks == 0 || c.max_blocks > MAX_PREFIX_BLOCKS {
                return Err(invalid(
                    "routing.max_blocks",
                    format!("{} is not within [1, {MAX_PREFIX_BLOCKS}]", c.max_blocks),
                ));
            }
            Ok(())
        }
    }
}

/// Checks a balancing algorithm's settings (none of them can go wrong today; kept so a
/// new algorithm's bounds have their place).
pub fn check_balance(b: &BalanceConfig) -> Result<(), InvalidSetting> {
    match b {
        BalanceConfig::WeightedRoundRobin(_)
        | BalanceConfig::LeastConnections(_)
        | BalanceConfig::LeastResponseTime(_)
        | BalanceConfig::PowerOfTwo(_)
        | BalanceConfig::LeastTtft(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{AffinityConfig, LocalityConfig};
    use crate::schedule::{AdaptiveConfig, CostOptimizedConfig};

    #[test]
    fn defaults_pass_and_out_of_bounds_settings_name_their_field() {
        assert_eq!(check_policy(&PolicyConfig::default()), Ok(()));
        assert_eq!(check_routing(&RoutingConfig::default()), Ok(()));
        let huge = RoutingConfig::Locality(LocalityConfig {
            capacity: usize::MAX,
            ..LocalityConfig::default()
        });
        assert_eq!(check_routing(&huge).unwrap_err().field, "routing.capacity");
        let prefix = |c| check_routing(&RoutingConfig::Prefix(c)).unwrap_err().field;
        let d = crate::route::PrefixConfig::default();
        assert_eq!(check_routing(&RoutingConfig::Prefix(d.clone())), Ok(()));
        let zero = crate::route::PrefixConfig {
            max_blocks: 0,
            ..d.clone()
        };
        assert_eq!(prefix(zero), "routing.max_blocks");
        let nan = crate::route::PrefixConfig {
            hit_weight: f64::NAN,
            ..d
        };
        assert_eq!(prefix(nan), "routing.hit_weight");
        let nan = RoutingConfig::Affinity(AffinityConfig {
            load_factor: f64::NAN,
            ..AffinityConfig::default()
        });
        assert_eq!(
            check_routing(&nan).unwrap_err().field,
            "routing.load_factor"
        );
        let ring = RoutingConfig::Affinity(AffinityConfig {
            virtual_nodes: u32::MAX,
            ..AffinityConfig::default()
        });
        let e = check_routing(&ring).unwrap_err();
        assert_eq!(e.field, "routing.virtual_nodes");
        assert!(
            e.to_string()
                .starts_with("routing.virtual_nodes: 4294967295 is not within")
        );
        let cost = PolicyConfig::CostOptimized(CostOptimizedConfig {
            tolerance: -1.0,
            ..CostOptimizedConfig::default()
        });
        assert_eq!(check_policy(&cost).unwrap_err().field, "policy.tolerance");
        let adaptive = PolicyConfig::Adaptive(AdaptiveConfig {
            light_exit: 7.0,
            ..AdaptiveConfig::default()
        });
        assert_eq!(
            check_policy(&adaptive).unwrap_err().field,
            "policy.light_exit"
        );
    }
}
