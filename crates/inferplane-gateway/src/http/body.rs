//! Reading a request body with the limits a client must not get around: at most
//! `max_body_bytes` (413), within `body_read_timeout` of its headers (408), and whole (a
//! body that ends before its `Content-Length` is a 400, not a hang). A `Content-Length`
//! over the limit gets its 413 before any of the body is read, so a client that sent
//! `Expect: 100-continue` is never told to send it (hyper sends `100 Continue` only when
//! the body is first read), and the listener's lingering close lets a client that sends
//! anyway read the 413 instead of a reset.

use crate::error::ApiError;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use futures_util::StreamExt;
use std::time::Duration;

/// Reads `body` whole, or says why not (OpenAI-shaped).
pub async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "request_too_large",
        ..ApiError::bad_request(
            format!("the request body is larger than {limit} bytes"),
            None,
        )
    };
    // the declared length, before reading anything
    if usize::try_from(body.size_hint().lower()).map_or(true, |n| n > limit) {
        return Err(too_large());
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(
                    format!("the request body could not be read whole: {e}"),
                    None,
                )
            })?;
            if out.len() + chunk.len() > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "request_timeout",
                ..ApiError::bad_request(
                    format!("the request body did not arrive within {timeout:?}"),
                    None,
                )
            })
        })
}
