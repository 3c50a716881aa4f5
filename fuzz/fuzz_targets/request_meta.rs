//! Request headers and body into `RequestMeta`, as the OpenAI routes read them.
//!
//! Input: header lines (`name: value`), a blank line, then the body. Checks that every
//! header error is a 400 naming a known header, that what parses keeps the documented
//! bounds, that the body forwarded for a stream still parses and asks for usage, and that
//! the resulting `RequestMeta` can be queued and placed by the core scheduler.
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use inferplane_core::{InstanceSpec, Priority, RequestId, RequestMeta, Time};
use inferplane_gateway::meta::{BodyMeta, HeaderMeta, body_with_usage, headers};
use libfuzzer_sys::fuzz_target;

const KNOWN: [&str; 7] = [
    headers::REQUEST_ID,
    headers::PRIORITY,
    headers::SLO_MS,
    headers::SLO_TTFT_MS,
    headers::COST_BUDGET,
    headers::SESSION_ID,
    headers::PARALLELISM_HINT,
];

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(p) => (&data[..p], &data[p + 2..]),
        None => (data, b""),
    }
}

fn header_map(head: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

fn check_headers(map: &HeaderMap) -> Option<HeaderMeta> {
    match HeaderMeta::parse(map, Priority::Normal, || "generated".to_string()) {
        Ok(h) => {
            assert!(!h.request_id.is_empty() && h.request_id.len() <= 256);
            assert!(h.deadline.is_none_or(|d| !d.is_zero()));
            assert!(h.ttft_target.is_none_or(|d| !d.is_zero()));
            assert!(h.cost_budget.is_none_or(|b| b.is_finite() && b > 0.0));
            assert!(h.session.as_deref().is_none_or(|s| !s.is_empty()));
            Some(h)
        }
        Err(e) => {
            assert_eq!(e.status, 400, "{e:?}");
            let param = e.param.as_deref().expect("a header error names the header");
            assert!(KNOWN.contains(&param), "{param}");
            None
        }
    }
}

fn check_body(body: &[u8]) -> Option<(BodyMeta<'_>, Bytes)> {
    let meta = BodyMeta::parse(body).ok()?;
    let prompt = meta.prompt_json();
    assert_eq!(
        meta.prompt_tokens_estimate() as usize,
        prompt.len().div_ceil(4).min(u32::MAX as usize)
    );
    assert_eq!(meta.prefix_hash().is_some(), !prompt.is_empty());
    assert!(prompt.len() <= body.len());
    assert_eq!(
        meta.max_tokens(),
        meta.max_completion_tokens.or(meta.max_tokens)
    );
    let bytes = Bytes::copy_from_slice(body);
    let forwarded = match body_with_usage(&bytes, &meta) {
        Ok(f) => f,
        Err(e) => {
            assert_eq!(e.status, 400, "{e:?}");
            return Some((meta, bytes));
        }
    };
    // What goes to the engine is still a valid body for the same model and prompt, and
    // asks for usage, unless the client's own `stream_options` is not an object (then the
    // engine refuses it, as it would without the gateway).
    let again = BodyMeta::parse(&forwarded)
        .unwrap_or_else(|e| panic!("forwarded body does not parse: {e:?}"));
    assert_eq!(again.model, meta.model);
    // (re-serialised when the client's own `stream_options` is merged: same JSON value)
    let value = |raw: &str| serde_json::from_str::<serde_json::Value>(raw).ok();
    assert_eq!(value(again.prompt_json()), value(meta.prompt_json()));
    assert_eq!(again.max_tokens(), meta.max_tokens());
    let own_is_object_or_absent = match meta.stream_options {
        None => true,
        Some(raw) => matches!(
            serde_json::from_str::<serde_json::Value>(raw.get()),
            Ok(serde_json::Value::Object(_) | serde_json::Value::Null)
        ),
    };
    if own_is_object_or_absent {
        assert!(again.wants_usage(), "forwarded body does not ask for usage");
    }
    Some((meta, bytes))
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = split(data);
    let map = header_map(head);
    let hm = check_headers(&map);
    let bm = check_body(body);
    // The request as the OpenAI route builds it, queued and placed by the core.
    if let (Some(hm), Some((bm, _))) = (hm, bm) {
        let prompt_tokens = bm.prompt_tokens_estimate();
        let meta = RequestMeta {
            id: RequestId(1),
            model: bm.model.clone(),
            priority: hm.priority,
            deadline: hm.deadline,
            ttft_target: hm.ttft_target,
            cost_budget: hm.cost_budget,
            max_tokens: bm.max_tokens().unwrap_or(256),
            max_tokens_requested: bm.max_tokens(),
            prompt_tokens,
            session: hm.session.clone().or_else(|| bm.user.clone()),
            prefix_hash: bm.prefix_hash(),
            prefix_blocks: bm.prefix_blocks(),
            parallelism_hint: hm.parallelism_hint,
            arrival: Time::from_millis(5),
            tenant: None,
        };
        let instances = [InstanceSpec::new(
            "a",
            "http://127.0.0.1:1",
            bm.model.clone(),
            4,
        )];
        inferplane_fuzz::drive(
            inferplane_fuzz::Pool {
                config: Default::default(),
                instances: &instances,
                engine: Default::default(),
                load: Default::default(),
            },
            [meta],
        );
    }
});
