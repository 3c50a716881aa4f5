//! The instance side of `Scheduler` (add, remove, drain, health, load, rates), runtime
//! switching of policy, strategy and algorithm, and the read-only accessors the gateway
//! exports as metrics.

use super::machine::{HINTS, Scheduler, view};
use super::{DuplicateInstance, EngineLoad, InstanceIx, InstanceState};
use crate::instance::{InstanceId, InstanceSpec};
use crate::predict::Rates;
use crate::request::{Priority, RequestMeta};
use crate::route::{BalanceConfig, LoadBalancedConfig, Router, RoutingConfig, RoutingStrategy};
use crate::schedule::cost_optimized::price_spread;
use crate::schedule::{Entry, PolicyConfig, PolicySwitch, SchedulingPolicy, Signals};
use crate::stats::Stats;
use crate::time::Time;

impl<T> Scheduler<T> {
    /// Recomputes the routable totals and hint sets after an instance-level change, and
    /// marks the router for a rebuild. O(instances).
    fn instances_changed(&mut self) {
        self.epoch += 1;
        let mut t = super::machine::Totals::default();
        let n = self.instances.len();
        for set in &mut self.hint_sets {
            set.reset(n);
        }
        for (ix, inst) in self.instances.iter().enumerate() {
            let Some(inst) = inst.as_ref().filter(|i| i.routable()) else {
                continue;
            };
            let free = u64::from(inst.spec.max_inflight.saturating_sub(inst.inflight));
            t.routable += 1;
            t.inflight += u64::from(inst.inflight);
            t.capacity += u64::from(inst.spec.max_inflight);
            t.free_slots += free;
            for (h, kind) in HINTS.iter().enumerate() {
                if inst.spec.layout.matches_hint(*kind) {
                    t.hint_free[h] += free;
                    self.hint_sets[h].insert(ix);
                }
            }
        }
        self.totals = t;
        self.price_spread = price_spread(self.instances.iter().flatten().filter(|i| i.routable()));
    }

    /// Rebuilds the router's tables if instances changed since its last rebuild.
    pub(super) fn refresh_router(&mut self, now: Time) {
        if self.router_epoch != Some(self.epoch) {
            let queued = self.queue_len();
            let v = view(&self.instances, &self.totals, queued, self.epoch, now);
            self.router.rebuild(&v);
            self.router_epoch = Some(self.epoch);
        }
    }

    /// The signals the adaptive policy watches.
    pub(super) fn signals(&self) -> Signals {
        Signals {
            queued: self.queue_len(),
            inflight: self.totals.inflight,
            capacity: self.totals.capacity,
            slo_attainment: self.stats.slo.recent,
            deadline_share: self.stats.deadline_share,
            price_spread: self.price_spread,
        }
    }

    /// Registers an instance (not ready until `set_ready`), with rates seeded from its
    /// layout.
    pub fn add_instance(&mut self, spec: InstanceSpec) -> Result<InstanceIx, DuplicateInstance> {
        if self.index.contains_key(&spec.id) {
            return Err(DuplicateInstance(spec.id));
        }
        let ix = match self.instances.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.instances.push(None);
                self.instances.len() - 1
            }
        };
        self.index.insert(spec.id.clone(), ix);
        self.instances[ix] = Some(InstanceState::new(spec));
        self.instances_changed();
        Ok(ix)
    }

    /// Removes an instance; its in-flight requests finish on their own and their
    /// completions are ignored. Returns whether it existed.
    pub fn remove_instance(&mut self, id: &InstanceId) -> bool {
        let Some(ix) = self.index.remove(id) else {
            return false;
        };
        self.instances[ix] = None;
        self.inflight.retain(|_, f| f.ix != ix);
        for q in self.slots.iter_mut().flatten() {
            if q.avoid == Some(ix) {
                q.avoid = None;
            }
        }
        self.instances_changed();
        true
    }

    fn update(&mut self, id: &InstanceId, f: impl FnOnce(&mut InstanceState) -> bool) -> bool {
        let Some(&ix) = self.index.get(id) else {
            return false;
        };
        let Some(inst) = self.instances.get_mut(ix).and_then(Option::as_mut) else {
            return false;
        };
        if f(inst) {
            self.instances_changed();
        }
        true
    }

    /// Stops (or resumes) sending new work to an instance. Returns whether it exists.
    pub fn set_draining(&mut self, id: &InstanceId, draining: bool) -> bool {
        self.update(id, |s| {
            std::mem::replace(&mut s.draining, draining) != draining
        })
    }

    /// Marks an instance ready (healthy, circuit closed) or not. Returns whether it exists.
    pub fn set_ready(&mut self, id: &InstanceId, ready: bool) -> bool {
        self.update(id, |s| std::mem::replace(&mut s.ready, ready) != ready)
    }

    /// Records the engine's reported load. Returns whether the instance exists.
    pub fn update_load(&mut self, id: &InstanceId, load: EngineLoad) -> bool {
        self.update(id, |s| {
            s.load = load;
            false
        })
    }

    /// Records what the engine says about itself (batch limit, context, KV capacity).
    /// Returns whether the instance exists.
    pub fn set_engine_info(&mut self, id: &InstanceId, info: crate::instance::EngineInfo) -> bool {
        self.update(id, |s| std::mem::replace(&mut s.engine, info) != info)
    }

    /// Sets an instance's predicted speeds (the gateway seeds them from the planner's cost
    /// model for the instance's layout); measured completions refine them from there.
    /// Returns whether the instance exists.
    pub fn set_rates(&mut self, id: &InstanceId, rates: Rates) -> bool {
        self.update(id, |s| {
            s.rates = rates;
            false
        })
    }

    /// Switches the scheduling policy at once; every queued request is kept and re-ordered
    /// by the new policy (O(n log n) in the queue length).
    pub fn set_policy(&mut self, config: PolicyConfig) {
        let mut policy = config.build();
        let mut keys: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, q)| q.as_ref().map(|q| (q.seq, slot)))
            .collect();
        keys.sort_unstable();
        let in_retry: std::collections::HashSet<u64> = self.retry.iter().map(|k| k.seq).collect();
        for (seq, slot) in keys {
            if in_retry.contains(&seq) {
                continue;
            }
            if let Some(q) = self.slots[slot].as_ref() {
                policy.push(Entry {
                    key: crate::schedule::QueueKey {
                        slot: slot as u32,
                        seq,
                    },
                    meta: &q.meta,
                    enqueued: q.enqueued,
                });
            }
        }
        self.policy = policy;
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
    pub fn config(&self) -> &super::SchedulerConfig {
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

    /// Free slots over routable instances.
    pub fn free_slots(&self) -> u64 {
        self.totals.free_slots
    }

    /// Sum of `max_inflight` over routable instances.
    pub fn capacity(&self) -> u64 {
        self.totals.capacity
    }

    /// Requests placed and not completed.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// The instances, in table order.
    pub fn instances(&self) -> impl Iterator<Item = &InstanceState> {
        self.instances.iter().flatten()
    }

    /// One instance.
    pub fn instance(&self, id: &InstanceId) -> Option<&InstanceState> {
        self.instances.get(*self.index.get(id)?)?.as_ref()
    }
}
