//! A pool's real tokenizer: a Hugging Face `tokenizer.json` (the `tokenizers` crate, pure
//! Rust: `fancy-regex`, no `onig`) and the model's chat template (`minijinja`, as HF TGI
//! renders it), shared by the gateway and the simulator so that both turn a request into
//! the same token ids and so the same chained KV-block hashes
//! ([`inferplane_core::prefix::block_hashes_of_ids`]).
//!
//! What an engine does, and so what this does:
//!
//! - **Chat**: the messages are rendered with the chat template (`messages`,
//!   `add_generation_prompt = true`, `bos_token`, `eos_token`; `trim_blocks` and
//!   `lstrip_blocks` as in `transformers`), then encoded *without* the tokenizer's own
//!   special tokens (the template writes them; vLLM's `add_special_tokens = false` for
//!   chats). A message whose `content` is a list of parts is given to the template as the
//!   text of its `text` parts joined by `\n` (vLLM's `string` content format).
//! - **Completions**: the prompt text is encoded *with* the tokenizer's special tokens (a
//!   BOS, when its post-processor adds one), as vLLM does.
//!
//! The gateway tokenizes on the hot path, so it bounds the work with
//! [`PromptTokenizer::encode_prefix`]: only the first [`PREFIX_LIMIT_BYTES`] of the prompt
//! text are encoded, and when the text was longer the tokens ending within
//! [`CUT_SLACK_BYTES`] of the cut are dropped too, so that what is kept equals the leading
//! tokens of the whole text's encoding (routing needs only leading blocks). This assumes no
//! pre-token (the piece of text a BPE merges within) is longer than [`CUT_SLACK_BYTES`]
//! and crosses the cut; the count of a truncated prompt is extrapolated from the bytes per
//! token of the part encoded.

mod template;
pub mod testing;

pub use template::ChatTemplate;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes of prompt text [`PromptTokenizer::encode_prefix`] encodes at most (32 KiB, some
/// 8,000 tokens of English: 500 blocks of 16, more leading blocks than routing needs).
pub const PREFIX_LIMIT_BYTES: usize = 32 * 1024;

/// Tokens ending within this many bytes of a cut are dropped (see the crate docs).
pub const CUT_SLACK_BYTES: usize = 1024;

/// A boxed error from the `tokenizers` crate.
type TkError = Box<dyn std::error::Error + Send + Sync>;

/// Why a tokenizer or its chat template could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `tokenizer.json` could not be read or is not a tokenizer.
    #[error("cannot load the tokenizer {path}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What the `tokenizers` crate said.
        #[source]
        source: TkError,
    },
    /// A chat template or `tokenizer_config.json` could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer_config.json` is not valid JSON.
    #[error("{path} is not valid JSON")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The chat template does not compile.
    #[error("the chat template in {path} does not compile")]
    Template {
        /// The file.
        path: PathBuf,
        /// The template error.
        #[source]
        source: minijinja::Error,
    },
}

/// Why a prompt could not be tokenized (routing then falls back to the stand-in).
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// The tokenizer has no chat template.
    #[error("no chat template (none in tokenizer_config.json, none configured)")]
    NoChatTemplate,
    /// The messages are not an array of objects.
    #[error("messages are not an array of objects")]
    Messages,
    /// The template failed on these messages.
    #[error("the chat template cannot be rendered")]
    Render(#[source] minijinja::Error),
    /// The tokenizer failed.
    #[error("the tokenizer failed")]
    Encode(#[source] TkError),
}

/// The leading tokens of a prompt, from [`PromptTokenizer::encode_prefix`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The token ids: all of them, or when `truncated` the leading ones.
    pub ids: Vec<u32>,
    /// The prompt's token count: exact, or when `truncated` extrapolated.
    pub prompt_tokens: u32,
    /// Whether the text was longer than the limit.
    pub truncated: bool,
}

/// A loaded tokenizer with its chat template.
pub struct PromptTokenizer {
    tokenizer: tokenizers::Tokenizer,
    template: Option<ChatTemplate>,
    source: PathBuf,
    failure_noted: AtomicBool,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("source", &self.source)
            .field("chat_template", &self.template.is_some())
            .finish_non_exhaustive()
    }
}

/// Two tokenizers are equal when loaded from the same files.
impl PartialEq for PromptTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && self.template.as_ref().map(ChatTemplate::source)
                == other.template.as_ref().map(ChatTemplate::source)
    }
}

impl PromptTokenizer {
    /// Loads `tokenizer` (a `tokenizer.json`) and the chat template: from `chat_template`
    /// when given (a Jinja file, or a JSON file with a `chat_template` field such as
    /// `tokenizer_config.json`), else from the `tokenizer_config.json` next to the
    /// tokenizer when there is one. Without a template, chats cannot be tokenized
    /// ([`TokenizeError::NoChatTemplate`]); completions can.
    pub fn load(tokenizer: &Path, chat_template: Option<&Path>) -> Result<Self, LoadError> {
        let tk =
            tokenizers::Tokenizer::from_file(tokenizer).map_err(|source| LoadError::Tokenizer {
                path: tokenizer.to_path_buf(),
                source,
            })?;
        let template = match chat_template {
            Some(p) => Some(ChatTemplate::load(p)?),
            None => {
                let beside = tokenizer.with_file_name("tokenizer_config.json");
                if beside.is_file() {
                    ChatTemplate::load_config(&beside)?
                } else {
                    None
                }
            }
        };
        Ok(PromptTokenizer {
            tokenizer: tk,
            template,
            source: tokenizer.to_path_buf(),
            failure_noted: AtomicBool::new(false),
        })
    }

    /// The `tokenizer.json` it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The chat template, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// True the first time it is called: callers log a failure once per tokenizer.
    pub fn first_failure(&self) -> bool {
        !self.failure_noted.swap(true, Ordering::Relaxed)
    }

    /// A chat's prompt text: the messages (a JSON array) through the chat template.
    pub fn chat_text(&self, messages: &serde_json::Value) -> Result<String, TokenizeError> {
        self.template
            .as_ref()
            .ok_or(TokenizeError::NoChatTemplate)?
            .render(messages)
    }

    /// Every token id of `text`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizeError> {
        let enc = self
            .tokenizer
            .encode_fast(text, add_special_tokens)
            .map_err(TokenizeError::Encode)?;
        Ok(enc.get_ids().to_vec())
    }

    /// A chat's token ids, as the engine sees them.
    pub fn chat_ids(&self, messages: &serde_json::Value) -> Result<Vec<u32>, TokenizeError> {
        self.encode(&self.chat_text(messages)?, false)
    }

    /// A completion prompt's token ids, as the engine sees them.
    pub fn completion_ids(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        self.encode(text, true)
    }

    /// The leading tokens of `text`, encoding at most `limit` bytes of it (see the crate
    /// docs): what is kept is a prefix of [`encode`](Self::encode)'s ids.
    pub fn encode_prefix(
        &self,
        text: &str,
        add_special_tokens: bool,
        limit: usize,
    ) -> Result<Tokens, TokenizeError> {
        if text.len() <= limit {
            let ids = self.encode(text, add_special_tokens)?;
            let prompt_tokens = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            return Ok(Tokens {
                ids,
                prompt_tokens,
                truncated: false,
            });
        }
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let enc = self
            .tokenizer
            .encode(&text[..cut], add_special_tokens)
            .map_err(TokenizeError::Encode)?;
        let keep_before = cut.saturating_sub(CUT_SLACK_BYTES);
        // special tokens the post-processor adds have no span (0, 0) and are kept at the
        // front; the first token reaching into the slack and everything after it go
        let kept = enc
            .get_offsets()
            .iter()
            .position(|&(_, end)| end > keep_before)
            .unwrap_or(enc.get_ids().len());
        let ids = enc.get_ids()[..kept].to_vec();
        let per_byte = enc.get_ids().len() as f64 / cut.max(1) as f64;
        let estimate = (text.len() as f64 * per_byte).ceil();
        Ok(Tokens {
            ids,
            prompt_tokens: if estimate >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                estimate as u32
            },
            truncated: true,
        })
    }

    /// A chat's leading tokens, bounded as [`encode_prefix`](Self::encode_prefix).
    pub fn chat_prefix(
        &self,
        messages: &serde_json::Value,
        limit: usize,
    ) -> Result<Tokens, TokenizeError> {
        self.encode_prefix(&self.chat_text(messages)?, false, limit)
    }

    /// A completion prompt's leading tokens, bounded as
    /// [`encode_prefix`](Self::encode_prefix).
    pub fn completion_prefix(&self, text: &str, limit: usize) -> Result<Tokens, TokenizeError> {
        self.encode_prefix(text, true, limit)
    }
}

/// Displays an error followed by its sources: `outer: inner: innermost`.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
