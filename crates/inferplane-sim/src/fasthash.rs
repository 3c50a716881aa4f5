//! A fast hasher for the simulator's integer-keyed maps (sequence ids, block hashes).
//! SipHash's DoS resistance buys nothing for keys the simulator makes itself, and costs
//! a large share of a simulation's time; a multiplicative (Fibonacci) hash spreads
//! sequential ids over the table and keeps uniform block hashes uniform.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hasher for integer keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(K);
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_the_high_bits() {
        let b = BuildHasherDefault::<FastHasher>::default();
        let tops: std::collections::HashSet<u64> =
            (0..64u64).map(|i| b.hash_one(i) >> 57).collect();
        assert!(
            tops.len() > 30,
            "hashbrown reads the top 7 bits: {}",
            tops.len()
        );
    }
}
