//! `Scheduler`: the pure state machine of one pool (all instances serving one model and
//! that model's queue). It admits requests, lets the scheduling policy order the queue,
//! lets the routing strategy place requests on instances with room, and accounts for
//! completions, cancellations, expiry and instance changes. The gateway's dispatcher task
//! and the discrete-event simulation drive the very same code; it never reads a clock
//! (`now` is an argument) and never blocks.
//!
//! In-flight accounting is the scheduler's: an instance's slot is taken at placement (not
//! when the response starts) and given back by `complete` or `cancel`, so a burst can never
//! pile onto one instance between two load reports.
//!
//! This file holds the public types; `machine.rs` admission and dispatch, `lifecycle.rs`
//! completion, cancellation and expiry, `pool.rs` the instance table, runtime switching
//! and metrics accessors.

mod lifecycle;
mod machine;
mod pool;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use machine::Scheduler;

use crate::instance::{InstanceId, InstanceSpec};
use crate::predict::Rates;
pub use crate::reject::{RejectKind, RejectReason};
use crate::request::RequestMeta;
use crate::route::RoutingConfig;
use crate::route::balance::PeakEwma;
use crate::schedule::PolicyConfig;
use std::time::Duration;

/// Index of an instance in the scheduler's table. Stable until the instance is removed.
pub type InstanceIx = usize;

/// Pool-level settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Most requests waiting in the queue; beyond it new requests are rejected (or, with
    /// the `priority` and `adaptive` policies, a lower-class request is shed).
    pub max_queue: usize,
    /// Longest a request may wait in the queue before it is rejected.
    pub queue_timeout: Option<Duration>,
    /// The scheduling policy (default `adaptive`).
    pub policy: PolicyConfig,
    /// The routing strategy (default `load_balanced` with `least_connections`).
    pub routing: RoutingConfig,
    /// Seed of every random choice (`random`, `power_of_two`).
    pub seed: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_queue: 10_000,
            queue_timeout: Some(Duration::from_secs(30)),
            policy: PolicyConfig::default(),
            routing: RoutingConfig::default(),
            seed: 0,
        }
    }
}

/// Engine-reported load of an instance; `None` means unknown (never read as zero).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineLoad {
    /// Requests running in the engine.
    pub running: Option<f64>,
    /// Requests waiting inside the engine.
    pub waiting: Option<f64>,
    /// KV-cache usage, 0..=1.
    pub kv_usage: Option<f64>,
}

/// A request handed back with the reason it left the queue.
#[derive(Debug)]
pub struct Rejected<T> {
    /// The request.
    pub meta: RequestMeta,
    /// The caller's payload, returned untouched.
    pub payload: T,
    /// Why.
    pub reason: RejectReason,
}

/// A request placed on an instance: the caller now executes it there.
#[derive(Debug)]
pub struct Placement<T> {
    /// The request.
    pub meta: RequestMeta,
    /// The caller's payload.
    pub payload: T,
    /// The chosen instance.
    pub instance: InstanceId,
    /// Its index in the table.
    pub ix: InstanceIx,
    /// How long it waited in the queue.
    pub queued_for: Duration,
}

/// How a placed request ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Served; tokens and timings as measured by the caller.
    Success {
        /// Prompt tokens (engine-reported when known).
        prompt_tokens: u32,
        /// Generated tokens.
        completion_tokens: u32,
        /// Time from arrival to the first token.
        ttft: Option<Duration>,
    },
    /// Failed at or after the instance.
    Failure,
    /// The client went away.
    Cancelled,
}

/// One instance as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct InstanceState {
    /// Its spec.
    pub spec: InstanceSpec,
    /// Requests placed and not yet completed.
    pub inflight: u32,
    /// Healthy and circuit closed: may receive work.
    pub ready: bool,
    /// Draining: receives nothing new, in-flight work finishes.
    pub draining: bool,
    /// Last engine-reported load.
    pub load: EngineLoad,
    /// What the engine says about itself (batch limit, context, KV capacity).
    pub engine: crate::instance::EngineInfo,
    /// Placements made on it.
    pub placed_total: u64,
    /// Predicted speeds: seeded from the layout or `Scheduler::set_rates`, then measured.
    pub rates: Rates,
    /// Peak-EWMA of placement-to-completion latency (`least_response_time`).
    pub latency: PeakEwma,
}

impl InstanceState {
    /// A new, not yet ready instance with rates seeded from its layout.
    pub fn new(spec: InstanceSpec) -> Self {
        InstanceState {
            rates: Rates::for_layout(&spec.layout),
            spec,
            inflight: 0,
            ready: false,
            draining: false,
            load: EngineLoad::default(),
            engine: crate::instance::EngineInfo::default(),
            placed_total: 0,
            latency: PeakEwma::default(),
        }
    }

    /// Ready and not draining: may be given new work when it has room.
    pub fn routable(&self) -> bool {
        self.ready && !self.draining
    }

    /// Whether it can take one more request now.
    pub fn has_room(&self) -> bool {
        self.routable() && self.inflight < self.spec.max_inflight
    }

    /// Comparable busyness, lower is better: gateway in-flight plus engine-reported
    /// waiting, relative to capacity.
    pub fn load_score(&self) -> f64 {
        let waiting = self.load.waiting.unwrap_or(0.0);
        (f64::from(self.inflight) + waiting) / f64::from(self.spec.max_inflight.max(1))
    }
}

/// Error for an instance id that is already registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {0} is already registered")]
pub struct DuplicateInstance(pub InstanceId);
