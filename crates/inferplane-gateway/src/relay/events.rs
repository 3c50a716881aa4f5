//! Reading an engine's server-sent events: [`EventSplitter`] splits the stream into
//! events (an end searched for only in new bytes, an event over the limit refused), and
//! [`EventFacts`] says what one event carries (content, usage).

use bytes::{Bytes, BytesMut};

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
    /// A splitter for events of at most `limit` bytes (the relay's is [`super::MAX_EVENT_BYTES`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::MAX_EVENT_BYTES;

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
