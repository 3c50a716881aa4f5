//! `Scheduler`: the pure state machine of one pool (all instances serving one model and
//! that model's queue). It admits requests, lets the scheduling policy order the queue,
//! lets the routing strategy place requests on instances with room, controls overload by
//! class, and accounts for attempts' outcomes, cancellations, expiry and instance changes.
//! The gateway's dispatcher task and the discrete-event simulation drive the very same
//! code the same way: apply an event (`submit`, `retry`, `first_token`, `complete`,
//! `cancel`, an instance change), then call [`Scheduler::poll`], which hands out the
//! placements and rejections due and says when to poll again. It never reads a clock
//! (`now` is an argument) and never blocks.
//!
//! In-flight accounting is the scheduler's: an instance's slot is taken at placement (not
//! when the response starts) and given back by `complete`, so a burst can never pile onto
//! one instance between two load reports. In-flight work is keyed by attempt.
//!
//! Files: this one the public types; `machine.rs` the state and admission; `dispatch.rs`
//! `poll` and placement; `lifecycle.rs` outcomes, cancellation and expiry; `overload.rs`
//! predicted waits and class-aware shedding; `instances.rs` the instance table;
//! `switching.rs` run-time switching and read-only accessors.

mod dispatch;
#[cfg(test)]
mod fair_tests;
#[cfg(test)]
mod fleet_tests;
mod instances;
mod kept;
mod lifecycle;
mod machine;
mod overload;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod protect_tests;
mod switching;
#[cfg(test)]
mod tests;

pub use machine::Scheduler;

use crate::instance::InstanceId;
use crate::load::SaturationConfig;
use crate::outcome::AttemptId;
use crate::pool::InstanceIx;
use crate::reject::RejectReason;
use crate::request::{ClassDurations, RequestMeta};
use crate::route::RoutingConfig;
use crate::schedule::PolicyConfig;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where requests wait when the engines are busy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueAt {
    /// In the gateway: an instance takes requests while it is not saturated (see `load`);
    /// the rest wait where the policy orders them. The control plane.
    #[default]
    Gateway,
    /// In the engines: every ready instance always has room and the gateway never holds a
    /// request. A plain router, for baselines.
    Engine,
}

/// Class-aware overload control (see `overload.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadConfig {
    /// How long a request of each class may wait in the queue (less when its own SLO
    /// leaves less): a request predicted to wait longer is shed (429), one that has waited
    /// this long is rejected. Lower classes wait less, so they are shed first; the classes
    /// age by the longest of these per rank (see `schedule/order.rs`).
    pub wait: ClassDurations,
    /// Whether to shed by predicted wait (with class-aware policies). Off, requests leave
    /// the queue only by placement, timeout, deadline or a full queue.
    pub shed: bool,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            wait: ClassDurations {
                critical: Duration::from_secs(20),
                high: Duration::from_secs(10),
                normal: Duration::from_secs(5),
                low: Duration::from_secs(3),
            },
            shed: true,
        }
    }
}

/// Pool-level settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Most requests waiting in the queue; beyond it the newest request of the lowest
    /// class below the newcomer is shed (class-aware policies), else the newcomer is
    /// rejected.
    pub max_queue: usize,
    /// Longest any request may wait in the queue.
    pub queue_timeout: Option<Duration>,
    /// The scheduling policy (default `adaptive`).
    pub policy: PolicyConfig,
    /// The routing strategy (default `load_balanced` with `least_ttft`).
    pub routing: RoutingConfig,
    /// Seed of every random choice (`random`, `power_of_two`).
    pub seed: u64,
    /// Where requests wait.
    pub queue_at: QueueAt,
    /// When an instance counts as saturated.
    pub saturation: SaturationConfig,
    /// Class-aware overload control.
    pub overload: OverloadConfig,
    /// How many queued requests a dispatch may pass over when the one at the head cannot
    /// be placed yet (no instance it may use has room), so that it never blocks the rest.
    pub look_ahead: usize,
    /// What a tenant above its share leaves free for the others (see
    /// [`crate::schedule::headroom`]).
    pub tenant_headroom: crate::schedule::headroom::TenantHeadroom,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_queue: 10_000,
            queue_timeout: Some(Duration::from_secs(30)),
            policy: PolicyConfig::default(),
            routing: RoutingConfig::default(),
            seed: 0,
            queue_at: QueueAt::default(),
            saturation: SaturationConfig::default(),
            overload: OverloadConfig::default(),
            look_ahead: 64,
            tenant_headroom: Default::default(),
        }
    }
}

/// A request handed back with the reason it left (or never entered) the queue.
#[derive(Debug)]
pub struct Rejection<T> {
    /// The request.
    pub meta: RequestMeta,
    /// The caller's payload, returned untouched.
    pub payload: T,
    /// Why.
    pub reason: RejectReason,
}

/// An attempt placed on an instance: the caller now executes it there.
#[derive(Debug)]
pub struct Placement<T> {
    /// The request.
    pub meta: RequestMeta,
    /// The caller's payload.
    pub payload: T,
    /// The attempt: report its end with this id.
    pub attempt: AttemptId,
    /// The chosen instance.
    pub instance: InstanceId,
    /// Its index in the table.
    pub ix: InstanceIx,
    /// How long it waited in the queue.
    pub queued_for: Duration,
    /// What a prefix-aware strategy found (`None` for the others).
    pub prefix: Option<crate::route::PrefixNote>,
}

/// What one `poll` produced. Reused from poll to poll: `poll` appends, the caller drains.
#[derive(Debug)]
pub struct Effects<T> {
    /// Attempts to execute now.
    pub placements: Vec<Placement<T>>,
    /// Requests to answer with an error now.
    pub rejections: Vec<Rejection<T>>,
    /// When to poll again if nothing else happens first (`None`: only on the next event).
    pub wake_at: Option<Time>,
}

impl<T> Default for Effects<T> {
    fn default() -> Self {
        Effects {
            placements: Vec::new(),
            rejections: Vec::new(),
            wake_at: None,
        }
    }
}

impl<T> Effects<T> {
    /// Whether there is nothing to hand out.
    pub fn is_empty(&self) -> bool {
        self.placements.is_empty() && self.rejections.is_empty()
    }
}

/// What the scheduler concluded from an attempt's end.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The instance it ran on.
    pub instance: InstanceId,
    /// Whether its request met its SLO (`None`: no SLO, a retried attempt, or cancelled).
    pub slo_met: Option<bool>,
    /// Attempts in flight on the instance when it ended, itself included.
    pub concurrency: u32,
}

/// Error for an instance id that is already registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {0} is already registered")]
pub struct DuplicateInstance(pub InstanceId);
