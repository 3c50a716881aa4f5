//! A prompt as the engine takes it: token count, chained block hashes and block token ids,
//! by the stand-in tokenizer (4 bytes per token) or, with `--tokenizer`, the real one
//! (`inferplane_tokenize`: chats through the chat template, as the gateway's pool with the
//! same tokenizer does, so both hash the same blocks). A prompt the real tokenizer cannot
//! take (a template that does not render) falls back to the stand-in.

use crate::engine::SeqInput;
use crate::profile::BLOCK_SIZE;
use crate::tokens;

/// A chat body's messages, as the chat template takes them.
#[derive(Debug, serde::Deserialize)]
pub struct Messages {
    /// The `messages` array.
    pub messages: serde_json::Value,
}

/// The blocks of a chat body (`{"messages": [...]}`) as the simulator hashes them with
/// `tokenizer` (none: the stand-in over [`crate::openai::ChatRequest::prompt_text`]).
pub fn chat(
    tokenizer: Option<&inferplane_tokenize::PromptTokenizer>,
    body: &[u8],
) -> Result<Prompted, serde_json::Error> {
    let req: crate::openai::ChatRequest = serde_json::from_slice(body)?;
    Ok(match tokenizer {
        Some(tk) => {
            let m: Messages = serde_json::from_slice(body)?;
            real(tk, tk.chat_ids(&m.messages), || req.prompt_text())
        }
        None => Prompted::stand_in(&req.prompt_text()),
    })
}

/// A prompt as the engine takes it: its token count, block hashes and block token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompted {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Chained hashes of the full blocks.
    pub block_hashes: Vec<u64>,
    /// A hash of the whole prompt (seeds the pseudo-text).
    pub content_hash: u64,
    /// The full blocks' token ids (the KV events' `token_ids`).
    pub block_tokens: Vec<u32>,
}

impl Prompted {
    /// By the stand-in tokenizer (4 bytes of text per token).
    pub fn stand_in(text: &str) -> Self {
        Prompted {
            prompt_tokens: tokens::count_tokens(text),
            block_hashes: tokens::block_hashes(text),
            content_hash: tokens::content_hash(text),
            block_tokens: tokens::block_token_ids(text),
        }
    }

    /// From token ids (given, or from the real tokenizer).
    pub fn of_ids(ids: &[u32]) -> Self {
        let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
        let full = ids.len() / BLOCK_SIZE as usize * BLOCK_SIZE as usize;
        Prompted {
            prompt_tokens: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            block_hashes: tokens::block_hashes_of_ids(ids),
            content_hash: xxhash_rust::xxh3::xxh3_64(&bytes),
            block_tokens: ids[..full].to_vec(),
        }
    }

    /// The engine's input with this prompt.
    pub fn input(self, max_tokens: u32) -> SeqInput {
        SeqInput {
            prompt_tokens: self.prompt_tokens,
            block_hashes: self.block_hashes,
            max_tokens,
            content_hash: self.content_hash,
            block_tokens: self.block_tokens,
        }
    }
}

/// The real tokenizer's ids, or the stand-in over `text()` when it failed (a template that
/// does not render), logged once per tokenizer: a request never fails for it.
pub fn real(
    tk: &inferplane_tokenize::PromptTokenizer,
    ids: Result<Vec<u32>, inferplane_tokenize::TokenizeError>,
    text: impl FnOnce() -> String,
) -> Prompted {
    match ids {
        Ok(ids) => Prompted::of_ids(&ids),
        Err(e) => {
            if tk.first_failure() {
                tracing::warn!(
                    tokenizer = %tk.source().display(),
                    error = %inferplane_tokenize::ErrorChain(&e),
                    "cannot tokenize a prompt: using the stand-in tokenizer (logged once)"
                );
            }
            Prompted::stand_in(&text())
        }
    }
}
