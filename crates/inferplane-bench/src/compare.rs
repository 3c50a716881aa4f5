//! Comparisons: one workload under several policy choices (simulated, or live on one
//! gateway switched through its admin API) or against several live targets, as runs ready
//! for one report.

use crate::cluster::{Cluster, Limits, PolicyChoice, scheduler_config};
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

/// Runs `items` against one live gateway once per policy choice, switching the gateway's
/// scheduling policy and routing before each run with `PUT /admin/policy` (every pool).
/// Each run uses its own prompt salt, so requests of one run do not hit the prefix-cache
/// entries of their twins in the previous run (shared system prompts still do, as they
/// would in production). Runs are sequential; each ends when its last request finished.
pub async fn live_policies(
    target: &LoadConfig,
    choices: &[PolicyChoice],
    items: &[WorkItem],
    admin_token: Option<&str>,
) -> Result<Vec<RunRecords>, BenchError> {
    let http = reqwest::Client::new();
    let mut runs = Vec::with_capacity(choices.len());
    for (i, choice) in choices.iter().enumerate() {
        let cfg = scheduler_config(choice, &Limits::default())?;
        let body = serde_json::json!({ "policy": cfg.policy, "routing": cfg.routing });
        let mut req = http
            .put(format!(
                "{}/admin/policy",
                target.target.trim_end_matches('/')
            ))
            .json(&body);
        if let Some(t) = admin_token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(BenchError::PolicySwitch {
                target: target.target.clone(),
                choice: choice.label(),
                status: status.as_u16(),
                body: resp.text().await.unwrap_or_default(),
            });
        }
        let mut run_cfg = target.clone();
        run_cfg.label = choice.label();
        run_cfg.salt = target.salt.wrapping_add(i as u64 + 1);
        runs.push(load::run(&run_cfg, items).await?);
    }
    Ok(runs)
}

/// Runs `items` against each live target in turn (one endpoint per configuration, e.g.
/// inferplane versus a peer router).
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
