//! `cost_optimized`: the cheapest instance that meets the request's SLO, within its budget.
//!
//! Order: earliest deadline first, exactly as `slo_aware` (it holds one for the queue and
//! the SLO predictions).
//!
//! Cost of a request on an instance: its `Price` applied to the predicted service time
//! with `max_tokens` of output (the most it could cost); a GPU-hour price is shared by the
//! requests in flight there, so filling an instance that already runs work is cheaper
//! than waking an idle one. An instance without a price costs 0.
//!
//! * Admission: rejected with `over_budget` when even the cheapest routable instance would
//!   exceed the budget, and with `slo_infeasible` as `slo_aware` does.
//! * Dispatch: among instances with room that meet the SLO, the candidates are those whose
//!   cost is within `tolerance` of the cheapest; the routing strategy balances among them.

use super::slo_aware::{Targets, has_slo};
use super::{
    Admission, Eligibility, Entry, Live, QueueKey, SchedulingPolicy, SloAware, SloAwareConfig,
};
use crate::predict::estimate;
use crate::request::RequestMeta;
use crate::route::{CandidateSet, PoolView};
use crate::scheduler::{InstanceState, RejectReason};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The config tag.
pub const NAME: &str = "cost_optimized";

/// Settings of `cost_optimized`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostOptimizedConfig {
    /// Instances within this fraction of the cheapest cost are equally good (0.1 = 10%).
    pub tolerance: f64,
    /// Serve a request predicted to miss its SLO anyway (as `slo_aware`).
    pub best_effort: bool,
    /// Ordering deadline of a request without an SLO (as `slo_aware`).
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
    /// Safety factor on predicted service times (as `slo_aware`).
    pub margin: f64,
}

impl Default for CostOptimizedConfig {
    fn default() -> Self {
        let slo = SloAwareConfig::default();
        CostOptimizedConfig {
            tolerance: 0.0,
            best_effort: slo.best_effort,
            default_deadline: slo.default_deadline,
            margin: slo.margin,
        }
    }
}

/// Cheapest SLO-feasible placement, EDF order.
#[derive(Debug)]
pub struct CostOptimized {
    tolerance: f64,
    edf: SloAware,
}

/// Estimated dollars for `req` on `inst` if placed now.
pub fn cost_on(req: &RequestMeta, inst: &InstanceState) -> f64 {
    estimate(req, &inst.spec, &inst.rates, inst.inflight, 0.0).cost
}

impl CostOptimized {
    /// An empty queue.
    pub fn new(config: CostOptimizedConfig) -> Self {
        CostOptimized {
            tolerance: config.tolerance.max(0.0),
            edf: SloAware::new(SloAwareConfig {
                best_effort: config.best_effort,
                default_deadline: config.default_deadline,
                margin: config.margin,
            }),
        }
    }

    /// The deadline order and SLO predictions it uses (the adaptive policy's `slo_aware`).
    pub fn edf_mut(&mut self) -> &mut SloAware {
        &mut self.edf
    }

    fn over_budget(req: &RequestMeta, cheapest: f64) -> Option<RejectReason> {
        req.cost_budget
            .filter(|b| cheapest > *b)
            .map(|budget| RejectReason::OverBudget {
                estimate: cheapest,
                budget,
            })
    }
}

impl SchedulingPolicy for CostOptimized {
    fn name(&self) -> &'static str {
        NAME
    }
    fn push(&mut self, entry: Entry<'_>) {
        self.edf.push(entry);
    }
    fn peek(&mut self, live: Live<'_>) -> Option<QueueKey> {
        self.edf.peek(live)
    }
    fn pop_head(&mut self) {
        self.edf.pop_head();
    }
    fn stored(&self) -> usize {
        self.edf.stored()
    }
    fn compact(&mut self, live: Live<'_>) {
        self.edf.compact(live);
    }
    fn clear(&mut self) {
        self.edf.clear();
    }
    fn admit(&mut self, req: &RequestMeta, view: &PoolView<'_>) -> Admission {
        if req.cost_budget.is_some() {
            let cheapest = view
                .routable()
                .map(|(_, inst)| cost_on(req, inst))
                .fold(f64::INFINITY, f64::min);
            if let Some(reason) = Self::over_budget(req, cheapest) {
                return Admission::Reject(reason);
            }
        }
        self.edf.admit(req, view)
    }
    fn candidates(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        out: &mut CandidateSet,
    ) -> Eligibility {
        let margin = self.edf.config().margin;
        let slo = has_slo(req);
        let targets = Targets::new(req, view.now);
        let mut cheapest = f64::INFINITY;
        let mut cheapest_any = f64::INFINITY;
        for (_, inst) in view.routable().filter(|(_, i)| i.has_room()) {
            let cost = cost_on(req, inst);
            cheapest_any = cheapest_any.min(cost);
            if !slo || targets.slack(&inst.rates, margin) >= 0.0 {
                cheapest = cheapest.min(cost);
            }
        }
        if cheapest.is_infinite() {
            // no instance with room meets the SLO: wait, reject or best effort as slo_aware
            return match self.edf.feasible_now(req, view, out) {
                Eligibility::AllBestEffort if cheapest_any.is_finite() => {
                    if let Some(reason) = Self::over_budget(req, cheapest_any) {
                        return Eligibility::Reject(reason);
                    }
                    fill_cheapest(req, view, out, cheapest_any, self.tolerance, None);
                    Eligibility::OnlyBestEffort
                }
                other => other,
            };
        }
        if let Some(reason) = Self::over_budget(req, cheapest) {
            return Eligibility::Reject(reason);
        }
        let slo_filter = slo.then_some(margin);
        fill_cheapest(req, view, out, cheapest, self.tolerance, slo_filter);
        Eligibility::Only
    }
}

fn fill_cheapest(
    req: &RequestMeta,
    view: &PoolView<'_>,
    out: &mut CandidateSet,
    cheapest: f64,
    tolerance: f64,
    slo_margin: Option<f64>,
) {
    out.reset(view.instances.len());
    let targets = Targets::new(req, view.now);
    let limit = cheapest * (1.0 + tolerance) + 1e-12;
    for (ix, inst) in view.routable().filter(|(_, i)| i.has_room()) {
        let feasible = slo_margin.is_none_or(|m| targets.slack(&inst.rates, m) >= 0.0);
        if feasible && cost_on(req, inst) <= limit {
            out.insert(ix);
        }
    }
}

/// Whether routable instances have different prices (the adaptive policy's signal).
pub fn price_spread<'a>(instances: impl Iterator<Item = &'a InstanceState>) -> bool {
    let mut first = None;
    for inst in instances {
        match (first, inst.spec.price) {
            (None, p) => first = Some(p),
            (Some(a), b) if a != b => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Price;
    use crate::predict::Rates;
    use crate::request::RequestId;
    use crate::route::testkit;
    use crate::time::Time;

    fn priced(slots: &[(u32, u32, f64, f64)]) -> Vec<Option<InstanceState>> {
        let mut st = testkit::states(&slots.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>());
        for (s, &(_, _, price, prefill)) in st.iter_mut().zip(slots) {
            let s = s.as_mut().unwrap();
            s.spec.price = Some(Price::PerGpuHour(price));
            s.rates = Rates {
                prefill_tokens_per_sec: prefill,
                decode_secs_per_token: 0.01,
                overhead_secs: 0.0,
                samples: 0,
            };
        }
        st
    }

    fn req(deadline_ms: Option<u64>, budget: Option<f64>) -> RequestMeta {
        let mut m = RequestMeta::new(RequestId(1), "m", 1000, 100, Time::ZERO);
        m.deadline = deadline_ms.map(Duration::from_millis);
        m.cost_budget = budget;
        m
    }

    #[test]
    fn cost_optimized_picks_the_cheapest_instance_that_meets_the_slo() {
        // service: i0 1000 tok/s -> 2 s at $3600/h ($2); i1 4000 -> 1.25 s at $7200/h ($2.5);
        // i2 same as i0 but full.
        let st = priced(&[
            (4, 0, 3600.0, 1000.0),
            (4, 0, 7200.0, 4000.0),
            (1, 1, 1.0, 1000.0),
        ]);
        let view = testkit::view(&st);
        let mut p = CostOptimized::new(CostOptimizedConfig::default());
        let mut out = CandidateSet::default();
        assert_eq!(
            p.candidates(&req(None, None), &view, &mut out),
            Eligibility::Only
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [0]);
        assert_eq!(
            p.candidates(&req(Some(1500), None), &view, &mut out),
            Eligibility::Only
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [1], "only i1 meets 1.5 s");
        match p.candidates(&req(Some(1500), Some(2.0)), &view, &mut out) {
            Eligibility::Reject(RejectReason::OverBudget { estimate, budget }) => {
                assert!((estimate - 2.5).abs() < 1e-9);
                assert_eq!(budget, 2.0);
            }
            other => panic!("expected over_budget, got {other:?}"),
        }
        let mut tolerant = CostOptimized::new(CostOptimizedConfig {
            tolerance: 0.3,
            ..CostOptimizedConfig::default()
        });
        tolerant.candidates(&req(None, None), &view, &mut out);
        assert_eq!(out.iter().collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn cost_optimized_rejects_on_admission_when_every_instance_exceeds_the_budget() {
        let st = priced(&[(4, 0, 3600.0, 1000.0), (4, 0, 7200.0, 4000.0)]);
        let view = testkit::view(&st);
        let mut p = CostOptimized::new(CostOptimizedConfig::default());
        assert_eq!(p.admit(&req(None, Some(2.0)), &view), Admission::Admit);
        assert!(matches!(
            p.admit(&req(None, Some(1.99)), &view),
            Admission::Reject(RejectReason::OverBudget { .. })
        ));
        assert!(price_spread(st.iter().flatten()));
        assert!(!price_spread(st[..1].iter().flatten()));
    }

    #[test]
    fn cost_optimized_best_effort_still_takes_the_cheapest_instance() {
        let st = priced(&[(4, 0, 3600.0, 1000.0), (4, 0, 7200.0, 1000.0)]);
        let view = testkit::view(&st);
        let mut p = CostOptimized::new(CostOptimizedConfig {
            best_effort: true,
            ..CostOptimizedConfig::default()
        });
        let mut out = CandidateSet::default();
        // 2 s of work on either, 1 s deadline: infeasible everywhere
        assert_eq!(
            p.candidates(&req(Some(1000), None), &view, &mut out),
            Eligibility::OnlyBestEffort
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [0]);
    }
}
