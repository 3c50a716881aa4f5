//! Run-time switching of policy, strategy and algorithm, and the read-only accessors the
//! gateway exports as metrics and admin views.

use super::SchedulerConfig;
use super::machine::Scheduler;
use crate::instance::InstanceId;
use crate::pool::InstanceState;
use crate::predict::OutputLengths;
use crate::request::{Priority, RequestMeta};
use crate::route::{BalanceConfig, LoadBalancedConfig, Router, RoutingConfig, RoutingStrategy};
use crate::schedule::adaptive::{SignalsView, SwitchReason};
use crate::schedule::{PolicyConfig, PolicySwitch, SchedulingPolicy};
use crate::stats::Stats;
use crate::time::Time;

impl<T> Scheduler<T> {
    /// Switches the scheduling policy at once. Every queued request is kept: the queue
    /// holds every order already, so nothing is rebuilt (O(1)).
    pub fn set_policy(&mut self, config: PolicyConfig) {
        self.policy = config.build();
        self.config.policy = config;
    }

    /// Switches the routing strategy at once (queued requests are untouched).
    pub fn set_routing(&mut self, config: RoutingConfig) {
        self.router = config.build(self.config.seed);
        self.router_epoch = None;
        self.config.routing = config;
    }

    /// Switches to `load_balanced` routing with this balancing algorithm.
    pub fn set_balancing(&mut self, algorithm: BalanceConfig) {
        self.set_routing(RoutingConfig::LoadBalanced(LoadBalancedConfig {
            algorithm,
        }));
    }

    /// The configuration in force (policy and routing as last switched).
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The configured scheduling policy's tag (`adaptive` for the adaptive policy).
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// The policy actually ordering the queue now: for `adaptive`, the policy it handed
    /// over to (`fifo`, `priority`, `slo_aware` or `cost_optimized`).
    pub fn active_policy(&self) -> &'static str {
        self.policy.active()
    }

    /// Why the adaptive policy chose the policy in force, with the signals it last saw
    /// (`None` for the others).
    pub fn policy_reason(&self) -> Option<(SwitchReason, SignalsView)> {
        self.policy
            .as_adaptive()
            .map(|a| (a.reason(), a.last_signals()))
    }

    /// How many times the adaptive policy switched (0 for the others).
    pub fn policy_switches(&self) -> u64 {
        self.policy.as_adaptive().map_or(0, |a| a.switches())
    }

    /// The adaptive policy's last switches, oldest first (empty for the others).
    pub fn policy_switch_history(&self) -> impl Iterator<Item = &PolicySwitch> {
        self.policy
            .as_adaptive()
            .into_iter()
            .flat_map(|a| a.history())
    }

    /// The routing strategy's tag.
    pub fn routing_name(&self) -> &'static str {
        self.router.name()
    }

    /// The balancing algorithm's tag, when routing is `load_balanced`.
    pub fn balancing_name(&self) -> Option<&'static str> {
        match &self.router {
            Router::LoadBalanced(lb) => Some(lb.algorithm()),
            _ => None,
        }
    }

    /// The `prefix` strategy's index of which instance holds which block, when routing is
    /// `prefix` (for views and tests: what the strategy believes each engine caches).
    pub fn prefix_index(&self) -> Option<&crate::prefix::PrefixIndex> {
        match &self.router {
            Router::Prefix(p) => Some(p.index()),
            _ => None,
        }
    }

    /// Counters: admissions, placements, outcomes, rejects by reason, SLO attainment.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Requests waiting per priority class, indexed by `Priority::index` (critical first).
    pub fn queue_len_by_priority(&self) -> [usize; 4] {
        self.queued_by_class
    }

    /// Requests of one class waiting.
    pub fn queue_len_of(&self, class: Priority) -> usize {
        self.queued_by_class[class.index()]
    }

    /// The queued requests with the time each entered the queue, in no particular order.
    pub fn queued(&self) -> impl Iterator<Item = (&RequestMeta, Time)> {
        self.slots.iter().flatten().map(|q| (&q.meta, q.enqueued))
    }

    /// Routable instances with room now.
    pub fn with_room(&self) -> usize {
        self.totals.with_room
    }

    /// Sum of in-flight limits over routable instances.
    pub fn capacity(&self) -> u64 {
        self.totals.capacity
    }

    /// Attempts placed and not completed.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// The instances, in table order.
    pub fn instances(&self) -> impl Iterator<Item = &InstanceState> {
        self.instances.iter().flatten()
    }

    /// One instance.
    pub fn instance(&self, id: &InstanceId) -> Option<&InstanceState> {
        let ix = *self.index.get(id)?;
        self.instances.get(ix.slot())?.as_ref()
    }

    /// The output-length predictor.
    pub fn outputs(&self) -> &OutputLengths {
        &self.outputs
    }

    /// The drain rate in use for predicted waits, requests per second.
    pub fn drain_rate_estimate(&self) -> f64 {
        self.drain_rate()
    }
}
