//! The instance side of `Scheduler`: add, remove, drain, readiness, engine load and
//! self-description, rates, and the incrementally kept totals over routable instances.

use super::DuplicateInstance;
use super::machine::{HINTS, Scheduler, Totals, view};
use crate::fleet::{FleetDemand, FleetShare};
use crate::instance::{EngineInfo, InstanceId, InstanceSpec};
use crate::pool::{EngineLoad, InstanceIx, InstanceState};
use crate::predict::Rates;
use crate::prefix::CacheChange;
use crate::route::RoutingStrategy;
use crate::schedule::cost_optimized::price_spread;
use crate::time::Time;

impl<T> Scheduler<T> {
    /// Recomputes every instance's room and the routable totals and hint sets after an
    /// instance-level change, and marks the router for a rebuild. O(instances).
    pub(super) fn instances_changed(&mut self) {
        self.epoch += 1;
        let mut t = Totals::default();
        let n = self.instances.len();
        for set in &mut self.hint_sets {
            set.reset(n);
        }
        let engine_queues = self.config.queue_at == super::QueueAt::Engine;
        let now = self.clock;
        for (slot, inst) in self.instances.iter_mut().enumerate() {
            let Some(inst) = inst.as_mut() else { continue };
            crate::load::refresh(inst, &self.config.saturation, self.reserve.need(), now);
            if engine_queues {
                // a plain router: every ready instance takes everything
                inst.signals.room = inst.routable();
                inst.signals.protected_room = inst.routable();
            }
            match inst.context_len() {
                Some(len) => {
                    t.min_context = Some(t.min_context.map_or(len, |m| m.min(len)));
                    t.max_context = Some(t.max_context.map_or(len, |m| m.max(len)));
                }
                None => t.unknown_context = true,
            }
            if !inst.routable() {
                continue;
            }
            t.routable += 1;
            t.inflight += u64::from(inst.inflight);
            t.capacity += u64::from(inst.limit());
            let room = inst.has_room();
            t.with_room += usize::from(room);
            t.protected_room += usize::from(inst.has_room_for(true));
            for (h, kind) in HINTS.iter().enumerate() {
                if inst.spec.layout.matches_hint(*kind) {
                    t.hint_room[h] += usize::from(room);
                    self.hint_sets[h].insert(slot);
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
            let v = view(
                &self.instances,
                &self.totals,
                &self.outputs,
                self.config.saturation.protect,
                queued,
                self.epoch,
                now,
            );
            self.router.rebuild(&v);
            self.router_epoch = Some(self.epoch);
        }
    }

    /// Registers an instance (not ready until `set_ready`), with rates seeded from its
    /// layout. A freed slot is reused with the next generation.
    pub fn add_instance(&mut self, spec: InstanceSpec) -> Result<InstanceIx, DuplicateInstance> {
        if self.index.contains_key(&spec.id) {
            return Err(DuplicateInstance(spec.id));
        }
        let slot = match self.instances.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.instances.push(None);
                self.generations.push(0);
                self.instances.len() - 1
            }
        };
        let ix = InstanceIx::new(slot as u32, self.generations[slot]);
        self.index.insert(spec.id.clone(), ix);
        self.instances[slot] = Some(InstanceState::new(spec, ix));
        self.instances_changed();
        Ok(ix)
    }

    /// Removes an instance; its attempts in flight finish on their own and their
    /// completions are ignored. Returns whether it existed.
    pub fn remove_instance(&mut self, id: &InstanceId) -> bool {
        let Some(ix) = self.index.remove(id) else {
            return false;
        };
        self.instances[ix.slot()] = None;
        self.generations[ix.slot()] = self.generations[ix.slot()].wrapping_add(1);
        let headroom = &mut self.headroom;
        self.inflight.retain(|_, f| {
            let keep = f.ix != ix;
            if !keep {
                headroom.ended(f.fair_charge.0);
            }
            keep
        });
        for q in self.slots.iter_mut().flatten() {
            if q.avoid.contains(&ix) {
                q.avoid = q.avoid.iter().copied().filter(|a| *a != ix).collect();
            }
        }
        self.instances_changed();
        true
    }

    fn update(&mut self, id: &InstanceId, f: impl FnOnce(&mut InstanceState) -> bool) -> bool {
        let Some(&ix) = self.index.get(id) else {
            return false;
        };
        let Some(inst) = self.instances.get_mut(ix.slot()).and_then(Option::as_mut) else {
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

    /// Holds an instance to at most `limit` attempts in flight while it is probed (a
    /// half-open circuit breaker lets one request through, not a full share), `None`:
    /// its usual limit. Returns whether it exists.
    pub fn set_probe_limit(&mut self, id: &InstanceId, limit: Option<u32>) -> bool {
        self.update(id, |s| {
            std::mem::replace(&mut s.probe_limit, limit) != limit
        })
    }

    /// Records the engine's load as read at `now` (all fields unknown: no reading). The
    /// gateway's counts since the reading start again from zero. Returns whether the
    /// instance exists.
    pub fn update_load(&mut self, id: &InstanceId, load: EngineLoad, now: Time) -> bool {
        let now = self.advance(now);
        let Some(&ix) = self.index.get(id) else {
            return false;
        };
        let Some(inst) = self.instances.get_mut(ix.slot()).and_then(Option::as_mut) else {
            return false;
        };
        let had_room = inst.rooms();
        inst.load = load;
        let known = load.running.is_some() || load.waiting.is_some() || load.kv_usage.is_some();
        inst.signals.reading_at = known.then_some(now);
        inst.signals.placed_since = 0;
        inst.signals.finished_since = 0;
        self.refresh_room_of(ix.slot(), had_room);
        true
    }

    /// Sets, per instance (by id), what the other gateway replicas have in flight on it
    /// and this replica's reservation of it until the next sync (see `fleet`);
    /// `FleetShare::default()` for every instance: a single gateway again.
    pub fn set_fleet(&mut self, share: &dyn Fn(&InstanceId) -> FleetShare, now: Time) {
        self.advance(now);
        for slot in 0..self.instances.len() {
            let Some(inst) = self.instances[slot].as_mut() else {
                continue;
            };
            let had_room = inst.rooms();
            inst.fleet = share(&inst.spec.id);
            self.refresh_room_of(slot, had_room);
        }
    }

    /// This replica's part in the fleet's reservations, per instance: its id, attempts in
    /// flight, in-flight limit, and whether it wants more room there (it placed work
    /// there since the last call, or its queue is not empty). Resets the "placed since".
    pub fn fleet_demand(&mut self) -> Vec<FleetDemand> {
        let queued = self.queue_len() > 0;
        let mut out = Vec::with_capacity(self.instances.len());
        for inst in self.instances.iter_mut().flatten() {
            let placed = inst.placed_total != inst.fleet_placed_at_sync;
            inst.fleet_placed_at_sync = inst.placed_total;
            out.push(FleetDemand {
                id: inst.spec.id.clone(),
                inflight: inst.inflight,
                limit: inst.limit(),
                wants: inst.routable() && (queued || placed),
            });
        }
        out
    }

    /// Records what the engine says about itself (batch limit, context, KV capacity).
    /// Returns whether the instance exists.
    pub fn set_engine_info(&mut self, id: &InstanceId, info: EngineInfo) -> bool {
        self.update(id, |s| std::mem::replace(&mut s.engine, info) != info)
    }

    /// Sets an instance's predicted speeds (the gateway and the simulation seed them from
    /// the planner's cost model for the instance's layout); measured completions refine
    /// them from there. Returns whether the instance exists.
    pub fn set_rates(&mut self, id: &InstanceId, rates: Rates) -> bool {
        self.update(id, |s| {
            s.rates = rates;
            false
        })
    }

    /// Records a change the instance's engine reported to its KV cache (precise mode,
    /// block hashes in the gateway's own). Returns whether the instance exists.
    pub fn cache_changed(&mut self, id: &InstanceId, change: CacheChange<'_>, now: Time) -> bool {
        let now = self.advance(now);
        let Some(&ix) = self.index.get(id) else {
            return false;
        };
        self.refresh_router(now);
        self.router.cache_changed(ix, change, now);
        true
    }

    /// Blocks the routing strategy's prefix index holds for an instance (`None`: no such
    /// instance, or a strategy that keeps no prefix index).
    pub fn prefix_blocks_of(&self, id: &InstanceId) -> Option<usize> {
        let ix = *self.index.get(id)?;
        match &self.router {
            crate::route::Router::Prefix(p) => Some(p.index().blocks_of(ix)),
            _ => None,
        }
    }

    /// Whether the routing strategy reads a request's prompt block hashes
    /// ([`RequestMeta::prefix_blocks`](crate::request::RequestMeta::prefix_blocks)): the
    /// gateway computes them only then.
    pub fn routes_by_blocks(&self) -> bool {
        self.router.routes_by_blocks()
    }
}
