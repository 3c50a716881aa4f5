//! `prefix`: prefix-cache-aware routing over a bounded index of which instance was sent
//! which prompt blocks (approximate mode: recorded at placement, see [`PrefixIndex`]).
//!
//! Each eligible instance is scored, lower is better, by
//!
//! ```text
//! score = load - hit_weight * reused        (reused counts only while load < spread_load)
//! ```
//!
//! where `load` is its [`load_score`](crate::pool::InstanceState::load_score) (attempts in
//! flight plus requests waiting in the engine, over its in-flight limit: relative to its
//! size, so a large instance takes more) and `reused` the share of the prompt's tokens in
//! the leading blocks it holds (prefill a hit saves). With `hit_weight = 1`, a whole-prompt
//! hit is worth an instance's full batch of extra load. From `spread_load` on an instance gets
//! no credit for its blocks: a hot prefix then goes to the next-best holder, or to the
//! least-loaded instance, which holds it from then on, so hot prefixes spread before one
//! instance becomes a hotspot. Requests without block hashes go to the least loaded.
//!
//! The index is per pool (one strategy per pool), evicts to `max_blocks` and to each
//! instance's KV capacity, and forgets an instance whose slot is removed or reused at the
//! next `rebuild`. `pick` does not allocate; `placed` may, within the index's bound.

use super::{Allowed, PoolView, RoutingStrategy};
use crate::pool::{InstanceIx, Slot};
use crate::prefix::{BLOCK_TOKENS, CacheChange, Matches, PrefixIndex};
use crate::request::RequestMeta;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The config tag.
pub const NAME: &str = "prefix";

/// Settings of `prefix`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixConfig {
    /// Most (block, instance) entries indexed in the pool; see
    /// [`crate::prefix::BYTES_PER_BLOCK`] for the memory each costs.
    pub max_blocks: usize,
    /// What a whole-prompt hit is worth in load (shares of an instance's in-flight limit).
    pub hit_weight: f64,
    /// Load (share of the in-flight limit) from which on an instance's blocks earn no credit.
    pub spread_load: f64,
    /// Entries not touched for this long no longer count (`None`: only the bounds evict).
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig {
            max_blocks: 1 << 20,
            hit_weight: 1.0,
            spread_load: 0.5,
            max_age: None,
        }
    }
}

/// Prefix-cache-aware routing scored against capacity-relative load.
#[derive(Debug)]
pub struct Prefix {
    config: PrefixConfig,
    index: PrefixIndex,
    matches: Matches,
    scratch: Vec<InstanceIx>,
    cursor: usize,
}

impl Prefix {
    /// A new strategy with an empty index.
    pub fn new(config: PrefixConfig) -> Self {
        let max_blocks = config.max_blocks.min(crate::settings::MAX_PREFIX_BLOCKS);
        Prefix {
            index: PrefixIndex::new(max_blocks, config.max_age),
            config,
            matches: Matches::default(),
            scratch: Vec::new(),
            cursor: 0,
        }
    }

    /// The pool's prefix index.
    pub fn index(&self) -> &PrefixIndex {
        &self.index
    }

    /// The pool's prefix index, to feed it (precise mode's KV-cache events).
    pub fn index_mut(&mut self) -> &mut PrefixIndex {
        &mut self.index
    }
}

impl RoutingStrategy for Prefix {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Forgets instances whose slot is gone or reused, takes each instance's KV capacity.
    fn rebuild(&mut self, view: &PoolView<'_>) {
        self.scratch.clear();
        self.scratch
            .extend(self.index.instances().map(|(ix, _)| ix));
        for &ix in &self.scratch {
            if view.get(ix.slot()).is_none_or(|i| i.ix != ix) {
                self.index.remove_instance(ix);
            }
        }
        for inst in view.instances.iter().flatten() {
            self.index
                .set_capacity(inst.ix, inst.engine.kv_capacity_tokens);
        }
        self.matches.reserve(view.instances.len());
    }

    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        self.index
            .matches(&req.prefix_blocks, view.now, &mut self.matches);
        let prompt = req.prompt_tokens.max(1);
        let (m, weight, spread) = (
            &self.matches,
            self.config.hit_weight,
            self.config.spread_load,
        );
        let ix = view.least_by(allowed, self.cursor, |inst| {
            let load = inst.load_score();
            if load >= spread {
                return load;
            }
            let reused = m
                .blocks(inst.ix.slot())
                .saturating_mul(BLOCK_TOKENS)
                .min(prompt);
            load - weight * f64::from(reused) / f64::from(prompt)
        })?;
        self.cursor = ix + 1;
        Some(ix)
    }

    fn placed(&mut self, req: &RequestMeta, ix: InstanceIx, now: Time) {
        self.index.placed(ix, &req.prefix_blocks, now);
    }

    /// Precise mode: the engine's own account corrects the placements recorded so far.
    fn cache_changed(&mut self, ix: InstanceIx, change: CacheChange<'_>, now: Time) {
        match change {
            CacheChange::Stored(hashes) => self.index.stored(ix, hashes, now),
            CacheChange::Removed(hashes) => self.index.removed(ix, hashes),
            CacheChange::Cleared | CacheChange::Lost => self.index.cleared(ix),
        }
    }

    fn routes_by_blocks(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "prefix_tests.rs"]
mod tests;
