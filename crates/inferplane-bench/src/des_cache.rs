//! What the simulation tells a `prefix` strategy about each engine's KV cache: the three
//! [`PrefixMode`]s.
//!
//! - **approximate**: nothing beyond what the strategy records itself at placement (the
//!   gateway without KV events);
//! - **precise**: each simulated engine records its cache changes; after every engine
//!   step the DES drains them ([`Engine::drain_cache_events`]) and, after the cluster's
//!   [`Limits::kv_event_delay`](crate::cluster::Limits::kv_event_delay) (default
//!   [`DEFAULT_KV_EVENT_DELAY`]), delivers them in order to
//!   [`Scheduler::cache_changed`] as [`CacheChange`]s, as the gateway's KV-event subscriber
//!   would;
//! - **oracle**: the same changes delivered at the end of the step that made them, with no
//!   delay: perfect knowledge of every engine's cache under the same scoring, the upper
//!   bound the other two are measured against.
//!
//! The strategy records placements in all three modes (that is the core's design: the
//! engine's account corrects them).

use inferplane_core::prefix::CacheChange;
use inferplane_core::{InstanceId, Scheduler, Time};
use inferplane_sim::{CacheEvent, Engine};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// The default delay from the end of an engine step to its cache changes reaching the
/// strategy: vLLM publishes one batch per step (at its end), then the ZMQ hop to the
/// gateway's subscriber and its dispatcher's channel; 20 ms is a conservative sum for one
/// data centre (a few ms each, plus a step's worth of batching in the dispatcher).
pub const DEFAULT_KV_EVENT_DELAY: Duration = Duration::from_millis(20);

/// What a `prefix` strategy knows of the engines' caches (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixMode {
    /// Placements only.
    #[default]
    Approximate,
    /// The engines' cache changes, after the KV-event delay.
    Precise,
    /// The engines' cache changes at once.
    Oracle,
}

impl PrefixMode {
    /// The routing word of a policy choice for `prefix` in this mode: `prefix`,
    /// `prefix_precise`, `prefix_oracle`.
    pub fn routing_word(self) -> &'static str {
        match self {
            PrefixMode::Approximate => "prefix",
            PrefixMode::Precise => "prefix_precise",
            PrefixMode::Oracle => "prefix_oracle",
        }
    }

    /// Reads a routing word: `prefix_precise` and `prefix_oracle` are `prefix` in those
    /// modes; any other word is itself, approximate.
    pub fn split_routing(word: &str) -> (&str, PrefixMode) {
        match word {
            "prefix_precise" => ("prefix", PrefixMode::Precise),
            "prefix_oracle" => ("prefix", PrefixMode::Oracle),
            w => (w, PrefixMode::Approximate),
        }
    }

    /// Whether engines record their cache changes in this mode.
    pub fn uses_events(self) -> bool {
        self != PrefixMode::Approximate
    }
}

/// The cache changes on their way from the engines to the strategy.
#[derive(Debug)]
pub(crate) struct CacheFeed {
    mode: PrefixMode,
    delay: Duration,
    /// Per instance, the drained steps not yet delivered, oldest first.
    queued: Vec<VecDeque<Vec<CacheEvent>>>,
    spare: Vec<Vec<CacheEvent>>,
    hashes: Vec<u64>,
}

impl CacheFeed {
    /// A feed for `instances` engines.
    pub(crate) fn new(mode: PrefixMode, delay: Duration, instances: usize) -> Self {
        CacheFeed {
            mode,
            delay,
            queued: (0..instances).map(|_| VecDeque::new()).collect(),
            spare: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// Sets `engine` recording when this mode needs its changes.
    pub(crate) fn prepare(&self, engine: &mut Engine) {
        if self.mode.uses_events() {
            engine.record_cache_events();
        }
    }

    /// After a step of engine `g` ended at `now`: drains its changes; in oracle mode
    /// delivers them at once, in precise mode queues them and returns when to deliver
    /// (the caller then calls [`CacheFeed::deliver`] at that time).
    pub(crate) fn after_step(
        &mut self,
        g: usize,
        engine: &mut Engine,
        sched: &mut Scheduler<u32>,
        id: &InstanceId,
        now: Time,
    ) -> Option<Time> {
        if !self.mode.uses_events() {
            return None;
        }
        let mut batch = self.spare.pop().unwrap_or_default();
        engine.drain_cache_events(&mut batch);
        if batch.is_empty() {
            self.spare.push(batch);
            return None;
        }
        if self.mode == PrefixMode::Oracle {
            apply(&batch, sched, id, now, &mut self.hashes);
            batch.clear();
            self.spare.push(batch);
            return None;
        }
        self.queued[g].push_back(batch);
        Some(now + self.delay)
    }

    /// Delivers engine `g`'s oldest queued step (one per [`CacheFeed::after_step`] that
    /// returned a time; equal delays keep them in order).
    pub(crate) fn deliver(
        &mut self,
        g: usize,
        sched: &mut Scheduler<u32>,
        id: &InstanceId,
        now: Time,
    ) {
        if let Some(mut batch) = self.queued[g].pop_front() {
            apply(&batch, sched, id, now, &mut self.hashes);
            batch.clear();
            self.spare.push(batch);
        }
    }
}

/// Hands `events` to the scheduler in order, each run of stores (or removals) as one
/// change.
fn apply(
    events: &[CacheEvent],
    sched: &mut Scheduler<u32>,
    id: &InstanceId,
    now: Time,
    hashes: &mut Vec<u64>,
) {
    let mut i = 0;
    while i < events.len() {
        hashes.clear();
        match &events[i] {
            CacheEvent::Cleared => {
                sched.cache_changed(id, CacheChange::Cleared, now);
                i += 1;
            }
            CacheEvent::Stored { .. } => {
                while let Some(CacheEvent::Stored { hash, .. }) = events.get(i) {
                    hashes.push(*hash);
                    i += 1;
                }
                sched.cache_changed(id, CacheChange::Stored(hashes), now);
            }
            CacheEvent::Removed { .. } => {
                while let Some(CacheEvent::Removed { hash }) = events.get(i) {
                    hashes.push(*hash);
                    i += 1;
                }
                sched.cache_changed(id, CacheChange::Removed(hashes), now);
            }
        }
    }
}
