//! Request metadata from the HTTP edge: the `x-*` headers (priority, SLOs, cost budget,
//! session, parallelism hint, request id) with defaults so unmodified OpenAI clients work,
//! and the few body fields the control plane reads (model, stream, max tokens, user, a
//! prompt-size estimate, a prefix hash and the prompt's KV-block hashes). Invalid header values are a 400 that names the
//! header and says why.

use crate::error::ApiError;
use axum::http::HeaderMap;
use inferplane_core::{ParallelismKind, Priority};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;

/// Header names.
pub mod headers {
    /// Request id, generated when absent and echoed back.
    pub const REQUEST_ID: &str = "x-request-id";
    /// `critical`, `high`, `normal` or `low`.
    pub const PRIORITY: &str = "x-priority";
    /// End-to-end deadline in milliseconds.
    pub const SLO_MS: &str = "x-slo-ms";
    /// Time-to-first-token target in milliseconds.
    pub const SLO_TTFT_MS: &str = "x-slo-ttft-ms";
    /// Cost budget in US dollars.
    pub const COST_BUDGET: &str = "x-cost-budget";
    /// Session key for affinity routing (falls back to the body's `user`).
    pub const SESSION_ID: &str = "x-session-id";
    /// Preferred layout: `tp`, `pp`, `dp`, `ep` or `hybrid`.
    pub const PARALLELISM_HINT: &str = "x-parallelism-hint";
    /// Which instance served the request (response header).
    pub const INSTANCE: &str = "x-inferplane-instance";
    /// What prefix routing found (response header of pools routing by `prefix`):
    /// `matched=<tokens>; best=<tokens>; reason=<hit|spread|miss|unhashed>`.
    pub const PREFIX: &str = "x-inferplane-prefix";
}

/// A completion's `prompt` in the shapes routing reads: one text, a list of one text, or
/// token ids (several prompts are another shape).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Prompt {
    /// One text.
    Text(String),
    /// A list holding one text.
    Texts([String; 1]),
    /// Token ids.
    Ids(Vec<u32>),
}

/// What the headers say.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMeta {
    /// The request id (given or generated).
    pub request_id: String,
    /// Priority class.
    pub priority: Priority,
    /// End-to-end deadline.
    pub deadline: Option<Duration>,
    /// TTFT target.
    pub ttft_target: Option<Duration>,
    /// Cost budget in dollars.
    pub cost_budget: Option<f64>,
    /// Session key.
    pub session: Option<String>,
    /// Layout hint.
    pub parallelism_hint: Option<ParallelismKind>,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            ApiError::bad_request(format!("header {name} is not valid ASCII text"), Some(name))
        }),
    }
}

fn millis(h: &HeaderMap, name: &str) -> Result<Option<Duration>, ApiError> {
    let Some(v) = header_str(h, name)? else {
        return Ok(None);
    };
    match v.parse::<u64>() {
        Ok(0) => Err(ApiError::bad_request(
            format!("header {name} must be a positive number of milliseconds, got 0"),
            Some(name),
        )),
        Ok(ms) => Ok(Some(Duration::from_millis(ms))),
        Err(_) => Err(ApiError::bad_request(
            format!("header {name} must be a whole number of milliseconds, got {v:?}"),
            Some(name),
        )),
    }
}

impl HeaderMeta {
    /// Reads the headers; `new_id` makes an id when `x-request-id` is absent.
    pub fn parse(
        h: &HeaderMap,
        default_priority: Priority,
        new_id: impl FnOnce() -> String,
    ) -> Result<Self, ApiError> {
        let request_id = match header_str(h, headers::REQUEST_ID)? {
            Some(id) if !id.is_empty() && id.len() <= 256 => id.to_string(),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "header x-request-id must be 1 to 256 characters",
                    Some(headers::REQUEST_ID),
                ));
            }
            None => new_id(),
        };
        let priority = match header_str(h, headers::PRIORITY)? {
            Some(p) => p.parse::<Priority>().map_err(|e| {
                ApiError::bad_request(format!("header x-priority: {e}"), Some(headers::PRIORITY))
            })?,
            None => default_priority,
        };
        let cost_budget = match header_str(h, headers::COST_BUDGET)? {
            Some(v) => match v.parse::<f64>() {
                Ok(b) if b.is_finite() && b > 0.0 => Some(b),
                _ => {
                    return Err(ApiError::bad_request(
                        format!(
                            "header x-cost-budget must be a positive number of US dollars, got {v:?}"
                        ),
                        Some(headers::COST_BUDGET),
                    ));
                }
            },
            None => None,
        };
        let session = match header_str(h, headers::SESSION_ID)? {
            Some("") => {
                return Err(ApiError::bad_request(
                    "header x-session-id must not be empty",
                    Some(headers::SESSION_ID),
                ));
            }
            Some(s) => Some(s.to_string()),
            None => None,
        };
        let parallelism_hint = match header_str(h, headers::PARALLELISM_HINT)? {
            Some(v) => Some(v.parse::<ParallelismKind>().map_err(|e| {
                ApiError::bad_request(
                    format!("header x-parallelism-hint: {e}"),
                    Some(headers::PARALLELISM_HINT),
                )
            })?),
            None => None,
        };
        Ok(HeaderMeta {
            request_id,
            priority,
            deadline: millis(h, headers::SLO_MS)?,
            ttft_target: millis(h, headers::SLO_TTFT_MS)?,
            cost_budget,
            session,
            parallelism_hint,
        })
    }
}

/// The body fields the control plane reads. Everything else is forwarded untouched.
#[derive(Debug, Deserialize)]
pub struct BodyMeta<'a> {
    /// Model name.
    pub model: String,
    /// Streaming?
    #[serde(default)]
    pub stream: Option<bool>,
    /// `stream_options`, kept raw; an explicit `null` is kept too (`None`: absent).
    #[serde(default, borrow, deserialize_with = "given")]
    pub stream_options: Option<&'a RawValue>,
    /// Output limit (older name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Output limit (newer name).
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// End-user id: the session key when `x-session-id` is absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Chat messages, kept raw (sized and hashed, not interpreted).
    #[serde(default, borrow)]
    pub messages: Option<&'a RawValue>,
    /// Completions prompt, kept raw.
    #[serde(default, borrow)]
    pub prompt: Option<&'a RawValue>,
}

/// A field as given, `null` included: only an absent field is `None`.
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Bytes of prompt JSON hashed for prefix locality (about 256 tokens of text).
pub const PREFIX_BYTES: usize = 1024;

impl BodyMeta<'_> {
    /// Parses the fields; a bad body (not a JSON object with a `model`) is a 400 that says
    /// what is wrong.
    pub fn parse(body: &[u8]) -> Result<BodyMeta<'_>, ApiError> {
        // serde would also read a struct from an array (`["m"]`): the API takes objects
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::bad_request(
                "invalid request body: expected a JSON object",
                None,
            ));
        }
        serde_json::from_slice(body).map_err(|e| {
            let msg = e.to_string();
            let param = msg
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
                .map(str::to_string);
            ApiError {
                param,
                ..ApiError::bad_request(format!("invalid request body: {msg}"), None)
            }
        })
    }

    /// The prompt's raw JSON (messages or prompt).
    pub fn prompt_json(&self) -> &str {
        self.messages
            .or(self.prompt)
            .map(RawValue::get)
            .unwrap_or("")
    }

    /// Estimated prompt tokens: about four bytes of text per token.
    pub fn prompt_tokens_estimate(&self) -> u32 {
        u32::try_from(self.prompt_json().len().div_ceil(4)).unwrap_or(u32::MAX)
    }

    /// A hash of the prompt's first [`PREFIX_BYTES`] bytes, for locality routing.
    pub fn prefix_hash(&self) -> Option<u64> {
        let p = self.prompt_json().as_bytes();
        (!p.is_empty()).then(|| xxhash_rust::xxh3::xxh3_64(&p[..p.len().min(PREFIX_BYTES)]))
    }

    /// The prompt's chained KV-block hashes by the simulator's stand-in tokenization
    /// (`inferplane_core::prefix`), over the same text the simulator hashes: a chat's
    /// messages as `role: content` lines, a completion's one text or its token ids. Empty
    /// when the prompt has another shape (several prompts, non-text content only).
    pub fn prefix_blocks(&self) -> std::sync::Arc<[u64]> {
        use inferplane_core::prefix;
        #[derive(Deserialize)]
        struct Message<'a> {
            #[serde(borrow)]
            role: std::borrow::Cow<'a, str>,
            #[serde(default)]
            content: Option<Content>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Content {
            Text(String),
            Parts(Vec<Part>),
        }
        #[derive(Deserialize)]
        struct Part {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            text: Option<String>,
        }
        if let Some(raw) = self.messages {
            let Ok(messages) = serde_json::from_str::<Vec<Message<'_>>>(raw.get()) else {
                return std::sync::Arc::default();
            };
            let mut text = String::new();
            for m in &messages {
                let parts = match &m.content {
                    Some(Content::Text(t)) => vec![t.as_str()],
                    Some(Content::Parts(ps)) => ps
                        .iter()
                        .filter(|p| p.kind == "text")
                        .map(|p| p.text.as_deref().unwrap_or(""))
                        .collect(),
                    None => Vec::new(),
                };
                prefix::push_chat_message(&mut text, &m.role, parts);
            }
            return prefix::block_hashes(&text).into();
        }
        match self
            .prompt
            .map(|raw| serde_json::from_str::<Prompt>(raw.get()))
        {
            Some(Ok(Prompt::Text(t) | Prompt::Texts([t]))) => prefix::block_hashes(&t).into(),
            Some(Ok(Prompt::Ids(ids))) => prefix::block_hashes_of_ids(&ids).into(),
            _ => std::sync::Arc::default(),
        }
    }

    /// The requested output limit.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether the client asked for a final usage chunk.
    pub fn wants_usage(&self) -> bool {
        self.stream_options
            .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
            .and_then(|v| v.get("include_usage").and_then(serde_json::Value::as_bool))
            .unwrap_or(false)
    }
}

/// The body to forward for a stream: the original bytes, with
/// `"stream_options":{"include_usage":true}` added when the client did not set
/// `stream_options` (so the gateway can count tokens). A client that set its own
/// `stream_options` (or `null`) without usage gets them merged (the one re-serialising
/// path); one that set something else than an object is left for the engine to refuse.
pub fn body_with_usage(body: &bytes::Bytes, meta: &BodyMeta<'_>) -> Result<bytes::Bytes, ApiError> {
    if meta.wants_usage() {
        return Ok(body.clone());
    }
    if meta.stream_options.is_none() {
        // absent from the top-level object, whatever the rest of the body mentions: added
        // after its opening brace, every other byte untouched
        let text = body.as_ref();
        let Some(open) = text.iter().position(|b| *b == b'{') else {
            return Ok(body.clone());
        };
        let mut out = Vec::with_capacity(body.len() + 40);
        out.extend_from_slice(&text[..=open]);
        out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
        out.extend_from_slice(&text[open + 1..]);
        return Ok(bytes::Bytes::from(out));
    }
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}"), None))?;
    match v.get_mut("stream_options") {
        Some(serde_json::Value::Object(opts)) => {
            opts.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
        // `null` (which OpenAI accepts as absent)
        Some(other) if other.is_null() => {
            *other = serde_json::json!({"include_usage": true});
        }
        _ => {}
    }
    Ok(bytes::Bytes::from(v.to_string()))
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
