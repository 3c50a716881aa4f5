//! `round_robin`: each eligible instance in turn, in table order. O(1) per pick while
//! most instances have room.

use super::{Allowed, PoolView, RoutingStrategy};
use crate::pool::Slot;
use crate::request::RequestMeta;
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "round_robin";

/// Settings of `round_robin` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundRobinConfig {}

/// Round robin.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursor: usize,
}

impl RoundRobin {
    /// A new strategy.
    pub fn new(_config: RoundRobinConfig) -> Self {
        RoundRobin::default()
    }
}

impl RoutingStrategy for RoundRobin {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pick(
        &mut self,
        _req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        let n = view.instances.len();
        let start = if self.cursor >= n { 0 } else { self.cursor };
        let ix = (start..n)
            .chain(0..start)
            .find(|&ix| view.eligible(ix, allowed))?;
        self.cursor = ix + 1;
        Some(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testkit;

    #[test]
    fn round_robin_takes_each_instance_in_turn_and_skips_full_ones() {
        let st = testkit::states(&[(4, 0), (4, 4), (4, 0), (4, 0)]);
        let view = testkit::view(&st);
        let mut rr = RoundRobin::new(RoundRobinConfig {});
        let picks: Vec<_> = (0..6)
            .map(|i| {
                rr.pick(&testkit::req(i, None, None), &view, Allowed::All)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
        let full = testkit::states(&[(1, 1)]);
        assert_eq!(
            rr.pick(
                &testkit::req(9, None, None),
                &testkit::view(&full),
                Allowed::All
            ),
            None
        );
    }
}
