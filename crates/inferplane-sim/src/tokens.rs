//! The simulator's stand-in tokenizer, prompt block hashes, and deterministic pseudo-text.
//!
//! Real tokenizers average about four bytes of English per token, so the simulator counts
//! one token per started four bytes of prompt text. Prompt blocks (16 tokens = 64 bytes)
//! are hashed in a chain, each hash covering all the text before it, as vLLM's prefix
//! cache does with token ids: two prompts share a cached block only if everything up to
//! and including that block is identical.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The stand-in tokenizer and the block hashes, defined once in the core so that the
/// gateway's blocks are the simulator's.
pub use inferplane_core::prefix::{
    BYTES_PER_TOKEN, block_hashes, block_hashes_of_ids, count_tokens,
};

/// A hash of a whole prompt, for deterministic per-request choices.
pub fn content_hash(text: &str) -> u64 {
    xxh3_64(text.as_bytes())
}

const WORDS: [&str; 32] = [
    "the", "model", "serves", "tokens", "quickly", "while", "each", "request", "waits", "in", "a",
    "queue", "until", "an", "instance", "has", "room", "for", "its", "prompt", "and", "cache",
    "blocks", "are", "shared", "across", "similar", "prefixes", "so", "latency", "falls",
    "steadily",
];

/// The `index`-th output token's text for a request: a word and a space, chosen by hash.
pub fn token_text(content_hash: u64, index: u32) -> &'static str {
    let h = xxh3_64_with_seed(&index.to_le_bytes(), content_hash);
    WORDS[(h % WORDS.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_text_is_deterministic_per_request() {
        let a: Vec<_> = (0..10).map(|i| token_text(42, i)).collect();
        let b: Vec<_> = (0..10).map(|i| token_text(42, i)).collect();
        let c: Vec<_> = (0..10).map(|i| token_text(43, i)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
