//! The accept loop, with the limits nginx and Envoy put on clients: HTTP/1.1 served by
//! hyper with a header-read timeout that is also the idle keep-alive timeout (started
//! when a connection goes idle, so a slowloris or an idle socket is closed), a cap on open
//! connections beyond which a newcomer gets an immediate 503 and is closed (instead of the
//! gateway running out of file descriptors and freezing), `TCP_NODELAY` (streamed answers
//! are many small writes: without it, Nagle's algorithm holds each for the client's
//! delayed ACK, ~40 ms), and a graceful drain: on stop, no new connections, idle ones are
//! closed, busy ones finish their request. The socket hyper is given (`listener/io.rs`) puts an
//! OpenAI body on hyper's own answers to unparseable requests and closes by lingering,
//! so that a client still sending a rejected body reads its answer instead of a reset.

mod io;

pub use io::{LINGER_BYTES, LINGER_IDLE, LINGER_TIME};

use crate::error::ApiError;
use axum::Router;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};

/// hyper's read buffer per connection: request heads (request line and headers) are
/// refused with 431 beyond it (at the latest beyond twice it); bodies stream through it.
pub const MAX_HEAD_BUFFER: usize = 128 << 10;

/// Limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Longest time to receive a request's headers, counted from the connection's start
    /// or from the end of its previous response (so also the idle keep-alive timeout).
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest time to receive a request's body once its headers are in (enforced where
    /// the body is read, see `http::body`).
    pub body_read_timeout: Duration,
}

/// Three quarters of the soft open-file limit (`/proc/self/limits` on Linux), 4096
/// where it cannot be read: the connection cap when none is configured.
pub fn default_max_connections() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| open_files_limit(&text))
        .map_or(4096, |n| (n / 4 * 3).max(16))
}

/// The soft limit of the `Max open files` line of a `/proc/<pid>/limits` text.
fn open_files_limit(text: &str) -> Option<usize> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The answer to a connection over the cap, written before closing it.
fn busy_answer() -> String {
    let err = ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "server_error",
        code: "too_many_connections",
        retry_after: Some(1),
        ..ApiError::bad_request(
            "too many open connections to this gateway; retry later",
            None,
        )
    };
    io::raw_answer(&err, "")
}

/// Serves `router` on `listener` until `stop` fires, then drains: returns when every
/// connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ClientLimits,
    mut stop: oneshot::Receiver<()>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Semaphore::new(max));
    let (drain_tx, drain_rx) = watch::channel(false);
    loop {
        let tcp = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // out of descriptors or a connection reset before accept: back off a
                    // little instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let (router, drain) = (router.clone(), drain_rx.clone());
                tokio::spawn(async move {
                    connection(tcp, router, limits.header_read_timeout, drain).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(busy(tcp));
            }
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    // every connection returns its permit when it closes
    let _ = open
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
}

async fn connection(
    tcp: TcpStream,
    router: Router,
    header_read_timeout: Duration,
    mut drain: watch::Receiver<bool>,
) {
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // a request's head over the buffer gets hyper's 431 (ours in OpenAI's shape). One
        // read may take up to a buffer's worth past the check, so heads above twice this
        // are always refused, whatever the socket's timing (hyper's default, ~400 KiB,
        // let a 500 KB head through when it arrived in one read)
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io::ClientIo::new(tcp)), service);
    tokio::pin!(conn);
    let drained = async move {
        // the guard the wait returns is not `Send`: drop it before the next await
        let _ = drain.wait_for(|d| *d).await.map(|_| ());
    };
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        }
        () = drained => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn busy(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(busy_answer().as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_follows_the_open_file_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(open_files_limit(text), Some(1024));
        assert_eq!(
            open_files_limit("Max open files   unlimited  unlimited files"),
            None
        );
        assert!(default_max_connections() >= 16);
    }

    #[test]
    fn the_busy_answer_is_well_formed_openai_json() {
        let answer = busy_answer();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }
}
