//! What goes into the simulated engine and what comes out: a sequence's input, the
//! events and summary of a step, prefix-cache events, refusals, and the engine's counters.

use inferplane_core::Time;

/// A sequence's id inside one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// What a caller submits: token counts and the prompt's block hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqInput {
    /// Prompt length in tokens (at least 1).
    pub prompt_tokens: u32,
    /// Chained hashes of the prompt's full blocks, in order (see `tokens::block_hashes`).
    pub block_hashes: Vec<u64>,
    /// Most tokens to generate (at least 1).
    pub max_tokens: u32,
    /// A hash of the request's content; with a stop seed it decides the output length.
    pub content_hash: u64,
    /// The token ids of the prompt's full blocks, `BLOCK_SIZE` per block hash (see
    /// `tokens::block_token_ids`); the cache events carry them. Callers that never turn on
    /// [`Engine::record_cache_events`](super::Engine::record_cache_events) (the
    /// discrete-event benchmark) may leave it empty.
    pub block_tokens: Vec<u32>,
}

/// A change to the prefix cache, recorded when
/// [`Engine::record_cache_events`](super::Engine::record_cache_events) is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// A full prompt block entered the cache.
    Stored {
        /// Its chained hash.
        hash: u64,
        /// The hash of the block before it in its prompt (`None` for the first).
        parent: Option<u64>,
        /// Its `BLOCK_SIZE` token ids (empty when the caller gave none).
        tokens: Vec<u32>,
    },
    /// A cached block was evicted (LRU).
    Removed {
        /// Its hash.
        hash: u64,
    },
    /// The whole prefix cache was emptied
    /// ([`Engine::reset_prefix_cache`](super::Engine::reset_prefix_cache)).
    Cleared,
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// Reached `max_tokens`.
    Length,
    /// Stopped early (seeded stop, or end-of-sequence right at `min_tokens`).
    Stop,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
        }
    }
}

/// Something that happened at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// The sequence produced its `index`-th output token (0-based).
    Token {
        /// Which sequence.
        id: SeqId,
        /// 0-based index of the token in the output.
        index: u32,
    },
    /// The sequence finished; its last `Token` event came just before.
    Finished {
        /// Which sequence.
        id: SeqId,
        /// Why it stopped.
        reason: FinishReason,
        /// Prompt tokens served from the prefix cache at first admission.
        cached_tokens: u32,
        /// Output tokens generated.
        completion_tokens: u32,
    },
}

/// Summary of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// When the step ends (and its events happen).
    pub end: Time,
    /// Prompt (or recompute) tokens computed in the step.
    pub prefill_tokens: u32,
    /// Sequences that decoded one token.
    pub decode_seqs: u32,
    /// Sequences preempted while planning the step.
    pub preempted: u32,
}

/// Why a request was refused at submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The prompt is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// `max_tokens` is zero.
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    /// Prompt plus output exceeds the model's context.
    #[error(
        "this model's maximum context length is {max_model_len} tokens, but {requested} were requested ({prompt} in the prompt, {max_tokens} for the output)"
    )]
    ContextTooLong {
        /// The engine's `max_model_len`.
        max_model_len: u32,
        /// Prompt plus max tokens.
        requested: u64,
        /// Prompt tokens.
        prompt: u32,
        /// Requested output tokens.
        max_tokens: u32,
    },
    /// `min_tokens` is above `max_tokens` (vLLM's wording).
    #[error("min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.")]
    MinTokensAboveMax {
        /// The requested minimum.
        min_tokens: u32,
        /// The request's `max_tokens`.
        max_tokens: u32,
    },
    /// Prompt plus output needs more KV blocks than the whole cache holds.
    #[error("the request needs {needed} KV blocks but the cache holds only {total}")]
    ExceedsKvCache {
        /// Blocks needed.
        needed: u64,
        /// Blocks in the cache.
        total: u32,
    },
}

/// Counters an engine keeps (vLLM's `*_total` metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: u64,
    /// Output tokens generated.
    pub generation_tokens: u64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries: u64,
    /// Prompt tokens found in the prefix cache.
    pub prefix_cache_hits: u64,
    /// Recompute preemptions (vLLM's `vllm:num_preemptions_total`).
    pub preemptions: u64,
    /// Requests that finished.
    pub finished: u64,
    /// Requests aborted before finishing.
    pub aborted: u64,
    /// The most requests in the engine at once (running and waiting) since it started:
    /// what tests read to check that gateways never put more on it than its limit.
    pub peak_requests: u64,
}
