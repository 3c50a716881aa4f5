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

/// Largest whole (non-streamed) answer taken from an engine: a completion of 100,000
/// tokens is about 1 MB of JSON; anything near this is an engine gone wrong, and reading
/// it unbounded would let one engine exhaust the gateway's memory.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// How long an idle engine connection is kept: below the shortest keep-alive of the
/// engines served (llama.cpp's server closes idle connections after 5 s), so a request is
/// not sent on a socket the engine is closing.
pub const ENGINE_IDLE: Duration = Duration::from_secs(4);

/// Builds the HTTP client used for engines: plain HTTP, no proxy (`http_proxy` and
/// friends are ignored: engine keys must not reach a proxy), connect timeout, keep-alive
/// pool with [`ENGINE_IDLE`].
pub fn client(t: &TimeoutSection) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(t.connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(ENGINE_IDLE)
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
    /// A whole answer's body stalled: nothing for the idle timeout after its headers or
    /// between its chunks (nothing reached the client, so it may be retried elsewhere).
    #[error("{instance} sent nothing for {timeout:?} in the middle of its answer")]
    IdleTimeout {
        /// The instance.
        instance: String,
        /// The timeout.
        timeout: Duration,
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
    /// A success status with a body that is not what the engine should send (not JSON,
    /// or larger than [`MAX_ANSWER_BYTES`]).
    #[error("{instance} answered {status} with {why}")]
    BadAnswer {
        /// The instance.
        instance: String,
        /// The status it sent.
        status: StatusCode,
        /// What is wrong with the body.
        why: &'static str,
    },
}

impl AttemptError {
    /// Safe and useful to retry on another instance (nothing reached the client).
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Connect { .. }
            | AttemptError::FirstByteTimeout { .. }
            | AttemptError::Transport { .. }
            | AttemptError::IdleTimeout { .. }
            | AttemptError::BadAnswer { .. } => true,
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
/// statuses come back as [`AttemptError::Status`] with the engine's body. A send that
/// fails on a connection the engine was closing (`is_stale_connection`) is sent
/// once more, on a fresh connection to the same instance, before anything is reported.
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
    let request = || {
        let req = http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", request_id)
            .body(body.clone());
        match &backend.api_key {
            Some(key) => req.bearer_auth(key.expose()),
            None => req,
        }
    };
    // one first-byte budget for both tries
    let first_by = tokio::time::Instant::now() + t.first_byte;
    let mut sent = tokio::time::timeout_at(first_by, request().send()).await;
    if let Ok(Err(e)) = &sent
        && is_stale_connection(e)
    {
        // The engine closed a pooled connection as the request went out on it; the
        // broken connection has left the pool, so this goes out on a fresh one. Not the
        // instance's fault, and the request stays where it was placed.
        tracing::debug!(instance = %backend.spec.id, error = %e, "stale engine connection, resending");
        sent = tokio::time::timeout_at(first_by, request().send()).await;
    }
    let resp = match sent {
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

/// Whether a send failed the way a pooled connection the engine was closing fails: the
/// connection ended (closed, reset, broken pipe) before any answer, without being a
/// connect error or a timeout. An engine that closes idle connections (llama.cpp after
/// 5 s) can close one just as a request is written on it; the request never reached the
/// engine's handler, so sending it again on a fresh connection is safe.
fn is_stale_connection(e: &reqwest::Error) -> bool {
    if e.is_connect() || e.is_timeout() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// Reads at most `limit` bytes of the body (the rest is not read).
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Bytes, reqwest::Error> {
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

/// Reads a whole (non-streamed) answer: at most [`MAX_ANSWER_BYTES`], each chunk within
/// `idle` of the previous one (else [`AttemptError::IdleTimeout`]), and for a success
/// status it must be JSON; otherwise [`AttemptError::BadAnswer`] (nothing reached the
/// client, so the request may be retried elsewhere).
pub async fn read_answer(
    mut resp: reqwest::Response,
    instance: &str,
    idle: Duration,
) -> Result<Bytes, AttemptError> {
    let status = resp.status();
    let limit = MAX_ANSWER_BYTES + 1;
    let mut out = Vec::new();
    loop {
        let chunk = tokio::time::timeout(idle, resp.chunk())
            .await
            .map_err(|_| AttemptError::IdleTimeout {
                instance: instance.to_string(),
                timeout: idle,
            })?
            .map_err(|source| AttemptError::Transport {
                instance: instance.to_string(),
                source,
            })?;
        let Some(chunk) = chunk else { break };
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    let bytes = Bytes::from(out);
    let bad = |why| AttemptError::BadAnswer {
        instance: instance.to_string(),
        status,
        why,
    };
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(bad("a body over the gateway's limit for an answer"));
    }
    if status.is_success() && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return Err(bad("a body that is not JSON"));
    }
    Ok(bytes)
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
