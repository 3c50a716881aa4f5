//! [`CacheChange`]: what an engine says changed in its KV cache (precise mode), in the
//! gateway's own block hashes.

/// A change to one instance's KV cache, as its engine reported it (vLLM's KV cache events),
/// with block hashes already translated to the gateway's own [`block_hashes`]
/// (the engine's may be salted).
///
/// [`block_hashes`]: super::block_hashes
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheChange<'a> {
    /// The engine now holds these blocks (in prompt order).
    Stored(&'a [u64]),
    /// The engine evicted these blocks.
    Removed(&'a [u64]),
    /// The engine's cache was emptied.
    Cleared,
    /// What the engine holds is no longer known (a gap in its events that replay could
    /// not fill, a restart, an undecodable batch): forget all of it, keep the instance.
    Lost,
}
