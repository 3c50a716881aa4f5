//! The client socket as hyper sees it, with the two things hyper does not do itself:
//!
//! - **OpenAI-shaped answers to unparseable requests.** When a request cannot be parsed
//!   (malformed request line or header, headers over hyper's buffer, a URI too long),
//!   hyper answers on its own with an empty 400, 431 or 414 and closes. Those answers are
//!   recognised as they are written (a 4xx head with `connection: close`,
//!   `content-length: 0` and no `content-type`, which no route of the gateway produces)
//!   and replaced with the same status carrying an OpenAI error body.
//! - **Lingering close** (as nginx does it): when the connection closes, the write side is
//!   shut first and whatever the client is still sending (the rest of a body that got its
//!   413 early) is read and discarded until the client closes, for at most
//!   [`LINGER_TIME`] in all, [`LINGER_IDLE`] without data and [`LINGER_BYTES`]. Without
//!   it, closing a socket with unread data resets the connection and the client sees a
//!   broken pipe instead of its answer.

use crate::error::ApiError;
use axum::http::StatusCode;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Longest lingering close.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// Longest wait for more client data during a lingering close.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);
/// Most bytes discarded during a lingering close.
pub const LINGER_BYTES: usize = 64 << 20;

/// A client connection's socket.
pub(super) struct ClientIo {
    tcp: TcpStream,
    /// An answer replacing hyper's own, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
    linger: Option<Linger>,
}

struct Linger {
    until: Instant,
    idle: Pin<Box<Sleep>>,
    discarded: usize,
}

impl ClientIo {
    pub(super) fn new(tcp: TcpStream) -> Self {
        ClientIo {
            tcp,
            pending: None,
            linger: None,
        }
    }

    /// Writes the replacement answer, if one is waiting.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = self.pending.as_mut() {
            if *written == answer.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes a write: hyper's own error answer is swapped for an OpenAI-shaped one.
    fn intercept(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let answer = replacement(buf)?;
        self.pending = Some((answer, 0));
        // the original counts as written; the replacement goes out now or on flush
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        })
    }

    /// Discards what the client still sends until it closes or a bound is reached.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        let linger = self.linger.get_or_insert_with(|| Linger {
            until: now + LINGER_TIME,
            idle: Box::pin(tokio::time::sleep(LINGER_IDLE)),
            discarded: 0,
        });
        let mut scratch = [0u8; 16 << 10];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.tcp).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    linger.discarded += rb.filled().len();
                    if linger.discarded > LINGER_BYTES {
                        return Poll::Ready(());
                    }
                    let idle_until = (Instant::now() + LINGER_IDLE).min(linger.until);
                    linger.idle.as_mut().reset(idle_until);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        linger.idle.as_mut().poll(cx)
    }
}

/// The OpenAI-shaped answer to write instead of `buf`, if `buf` is hyper's own empty
/// error answer.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.get(9..12)?.parse().ok()?;
    let headers: Vec<&str> = lines.collect();
    let has = |h: &str| headers.iter().any(|l| l.eq_ignore_ascii_case(h));
    if !has("connection: close")
        || !has("content-length: 0")
        || headers
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("content-type:"))
    {
        return None;
    }
    let (status, message, code) = match code {
        400 => (
            StatusCode::BAD_REQUEST,
            "the request is not valid HTTP/1.1 (malformed request line or header)",
            "invalid_http",
        ),
        414 => (
            StatusCode::URI_TOO_LONG,
            "the request URI is too long",
            "uri_too_long",
        ),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request headers are too large",
            "headers_too_large",
        ),
        _ => return None,
    };
    let date = headers
        .iter()
        .find(|l| l.to_ascii_lowercase().starts_with("date:"));
    let err = ApiError {
        status,
        code,
        ..ApiError::bad_request(message, None)
    };
    let extra = date.map(|d| format!("{d}\r\n")).unwrap_or_default();
    Some(raw_answer(&err, &extra).into_bytes())
}

/// A whole HTTP/1.1 answer carrying `err`'s OpenAI body, for a connection that closes
/// after it; `extra` is more header lines, each ending in CRLF.
pub(super) fn raw_answer(err: &ApiError, extra: &str) -> String {
    let body = err.body().to_string();
    let retry = err
        .retry_after
        .map(|s| format!("retry-after: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n{retry}{extra}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        err.status.as_u16(),
        err.status.canonical_reason().unwrap_or(""),
        body.len()
    )
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(done) = this.intercept(cx, buf) {
            return done;
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        // hyper writes an answer's head as the first slice; an error answer has no body
        if let [head] = bufs
            && let Some(done) = this.intercept(cx, head)
        {
            return done;
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            ready!(this.poll_pending(cx))?;
            ready!(Pin::new(&mut this.tcp).poll_shutdown(cx))?;
        }
        ready!(this.poll_linger(cx));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_error_answers_get_an_openai_body() {
        for (code, ours) in [
            (400, "invalid_http"),
            (414, "uri_too_long"),
            (431, "headers_too_large"),
        ] {
            let original = format!(
                "HTTP/1.1 {code} Whatever\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 04:24:13 GMT\r\n\r\n"
            );
            let new = String::from_utf8(replacement(original.as_bytes()).unwrap()).unwrap();
            let (head, body) = new.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {code} ")), "{head}");
            assert!(head.contains("date: Wed, 02 Dec 2026"), "{head}");
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["code"], ours);
            assert_eq!(v["error"]["type"], "invalid_request_error");
        }
    }

    #[test]
    fn the_gateways_own_answers_pass_untouched() {
        for head in [
            // a JSON error from a route: it has a content type and a body
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n",
            // a kept-alive empty answer
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            // success and server errors are never hyper's parse errors
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            // a body chunk, an incomplete head
            "data: {}\n\n",
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\n",
        ] {
            assert!(replacement(head.as_bytes()).is_none(), "{head}");
        }
    }
}
