//! Prompt prefixes at KV-block granularity: the block hashes a request carries
//! ([`blocks`]) and the bounded index of which instance holds which block ([`index`]).
//!
//! Part of the foundation: `route/prefix.rs` scores instances with it; the index is fed at
//! placement (approximate mode) and can be fed by engine KV-cache events (precise mode)
//! through the same `stored`/`removed`/`cleared` operations.

pub mod blocks;
pub mod change;
pub mod index;
pub mod matches;

pub use blocks::{
    BLOCK_TOKENS, BYTES_PER_TOKEN, block_hashes, block_hashes_of_ids, block_hashes_of_ids_after,
    count_tokens, push_chat_message,
};
pub use change::CacheChange;
pub use index::{BYTES_PER_BLOCK, PrefixIndex};
pub use matches::Matches;
