//! `inferplane plan`: rank parallelism layouts for a model on a cluster (placeholder).

/// Arguments of `inferplane plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {}

/// Runs `inferplane plan`.
pub fn run(_args: PlanArgs) -> anyhow::Result<()> {
    anyhow::bail!("the planner is not built yet")
}
