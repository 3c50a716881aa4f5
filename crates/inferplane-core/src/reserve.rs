//! Headroom for protected traffic, planned before it arrives.
//!
//! The deadline limit (`load::deadline_limit`) holds an instance's batch down while
//! protected requests with end-to-end deadlines run there. On its own it comes too late:
//! between two protected requests, lower-class work refills the batch past the size at
//! which a long protected answer can finish in time, and a batch only shrinks as its
//! requests finish, long answers last. So protected traffic keeps **lanes**: an instance on
//! which a protected request with a deadline was placed within the last
//! [`RESERVE_WINDOW`] is a lane (`LoadSignals::lane_until`), and a lane keeps its batch of
//! other work at the size at which a protected request arriving now could still finish.
//! [`ProtectedNeed`] remembers the tightest time per token such requests needed (their
//! end-to-end budget over a long answer of their class) over the last one to two windows,
//! and `load::refresh` turns it into a batch bound through each lane's decode model; a
//! lane too slow to meet it even running one request alone is not bound by it.
//!
//! The scheduler sends a protected request with a deadline to a lane when one has room for
//! it and would give its first token within half its TTFT budget (so that lanes do not pile
//! up prefill), else anywhere, which makes that instance a lane too. So the lanes grow with
//! protected traffic and only they give up batch size: the rest of the pool runs full
//! batches. A plain router (engines queueing) has no lanes.

use crate::time::Time;
use std::time::Duration;

/// How long a protected request's need is remembered: at least one window, at most two.
pub const RESERVE_WINDOW: Duration = Duration::from_secs(30);

/// The tightest time per output token recent protected requests with end-to-end deadlines
/// needed (see the module docs). Kept over two tumbling windows, O(1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProtectedNeed {
    current: Option<f64>,
    previous: Option<f64>,
    window_start: Time,
}

impl ProtectedNeed {
    /// Folds in a protected request that needs `secs_per_token` to meet its deadline, seen
    /// at `now`; returns whether [`ProtectedNeed::need`] changed.
    pub fn observe(&mut self, secs_per_token: f64, now: Time) -> bool {
        let before = self.need();
        self.rotate(now);
        if secs_per_token.is_finite() && secs_per_token > 0.0 {
            self.current = Some(
                self.current
                    .map_or(secs_per_token, |c| c.min(secs_per_token)),
            );
        }
        self.need() != before
    }

    /// Forgets what is older than the window at `now`; returns whether the need changed.
    pub fn advance(&mut self, now: Time) -> bool {
        let before = self.need();
        self.rotate(now);
        self.need() != before
    }

    /// The tightest time per token recently needed, `None`: no protected deadlines lately.
    pub fn need(&self) -> Option<f64> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn rotate(&mut self, now: Time) {
        let end = self.window_start.saturating_add(RESERVE_WINDOW);
        if now < end {
            return;
        }
        self.previous = if now < end.saturating_add(RESERVE_WINDOW) {
            self.current
        } else {
            None
        };
        self.current = None;
        self.window_start = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_need_is_kept_for_one_to_two_windows_then_forgotten() {
        let mut n = ProtectedNeed::default();
        assert_eq!(n.need(), None);
        assert!(n.observe(0.02, Time::from_millis(1000)));
        assert!(
            !n.observe(0.03, Time::from_millis(2000)),
            "looser needs change nothing"
        );
        assert!(n.observe(0.01, Time::from_millis(3000)));
        assert_eq!(n.need(), Some(0.01));
        // a new window starts at 30 s; the old one is still remembered
        assert!(!n.advance(Time::from_millis(31000)));
        assert!(!n.observe(0.05, Time::from_millis(32000)));
        assert_eq!(n.need(), Some(0.01));
        // at 61 s the first window is gone; the second's need remains
        assert!(n.advance(Time::from_millis(61000)));
        assert_eq!(n.need(), Some(0.05));
        // long silence forgets everything
        assert!(n.advance(Time::from_millis(200000)));
        assert_eq!(n.need(), None);
        assert!(
            !n.observe(f64::NAN, Time::from_millis(201000)),
            "garbage is ignored"
        );
        assert!(!n.observe(-1.0, Time::from_millis(201000)));
    }
}
