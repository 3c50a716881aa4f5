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
    /// has room for every slot. O(matched blocks x instances holding each).
    pub fn matches(&self, hashes: &[u64], now: Time, out: &mut Matches) {
        out.clear();
        for (k, h) in hashes.iter().enumerate() {
            let Some(&first) = self.heads.get(h) else {
                break;
            };
            let mut advanced = false;
            let mut e = first;
            while e != NIL {
                let entry = &self.entries[e as usize];
                let slot = entry.slot as usize;
                if slot < out.blocks.len()
                    && out.blocks[slot] == k as u32
                    && !self.expired(entry, now)
                    && (k > 0 || out.touched.len() < out.touched.capacity())
                {
                    if k == 0 {
                        out.touched.push(entry.slot);
                    }
                    out.blocks[slot] += 1;
                    advanced = true;
                }
                e = entry.chain;
            }
            if !advanced {
                break;
            }
        }
    }
}
