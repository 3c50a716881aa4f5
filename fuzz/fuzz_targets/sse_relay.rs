//! The relay's server-sent-event reading: `EventSplitter` (how the relay cuts the engine's
//! byte stream into events, whatever the chunking) and `EventFacts` (what it reads from
//! each event).
//!
//! Input: one byte choosing the event-size limit (small, so the bound is reached), four
//! bytes choosing the chunk sizes, then the stream. Checks: every event ends at its first
//! blank line and is within the limit; the bytes held never pass the limit; events plus
//! the rest give back the stream; and the result does not depend on the chunking.
#![no_main]

use bytes::Bytes;
use inferplane_gateway::relay::{EventFacts, EventSplitter, EventTooLong};
use libfuzzer_sys::fuzz_target;

/// The first blank line in `b`, as (position, separator length): the definition the
/// splitter must agree with, written the obvious way.
fn first_end(b: &[u8]) -> Option<(usize, usize)> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if b[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

#[derive(Debug, PartialEq)]
struct Run {
    events: Vec<Bytes>,
    end: Result<Option<Bytes>, EventTooLong>,
}

fn run(stream: &[u8], limit: usize, chunk_lens: &[usize]) -> Run {
    let mut s = EventSplitter::new(limit);
    let mut events = Vec::new();
    let mut at = 0;
    let mut lens = chunk_lens.iter().cycle();
    while at < stream.len() {
        let n = (*lens.next().expect("cycle")).min(stream.len() - at);
        s.push(&stream[at..at + n]);
        at += n;
        loop {
            match s.next_event() {
                Ok(Some(ev)) => {
                    let (p, sep) = first_end(&ev).expect("an event ends with a blank line");
                    assert_eq!(p + sep, ev.len(), "cut at the first blank line");
                    assert!(ev.len() <= limit, "event of {} > {limit}", ev.len());
                    check_facts(&ev);
                    events.push(ev);
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(e.limit, limit);
                    assert_eq!(s.pending(), 0, "an error empties the buffer");
                    return Run {
                        events,
                        end: Err(e),
                    };
                }
            }
        }
        assert!(s.pending() <= limit, "holds {} > {limit}", s.pending());
        assert!(first_end(&stream[at - s.pending()..at]).is_none());
    }
    let rest = s.finish();
    assert_eq!(s.pending(), 0);
    if let Some(r) = &rest {
        assert!(first_end(r).is_none());
        check_facts(r);
    }
    let mut all: Vec<u8> = events.iter().flat_map(|e| e.iter().copied()).collect();
    all.extend_from_slice(rest.as_deref().unwrap_or_default());
    assert_eq!(all, stream, "events and the rest give back the stream");
    Run {
        events,
        end: Ok(rest),
    }
}

fn check_facts(event: &[u8]) {
    let f = EventFacts::read(event);
    if f.usage_only {
        assert!(f.usage.is_some());
    }
    if f.usage.is_some() || f.content {
        assert!(
            event.windows(5).any(|w| w == b"data:"),
            "facts only from data"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [l, a, b, c, d, stream @ ..] = data else {
        return;
    };
    let limit = 16 + usize::from(*l) * 8;
    let lens: Vec<usize> = [a, b, c, d]
        .iter()
        .map(|x| usize::from(**x % 64) + 1)
        .collect();
    let chunked = run(stream, limit, &lens);
    let whole = run(stream, limit, &[stream.len().max(1)]);
    assert_eq!(chunked, whole, "the chunking changed the events");
});
