//! Per-instance metrics of the KV cache events the gateway consumes (precise prefix
//! routing): `inferplane_kv_events_total{model,instance,kind}` (blocks stored, removed and
//! not placed; cache clears), `inferplane_kv_event_losses_total{model,instance,reason}`
//! (times the instance's entries were dropped: gap, restarted, undecodable, overflow),
//! `inferplane_kv_event_blocks{model,instance}` (engine blocks the gateway can map to its
//! own hashes now) and `inferplane_kv_event_subscribers` (subscriber tasks running).
//! Handles are resolved once per instance; label values come from enums.

use super::InstanceLabels;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What `inferplane_kv_events_total` counts, by `kind`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum KvEventKind {
    /// Blocks of `BlockStored` events indexed.
    stored,
    /// Blocks of `BlockRemoved` events taken out of the index.
    removed,
    /// `AllBlocksCleared` events.
    cleared,
    /// Blocks of `BlockStored` events that could not be placed (unknown parent, a block
    /// size other than 16, a LoRA adapter, token ids that do not fill the blocks).
    unplaced,
}

impl KvEventKind {
    /// All values, for pre-resolving handles.
    pub const ALL: [KvEventKind; 4] = [
        KvEventKind::stored,
        KvEventKind::removed,
        KvEventKind::cleared,
        KvEventKind::unplaced,
    ];
}

/// Why an instance's entries were dropped, the `reason` of
/// `inferplane_kv_event_losses_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum KvLossReason {
    /// Batches were missed and replay could not fill them.
    gap,
    /// The engine's sequence went backwards: it restarted.
    restarted,
    /// A message or payload could not be decoded.
    undecodable,
    /// The gateway fell behind (its per-instance queue or hash map was full).
    overflow,
}

impl KvLossReason {
    /// All values, for pre-resolving handles.
    pub const ALL: [KvLossReason; 4] = [
        KvLossReason::gap,
        KvLossReason::restarted,
        KvLossReason::undecodable,
        KvLossReason::overflow,
    ];
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabels {
    model: String,
    instance: String,
    kind: KvEventKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LossLabels {
    model: String,
    instance: String,
    reason: KvLossReason,
}

/// The families, shared by every instance.
#[derive(Debug, Clone, Default)]
pub(super) struct KvFamilies {
    events: Family<KindLabels, Counter>,
    losses: Family<LossLabels, Counter>,
    blocks: Family<InstanceLabels, Gauge>,
    subscribers: Gauge,
}

impl KvFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "inferplane_kv_events",
            "KV cache events consumed: blocks stored, removed, not placed; cache clears",
            self.events.clone(),
        );
        r.register(
            "inferplane_kv_event_losses",
            "Times an instance's prefix entries were dropped because its events were lost",
            self.losses.clone(),
        );
        r.register(
            "inferplane_kv_event_blocks",
            "Engine blocks the gateway can map to its own hashes, per instance",
            self.blocks.clone(),
        );
        r.register(
            "inferplane_kv_event_subscribers",
            "KV event subscriber tasks running",
            self.subscribers.clone(),
        );
    }

    pub(super) fn handle(&self, labels: &InstanceLabels) -> KvEventMetrics {
        let (model, instance) = (&labels.model, &labels.instance);
        KvEventMetrics {
            events: KvEventKind::ALL.map(|kind| {
                self.events
                    .get_or_create(&KindLabels {
                        model: model.clone(),
                        instance: instance.clone(),
                        kind,
                    })
                    .clone()
            }),
            losses: KvLossReason::ALL.map(|reason| {
                self.losses
                    .get_or_create(&LossLabels {
                        model: model.clone(),
                        instance: instance.clone(),
                        reason,
                    })
                    .clone()
            }),
            blocks: self.blocks.get_or_create(labels).clone(),
            subscribers: self.subscribers.clone(),
        }
    }

    pub(super) fn remove(&self, labels: &InstanceLabels) {
        for kind in KvEventKind::ALL {
            self.events.remove(&KindLabels {
                model: labels.model.clone(),
                instance: labels.instance.clone(),
                kind,
            });
        }
        for reason in KvLossReason::ALL {
            self.losses.remove(&LossLabels {
                model: labels.model.clone(),
                instance: labels.instance.clone(),
                reason,
            });
        }
        self.blocks.remove(labels);
    }

    pub(super) fn subscribers(&self) -> i64 {
        self.subscribers.get()
    }
}

/// One instance's KV event handles.
#[derive(Debug, Clone)]
pub struct KvEventMetrics {
    events: [Counter; 4],
    losses: [Counter; 4],
    /// Engine blocks the gateway can map to its own hashes now.
    pub blocks: Gauge,
    /// Subscriber tasks running (every instance's).
    pub subscribers: Gauge,
}

impl KvEventMetrics {
    /// Counts `n` of `kind`.
    pub fn event(&self, kind: KvEventKind, n: u64) {
        self.events[kind as usize].inc_by(n);
    }

    /// Counts a loss.
    pub fn loss(&self, reason: KvLossReason) {
        self.losses[reason as usize].inc();
    }
}
