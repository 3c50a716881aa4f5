//! Routing strategies: which instance serves the request the scheduling policy chose.
//!
//! A strategy sees the pool through a [`PoolView`] (the instance table plus pool totals
//! kept by the scheduler) and may only choose an instance that has room and is in the
//! [`Allowed`] set (narrowed by the policy, by a parallelism hint or by a retry's
//! `avoid`). It never allocates in `pick`; tables such as hash rings are built in
//! `rebuild`, which the scheduler calls whenever the set of routable instances changes.
//!
//! The registry is [`Router`], an exhaustive `match` over [`RoutingConfig`].

pub mod affinity;
pub mod balance;
pub mod load_balanced;
pub mod locality;
pub mod random;
pub mod round_robin;

use crate::request::RequestMeta;
use crate::scheduler::{InstanceIx, InstanceState};
use crate::time::Time;
use serde::{Deserialize, Serialize};

pub use affinity::{Affinity, AffinityConfig};
pub use balance::{BalanceConfig, Balancer};
pub use load_balanced::{LoadBalanced, LoadBalancedConfig};
pub use locality::{Locality, LocalityConfig};
pub use random::{Random, RandomConfig};
pub use round_robin::{RoundRobin, RoundRobinConfig};

/// The pool as routing sees it: the instance table and totals over routable instances
/// (ready and not draining).
#[derive(Debug, Clone, Copy)]
pub struct PoolView<'a> {
    /// The instance table; `None` marks a removed instance's free index.
    pub instances: &'a [Option<InstanceState>],
    /// Routable instances.
    pub routable: usize,
    /// Requests in flight on routable instances.
    pub routable_inflight: u64,
    /// Sum of `max_inflight` over routable instances.
    pub capacity: u64,
    /// Free slots over routable instances.
    pub free_slots: u64,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Bumped whenever the routable set or an instance's spec changes.
    pub epoch: u64,
    /// The current time.
    pub now: Time,
}

impl<'a> PoolView<'a> {
    /// The instance at `ix`, if any.
    pub fn get(&self, ix: InstanceIx) -> Option<&'a InstanceState> {
        self.instances.get(ix).and_then(Option::as_ref)
    }

    /// Whether the instance at `ix` exists, has room and is allowed.
    pub fn eligible(&self, ix: InstanceIx, allowed: Allowed<'_>) -> bool {
        allowed.contains(ix) && self.get(ix).is_some_and(InstanceState::has_room)
    }

    /// Routable instances (ready, not draining), with their index.
    pub fn routable(&self) -> impl Iterator<Item = (InstanceIx, &'a InstanceState)> + 'a {
        self.instances
            .iter()
            .enumerate()
            .filter_map(|(ix, s)| s.as_ref().filter(|s| s.routable()).map(|s| (ix, s)))
    }

    /// Bounded-load test of consistent hashing with bounded loads: whether the instance
    /// could take one more request and stay within `factor` times the mean in-flight count
    /// (rounded up) of routable instances.
    pub fn within_load_bound(&self, ix: InstanceIx, factor: f64) -> bool {
        let Some(inst) = self.get(ix) else {
            return false;
        };
        let mean = (self.routable_inflight + 1) as f64 / self.routable.max(1) as f64;
        f64::from(inst.inflight + 1) <= (factor * mean).ceil()
    }

    /// The eligible instance with the lowest `load_score`, scanning from `start` so that
    /// ties rotate. O(instances).
    pub fn least_loaded(&self, allowed: Allowed<'_>, start: usize) -> Option<InstanceIx> {
        let n = self.instances.len();
        let mut best: Option<(InstanceIx, f64)> = None;
        for i in 0..n {
            let ix = (start + i) % n;
            if !self.eligible(ix, allowed) {
                continue;
            }
            let score = self
                .get(ix)
                .map_or(f64::INFINITY, InstanceState::load_score);
            if best.is_none_or(|(_, s)| score < s) {
                best = Some((ix, score));
            }
        }
        best.map(|(ix, _)| ix)
    }
}

/// A set of instance indexes, as a bitset reused from pick to pick (it only allocates when
/// the instance table grows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandidateSet {
    words: Vec<u64>,
    len: usize,
}

impl CandidateSet {
    /// Empties the set and makes room for indexes below `n`.
    pub fn reset(&mut self, n: usize) {
        let words = n.div_ceil(64);
        self.words.clear();
        self.words.resize(words, 0);
        self.len = 0;
    }

    /// Adds `ix` (ignored if beyond the size given to `reset`).
    pub fn insert(&mut self, ix: InstanceIx) {
        if let Some(w) = self.words.get_mut(ix / 64) {
            let bit = 1u64 << (ix % 64);
            if *w & bit == 0 {
                *w |= bit;
                self.len += 1;
            }
        }
    }

    /// Removes `ix`.
    pub fn remove(&mut self, ix: InstanceIx) {
        if let Some(w) = self.words.get_mut(ix / 64) {
            let bit = 1u64 << (ix % 64);
            if *w & bit != 0 {
                *w &= !bit;
                self.len -= 1;
            }
        }
    }

    /// Whether `ix` is in the set.
    pub fn contains(&self, ix: InstanceIx) -> bool {
        self.words
            .get(ix / 64)
            .is_some_and(|w| w & (1u64 << (ix % 64)) != 0)
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = InstanceIx> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }

    /// Copies `other` into `self` (reusing its buffer).
    pub fn copy_from(&mut self, other: &CandidateSet) {
        self.words.clear();
        self.words.extend_from_slice(&other.words);
        self.len = other.len;
    }
}

/// Which instances a pick may choose (besides having room).
#[derive(Debug, Clone, Copy)]
pub enum Allowed<'a> {
    /// Every instance.
    All,
    /// Only these.
    Only(&'a CandidateSet),
}

impl Allowed<'_> {
    /// Whether `ix` is allowed.
    pub fn contains(&self, ix: InstanceIx) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Only(set) => set.contains(ix),
        }
    }
}

/// Picks the instance. Runs against the pool view; never blocks or allocates in `pick`.
pub trait RoutingStrategy: Send {
    /// The config tag.
    fn name(&self) -> &'static str;
    /// Precomputes rings and weight tables; called when the routable set changes.
    fn rebuild(&mut self, _view: &PoolView<'_>) {}
    /// An eligible instance, or `None` when no allowed instance has room.
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<InstanceIx>;
}

/// Which routing strategy a pool runs, with its settings; the config tag is `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoutingConfig {
    /// The least-busy instance by a balancing algorithm.
    LoadBalanced(LoadBalancedConfig),
    /// Each instance in turn.
    RoundRobin(RoundRobinConfig),
    /// A seeded uniform choice.
    Random(RandomConfig),
    /// A session sticks to its instance (consistent hashing with bounded loads).
    Affinity(AffinityConfig),
    /// Equal prompt prefixes go where they are likely cached.
    Locality(LocalityConfig),
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig::LoadBalanced(LoadBalancedConfig::default())
    }
}

impl RoutingConfig {
    /// The config tag.
    pub const fn name(&self) -> &'static str {
        match self {
            RoutingConfig::LoadBalanced(_) => load_balanced::NAME,
            RoutingConfig::RoundRobin(_) => round_robin::NAME,
            RoutingConfig::Random(_) => random::NAME,
            RoutingConfig::Affinity(_) => affinity::NAME,
            RoutingConfig::Locality(_) => locality::NAME,
        }
    }

    /// Builds the strategy; `seed` feeds every random choice.
    pub fn build(&self, seed: u64) -> Router {
        match self {
            RoutingConfig::LoadBalanced(c) => {
                Router::LoadBalanced(LoadBalanced::new(c.clone(), seed))
            }
            RoutingConfig::RoundRobin(c) => Router::RoundRobin(RoundRobin::new(c.clone())),
            RoutingConfig::Random(c) => Router::Random(Random::new(c.clone(), seed)),
            RoutingConfig::Affinity(c) => Router::Affinity(Affinity::new(c.clone())),
            RoutingConfig::Locality(c) => Router::Locality(Locality::new(c.clone())),
        }
    }
}

/// A built strategy: the registry, one variant per config variant, static dispatch.
#[derive(Debug)]
pub enum Router {
    /// `load_balanced`.
    LoadBalanced(LoadBalanced),
    /// `round_robin`.
    RoundRobin(RoundRobin),
    /// `random`.
    Random(Random),
    /// `affinity`.
    Affinity(Affinity),
    /// `locality`.
    Locality(Locality),
}

macro_rules! each {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            Router::LoadBalanced($r) => $e,
            Router::RoundRobin($r) => $e,
            Router::Random($r) => $e,
            Router::Affinity($r) => $e,
            Router::Locality($r) => $e,
        }
    };
}

impl RoutingStrategy for Router {
    fn name(&self) -> &'static str {
        each!(self, r => r.name())
    }
    fn rebuild(&mut self, view: &PoolView<'_>) {
        each!(self, r => r.rebuild(view))
    }
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<InstanceIx> {
        each!(self, r => r.pick(req, view, allowed))
    }
}

/// Test helpers: pools of instance states without a scheduler.
#[cfg(test)]
pub(crate) mod testkit {
    use super::*;
    use crate::instance::InstanceSpec;
    use crate::request::RequestId;

    /// Ready instances with the given `(max_inflight, inflight)`.
    pub fn states(slots: &[(u32, u32)]) -> Vec<Option<InstanceState>> {
        slots
            .iter()
            .enumerate()
            .map(|(i, &(max, inflight))| {
                let mut s = InstanceState::new(InstanceSpec::new(format!("i{i}"), "u", "m", max));
                s.ready = true;
                s.inflight = inflight;
                Some(s)
            })
            .collect()
    }

    /// A view over `states` with totals computed.
    pub fn view(states: &[Option<InstanceState>]) -> PoolView<'_> {
        let mut v = PoolView {
            instances: states,
            routable: 0,
            routable_inflight: 0,
            capacity: 0,
            free_slots: 0,
            queued: 0,
            epoch: 0,
            now: Time::ZERO,
        };
        for s in states.iter().flatten().filter(|s| s.routable()) {
            v.routable += 1;
            v.routable_inflight += u64::from(s.inflight);
            v.capacity += u64::from(s.spec.max_inflight);
            v.free_slots += u64::from(s.spec.max_inflight.saturating_sub(s.inflight));
        }
        v
    }

    /// A request with an optional session and prefix.
    pub fn req(id: u64, session: Option<&str>, prefix: Option<u64>) -> RequestMeta {
        let mut m = RequestMeta::new(RequestId(id), "m", 100, 100, Time::ZERO);
        m.session = session.map(str::to_string);
        m.prefix_hash = prefix;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_set_counts_members_and_iterates_in_order() {
        let mut s = CandidateSet::default();
        s.reset(130);
        for ix in [129, 3, 64, 3] {
            s.insert(ix);
        }
        s.insert(500);
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 64, 129]);
        s.remove(64);
        assert!(!s.contains(64) && s.contains(129));
        assert_eq!(s.len(), 2);
        s.reset(10);
        assert!(s.is_empty());
    }

    #[test]
    fn routing_configs_use_the_snake_case_kind_tag() {
        for (json, name) in [
            (
                r#"{"kind":"load_balanced","algorithm":{"kind":"power_of_two"}}"#,
                "load_balanced",
            ),
            (r#"{"kind":"round_robin"}"#, "round_robin"),
            (r#"{"kind":"random"}"#, "random"),
            (r#"{"kind":"affinity","load_factor":1.5}"#, "affinity"),
            (r#"{"kind":"locality","capacity":1024}"#, "locality"),
        ] {
            let c: RoutingConfig = serde_json::from_str(json).unwrap();
            assert_eq!(c.name(), name);
            assert_eq!(c.build(1).name(), name);
        }
        assert!(serde_json::from_str::<RoutingConfig>(r#"{"kind":"sticky"}"#).is_err());
    }

    #[test]
    fn load_bound_allows_at_most_the_ceiling_of_factor_times_mean() {
        let st = testkit::states(&[(10, 3), (10, 1), (10, 0), (10, 0)]);
        let v = testkit::view(&st);
        // mean after one more = 5/4 = 1.25; 1.25 * 1.25 = 1.5625 -> ceil 2
        assert!(!v.within_load_bound(0, 1.25));
        assert!(v.within_load_bound(1, 1.25));
        assert!(v.within_load_bound(2, 1.25));
    }
}
