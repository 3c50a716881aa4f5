//! Why a request was turned away: [`RejectReason`] (with the figures that explain it) and
//! [`RejectKind`] (its stable, fieldless label for metrics, logs, reports and HTTP codes).
//!
//! Every rejection the scheduler makes carries one of these, from the moment it decides to
//! the client's answer: the gateway maps the kind to an HTTP status and an OpenAI error
//! `code` equal to [`RejectKind::as_str`], the benchmark counts rejections by the same kind.

use crate::request::Priority;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The label of a rejection, without its figures. `as_str` is the snake_case word used in
/// metric labels, logs, reports and the OpenAI error `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The queue was at its limit and nothing could be shed for it.
    QueueFull,
    /// The pool has no instance at all.
    NoInstances,
    /// The pool has instances, but none may take work (unhealthy, circuit open, starting
    /// or draining).
    #[serde(rename = "no_ready_instance")]
    NoneReady,
    /// Waited longer than the queue timeout.
    QueueTimeout,
    /// Its end-to-end deadline passed while it was queued.
    DeadlineMissed,
    /// Shed under overload (lowest class and requests without an SLO first).
    Shed,
    /// No instance is predicted to meet its SLO.
    SloInfeasible,
    /// Even the cheapest suitable instance would exceed its cost budget.
    OverBudget,
    /// Its prompt plus requested output fits in no instance's context.
    ContextLengthExceeded,
}

impl RejectKind {
    /// Number of kinds.
    pub const COUNT: usize = 9;

    /// Every kind, in `index` order.
    pub const ALL: [RejectKind; Self::COUNT] = [
        RejectKind::QueueFull,
        RejectKind::NoInstances,
        RejectKind::NoneReady,
        RejectKind::QueueTimeout,
        RejectKind::DeadlineMissed,
        RejectKind::Shed,
        RejectKind::SloInfeasible,
        RejectKind::OverBudget,
        RejectKind::ContextLengthExceeded,
    ];

    /// A dense index for per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stable snake_case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectKind::QueueFull => "queue_full",
            RejectKind::NoInstances => "no_instances",
            RejectKind::NoneReady => "no_ready_instance",
            RejectKind::QueueTimeout => "queue_timeout",
            RejectKind::DeadlineMissed => "deadline_missed",
            RejectKind::Shed => "shed",
            RejectKind::SloInfeasible => "slo_infeasible",
            RejectKind::OverBudget => "over_budget",
            RejectKind::ContextLengthExceeded => "context_length_exceeded",
        }
    }

    /// The kind with this label, if any.
    pub fn from_label(label: &str) -> Option<RejectKind> {
        RejectKind::ALL.into_iter().find(|k| k.as_str() == label)
    }

    /// Whether a rejection of this kind means the request's SLO was missed (if it had one):
    /// it was accepted and then could not be served in time. Shedding and refusals at the
    /// door are load control, counted apart.
    pub const fn is_slo_miss(self) -> bool {
        matches!(self, RejectKind::DeadlineMissed | RejectKind::SloInfeasible)
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was not (or no longer) queued, with the figures that explain it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    /// The queue is at `max_queue`.
    #[error("the queue for this model is full ({max_queue} waiting)")]
    QueueFull {
        /// The configured limit.
        max_queue: usize,
    },
    /// The pool has no instances at all.
    #[error("no instance serves this model")]
    NoInstances,
    /// None of the pool's instances may take work now.
    #[error(
        "none of its {registered} instances is ready (unhealthy, circuit open, starting or draining)"
    )]
    NoneReady {
        /// Instances registered in the pool.
        registered: u32,
    },
    /// Waited longer than the queue timeout.
    #[error("waited {waited:?} in the queue, past the queue timeout of {timeout:?}")]
    QueueTimeout {
        /// How long it waited.
        waited: Duration,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Its end-to-end deadline passed while it was queued.
    #[error("its deadline passed after {waited:?} in the queue")]
    DeadlineMissed {
        /// How long it waited.
        waited: Duration,
    },
    /// Shed under overload: the predicted wait for its class exceeds what it can afford.
    #[error(
        "overloaded: a {class} priority request would wait about {predicted_wait:?} here, more than its {budget:?}; retry later"
    )]
    Shed {
        /// Its class.
        class: Priority,
        /// The wait predicted for it.
        predicted_wait: Duration,
        /// The longest wait it can afford (its TTFT slack, else its class's wait budget).
        budget: Duration,
    },
    /// No instance is predicted to meet its deadline or TTFT target.
    #[error("no instance can meet its SLO: the best prediction misses it by {short_by:?}")]
    SloInfeasible {
        /// How much the best prediction misses the target by.
        short_by: Duration,
    },
    /// Even the cheapest suitable instance would cost more than its budget.
    #[error("estimated cost ${estimate:.6} exceeds its budget ${budget:.6}")]
    OverBudget {
        /// The cheapest estimate, in dollars.
        estimate: f64,
        /// The request's budget, in dollars.
        budget: f64,
    },
    /// Its prompt plus requested output is longer than every instance's context.
    #[error(
        "this model's maximum context length is {max_model_len} tokens, but {requested} were requested"
    )]
    ContextLengthExceeded {
        /// Prompt tokens plus requested output tokens (estimated).
        requested: u64,
        /// The largest context of any instance of the pool.
        max_model_len: u32,
    },
}

impl RejectReason {
    /// Its label.
    pub const fn kind(&self) -> RejectKind {
        match self {
            RejectReason::QueueFull { .. } => RejectKind::QueueFull,
            RejectReason::NoInstances => RejectKind::NoInstances,
            RejectReason::NoneReady { .. } => RejectKind::NoneReady,
            RejectReason::QueueTimeout { .. } => RejectKind::QueueTimeout,
            RejectReason::DeadlineMissed { .. } => RejectKind::DeadlineMissed,
            RejectReason::Shed { .. } => RejectKind::Shed,
            RejectReason::SloInfeasible { .. } => RejectKind::SloInfeasible,
            RejectReason::OverBudget { .. } => RejectKind::OverBudget,
            RejectReason::ContextLengthExceeded { .. } => RejectKind::ContextLengthExceeded,
        }
    }

    /// The stable snake_case label for metrics and logs.
    pub const fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }

    /// When the client may usefully try again, for `Retry-After`: `None` for rejections a
    /// retry cannot fix (the request itself is the problem).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RejectReason::ContextLengthExceeded { .. } | RejectReason::OverBudget { .. } => None,
            RejectReason::Shed { predicted_wait, .. } => {
                Some((*predicted_wait).clamp(Duration::from_secs(1), Duration::from_secs(30)))
            }
            _ => Some(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_dense_indexes_and_round_trip_through_their_labels() {
        for (i, k) in RejectKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(RejectKind::from_label(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(RejectKind::from_label("nonsense"), None);
        assert!(RejectKind::DeadlineMissed.is_slo_miss());
        assert!(!RejectKind::Shed.is_slo_miss());
    }

    #[test]
    fn reasons_name_their_kind_and_say_when_a_retry_can_help() {
        let shed = RejectReason::Shed {
            class: Priority::Low,
            predicted_wait: Duration::from_secs(90),
            budget: Duration::from_secs(10),
        };
        assert_eq!(shed.as_str(), "shed");
        assert_eq!(shed.retry_after(), Some(Duration::from_secs(30)));
        assert!(shed.to_string().contains("low priority"));
        let long = RejectReason::ContextLengthExceeded {
            requested: 60_000,
            max_model_len: 8192,
        };
        assert_eq!(long.kind(), RejectKind::ContextLengthExceeded);
        assert_eq!(long.retry_after(), None);
        assert!(long.to_string().contains("8192"));
    }
}
