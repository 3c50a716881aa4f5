//! The simulated KV cache: a budget of fixed-size blocks, and a prefix cache of full prompt
//! blocks keyed by chained block hashes, with LRU eviction of unreferenced blocks.
//!
//! Accounting follows vLLM's block manager: a block is either private to one sequence,
//! or cached (identified by its hash, shared by reference count). Cached blocks whose
//! count drops to zero stay cached (a later request with the same prefix can reuse them)
//! until the space is needed, when the least recently released is evicted first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Block hashes are already uniform 64-bit hashes (xxh3): hashing them again with SipHash
/// only costs time, so the cache map uses them as they are.
#[derive(Debug, Clone, Copy, Default)]
struct BlockHashHasher(u64);

impl Hasher for BlockHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type BlockMap<V> = HashMap<u64, V, BuildHasherDefault<BlockHashHasher>>;

#[derive(Debug, Clone, Copy)]
struct CachedBlock {
    refs: u32,
    /// LRU stamp while `refs == 0` (key into `evictable`).
    stamp: u64,
}

/// Block budget plus prefix cache.
#[derive(Debug, Clone)]
pub struct KvCache {
    total: u32,
    private: u32,
    cached: BlockMap<CachedBlock>,
    evictable: BTreeMap<u64, u64>,
    clock: u64,
    evictions: u64,
}

impl KvCache {
    /// A cache of `total` blocks, all free.
    pub fn new(total: u32) -> Self {
        KvCache {
            total,
            private: 0,
            cached: BlockMap::default(),
            evictable: BTreeMap::new(),
            clock: 0,
            evictions: 0,
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
        self.occupied() - self.evictable.len() as u32
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
            let Some((_, hash)) = self.evictable.pop_first() else {
                return false; // unreachable given the check above
            };
            self.cached.remove(&hash);
            self.evictions += 1;
        }
        self.private += n;
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
                self.evictable.remove(&b.stamp);
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
                self.evictable.insert(self.clock, hash);
            }
        }
    }

    /// Turns one of the caller's private blocks, now full, into the cached block `hash`
    /// referenced once by the caller. If another sequence already cached the same content,
    /// the private copy is freed and the caller shares the existing block.
    pub fn promote(&mut self, hash: u64) {
        self.free(1);
        match self.cached.get(&hash) {
            Some(_) => self.acquire(hash),
            None => {
                self.cached.insert(hash, CachedBlock { refs: 1, stamp: 0 });
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
}
