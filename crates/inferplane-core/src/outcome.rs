//! How an attempt ended: the one outcome type from which every counter, SLO figure and
//! metric label is derived, and the SLO judgement, made once.
//!
//! A request may take several attempts (a failure before the first byte reached the
//! client is retried on another instance). Each attempt is named by an [`AttemptId`]
//! (request id + attempt number), so a retry never races its own failed attempt. Only
//! the attempt that ends the request (anything but a failure that is being retried) is
//! judged against the request's SLO.

use crate::request::{RequestId, RequestMeta};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// One attempt of a request at an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AttemptId {
    /// The request.
    pub request: RequestId,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
}

impl AttemptId {
    /// The first attempt of `request`.
    pub const fn first(request: RequestId) -> Self {
        AttemptId {
            request,
            attempt: 1,
        }
    }

    /// The attempt after this one.
    pub const fn next(self) -> Self {
        AttemptId {
            request: self.request,
            attempt: self.attempt.saturating_add(1),
        }
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.request, self.attempt)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Served completely.
    Success {
        /// Prompt tokens (engine-reported, else the gateway's estimate).
        prompt_tokens: u32,
        /// Generated tokens.
        completion_tokens: u32,
        /// Prompt tokens the engine served from its prefix cache, if it said.
        cached_tokens: Option<u32>,
        /// From arrival at the control plane to the first token, for streamed answers;
        /// `None` when the answer came whole (the client then sees its first token at the
        /// end, and the engine's own first-token time is unknown).
        first_token: Option<Duration>,
        /// From arrival at the control plane to the last byte.
        latency: Duration,
    },
    /// The engine answered 4xx: the request is over, the instance is fine.
    ClientError,
    /// The instance failed before any byte reached the client (connect error, 5xx,
    /// timeout). With `retrying`, the request goes on elsewhere and this attempt is not
    /// judged.
    Failed {
        /// The request will be retried on another instance.
        retrying: bool,
    },
    /// The stream broke after bytes reached the client.
    StreamBroken,
    /// The client went away.
    Cancelled,
}

impl Outcome {
    /// The stable label for metrics and logs.
    pub const fn label(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::ClientError => "client_error",
            Outcome::Failed { retrying: true } => "retried",
            Outcome::Failed { retrying: false } => "upstream_error",
            Outcome::StreamBroken => "stream_broken",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Whether this attempt ends its request (everything but a failure being retried).
    pub const fn ends_request(&self) -> bool {
        !matches!(self, Outcome::Failed { retrying: true })
    }

    /// Whether the instance is to blame (for circuit breakers and instance counters).
    pub const fn instance_fault(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::StreamBroken)
    }

    /// Whether the request was served.
    pub const fn is_success(&self) -> bool {
        matches!(self, Outcome::Success { .. })
    }
}

/// A request's SLO: its targets, relative to its arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slo {
    /// End-to-end deadline.
    pub deadline: Option<Duration>,
    /// Time-to-first-token target.
    pub ttft_target: Option<Duration>,
}

impl Slo {
    /// The SLO of `meta`.
    pub fn of(meta: &RequestMeta) -> Self {
        Slo {
            deadline: meta.deadline,
            ttft_target: meta.ttft_target,
        }
    }

    /// Whether there is any target.
    pub fn is_some(&self) -> bool {
        self.deadline.is_some() || self.ttft_target.is_some()
    }

    /// Whether the request met it, judged once from its ending attempt: `None` when it
    /// has no target, or the attempt does not end the request, or the client cancelled (a
    /// cancelled request is not judged). A success meets it when its end-to-end latency
    /// is within the deadline and its first token (the whole answer, when not streamed)
    /// came within the TTFT target; any failure misses it.
    pub fn judge(&self, outcome: &Outcome) -> Option<bool> {
        if !self.is_some() || !outcome.ends_request() {
            return None;
        }
        match *outcome {
            Outcome::Success {
                first_token,
                latency,
                ..
            } => {
                let e2e_ok = self.deadline.is_none_or(|d| latency <= d);
                let first = first_token.unwrap_or(latency);
                let ttft_ok = self.ttft_target.is_none_or(|t| first <= t);
                Some(e2e_ok && ttft_ok)
            }
            Outcome::Cancelled => None,
            _ => Some(false),
        }
    }
}

/// [`Slo::judge`] for `meta`'s SLO.
pub fn slo_met(meta: &RequestMeta, outcome: &Outcome) -> Option<bool> {
    Slo::of(meta).judge(outcome)
}

/// Whether the request carries any SLO (an end-to-end deadline or a TTFT target).
pub fn has_slo(meta: &RequestMeta) -> bool {
    meta.deadline.is_some() || meta.ttft_target.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Time;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn success(first: Option<u64>, latency: u64) -> Outcome {
        Outcome::Success {
            prompt_tokens: 1,
            completion_tokens: 1,
            cached_tokens: None,
            first_token: first.map(ms),
            latency: ms(latency),
        }
    }

    #[test]
    fn a_retried_attempt_is_not_judged_and_a_final_failure_misses() {
        let mut m = RequestMeta::new(RequestId(1), "m", 1, 1, Time::ZERO);
        m.ttft_target = Some(ms(100));
        assert_eq!(slo_met(&m, &Outcome::Failed { retrying: true }), None);
        assert_eq!(
            slo_met(&m, &Outcome::Failed { retrying: false }),
            Some(false)
        );
        assert_eq!(slo_met(&m, &Outcome::StreamBroken), Some(false));
        assert_eq!(slo_met(&m, &Outcome::Cancelled), None);
        assert_eq!(slo_met(&m, &success(Some(90), 5000)), Some(true));
        assert_eq!(slo_met(&m, &success(Some(110), 200)), Some(false));
        assert_eq!(
            slo_met(&m, &success(None, 150)),
            Some(false),
            "a whole answer's first token is its last byte"
        );
        m.deadline = Some(ms(1000));
        assert_eq!(slo_met(&m, &success(Some(90), 1001)), Some(false));
        let plain = RequestMeta::new(RequestId(2), "m", 1, 1, Time::ZERO);
        assert_eq!(slo_met(&plain, &success(Some(1), 1)), None);
    }

    #[test]
    fn labels_and_blame_follow_the_outcome() {
        assert_eq!(Outcome::Failed { retrying: true }.label(), "retried");
        assert!(!Outcome::Failed { retrying: true }.ends_request());
        assert!(Outcome::StreamBroken.instance_fault());
        assert!(!Outcome::ClientError.instance_fault());
        let a = AttemptId::first(RequestId(7));
        assert_eq!(a.next().attempt, 2);
        assert_eq!(a.next().to_string(), "7#2");
    }
}
