//! Relaying an engine's server-sent-event stream to the client event by event, with no
//! buffering beyond the event being read (events that are already complete leave together,
//! in one write): the first content event gives TTFT, the `usage`
//! chunk (asked for by the gateway) gives token counts and is dropped when the client did
//! not ask for it, and a stream that breaks midway ends with an OpenAI-style error event.
//! The attempt's guard reports the outcome when the stream ends or the client leaves.
//!
//! Memory and CPU are bounded whatever the engine sends: an event is searched for its end
//! only in the bytes that arrived since the last search (linear in the stream, not
//! quadratic), and an event longer than [`MAX_EVENT_BYTES`] ends the stream with an error
//! event instead of growing the buffer.

use crate::dispatcher::AttemptGuard;
use crate::error::ApiError;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use inferplane_core::Outcome;
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// Longest server-sent event relayed (a chunk of one token is ~200 bytes; a usage chunk
/// or a tool call with long arguments stays far below this).
pub const MAX_EVENT_BYTES: usize = 4 << 20;

type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// What the relay needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RelayParams {
    /// When the request arrived at the gateway.
    pub arrival: Instant,
    /// Drop the usage-only chunk (the client did not ask for it).
    pub strip_usage: bool,
    /// Longest wait for the first upstream chunk.
    pub first_event_timeout: Duration,
    /// Longest silence between two upstream chunks after the first.
    pub idle_timeout: Duration,
    /// The whole request's deadline.
    pub deadline: Instant,
    /// The gateway's prompt estimate, used if the engine reports no usage.
    pub prompt_estimate: u32,
}

/// A relay in progress.
pub struct Relay {
    upstream: Upstream,
    events: EventSplitter,
    ready: VecDeque<Bytes>,
    params: RelayParams,
    ttft: Option<Duration>,
    usage: Option<crate::backend::Usage>,
    content_events: u32,
    guard: Option<AttemptGuard>,
    finished: bool,
    /// Set when the gateway's shutdown grace has run out: the stream ends with an error
    /// event instead of being cut.
    cut: tokio::sync::watch::Receiver<bool>,
    /// The tenant's reservation, told what the stream used (and settled when the relay
    /// ends, with the last count if the client left).
    reservation: Option<std::sync::Arc<crate::tenants::Reservation>>,
}

/// Why the relay could not start (nothing reached the client: retryable).
#[derive(Debug)]
pub struct StartFailure {
    /// The guard, still unfinished, returned to the caller.
    pub guard: AttemptGuard,
    /// What happened.
    pub reason: String,
    /// Whether it was the first-byte timeout.
    pub timed_out: bool,
}

/// The first event end in `buf` at or after `from` (a separator may begin up to 3 bytes
/// before the new bytes), as (position, separator length).
fn find_event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let start = from.saturating_sub(3).min(buf.len());
    // One pass for both styles: a search per style would scan all the rest of the buffer
    // for the style not in use, once per event (quadratic in a chunk of many events).
    (start..buf.len()).find_map(|i| match &buf[i..] {
        [b'\n', b'\n', ..] => Some((i, 2)),
        [b'\r', b'\n', b'\r', b'\n', ..] => Some((i, 4)),
        _ => None,
    })
}

/// The event's `data:` payload (first data line).
fn data_of(event: &[u8]) -> Option<&[u8]> {
    event
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"data:"))
        .map(|d| d.trim_ascii())
}

/// Whether a chunk carries generated text: a non-empty `content` or `text` string.
fn has_content(data: &[u8]) -> bool {
    for key in [&b"\"content\":"[..], &b"\"text\":"[..]] {
        let mut rest = data;
        while let Some(pos) = rest.windows(key.len()).position(|w| w == key) {
            let after = rest[pos + key.len()..].trim_ascii_start();
            if after.len() >= 2 && after[0] == b'"' && after[1] != b'"' {
                return true;
            }
            rest = &rest[pos + key.len()..];
        }
    }
    false
}

/// Splits an engine's server-sent-event stream into events, exactly as the relay reads it:
/// an event ends at its first blank line (`\n\n` or `\r\n\r\n`, separator included in the
/// event), an end is searched for only in the bytes that arrived since the last search, and
/// an event being read that grows past the limit is an error (the buffer is then emptied).
#[derive(Debug)]
pub struct EventSplitter {
    buf: BytesMut,
    /// Bytes at the start of `buf` already searched for an event end without one.
    searched: usize,
    limit: usize,
}

/// An event longer than an [`EventSplitter`]'s limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the engine sent an event longer than {limit} bytes")]
pub struct EventTooLong {
    /// The limit it passed.
    pub limit: usize,
}

impl EventSplitter {
    /// A splitter for events of at most `limit` bytes (the relay's is [`MAX_EVENT_BYTES`]).
    pub fn new(limit: usize) -> Self {
        EventSplitter {
            buf: BytesMut::new(),
            searched: 0,
            limit,
        }
    }

    /// Appends bytes as they came from the engine (one read, far smaller than the limit;
    /// [`EventSplitter::next_event`] enforces the limit).
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, or `None` until more bytes come; [`EventTooLong`] when the
    /// event being read passes the limit, whether it came whole or in pieces.
    pub fn next_event(&mut self) -> Result<Option<Bytes>, EventTooLong> {
        if let Some((end, sep)) = find_event_end(&self.buf, self.searched) {
            self.searched = 0;
            if end + sep > self.limit {
                self.clear();
                return Err(EventTooLong { limit: self.limit });
            }
            return Ok(Some(self.buf.split_to(end + sep).freeze()));
        }
        self.searched = self.buf.len();
        if self.buf.len() > self.limit {
            self.clear();
            return Err(EventTooLong { limit: self.limit });
        }
        Ok(None)
    }

    /// Bytes held of the event being read.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// At the end of the stream: the last event, if it had no blank line after it.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.searched = 0;
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }

    /// Drops whatever is held.
    pub fn clear(&mut self) {
        self.buf = BytesMut::new();
        self.searched = 0;
    }
}

/// What the relay reads from one event: whether it carries generated text (the first one
/// gives TTFT; they are counted when the engine reports no usage), the usage it reports,
/// and whether it is the usage-only chunk dropped for a client that did not ask for usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFacts {
    /// A non-empty `content` or `text` string.
    pub content: bool,
    /// The `usage` object, if the chunk has one.
    pub usage: Option<crate::backend::Usage>,
    /// A chunk with usage and no choices.
    pub usage_only: bool,
}

impl EventFacts {
    /// Reads an event's first `data:` line; other events and `[DONE]` have no facts.
    pub fn read(event: &[u8]) -> EventFacts {
        let Some(data) = data_of(event) else {
            return EventFacts::default();
        };
        if data == b"[DONE]" {
            return EventFacts::default();
        }
        let mut facts = EventFacts {
            content: has_content(data),
            ..EventFacts::default()
        };
        if data.windows(7).any(|w| w == b"\"usage\"")
            && let Ok(c) = serde_json::from_slice::<UsageChunk>(data)
        {
            facts.usage = c.usage;
            facts.usage_only = c.choices.is_empty() && c.usage.is_some();
        }
        facts
    }
}

#[derive(serde::Deserialize)]
struct UsageChunk {
    #[serde(default)]
    choices: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    usage: Option<crate::backend::Usage>,
}

impl Relay {
    /// Waits for the first upstream chunk (within the idle timeout) so that a hang before
    /// the first event can still be retried elsewhere; then the relay is ready to stream.
    pub async fn start(
        resp: reqwest::Response,
        guard: AttemptGuard,
        params: RelayParams,
        cut: tokio::sync::watch::Receiver<bool>,
        reservation: Option<std::sync::Arc<crate::tenants::Reservation>>,
    ) -> Result<Relay, StartFailure> {
        let mut upstream: Upstream = Box::pin(resp.bytes_stream());
        let fail = |guard, reason: String, timed_out| StartFailure {
            guard,
            reason,
            timed_out,
        };
        let first_by = (Instant::now() + params.first_event_timeout).min(params.deadline);
        let chunk = match tokio::time::timeout_at(first_by, upstream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                return Err(fail(
                    guard,
                    format!("stream failed before its first event: {e}"),
                    false,
                ));
            }
            Ok(None) => {
                return Err(fail(
                    guard,
                    "stream ended before its first event".into(),
                    false,
                ));
            }
            Err(_) => {
                return Err(fail(
                    guard,
                    format!("no stream event within {:?}", params.first_event_timeout),
                    true,
                ));
            }
        };
        let mut relay = Relay {
            upstream,
            events: EventSplitter::new(MAX_EVENT_BYTES),
            ready: VecDeque::new(),
            params,
            ttft: None,
            usage: None,
            content_events: 0,
            guard: Some(guard),
            finished: false,
            cut,
            reservation,
        };
        relay.feed(&chunk);
        Ok(relay)
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.finished {
            return;
        }
        self.events.push(chunk);
        loop {
            match self.events.next_event() {
                Ok(Some(event)) => self.inspect(event),
                Ok(None) => return,
                Err(e) => return self.broken(e.to_string()),
            }
        }
    }

    fn inspect(&mut self, event: Bytes) {
        let facts = EventFacts::read(&event);
        if facts.content {
            self.content_events += 1;
            if let Some(r) = &self.reservation {
                r.progress(self.params.prompt_estimate, self.content_events);
            }
            if self.ttft.is_none() {
                self.ttft = Some(self.params.arrival.elapsed());
                if let Some(g) = self.guard.as_mut() {
                    g.first_token();
                }
            }
        }
        if facts.usage.is_some() {
            self.usage = facts.usage;
        }
        if self.params.strip_usage && facts.usage_only {
            return;
        }
        self.ready.push_back(event);
    }

    fn finish(&mut self, outcome: Outcome) {
        self.finished = true;
        if let (
            Some(r),
            Outcome::Success {
                prompt_tokens,
                completion_tokens,
                ..
            },
        ) = (&self.reservation, &outcome)
        {
            r.answered(*prompt_tokens, *completion_tokens);
        } else if let (Some(r), Some(u)) = (&self.reservation, self.usage) {
            r.progress(u.prompt_tokens, u.completion_tokens);
        }
        if let Some(g) = self.guard.take() {
            g.finish(outcome);
        }
    }

    fn success(&self) -> Outcome {
        let usage = self.usage.unwrap_or(crate::backend::Usage {
            prompt_tokens: self.params.prompt_estimate,
            completion_tokens: self.content_events,
            cached_tokens: None,
        });
        Outcome::Success {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            first_token: self.ttft,
            latency: self.params.arrival.elapsed(),
        }
    }

    async fn next_bytes(&mut self) -> Option<Bytes> {
        loop {
            // Everything already complete goes out at once, as one write.
            match self.ready.len() {
                0 => {}
                1 => return self.ready.pop_front(),
                _ => {
                    let len = self.ready.iter().map(Bytes::len).sum();
                    let mut out = BytesMut::with_capacity(len);
                    for ev in self.ready.drain(..) {
                        out.extend_from_slice(&ev);
                    }
                    return Some(out.freeze());
                }
            }
            if self.finished {
                return None;
            }
            let until = (Instant::now() + self.params.idle_timeout).min(self.params.deadline);
            let mut cut = self.cut.clone();
            let cut_now = async move {
                // the guard the wait returns is not `Send`: dropped before returning
                let _ = cut.wait_for(|c| *c).await.map(|_| ());
            };
            let next = tokio::select! {
                next = tokio::time::timeout_at(until, self.upstream.next()) => next,
                () = cut_now => {
                    self.broken("the gateway is shutting down and its grace period ran out".into());
                    continue;
                }
            };
            match next {
                Ok(Some(Ok(chunk))) => self.feed(&chunk),
                Ok(None) => {
                    if let Some(rest) = self.events.finish() {
                        self.inspect(rest);
                    }
                    let result = self.success();
                    self.finish(result);
                }
                Ok(Some(Err(e))) => self.broken(format!("the engine's stream broke: {e}")),
                Err(_) => self.broken("the engine's stream stalled past its timeout".into()),
            }
        }
    }

    fn broken(&mut self, why: String) {
        tracing::warn!(reason = %why, "stream broken after first byte");
        self.events.clear();
        let err = ApiError::upstream(why);
        self.ready.push_back(Bytes::from(err.sse_event()));
        self.finish(Outcome::StreamBroken);
    }

    /// The client-facing body stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        futures_util::stream::unfold(self, |mut relay| async move {
            relay.next_bytes().await.map(|b| (Ok(b), relay))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_detection_skips_empty_role_chunks() {
        assert!(!has_content(
            br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(has_content(br#"{"choices":[{"delta":{"content":"hi"}}]}"#));
        assert!(has_content(br#"{"choices":[{"text": "x"}]}"#));
        assert!(!has_content(
            br#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
    }

    #[test]
    fn events_split_on_blank_lines_of_either_style() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b", 0), Some((7, 2)));
        assert_eq!(find_event_end(b"data: a\r\n\r\n", 0), Some((7, 4)));
        assert_eq!(find_event_end(b"data: a\n", 0), None);
        // searched from where the last search stopped, a separator split across chunks
        // is still found
        assert_eq!(find_event_end(b"data: a\r\n\r\n", 9), Some((7, 4)));
        assert_eq!(find_event_end(b"data: a\n\n", 8), Some((7, 2)));
        assert_eq!(find_event_end(b"data: a\n\nb", 11), None, "past the end");
        assert_eq!(
            data_of(b"event: x\ndata: {\"a\":1}\n\n"),
            Some(&b"{\"a\":1}"[..])
        );
    }

    fn split_all(s: &mut EventSplitter, chunk: &[u8]) -> Result<Vec<Bytes>, EventTooLong> {
        s.push(chunk);
        let mut out = Vec::new();
        while let Some(ev) = s.next_event()? {
            out.push(ev);
        }
        Ok(out)
    }

    #[test]
    fn an_event_longer_than_the_limit_is_refused_even_when_it_arrives_whole() {
        // found by the sse_relay fuzz target: the bound was checked only on the unfinished
        // rest, so an over-long event that came complete in one read went through
        let mut s = EventSplitter::new(16);
        assert_eq!(
            split_all(&mut s, b"data: 12345678\n\n").unwrap().len(),
            1,
            "16 bytes"
        );
        assert_eq!(
            split_all(&mut s, b"data: 123456789\n\ndata: x\n\n"),
            Err(EventTooLong { limit: 16 })
        );
        assert_eq!(s.pending(), 0, "nothing kept of it");
        let mut s = EventSplitter::new(16);
        assert_eq!(
            split_all(&mut s, b"data: 1234567890"),
            Ok(vec![]),
            "16 bytes, unfinished"
        );
        assert_eq!(split_all(&mut s, b"1"), Err(EventTooLong { limit: 16 }));
    }

    #[test]
    fn a_chunk_of_many_events_is_split_in_linear_time() {
        // with one search per separator style, each event rescanned the rest of the chunk
        // for `\r\n\r\n`: this chunk took over ten minutes in a debug build
        let chunk = b"data: x\n\n".repeat(1 << 17);
        let mut s = EventSplitter::new(MAX_EVENT_BYTES);
        let events = split_all(&mut s, &chunk).unwrap();
        assert_eq!(events.len(), 1 << 17);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn facts_come_from_the_first_data_line() {
        let usage = EventFacts::read(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
        );
        assert!(usage.usage_only && !usage.content);
        assert_eq!(usage.usage.map(|u| u.completion_tokens), Some(2));
        let text = EventFacts::read(b"event: x\ndata: {\"choices\":[{\"text\":\"a\"}]}\n\n");
        assert!(text.content && !text.usage_only && text.usage.is_none());
        assert_eq!(EventFacts::read(b"data: [DONE]\n\n"), EventFacts::default());
        assert_eq!(EventFacts::read(b": keep-alive\n\n"), EventFacts::default());
    }
}
