//! OpenAI wire shapes the simulator accepts and produces, and its error type.
//!
//! Requests are parsed leniently about fields the simulator ignores (temperature, top_p,
//! tools, ...), strictly about the fields it uses. Every error becomes the OpenAI error
//! shape `{"error":{"message","type","param","code"}}` with the matching 4xx/5xx status.

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
}

impl ChatRequest {
    /// The prompt text the simulator tokenizes: each message as `role: content\n`.
    pub fn prompt_text(&self) -> String {
        let mut out = String::new();
        for m in &self.messages {
            out.push_str(&m.role);
            out.push_str(": ");
            match &m.content {
                Some(Content::Text(t)) => out.push_str(t),
                Some(Content::Parts(parts)) => {
                    for p in parts.iter().filter(|p| p.kind == "text") {
                        out.push_str(p.text.as_deref().unwrap_or(""));
                    }
                }
                None => {}
            }
            out.push('\n');
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
