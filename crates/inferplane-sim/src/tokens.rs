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

/// The stand-in token ids of the text's full blocks: each 4-byte piece read as a
/// little-endian `u32`, so that hashing these ids with [`block_hashes_of_ids`] gives the same
/// chain as [`block_hashes`] over the text. The simulator's KV events carry them as
/// `token_ids`.
pub fn block_token_ids(text: &str) -> Vec<u32> {
    let block_bytes = BYTES_PER_TOKEN * inferplane_core::prefix::BLOCK_TOKENS as usize;
    let full = text.len() / block_bytes * block_bytes;
    text.as_bytes()[..full]
        .chunks_exact(BYTES_PER_TOKEN)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

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
    fn stand_in_token_ids_hash_to_the_text_chain() {
        let text = "hello world, this is a prompt of some length. ".repeat(5);
        let ids = block_token_ids(&text);
        assert_eq!(ids.len(), text.len() / 64 * 16, "full blocks only");
        assert_eq!(block_hashes_of_ids(&ids), block_hashes(&text));
    }

    #[test]
    fn pseudo_text_is_deterministic_per_request() {
        let a: Vec<_> = (0..10).map(|i| token_text(42, i)).collect();
        let b: Vec<_> = (0..10).map(|i| token_text(42, i)).collect();
        let c: Vec<_> = (0..10).map(|i| token_text(43, i)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
