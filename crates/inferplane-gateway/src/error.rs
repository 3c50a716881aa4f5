//! The gateway's one HTTP error type. Everything that goes wrong for a client ends up as an
//! [`ApiError`], which becomes an OpenAI-shaped response
//! `{"error":{"message","type","param","code"}}` at the edge, and nowhere else. The library
//! (control plane, dispatcher) never builds one: it answers a
//! [`PlaneError`](crate::PlaneError), which the HTTP edge turns into an `ApiError`
//! (`impl From<PlaneError> for ApiError` in `http/`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI error type (`invalid_request_error`, `server_error`, ...).
    pub kind: &'static str,
    /// The parameter or header to blame, if any.
    pub param: Option<String>,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// Seconds after which a retry may succeed (`Retry-After`); 429 and 503 answers
    /// without one say 1.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// 400 for an invalid request, naming the parameter or header.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: "invalid_request",
            retry_after: None,
        }
    }

    /// 401 from the admin API.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            kind: "authentication_error",
            param: None,
            code: "unauthorized",
            retry_after: None,
        }
    }

    /// 401 for an API key that is missing, unknown or revoked (OpenAI's shape; the key is
    /// never echoed).
    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: "invalid_api_key",
            retry_after: None,
        }
    }

    /// 404 for a model the caller's tenant may not use (OpenAI answers it as a model
    /// that does not exist for the caller).
    pub fn model_not_allowed(model: &str, tenant: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{model}` does not exist or tenant `{tenant}` does not have access to it."
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: "model_not_found",
            retry_after: None,
        }
    }

    /// 403 from the admin API.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
            kind: "permission_error",
            param: None,
            code: "forbidden",
            retry_after: None,
        }
    }

    /// 404 for an unknown admin object.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: "not_found",
            retry_after: None,
        }
    }

    /// 409 for a conflicting admin change.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: "conflict",
            retry_after: None,
        }
    }

    /// 502 when every attempt at an engine failed.
    pub fn upstream(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_GATEWAY,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: "upstream_error",
            retry_after: None,
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

    /// The error as one SSE event, for streams that break after their first byte.
    pub fn sse_event(&self) -> String {
        format!("data: {}\n\n", self.body())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        // Overload answers tell well-behaved clients when to come back.
        let after = self.retry_after.or(matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then_some(1));
        if let Some(secs) = after {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        resp
    }
}
