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

mod events;

pub use events::{EventFacts, EventSplitter, EventTooLong};

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
