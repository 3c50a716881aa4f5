//! What the edge learns of a prompt for scheduling: its token count and, only for a pool
//! whose routing strategy routes by KV blocks (`prefix`), its chained block hashes.
//!
//! With the pool's tokenizer (`[[pools]] tokenizer`), the prompt is tokenized in the
//! request's own task (never the dispatcher) as the engine would (the chat template for
//! chats, see `inferplane_tokenize`), bounded to the first
//! [`PREFIX_LIMIT_BYTES`] of prompt text: only
//! trailing blocks are lost, and a longer prompt's count is extrapolated. Without one, or
//! when the prompt cannot be tokenized (a template that does not render, a prompt of
//! another shape), the stand-in is used (4 bytes per token, `inferplane_core::prefix`); a
//! request never fails because of routing metadata, and a tokenizer's first failure is
//! logged once.

use crate::meta::{BodyMeta, Prompt};
use inferplane_core::prefix::block_hashes_of_ids;
use inferplane_tokenize::{PREFIX_LIMIT_BYTES, PromptTokenizer, Tokens};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether the edge hashes prompt blocks for a pool: set by the dispatcher, which owns the
/// pool's scheduler, when the pool starts and when its routing changes at run time; read
/// by the handlers (one relaxed load per request). Counts the prompts it hashed.
#[derive(Debug, Default)]
pub struct BlockRouting {
    on: AtomicBool,
    hashed: AtomicU64,
}

impl BlockRouting {
    /// Whether the pool's routing strategy uses block hashes.
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Sets it (the dispatcher, from `Scheduler::routes_by_blocks`).
    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Prompts whose blocks the edge hashed for this pool.
    pub fn hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }
}

/// A prompt's token count and block hashes (empty when not routed by blocks).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptFacts {
    /// Prompt tokens: the tokenizer's count, else the stand-in's estimate.
    pub prompt_tokens: u32,
    /// Chained block hashes of the leading full blocks.
    pub blocks: Arc<[u64]>,
}

/// Tokenizes a prompt with the pool's tokenizer (`None`: the prompt has another shape).
pub fn tokenize(
    bm: &BodyMeta<'_>,
    tk: &PromptTokenizer,
) -> Option<Result<Tokens, inferplane_tokenize::TokenizeError>> {
    if let Some(raw) = bm.messages {
        let messages: serde_json::Value = match serde_json::from_str(raw.get()) {
            Ok(m) => m,
            Err(_) => return Some(Err(inferplane_tokenize::TokenizeError::Messages)),
        };
        return Some(tk.chat_prefix(&messages, PREFIX_LIMIT_BYTES));
    }
    match serde_json::from_str::<Prompt>(bm.prompt?.get()).ok()? {
        Prompt::Text(t) | Prompt::Texts([t]) => Some(tk.completion_prefix(&t, PREFIX_LIMIT_BYTES)),
        Prompt::Ids(ids) => Some(Ok(Tokens {
            prompt_tokens: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            ids,
            truncated: false,
        })),
    }
}

/// The prompt's facts for `model`'s pool: tokenized and hashed only when `routing` says its
/// strategy routes by blocks (tokenizing costs about 1 ms per 2,048-token chat, so a pool
/// routed otherwise keeps the stand-in's estimate even with a tokenizer configured).
pub fn facts(
    model: &str,
    bm: &BodyMeta<'_>,
    tokenizer: Option<&PromptTokenizer>,
    routing: Option<&BlockRouting>,
) -> PromptFacts {
    let hash = routing.is_some_and(BlockRouting::enabled);
    let tokens = tokenizer.filter(|_| hash).and_then(|tk| match tokenize(bm, tk)? {
        Ok(t) => Some(t),
        Err(e) => {
            if tk.first_failure() {
                tracing::warn!(
                    model,
                    tokenizer = %tk.source().display(),
                    error = %inferplane_tokenize::ErrorChain(&e),
                    "cannot tokenize a prompt: routing with the stand-in tokenizer (logged once)"
                );
            }
            None
        }
    });
    if hash && let Some(r) = routing {
        r.hashed.fetch_add(1, Ordering::Relaxed);
    }
    match tokens {
        Some(t) => PromptFacts {
            prompt_tokens: t.prompt_tokens,
            blocks: if hash {
                block_hashes_of_ids(&t.ids).into()
            } else {
                Arc::default()
            },
        },
        None => PromptFacts {
            prompt_tokens: bm.prompt_tokens_estimate(),
            blocks: if hash {
                bm.prefix_blocks()
            } else {
                Arc::default()
            },
        },
    }
}
