//! [`PrefixIndex`]: which instances hold which prompt blocks, per pool, bounded.
//!
//! One entry per (block hash, instance) pair, kept in a slab with three intrusive lists:
//! the chain of entries with the same hash (found through a hash map from block hash to
//! the chain's first entry), the instance's own recency list, and the pool-wide recency
//! list. Two bounds hold after every operation:
//! - at most `max_blocks` entries in all (the pool-wide least recently used goes first);
//! - at most what an instance's KV cache holds (its capacity in tokens over
//!   [`BLOCK_TOKENS`], when known): its own least recently used entries go first.
//!
//! Entries not touched for `max_age` are dropped too (an engine's cache also serves
//! traffic the index never sees). A prompt's blocks are touched last block first, so its
//! first blocks are the most recent and the last to go, as engines evict.
//!
//! Memory: [`BYTES_PER_BLOCK`] bytes per indexed block at most (a 40-byte entry plus at
//! most two 17-byte hash-map buckets: hashbrown grows by doubling at 7/8 load).
//!
//! Instances are named by generation-tagged [`InstanceIx`]: an operation for a newer
//! generation of a slot first drops what the older one held; one for an older generation
//! is ignored. So a reused slot never inherits another instance's blocks.

use super::blocks::BLOCK_TOKENS;
use crate::pool::InstanceIx;
use crate::time::Time;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

pub(super) const NIL: u32 = u32::MAX;

/// Upper bound on the index's heap bytes per indexed block (entry plus hash-map share).
pub const BYTES_PER_BLOCK: usize = ENTRY_BYTES + 2 * BUCKET_BYTES * 8 / 7 + 1;
const ENTRY_BYTES: usize = 40;
const BUCKET_BYTES: usize = 17; // (u64, u32) = 16 bytes + 1 control byte

/// Block hashes are hashes already, but not necessarily well mixed in every bit (an
/// engine's own, a test's): one multiply-xorshift round spreads them, far cheaper than
/// SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        let x = (n ^ (n >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    hash: u64,
    pub(super) touched: Time,
    pub(super) slot: u32,
    /// Next entry with the same hash.
    pub(super) chain: u32,
    /// The instance's recency list: `newer` towards its head, `older` towards its tail.
    newer: u32,
    older: u32,
    /// The pool-wide recency list.
    gnewer: u32,
    golder: u32,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    ix: InstanceIx,
    newest: u32,
    oldest: u32,
    len: u32,
    cap: Option<u32>,
    /// False once removed: the slot remembers the generation, so late news of the removed
    /// instance (or an older one) is ignored.
    live: bool,
}

/// Which instances hold which prompt blocks, within a memory bound and each instance's KV
/// capacity (see the module docs).
#[derive(Debug)]
pub struct PrefixIndex {
    max_blocks: usize,
    max_age: Option<Duration>,
    pub(super) entries: Vec<Entry>,
    free: u32,
    len: usize,
    pub(super) heads: HashMap<u64, u32, BuildHasherDefault<Mix>>,
    insts: Vec<Option<Held>>,
    gnewest: u32,
    goldest: u32,
}

impl PrefixIndex {
    /// An empty index of at most `max_blocks` entries (at least 1), dropping entries not
    /// touched for `max_age` when given. Memory grows with use, up to the bound.
    pub fn new(max_blocks: usize, max_age: Option<Duration>) -> Self {
        PrefixIndex {
            max_blocks: max_blocks.clamp(1, NIL as usize - 1),
            max_age,
            entries: Vec::new(),
            free: NIL,
            len: 0,
            heads: HashMap::default(),
            insts: Vec::new(),
            gnewest: NIL,
            goldest: NIL,
        }
    }

    /// Entries held (block, instance pairs).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most entries it holds.
    pub fn max_blocks(&self) -> usize {
        self.max_blocks
    }

    /// Entries held for `ix` (0 for an unknown or outdated index).
    pub fn blocks_of(&self, ix: InstanceIx) -> usize {
        self.held(ix).map_or(0, |h| h.len as usize)
    }

    /// Whether `ix` holds the block `hash`.
    pub fn holds(&self, ix: InstanceIx, hash: u64) -> bool {
        self.held(ix).is_some() && self.find(ix.slot() as u32, hash) != NIL
    }

    /// The instances the index knows, with the blocks each holds.
    pub fn instances(&self) -> impl Iterator<Item = (InstanceIx, usize)> + '_ {
        self.insts
            .iter()
            .flatten()
            .filter(|h| h.live)
            .map(|h| (h.ix, h.len as usize))
    }

    /// Heap bytes in use by the entries and the hash map (an estimate from capacities).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.heads.capacity() * BUCKET_BYTES * 8 / 7
    }

    /// Sets how many blocks `ix` can hold: its KV capacity in tokens over
    /// [`BLOCK_TOKENS`] (`None`: unknown, only the memory bound applies). Drops its
    /// oldest entries beyond it.
    pub fn set_capacity(&mut self, ix: InstanceIx, kv_capacity_tokens: Option<u64>) {
        let Some(s) = self.adopt(ix) else { return };
        let cap = kv_capacity_tokens
            .map(|t| u32::try_from(t / u64::from(BLOCK_TOKENS)).unwrap_or(u32::MAX - 1));
        if let Some(h) = self.insts[s].as_mut() {
            h.cap = cap;
        }
        self.trim(s, 0);
    }

    /// Approximate mode: the prompt with these block hashes (in prompt order) was sent to
    /// `ix` at `now`, which will hold them, as [`stored`](Self::stored).
    pub fn placed(&mut self, ix: InstanceIx, hashes: &[u64], now: Time) {
        self.stored(ix, hashes, now);
    }

    /// `ix` holds these blocks (in prompt order) as of `now`: adds or refreshes them,
    /// evicting to the bounds. O(blocks x instances holding each).
    pub fn stored(&mut self, ix: InstanceIx, hashes: &[u64], now: Time) {
        self.expire(now);
        let Some(s) = self.adopt(ix) else { return };
        for &h in hashes.iter().rev() {
            let e = self.find(s as u32, h);
            if e != NIL {
                self.unlink_lists(e);
                self.entries[e as usize].touched = now;
                self.push_lists(e, s);
            } else {
                self.trim(s, 1);
                self.insert(s, h, now);
            }
        }
    }

    /// `ix` no longer holds these blocks.
    pub fn removed(&mut self, ix: InstanceIx, hashes: &[u64]) {
        if self.held(ix).is_none() {
            return;
        }
        for &h in hashes {
            let e = self.find(ix.slot() as u32, h);
            if e != NIL {
                self.drop_entry(e);
            }
        }
    }

    /// `ix` holds nothing any more (its cache was cleared); it stays known.
    pub fn cleared(&mut self, ix: InstanceIx) {
        if self.held(ix).is_some() {
            self.clear_slot(ix.slot());
        }
    }

    /// `ix` is gone: drops its entries; later news of it is ignored.
    pub fn remove_instance(&mut self, ix: InstanceIx) {
        if self.held(ix).is_some() {
            self.clear_slot(ix.slot());
            if let Some(h) = self.insts[ix.slot()].as_mut() {
                h.live = false;
                h.cap = None;
            }
        }
    }

    pub(super) fn expired(&self, e: &Entry, now: Time) -> bool {
        self.max_age
            .is_some_and(|age| e.touched.saturating_add(age) < now)
    }

    fn expire(&mut self, now: Time) {
        while self.goldest != NIL && self.expired(&self.entries[self.goldest as usize], now) {
            self.drop_entry(self.goldest);
        }
    }

    fn held(&self, ix: InstanceIx) -> Option<&Held> {
        self.insts
            .get(ix.slot())
            .and_then(Option::as_ref)
            .filter(|h| h.ix == ix && h.live)
    }

    /// The slot for `ix`, taking it over from an older generation; `None` for an
    /// outdated index.
    fn adopt(&mut self, ix: InstanceIx) -> Option<usize> {
        let s = ix.slot();
        if s >= self.insts.len() {
            self.insts.resize(s + 1, None);
        }
        match self.insts[s] {
            Some(h) if h.ix == ix => return h.live.then_some(s),
            // wrapping comparison: a newer generation is ahead by less than half the range
            Some(h) if (ix.generation().wrapping_sub(h.ix.generation()) as i32) < 0 => {
                return None;
            }
            Some(_) => self.clear_slot(s),
            None => {}
        }
        self.insts[s] = Some(Held {
            ix,
            newest: NIL,
            oldest: NIL,
            len: 0,
            cap: None,
            live: true,
        });
        Some(s)
    }

    fn find(&self, slot: u32, hash: u64) -> u32 {
        let mut e = self.heads.get(&hash).copied().unwrap_or(NIL);
        while e != NIL && self.entries[e as usize].slot != slot {
            e = self.entries[e as usize].chain;
        }
        e
    }

    /// Evicts so that `room` more entries fit slot `s` and the index.
    fn trim(&mut self, s: usize, room: u32) {
        while let Some(h) = self.insts[s]
            && h.oldest != NIL
            && h.cap.is_some_and(|cap| h.len + room > cap)
        {
            self.drop_entry(h.oldest);
        }
        while self.len + room as usize > self.max_blocks && self.goldest != NIL {
            self.drop_entry(self.goldest);
        }
    }

    fn insert(&mut self, s: usize, hash: u64, now: Time) {
        if self.insts[s].is_some_and(|h| h.cap == Some(0)) {
            return;
        }
        let entry = Entry {
            hash,
            touched: now,
            slot: s as u32,
            chain: self.heads.get(&hash).copied().unwrap_or(NIL),
            newer: NIL,
            older: NIL,
            gnewer: NIL,
            golder: NIL,
        };
        let e = if self.free != NIL {
            let e = self.free;
            self.free = self.entries[e as usize].older;
            self.entries[e as usize] = entry;
            e
        } else {
            if self.entries.len() == self.entries.capacity() {
                // doubling, never beyond the bound
                let more = self
                    .entries
                    .len()
                    .max(64)
                    .min(self.max_blocks - self.entries.len());
                self.entries.reserve_exact(more.max(1));
            }
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        };
        self.heads.insert(hash, e);
        self.push_lists(e, s);
        self.len += 1;
        if let Some(h) = self.insts[s].as_mut() {
            h.len += 1;
        }
    }

    fn clear_slot(&mut self, s: usize) {
        while let Some(h) = self.insts[s]
            && h.oldest != NIL
        {
            self.drop_entry(h.oldest);
        }
    }

    fn drop_entry(&mut self, e: u32) {
        let Entry {
            hash, chain, slot, ..
        } = self.entries[e as usize];
        // out of its hash chain
        match self.heads.get(&hash).copied() {
            Some(first) if first == e => {
                if chain == NIL {
                    self.heads.remove(&hash);
                } else {
                    self.heads.insert(hash, chain);
                }
            }
            Some(first) => {
                let mut p = first;
                while self.entries[p as usize].chain != e {
                    p = self.entries[p as usize].chain;
                }
                self.entries[p as usize].chain = chain;
            }
            None => {}
        }
        self.unlink_lists(e);
        if let Some(h) = self.insts[slot as usize].as_mut() {
            h.len -= 1;
        }
        self.len -= 1;
        self.entries[e as usize].older = self.free;
        self.free = e;
    }

    fn push_lists(&mut self, e: u32, s: usize) {
        let Some(h) = self.insts[s].as_mut() else {
            return;
        };
        let (old_newest, old_gnewest) = (h.newest, self.gnewest);
        h.newest = e;
        if h.oldest == NIL {
            h.oldest = e;
        }
        self.gnewest = e;
        if self.goldest == NIL {
            self.goldest = e;
        }
        let en = &mut self.entries[e as usize];
        en.newer = NIL;
        en.older = old_newest;
        en.gnewer = NIL;
        en.golder = old_gnewest;
        if old_newest != NIL {
            self.entries[old_newest as usize].newer = e;
        }
        if old_gnewest != NIL {
            self.entries[old_gnewest as usize].gnewer = e;
        }
    }

    fn unlink_lists(&mut self, e: u32) {
        let Entry {
            slot,
            newer,
            older,
            gnewer,
            golder,
            ..
        } = self.entries[e as usize];
        if let Some(h) = self.insts[slot as usize].as_mut() {
            if newer == NIL {
                h.newest = older;
            }
            if older == NIL {
                h.oldest = newer;
            }
        }
        if newer != NIL {
            self.entries[newer as usize].older = older;
        }
        if older != NIL {
            self.entries[older as usize].newer = newer;
        }
        if gnewer == NIL {
            self.gnewest = golder;
        } else {
            self.entries[gnewer as usize].golder = golder;
        }
        if golder == NIL {
            self.goldest = gnewer;
        } else {
            self.entries[golder as usize].gnewer = gnewer;
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
