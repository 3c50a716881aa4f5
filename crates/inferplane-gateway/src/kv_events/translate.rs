//! Engine KV events -> the gateway's own block hashes (pure, no I/O).
//!
//! Engines choose and salt their block hashes (vLLM: SHA-256 of CBOR with a per-process
//! seed), so the gateway never keys on them. For a `BlockStored` it hashes the blocks'
//! `token_ids` itself with the chain it applies to a request's prompt
//! ([`block_hashes_of_ids_after`], seeded with the own hash of `parent_block_hash`), and
//! remembers engine hash -> own hash, so that a later `BlockRemoved` (engine hashes only)
//! can be mapped back. The map is bounded by [`MAX_MAPPED_BLOCKS`]; past it new blocks
//! are not placed (counted), until removals make room.
//!
//! Assumptions, stated: blocks are [`BLOCK_TOKENS`] = 16 tokens (vLLM's default
//! `--block-size`); an event with another `block_size` is ignored (a warning once per
//! instance). Blocks of a LoRA adapter or of a medium other than the GPU are not placed
//! (requests for the base model cannot reuse them; CPU offload copies are not the GPU's
//! cache).

use inferplane_core::prefix::{BLOCK_TOKENS, CacheChange, block_hashes_of_ids_after};
use inferplane_kv_events::{BlockHash, BlockStored, KvEvent, KvEventBatch};
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Most engine blocks mapped per instance: 2^19 (8.4 M tokens of 16-token blocks, above a
/// large GPU's KV cache). An entry is a `u64` key (a digest of the engine's hash) and a
/// `u64` own hash in a hash map: 17 bytes plus the map's slack, at most about 36 bytes,
/// so at most about 19 MB per instance at the bound (a 100k-block engine: about 3 MB).
pub const MAX_MAPPED_BLOCKS: usize = 1 << 19;

/// One change for the dispatcher, owning its hashes (the core's [`CacheChange`] borrows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The engine now holds these blocks (own hashes, prompt order).
    Stored(Vec<u64>),
    /// The engine evicted these blocks (own hashes).
    Removed(Vec<u64>),
    /// The engine's cache was emptied.
    Cleared,
    /// What the engine holds is no longer known.
    Lost,
}

impl Change {
    /// The core's view of it.
    pub fn as_core(&self) -> CacheChange<'_> {
        match self {
            Change::Stored(h) => CacheChange::Stored(h),
            Change::Removed(h) => CacheChange::Removed(h),
            Change::Cleared => CacheChange::Cleared,
            Change::Lost => CacheChange::Lost,
        }
    }

    /// Blocks it carries (0 for a clear or a loss).
    pub fn blocks(&self) -> usize {
        match self {
            Change::Stored(h) | Change::Removed(h) => h.len(),
            Change::Cleared | Change::Lost => 0,
        }
    }
}

/// What one batch held, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Blocks stored and placed.
    pub stored: u64,
    /// Blocks removed that were mapped.
    pub removed: u64,
    /// Cache clears.
    pub cleared: u64,
    /// Blocks stored that could not be placed.
    pub unplaced: u64,
}

/// One instance's engine-hash -> own-hash map and the translation of its events.
#[derive(Debug)]
pub struct Translator {
    map: HashMap<u64, u64>,
    max: usize,
    /// A block size other than 16 was seen (warned once).
    pub odd_block_size: Option<u32>,
}

impl Translator {
    /// An empty map holding at most `max` blocks.
    pub fn new(max: usize) -> Self {
        Translator {
            map: HashMap::new(),
            max,
            odd_block_size: None,
        }
    }

    /// Engine blocks mapped now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets everything (the engine's cache is unknown or empty).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Appends the changes of `batch` to `out`; returns what it held. Logs (once) a block
    /// size other than 16.
    pub fn batch(&mut self, instance: &str, batch: &KvEventBatch, out: &mut Vec<Change>) -> Counts {
        let mut counts = Counts::default();
        for event in &batch.events {
            match event {
                KvEvent::BlockStored(s) => {
                    let blocks = s.block_hashes.len() as u64;
                    if s.block_size != BLOCK_TOKENS {
                        if self.odd_block_size.is_none() {
                            tracing::warn!(
                                instance,
                                block_size = s.block_size,
                                expected = BLOCK_TOKENS,
                                "KV events: the engine's block size is not the gateway's; its \
                                 blocks are ignored (start the engine with --block-size 16)"
                            );
                        }
                        self.odd_block_size = Some(s.block_size);
                        counts.unplaced += blocks;
                        continue;
                    }
                    let own = self.stored(s);
                    counts.stored += own.len() as u64;
                    counts.unplaced += blocks - own.len() as u64;
                    if !own.is_empty() {
                        out.push(Change::Stored(own));
                    }
                }
                KvEvent::BlockRemoved(r) => {
                    if !on_gpu(r.medium.as_deref()) {
                        continue;
                    }
                    let own: Vec<u64> = r
                        .block_hashes
                        .iter()
                        .filter_map(|h| self.map.remove(&key(h)))
                        .collect();
                    counts.removed += own.len() as u64;
                    if !own.is_empty() {
                        out.push(Change::Removed(own));
                    }
                }
                KvEvent::AllBlocksCleared => {
                    self.map.clear();
                    counts.cleared += 1;
                    out.push(Change::Cleared);
                }
            }
        }
        counts
    }

    /// The own hashes of the blocks of `s` that can be placed, mapped from now on.
    fn stored(&mut self, s: &BlockStored) -> Vec<u64> {
        if s.lora_id.is_some() || !on_gpu(s.medium.as_deref()) || s.blocks().is_none() {
            return Vec::new();
        }
        let seed = match &s.parent_block_hash {
            None => 0,
            Some(parent) => match self.map.get(&key(parent)) {
                Some(&own) => own,
                // the parent was never seen (stored before we joined, or lost): these
                // blocks' own hashes cannot be computed
                None => return Vec::new(),
            },
        };
        let mut own = block_hashes_of_ids_after(seed, &s.token_ids);
        let mut placed = 0;
        for (engine, &mine) in s.block_hashes.iter().zip(&own) {
            let k = key(engine);
            if self.map.len() >= self.max && !self.map.contains_key(&k) {
                break;
            }
            self.map.insert(k, mine);
            placed += 1;
        }
        own.truncate(placed);
        own
    }
}

/// Whether a medium is the GPU's cache (absent in the oldest releases: the GPU).
fn on_gpu(medium: Option<&str>) -> bool {
    medium.is_none_or(|m| m.eq_ignore_ascii_case("gpu"))
}

/// A 64-bit digest of an engine hash, the map's key (ints and bytes never collide by
/// construction: different seeds; a collision of two digests is about 2^-45 likely at the
/// bound).
fn key(h: &BlockHash) -> u64 {
    match h {
        BlockHash::Int(v) => xxh3_64_with_seed(&v.to_le_bytes(), 1),
        BlockHash::Bytes(b) => xxh3_64_with_seed(b, 2),
    }
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
