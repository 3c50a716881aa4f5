use super::*;
use axum::http::HeaderValue;
use serde_json::json;

fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    m
}

#[test]
fn defaults_make_unmodified_clients_work() {
    let m = HeaderMeta::parse(&HeaderMap::new(), Priority::Normal, || "gen-1".into()).unwrap();
    assert_eq!(m.request_id, "gen-1");
    assert_eq!(m.priority, Priority::Normal);
    assert_eq!(
        (m.deadline, m.ttft_target, m.cost_budget),
        (None, None, None)
    );
}

#[test]
fn every_header_is_read() {
    let m = HeaderMeta::parse(
        &h(&[
            ("x-request-id", "abc"),
            ("x-priority", "High"),
            ("x-slo-ms", "2500"),
            ("x-slo-ttft-ms", "300"),
            ("x-cost-budget", "0.01"),
            ("x-session-id", "user-7"),
            ("x-parallelism-hint", "tp"),
        ]),
        Priority::Normal,
        || unreachable!(),
    )
    .unwrap();
    assert_eq!(m.request_id, "abc");
    assert_eq!(m.priority, Priority::High);
    assert_eq!(m.deadline, Some(Duration::from_millis(2500)));
    assert_eq!(m.ttft_target, Some(Duration::from_millis(300)));
    assert_eq!(m.cost_budget, Some(0.01));
    assert_eq!(m.session.as_deref(), Some("user-7"));
    assert_eq!(m.parallelism_hint, Some(ParallelismKind::Tp));
}

#[test]
fn invalid_headers_are_400s_that_name_the_header_and_why() {
    for (name, value, needle) in [
        ("x-priority", "urgent", "critical, high, normal, low"),
        ("x-slo-ms", "soon", "whole number of milliseconds"),
        ("x-slo-ms", "0", "positive"),
        ("x-slo-ttft-ms", "-5", "whole number"),
        ("x-cost-budget", "free", "positive number of US dollars"),
        ("x-cost-budget", "-1", "positive"),
        ("x-parallelism-hint", "tensor", "tp, pp, dp, ep, hybrid"),
        ("x-session-id", "", "must not be empty"),
    ] {
        let err =
            HeaderMeta::parse(&h(&[(name, value)]), Priority::Normal, || "x".into()).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some(name));
        assert!(
            err.message.contains(name) || name == "x-session-id",
            "{err:?}"
        );
        assert!(
            err.message.contains(needle),
            "{name}={value}: {}",
            err.message
        );
    }
}

#[test]
fn prefix_blocks_equal_the_simulators_for_chats_and_completions() {
    let long = "a shared system prompt of some length ".repeat(20);
    for body in [
        json!({"model":"m","messages":[{"role":"system","content":long},
            {"role":"user","content":[{"type":"text","text":"hi "},{"type":"image_url"},
            {"type":"text","text":"there"}]},{"role":"assistant"}]}),
        json!({"model":"m","prompt":long}),
        json!({"model":"m","prompt":[long]}),
        json!({"model":"m","prompt":(0..50).collect::<Vec<u32>>()}),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        let meta = BodyMeta::parse(&bytes).unwrap();
        let sim = if body.get("messages").is_some() {
            let req: inferplane_sim::openai::ChatRequest =
                serde_json::from_value(body.clone()).unwrap();
            inferplane_sim::tokens::block_hashes(&req.prompt_text())
        } else {
            match serde_json::from_value(body["prompt"].clone()).unwrap() {
                inferplane_sim::openai::Prompt::Text(t) => inferplane_sim::tokens::block_hashes(&t),
                inferplane_sim::openai::Prompt::Texts(ts) => {
                    inferplane_sim::tokens::block_hashes(&ts[0])
                }
                inferplane_sim::openai::Prompt::Ids(ids) => {
                    inferplane_sim::tokens::block_hashes_of_ids(&ids)
                }
                inferplane_sim::openai::Prompt::IdBatches(_) => unreachable!(),
            }
        };
        assert!(!sim.is_empty());
        assert_eq!(&meta.prefix_blocks()[..], &sim[..], "{body}");
    }
}

#[test]
fn body_fields_parse_once_and_usage_is_requested_on_streams() {
    let body = bytes::Bytes::from_static(
        br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}],"user":"u1","max_tokens":5}"#,
    );
    let meta = BodyMeta::parse(&body).unwrap();
    assert_eq!(meta.model, "m");
    assert_eq!(meta.max_tokens(), Some(5));
    assert!(meta.prompt_tokens_estimate() > 5);
    assert!(meta.prefix_hash().is_some());
    assert!(meta.prefix_blocks().is_empty(), "shorter than one block");
    assert!(!meta.wants_usage());
    let fwd = body_with_usage(&body, &meta).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&fwd).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["messages"][0]["content"], "hello", "rest untouched");

    // OpenAI accepts an explicit null: treated as absent
    let null = bytes::Bytes::from_static(
        br#"{"model":"m","stream":true,"stream_options":null,"prompt":"x"}"#,
    );
    let meta = BodyMeta::parse(&null).unwrap();
    assert!(!meta.wants_usage());
    let v: serde_json::Value =
        serde_json::from_slice(&body_with_usage(&null, &meta).unwrap()).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);

    let own = bytes::Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"continuous_usage_stats":false},"prompt":"x"}"#);
    let meta = BodyMeta::parse(&own).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&body_with_usage(&own, &meta).unwrap()).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["stream_options"]["continuous_usage_stats"], false);

    let err = BodyMeta::parse(b"{\"stream\":true}").unwrap_err();
    assert_eq!(err.param.as_deref(), Some("model"));
    assert!(
        BodyMeta::parse(b"not json")
            .unwrap_err()
            .message
            .contains("invalid request body")
    );
}

#[test]
fn usage_is_requested_when_only_a_nested_key_or_the_prompt_says_stream_options() {
    // found by the request_meta fuzz target: the words "stream_options" anywhere in
    // the body (a key inside a message, a quoted phrase in the prompt) made the gateway
    // think the client had set them, and forward the stream without asking for usage
    for body in [
        &br#"{"model":"m","stream":true,"messages":[{"role":"user","stream_options":{"include_usage":true},"content":"x"}]}"#[..],
        &br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"say \"stream_options\""}]}"#[..],
    ] {
        let body = bytes::Bytes::copy_from_slice(body);
        let meta = BodyMeta::parse(&body).unwrap();
        let fwd = body_with_usage(&body, &meta).unwrap();
        let again = BodyMeta::parse(&fwd).unwrap();
        assert!(again.wants_usage(), "{}", String::from_utf8_lossy(&fwd));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(again.prompt_json()).unwrap(),
            serde_json::from_str::<serde_json::Value>(meta.prompt_json()).unwrap()
        );
    }
}

#[test]
fn an_escaped_null_stream_options_key_is_replaced_not_shadowed() {
    // `"stream\u005foptions":null` is the key `stream_options`: a second key added in
    // front of it would make the body invalid for the gateway and lose to the `null`
    // in the engine
    let body = bytes::Bytes::from_static(
        br#"{"model":"m","stream":true,"stream\u005foptions":null,"prompt":"x"}"#,
    );
    let meta = BodyMeta::parse(&body).unwrap();
    let fwd = body_with_usage(&body, &meta).unwrap();
    let again = BodyMeta::parse(&fwd).expect("one stream_options key");
    assert!(again.wants_usage(), "{}", String::from_utf8_lossy(&fwd));
}

#[test]
fn a_body_that_is_not_a_json_object_is_a_400() {
    // found by the request_meta fuzz target: `["m"]` read as a request for model `m`
    for body in [&b"[\"m\"]"[..], b" [\"m\", true]", b"\"m\"", b"", b"null"] {
        let err = BodyMeta::parse(body).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(
            err.message.contains("invalid request body"),
            "{}",
            err.message
        );
    }
    assert_eq!(BodyMeta::parse(b" \n{\"model\":\"m\"}").unwrap().model, "m");
}
