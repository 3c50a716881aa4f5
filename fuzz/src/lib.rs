//! Helpers shared by the fuzz targets: driving the core scheduler with what a parser
//! produced, the way the gateway's dispatcher does, so that a parsed value that passes
//! validation is also shown not to panic the code that consumes it.

#![forbid(unsafe_code)]

use inferplane_core::{
    Effects, EngineInfo, EngineLoad, InstanceSpec, Outcome, RequestMeta, Scheduler,
    SchedulerConfig, Time,
};
use std::time::Duration;

/// One pool's worth of input for [`drive`].
pub struct Pool<'a> {
    /// The pool's scheduler configuration.
    pub config: SchedulerConfig,
    /// Its instances.
    pub instances: &'a [InstanceSpec],
    /// Engine facts every instance reports.
    pub engine: EngineInfo,
    /// The load every instance reports.
    pub load: EngineLoad,
}

/// Builds a scheduler for `pool`, submits `requests` and runs a few rounds of polling,
/// answering each placement with a success, as the dispatcher would.
pub fn drive(pool: Pool<'_>, requests: impl IntoIterator<Item = RequestMeta>) {
    let mut s: Scheduler<u32> = Scheduler::new(pool.config);
    let mut now = Time::ZERO;
    for spec in pool.instances {
        let id = spec.id.clone();
        if s.add_instance(spec.clone()).is_err() {
            continue;
        }
        s.set_ready(&id, true);
        s.set_engine_info(&id, pool.engine);
        s.update_load(&id, pool.load, now);
    }
    let mut effects = Effects::default();
    for (i, meta) in requests.into_iter().enumerate() {
        s.submit(meta, i as u32, now);
    }
    for round in 0..4u64 {
        s.poll(now, &mut effects);
        let next = now + Duration::from_millis(10 * (round + 1));
        for p in effects.placements.drain(..) {
            s.first_token(p.attempt, next);
            let latency = next.saturating_since(p.meta.arrival);
            s.complete(
                p.attempt,
                Outcome::Success {
                    prompt_tokens: p.meta.prompt_tokens,
                    completion_tokens: p.meta.max_tokens.min(64),
                    cached_tokens: None,
                    first_token: Some(latency),
                    latency,
                },
                next,
            );
        }
        effects.rejections.clear();
        now = match effects.wake_at.take() {
            Some(w) if w > now && w.saturating_since(now) < Duration::from_secs(3600) => w,
            _ => next,
        };
    }
}
