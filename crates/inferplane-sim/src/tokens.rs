//! The simulator's stand-in tokenizer, prompt block hashes, and deterministic pseudo-text.
//!
//! Real tokenizers average about four bytes of English per token, so the simulator counts
//! one token per started four bytes of prompt text. Prompt blocks (16 tokens = 64 bytes)
//! are hashed in a chain, each hash covering all the text before it, as vLLM's prefix
//! cache does with token ids: two prompts share a cached block only if everything up to
//! and including that block is identical.

use crate::profile::BLOCK_SIZE;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Bytes per simulated token.
pub const BYTES_PER_TOKEN: usize = 4;

/// Simulated token count of a text (at least 1 for non-empty text).
pub fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(BYTES_PER_TOKEN)).unwrap_or(u32::MAX)
}

/// Chained hashes of the text's full 16-token blocks.
pub fn block_hashes(text: &str) -> Vec<u64> {
    let block_bytes = BYTES_PER_TOKEN * BLOCK_SIZE as usize;
    let mut prev = 0u64;
    text.as_bytes()
        .chunks_exact(block_bytes)
        .map(|chunk| {
            prev = xxh3_64_with_seed(chunk, prev);
            prev
        })
        .collect()
}

/// The stand-in token ids of the text's full blocks: each 4-byte piece read as a
/// little-endian `u32`, so that hashing these ids with [`block_hashes_of_ids`] gives the same
/// chain as [`block_hashes`] over the text. The simulator's KV events carry them as
/// `token_ids`.
pub fn block_token_ids(text: &str) -> Vec<u32> {
    let block_bytes = BYTES_PER_TOKEN * BLOCK_SIZE as usize;
    let full = text.len() / block_bytes * block_bytes;
    text.as_bytes()[..full]
        .chunks_exact(BYTES_PER_TOKEN)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Chained hashes for a prompt given as token ids (the completions API's integer form).
pub fn block_hashes_of_ids(ids: &[u32]) -> Vec<u64> {
    let mut prev = 0u64;
    ids.chunks_exact(BLOCK_SIZE as usize)
        .map(|chunk| {
            let bytes: Vec<u8> = chunk.iter().flat_map(|t| t.to_le_bytes()).collect();
            prev = xxh3_64_with_seed(&bytes, prev);
            prev
        })
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
    fn counts_one_token_per_started_four_bytes() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("a"), 1);
        assert_eq!(count_tokens("abcd"), 1);
        assert_eq!(count_tokens("abcde"), 2);
    }

    #[test]
    fn block_hashes_are_chained_so_only_identical_prefixes_match() {
        let base = "x".repeat(64 * 3);
        let a = block_hashes(&base);
        assert_eq!(a.len(), 3);
        let mut changed = base.clone();
        changed.replace_range(0..1, "y"); // differs in block 0: every hash differs
        let b = block_hashes(&changed);
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        let mut tail = base.clone();
        tail.push_str(&"z".repeat(70)); // same first 3 blocks, one more
        let c = block_hashes(&tail);
        assert_eq!(&c[..3], &a[..]);
        assert_eq!(c.len(), 4);
        assert_ne!(
            a[0], a[1],
            "equal content at different depths hashes differently"
        );
    }

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
        assert_eq!(block_hashes_of_ids(&[1; 32]).len(), 2);
    }
}
