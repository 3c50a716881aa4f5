//! Counters the scheduler keeps for metrics: admissions, placements, outcomes, rejects by
//! reason, best-effort admissions and SLO attainment (total and recent).
//!
//! Everything is a plain integer or float updated in place: reading them costs nothing
//! and the gateway exports them with labels from `RejectReason::as_str` and
//! `Priority::as_str`.

use crate::scheduler::RejectReason;

/// Weight of one request in the recent (EWMA) SLO attainment and deadline share.
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
    /// Requests put back by `requeue`.
    pub requeued: u64,
    /// Placements made.
    pub placed: u64,
    /// Completed with success.
    pub succeeded: u64,
    /// Completed with failure.
    pub failed: u64,
    /// Cancelled while queued or in flight.
    pub cancelled: u64,
    /// Admitted or placed although predicted to miss the SLO (best effort).
    pub best_effort: u64,
    /// SLO accounting.
    pub slo: SloStats,
    /// EWMA of the share of submitted requests with an SLO.
    pub deadline_share: f64,
    rejects: [u64; crate::RejectKind::COUNT],
}

impl Stats {
    /// Counts a rejection.
    pub fn record_reject(&mut self, reason: &RejectReason) {
        self.rejects[reason.kind().index()] += 1;
    }

    /// Rejections with this label (see `RejectReason::LABELS`); 0 for unknown labels.
    pub fn rejects_of(&self, label: &str) -> u64 {
        crate::RejectKind::from_label(label).map_or(0, |k| self.rejects[k.index()])
    }

    /// Every reject counter with its stable label, in `RejectReason::LABELS` order.
    pub fn rejects(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        crate::RejectKind::ALL
            .iter()
            .map(|k| k.as_str())
            .zip(self.rejects.iter().copied())
    }

    /// All rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejects.iter().sum()
    }

    /// Records whether a submitted request carries an SLO.
    pub fn record_submission(&mut self, has_slo: bool) {
        self.submitted += 1;
        let x = if has_slo { 1.0 } else { 0.0 };
        self.deadline_share += RECENT_ALPHA * (x - self.deadline_share);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn rejects_are_counted_under_their_stable_labels() {
        let mut s = Stats::default();
        s.record_reject(&RejectReason::QueueFull { max_queue: 1 });
        s.record_reject(&RejectReason::DeadlineMissed {
            waited: Duration::ZERO,
        });
        s.record_reject(&RejectReason::QueueFull { max_queue: 1 });
        assert_eq!(s.rejects_of("queue_full"), 2);
        assert_eq!(s.rejects_of("deadline_missed"), 1);
        assert_eq!(s.rejects_of("nonsense"), 0);
        assert_eq!(s.rejected_total(), 3);
        assert_eq!(s.rejects().count(), crate::RejectKind::COUNT);
    }
}
