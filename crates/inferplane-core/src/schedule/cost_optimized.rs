//! `cost_optimized`: the cheapest instances that meet the request's SLO, within its budget.
//!
//! Order: earliest urgency first, exactly as `slo_aware`.
//!
//! Cost of a request on an instance ([`crate::predict::cost_estimate`]): its price times
//! the GPU time one request takes at the instance's full-batch throughput, for its
//! predicted output length. It does not depend on the instance's momentary load, so two
//! instances of one kind cost the same and the routing strategy balances between them;
//! the cheapest kind fills until it is saturated, then the next cheapest takes the rest.
//! An instance without a price costs 0.
//!
//! * Admission: rejected with `over_budget` when even the cheapest routable instance would
//!   exceed the budget, and with `slo_infeasible` as `slo_aware` does.
//! * Dispatch: among instances with room that meet the SLO, the candidates are those whose
//!   cost is within `tolerance` of the cheapest; the routing strategy picks among them.

use super::slo_aware::{Targets, feasible_on_admission};
use super::{Admission, Eligibility, OrderKind, SchedulingPolicy, SloAware, SloAwareConfig};
use crate::outcome::has_slo;
use crate::pool::{CandidateSet, InstanceState, PoolView};
use crate::predict::cost_estimate;
use crate::reject::RejectReason;
use crate::request::RequestMeta;
use serde::{Deserialize, Serialize};

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
    /// Safety factor on predicted service times (as `slo_aware`).
    pub margin: f64,
}

impl Default for CostOptimizedConfig {
    fn default() -> Self {
        let slo = SloAwareConfig::default();
        CostOptimizedConfig {
            tolerance: 0.1,
            best_effort: slo.best_effort,
            margin: slo.margin,
        }
    }
}

/// Cheapest SLO-feasible placement, urgency order.
#[derive(Debug)]
pub struct CostOptimized {
    tolerance: f64,
    slo: SloAware,
}

/// Estimated dollars for `req` on `inst` with `output` tokens.
pub fn cost_on(req: &RequestMeta, inst: &InstanceState, output: u32) -> f64 {
    cost_estimate(
        &inst.spec,
        &inst.rates,
        inst.limit(),
        req.prompt_tokens,
        output,
    )
}

impl CostOptimized {
    /// The policy.
    pub fn new(config: CostOptimizedConfig) -> Self {
        CostOptimized {
            tolerance: config.tolerance.max(0.0),
            slo: SloAware::new(SloAwareConfig {
                best_effort: config.best_effort,
                margin: config.margin,
            }),
        }
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
    fn order(&self) -> OrderKind {
        OrderKind::Urgency
    }
    fn admit(&mut self, req: &RequestMeta, view: &PoolView<'_>, wait_secs: f64) -> Admission {
        if req.cost_budget.is_some() {
            let out = view.output_tokens(req);
            let cheapest = view
                .routable()
                .map(|(_, inst)| cost_on(req, inst, out))
                .fold(f64::INFINITY, f64::min);
            if let Some(reason) = Self::over_budget(req, cheapest) {
                return Admission::Reject(reason);
            }
        }
        let margin = self.slo.config().margin;
        match feasible_on_admission(req, view, margin, wait_secs) {
            Ok(()) => Admission::Admit,
            Err(_) if self.slo.config().best_effort => Admission::AdmitBestEffort,
            Err(reason) => Admission::Reject(reason),
        }
    }
    fn candidates(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        out: &mut CandidateSet,
    ) -> Eligibility {
        let margin = self.slo.config().margin;
        let output = view.output_tokens(req);
        let slo = has_slo(req);
        let targets = Targets::new(req, view.now, output);
        let feasible = |inst: &InstanceState| !slo || targets.slack(inst, margin) >= 0.0;
        let mut cheapest = f64::INFINITY;
        let mut cheapest_any = f64::INFINITY;
        for (_, inst) in view.with_room_iter() {
            let cost = cost_on(req, inst, output);
            cheapest_any = cheapest_any.min(cost);
            if feasible(inst) {
                cheapest = cheapest.min(cost);
            }
        }
        if cheapest.is_infinite() {
            // no instance with room meets the SLO: wait, reject or best effort as slo_aware
            return match self.slo.feasible_now(req, view, out) {
                Eligibility::AllBestEffort if cheapest_any.is_finite() => {
                    if let Some(reason) = Self::over_budget(req, cheapest_any) {
                        return Eligibility::Reject(reason);
                    }
                    fill(view, out, |inst| {
                        cost_on(req, inst, output) <= limit(cheapest_any, self.tolerance)
                    });
                    Eligibility::OnlyBestEffort
                }
                other => other,
            };
        }
        if let Some(reason) = Self::over_budget(req, cheapest) {
            return Eligibility::Reject(reason);
        }
        let tolerance = self.tolerance;
        fill(view, out, |inst| {
            feasible(inst) && cost_on(req, inst, output) <= limit(cheapest, tolerance)
        });
        Eligibility::Only
    }
}

fn limit(cheapest: f64, tolerance: f64) -> f64 {
    cheapest * (1.0 + tolerance) + 1e-12
}

fn fill(view: &PoolView<'_>, out: &mut CandidateSet, keep: impl Fn(&InstanceState) -> bool) {
    out.reset(view.instances.len());
    for (ix, inst) in view.with_room_iter() {
        if keep(inst) {
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
    use crate::pool::testkit;
    use crate::predict::Rates;
    use crate::request::RequestId;
    use crate::time::Time;
    use std::time::Duration;

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
                decode: crate::predict::DecodeModel::default(),
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
    fn cost_optimized_picks_the_cheapest_instances_that_meet_the_slo() {
        // batch 1 each. service: i0 1000 tok/s -> 2 s at $3600/h ($2); i1 4000 -> 1.25 s at
        // $7200/h ($2.5); i2 as i0 but full.
        let st = priced(&[
            (1, 0, 3600.0, 1000.0),
            (1, 0, 7200.0, 4000.0),
            (1, 1, 1.0, 1000.0),
        ]);
        let view = testkit::view(&st);
        let mut p = CostOptimized::new(CostOptimizedConfig {
            tolerance: 0.0,
            ..CostOptimizedConfig::default()
        });
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
    fn instances_of_one_kind_cost_the_same_whatever_their_load() {
        // two identical instances, one busy: both are candidates (the router balances)
        let st = priced(&[
            (8, 6, 2.49, 8000.0),
            (8, 0, 2.49, 8000.0),
            (8, 0, 9.0, 8000.0),
        ]);
        let view = testkit::view(&st);
        let mut p = CostOptimized::new(CostOptimizedConfig::default());
        let mut out = CandidateSet::default();
        assert_eq!(
            p.candidates(&req(None, None), &view, &mut out),
            Eligibility::Only
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn cost_optimized_rejects_on_admission_when_every_instance_exceeds_the_budget() {
        let st = priced(&[(1, 0, 3600.0, 1000.0), (1, 0, 7200.0, 4000.0)]);
        let view = testkit::view(&st);
        let mut p = CostOptimized::new(CostOptimizedConfig::default());
        assert_eq!(p.admit(&req(None, Some(2.0)), &view, 0.0), Admission::Admit);
        assert!(matches!(
            p.admit(&req(None, Some(1.99)), &view, 0.0),
            Admission::Reject(RejectReason::OverBudget { .. })
        ));
        assert!(price_spread(st.iter().flatten()));
        assert!(!price_spread(st[..1].iter().flatten()));
    }

    #[test]
    fn cost_optimized_best_effort_still_takes_the_cheapest_instance() {
        let st = priced(&[(1, 0, 3600.0, 1000.0), (1, 0, 7200.0, 1000.0)]);
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
