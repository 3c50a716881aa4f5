//! `weighted_round_robin`: smooth weighted round robin (the nginx algorithm). Each pick
//! adds every eligible instance's weight to its running score, takes the highest (ties to
//! the lower index) and subtracts the total weight from it. Over any cycle of
//! `sum(weights)` picks with all instances eligible, each instance is picked exactly
//! `weight` times, spread out rather than in bursts. O(instances) per pick, no allocation.

use crate::pool::{InstanceState, Slot};
use crate::request::RequestMeta;
use crate::route::{Allowed, PoolView, RoutingStrategy};
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "weighted_round_robin";

/// Where an instance's weight comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightBy {
    /// Its in-flight limit (see `load::limit`).
    #[default]
    Capacity,
    /// Its GPU count.
    Gpus,
}

/// Settings of `weighted_round_robin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightedRoundRobinConfig {
    /// Where weights come from.
    pub weight_by: WeightBy,
}

/// Smooth weighted round robin.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    weight_by: WeightBy,
    current: Vec<i64>,
}

impl WeightedRoundRobin {
    /// A new balancer.
    pub fn new(config: WeightedRoundRobinConfig) -> Self {
        WeightedRoundRobin {
            weight_by: config.weight_by,
            current: Vec::new(),
        }
    }

    /// The weight of an instance (at least 1).
    pub fn weight(&self, inst: &InstanceState) -> i64 {
        weight_of(self.weight_by, inst)
    }
}

fn weight_of(by: WeightBy, inst: &InstanceState) -> i64 {
    let w = match by {
        WeightBy::Capacity => inst.limit(),
        WeightBy::Gpus => inst.spec.gpu_count(),
    };
    i64::from(w.max(1))
}

impl RoutingStrategy for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        NAME
    }
    fn rebuild(&mut self, view: &PoolView<'_>) {
        self.current.clear();
        self.current.resize(view.instances.len(), 0);
    }
    fn pick(
        &mut self,
        _req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        let mut total = 0;
        let mut best: Option<(Slot, i64)> = None;
        for (ix, cur) in self.current.iter_mut().enumerate() {
            if !view.eligible(ix, allowed) {
                continue;
            }
            let Some(inst) = view.get(ix) else { continue };
            let w = weight_of(self.weight_by, inst);
            *cur += w;
            total += w;
            if best.is_none_or(|(_, b)| *cur > b) {
                best = Some((ix, *cur));
            }
        }
        let (ix, _) = best?;
        if let Some(c) = self.current.get_mut(ix) {
            *c -= total;
        }
        Some(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testkit;

    #[test]
    fn weighted_round_robin_gives_exact_proportions_over_a_cycle_without_bursts() {
        let st = testkit::states(&[(5, 0), (1, 0), (1, 0)]);
        let view = testkit::view(&st);
        let mut w = WeightedRoundRobin::new(WeightedRoundRobinConfig::default());
        w.rebuild(&view);
        let picks: Vec<_> = (0..7)
            .map(|i| {
                w.pick(&testkit::req(i, None, None), &view, Allowed::All)
                    .unwrap()
            })
            .collect();
        // nginx's textbook sequence for weights 5, 1, 1
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        for cycle in 0..10 {
            let mut counts = [0; 3];
            for i in 0..7 {
                let ix = w
                    .pick(
                        &testkit::req(cycle * 7 + i, None, None),
                        &view,
                        Allowed::All,
                    )
                    .unwrap();
                counts[ix] += 1;
            }
            assert_eq!(counts, [5, 1, 1]);
        }
    }

    #[test]
    fn weighted_round_robin_by_gpus_and_skips_full_instances() {
        let mut st = testkit::states(&[(8, 0), (8, 8), (8, 0)]);
        st[0].as_mut().unwrap().spec.layout.tp = 2;
        let view = testkit::view(&st);
        let mut w = WeightedRoundRobin::new(WeightedRoundRobinConfig {
            weight_by: WeightBy::Gpus,
        });
        w.rebuild(&view);
        let mut counts = [0; 3];
        for i in 0..30 {
            counts[w
                .pick(&testkit::req(i, None, None), &view, Allowed::All)
                .unwrap()] += 1;
        }
        assert_eq!(counts, [20, 0, 10]);
    }
}
