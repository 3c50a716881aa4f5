//! `least_ttft`: the instance where the request is predicted to get its first token
//! soonest: the engine's prefill backlog (prompt tokens placed there whose first token has
//! not come yet, see `load`) plus its own prompt, at the instance's measured prefill rate,
//! weighed by `1 + load score` (a busy batch slows every step the prefill shares). Near
//! ties (within [`TIE_SECS`], as between idle instances) go to the least loaded, then
//! rotate. O(instances) per pick. The default balancing algorithm.
//!
//! Where `least_connections` balances what is in flight, this balances what delays the
//! first token: a burst of long prompts spreads over the instances instead of queueing
//! behind each other in one engine's prefill, and a faster instance takes a larger share.
//! The backlog is the gateway's own count, not a lagging measurement, so the instances do
//! not herd onto whichever looked fastest last.

use crate::pool::{InstanceState, Slot};
use crate::request::RequestMeta;
use crate::route::{Allowed, PoolView, RoutingStrategy};
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "least_ttft";

/// Predicted times to first token closer than this are a tie.
pub const TIE_SECS: f64 = 0.005;

/// Settings of `least_ttft` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastTtftConfig {}

/// Least predicted time to first token.
#[derive(Debug, Default)]
pub struct LeastTtft {
    cursor: usize,
}

impl LeastTtft {
    /// A new balancer.
    pub fn new(_config: LeastTtftConfig) -> Self {
        LeastTtft::default()
    }

    /// The score of `inst` for `req` at `now`: predicted seconds to its first token
    /// weighed by the load, rounded to ties, then the load score.
    pub fn score(req: &RequestMeta, inst: &InstanceState, now: crate::time::Time) -> (u64, f64) {
        let ttft = inst.ttft_secs(req.prompt_tokens, now) * (1.0 + inst.load_score());
        ((ttft / TIE_SECS).floor() as u64, inst.load_score())
    }
}

impl RoutingStrategy for LeastTtft {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        // the TTFT band first, then the load within a band
        let ix = view.least_by(allowed, self.cursor, |inst| {
            Self::score(req, inst, view.now)
        })?;
        self.cursor = ix + 1;
        Some(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::Rates;
    use crate::route::testkit;

    #[test]
    fn least_ttft_avoids_a_prefill_backlog_and_prefers_the_faster_prefill() {
        let mut st = testkit::states(&[(8, 0), (8, 3), (8, 0)]);
        for s in st.iter_mut().flatten() {
            s.rates = Rates {
                prefill_tokens_per_sec: 1000.0,
                decode_secs_per_token: 0.01,
                overhead_secs: 0.0,
                samples: 0,
                decode: crate::predict::DecodeModel::default(),
            };
        }
        // i0 has 2 s of prompts ahead, i2 0.5 s; i1 has more in flight but nothing to prefill
        st[0].as_mut().unwrap().signals.prefill_pending = 2000;
        st[2].as_mut().unwrap().signals.prefill_pending = 500;
        let view = testkit::view(&st);
        let mut l = LeastTtft::new(LeastTtftConfig {});
        assert_eq!(
            l.pick(&testkit::req(1, None, None), &view, Allowed::All),
            Some(1)
        );
        // all idle: the least loaded wins, then ties rotate
        let idle = testkit::states(&[(8, 2), (8, 0), (8, 0)]);
        let view = testkit::view(&idle);
        let mut l = LeastTtft::new(LeastTtftConfig {});
        let picks: Vec<_> = (0..4)
            .map(|i| {
                l.pick(&testkit::req(i, None, None), &view, Allowed::All)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks[0], 1);
        assert!(!picks.contains(&0), "{picks:?}");
        assert_ne!(picks[0], picks[1], "ties rotate");
    }
}
