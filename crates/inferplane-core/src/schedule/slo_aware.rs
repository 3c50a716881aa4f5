//! `slo_aware`: earliest urgency first (a request's TTFT deadline where it has one, else
//! its end-to-end deadline, else its class's virtual start; see `order`), placed only
//! where its SLO is predicted to hold.
//!
//! Prediction (see `predict` and `load`): on instance `i`, a request placed now gets its
//! first token after the instance's prefill backlog plus its own prefill
//! (`InstanceState::ttft_secs`), and completes its predicted output (a typical answer of
//! its class, learned, capped by `max_tokens`) at the instance's time per token with one
//! more in its batch later. (Long answers of protected classes are planned for by the
//! instance's deadline-aware batch limit, see `load`, and preferred, never waited for, at
//! placement.) Its slack on `i`
//! is how much longer it could wait and still meet both targets.
//!
//! Output lengths are only predicted, so a prediction of a miss is a guess; a request is
//! turned away only when it cannot make it however short its answer (its *floor*: the
//! prefill backlog, its own prefill and one token):
//!
//! * Admission: a request with an SLO whose floor misses it on every routable instance
//!   after the predicted queue wait is rejected with `slo_infeasible` (with `best_effort`,
//!   admitted and counted instead). The wait itself is the scheduler's overload control,
//!   which sheds first.
//! * Dispatch: the head goes to the instances with room on which it is predicted to meet
//!   its SLO. If none has room but a busy one would do, it keeps its place while later
//!   requests go. Otherwise it goes, counted as best effort, to the instances with room
//!   where its floor still meets the SLO; if there are none, it is rejected (with
//!   `best_effort`, placed anywhere and counted). Requests without an SLO go anywhere.

use super::{Admission, Eligibility, OrderKind, SchedulingPolicy};
use crate::outcome::has_slo;
use crate::pool::{CandidateSet, InstanceState, PoolView};
use crate::predict::secs;
use crate::reject::RejectReason;
use crate::request::RequestMeta;
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "slo_aware";

/// Settings of `slo_aware`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloAwareConfig {
    /// Serve a request that cannot meet its SLO even with a one-token answer anyway (and
    /// count it) instead of rejecting it.
    pub best_effort: bool,
    /// Safety factor on predicted service times (1.0 = trust the prediction).
    pub margin: f64,
}

impl Default for SloAwareConfig {
    fn default() -> Self {
        SloAwareConfig {
            best_effort: false,
            margin: 1.0,
        }
    }
}

/// A request's SLO targets as seconds left from `now`, computed once per decision so the
/// per-instance slack is a few multiplications.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    ttft_left: f64,
    done_left: f64,
    prompt: u32,
    output: u32,
    now: Time,
}

impl Targets {
    /// The targets of `req` seen at `now`, with `output` tokens predicted.
    pub fn new(req: &RequestMeta, now: Time, output: u32) -> Self {
        let left = |at: Option<Time>| {
            at.map_or(f64::INFINITY, |t| {
                if t >= now {
                    t.saturating_since(now).as_secs_f64()
                } else {
                    -now.saturating_since(t).as_secs_f64()
                }
            })
        };
        Targets {
            ttft_left: left(req.ttft_deadline_at()),
            done_left: left(req.deadline_at()),
            prompt: req.prompt_tokens,
            output,
            now,
        }
    }

    /// Seconds of further waiting affordable on `inst`, placed now, with the predicted
    /// output length and the safety factor.
    pub fn slack(&self, inst: &InstanceState, margin: f64) -> f64 {
        let ttft = inst.ttft_secs(self.prompt, self.now);
        let done = ttft + f64::from(self.output) * inst.tpot_secs();
        (self.ttft_left - margin * ttft).min(self.done_left - margin * done)
    }

    /// The slack of the best case on `inst`: an answer of one token.
    pub fn floor_slack(&self, inst: &InstanceState) -> f64 {
        let ttft = inst.ttft_secs(self.prompt, self.now);
        (self.ttft_left - ttft).min(self.done_left - ttft - inst.tpot_secs())
    }
}

/// The SLO admission check shared by `slo_aware` and `cost_optimized`: `Ok` when some
/// routable instance meets the SLO after `wait_secs` in the queue, else the reason.
pub fn feasible_on_admission(
    req: &RequestMeta,
    view: &PoolView<'_>,
    margin: f64,
    wait_secs: f64,
) -> Result<(), RejectReason> {
    if !has_slo(req) {
        return Ok(());
    }
    let _ = margin; // the floor takes no safety factor: it is the best case
    let targets = Targets::new(req, view.now, view.output_tokens(req));
    // stops at the first instance that can make it; scans them all only to reject
    let mut best = f64::NEG_INFINITY;
    for (_, inst) in view.routable() {
        best = best.max(targets.floor_slack(inst));
        if best >= wait_secs {
            return Ok(());
        }
    }
    Err(RejectReason::SloInfeasible {
        short_by: secs(wait_secs - best),
    })
}

/// Earliest urgency first with SLO-feasible placement.
#[derive(Debug)]
pub struct SloAware {
    config: SloAwareConfig,
}

impl SloAware {
    /// The policy.
    pub fn new(config: SloAwareConfig) -> Self {
        SloAware { config }
    }

    /// The settings.
    pub fn config(&self) -> &SloAwareConfig {
        &self.config
    }

    /// Fills `out` with the instances with room meeting the SLO now; decides otherwise.
    pub fn feasible_now(
        &self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        out: &mut CandidateSet,
    ) -> Eligibility {
        out.reset(view.instances.len());
        let targets = Targets::new(req, view.now, view.output_tokens(req));
        let margin = self.config.margin;
        for (ix, inst) in view.with_room_iter() {
            if targets.slack(inst, margin) >= 0.0 {
                out.insert(ix);
            }
        }
        if !out.is_empty() {
            return Eligibility::Only;
        }
        let mut busy_ok = false;
        let mut best_floor = f64::NEG_INFINITY;
        for (ix, inst) in view.routable() {
            busy_ok |= !view.has_room(inst) && targets.slack(inst, margin) >= 0.0;
            let floor = targets.floor_slack(inst);
            best_floor = best_floor.max(floor);
            if view.has_room(inst) && floor >= 0.0 {
                out.insert(ix);
            }
        }
        if busy_ok {
            Eligibility::Wait
        } else if !out.is_empty() {
            Eligibility::OnlyBestEffort
        } else if self.config.best_effort {
            Eligibility::AllBestEffort
        } else {
            Eligibility::Reject(RejectReason::SloInfeasible {
                short_by: secs(-best_floor),
            })
        }
    }
}

impl SchedulingPolicy for SloAware {
    fn name(&self) -> &'static str {
        NAME
    }
    fn order(&self) -> OrderKind {
        OrderKind::Urgency
    }
    fn admit(&mut self, req: &RequestMeta, view: &PoolView<'_>, wait_secs: f64) -> Admission {
        match feasible_on_admission(req, view, self.config.margin, wait_secs) {
            Ok(()) => Admission::Admit,
            Err(_) if self.config.best_effort => Admission::AdmitBestEffort,
            Err(reason) => Admission::Reject(reason),
        }
    }
    fn candidates(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        out: &mut CandidateSet,
    ) -> Eligibility {
        if !has_slo(req) {
            return Eligibility::All;
        }
        self.feasible_now(req, view, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::testkit;
    use crate::predict::Rates;
    use crate::request::RequestId;
    use std::time::Duration;

    fn rates(prefill: f64, decode: f64) -> Rates {
        Rates {
            prefill_tokens_per_sec: prefill,
            decode_secs_per_token: decode,
            overhead_secs: 0.0,
            samples: 0,
            decode: crate::predict::DecodeModel::default(),
        }
    }

    fn req(id: u64, deadline_ms: Option<u64>) -> RequestMeta {
        let mut m = RequestMeta::new(RequestId(id), "m", 1000, 100, Time::ZERO);
        m.deadline = deadline_ms.map(Duration::from_millis);
        m
    }

    #[test]
    fn slo_aware_places_only_on_instances_predicted_to_meet_the_deadline() {
        let mut st = testkit::states(&[(4, 0), (4, 0), (4, 4)]);
        // i0 slow: 1000/1000 + 100*0.02 = 3 s; i1 fast: 0.5 + 1 = 1.5 s; i2 fast but full
        st[0].as_mut().unwrap().rates = rates(1000.0, 0.02);
        st[1].as_mut().unwrap().rates = rates(2000.0, 0.01);
        st[2].as_mut().unwrap().rates = rates(2000.0, 0.01);
        let view = testkit::view(&st);
        let mut p = SloAware::new(SloAwareConfig::default());
        let mut out = CandidateSet::default();
        assert_eq!(
            p.candidates(&req(1, Some(2000)), &view, &mut out),
            Eligibility::Only
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [1]);
        assert_eq!(
            p.candidates(&req(2, Some(4000)), &view, &mut out),
            Eligibility::Only
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(
            p.candidates(&req(3, None), &view, &mut out),
            Eligibility::All
        );
        // 1 s: predicted to miss everywhere (1.5 s on i1), but a short answer could make
        // it on i1 (0.5 s of prefill and a token): best effort there
        assert_eq!(
            p.candidates(&req(4, Some(1000)), &view, &mut out),
            Eligibility::OnlyBestEffort
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), [1]);
        // 400 ms: not even the prefill fits anywhere
        match p.candidates(&req(5, Some(400)), &view, &mut out) {
            Eligibility::Reject(RejectReason::SloInfeasible { short_by }) => {
                assert_eq!(short_by, Duration::from_millis(110));
            }
            other => panic!("expected slo_infeasible, got {other:?}"),
        }
        let mut be = SloAware::new(SloAwareConfig {
            best_effort: true,
            ..SloAwareConfig::default()
        });
        assert_eq!(
            be.candidates(&req(5, Some(400)), &view, &mut out),
            Eligibility::AllBestEffort
        );
    }

    #[test]
    fn slo_aware_waits_for_a_busy_instance_that_alone_can_meet_the_deadline() {
        let mut st = testkit::states(&[(4, 0), (4, 4)]);
        st[0].as_mut().unwrap().rates = rates(1000.0, 0.02); // 3 s
        st[1].as_mut().unwrap().rates = rates(2000.0, 0.01); // 1.5 s, full
        let view = testkit::view(&st);
        let mut p = SloAware::new(SloAwareConfig::default());
        let mut out = CandidateSet::default();
        assert_eq!(
            p.candidates(&req(1, Some(2000)), &view, &mut out),
            Eligibility::Wait
        );
    }

    #[test]
    fn a_prefill_backlog_counts_against_the_ttft_target() {
        let mut st = testkit::states(&[(4, 0), (4, 0)]);
        for s in st.iter_mut().flatten() {
            s.rates = rates(1000.0, 0.01);
        }
        // i0 has 2 s of prompts ahead of a new request
        st[0].as_mut().unwrap().signals.prefill_pending = 2000;
        let view = testkit::view(&st);
        let mut r = req(1, None);
        r.ttft_target = Some(Duration::from_millis(1500));
        let mut out = CandidateSet::default();
        let mut p = SloAware::new(SloAwareConfig::default());
        assert_eq!(p.candidates(&r, &view, &mut out), Eligibility::Only);
        assert_eq!(out.iter().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn slo_aware_rejects_on_admission_when_the_queue_wait_makes_the_deadline_unreachable() {
        let mut st = testkit::states(&[(1, 1)]);
        st[0].as_mut().unwrap().rates = rates(1000.0, 0.01); // 1 s of prefill, 10 ms a token
        let view = testkit::view(&st);
        let mut p = SloAware::new(SloAwareConfig::default());
        // after 6 s of waiting: the best case takes 1.01 s, so 7 s is just enough
        assert_eq!(p.admit(&req(1, Some(7020)), &view, 6.0), Admission::Admit);
        assert_eq!(
            p.admit(&req(2, Some(6500)), &view, 6.0),
            Admission::Reject(RejectReason::SloInfeasible {
                short_by: Duration::from_millis(510)
            })
        );
        assert_eq!(p.admit(&req(3, None), &view, 600.0), Admission::Admit);
    }
}
