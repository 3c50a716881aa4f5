//! Scheduling policies: which queued request goes next (the queue order it serves from,
//! see [`order`]) and, for the SLO and cost policies, where it may go (a placement filter:
//! [`SchedulingPolicy::admit`] and [`SchedulingPolicy::candidates`]).
//!
//! The queue itself (the requests and their payloads) lives in the `Scheduler`, which keeps
//! every request in all three orders; a policy only says which order serves now and which
//! instances suit the request at the head.
//!
//! Ordering guarantees, each held by a test in `scheduler/tests.rs` or `scheduler/props.rs`:
//!
//! * `fifo`: requests are placed in arrival order, except that a request no instance it
//!   may use has room for is skipped (it keeps its place) while later ones are placed.
//! * `priority`: class aging (see [`order`]): a request is placed before every request with
//!   a later virtual start, under the same skipping rule.
//! * `slo_aware`, `cost_optimized`: earliest urgency first, under the same skipping rule,
//!   and only where the request's SLO is predicted to hold (and, for `cost_optimized`,
//!   among the cheapest such instances).
//! * `adaptive`: the guarantee of the policy it hands over to at the time.
//!
//! The registry is [`Policy`], an exhaustive `match` over [`PolicyConfig`].

pub mod adaptive;
pub mod cost_optimized;
pub mod fair;
pub mod fifo;
pub mod headroom;
pub mod order;
pub mod priority;
pub mod slo_aware;

use crate::pool::{CandidateSet, PoolView};
use crate::reject::RejectReason;
use crate::request::RequestMeta;
use crate::time::Time;
use serde::{Deserialize, Serialize};

pub use adaptive::{Adaptive, AdaptiveConfig, PolicySwitch};
pub use cost_optimized::{CostOptimized, CostOptimizedConfig};
pub use fifo::{Fifo, FifoConfig};
pub use order::OrderKind;
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
    /// No instance with room suits it now but a busy one would: it keeps its place and
    /// later requests may go first.
    Wait,
    /// No instance can serve it as asked: reject it.
    Reject(RejectReason),
}

/// Pool-wide signals the adaptive policy watches, computed by the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Signals {
    /// Requests submitted so far.
    pub submitted: u64,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Routable instances.
    pub routable: usize,
    /// Routable instances with room.
    pub with_room: usize,
    /// Attempts in flight on routable instances.
    pub inflight: u64,
    /// Sum of in-flight limits over routable instances.
    pub capacity: u64,
    /// Predicted queue wait of a new `normal` request, seconds (0 when it would go at once).
    pub wait_secs: f64,
    /// Recent SLO attainment (EWMA over requests with an SLO), if any had one.
    pub slo_attainment: Option<f64>,
    /// Recent share of submitted requests that carry a deadline or TTFT target (EWMA).
    pub deadline_share: f64,
    /// Recent share of submitted requests not of the `normal` class (EWMA).
    pub class_share: f64,
    /// Whether routable instances have different prices.
    pub price_spread: bool,
}

impl Signals {
    /// Whether the gateway is holding requests (every instance saturated, or a queue).
    pub fn saturated(&self) -> bool {
        self.queued > 0 || (self.routable > 0 && self.with_room == 0)
    }

    /// Attempts in flight over the pool's in-flight limits.
    pub fn utilisation(&self) -> f64 {
        self.inflight as f64 / self.capacity.max(1) as f64
    }
}

/// What a policy decides. Owned by one task: `&mut self`, no locks.
pub trait SchedulingPolicy: Send {
    /// The config tag (`fifo`, `priority`, ...).
    fn name(&self) -> &'static str;
    /// The policy actually in charge (differs from `name` only for `adaptive`).
    fn active(&self) -> &'static str {
        self.name()
    }
    /// The queue order it serves from now.
    fn order(&self) -> OrderKind;
    /// Whether the class wait budgets apply (shedding at admission and while queued, a
    /// class's wait target as its queue timeout). Default: under the class orders only,
    /// so plain `fifo` sheds nothing by class.
    fn budgets(&self) -> bool {
        self.order() != OrderKind::Arrival
    }
    /// Admission check for a new request predicted to wait `wait_secs` in the queue.
    /// Default: admit.
    fn admit(&mut self, _req: &RequestMeta, _view: &PoolView<'_>, _wait_secs: f64) -> Admission {
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
    /// Pool signals, given once per poll. Default: ignored.
    fn observe(&mut self, _signals: &Signals, _now: Time) {}
}

/// Which scheduling policy a pool runs, with its settings; the config tag is `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// First come, first served.
    Fifo(FifoConfig),
    /// Strict classes with aging; overload sheds the lowest class first.
    Priority(PriorityConfig),
    /// Earliest deadline first, placed where the SLO is met.
    SloAware(SloAwareConfig),
    /// The cheapest instance that meets the SLO, within budget.
    CostOptimized(CostOptimizedConfig),
    /// Switches between the others by load, queue, SLOs and prices.
    Adaptive(AdaptiveConfig),
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig::Adaptive(AdaptiveConfig::default())
    }
}

impl PolicyConfig {
    /// Every policy with its default settings, in the seed's order (names for CLIs,
    /// benchmarks and metric labels derive from this list).
    pub fn all() -> [PolicyConfig; 5] {
        [
            PolicyConfig::Fifo(FifoConfig::default()),
            PolicyConfig::Priority(PriorityConfig::default()),
            PolicyConfig::SloAware(SloAwareConfig::default()),
            PolicyConfig::CostOptimized(CostOptimizedConfig::default()),
            PolicyConfig::Adaptive(AdaptiveConfig::default()),
        ]
    }

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

    /// Builds the policy.
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
    fn order(&self) -> OrderKind {
        each!(self, p => p.order())
    }
    fn budgets(&self) -> bool {
        each!(self, p => p.budgets())
    }
    fn admit(&mut self, req: &RequestMeta, view: &PoolView<'_>, wait_secs: f64) -> Admission {
        each!(self, p => p.admit(req, view, wait_secs))
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
            (r#"{"kind":"priority"}"#, "priority"),
            (r#"{"kind":"slo_aware","best_effort":true}"#, "slo_aware"),
            (
                r#"{"kind":"cost_optimized","tolerance":0.2}"#,
                "cost_optimized",
            ),
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
        let names: Vec<_> = PolicyConfig::all().iter().map(PolicyConfig::name).collect();
        assert_eq!(
            names,
            [
                "fifo",
                "priority",
                "slo_aware",
                "cost_optimized",
                "adaptive"
            ]
        );
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
