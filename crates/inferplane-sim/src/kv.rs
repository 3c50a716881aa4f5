//! The simulated KV cache: a budget of fixed-size blocks, and a prefix cache of full prompt
//! blocks keyed by chained block hashes, with LRU eviction of unreferenced blocks.
//!
//! Accounting follows vLLM's block manager: a block is either private to one sequence,
//! or cached (identified by its hash, shared by reference count). Cached blocks whose
//! count drops to zero stay cached (a later request with the same prefix can reuse them)
//! until the space is needed, when the least recently released is evicted first.

use crate::fasthash::FastMap;
use std::collections::VecDeque;

type BlockMap<V> = FastMap<u64, V>;

#[derive(Debug, Clone, Copy)]
struct CachedBlock {
    refs: u32,
    /// Release stamp while `refs == 0`; an `evictable` entry with another stamp is stale.
    stamp: u64,
}

/// Block budget plus prefix cache.
#[derive(Debug, Clone)]
pub struct KvCache {
    total: u32,
    private: u32,
    cached: BlockMap<CachedBlock>,
    /// Unreferenced blocks in release order, `(stamp, hash)`, oldest first. Entries whose
    /// block was re-acquired (or released again later) are stale and skipped: O(1)
    /// amortised per operation instead of an ordered map.
    evictable: VecDeque<(u64, u64)>,
    /// Cached blocks with no reference (the live entries of `evictable`).
    idle: u32,
    clock: u64,
    evictions: u64,
    /// Hashes evicted since the last [`KvCache::take_evicted`], when recording.
    evicted: Option<Vec<u64>>,
}

impl KvCache {
    /// A cache of `total` blocks, all free.
    pub fn new(total: u32) -> Self {
        KvCache {
            total,
            private: 0,
            cached: BlockMap::default(),
            evictable: VecDeque::new(),
            idle: 0,
            clock: 0,
            evictions: 0,
            evicted: None,
        }
    }

    /// Total blocks.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Blocks holding data (private or cached, referenced or not).
    pub fn occupied(&self) -> u32 {
        self.private + self.cached.len() as u32
    }

    /// Blocks referenced by running sequences (what vLLM reports as KV usage).
    pub fn in_use(&self) -> u32 {
        self.occupied() - self.idle
    }

    /// Blocks that an allocation could obtain: free plus evictable.
    pub fn available(&self) -> u32 {
        self.total - self.in_use()
    }

    /// Cached blocks evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Allocates `n` private blocks, evicting unreferenced cached blocks (LRU first) when
    /// needed. All or nothing: returns `false` and changes nothing if `n` cannot be had.
    pub fn alloc(&mut self, n: u32) -> bool {
        if n > self.available() {
            return false;
        }
        while self.total - self.occupied() < n {
            let Some((stamp, hash)) = self.evictable.pop_front() else {
                return false; // unreachable given the check above
            };
            let live = self
                .cached
                .get(&hash)
                .is_some_and(|b| b.refs == 0 && b.stamp == stamp);
            if live {
                self.cached.remove(&hash);
                self.idle -= 1;
                self.evictions += 1;
                if let Some(log) = self.evicted.as_mut() {
                    log.push(hash);
                }
            }
        }
        self.private += n;
        true
    }

    /// From now on, remember the hashes of evicted blocks for [`KvCache::take_evicted`].
    pub fn record_evictions(&mut self) {
        self.evicted.get_or_insert_with(Vec::new);
    }

    /// Hands the hashes evicted since the last call to `f`, oldest first.
    pub fn take_evicted(&mut self, mut f: impl FnMut(u64)) {
        if let Some(log) = self.evicted.as_mut() {
            log.drain(..).for_each(&mut f);
        }
    }

    /// Empties the prefix cache, as vLLM's `reset_prefix_cache`: only when no block is
    /// in use (no sequence holds one); returns whether it did.
    pub fn clear(&mut self) -> bool {
        if self.in_use() > 0 {
            return false;
        }
        self.cached.clear();
        self.evictable.clear();
        self.idle = 0;
        true
    }

    /// Returns `n` private blocks to the free pool.
    pub fn free(&mut self, n: u32) {
        debug_assert!(
            n <= self.private,
            "freeing more private blocks than allocated"
        );
        self.private -= n.min(self.private);
    }

    /// How many of `hashes`, from the start, are in the cache.
    pub fn match_prefix(&self, hashes: &[u64]) -> usize {
        hashes
            .iter()
            .take_while(|h| self.cached.contains_key(h))
            .count()
    }

    /// Takes a reference to a cached block (it must be cached).
    pub fn acquire(&mut self, hash: u64) {
        if let Some(b) = self.cached.get_mut(&hash) {
            if b.refs == 0 {
                self.idle -= 1;
                b.stamp = 0; // its `evictable` entry is now stale
            }
            b.refs += 1;
        }
    }

    /// Drops a reference to a cached block; at zero it becomes evictable (most recent last).
    pub fn release(&mut self, hash: u64) {
        if let Some(b) = self.cached.get_mut(&hash) {
            debug_assert!(b.refs > 0, "releasing an unreferenced block");
            b.refs = b.refs.saturating_sub(1);
            if b.refs == 0 {
                self.clock += 1;
                b.stamp = self.clock;
                self.evictable.push_back((self.clock, hash));
                self.idle += 1;
                self.compact();
            }
        }
    }

    /// Drops stale `evictable` entries once they outnumber the live ones.
    fn compact(&mut self) {
        if self.evictable.len() > 4 * self.idle as usize + 1024 {
            let cached = &self.cached;
            self.evictable.retain(|(stamp, hash)| {
                cached
                    .get(hash)
                    .is_some_and(|b| b.refs == 0 && b.stamp == *stamp)
            });
        }
    }

    /// Turns one of the caller's private blocks, now full, into the cached block `hash`
    /// referenced once by the caller. If another sequence already cached the same content,
    /// the private copy is freed and the caller shares the existing block. Returns whether
    /// the block is new to the cache.
    pub fn promote(&mut self, hash: u64) -> bool {
        self.free(1);
        match self.cached.get(&hash) {
            Some(_) => {
                self.acquire(hash);
                false
            }
            None => {
                self.cached.insert(hash, CachedBlock { refs: 1, stamp: 0 });
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_all_or_nothing_and_evicts_least_recently_released_first() {
        let mut kv = KvCache::new(4);
        assert!(kv.alloc(3));
        kv.promote(10);
        kv.promote(11);
        kv.promote(12); // three cached blocks, refs 1 each, one free block
        assert_eq!(kv.occupied(), 3);
        kv.release(11);
        kv.release(10); // 11 released first: evicted first
        assert_eq!(kv.available(), 3);
        assert!(!kv.alloc(4), "only 3 obtainable");
        assert_eq!(kv.occupied(), 3, "a failed allocation changes nothing");
        assert!(kv.alloc(2));
        assert_eq!(
            kv.match_prefix(&[10]),
            1,
            "10 was released last, still cached"
        );
        assert_eq!(kv.match_prefix(&[11]), 0, "11 was evicted");
        assert_eq!(kv.evictions(), 1);
    }

    #[test]
    fn shared_blocks_count_once_and_stay_cached_after_release() {
        let mut kv = KvCache::new(8);
        assert!(kv.alloc(1));
        kv.promote(7);
        assert!(kv.alloc(1));
        kv.promote(7); // same content computed twice: deduplicated
        assert_eq!(kv.occupied(), 1);
        assert_eq!(kv.in_use(), 1);
        kv.release(7);
        kv.release(7);
        assert_eq!(kv.in_use(), 0);
        assert_eq!(kv.match_prefix(&[7, 8]), 1);
        kv.acquire(7);
        assert_eq!(kv.in_use(), 1, "re-acquired from the evictable list");
    }

    #[test]
    fn evictions_are_recorded_in_order_and_clear_needs_an_idle_cache() {
        let mut kv = KvCache::new(2);
        kv.record_evictions();
        assert!(kv.alloc(2));
        assert!(kv.promote(1));
        assert!(kv.promote(2));
        assert!(!kv.clear(), "blocks in use: not cleared");
        kv.release(2);
        kv.release(1);
        assert!(kv.alloc(2)); // evicts 2 then 1 (release order)
        let mut out = Vec::new();
        kv.take_evicted(|h| out.push(h));
        assert_eq!(out, vec![2, 1]);
        kv.take_evicted(|_| panic!("drained"));
        kv.free(2);
        assert!(kv.alloc(1));
        assert!(kv.promote(3));
        kv.release(3);
        assert!(kv.clear());
        assert_eq!(kv.match_prefix(&[3]), 0);
        assert_eq!(kv.occupied(), 0);
    }

    use proptest::prelude::*;

    proptest! {
        /// The lazy LRU never evicts a referenced block, never loses count of idle blocks,
        /// and evicts exactly the least recently released one.
        #[test]
        fn lazy_lru_matches_a_reference_model(ops in proptest::collection::vec((0u8..4, 0u64..12), 1..300)) {
            let mut kv = KvCache::new(8);
            // Reference: refs per cached hash, and release order of idle ones.
            let mut refs: std::collections::HashMap<u64, u32> = Default::default();
            let mut order: Vec<u64> = Vec::new();
            let mut private = 0u32;
            for (op, h) in ops {
                match op {
                    0 => {
                        // compute a new block and cache it (or share an existing one)
                        if kv.alloc(1) {
                            private += 1;
                            let before_idle: Vec<u64> = order.clone();
                            kv.promote(h);
                            private -= 1;
                            // evictions happened inside alloc: drop evicted from the model
                            let evicted = before_idle.iter().filter(|x| kv.match_prefix(&[**x]) == 0).copied().collect::<Vec<_>>();
                            for x in evicted { order.retain(|y| *y != x); refs.remove(&x); }
                            let r = refs.entry(h).or_insert(0);
                            if *r == 0 { order.retain(|y| *y != h); }
                            *r += 1;
                        }
                    }
                    1 => {
                        if refs.get(&h).is_some_and(|r| *r > 0) {
                            kv.release(h);
                            let r = refs.get_mut(&h).unwrap();
                            *r -= 1;
                            if *r == 0 { order.push(h); }
                        }
                    }
                    2 => {
                        if refs.get(&h).is_some_and(|r| *r == 0) {
                            kv.acquire(h);
                            *refs.get_mut(&h).unwrap() = 1;
                            order.retain(|y| *y != h);
                        }
                    }
                    _ => {
                        if kv.alloc(2) {
                            let evicted: Vec<u64> = order.iter().filter(|x| kv.match_prefix(&[**x]) == 0).copied().collect();
                            // Evicted ones are exactly a prefix of the release order.
                            prop_assert_eq!(&order[..evicted.len()], &evicted[..]);
                            for x in evicted { order.retain(|y| *y != x); refs.remove(&x); }
                            kv.free(2);
                        }
                    }
                }
                let in_use = refs.values().filter(|r| **r > 0).count() as u32 + private;
                prop_assert_eq!(kv.in_use(), in_use);
                prop_assert_eq!(kv.idle, order.len() as u32);
                prop_assert!(kv.occupied() <= kv.total());
                for (x, r) in &refs {
                    if *r > 0 { prop_assert_eq!(kv.match_prefix(&[*x]), 1, "referenced block evicted"); }
                }
            }
        }
    }
}
