//! `locality`: requests sharing a prompt prefix go to the instance likely to hold it in
//! its prefix cache.
//!
//! The prefix index is a fixed-size, 4-way set-associative table of `capacity` entries
//! (prefix hash -> instance), allocated once: memory is bounded (24 bytes an entry) and
//! the least recently used entry of a set is replaced. A request whose prefix is known goes
//! to that instance if it is eligible and within the load bound (`load_factor` times the
//! mean in-flight count, rounded up); if the instance is over the bound or full, the
//! request spills to the least-loaded eligible instance and the entry is kept (one hot
//! prefix cannot overload an instance, and its home stays put); if it is no longer
//! routable or allowed, the prefix is re-homed. Unknown prefixes go to the least-loaded
//! instance, which becomes their home. Requests without a prefix hash go to the least
//! loaded.

use super::{Allowed, PoolView, RoutingStrategy};
use crate::pool::Slot;
use crate::request::RequestMeta;
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "locality";

const WAYS: usize = 4;

/// Settings of `locality`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalityConfig {
    /// Prefix index entries (rounded up to a multiple of 4).
    pub capacity: usize,
    /// Load bound: at most this many times the mean in-flight count (rounded up).
    pub load_factor: f64,
}

impl Default for LocalityConfig {
    fn default() -> Self {
        LocalityConfig {
            capacity: 65_536,
            load_factor: 1.25,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Way {
    tag: u64,
    ix: u32,
    stamp: u64,
}

/// Prefix-cache-aware routing with a bounded index.
#[derive(Debug)]
pub struct Locality {
    load_factor: f64,
    table: Vec<Way>,
    clock: u64,
    cursor: usize,
}

impl Locality {
    /// A new strategy; allocates the whole index now.
    pub fn new(config: LocalityConfig) -> Self {
        // bounded here too (`settings::check_routing` reports it): never a huge or an
        // overflowed (zero) table
        let capacity = config
            .capacity
            .clamp(WAYS, crate::settings::MAX_LOCALITY_CAPACITY)
            .div_ceil(WAYS)
            * WAYS;
        Locality {
            load_factor: config.load_factor,
            table: vec![Way::default(); capacity],
            clock: 0,
            cursor: 0,
        }
    }

    /// Entries the index can hold.
    pub fn capacity(&self) -> usize {
        self.table.len()
    }

    /// The instance a prefix is homed on, if indexed.
    pub fn home(&self, prefix: u64) -> Option<Slot> {
        let set = self.set(prefix);
        self.table[set..set + WAYS]
            .iter()
            .find(|s| s.stamp != 0 && s.tag == prefix)
            .map(|s| s.ix as usize)
    }

    fn set(&self, prefix: u64) -> usize {
        let sets = self.table.len() / WAYS;
        (prefix % sets as u64) as usize * WAYS
    }

    fn remember(&mut self, prefix: u64, ix: Slot) {
        self.clock += 1;
        let set = self.set(prefix);
        let ways = &mut self.table[set..set + WAYS];
        let way = ways
            .iter()
            .position(|s| s.stamp != 0 && s.tag == prefix)
            .or_else(|| ways.iter().position(|s| s.stamp == 0))
            .unwrap_or_else(|| (0..WAYS).min_by_key(|&w| ways[w].stamp).unwrap_or_default());
        ways[way] = Way {
            tag: prefix,
            ix: ix as u32,
            stamp: self.clock,
        };
    }

    fn least_loaded(&mut self, view: &PoolView<'_>, allowed: Allowed<'_>) -> Option<Slot> {
        let ix = view.least_loaded(allowed, self.cursor)?;
        self.cursor = ix + 1;
        Some(ix)
    }
}

impl RoutingStrategy for Locality {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        let Some(prefix) = req.prefix_hash else {
            return self.least_loaded(view, allowed);
        };
        if let Some(home) = self.home(prefix) {
            let routable = allowed.contains(home) && view.get(home).is_some_and(|s| s.routable());
            if routable {
                if view.eligible(home, allowed) && view.within_load_bound(home, self.load_factor) {
                    self.remember(prefix, home);
                    return Some(home);
                }
                return self.least_loaded(view, allowed);
            }
        }
        let ix = self.least_loaded(view, allowed)?;
        self.remember(prefix, ix);
        Some(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testkit;

    #[test]
    fn locality_sends_equal_prefixes_to_the_same_instance() {
        let mut st = testkit::states(&[(100, 0); 4]);
        let mut l = Locality::new(LocalityConfig::default());
        let mut homes = Vec::new();
        for p in 0..4u64 {
            let ix = l.pick(
                &testkit::req(p, None, Some(p)),
                &testkit::view(&st),
                Allowed::All,
            );
            let ix = ix.unwrap();
            st[ix].as_mut().unwrap().inflight += 1;
            homes.push(ix);
        }
        assert_eq!(
            homes,
            [0, 1, 2, 3],
            "new prefixes spread to the least loaded"
        );
        for round in 0..3u64 {
            for p in 0..4u64 {
                let r = testkit::req(10 + round * 4 + p, None, Some(p));
                let ix = l.pick(&r, &testkit::view(&st), Allowed::All).unwrap();
                assert_eq!(ix, homes[p as usize]);
                st[ix].as_mut().unwrap().inflight += 1;
            }
        }
    }

    #[test]
    fn locality_spills_a_hot_prefix_beyond_the_load_bound_without_rehoming_it() {
        let mut st = testkit::states(&[(100, 0); 4]);
        let mut l = Locality::new(LocalityConfig::default());
        let mut placed = [0u32; 4];
        for i in 0..40 {
            let ix = l
                .pick(
                    &testkit::req(i, None, Some(42)),
                    &testkit::view(&st),
                    Allowed::All,
                )
                .unwrap();
            st[ix].as_mut().unwrap().inflight += 1;
            placed[ix] += 1;
        }
        let home = l.home(42).unwrap();
        // the home never exceeds ceil(1.25 * mean)
        assert_eq!(placed[home], 13, "{placed:?}");
        assert!(placed.iter().all(|&c| c <= 13));
        assert_eq!(l.home(42), Some(home));
    }

    #[test]
    fn locality_rehomes_a_prefix_whose_instance_went_away_and_keeps_memory_bounded() {
        let mut st = testkit::states(&[(100, 0); 2]);
        let mut l = Locality::new(LocalityConfig {
            capacity: 8,
            load_factor: 1.25,
        });
        let first = l.pick(
            &testkit::req(1, None, Some(7)),
            &testkit::view(&st),
            Allowed::All,
        );
        st[first.unwrap()].as_mut().unwrap().ready = false;
        testkit::refresh_all(&mut st);
        let second = l.pick(
            &testkit::req(2, None, Some(7)),
            &testkit::view(&st),
            Allowed::All,
        );
        assert_ne!(first, second);
        assert_eq!(l.home(7), second);
        for p in 0..1000 {
            l.pick(
                &testkit::req(p, None, Some(p * 7919)),
                &testkit::view(&st),
                Allowed::All,
            );
        }
        assert_eq!(l.capacity(), 8);
    }
}
