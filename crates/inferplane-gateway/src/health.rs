//! Pure state machines that decide whether an instance may receive work: active health
//! (`HealthTracker`: unhealthy after N consecutive failed checks, healthy after M
//! successes, with a start-up grace period so slow-starting engines are not condemned) and
//! passive outlier detection (`CircuitBreaker`: consecutive connect errors or 5xx open it,
//! it half-opens after a cool-down to let probe requests through, and closes after
//! successes). Both take `now`; the dispatcher drives them.

use crate::config::{CircuitSection, HealthSection};
use inferplane_core::Time;

/// Active health of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Registered, not yet seen healthy; failures do not count during the grace period.
    Starting,
    /// Passing checks.
    Healthy,
    /// Failing checks.
    Unhealthy,
}

impl Health {
    /// Label value for metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// Consecutive-result health tracking.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    state: Health,
    successes: u32,
    failures: u32,
    grace_until: Time,
    unhealthy_after: u32,
    healthy_after: u32,
}

impl HealthTracker {
    /// A tracker for an instance registered at `now`.
    pub fn new(cfg: &HealthSection, now: Time) -> Self {
        HealthTracker {
            state: Health::Starting,
            successes: 0,
            failures: 0,
            grace_until: now + cfg.startup_grace,
            unhealthy_after: cfg.unhealthy_after.max(1),
            healthy_after: cfg.healthy_after.max(1),
        }
    }

    /// Current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Records a check result; returns the new state if it changed.
    pub fn record(&mut self, ok: bool, now: Time) -> Option<Health> {
        let before = self.state;
        if ok {
            self.failures = 0;
            self.successes += 1;
            // A starting engine is healthy at its first success.
            if self.state == Health::Starting
                || (self.state == Health::Unhealthy && self.successes >= self.healthy_after)
            {
                self.state = Health::Healthy;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            let in_grace = self.state == Health::Starting && now < self.grace_until;
            if !in_grace && self.state != Health::Unhealthy && self.failures >= self.unhealthy_after
            {
                self.state = Health::Unhealthy;
            }
        }
        (self.state != before).then_some(self.state)
    }
}

/// Circuit-breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Traffic flows.
    Closed,
    /// No traffic until the cool-down ends.
    Open {
        /// When it half-opens.
        until: Time,
    },
    /// Probe traffic flows; successes close it, a failure reopens it.
    HalfOpen,
}

impl Circuit {
    /// Label value for metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open { .. } => "open",
            Circuit::HalfOpen => "half_open",
        }
    }

    /// Numeric gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            Circuit::Closed => 0,
            Circuit::HalfOpen => 1,
            Circuit::Open { .. } => 2,
        }
    }
}

/// Per-instance circuit breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    state: Circuit,
    failures: u32,
    successes: u32,
    /// Times it opened since it last closed (the open period doubles with each).
    trips: u32,
    cfg: CircuitSection,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(cfg: &CircuitSection) -> Self {
        CircuitBreaker {
            state: Circuit::Closed,
            failures: 0,
            successes: 0,
            trips: 0,
            cfg: cfg.clone(),
        }
    }

    /// Current state, after moving an expired open state to half-open.
    pub fn poll(&mut self, now: Time) -> Circuit {
        if let Circuit::Open { until } = self.state
            && now >= until
        {
            self.state = Circuit::HalfOpen;
            self.successes = 0;
        }
        self.state
    }

    /// The state as last moved (an open state past its period still reads open until
    /// the next `poll`).
    pub fn state(&self) -> Circuit {
        self.state
    }

    /// Whether traffic may flow (closed or half-open).
    pub fn allows(&mut self, now: Time) -> bool {
        !matches!(self.poll(now), Circuit::Open { .. })
    }

    /// When an open breaker half-opens.
    pub fn reopens_at(&self) -> Option<Time> {
        match self.state {
            Circuit::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Records a request that the instance served; returns the new state if it changed.
    pub fn success(&mut self, now: Time) -> Option<Circuit> {
        let before = self.poll(now);
        self.failures = 0;
        if before == Circuit::HalfOpen {
            self.successes += 1;
            if self.successes >= self.cfg.successes_to_close {
                self.state = Circuit::Closed;
                self.trips = 0;
            }
        }
        (self.state != before).then_some(self.state)
    }

    /// How long it stays open this time: `open_for`, doubled for each trip since it last
    /// closed, at most `max_open_for`.
    pub fn open_period(&self) -> std::time::Duration {
        let doublings = self.trips.saturating_sub(1).min(16);
        self.cfg
            .open_for
            .saturating_mul(1 << doublings)
            .min(self.cfg.max_open_for)
    }

    /// Times it opened since it last closed.
    pub fn trips(&self) -> u32 {
        self.trips
    }

    /// Records a connect error or 5xx; returns the new state if it changed.
    pub fn failure(&mut self, now: Time) -> Option<Circuit> {
        let before = self.poll(now);
        self.successes = 0;
        self.failures += 1;
        let open = match before {
            Circuit::HalfOpen => true,
            Circuit::Closed => self.failures >= self.cfg.failures_to_open,
            Circuit::Open { .. } => false,
        };
        if open {
            self.trips += 1;
            self.state = Circuit::Open {
                until: now + self.open_period(),
            };
        }
        (self.state != before).then_some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hcfg() -> HealthSection {
        HealthSection {
            unhealthy_after: 3,
            healthy_after: 2,
            startup_grace: Duration::from_secs(60),
            ..HealthSection::default()
        }
    }

    #[test]
    fn failures_in_the_startup_grace_do_not_condemn_a_slow_engine() {
        let mut h = HealthTracker::new(&hcfg(), Time::ZERO);
        for s in 0..10 {
            assert_eq!(h.record(false, Time::from_millis(s * 1000)), None);
        }
        assert_eq!(h.state(), Health::Starting);
        assert_eq!(
            h.record(true, Time::from_millis(20_000)),
            Some(Health::Healthy)
        );
    }

    #[test]
    fn an_engine_that_never_starts_is_unhealthy_after_the_grace() {
        let mut h = HealthTracker::new(&hcfg(), Time::ZERO);
        assert_eq!(h.record(false, Time::from_millis(61_000)), None);
        assert_eq!(h.record(false, Time::from_millis(62_000)), None);
        assert_eq!(
            h.record(false, Time::from_millis(63_000)),
            Some(Health::Unhealthy)
        );
    }

    #[test]
    fn n_failures_to_go_down_and_m_successes_to_come_back() {
        let mut h = HealthTracker::new(&hcfg(), Time::ZERO);
        h.record(true, Time::ZERO);
        let t = Time::from_millis(100_000);
        assert_eq!(h.record(false, t), None);
        assert_eq!(
            h.record(true, t),
            None,
            "a success resets the failure count"
        );
        assert_eq!(h.record(false, t), None);
        assert_eq!(h.record(false, t), None);
        assert_eq!(h.record(false, t), Some(Health::Unhealthy));
        assert_eq!(h.record(true, t), None);
        assert_eq!(h.record(true, t), Some(Health::Healthy));
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_half_opens_after_cooldown_and_closes() {
        let cfg = CircuitSection {
            failures_to_open: 3,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(35),
            half_open_requests: 1,
            successes_to_close: 2,
        };
        let mut b = CircuitBreaker::new(&cfg);
        let t0 = Time::ZERO;
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.success(t0), None, "a success resets the count");
        b.failure(t0);
        b.failure(t0);
        assert_eq!(
            b.failure(t0),
            Some(Circuit::Open {
                until: Time::from_millis(10_000)
            })
        );
        assert!(!b.allows(Time::from_millis(9_999)));
        assert!(b.allows(Time::from_millis(10_000)));
        assert_eq!(b.poll(Time::from_millis(10_000)), Circuit::HalfOpen);
        // A failure while half-open reopens at once, for twice as long each time, up to
        // max_open_for.
        assert_eq!(
            b.failure(Time::from_millis(10_000)),
            Some(Circuit::Open {
                until: Time::from_millis(30_000)
            })
        );
        assert_eq!(b.poll(Time::from_millis(30_000)), Circuit::HalfOpen);
        assert_eq!(
            b.failure(Time::from_millis(30_000)),
            Some(Circuit::Open {
                until: Time::from_millis(65_000)
            }),
            "40 s capped at 35 s"
        );
        assert_eq!(b.trips(), 3);
        let t = Time::from_millis(65_000);
        assert_eq!(b.poll(t), Circuit::HalfOpen);
        assert_eq!(b.success(t), None);
        assert_eq!(b.success(t), Some(Circuit::Closed));
        assert_eq!(b.trips(), 0, "closing forgets the trips");
        for _ in 0..3 {
            b.failure(t);
        }
        assert_eq!(
            b.poll(t),
            Circuit::Open {
                until: Time::from_millis(75_000)
            },
            "back to open_for"
        );
    }
}
