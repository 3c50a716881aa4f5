//! Chained KV-block hashes of a prompt, the one definition the gateway, the simulator and
//! the discrete-event simulation share.
//!
//! The stand-in tokenizer counts one token per started four bytes of prompt text (real
//! tokenizers average about four bytes of English per token). Blocks are
//! [`BLOCK_TOKENS`] = 16 tokens (64 bytes of text), vLLM's default block size; only full
//! blocks are hashed. Each block's hash is xxh3 of its bytes seeded with the previous
//! block's hash, so it covers everything before it, as vLLM's prefix cache does with token
//! ids: two prompts share a block only if all text up to and including it is identical.
//! An index fed with these hashes assumes the engine caches in blocks of the same size.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Tokens per KV block (vLLM's default block size).
pub const BLOCK_TOKENS: u32 = 16;

/// Bytes of text per token of the stand-in tokenizer.
pub const BYTES_PER_TOKEN: usize = 4;

/// Stand-in token count of a text (at least 1 for non-empty text).
pub fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(BYTES_PER_TOKEN)).unwrap_or(u32::MAX)
}

/// Appends one chat message to the stand-in prompt text of a chat, as the simulator
/// tokenizes it: `role: ` then the message's text pieces (its content, or the text of its
/// content parts) and a newline.
pub fn push_chat_message<'a>(
    out: &mut String,
    role: &str,
    texts: impl IntoIterator<Item = &'a str>,
) {
    out.push_str(role);
    out.push_str(": ");
    for t in texts {
        out.push_str(t);
    }
    out.push('\n');
}

/// Chained hashes of the text's full blocks, in order.
pub fn block_hashes(text: &str) -> Vec<u64> {
    let block_bytes = BYTES_PER_TOKEN * BLOCK_TOKENS as usize;
    let mut prev = 0u64;
    text.as_bytes()
        .chunks_exact(block_bytes)
        .map(|chunk| {
            prev = xxh3_64_with_seed(chunk, prev);
            prev
        })
        .collect()
}

/// Chained hashes of a prompt given as token ids (each id hashed as 4 little-endian
/// bytes), in order.
pub fn block_hashes_of_ids(ids: &[u32]) -> Vec<u64> {
    block_hashes_of_ids_after(0, ids)
}

/// Continues a chain of [`block_hashes_of_ids`]: the hashes of `ids`' full blocks when the
/// block before the first one hashed to `parent` (0: `ids` start the prompt). Hashing a
/// prompt's first blocks, then the rest after the last of them, gives the whole prompt's
/// hashes.
pub fn block_hashes_of_ids_after(parent: u64, ids: &[u32]) -> Vec<u64> {
    let mut prev = parent;
    let mut bytes = [0u8; 4 * BLOCK_TOKENS as usize];
    ids.chunks_exact(BLOCK_TOKENS as usize)
        .map(|chunk| {
            for (dst, id) in bytes.chunks_exact_mut(4).zip(chunk) {
                dst.copy_from_slice(&id.to_le_bytes());
            }
            prev = xxh3_64_with_seed(&bytes, prev);
            prev
        })
        .collect()
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
        changed.replace_range(0..1, "y");
        let b = block_hashes(&changed);
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        let mut tail = base.clone();
        tail.push_str(&"z".repeat(70));
        let c = block_hashes(&tail);
        assert_eq!(&c[..3], &a[..]);
        assert_eq!(c.len(), 4);
        assert_ne!(
            a[0], a[1],
            "equal content at different depths hashes differently"
        );
    }

    #[test]
    fn token_id_blocks_hash_only_full_blocks() {
        assert_eq!(block_hashes_of_ids(&[1; 33]).len(), 2);
        let a = block_hashes_of_ids(&[1; 32]);
        let mut ids = [1u32; 32];
        ids[20] = 2;
        let b = block_hashes_of_ids(&ids);
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
    }

    #[test]
    fn a_chain_continued_from_its_parent_equals_the_whole_prompts_chain() {
        let ids: Vec<u32> = (0..16 * 5).map(|i| i * 7 + 3).collect();
        let whole = block_hashes_of_ids(&ids);
        let head = block_hashes_of_ids(&ids[..32]);
        let tail = block_hashes_of_ids_after(head[1], &ids[32..]);
        assert_eq!([head, tail].concat(), whole);
        assert_eq!(block_hashes_of_ids_after(0, &ids), whole);
    }
}
