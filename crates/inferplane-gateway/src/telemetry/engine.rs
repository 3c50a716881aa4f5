//! Per-instance gauges of what the engine says about itself (its batch limit, context
//! length and KV-cache capacity): `inferplane_instance_engine_max_batch`,
//! `inferplane_instance_engine_max_model_len` and
//! `inferplane_instance_engine_kv_capacity_tokens`. A series exists only while its value
//! is known, so the exposition never carries a NaN or a made-up zero for these.

use super::InstanceLabels;
use inferplane_core::EngineInfo;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The three families, shared by every instance.
#[derive(Debug, Clone, Default)]
pub(super) struct EngineFamilies {
    max_batch: Family<InstanceLabels, Gauge>,
    max_model_len: Family<InstanceLabels, Gauge>,
    kv_capacity: Family<InstanceLabels, Gauge>,
}

impl EngineFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "inferplane_instance_engine_max_batch",
            "Most requests the engine runs at once (configured, engine-reported or planned)",
            self.max_batch.clone(),
        );
        r.register(
            "inferplane_instance_engine_max_model_len",
            "Longest context, prompt plus output, the engine accepts, in tokens",
            self.max_model_len.clone(),
        );
        r.register(
            "inferplane_instance_engine_kv_capacity_tokens",
            "KV-cache capacity of the engine, in tokens",
            self.kv_capacity.clone(),
        );
    }

    pub(super) fn handle(&self, labels: InstanceLabels) -> EngineInfoGauges {
        EngineInfoGauges {
            families: self.clone(),
            labels,
        }
    }

    pub(super) fn remove(&self, labels: &InstanceLabels) {
        for f in [&self.max_batch, &self.max_model_len, &self.kv_capacity] {
            f.remove(labels);
        }
    }
}

/// One instance's engine-fact gauges. Updated when the facts change (rarely), not per
/// request.
#[derive(Debug, Clone)]
pub struct EngineInfoGauges {
    families: EngineFamilies,
    labels: InstanceLabels,
}

impl EngineInfoGauges {
    /// Publishes `info`: known values are set, unknown ones have no series.
    pub fn set(&self, info: &EngineInfo) {
        let f = &self.families;
        let put = |family: &Family<InstanceLabels, Gauge>, value: Option<i64>| match value {
            Some(v) => {
                family.get_or_create(&self.labels).set(v);
            }
            None => {
                family.remove(&self.labels);
            }
        };
        put(&f.max_batch, info.max_batch.map(i64::from));
        put(&f.max_model_len, info.max_model_len.map(i64::from));
        put(
            &f.kv_capacity,
            info.kv_capacity_tokens.and_then(|k| i64::try_from(k).ok()),
        );
    }
}
