//! A float gauge whose series exists only while its value is known: set `Some` to write
//! it, `None` to remove it. Tools that read the exposition (aiperf, some dashboards) drop
//! NaN samples with a warning; an absent series says "unknown" without one.

use super::labels::{InstanceLabels, ModelLabel};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;

/// The float gauge type of the families.
pub(super) type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone)]
enum Series {
    Model(Family<ModelLabel, FloatGauge>, ModelLabel),
    Instance(Family<InstanceLabels, FloatGauge>, InstanceLabels),
}

/// One labelled series of a float family, present only while known.
#[derive(Debug, Clone)]
pub struct OptionalGauge {
    series: Series,
}

impl OptionalGauge {
    /// A pool's series, absent until set.
    pub(super) fn model(family: &Family<ModelLabel, FloatGauge>, labels: ModelLabel) -> Self {
        OptionalGauge {
            series: Series::Model(family.clone(), labels),
        }
    }

    /// An instance's series, absent until set.
    pub(super) fn instance(
        family: &Family<InstanceLabels, FloatGauge>,
        labels: InstanceLabels,
    ) -> Self {
        OptionalGauge {
            series: Series::Instance(family.clone(), labels),
        }
    }

    /// Writes the value, or removes the series when it is unknown (or not a number).
    pub fn set(&self, value: Option<f64>) {
        let value = value.filter(|v| v.is_finite());
        match (&self.series, value) {
            (Series::Model(f, l), Some(v)) => {
                f.get_or_create(l).set(v);
            }
            (Series::Model(f, l), None) => {
                f.remove(l);
            }
            (Series::Instance(f, l), Some(v)) => {
                f.get_or_create(l).set(v);
            }
            (Series::Instance(f, l), None) => {
                f.remove(l);
            }
        }
    }
}
