//! The Prometheus scrape parser (`scrape::parse_load`) on any text, and the core
//! scheduler fed what it read.
//!
//! Checks: every figure read is a finite, non-negative number and KV usage is within
//! 0..=1; a comment line appended changes nothing; lines the parser ignores cannot hide
//! the ones it reads; and the scheduler takes the load without panicking.
#![no_main]

use inferplane_core::{EngineLoad, InstanceSpec, Priority, RequestId, RequestMeta, Time};
use inferplane_gateway::scrape::parse_load;
use libfuzzer_sys::fuzz_target;

fn sane(l: &EngineLoad) {
    for v in [l.running, l.waiting, l.kv_usage].into_iter().flatten() {
        assert!(v.is_finite() && v >= 0.0, "{l:?}");
    }
    assert!(l.kv_usage.is_none_or(|k| k <= 1.0), "{l:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let load = parse_load(text);
    sane(&load);
    let mut more = text.to_string();
    more.push_str("\n# HELP vllm:num_requests_running x\n\n");
    assert_eq!(parse_load(&more), load, "a comment changed the reading");
    let other = format!("vllm:prompt_tokens_total{{model_name=\"m\"}} 5\n{text}");
    assert_eq!(
        parse_load(&other),
        load,
        "another metric changed the reading"
    );

    let instances = [InstanceSpec::new("a", "http://127.0.0.1:1", "m", 8)];
    let requests = (0..3).map(|i| RequestMeta {
        id: RequestId(i),
        model: "m".into(),
        priority: Priority::Normal,
        deadline: None,
        ttft_target: None,
        cost_budget: None,
        max_tokens: 16,
        max_tokens_requested: None,
        prompt_tokens: 100,
        session: None,
        prefix_hash: None,
        prefix_blocks: Default::default(),
        parallelism_hint: None,
        arrival: Time::ZERO,
        tenant: None,
    });
    inferplane_fuzz::drive(
        inferplane_fuzz::Pool {
            config: Default::default(),
            instances: &instances,
            engine: Default::default(),
            load,
        },
        requests,
    );
});
