//! Counters the scheduler keeps for metrics: admissions, placements, attempt outcomes
//! (derived from the one [`Outcome`] type), rejects by kind, best-effort admissions and
//! SLO attainment (total and recent).
//!
//! Everything is a plain integer or float updated in place: reading them costs nothing
//! and the gateway exports them with labels from `RejectKind::as_str`, `Outcome::label`
//! and `Priority::as_str`.

use crate::outcome::{Outcome, has_slo};
use crate::reject::{RejectKind, RejectReason};
use crate::request::{Priority, RequestMeta};

/// Weight of one request in the recent (EWMA) SLO attainment and traffic shares.
pub const RECENT_ALPHA: f64 = 0.05;

/// SLO accounting over requests that carried a deadline or TTFT target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SloStats {
    /// Requests with an SLO that met it.
    pub met: u64,
    /// Requests with an SLO that missed it: completed late, failed, or rejected because
    /// their deadline passed or could not be met (`deadline_missed`, `slo_infeasible`).
    pub missed: u64,
    /// EWMA of met (1) / missed (0), `None` before the first.
    pub recent: Option<f64>,
}

impl SloStats {
    /// `met / (met + missed)`, `None` before the first SLO request ended.
    pub fn attainment(&self) -> Option<f64> {
        let n = self.met + self.missed;
        (n > 0).then(|| self.met as f64 / n as f64)
    }

    /// Records one SLO request's end.
    pub fn record(&mut self, met: bool) {
        if met {
            self.met += 1;
        } else {
            self.missed += 1;
        }
        let x = if met { 1.0 } else { 0.0 };
        self.recent = Some(match self.recent {
            None => x,
            Some(r) => r + RECENT_ALPHA * (x - r),
        });
    }
}

/// The scheduler's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Requests submitted.
    pub submitted: u64,
    /// Requests admitted to the queue.
    pub admitted: u64,
    /// Attempts queued again after a failure before the first byte.
    pub retried: u64,
    /// Placements made.
    pub placed: u64,
    /// Attempts that ended in success.
    pub succeeded: u64,
    /// Attempts that ended in a failure that ended their request (not retried).
    pub failed: u64,
    /// Requests cancelled while queued or in flight.
    pub cancelled: u64,
    /// Admitted or placed although predicted to miss the SLO (best effort).
    pub best_effort: u64,
    /// SLO accounting.
    pub slo: SloStats,
    /// EWMA of the share of submitted requests with an SLO.
    pub deadline_share: f64,
    /// EWMA of the share of submitted requests not of the `normal` class.
    pub class_share: f64,
    rejects: [u64; RejectKind::COUNT],
    outcomes: [u64; OUTCOME_LABELS.len()],
}

/// Every attempt outcome label, in the order `Stats::outcomes` reports them.
pub const OUTCOME_LABELS: [&str; 6] = [
    "success",
    "client_error",
    "retried",
    "upstream_error",
    "stream_broken",
    "cancelled",
];

fn outcome_index(o: &Outcome) -> usize {
    OUTCOME_LABELS
        .iter()
        .position(|l| *l == o.label())
        .unwrap_or(0)
}

impl Stats {
    /// Counts a rejection; a rejection that means a missed SLO counts as one.
    pub fn record_reject(&mut self, meta: &RequestMeta, reason: &RejectReason) {
        let kind = reason.kind();
        self.rejects[kind.index()] += 1;
        if kind.is_slo_miss() && has_slo(meta) {
            self.slo.record(false);
        }
    }

    /// Counts an attempt's outcome.
    pub fn record_outcome(&mut self, outcome: &Outcome) {
        self.outcomes[outcome_index(outcome)] += 1;
        match outcome {
            Outcome::Success { .. } => self.succeeded += 1,
            Outcome::Cancelled => self.cancelled += 1,
            o if o.ends_request() => self.failed += 1,
            _ => {}
        }
    }

    /// Rejections of this kind.
    pub fn rejects_of(&self, kind: RejectKind) -> u64 {
        self.rejects[kind.index()]
    }

    /// Every reject counter with its kind, in `RejectKind::ALL` order.
    pub fn rejects(&self) -> impl Iterator<Item = (RejectKind, u64)> + '_ {
        RejectKind::ALL
            .into_iter()
            .zip(self.rejects.iter().copied())
    }

    /// Every outcome counter with its label, in `OUTCOME_LABELS` order.
    pub fn outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OUTCOME_LABELS
            .into_iter()
            .zip(self.outcomes.iter().copied())
    }

    /// All rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejects.iter().sum()
    }

    /// Records a submission: whether it carries an SLO and its class, for the recent
    /// traffic shares.
    pub fn record_submission(&mut self, meta: &RequestMeta) {
        self.submitted += 1;
        let x = if has_slo(meta) { 1.0 } else { 0.0 };
        self.deadline_share += RECENT_ALPHA * (x - self.deadline_share);
        let c = if meta.priority == Priority::Normal {
            0.0
        } else {
            1.0
        };
        self.class_share += RECENT_ALPHA * (c - self.class_share);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestId;
    use crate::time::Time;
    use std::time::Duration;

    #[test]
    fn slo_attainment_counts_met_over_all_and_recent_follows_the_ewma() {
        let mut s = SloStats::default();
        assert_eq!(s.attainment(), None);
        s.record(true);
        s.record(true);
        s.record(false);
        s.record(true);
        assert_eq!(s.attainment(), Some(0.75));
        let r = 1.0 - RECENT_ALPHA; // after the miss
        let r = r + RECENT_ALPHA * (1.0 - r);
        assert!((s.recent.unwrap() - r).abs() < 1e-12);
    }

    #[test]
    fn rejects_are_counted_by_kind_and_deadline_misses_count_against_the_slo() {
        let mut s = Stats::default();
        let mut m = RequestMeta::new(RequestId(1), "m", 1, 1, Time::ZERO);
        s.record_reject(&m, &RejectReason::QueueFull { max_queue: 1 });
        m.deadline = Some(Duration::from_secs(1));
        s.record_reject(
            &m,
            &RejectReason::DeadlineMissed {
                waited: Duration::ZERO,
            },
        );
        s.record_reject(&m, &RejectReason::QueueFull { max_queue: 1 });
        assert_eq!(s.rejects_of(RejectKind::QueueFull), 2);
        assert_eq!(s.rejects_of(RejectKind::DeadlineMissed), 1);
        assert_eq!(s.rejected_total(), 3);
        assert_eq!(s.rejects().count(), RejectKind::COUNT);
        assert_eq!(s.slo.missed, 1, "only the deadline miss is an SLO miss");
    }

    #[test]
    fn outcomes_are_counted_once_and_a_retried_attempt_is_not_a_failure() {
        let mut s = Stats::default();
        s.record_outcome(&Outcome::Failed { retrying: true });
        s.record_outcome(&Outcome::Failed { retrying: false });
        s.record_outcome(&Outcome::Cancelled);
        assert_eq!(s.failed, 1);
        assert_eq!(s.cancelled, 1);
        let counts: Vec<_> = s.outcomes().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            counts,
            [("retried", 1), ("upstream_error", 1), ("cancelled", 1)]
        );
        for (l, _) in s.outcomes() {
            assert!(OUTCOME_LABELS.contains(&l));
        }
    }
}
