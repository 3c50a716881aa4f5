//! The accounting identity: every request sent is counted exactly once by the gateway,
//! as completed, rejected, failed or cancelled, both in its JSON totals and in
//! `inferplane_requests_total` on `/metrics`.

use super::{MODEL, eventually, metrics_text};
use inferplane_gateway::stats::PerformanceMetrics;
use inferplane_gateway::{ControlPlane, Gateway};
use std::collections::BTreeMap;

/// What the gateway counted.
#[derive(Debug)]
pub struct Counted {
    /// `inferplane_requests_total` of [`MODEL`], by `status` (summed over routes).
    pub by_status: BTreeMap<String, u64>,
    /// The control plane's totals, when it was still running.
    pub total: Option<PerformanceMetrics>,
}

impl Counted {
    /// Requests that ended with `status` on `/metrics`.
    pub fn status(&self, status: &str) -> u64 {
        self.by_status.get(status).copied().unwrap_or(0)
    }
}

/// `inferplane_requests_total` of `model` by status, from a Prometheus page.
pub fn requests_by_status(text: &str, model: &str) -> BTreeMap<String, u64> {
    let prefix = format!("inferplane_requests_total{{model=\"{model}\",");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let status = line
            .split("status=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no status label: {line}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *out.entry(status.to_string()).or_default() += n as u64;
    }
    out
}

/// Waits (bounded) until nothing is in flight or queued, then asserts that the gateway
/// accounted for every one of the `sent` requests: completed + rejected + failed +
/// cancelled = sent in its totals, the same sum on `/metrics`, and the two agree.
pub async fn assert_accounted(gw: &Gateway, sent: u64) -> Counted {
    let cp = gw.control_plane().clone();
    eventually("nothing in flight or queued", || {
        let cp = cp.clone();
        async move {
            let t = cp.metrics().await.unwrap().total;
            t.active == 0 && t.queued == 0
        }
    })
    .await;
    let t = cp.metrics().await.unwrap().total;
    assert_eq!(
        t.completed + t.rejected + t.failed + t.cancelled,
        sent,
        "every request accounted for: {t:?}"
    );
    assert_eq!(t.requests_total, sent, "{t:?}");
    let by_status = requests_by_status(&metrics_text(gw).await, MODEL);
    let counted = Counted {
        by_status,
        total: Some(t.clone()),
    };
    assert_eq!(
        counted.by_status.values().sum::<u64>(),
        sent,
        "/metrics: {:?}",
        counted.by_status
    );
    assert_eq!(counted.status("success"), t.completed, "{counted:?}");
    assert_eq!(counted.status("cancelled"), t.cancelled, "{counted:?}");
    assert_eq!(counted.status("rejected"), t.rejected, "{counted:?}");
    counted
}

/// The identity from `/metrics` alone, once the gateway has shut down (its control
/// plane no longer answers; its registry still does).
pub fn assert_accounted_after_shutdown(cp: &ControlPlane, sent: u64) -> Counted {
    let by_status = requests_by_status(&cp.telemetry().encode(), MODEL);
    assert_eq!(
        by_status.values().sum::<u64>(),
        sent,
        "/metrics: {by_status:?}"
    );
    Counted {
        by_status,
        total: None,
    }
}
