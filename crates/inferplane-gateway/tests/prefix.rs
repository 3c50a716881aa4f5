//! Prefix-cache routing end to end, through the gateway in front of two simulators: a
//! follow-up turn goes to the instance holding its conversation, and what routing found
//! shows in the `x-inferplane-prefix` header and in /metrics (the engine's own cached-token
//! count next to the index's expectation).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use serde_json::{Value, json};

/// A gateway over two simulators `a` and `b` (kept alive by the caller).
async fn two_sims_gateway(
    routing: &str,
) -> (inferplane_gateway::Gateway, [inferplane_sim::SimServer; 2]) {
    let (a, b) = (sim("a", MODEL).await, sim("b", MODEL).await);
    let mut f = fast_config();
    f.pools.push(
        toml::from_str(&format!(
            "model = \"{MODEL}\"\nmax_inflight = 8\nrouting = {routing}\n\
             [[instances]]\nid = \"a\"\nurl = \"{}\"\n\
             [[instances]]\nid = \"b\"\nurl = \"{}\"\n",
            a.url(),
            b.url()
        ))
        .unwrap(),
    );
    (gateway(f, 2).await, [a, b])
}

/// Posts a chat; returns (instance, the prefix header).
async fn turn(
    http: &reqwest::Client,
    gw: &inferplane_gateway::Gateway,
    messages: &[Value],
) -> (String, Option<String>) {
    let r = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": MODEL, "messages": messages, "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    (
        h("x-inferplane-instance").unwrap(),
        h("x-inferplane-prefix"),
    )
}

fn field(header: &str, key: &str) -> String {
    header
        .split("; ")
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {header}"))
        .to_string()
}

fn counter(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

#[tokio::test]
async fn follow_ups_go_to_the_instance_holding_the_conversation_and_say_so() {
    let (gw, _sims) = two_sims_gateway("{ kind = \"prefix\" }").await;
    let http = reqwest::Client::new();
    let mut homes = Vec::new();
    let mut convs: Vec<Vec<Value>> = (0..4)
        .map(|c| {
            let system = format!("conversation {c}: ").repeat(120); // ~2,000 bytes: 30+ blocks
            vec![
                json!({"role": "system", "content": system}),
                json!({"role": "user", "content": "first question"}),
            ]
        })
        .collect();
    for conv in &convs {
        let (inst, prefix) = turn(&http, &gw, conv).await;
        let prefix = prefix.expect("a prefix-routed pool says what it found");
        assert_eq!(field(&prefix, "reason"), "miss", "{prefix}");
        assert_eq!(field(&prefix, "matched"), "0");
        homes.push(inst);
    }
    assert!(
        homes.iter().any(|h| h == "a") && homes.iter().any(|h| h == "b"),
        "new conversations spread: {homes:?}"
    );
    for round in 0..2 {
        for (c, conv) in convs.iter_mut().enumerate() {
            conv.push(json!({"role": "assistant", "content": format!("answer {round}")}));
            conv.push(json!({"role": "user", "content": format!("follow-up {round}")}));
            let (inst, prefix) = turn(&http, &gw, conv).await;
            let prefix = prefix.unwrap();
            assert_eq!(inst, homes[c], "conversation {c} round {round}: {prefix}");
            assert_eq!(field(&prefix, "reason"), "hit", "{prefix}");
            let matched: u32 = field(&prefix, "matched").parse().unwrap();
            assert!(
                matched >= 480,
                "the system prompt's blocks at least: {prefix}"
            );
        }
    }
    let text = metrics_text(&gw).await;
    assert!(counter(&text, "inferplane_prefix_routes_total", "reason=\"hit\"") >= 8);
    assert!(counter(&text, "inferplane_prefix_routes_total", "reason=\"miss\"") >= 4);
    for inst in ["a", "b"] {
        let l = format!("instance=\"{inst}\"");
        let prompt = counter(&text, "inferplane_instance_prompt_tokens_total", &l);
        let cached = counter(&text, "inferplane_instance_cached_tokens_total", &l);
        let matched = counter(&text, "inferplane_instance_prefix_matched_tokens_total", &l);
        assert!(prompt > 0 && cached > 0 && matched > 0, "{inst}: {text}");
        assert!(cached <= prompt && matched <= prompt);
    }
}

#[tokio::test]
async fn pools_not_routing_by_prefix_send_no_prefix_header() {
    let (gw, _sims) = two_sims_gateway("{ kind = \"load_balanced\" }").await;
    let http = reqwest::Client::new();
    let (_, prefix) = turn(&http, &gw, &[json!({"role": "user", "content": "hi"})]).await;
    assert_eq!(prefix, None);
}
