//! Headroom for the tenants that are not flooding: the fair share of [`super::fair`]
//! chooses whose request goes next *while several wait*, but a tenant that sends now and
//! then finds every slot taken by the one that floods, and waits for a slot to free. So
//! while another tenant has been active within [`HORIZON_SECS`], a tenant above its
//! weighted share of the pool's slots does not take the last free ones: it leaves each
//! tenant holding fewer slots for its weight the most that one has recently held in
//! flight, plus room for a burst ([`TenantHeadroom`]; never more than its share). A tenant
//! at or under its share is never held back; a tenant keeps nothing for one holding more
//! than itself (the light tenant must not leave the fast slots to the flooding one); with
//! one tenant active (or none known) nothing changes.
//!
//! The default margin covers a burst two standard deviations above the other's peak: with
//! only the peak + 1 kept, a burst of four light requests within 60 ms on a mixed pool found
//! the H100s full and waited 0.3-0.5 s on loaded A10Gs (DES, `des_fair_tests`).
//!
//! Where those slots are matters as much as how many: a tenant routed by least predicted
//! TTFT fills the fast instances first and would leave the others the slow ones (on a
//! mixed H100/A100/A10G pool the light tenant's p99 was 7.5x what it got alone for that
//! reason). So the slots kept are the free ones that give a first token soonest: the
//! scheduler keeps the tenant off the best-ranked instances until the kept count is
//! covered, even under its share, unless nothing else is free ([`Headroom::keep`]).
//!
//! This gives up a little of the flooding tenant's throughput (the slots kept free while
//! the others do not use them) for the others' latency, the trade a platform serving many
//! teams from one fleet makes. It needs a pool whose slots the gateway counts (instances
//! with `max_inflight`); where engines queue on their own, room is never short of slots
//! and this does nothing.

use crate::request::TenantId;
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// How many slots a tenant above its share leaves to each other active tenant
/// (`[scheduler] tenant_headroom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantHeadroom {
    /// None: a tenant takes every free slot (the fair share still orders the queue).
    Off,
    /// The other's recent peak in flight + 1: more of the flooding tenant's throughput,
    /// and the other's bursts above its peak go to slower instances.
    Peak,
    /// The other's recent peak + twice its square root + 2: room for a burst of the other
    /// tenant's arrivals about two standard deviations above its recent peak (a Poisson
    /// count varies by its square root), so its requests find a fast slot free as they
    /// would alone, for a few percent of the flooding tenant's throughput.
    #[default]
    Wide,
}

/// How long a tenant counts as active after its last arrival, and how long its peak in
/// flight is remembered.
pub const HORIZON_SECS: f64 = 10.0;

/// The slots a tenant leaves to the others (see [`Headroom::keep`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// How many.
    pub slots: u64,
    /// Whether the tenant holds its weighted share of the slots or more: then it waits
    /// rather than take them.
    pub over_share: bool,
}

/// One tenant's load.
#[derive(Debug, Clone, Copy)]
struct Load {
    tenant: TenantId,
    weight: u32,
    inflight: u32,
    /// The most it had in flight since `peak_since`.
    peak: u32,
    peak_since: Time,
    last_arrival: Option<Time>,
}

/// The tenants' loads in one pool.
#[derive(Debug, Default)]
pub struct Headroom {
    loads: Vec<Load>,
}

impl Headroom {
    fn load(&mut self, tenant: TenantId, now: Time) -> &mut Load {
        let i = match self.loads.iter().position(|l| l.tenant == tenant) {
            Some(i) => i,
            None => {
                self.loads.push(Load {
                    tenant,
                    weight: 1,
                    inflight: 0,
                    peak: 0,
                    peak_since: now,
                    last_arrival: None,
                });
                self.loads.len() - 1
            }
        };
        &mut self.loads[i]
    }

    /// Sets a tenant's weight (as the fair share's).
    pub fn set_weight(&mut self, tenant: TenantId, weight: u32) {
        self.load(tenant, Time::from_secs_f64(0.0)).weight = weight.max(1);
    }

    /// A request of `tenant` arrived.
    pub fn arrived(&mut self, tenant: Option<TenantId>, now: Time) {
        if let Some(t) = tenant {
            self.load(t, now).last_arrival = Some(now);
        }
    }

    /// A request of `tenant` was placed.
    pub fn started(&mut self, tenant: Option<TenantId>, now: Time) {
        let Some(t) = tenant else { return };
        let l = self.load(t, now);
        l.inflight += 1;
        if now.saturating_since(l.peak_since).as_secs_f64() > HORIZON_SECS {
            l.peak = l.inflight;
            l.peak_since = now;
        } else {
            l.peak = l.peak.max(l.inflight);
        }
    }

    /// A placed request of `tenant` ended (or its instance went away).
    pub fn ended(&mut self, tenant: Option<TenantId>) {
        let Some(t) = tenant else { return };
        if let Some(l) = self.loads.iter_mut().find(|l| l.tenant == t) {
            l.inflight = l.inflight.saturating_sub(1);
        }
    }

    /// Whether `tenant` must leave the `free` slots (of `capacity`) to the others at `now`,
    /// keeping `margin` for each.
    pub fn holds_back(
        &self,
        margin: TenantHeadroom,
        tenant: Option<TenantId>,
        free: u64,
        capacity: u64,
        now: Time,
    ) -> bool {
        self.keep(margin, tenant, capacity, now)
            .is_some_and(|keep| keep.over_share && free <= keep.slots)
    }

    /// The slots of the pool's `capacity` that `tenant` leaves to the other active tenants
    /// at `now`, or `None` when there are none (alone, off, no tenant, or the others hold
    /// theirs already). The scheduler keeps them on the instances that would give a first
    /// token soonest, where the others get close to what they get alone: a flooding tenant
    /// routed by least TTFT would otherwise fill the fast instances first and leave the
    /// others the slow ones. Under its share a tenant still takes them when nothing else is
    /// free; over it, it waits (see [`Headroom::holds_back`]).
    pub fn keep(
        &self,
        margin: TenantHeadroom,
        tenant: Option<TenantId>,
        capacity: u64,
        now: Time,
    ) -> Option<Keep> {
        let t = tenant?;
        if margin == TenantHeadroom::Off || self.loads.len() < 2 {
            return None;
        }
        let active = |l: &Load| {
            l.inflight > 0
                || l.last_arrival
                    .is_some_and(|a| now.saturating_since(a).as_secs_f64() <= HORIZON_SECS)
        };
        let me = self.loads.iter().find(|l| l.tenant == t)?;
        let weights: u64 = self
            .loads
            .iter()
            .filter(|l| active(l) || l.tenant == t)
            .map(|l| u64::from(l.weight))
            .sum();
        let share = |l: &Load| capacity * u64::from(l.weight) / weights.max(1);
        // under its share, or with nothing in flight (whose end would wake the scheduler
        // again), a tenant is never held
        let over_share = u64::from(me.inflight) >= share(me).max(1);
        let keep: u64 = self
            .loads
            .iter()
            // only for the tenants holding less than this one for their weight: a light
            // tenant leaves nothing to the one that floods
            .filter(|l| {
                l.tenant != t
                    && active(l)
                    && u64::from(l.inflight) * u64::from(me.weight)
                        < u64::from(me.inflight) * u64::from(l.weight)
            })
            .map(|l| {
                let recent = if now.saturating_since(l.peak_since).as_secs_f64() > HORIZON_SECS {
                    l.inflight
                } else {
                    l.peak
                };
                // what it holds now is not free: keep room for what it may still add
                let recent = u64::from(recent);
                // the burst room matters where the tenant would be held; under its share it
                // only steers the tenant off the fastest free slots, by the peak + 1
                let want = match margin {
                    TenantHeadroom::Wide if over_share => recent + 2 * recent.isqrt() + 2,
                    _ => recent + 1,
                };
                want.min(share(l).max(1))
                    .saturating_sub(u64::from(l.inflight))
            })
            .sum();
        (keep > 0).then_some(Keep {
            slots: keep,
            over_share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: f64) -> Time {
        Time::from_secs_f64(s)
    }

    const HEAVY: Option<TenantId> = Some(TenantId(0));
    const LIGHT: Option<TenantId> = Some(TenantId(1));

    #[test]
    fn a_flooding_tenant_leaves_the_last_slots_to_an_active_one() {
        let mut h = Headroom::default();
        // the light tenant had two in flight a moment ago
        h.arrived(LIGHT, at(0.0));
        h.started(LIGHT, at(0.0));
        h.started(LIGHT, at(0.1));
        h.ended(LIGHT);
        h.ended(LIGHT);
        for i in 0..10 {
            h.arrived(HEAVY, at(1.0));
            h.started(HEAVY, at(1.0 + f64::from(i) * 0.01));
        }
        // 16 slots, 10 taken: heavy (share 8) may go on until 3 are left
        assert!(!h.holds_back(TenantHeadroom::Peak, HEAVY, 6, 16, at(2.0)));
        assert!(!h.holds_back(TenantHeadroom::Peak, HEAVY, 4, 16, at(2.0)));
        assert!(h.holds_back(TenantHeadroom::Peak, HEAVY, 3, 16, at(2.0)));
        // the light tenant itself is never held
        assert!(!h.holds_back(TenantHeadroom::Peak, LIGHT, 1, 16, at(2.0)));
        // off: never; wide: the peak (2) + twice its root (1) + 2
        assert!(!h.holds_back(TenantHeadroom::Off, HEAVY, 1, 16, at(2.0)));
        assert!(h.holds_back(TenantHeadroom::Wide, HEAVY, 6, 16, at(2.0)));
        assert!(!h.holds_back(TenantHeadroom::Wide, HEAVY, 7, 16, at(2.0)));
        // once it is quiet for the horizon, the heavy tenant takes everything
        assert!(!h.holds_back(
            TenantHeadroom::Peak,
            HEAVY,
            1,
            16,
            at(1.0 + HORIZON_SECS + 0.5)
        ));
    }

    #[test]
    fn alone_or_under_its_share_a_tenant_is_never_held() {
        let mut h = Headroom::default();
        h.arrived(HEAVY, at(0.0));
        h.started(HEAVY, at(0.0));
        assert!(
            !h.holds_back(TenantHeadroom::Peak, HEAVY, 1, 4, at(0.0)),
            "one tenant: no headroom"
        );
        h.arrived(LIGHT, at(0.0));
        h.started(LIGHT, at(0.0));
        // heavy holds 1 of a share of 2 (4 slots, two tenants)
        assert!(!h.holds_back(TenantHeadroom::Peak, HEAVY, 1, 4, at(0.1)));
        assert!(
            !h.holds_back(TenantHeadroom::Peak, None, 1, 4, at(0.1)),
            "anonymous requests are not held"
        );
    }

    #[test]
    fn a_tenant_keeps_slots_only_for_those_holding_less_for_their_weight() {
        let mut h = Headroom::default();
        h.arrived(LIGHT, at(0.0));
        h.started(LIGHT, at(0.0));
        for _ in 0..3 {
            h.arrived(HEAVY, at(0.0));
            h.started(HEAVY, at(0.0));
        }
        // both under their share (8 of 16): the heavier one keeps the light one's peak (1)
        // + 1 less the one it holds, the light one keeps nothing for the heavier one
        assert_eq!(
            h.keep(TenantHeadroom::Peak, HEAVY, 16, at(0.1)),
            Some(Keep {
                slots: 1,
                over_share: false
            })
        );
        assert_eq!(h.keep(TenantHeadroom::Peak, LIGHT, 16, at(0.1)), None);
        // weighted: with weight 4 the light tenant's one counts as a quarter
        h.set_weight(LIGHT.unwrap(), 4);
        h.started(LIGHT, at(0.1));
        assert_eq!(h.keep(TenantHeadroom::Peak, LIGHT, 16, at(0.2)), None);
        assert!(h.keep(TenantHeadroom::Peak, HEAVY, 16, at(0.2)).is_some());
        h.set_weight(LIGHT.unwrap(), 1);
        // equal in flight: neither keeps for the other
        h.started(LIGHT, at(0.2));
        assert_eq!(h.keep(TenantHeadroom::Peak, HEAVY, 16, at(0.3)), None);
        assert_eq!(h.keep(TenantHeadroom::Peak, LIGHT, 16, at(0.3)), None);
    }

    #[test]
    fn weights_set_the_shares() {
        let mut h = Headroom::default();
        h.set_weight(HEAVY.unwrap(), 3);
        h.arrived(LIGHT, at(0.0));
        h.started(LIGHT, at(0.0));
        h.ended(LIGHT);
        for _ in 0..5 {
            h.started(HEAVY, at(0.0));
        }
        // 8 slots: heavy's share is 6, so at 5 it is under it and never held
        assert!(!h.holds_back(TenantHeadroom::Peak, HEAVY, 1, 8, at(0.5)));
        h.started(HEAVY, at(0.5));
        // at 6 it is not under: it leaves the light tenant its peak (1) + 1
        assert!(h.holds_back(TenantHeadroom::Peak, HEAVY, 2, 8, at(0.6)));
        assert!(!h.holds_back(TenantHeadroom::Peak, HEAVY, 3, 8, at(0.6)));
    }
}
