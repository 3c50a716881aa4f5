//! One tenant's use of its limits, as pure arithmetic on a time given in milliseconds:
//! requests and tokens in the current anchored minute, requests in flight, and spend.
//! The Redis script of `store.rs` does the very same on the server (so replicas share
//! one count); this is what a replica uses alone, or while the store is unreachable.
//!
//! Tokens are reserved at admission (prompt + predicted output) and settled at the end
//! with what was used. So that no tenant overshoots its window by more than one request's
//! output, a request is admitted only if, with every request in flight producing all it
//! may (its `max_tokens`, beyond what was reserved for it), the window still holds the
//! new request's reservation: only the newest request's misprediction can go past the
//! limit.

use super::period::period_of;
use crate::config::TenantLimits;

/// Length of a window.
pub const WINDOW_MS: u64 = 60_000;

/// What a request asks of the limits at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Tokens reserved: prompt + predicted output.
    pub reserve: u64,
    /// What it may use beyond the reservation (`max_tokens` − predicted output).
    pub excess: u64,
}

/// What an admitted request holds until it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The window its tokens were reserved in.
    pub window: u64,
    /// The ask.
    pub ask: Ask,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// `requests_per_minute` used up until the window ends.
    Requests {
        /// The limit.
        limit: u32,
        /// Milliseconds until the window ends.
        retry_after_ms: u64,
    },
    /// `tokens_per_minute` has no room for the request until the window ends.
    Tokens {
        /// The limit.
        limit: u64,
        /// What the request would reserve.
        asked: u64,
        /// Milliseconds until the window ends.
        retry_after_ms: u64,
    },
    /// The request alone needs more than a whole window's tokens: never admitted.
    TooLarge {
        /// The limit.
        limit: u64,
        /// What it would reserve.
        asked: u64,
    },
    /// `concurrent` requests are in flight already.
    Concurrent {
        /// The limit.
        limit: u32,
    },
    /// The budget is spent.
    Budget {
        /// The budget.
        limit: f64,
        /// What was spent.
        spent: f64,
        /// Milliseconds until the budget starts over, if it has a period.
        retry_after_ms: Option<u64>,
    },
}

impl Refusal {
    /// The `reason` label of `inferplane_tenant_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Requests { .. } => "requests_per_minute",
            Refusal::Tokens { .. } | Refusal::TooLarge { .. } => "tokens_per_minute",
            Refusal::Concurrent { .. } => "concurrent",
            Refusal::Budget { .. } => "budget",
        }
    }

    /// Seconds the client should wait (`Retry-After`), if waiting helps.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Requests { retry_after_ms, .. } | Refusal::Tokens { retry_after_ms, .. } => {
                Some(retry_after_ms.div_ceil(1000).max(1))
            }
            Refusal::Concurrent { .. } => Some(1),
            Refusal::Budget { retry_after_ms, .. } => {
                retry_after_ms.map(|ms| ms.div_ceil(1000).max(1))
            }
            Refusal::TooLarge { .. } => None,
        }
    }
}

/// Where a tenant stands against its windowed limits (OpenAI's `x-ratelimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// `requests_per_minute` and what is left of it, if limited.
    pub requests: Option<(u32, u32)>,
    /// `tokens_per_minute` and what is left of it, if limited.
    pub tokens: Option<(u64, u64)>,
    /// Milliseconds until the window ends.
    pub reset_ms: u64,
}

/// One tenant's counts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// The window `requests` and `tokens` count in.
    pub window: u64,
    /// Requests admitted in it.
    pub requests: u32,
    /// Tokens reserved or used in it.
    pub tokens: u64,
    /// Requests in flight.
    pub inflight: u32,
    /// Sum of the in-flight requests' [`Ask::excess`].
    pub excess: u64,
    /// Spend in the budget period `spend_period`.
    pub spent: f64,
    /// The budget period `spent` counts in (see `period.rs`; 0 without one).
    pub spend_period: u64,
}

/// The window `now_ms` falls in.
pub fn window_of(now_ms: u64) -> u64 {
    now_ms / WINDOW_MS
}

impl Usage {
    fn roll(&mut self, now_ms: u64) {
        let w = window_of(now_ms);
        if w != self.window {
            self.window = w;
            self.requests = 0;
            self.tokens = 0;
        }
    }

    /// Starts the spend over when the budget period changed by `now_ms`.
    fn roll_spend(&mut self, limits: &TenantLimits, now_ms: u64) {
        if let Some(p) = period_of(limits.budget_period, now_ms)
            && p.id != self.spend_period
        {
            self.spend_period = p.id;
            self.spent = 0.0;
        }
    }

    /// Where the tenant stands at `now_ms`.
    pub fn standing(&mut self, limits: &TenantLimits, now_ms: u64) -> Standing {
        self.roll(now_ms);
        Standing {
            requests: limits
                .requests_per_minute
                .map(|l| (l, l.saturating_sub(self.requests))),
            tokens: limits.tokens_per_minute.map(|l| {
                let used = self.tokens.saturating_add(self.excess);
                (l, l.saturating_sub(used))
            }),
            reset_ms: (self.window + 1) * WINDOW_MS - now_ms,
        }
    }

    /// Admits `ask` at `now_ms` if every limit has room, counting it in.
    pub fn admit(
        &mut self,
        limits: &TenantLimits,
        ask: Ask,
        now_ms: u64,
    ) -> Result<(Held, Standing), (Refusal, Standing)> {
        let standing = self.standing(limits, now_ms);
        let retry_after_ms = standing.reset_ms;
        self.roll_spend(limits, now_ms);
        if let Some(limit) = limits.budget_usd
            && self.spent >= limit
        {
            let r = Refusal::Budget {
                limit,
                spent: self.spent,
                retry_after_ms: period_of(limits.budget_period, now_ms).map(|p| p.reset_ms),
            };
            return Err((r, standing));
        }
        if let Some(limit) = limits.concurrent
            && self.inflight >= limit
        {
            return Err((Refusal::Concurrent { limit }, standing));
        }
        if let Some(limit) = limits.requests_per_minute
            && self.requests >= limit
        {
            let r = Refusal::Requests {
                limit,
                retry_after_ms,
            };
            return Err((r, standing));
        }
        if let Some(limit) = limits.tokens_per_minute {
            if ask.reserve > limit {
                let r = Refusal::TooLarge {
                    limit,
                    asked: ask.reserve,
                };
                return Err((r, standing));
            }
            if self.tokens + self.excess + ask.reserve > limit {
                let r = Refusal::Tokens {
                    limit,
                    asked: ask.reserve,
                    retry_after_ms,
                };
                return Err((r, standing));
            }
        }
        self.requests += 1;
        self.tokens += ask.reserve;
        self.inflight += 1;
        self.excess += ask.excess;
        let held = Held {
            window: self.window,
            ask,
        };
        Ok((held, self.standing(limits, now_ms)))
    }

    /// Settles `held` with the `used` tokens at `now_ms`: in the window it was reserved in
    /// the difference is corrected; in a later one, only what went past the reservation
    /// is counted (it was produced then).
    pub fn settle(&mut self, held: Held, used: u64, now_ms: u64) {
        self.roll(now_ms);
        if held.window == self.window {
            self.tokens = (self.tokens + used).saturating_sub(held.ask.reserve);
        } else {
            self.tokens += used.saturating_sub(held.ask.reserve);
        }
        self.inflight = self.inflight.saturating_sub(1);
        self.excess = self.excess.saturating_sub(held.ask.excess);
    }

    /// Counts spend at `now_ms`.
    pub fn spend(&mut self, limits: &TenantLimits, usd: f64, now_ms: u64) {
        self.roll_spend(limits, now_ms);
        if usd.is_finite() && usd > 0.0 {
            self.spent += usd;
        }
    }

    /// Spend in the budget period of `now_ms`.
    pub fn spent(&mut self, limits: &TenantLimits, now_ms: u64) -> f64 {
        self.roll_spend(limits, now_ms);
        self.spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u64>, conc: Option<u32>) -> TenantLimits {
        TenantLimits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            concurrent: conc,
            budget_usd: None,
            budget_period: None,
        }
    }

    const T0: u64 = 10 * WINDOW_MS;

    #[test]
    fn requests_per_minute_count_admissions_and_reset_with_the_window() {
        let l = limits(Some(2), None, None);
        let mut u = Usage::default();
        let ask = Ask {
            reserve: 10,
            excess: 0,
        };
        let (h, s) = u.admit(&l, ask, T0 + 1_000).unwrap();
        assert_eq!(s.requests, Some((2, 1)));
        assert_eq!(s.reset_ms, 59_000);
        u.settle(h, 10, T0 + 2_000);
        u.admit(&l, ask, T0 + 3_000).unwrap();
        let (r, s) = u.admit(&l, ask, T0 + 30_000).unwrap_err();
        assert_eq!(r.reason(), "requests_per_minute");
        assert_eq!(r.retry_after_secs(), Some(30));
        assert_eq!(s.requests, Some((2, 0)));
        u.admit(&l, ask, T0 + WINDOW_MS).unwrap();
    }

    #[test]
    fn in_flight_requests_count_all_they_may_use_so_only_the_newest_can_overshoot() {
        let l = limits(None, Some(1_000), None);
        let mut u = Usage::default();
        // predicted 100 of max 300, prompt 100
        let ask = Ask {
            reserve: 200,
            excess: 200,
        };
        let (a, _) = u.admit(&l, ask, T0).unwrap();
        let (b, s) = u.admit(&l, ask, T0).unwrap();
        // 400 reserved + 400 the two may still use beyond it
        assert_eq!(s.tokens, Some((1_000, 200)));
        // a third just fits (800 + 200); a fourth would not
        let (c, _) = u.admit(&l, ask, T0).unwrap();
        let (r, _) = u.admit(&l, ask, T0).unwrap_err();
        assert_eq!(r.reason(), "tokens_per_minute");
        // all three use everything: only the newest's excess goes past the limit
        for h in [a, b, c] {
            u.settle(h, 400, T0 + 10);
        }
        assert_eq!(u.tokens, 1_200);
        assert!(u.tokens <= 1_000 + ask.excess);
        assert_eq!(u.standing(&l, T0 + 20).tokens, Some((1_000, 0)));
        u.admit(&l, ask, T0 + 20).unwrap_err();
        // the next window starts empty
        u.admit(&l, ask, T0 + WINDOW_MS).unwrap();
    }

    #[test]
    fn a_request_larger_than_the_window_is_refused_for_good() {
        let l = limits(None, Some(100), None);
        let mut u = Usage::default();
        let ask = Ask {
            reserve: 101,
            excess: 0,
        };
        let (r, _) = u.admit(&l, ask, T0).unwrap_err();
        assert!(matches!(r, Refusal::TooLarge { .. }));
        assert_eq!(r.retry_after_secs(), None);
    }

    #[test]
    fn settling_in_a_later_window_counts_only_what_went_past_the_reservation() {
        let l = limits(None, Some(1_000), Some(1));
        let mut u = Usage::default();
        let ask = Ask {
            reserve: 300,
            excess: 100,
        };
        let (h, _) = u.admit(&l, ask, T0 + 59_000).unwrap();
        let (r, _) = u.admit(&l, ask, T0 + 59_001).unwrap_err();
        assert_eq!(r, Refusal::Concurrent { limit: 1 });
        u.settle(h, 350, T0 + WINDOW_MS + 1);
        assert_eq!((u.tokens, u.inflight, u.excess), (50, 0, 0));
        // refunds in the reservation's window
        let (h, _) = u.admit(&l, ask, T0 + WINDOW_MS + 2).unwrap();
        u.settle(h, 0, T0 + WINDOW_MS + 3);
        assert_eq!(u.tokens, 50);
    }

    #[test]
    fn a_spent_budget_refuses_until_raised() {
        let l = TenantLimits {
            budget_usd: Some(1.0),
            budget_period: None,
            ..TenantLimits::default()
        };
        let mut u = Usage::default();
        let ask = Ask {
            reserve: 1,
            excess: 0,
        };
        let (h, _) = u.admit(&l, ask, T0).unwrap();
        u.settle(h, 1, T0);
        u.spend(&l, 0.6, T0);
        u.spend(&l, f64::NAN, T0);
        u.admit(&l, ask, T0).unwrap();
        u.spend(&l, 0.5, T0);
        let (r, _) = u.admit(&l, ask, T0).unwrap_err();
        assert_eq!(r.reason(), "budget");
        assert_eq!(r.retry_after_secs(), None);
    }

    #[test]
    fn a_daily_budget_starts_over_at_utc_midnight() {
        let l = TenantLimits {
            budget_usd: Some(1.0),
            budget_period: Some(crate::config::BudgetPeriod::Day),
            ..TenantLimits::default()
        };
        const DAY: u64 = 86_400_000;
        // 23:00 UTC
        let late = 20_000 * DAY + 23 * 3_600_000;
        let mut u = Usage::default();
        let ask = Ask {
            reserve: 1,
            excess: 0,
        };
        u.admit(&l, ask, late).unwrap();
        u.spend(&l, 1.2, late);
        let (r, _) = u.admit(&l, ask, late + 1_000).unwrap_err();
        assert!(matches!(r, Refusal::Budget { .. }), "{r:?}");
        // retry when the day ends, an hour less a second later
        assert_eq!(r.retry_after_secs(), Some(3_599));
        assert_eq!(u.spent(&l, late + 1_000), 1.2);
        // the next day: nothing spent yet
        assert_eq!(u.spent(&l, 20_001 * DAY), 0.0);
        u.admit(&l, ask, 20_001 * DAY + 1).unwrap();
    }
}
