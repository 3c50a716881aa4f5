//! `prefix`: prefix-cache-aware routing over a bounded index of which instance was sent
//! which prompt blocks (approximate mode: recorded at placement, see [`PrefixIndex`]).
//!
//! Each eligible instance is scored, lower is better, by
//!
//! ```text
//! score = load - hit_weight * reused        (reused counts unless the instance is hot)
//! hot   = load >= spread_load  and  load >= spread_over_mean * mean load of the pool
//! ```
//!
//! where `load` is its [`load_score`](crate::pool::InstanceState::load_score) (attempts in
//! flight plus requests waiting in the engine, over its in-flight limit: relative to its
//! size, so a large instance takes more) and `reused` the share of the prompt's tokens in
//! the leading blocks it holds (prefill a hit saves). With `hit_weight = 1`, a whole-prompt
//! hit is worth an instance's full batch of extra load. A hot instance gets no credit for
//! its blocks: a hot prefix then goes to the next-best holder, or to the least-loaded
//! instance, which holds it from then on, so hot prefixes spread before one instance
//! becomes a hotspot. Hot is relative to the pool (the mean load is attempts in flight over
//! the in-flight limits of routable instances): when every instance is busy, none is a
//! hotspot, and blocks keep their credit, so affinity holds in overload, where hits matter
//! most (an absolute cutoff alone turned the strategy into least-loaded routing there and
//! its hit rate fell toward round robin's). Requests without block hashes go to the least
//! loaded.
//!
//! When gateway replicas share their counts (`fleet`), a prompt no instance holds any of
//! goes to its **home**: of the eligible instances whose load is within `home_slack` of
//! the least loaded, the one that ranks first for the prompt's first block by rendezvous
//! hashing over instance ids. Every replica with the same instances and the same shared
//! loads picks the same home, so a conversation whose turns reach different replicas,
//! which each index only their own placements, still finds its prefix where the first
//! turn left it. A single gateway sends such a prompt to the least loaded instead: homes
//! cost it tail latency on a mixed cluster (measured in the DES: hetero prefix-heavy TTFT
//! p99 284 -> 845 ms at load 0.3, since a home may be a slower instance with a similar
//! load share). Pools of more than [`SCAN`] slots rank only the scanned window.
//!
//! The index is per pool (one strategy per pool), evicts to `max_blocks` and to each
//! instance's KV capacity, and forgets an instance whose slot is removed or reused at the
//! next `rebuild`. `pick` does not allocate; `placed` may, within the index's bound.

use super::{Allowed, PoolView, PrefixNote, PrefixReason, RoutingStrategy};
use crate::pool::{InstanceIx, InstanceState, Slot};
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
    /// Load (share of the in-flight limit) below which an instance's blocks always earn
    /// credit.
    pub spread_load: f64,
    /// From `spread_load` on, an instance's blocks earn no credit once its load is also this
    /// many times the pool's mean load (it is a hotspot).
    pub spread_over_mean: f64,
    /// Entries not touched for this long no longer count (`None`: only the bounds evict).
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// With replicas sharing their counts: load (share of the in-flight limit) above the
    /// least loaded within which a prompt no instance holds goes to its hash home rather
    /// than the least loaded (0: always the least loaded).
    pub home_slack: f64,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig {
            max_blocks: 1 << 20,
            hit_weight: 1.0,
            spread_load: 0.5,
            spread_over_mean: 1.5,
            max_age: None,
            home_slack: 0.25,
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
    note: Option<PrefixNote>,
    /// Each slot's instance id hashed, for rendezvous homes (kept by `rebuild`).
    id_hash: Vec<u64>,
}

/// Pools of up to this many slots are scanned whole at each pick; larger ones score the
/// holders and a rotating window of this many eligible instances.
pub const SCAN: usize = 128;

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
            note: None,
            id_hash: Vec::new(),
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

    /// Whether the request should rather wait for a holder of more of its prompt that has
    /// no room now than go to `chosen` (where `here` tokens are cached): when the holder's
    /// predicted time to a free slot, plus its prefill of what it lacks, beats prefilling
    /// here, counting what the request has waited already (so it never waits longer in all
    /// than the prefill it would save). Returns the tokens the holder has cached.
    ///
    /// The time to a free slot is the holder's typical remaining decode spread over its
    /// batch: predicted output tokens times its time per token, over its in-flight
    /// requests plus one (completions of a batch in mid-flight are spread evenly).
    fn worth_waiting_for(
        &self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
        chosen: &InstanceState,
        here: u32,
    ) -> Option<u32> {
        let prompt = req.prompt_tokens.max(1);
        let (holder, cached) = self
            .matches
            .holders()
            .filter(|&s| allowed.contains(s))
            .filter_map(|s| view.get(s).map(|i| (i, reused(&self.matches, i, prompt))))
            .filter(|(i, c)| *c > here && i.routable() && !view.has_room(i))
            .max_by_key(|(_, c)| *c)?;
        let now = view.now;
        let cold = chosen.ttft_secs(prompt - here, now);
        let warm = holder.ttft_secs(prompt - cached, now);
        let to_slot = f64::from(view.output_tokens(req)) * holder.tpot_secs()
            / f64::from(holder.inflight + 1);
        let waited = now.saturating_since(req.arrival).as_secs_f64();
        (waited + to_slot + warm < cold).then_some(cached)
    }
}

/// In a pool of more than [`SCAN`] slots: the best of the instances holding some of the
/// prompt and of the next [`SCAN`] eligible instances from the cursor (a non-holder's
/// score is its load, so the least loaded of a rotating window stands for the pool's
/// least loaded). O(holders + SCAN) instead of O(instances).
fn pick_bounded(
    matches: &Matches,
    cursor: &mut usize,
    view: &PoolView<'_>,
    allowed: Allowed<'_>,
    score: impl Fn(&InstanceState) -> f64,
) -> Option<Slot> {
    let mut best: Option<(Slot, f64)> = None;
    let mut consider = |slot: Slot, inst: &InstanceState| {
        let s = score(inst);
        if best.is_none_or(|(_, b)| s < b) {
            best = Some((slot, s));
        }
    };
    for slot in matches.holders() {
        if let Some(inst) = view.get(slot).filter(|_| view.eligible(slot, allowed)) {
            consider(slot, inst);
        }
    }
    let n = view.instances.len();
    let (mut seen, mut visited) = (0, 0);
    while visited < n && seen < SCAN {
        let slot = (*cursor + visited) % n;
        visited += 1;
        if let Some(inst) = view.get(slot).filter(|_| view.eligible(slot, allowed)) {
            seen += 1;
            consider(slot, inst);
        }
    }
    *cursor = (*cursor + visited) % n;
    best.map(|(slot, _)| slot)
}

/// Of the eligible instances within `slack` of `floor`'s load, the one that ranks first
/// for `key` by rendezvous hashing (`mix(key ^ id hash)`, highest wins), else `floor`.
/// Scans the same instances the pick did: the whole pool up to [`SCAN`] slots.
fn home(
    key: u64,
    floor: Slot,
    slack: f64,
    id_hash: &[u64],
    view: &PoolView<'_>,
    allowed: Allowed<'_>,
) -> Slot {
    let n = view.instances.len();
    let Some(least) = view.get(floor).map(InstanceState::load_score) else {
        return floor;
    };
    let shared = view.get(floor).is_some_and(|i| i.fleet.cap.is_some());
    if slack <= 0.0 || n > SCAN || !shared {
        return floor;
    }
    let mut best = (floor, 0u64);
    for slot in 0..n {
        let Some(inst) = view.get(slot).filter(|_| view.eligible(slot, allowed)) else {
            continue;
        };
        if inst.load_score() > least + slack {
            continue;
        }
        let rank = xxhash_rust::xxh3::xxh3_64(
            &(key ^ id_hash.get(slot).copied().unwrap_or(0)).to_le_bytes(),
        );
        if rank >= best.1 {
            best = (slot, rank);
        }
    }
    best.0
}

/// Tokens of a `prompt_tokens` prompt that `inst` holds in its leading blocks.
fn reused(m: &Matches, inst: &InstanceState, prompt_tokens: u32) -> u32 {
    m.blocks(inst.ix.slot())
        .saturating_mul(BLOCK_TOKENS)
        .min(prompt_tokens)
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
        self.id_hash.clear();
        self.id_hash.extend(view.instances.iter().map(|i| {
            i.as_ref().map_or(0, |i| {
                xxhash_rust::xxh3::xxh3_64(i.spec.id.as_str().as_bytes())
            })
        }));
        self.matches.reserve(view.instances.len());
    }

    fn pick(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        self.note = None;
        self.index
            .matches(&req.prefix_blocks, view.now, &mut self.matches);
        let prompt = req.prompt_tokens.max(1);
        let m = &self.matches;
        let weight = self.config.hit_weight;
        let mean = view.routable_inflight as f64 / view.capacity.max(1) as f64;
        let hot = self
            .config
            .spread_load
            .max(self.config.spread_over_mean * mean);
        let score = |inst: &InstanceState| {
            let load = inst.load_score();
            if load >= hot {
                return load;
            }
            load - weight * f64::from(reused(m, inst, prompt)) / f64::from(prompt)
        };
        let n = view.instances.len();
        let chosen = if n <= SCAN {
            let c = view.least_by(allowed, self.cursor, score)?;
            self.cursor = c + 1;
            c
        } else {
            pick_bounded(m, &mut self.cursor, view, allowed, score)?
        };
        let best = (self.matches.best().saturating_mul(BLOCK_TOKENS)).min(prompt);
        let chosen = match req.prefix_blocks.first() {
            Some(&first) if best == 0 => home(
                first,
                chosen,
                self.config.home_slack,
                &self.id_hash,
                view,
                allowed,
            ),
            _ => chosen,
        };
        let inst = view.get(chosen)?;
        let here = reused(m, inst, prompt);
        if let Some(holder) = self.worth_waiting_for(req, view, allowed, inst, here) {
            self.note = Some(PrefixNote {
                matched_tokens: 0,
                best_tokens: holder,
                reason: PrefixReason::Wait,
            });
            return None;
        }
        let reason = if req.prefix_blocks.is_empty() {
            PrefixReason::Unhashed
        } else if best == 0 {
            PrefixReason::Miss
        } else if here >= best {
            PrefixReason::Hit
        } else {
            PrefixReason::Spread
        };
        self.note = Some(PrefixNote {
            matched_tokens: here,
            best_tokens: best,
            reason,
        });
        Some(chosen)
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

    fn note(&self) -> Option<PrefixNote> {
        self.note
    }
}

#[cfg(test)]
#[path = "prefix_tests.rs"]
mod tests;
