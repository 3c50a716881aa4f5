//! `affinity`: a session sticks to one instance, by consistent hashing with bounded loads.
//!
//! Every instance in the table (ready or not) owns `virtual_nodes` points on a hash ring
//! (xxh3 of its id and the point's number). A request's key (its session, else its id)
//! hashes to a point; the request goes to the first instance clockwise that is eligible
//! (allowed, ready, not draining, with room) and within the load bound: one more request
//! must not take it above `load_factor` times the mean in-flight count (rounded up). So a
//! session moves only when its instance is unhealthy, draining, full or over the bound,
//! and comes back when it recovers; adding or removing an instance moves only the keys
//! of its own arcs. The ring is rebuilt when instances are added or removed. The walk
//! stops after [`MAX_WALK`] points (when nearly every instance is full) and then takes
//! the least-loaded eligible instance.

use super::{Allowed, PoolView, RoutingStrategy};
use crate::pool::Slot;
use crate::request::RequestMeta;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The config tag.
pub const NAME: &str = "affinity";

/// Ring points visited before falling back to the least-loaded eligible instance (keeps
/// a pick O(1) when almost every instance is full).
pub const MAX_WALK: usize = 64;

/// Settings of `affinity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AffinityConfig {
    /// Load bound: at most this many times the mean in-flight count (rounded up).
    pub load_factor: f64,
    /// Ring points per instance.
    pub virtual_nodes: u32,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            load_factor: 1.25,
            virtual_nodes: 40,
        }
    }
}

/// Consistent hashing with bounded loads.
#[derive(Debug)]
pub struct Affinity {
    config: AffinityConfig,
    ring: Vec<(u64, u32)>,
}

/// The ring hash of a request's affinity key: its session, else its id.
pub fn key_hash(req: &RequestMeta) -> u64 {
    match &req.session {
        Some(s) => xxh3_64(s.as_bytes()),
        None => xxh3_64(&req.id.0.to_le_bytes()),
    }
}

impl Affinity {
    /// A new strategy (empty ring until `rebuild`).
    pub fn new(config: AffinityConfig) -> Self {
        Affinity {
            config,
            ring: Vec::new(),
        }
    }

    /// The instance owning `hash` on the ring, ignoring load and health.
    pub fn home(&self, hash: u64) -> Option<Slot> {
        let at = self.ring.partition_point(|&(h, _)| h < hash) % self.ring.len().max(1);
        self.ring.get(at).map(|&(_, ix)| ix as usize)
    }
}

impl RoutingStrategy for Affinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn rebuild(&mut self, view: &PoolView<'_>) {
        self.ring.clear();
        for (ix, inst) in view.instances.iter().enumerate() {
            let Some(inst) = inst else { continue };
            for v in 0..self
                .config
                .virtual_nodes
                .clamp(1, crate::settings::MAX_VIRTUAL_NODES)
            {
                let h = xxh3_64_with_seed(inst.spec.id.as_str().as_bytes(), u64::from(v));
                self.ring.push((h, ix as u32));
            }
        }
        self.ring.sort_unstable();
    }
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        let len = self.ring.len();
        if len == 0 {
            return None;
        }
        let start = self.ring.partition_point(|&(h, _)| h < key_hash(req));
        let walk = (start..len)
            .chain(0..start)
            .take(MAX_WALK)
            .map(|i| self.ring[i].1 as usize);
        let mut fallback = None;
        for ix in walk {
            if !view.eligible(ix, allowed) {
                continue;
            }
            if view.within_load_bound(ix, self.config.load_factor) {
                return Some(ix);
            }
            fallback = fallback.or(Some(ix));
        }
        // nearly everything is full or over the bound: any eligible instance will do
        fallback.or_else(|| view.least_loaded(allowed, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testkit;

    fn sessions() -> Vec<RequestMeta> {
        (0..200)
            .map(|i| testkit::req(i, Some(&format!("user-{i}")), None))
            .collect()
    }

    #[test]
    fn affinity_is_stable_while_healthy_and_spreads_sessions() {
        let st = testkit::states(&[(1000, 0); 8]);
        let view = testkit::view(&st);
        let mut a = Affinity::new(AffinityConfig::default());
        a.rebuild(&view);
        let first: Vec<_> = sessions()
            .iter()
            .map(|r| a.pick(r, &view, Allowed::All))
            .collect();
        for _ in 0..3 {
            let again: Vec<_> = sessions()
                .iter()
                .map(|r| a.pick(r, &view, Allowed::All))
                .collect();
            assert_eq!(again, first);
        }
        let mut counts = [0; 8];
        first.iter().for_each(|ix| counts[ix.unwrap()] += 1);
        assert!(counts.iter().all(|&c| c > 5), "{counts:?}");
    }

    #[test]
    fn affinity_moves_only_the_sessions_of_an_unhealthy_instance_and_brings_them_back() {
        let mut st = testkit::states(&[(1000, 0); 8]);
        let mut a = Affinity::new(AffinityConfig::default());
        a.rebuild(&testkit::view(&st));
        let before: Vec<_> = sessions()
            .iter()
            .map(|r| a.pick(r, &testkit::view(&st), Allowed::All).unwrap())
            .collect();
        st[3].as_mut().unwrap().ready = false;
        testkit::refresh_all(&mut st);
        let during: Vec<_> = sessions()
            .iter()
            .map(|r| a.pick(r, &testkit::view(&st), Allowed::All).unwrap())
            .collect();
        for (b, d) in before.iter().zip(&during) {
            assert_ne!(*d, 3);
            if *b != 3 {
                assert_eq!(b, d, "sessions of healthy instances stay put");
            }
        }
        assert!(before.contains(&3));
        st[3].as_mut().unwrap().ready = true;
        testkit::refresh_all(&mut st);
        let after: Vec<_> = sessions()
            .iter()
            .map(|r| a.pick(r, &testkit::view(&st), Allowed::All).unwrap())
            .collect();
        assert_eq!(after, before);
    }

    #[test]
    fn affinity_spills_a_session_whose_instance_is_over_the_load_bound() {
        let mut st = testkit::states(&[(1000, 2); 4]);
        let mut a = Affinity::new(AffinityConfig::default());
        a.rebuild(&testkit::view(&st));
        let r = testkit::req(1, Some("hot"), None);
        let home = a.pick(&r, &testkit::view(&st), Allowed::All).unwrap();
        // home at 4: mean after one more = 11/4 -> bound ceil(1.25 * 2.75) = 4 < 5
        st[home].as_mut().unwrap().inflight = 4;
        let moved = a.pick(&r, &testkit::view(&st), Allowed::All).unwrap();
        assert_ne!(moved, home);
        st[home].as_mut().unwrap().inflight = 2;
        assert_eq!(a.pick(&r, &testkit::view(&st), Allowed::All), Some(home));
    }
}
