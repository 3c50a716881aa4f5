//! The configuration file: `FileConfig::parse` then `validate`, and the core scheduler
//! built from every pool of a configuration that validates.
//!
//! Checks: a parse or validation error never panics; a configuration that validates keeps
//! what validation promises (engine URLs are `http://` base URLs, instance ids unique,
//! limits at least 1); and each pool's scheduler and instances take requests without
//! panicking, as the dispatcher would build them.
#![no_main]

use inferplane_core::{Priority, RequestId, RequestMeta, Time};
use inferplane_gateway::FileConfig;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = FileConfig::parse(text, "fuzz.toml") else {
        return;
    };
    let cfg = match file.validate() {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
            return;
        }
    };
    assert!(cfg.max_body_bytes >= 1024);
    assert!(cfg.default_max_tokens >= 1);
    let mut ids = HashSet::new();
    for pool in &cfg.pools {
        assert!(!pool.model.trim().is_empty());
        assert!(pool.scheduler.max_queue >= 1);
        for inst in &pool.instances {
            assert!(inst.url.starts_with("http://"), "{}", inst.url);
            assert!(!inst.url.ends_with('/') && !inst.url[7..].contains('/'));
            assert!(ids.insert(inst.id.clone()), "duplicate id {:?}", inst.id);
            assert!(inst.max_inflight.is_none_or(|m| m >= 1));
            assert!(inst.layout.gpu_count() >= 1);
        }
        let engine = cfg.engine_for(&pool.model);
        let requests = (0..3u64).map(|i| RequestMeta {
            id: RequestId(i),
            model: pool.model.clone(),
            priority: [Priority::Critical, Priority::Normal, Priority::Low][i as usize],
            deadline: Some(std::time::Duration::from_millis(500 * (i + 1))),
            ttft_target: None,
            cost_budget: None,
            max_tokens: cfg.default_max_tokens,
            max_tokens_requested: None,
            prompt_tokens: 100,
            session: Some(format!("s{i}")),
            prefix_hash: Some(i),
            prefix_blocks: std::sync::Arc::from([7, 100 + i]),
            parallelism_hint: None,
            arrival: Time::ZERO,
            tenant: Some(inferplane_core::TenantId(i as u32 % 2)),
        });
        inferplane_fuzz::drive(
            inferplane_fuzz::Pool {
                config: cfg.scheduler_for(&pool.model),
                instances: &pool.instances,
                engine,
                load: Default::default(),
            },
            requests,
        );
    }
});
