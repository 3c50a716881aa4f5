//! `least_connections`: the instance with the fewest requests in flight at the gateway
//! plus requests the engine reports waiting, relative to its `max_inflight` (so an
//! instance twice as large takes twice as many). Ties rotate. O(instances) per pick.

use crate::pool::Slot;
use crate::request::RequestMeta;
use crate::route::{Allowed, PoolView, RoutingStrategy};
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "least_connections";

/// Settings of `least_connections` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastConnectionsConfig {}

/// Least connections with rotating ties.
#[derive(Debug, Default)]
pub struct LeastConnections {
    cursor: usize,
}

impl LeastConnections {
    /// A new balancer.
    pub fn new(_config: LeastConnectionsConfig) -> Self {
        LeastConnections::default()
    }
}

impl RoutingStrategy for LeastConnections {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pick(
        &mut self,
        _req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        let ix = view.least_loaded(allowed, self.cursor)?;
        self.cursor = ix + 1;
        Some(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::EngineLoad;
    use crate::route::testkit;

    #[test]
    fn least_connections_counts_engine_waiting_relative_to_capacity() {
        let mut st = testkit::states(&[(4, 1), (8, 3), (4, 0)]);
        let s2 = st[2].as_mut().unwrap();
        s2.load = EngineLoad {
            waiting: Some(2.0),
            ..EngineLoad::default()
        };
        s2.signals.reading_at = Some(crate::time::Time::ZERO);
        // scores: 1/4 = 0.25, 3/8 = 0.375, (0 + 2)/4 = 0.5
        let view = testkit::view(&st);
        let mut lc = LeastConnections::new(LeastConnectionsConfig {});
        assert_eq!(
            lc.pick(&testkit::req(1, None, None), &view, Allowed::All),
            Some(0)
        );
    }

    #[test]
    fn least_connections_rotates_among_equally_loaded_instances() {
        let st = testkit::states(&[(4, 0), (4, 0), (4, 0)]);
        let view = testkit::view(&st);
        let mut lc = LeastConnections::new(LeastConnectionsConfig {});
        let picks: Vec<_> = (0..6)
            .map(|i| {
                lc.pick(&testkit::req(i, None, None), &view, Allowed::All)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
