//! [`Fallback`]: when a replica stops trusting the shared store and when it trusts it
//! again, judged from the times of good and failed syncs (time is an input).

use std::time::{Duration, Instant};

/// Whether the shared counts are in use, from the outcomes of the syncs.
#[derive(Debug, Clone)]
pub struct Fallback {
    after: Duration,
    /// The last good sync, or when the task started.
    last_ok: Instant,
    degraded: bool,
}

/// A change of state worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// No good sync for `after`: use local counts only.
    FellBack,
    /// A good sync after a fallback: shared counts again.
    Recovered,
}

impl Fallback {
    /// Starts at `now`, not degraded; degraded once `after` passes without a good sync.
    pub fn new(after: Duration, now: Instant) -> Fallback {
        Fallback {
            after,
            last_ok: now,
            degraded: false,
        }
    }

    /// Whether the replica schedules on its own counts now.
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// A sync succeeded at `now`.
    pub fn succeeded(&mut self, now: Instant) -> Transition {
        self.last_ok = now;
        if std::mem::replace(&mut self.degraded, false) {
            Transition::Recovered
        } else {
            Transition::None
        }
    }

    /// A sync failed (or timed out) at `now`.
    pub fn failed(&mut self, now: Instant) -> Transition {
        if !self.degraded && now.saturating_duration_since(self.last_ok) >= self.after {
            self.degraded = true;
            Transition::FellBack
        } else {
            Transition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_after_the_bound_once_and_recovers_on_the_next_good_sync() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut f = Fallback::new(Duration::from_millis(500), t0);
        assert_eq!(f.succeeded(ms(100)), Transition::None);
        assert_eq!(
            f.failed(ms(200)),
            Transition::None,
            "a blip is not a fallback"
        );
        assert_eq!(f.failed(ms(599)), Transition::None);
        assert_eq!(f.failed(ms(600)), Transition::FellBack);
        assert!(f.degraded());
        assert_eq!(f.failed(ms(900)), Transition::None, "said once");
        assert_eq!(f.succeeded(ms(1000)), Transition::Recovered);
        assert!(!f.degraded());
    }

    #[test]
    fn a_store_never_reached_falls_back_after_the_bound_from_the_start() {
        let t0 = Instant::now();
        let mut f = Fallback::new(Duration::from_millis(300), t0);
        assert_eq!(f.failed(t0 + Duration::from_millis(100)), Transition::None);
        assert_eq!(
            f.failed(t0 + Duration::from_millis(300)),
            Transition::FellBack
        );
    }
}
