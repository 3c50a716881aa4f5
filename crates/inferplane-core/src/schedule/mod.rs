//! Scheduling policies: which queued request goes next, and (for the SLO and cost
//! policies) which instances it may go to.
//!
//! The queue itself (the requests and their payloads) lives in the `Scheduler`; a policy
//! only holds [`QueueKey`]s in its own order. Removal from the queue (cancel, expiry,
//! shedding, placement through another structure) is lazy: a key whose slot no longer holds
//! the same sequence number is stale ([`Live`]) and is skipped and dropped when it reaches
//! the head. The scheduler calls [`SchedulingPolicy::compact`] when stale keys outnumber
//! live ones, so memory stays proportional to the queue.
//!
//! The registry is [`Policy`], an exhaustive `match` over [`PolicyConfig`].

pub mod adaptive;
pub mod cost_optimized;
pub mod fifo;
pub mod priority;
pub mod slo_aware;

use crate::request::RequestMeta;
use crate::route::{CandidateSet, PoolView};
use crate::scheduler::RejectReason;
use crate::time::Time;
use serde::{Deserialize, Serialize};

pub use adaptive::{Adaptive, AdaptiveConfig, PolicySwitch};
pub use cost_optimized::{CostOptimized, CostOptimizedConfig};
pub use fifo::{Fifo, FifoConfig};
pub use priority::{PriorityConfig, PriorityPolicy};
pub use slo_aware::{SloAware, SloAwareConfig};

/// Identifies one queued request: its slot in the scheduler's table and its unique,
/// increasing sequence number (sequence numbers start at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    /// Slot in the scheduler's queue table.
    pub slot: u32,
    /// Admission sequence number, unique for the scheduler's lifetime.
    pub seq: u64,
}

/// Which keys are still queued: the sequence number held by each slot (0 when free).
#[derive(Debug, Clone, Copy)]
pub struct Live<'a>(pub &'a [u64]);

impl Live<'_> {
    /// Whether `key` still names a queued request.
    pub fn contains(&self, key: QueueKey) -> bool {
        self.0.get(key.slot as usize) == Some(&key.seq)
    }
}

/// A request entering a policy's order.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Its key.
    pub key: QueueKey,
    /// Its description.
    pub meta: &'a RequestMeta,
    /// When it entered the queue.
    pub enqueued: Time,
}

/// A policy's verdict on a new request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Queue it.
    Admit,
    /// Queue it although it is predicted to miss its SLO (counted as best effort).
    AdmitBestEffort,
    /// Turn it away now.
    Reject(RejectReason),
}

/// Where the head request may go.
#[derive(Debug, Clone, PartialEq)]
pub enum Eligibility {
    /// Any instance with room.
    All,
    /// Only the instances the policy wrote into the candidate set (all have room).
    Only,
    /// Any instance with room, although it is predicted to miss its SLO (best effort).
    AllBestEffort,
    /// Only the candidate set, although it is predicted to miss its SLO (best effort).
    OnlyBestEffort,
    /// No instance with room suits it now but a busy one would: it stays at the head.
    Wait,
    /// No instance can serve it as asked: reject it.
    Reject(RejectReason),
}

/// Pool-wide signals the adaptive policy watches, computed by the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Signals {
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Requests placed and not completed on routable instances.
    pub inflight: u64,
    /// Sum of `max_inflight` over routable instances.
    pub capacity: u64,
    /// Recent SLO attainment (EWMA over requests with an SLO), if any had one.
    pub slo_attainment: Option<f64>,
    /// Recent share of submitted requests that carry a deadline or TTFT target (EWMA).
    pub deadline_share: f64,
    /// Whether routable instances have different prices.
    pub price_spread: bool,
}

impl Signals {
    /// `(queued + inflight) / capacity`: above 1 a queue is building.
    pub fn pressure(&self) -> f64 {
        (self.queued as f64 + self.inflight as f64) / (self.capacity.max(1) as f64)
    }
}

/// Orders queued requests. Owned by one task: `&mut self`, no locks, O(log n) or better.
pub trait SchedulingPolicy: Send {
    /// The config tag (`fifo`, `priority`, ...).
    fn name(&self) -> &'static str;
    /// The policy actually in charge (differs from `name` only for `adaptive`).
    fn active(&self) -> &'static str {
        self.name()
    }
    /// Adds a request to the order.
    fn push(&mut self, entry: Entry<'_>);
    /// The next request to serve, dropping stale keys on the way.
    fn peek(&mut self, live: Live<'_>) -> Option<QueueKey>;
    /// Removes the head returned by the last `peek` (it was placed or rejected).
    fn pop_head(&mut self);
    /// Keys held, stale ones included.
    fn stored(&self) -> usize;
    /// Drops every stale key.
    fn compact(&mut self, live: Live<'_>);
    /// Forgets every key.
    fn clear(&mut self);
    /// When the queue is full: a queued request to evict so that `incoming` can enter,
    /// removed from the order. Default: none (the newcomer is rejected).
    fn shed_victim(&mut self, _incoming: &RequestMeta, _live: Live<'_>) -> Option<QueueKey> {
        None
    }
    /// Admission check for a new request. Default: admit.
    fn admit(&mut self, _req: &RequestMeta, _view: &PoolView<'_>) -> Admission {
        Admission::Admit
    }
    /// Which instances with room the head request may go to; writes them into `out`
    /// when it answers [`Eligibility::Only`]. Default: all.
    fn candidates(
        &mut self,
        _req: &RequestMeta,
        _view: &PoolView<'_>,
        _out: &mut CandidateSet,
    ) -> Eligibility {
        Eligibility::All
    }
    /// Pool signals, given once per `dispatch`. Default: ignored.
    fn observe(&mut self, _signals: &Signals, _now: Time) {}
}

/// Which scheduling policy a pool runs, with its settings; the config tag is `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// First come, first served.
    Fifo(FifoConfig),
    /// Strict classes with aging and shedding of the lowest class.
    Priority(PriorityConfig),
    /// Earliest deadline first, placed where the SLO is met.
    SloAware(SloAwareConfig),
    /// The cheapest instance that meets the SLO, within budget.
    CostOptimized(CostOptimizedConfig),
    /// Switches between the others by load, queue depth and SLO attainment.
    Adaptive(AdaptiveConfig),
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig::Adaptive(AdaptiveConfig::default())
    }
}

impl PolicyConfig {
    /// The config tag.
    pub const fn name(&self) -> &'static str {
        match self {
            PolicyConfig::Fifo(_) => fifo::NAME,
            PolicyConfig::Priority(_) => priority::NAME,
            PolicyConfig::SloAware(_) => slo_aware::NAME,
            PolicyConfig::CostOptimized(_) => cost_optimized::NAME,
            PolicyConfig::Adaptive(_) => adaptive::NAME,
        }
    }

    /// Builds the policy (empty).
    pub fn build(&self) -> Policy {
        match self {
            PolicyConfig::Fifo(c) => Policy::Fifo(Fifo::new(c.clone())),
            PolicyConfig::Priority(c) => Policy::Priority(PriorityPolicy::new(c.clone())),
            PolicyConfig::SloAware(c) => Policy::SloAware(SloAware::new(c.clone())),
            PolicyConfig::CostOptimized(c) => Policy::CostOptimized(CostOptimized::new(c.clone())),
            PolicyConfig::Adaptive(c) => Policy::Adaptive(Box::new(Adaptive::new(c.clone()))),
        }
    }
}

/// A built policy: the registry, one variant per config variant, static dispatch.
#[derive(Debug)]
pub enum Policy {
    /// `fifo`.
    Fifo(Fifo),
    /// `priority`.
    Priority(PriorityPolicy),
    /// `slo_aware`.
    SloAware(SloAware),
    /// `cost_optimized`.
    CostOptimized(CostOptimized),
    /// `adaptive`.
    Adaptive(Box<Adaptive>),
}

impl Policy {
    /// The adaptive policy, if this is it (for its switch history).
    pub fn as_adaptive(&self) -> Option<&Adaptive> {
        match self {
            Policy::Adaptive(a) => Some(a),
            _ => None,
        }
    }
}

macro_rules! each {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Policy::Fifo($p) => $e,
            Policy::Priority($p) => $e,
            Policy::SloAware($p) => $e,
            Policy::CostOptimized($p) => $e,
            Policy::Adaptive($p) => $e,
        }
    };
}

impl SchedulingPolicy for Policy {
    fn name(&self) -> &'static str {
        each!(self, p => p.name())
    }
    fn active(&self) -> &'static str {
        each!(self, p => p.active())
    }
    fn push(&mut self, entry: Entry<'_>) {
        each!(self, p => p.push(entry))
    }
    fn peek(&mut self, live: Live<'_>) -> Option<QueueKey> {
        each!(self, p => p.peek(live))
    }
    fn pop_head(&mut self) {
        each!(self, p => p.pop_head())
    }
    fn stored(&self) -> usize {
        each!(self, p => p.stored())
    }
    fn compact(&mut self, live: Live<'_>) {
        each!(self, p => p.compact(live))
    }
    fn clear(&mut self) {
        each!(self, p => p.clear())
    }
    fn shed_victim(&mut self, incoming: &RequestMeta, live: Live<'_>) -> Option<QueueKey> {
        each!(self, p => p.shed_victim(incoming, live))
    }
    fn admit(&mut self, req: &RequestMeta, view: &PoolView<'_>) -> Admission {
        each!(self, p => p.admit(req, view))
    }
    fn candidates(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        out: &mut CandidateSet,
    ) -> Eligibility {
        each!(self, p => p.candidates(req, view, out))
    }
    fn observe(&mut self, signals: &Signals, now: Time) {
        each!(self, p => p.observe(signals, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_configs_use_the_snake_case_kind_tag_and_build_their_policy() {
        for (json, name) in [
            (r#"{"kind":"fifo"}"#, "fifo"),
            (r#"{"kind":"priority","aging_step":"500ms"}"#, "priority"),
            (r#"{"kind":"slo_aware","best_effort":true}"#, "slo_aware"),
            (r#"{"kind":"cost_optimized"}"#, "cost_optimized"),
            (r#"{"kind":"adaptive"}"#, "adaptive"),
        ] {
            let c: PolicyConfig = serde_json::from_str(json).unwrap();
            assert_eq!(c.name(), name);
            assert_eq!(c.build().name(), name);
            let back: PolicyConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        assert!(serde_json::from_str::<PolicyConfig>(r#"{"kind":"lifo"}"#).is_err());
        assert!(serde_json::from_str::<PolicyConfig>(r#"{"kind":"fifo","x":1}"#).is_err());
        assert_eq!(PolicyConfig::default().name(), "adaptive");
    }

    #[test]
    fn live_set_rejects_reused_slots_and_out_of_range_keys() {
        let seqs = [0, 7, 9];
        let live = Live(&seqs);
        assert!(live.contains(QueueKey { slot: 1, seq: 7 }));
        assert!(!live.contains(QueueKey { slot: 1, seq: 3 }));
        assert!(!live.contains(QueueKey { slot: 5, seq: 9 }));
    }
}
