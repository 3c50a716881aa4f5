//! OpenAI wire shapes the simulator accepts and produces, and its error type.
//!
//! Requests are parsed leniently about fields the simulator ignores (temperature, top_p,
//! tools, ...), strictly about the fields it uses. Every error becomes the OpenAI error
//! shape `{"error":{"message","type","param","code"}}` with the matching 4xx/5xx status.
//!
//! Besides OpenAI's fields, both request bodies take vLLM's `min_tokens` sampling
//! parameter (no end-of-sequence before this many tokens), validated as vLLM does
//! ([`min_tokens`]). The simulated model emits its end-of-sequence token as soon as
//! `min_tokens` allows, so `min_tokens = m` means exactly `m` output tokens: the
//! simulator's convention for a client to state a request's true output length.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// An error answered to the client in the OpenAI shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// The offending parameter, if one is to blame.
    pub param: Option<String>,
    /// A machine-readable code, e.g. `model_not_found`.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// A 404 for a model this server does not serve.
    pub fn model_not_found(model: &str, served: &str) -> Self {
        ApiError {
            status: 404,
            message: format!("The model `{model}` does not exist. This server serves `{served}`."),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// A scripted server error (fault injection) with the given status.
    pub fn injected(status: u16) -> Self {
        ApiError {
            status,
            message: format!("injected fault: this simulated engine answers {status}"),
            kind: "server_error",
            param: None,
            code: Some("injected_fault"),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

/// `stream_options` of a request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Message content: a string or a list of typed parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts; only `text` parts contribute to the prompt.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// Part type, e.g. `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The content (absent for some assistant tool-call messages).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `POST /v1/chat/completions` body, the fields the simulator uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Output limit (older name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Output limit (newer name).
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (only 1 is supported).
    #[serde(default)]
    pub n: Option<u32>,
    /// vLLM's `min_tokens`, kept raw so that [`min_tokens`] can name it in its errors.
    #[serde(default)]
    pub min_tokens: Option<serde_json::Value>,
}

impl ChatRequest {
    /// The prompt text the simulator tokenizes: each message as `role: content\n`.
    pub fn prompt_text(&self) -> String {
        let mut out = String::new();
        for m in &self.messages {
            let texts: &mut dyn Iterator<Item = &str> = match &m.content {
                Some(Content::Text(t)) => &mut std::iter::once(t.as_str()),
                Some(Content::Parts(parts)) => &mut parts
                    .iter()
                    .filter(|p| p.kind == "text")
                    .map(|p| p.text.as_deref().unwrap_or("")),
                None => &mut std::iter::empty(),
            };
            inferplane_core::prefix::push_chat_message(&mut out, &m.role, texts);
        }
        out
    }
}

/// A completions prompt: text, a batch of texts, token ids, or a batch of token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// Token ids.
    Ids(Vec<u32>),
    /// Several token-id prompts.
    IdBatches(Vec<Vec<u32>>),
}

/// `POST /v1/completions` body, the fields the simulator uses.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// Model name.
    pub model: String,
    /// The prompt.
    pub prompt: Prompt,
    /// Output limit.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (only 1 is supported).
    #[serde(default)]
    pub n: Option<u32>,
    /// vLLM's `min_tokens`, kept raw so that [`min_tokens`] can name it in its errors.
    #[serde(default)]
    pub min_tokens: Option<serde_json::Value>,
}

/// Token usage, as in OpenAI responses.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
    /// Details of the prompt tokens.
    pub prompt_tokens_details: PromptTokensDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u32,
}

impl Usage {
    /// Usage from counts.
    pub fn new(prompt: u32, completion: u32, cached: u32) -> Self {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
        }
    }
}

/// Turns a serde error on a request body into a 400 that names the field when it can.
pub fn parse_error(err: &serde_json::Error) -> ApiError {
    let msg = err.to_string();
    let param = msg
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    ApiError {
        status: 400,
        message: format!("invalid request body: {msg}"),
        kind: "invalid_request_error",
        param,
        code: None,
    }
}

/// Validates vLLM's `min_tokens` against the request's `max_tokens` (after defaults) and
/// returns it, `0` when absent or `null` (no minimum). Like vLLM, refuses a value that is
/// not an integer, is negative, or is above `max_tokens`, with a 400 naming `min_tokens`.
pub fn min_tokens(value: Option<&serde_json::Value>, max_tokens: u32) -> Result<u32, ApiError> {
    let bad = |message: String| ApiError::bad_request(message, Some("min_tokens"));
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(0);
    };
    match (value.as_u64(), value.as_i64()) {
        (Some(m), _) => match u32::try_from(m) {
            Ok(m) if m <= max_tokens => Ok(m),
            _ => Err(bad(format!(
                "min_tokens must be less than or equal to max_tokens={max_tokens}, got {m}."
            ))),
        },
        (None, Some(m)) => Err(bad(format!(
            "min_tokens must be greater than or equal to 0, got {m}."
        ))),
        (None, None) => Err(bad(format!("min_tokens must be an integer, got {value}."))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn min_tokens_absent_or_null_is_zero_and_integers_up_to_max_tokens_pass() {
        assert_eq!(min_tokens(None, 5), Ok(0));
        assert_eq!(min_tokens(Some(&json!(null)), 5), Ok(0));
        assert_eq!(min_tokens(Some(&json!(0)), 5), Ok(0));
        assert_eq!(min_tokens(Some(&json!(5)), 5), Ok(5));
    }

    #[test]
    fn min_tokens_that_is_negative_fractional_too_big_or_not_a_number_names_the_field() {
        for (v, needle) in [
            (json!(-1), "greater than or equal to 0, got -1"),
            (json!(2.5), "must be an integer, got 2.5"),
            (json!("3"), "must be an integer"),
            (json!(6), "less than or equal to max_tokens=5, got 6"),
            (json!(u64::MAX), "less than or equal to max_tokens=5"),
        ] {
            let err = min_tokens(Some(&v), 5).unwrap_err();
            assert_eq!(
                (err.status, err.param.as_deref()),
                (400, Some("min_tokens"))
            );
            assert!(err.message.contains(needle), "{v}: {}", err.message);
        }
    }
}
