//! Sending one attempt to an engine, and classifying what went wrong: who is to blame
//! (the instance or the client) and whether a retry on another instance is safe (only
//! while no byte has reached the client).

use crate::config::TimeoutSection;
use crate::dispatcher::Backend;
use crate::telemetry::Route;
use axum::http::{HeaderValue, StatusCode, header};
use bytes::Bytes;
use std::time::Duration;

/// Largest error body read from an engine.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Builds the HTTP client used for engines: plain HTTP, no proxy, connect timeout,
/// keep-alive pool.
pub fn client(t: &TimeoutSection) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(t.connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build()
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// Could not connect.
    #[error("cannot connect to {instance}: {source}")]
    Connect {
        /// The instance.
        instance: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// No response headers (or, for streams, no first event) within the first-byte timeout.
    #[error("{instance} sent nothing within {timeout:?}")]
    FirstByteTimeout {
        /// The instance.
        instance: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The connection failed before the client saw a byte.
    #[error("{instance} failed mid-request: {source}")]
    Transport {
        /// The instance.
        instance: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The whole request took longer than the total timeout.
    #[error("{instance} did not finish within {timeout:?}")]
    TotalTimeout {
        /// The instance.
        instance: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The engine answered with an error status.
    #[error("{instance} answered {status}")]
    Status {
        /// The instance.
        instance: String,
        /// The status.
        status: StatusCode,
        /// The engine's body (passed to the client when not retried).
        body: Bytes,
        /// Its content type.
        content_type: Option<HeaderValue>,
    },
}

impl AttemptError {
    /// Safe and useful to retry on another instance (nothing reached the client).
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Connect { .. }
            | AttemptError::FirstByteTimeout { .. }
            | AttemptError::Transport { .. } => true,
            AttemptError::TotalTimeout { .. } => false,
            AttemptError::Status { status, .. } => matches!(status.as_u16(), 502..=504),
        }
    }

    /// The instance is to blame (counts toward its circuit breaker); a 4xx is the client's.
    pub fn is_instance_fault(&self) -> bool {
        match self {
            AttemptError::Status { status, .. } => status.is_server_error(),
            _ => true,
        }
    }
}

/// Sends the request and waits for the response headers (first-byte timeout). Error
/// statuses come back as [`AttemptError::Status`] with the engine's body.
pub async fn send(
    http: &reqwest::Client,
    backend: &Backend,
    route: Route,
    body: Bytes,
    request_id: &str,
    t: &TimeoutSection,
) -> Result<reqwest::Response, AttemptError> {
    let instance = || backend.spec.id.to_string();
    let url = format!("{}{}", backend.spec.url, route.path());
    let mut req = http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", request_id)
        .body(body);
    if let Some(key) = &backend.api_key {
        req = req.bearer_auth(key.expose());
    }
    let fut = req.send();
    let resp = match tokio::time::timeout(t.first_byte, fut).await {
        Err(_) => {
            return Err(AttemptError::FirstByteTimeout {
                instance: instance(),
                timeout: t.first_byte,
            });
        }
        Ok(Err(source)) if source.is_connect() => {
            return Err(AttemptError::Connect {
                instance: instance(),
                source,
            });
        }
        Ok(Err(source)) => {
            return Err(AttemptError::Transport {
                instance: instance(),
                source,
            });
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = match tokio::time::timeout(t.first_byte, read_limited(resp, MAX_ERROR_BODY)).await {
        Ok(Ok(b)) => b,
        _ => Bytes::new(),
    };
    Err(AttemptError::Status {
        instance: instance(),
        status,
        body,
        content_type,
    })
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(Bytes::from(out))
}

/// Token usage from an engine's answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Prompt tokens served from the engine's prefix cache
    /// (`prompt_tokens_details.cached_tokens`), if reported.
    #[serde(
        default,
        rename = "prompt_tokens_details",
        deserialize_with = "cached_tokens"
    )]
    pub cached_tokens: Option<u32>,
}

fn cached_tokens<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Details {
        #[serde(default)]
        cached_tokens: Option<u32>,
    }
    let details: Option<Details> = serde::Deserialize::deserialize(d)?;
    Ok(details.and_then(|d| d.cached_tokens))
}

#[derive(serde::Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Usage>,
}

/// The `usage` object of a JSON body, if any.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(body).ok()?.usage
}
