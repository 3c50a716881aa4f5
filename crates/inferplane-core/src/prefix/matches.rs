//! [`Matches`]: how many leading blocks of one prompt each instance holds, counted by
//! [`PrefixIndex::matches`].

use super::index::{NIL, PrefixIndex};
use crate::time::Time;

/// How many leading blocks of one prompt each instance holds, by slot; reused from query
/// to query (it only allocates when the instance table grows, in [`Matches::reserve`]).
#[derive(Debug, Default, Clone)]
pub struct Matches {
    pub(super) blocks: Vec<u32>,
    pub(super) touched: Vec<u32>,
}

impl Matches {
    /// Makes room for `slots` instance slots.
    pub fn reserve(&mut self, slots: usize) {
        if self.blocks.len() < slots {
            self.blocks.resize(slots, 0);
        }
        self.touched
            .reserve(slots.saturating_sub(self.touched.len()));
    }

    /// Leading blocks the instance in `slot` holds (0 when none or unknown).
    pub fn blocks(&self, slot: usize) -> u32 {
        self.blocks.get(slot).copied().unwrap_or(0)
    }

    /// The slots of the instances holding at least the prompt's first block.
    pub fn holders(&self) -> impl Iterator<Item = usize> + '_ {
        self.touched.iter().map(|&s| s as usize)
    }

    /// The most leading blocks any instance holds.
    pub fn best(&self) -> u32 {
        self.touched
            .iter()
            .map(|&s| self.blocks[s as usize])
            .max()
            .unwrap_or(0)
    }

    pub(super) fn clear(&mut self) {
        for &s in &self.touched {
            self.blocks[s as usize] = 0;
        }
        self.touched.clear();
    }
}

impl PrefixIndex {
    /// Counts, into `out`, how many leading blocks of `hashes` each instance holds
    /// (entries older than `max_age` at `now` do not count). Does not allocate once `out`
    /// has room for every slot.
    ///
    /// The instances holding the first block are followed as a group: while every one of
    /// them holds the blocks probed, the probes gallop ahead (1, 2, 4, ... blocks), and a
    /// binary search finds where the first of them stops; that block is walked, the group
    /// shrinks to those holding it, and the search goes on. So a long prompt costs
    /// O(log blocks) lookups per distinct run length among its holders, not one lookup per
    /// block. This assumes each instance holds a prefix of the prompt without holes:
    /// engines evict a sequence's last blocks first, and the index's own eviction does too
    /// (a prompt's blocks are touched last to first). A hole the search steps over counts
    /// as held.
    pub fn matches(&self, hashes: &[u64], now: Time, out: &mut Matches) {
        out.clear();
        let Some(&first) = hashes.first() else {
            return;
        };
        let Some(&head) = self.heads.get(&first) else {
            return;
        };
        let mut e = head;
        while e != NIL && out.touched.len() < out.touched.capacity() {
            let entry = &self.entries[e as usize];
            let slot = entry.slot as usize;
            if slot < out.blocks.len() && out.blocks[slot] == 0 && !self.expired(entry, now) {
                out.touched.push(entry.slot);
                out.blocks[slot] = 1;
            }
            e = entry.chain;
        }
        // `k`: the blocks every instance still in the group holds
        let mut k = 1usize;
        let mut group = out.touched.len();
        while group > 0 && k < hashes.len() {
            let (mut held, mut missing, mut step) = (k, hashes.len(), 1usize);
            while held + step - 1 < missing {
                let probe = held + step - 1;
                if self.holding(hashes[probe], k, now, out) == group {
                    held = probe + 1;
                    step = step.saturating_mul(2);
                } else {
                    missing = probe;
                }
            }
            while held < missing {
                let mid = held + (missing - held) / 2;
                if self.holding(hashes[mid], k, now, out) == group {
                    held = mid + 1;
                } else {
                    missing = mid;
                }
            }
            // the whole group holds `..held`; at `held` (if any) only part of it
            let (from, to) = (k as u32, held as u32);
            for &s in &out.touched {
                if out.blocks[s as usize] == from {
                    out.blocks[s as usize] = to;
                }
            }
            k = held;
            if k == hashes.len() {
                break;
            }
            group = 0;
            let mut e = self.heads.get(&hashes[k]).copied().unwrap_or(NIL);
            while e != NIL {
                let entry = &self.entries[e as usize];
                let slot = entry.slot as usize;
                if slot < out.blocks.len() && out.blocks[slot] == to && !self.expired(entry, now) {
                    out.blocks[slot] = to + 1;
                    group += 1;
                }
                e = entry.chain;
            }
            k += 1;
        }
    }

    /// How many of the group (instances holding `k` leading blocks so far) hold `hash`.
    fn holding(&self, hash: u64, k: usize, now: Time, out: &Matches) -> usize {
        let mut n = 0;
        let mut e = self.heads.get(&hash).copied().unwrap_or(NIL);
        while e != NIL {
            let entry = &self.entries[e as usize];
            let slot = entry.slot as usize;
            if slot < out.blocks.len() && out.blocks[slot] == k as u32 && !self.expired(entry, now)
            {
                n += 1;
            }
            e = entry.chain;
        }
        n
    }
}
