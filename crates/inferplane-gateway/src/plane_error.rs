//! [`PlaneError`]: why the library API ([`ControlPlane`](crate::ControlPlane) and the
//! dispatcher behind it) could not do what it was asked. It says what went wrong in the
//! library's own terms (the model, the core's [`RejectReason`], the instance id, the core's
//! [`InvalidSetting`]) and knows nothing of HTTP: only the edge (`http/`) turns it into the
//! OpenAI-shaped [`ApiError`](crate::ApiError), with its status, `code` and `Retry-After`.

use inferplane_core::settings::InvalidSetting;
use inferplane_core::{DuplicateInstance, InstanceId, RejectReason};
use std::fmt;
use std::time::Duration;

/// An error of the control plane's API: submitting, retrying, registering, removing and
/// draining instances, reading views and switching policies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaneError {
    /// No pool serves the model asked for.
    #[error("no pool serves the model `{model}` (served here: {})", served(.known))]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// The models served, sorted.
        known: Vec<String>,
    },
    /// The scheduler would not queue the request, or dropped it from the queue (full, shed,
    /// timed out, past its deadline, infeasible, over budget, too long, no ready instance).
    #[error("the request for model `{model}` was rejected")]
    Rejected {
        /// The request's model (pool).
        model: String,
        /// Why, with the figures that explain it; its
        /// [`retry_after`](RejectReason::retry_after) says when a retry may succeed.
        #[source]
        reason: RejectReason,
        /// For a [`NoneReady`](inferplane_core::RejectKind::NoneReady) rejection: why the
        /// pool's instances take no work.
        not_ready: Option<NotReady>,
    },
    /// The change conflicts with what is registered: an instance with this id already is.
    #[error("cannot register the instance")]
    Conflict(#[source] DuplicateInstance),
    /// No instance with this id is registered.
    #[error("no instance {0}")]
    NotFound(InstanceId),
    /// A run-time policy change carries a setting outside what the scheduler accepts;
    /// nothing was changed.
    #[error("invalid policy change")]
    InvalidSetting(#[source] InvalidSetting),
    /// The dispatcher no longer runs (shut down, or stopped on a bug): nothing can be
    /// scheduled or changed.
    #[error("the control plane is shutting down")]
    ShuttingDown,
}

impl PlaneError {
    /// The rejection's reason, if the scheduler rejected the request.
    pub fn reject_reason(&self) -> Option<&RejectReason> {
        match self {
            PlaneError::Rejected { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// When trying again may succeed: the rejection's own figure (a shed request's
    /// predicted wait, else a second); `None` when a retry cannot help (the request itself
    /// is the problem, or the control plane is gone).
    pub fn retry_after(&self) -> Option<Duration> {
        self.reject_reason().and_then(RejectReason::retry_after)
    }
}

/// `a, b` or `none`.
fn served(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    }
}

/// Why the instances of a pool take no work, for a
/// [`NoneReady`](inferplane_core::RejectKind::NoneReady) rejection: the first
/// [`NotReady::LISTED`] instances, each with its state, and how many more there are. Shown
/// as `a: unhealthy, b: draining, and 3 more`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotReady {
    /// Instances and why each is not ready, at most [`NotReady::LISTED`].
    pub instances: Vec<(InstanceId, Unready)>,
    /// Instances not listed.
    pub more: usize,
}

impl NotReady {
    /// The most instances listed.
    pub const LISTED: usize = 8;

    /// Adds an instance, or counts it once [`NotReady::LISTED`] are listed.
    pub fn push(&mut self, id: InstanceId, why: Unready) {
        if self.instances.len() < Self::LISTED {
            self.instances.push((id, why));
        } else {
            self.more += 1;
        }
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (id, why) in &self.instances {
            write!(f, "{sep}{id}: {why}")?;
            sep = ", ";
        }
        if self.more > 0 {
            write!(f, "{sep}and {} more", self.more)?;
        }
        Ok(())
    }
}

/// Why one instance takes no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unready {
    /// It is being drained.
    Draining,
    /// No health check has passed yet.
    Starting,
    /// Its health checks fail.
    Unhealthy,
    /// Its circuit breaker opened after failed attempts.
    CircuitOpen,
    /// Its circuit breaker lets only probe requests through.
    CircuitHalfOpen,
    /// None of the above is known (it is being registered or removed).
    Other,
}

impl Unready {
    /// How it reads in a message.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unready::Draining => "draining",
            Unready::Starting => "starting (no health check passed yet)",
            Unready::Unhealthy => "unhealthy",
            Unready::CircuitOpen => "circuit open after failures",
            Unready::CircuitHalfOpen => "circuit half-open",
            Unready::Other => "not ready",
        }
    }
}

impl fmt::Display for Unready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferplane_core::RejectKind;
    use std::error::Error;

    #[test]
    fn rejections_keep_their_reason_as_the_source_and_say_when_to_retry() {
        let e = PlaneError::Rejected {
            model: "m".into(),
            reason: RejectReason::QueueFull { max_queue: 3 },
            not_ready: None,
        };
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(
            e.reject_reason().map(RejectReason::kind),
            Some(RejectKind::QueueFull)
        );
        let source = e.source().map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("the queue for this model is full (3 waiting)")
        );
        assert_eq!(PlaneError::ShuttingDown.retry_after(), None);
        let long = PlaneError::Rejected {
            model: "m".into(),
            reason: RejectReason::ContextLengthExceeded {
                requested: 10,
                max_model_len: 5,
            },
            not_ready: None,
        };
        assert_eq!(
            long.retry_after(),
            None,
            "a retry cannot shorten the prompt"
        );
    }

    #[test]
    fn not_ready_lists_a_few_instances_and_counts_the_rest() {
        let mut n = NotReady::default();
        assert_eq!(n.to_string(), "");
        for i in 0..10 {
            n.push(InstanceId::new(format!("i{i}")), Unready::Unhealthy);
        }
        assert_eq!(n.instances.len(), NotReady::LISTED);
        assert_eq!(n.more, 2);
        let s = n.to_string();
        assert!(s.starts_with("i0: unhealthy, i1: unhealthy"), "{s}");
        assert!(s.ends_with("i7: unhealthy, and 2 more"), "{s}");
    }

    #[test]
    fn settings_and_conflicts_keep_the_core_error_as_their_source() {
        let bad = InvalidSetting {
            field: "routing.capacity",
            problem: "0 is not within [1, 16777216]".into(),
        };
        let e = PlaneError::InvalidSetting(bad.clone());
        assert_eq!(e.source().map(ToString::to_string), Some(bad.to_string()));
        let dup = PlaneError::Conflict(DuplicateInstance(InstanceId::new("a")));
        assert_eq!(
            dup.source().map(ToString::to_string).as_deref(),
            Some("instance a is already registered")
        );
        let unknown = PlaneError::UnknownModel {
            model: "x".into(),
            known: vec![],
        };
        assert_eq!(
            unknown.to_string(),
            "no pool serves the model `x` (served here: none)"
        );
    }
}
