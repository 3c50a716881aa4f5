//! `least_response_time`: the instance with the lowest peak-EWMA latency times its
//! outstanding work (in flight plus engine-waiting, plus this request).
//!
//! Peak EWMA (as in linkerd and finagle): a sample above the current value replaces it at
//! once; a lower one is blended in with weight `1 - exp(-dt / tau)`, where `dt` is the
//! time since the previous sample, so a slow instance is avoided at once and trusted
//! again gradually. The scheduler feeds every completion's placement-to-completion latency
//! into the instance's [`crate::load::PeakEwma`] (`InstanceState::latency`). An instance with no sample
//! yet is scored with its predicted service time for the request at hand.

use crate::pool::{InstanceState, Slot};
use crate::request::RequestMeta;
use crate::route::{Allowed, PoolView, RoutingStrategy};
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "least_response_time";

/// Settings of `least_response_time` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastResponseTimeConfig {}

/// Lowest peak-EWMA latency times outstanding work, ties rotating.
#[derive(Debug, Default)]
pub struct LeastResponseTime {
    cursor: usize,
}

impl LeastResponseTime {
    /// A new balancer.
    pub fn new(_config: LeastResponseTimeConfig) -> Self {
        LeastResponseTime::default()
    }

    /// The score of `inst` for `req`: lower is better.
    pub fn score(req: &RequestMeta, inst: &InstanceState) -> f64 {
        let prior = inst.rates.service_secs(req.prompt_tokens, req.max_tokens);
        let outstanding = f64::from(inst.inflight) + inst.signals.engine_waiting(&inst.load) + 1.0;
        inst.latency.get_or(prior) * outstanding
    }
}

impl RoutingStrategy for LeastResponseTime {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        let ix = view.least_by(allowed, self.cursor, |inst| Self::score(req, inst))?;
        self.cursor = ix + 1;
        Some(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testkit;
    use crate::time::Time;

    #[test]
    fn least_response_time_weighs_latency_by_outstanding_work() {
        let mut st = testkit::states(&[(8, 3), (8, 0), (8, 1)]);
        st[0].as_mut().unwrap().latency.observe(0.1, Time::ZERO); // 0.1 * 4 = 0.4
        st[1].as_mut().unwrap().latency.observe(0.5, Time::ZERO); // 0.5 * 1 = 0.5
        st[2].as_mut().unwrap().latency.observe(0.3, Time::ZERO); // 0.3 * 2 = 0.6
        let view = testkit::view(&st);
        let mut l = LeastResponseTime::new(LeastResponseTimeConfig {});
        assert_eq!(
            l.pick(&testkit::req(1, None, None), &view, Allowed::All),
            Some(0)
        );
        st[0].as_mut().unwrap().inflight = 5; // 0.6
        let view = testkit::view(&st);
        assert_eq!(
            l.pick(&testkit::req(2, None, None), &view, Allowed::All),
            Some(1)
        );
    }
}
