//! Comparisons: one workload under several policy choices (simulated) or against several
//! live targets, as runs ready for one report.

use crate::cluster::{Cluster, PolicyChoice};
use crate::des;
use crate::error::BenchError;
use crate::load::{self, LoadConfig};
use crate::record::RunRecords;
use crate::workload::WorkItem;

/// Simulates `items` on `cluster` once per choice (the cluster's own choice when none).
pub fn simulated(
    cluster: &Cluster,
    choices: &[PolicyChoice],
    items: &[WorkItem],
) -> Result<Vec<RunRecords>, BenchError> {
    let own = [cluster.policy.clone()];
    let choices = if choices.is_empty() {
        &own[..]
    } else {
        choices
    };
    choices
        .iter()
        .map(|c| {
            let mut cl = cluster.clone();
            cl.policy = c.clone();
            des::simulate(&cl, items, &c.label())
        })
        .collect()
}

/// Runs `items` against each live target in turn.
///
/// Switching the gateway's policy between runs (`PUT /admin/policy`) arrives with the
/// policy work; until then, give one target per configuration.
pub async fn live(
    targets: &[LoadConfig],
    items: &[WorkItem],
) -> Result<Vec<RunRecords>, BenchError> {
    let mut runs = Vec::with_capacity(targets.len());
    for t in targets {
        runs.push(load::run(t, items).await?);
    }
    Ok(runs)
}
