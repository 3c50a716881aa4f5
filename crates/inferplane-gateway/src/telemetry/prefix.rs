//! Prefix-cache routing metrics:
//! - `inferplane_instance_prompt_tokens_total{model,instance}`: prompt tokens of the
//!   attempts an instance served;
//! - `inferplane_instance_cached_tokens_total{model,instance}`: of those, the tokens its
//!   engine said it served from its prefix cache (`usage.prompt_tokens_details.cached_tokens`,
//!   when the engine reports it): cached over prompt is the instance's real hit rate;
//! - `inferplane_instance_prefix_matched_tokens_total{model,instance}`: the tokens the
//!   gateway's prefix index expected cached there when it placed them (pools routing by
//!   `prefix`): matched over cached tells how well the index tracks the engines;
//! - `inferplane_prefix_routes_total{model,reason}`: placements of a `prefix` pool by why
//!   the instance was chosen (`hit`, `spread`, `miss`, `unhashed`).

use super::{InstanceLabels, ReasonLabels};
use inferplane_core::route::{PrefixNote, PrefixReason};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The reasons a placement can carry, in label order.
const REASONS: [PrefixReason; 4] = [
    PrefixReason::Hit,
    PrefixReason::Spread,
    PrefixReason::Miss,
    PrefixReason::Unhashed,
];

/// The families, shared by every pool and instance.
#[derive(Debug, Clone, Default)]
pub(super) struct PrefixFamilies {
    prompt: Family<InstanceLabels, Counter>,
    cached: Family<InstanceLabels, Counter>,
    matched: Family<InstanceLabels, Counter>,
    routes: Family<ReasonLabels, Counter>,
}

impl PrefixFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "inferplane_instance_prompt_tokens",
            "Prompt tokens of the attempts an instance served",
            self.prompt.clone(),
        );
        r.register(
            "inferplane_instance_cached_tokens",
            "Prompt tokens the engine served from its prefix cache (as its usage reports)",
            self.cached.clone(),
        );
        r.register(
            "inferplane_instance_prefix_matched_tokens",
            "Prompt tokens the prefix index expected cached on the instance at placement",
            self.matched.clone(),
        );
        r.register(
            "inferplane_prefix_routes",
            "Placements of prefix-routed pools, by why the instance was chosen",
            self.routes.clone(),
        );
    }

    pub(super) fn instance(&self, labels: &InstanceLabels) -> InstancePrefix {
        InstancePrefix {
            prompt: self.prompt.get_or_create(labels).clone(),
            cached: self.cached.get_or_create(labels).clone(),
            matched: self.matched.get_or_create(labels).clone(),
        }
    }

    pub(super) fn pool(&self, model: &str) -> PoolPrefix {
        PoolPrefix {
            routes: REASONS.map(|r| {
                self.routes
                    .get_or_create(&ReasonLabels {
                        model: model.to_string(),
                        reason: r.as_str(),
                    })
                    .clone()
            }),
        }
    }

    pub(super) fn remove(&self, labels: &InstanceLabels) {
        for f in [&self.prompt, &self.cached, &self.matched] {
            f.remove(labels);
        }
    }
}

/// One instance's prefix counters.
#[derive(Debug, Clone)]
pub struct InstancePrefix {
    prompt: Counter,
    cached: Counter,
    matched: Counter,
}

impl InstancePrefix {
    /// Counts a served attempt: its prompt tokens and what the engine said was cached.
    pub fn served(&self, prompt_tokens: u32, cached_tokens: Option<u32>) {
        self.prompt.inc_by(u64::from(prompt_tokens));
        if let Some(c) = cached_tokens {
            self.cached.inc_by(u64::from(c));
        }
    }

    /// Counts what the prefix index expected cached when it placed an attempt here.
    pub fn matched(&self, tokens: u32) {
        self.matched.inc_by(u64::from(tokens));
    }
}

/// One pool's placements by reason.
#[derive(Debug, Clone)]
pub struct PoolPrefix {
    routes: [Counter; REASONS.len()],
}

impl PoolPrefix {
    /// Counts one placement of a prefix-routed pool.
    pub fn placed(&self, note: &PrefixNote) {
        if let Some(i) = REASONS.iter().position(|r| *r == note.reason) {
            self.routes[i].inc();
        }
    }
}
