//! The scenario matrix (`inferplane bench matrix`): every policy and two baselines (the
//! gateway-queued `fifo/round_robin` and a plain router whose engines queue) on several
//! clusters, workloads and loads, in the discrete-event simulation, one table out.
//!
//! A [`MatrixSpec`] (TOML, `bench/matrix.toml`) names the clusters and workloads by file
//! (paths relative to the spec), the loads (fractions of each cluster's estimated
//! capacity), the policy choices, which one is the default and which are the baselines.
//! Every (cluster, workload, load) scenario's requests are generated once and run under
//! every choice on a pool of worker threads; runs are deterministic, so the table is the
//! same whatever the thread count. [`crate::matrix_report`] renders it.

use crate::cluster::{Cluster, PolicyChoice};
use crate::des;
use crate::error::BenchError;
use crate::report::Summary;
use crate::source::Source;
use crate::workload::WorkItem;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One cluster of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEntry {
    /// Its name in the table.
    pub name: String,
    /// Cluster TOML, relative to the spec.
    pub path: PathBuf,
    /// Requests per run on it (overrides the spec's).
    #[serde(default)]
    pub requests: Option<usize>,
}

/// One workload of the matrix: a spec file or a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEntry {
    /// Its name in the table.
    pub name: String,
    /// Workload spec (TOML), relative to the spec; for a trace, the classes to give it.
    #[serde(default)]
    pub spec: Option<PathBuf>,
    /// A trace to replay (JSONL or the Azure CSV), relative to the spec. When it is
    /// absent the workload is skipped with a message (traces are not in the repository).
    #[serde(default)]
    pub trace: Option<PathBuf>,
    /// The `max_tokens` a trace's clients send.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Loads for this workload only (default: the spec's).
    #[serde(default)]
    pub loads: Option<Vec<f64>>,
}

/// The matrix, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    /// Workload seed.
    #[serde(default = "seven")]
    pub seed: u64,
    /// Requests per run (a cluster may override).
    #[serde(default = "default_requests")]
    pub requests: usize,
    /// Loads, as fractions of each cluster's estimated capacity.
    pub loads: Vec<f64>,
    /// Policy choices (`policy/routing/balance` or `plain_router`).
    pub policies: Vec<String>,
    /// The choice the targets are stated for.
    pub default: String,
    /// The baselines it must beat.
    pub baselines: Vec<String>,
    /// Clusters.
    pub clusters: Vec<ClusterEntry>,
    /// Workloads.
    pub workloads: Vec<WorkloadEntry>,
}

fn seven() -> u64 {
    7
}
fn default_requests() -> usize {
    10_000
}

/// One run's place in the matrix and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Cluster name.
    pub cluster: String,
    /// Workload name.
    pub workload: String,
    /// Offered load (fraction of estimated capacity).
    pub load: f64,
    /// Policy choice label.
    pub policy: String,
    /// What it measured.
    pub summary: Summary,
    /// The largest instance's share of the placed requests over its fair share (its part
    /// of the cluster's estimated capacity, [`Cluster::instance_capacity_rps`]): 1 is
    /// perfectly fair; `None` when nothing was placed.
    pub max_fair_share: Option<f64>,
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Requests per run, overriding the spec.
    pub requests: Option<usize>,
    /// Worker threads (0: available parallelism).
    pub threads: usize,
    /// Only scenarios whose cluster, workload or policy contains this.
    pub filter: Option<String>,
    /// Print progress on stderr.
    pub progress: bool,
}

struct Scenario {
    cluster: String,
    workload: String,
    load: f64,
    resolved: Arc<Cluster>,
    items: Arc<Vec<WorkItem>>,
}

impl MatrixSpec {
    /// Reads and checks a matrix file.
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        let spec: MatrixSpec = toml::from_str(&text).map_err(|source| BenchError::Toml {
            path: path.to_path_buf(),
            source,
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the choices parse and the loads are positive.
    pub fn validate(&self) -> Result<(), BenchError> {
        for p in self
            .policies
            .iter()
            .chain(&self.baselines)
            .chain([&self.default])
        {
            PolicyChoice::parse(p)?;
        }
        for b in self.baselines.iter().chain([&self.default]) {
            if !self.policies.contains(b) {
                return Err(BenchError::Workload(format!(
                    "{b:?} is the default or a baseline but not in `policies`"
                )));
            }
        }
        let bad = |l: &f64| !(l.is_finite() && *l > 0.0);
        if self.loads.iter().any(bad)
            || self
                .workloads
                .iter()
                .filter_map(|w| w.loads.as_ref())
                .flatten()
                .any(bad)
        {
            return Err(BenchError::Workload("loads must be positive".into()));
        }
        if self.clusters.is_empty() || self.workloads.is_empty() || self.policies.is_empty() {
            return Err(BenchError::Workload(
                "a matrix needs clusters, workloads and policies".into(),
            ));
        }
        Ok(())
    }
}

fn source_of(w: &WorkloadEntry, base: &Path, seed: u64, requests: usize) -> Source {
    Source {
        spec: w.spec.as_ref().map(|p| base.join(p)),
        trace: w.trace.as_ref().map(|p| base.join(p)),
        trace_classes: w.trace.is_some() && w.spec.is_some(),
        trace_max_tokens: w.max_tokens,
        requests: Some(requests),
        seed: Some(seed),
        ..Source::default()
    }
}

/// Runs the matrix of `spec` (whose relative paths start at `base`); returns one row per
/// run in a stable order (cluster, workload, load, policy as listed), and the workloads
/// skipped with why.
pub fn run(
    spec: &MatrixSpec,
    base: &Path,
    opts: &Options,
) -> Result<(Vec<Row>, Vec<String>), BenchError> {
    spec.validate()?;
    let wanted = |s: &str| opts.filter.as_deref().is_none_or(|f| s.contains(f));
    let mut skipped = Vec::new();
    let mut scenarios = Vec::new();
    for c in &spec.clusters {
        let cluster = Arc::new(Cluster::load(&base.join(&c.path))?);
        let requests = opts.requests.or(c.requests).unwrap_or(spec.requests);
        for w in &spec.workloads {
            if let Some(t) = &w.trace
                && !base.join(t).exists()
            {
                let why = format!(
                    "{}: trace {} not found, skipped",
                    w.name,
                    base.join(t).display()
                );
                if !skipped.contains(&why) {
                    skipped.push(why);
                }
                continue;
            }
            let src = source_of(w, base, spec.seed, requests);
            for &load in w.loads.as_ref().unwrap_or(&spec.loads) {
                let (items, _) = src.items_at_load(&cluster, load)?;
                scenarios.push(Scenario {
                    cluster: c.name.clone(),
                    workload: w.name.clone(),
                    load,
                    resolved: cluster.clone(),
                    items: Arc::new(items),
                });
            }
        }
    }
    let mut jobs = Vec::new();
    for (si, sc) in scenarios.iter().enumerate() {
        for p in &spec.policies {
            if wanted(&sc.cluster) || wanted(&sc.workload) || wanted(p) {
                jobs.push((si, p.clone()));
            }
        }
    }
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    }
    .min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let mut results: Vec<Option<Result<Row, BenchError>>> = (0..jobs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some((si, policy)) = jobs.get(j) else {
                            break;
                        };
                        out.push((j, run_one(&scenarios[*si], policy)));
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if opts.progress {
                            eprint!("\r  {n}/{} runs", jobs.len());
                        }
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            if let Ok(out) = h.join() {
                for (j, r) in out {
                    results[j] = Some(r);
                }
            }
        }
    });
    if opts.progress {
        eprintln!();
    }
    let mut rows = Vec::with_capacity(jobs.len());
    for r in results {
        match r {
            Some(r) => rows.push(r?),
            None => return Err(BenchError::Workload("a matrix worker panicked".into())),
        }
    }
    Ok((rows, skipped))
}

fn run_one(sc: &Scenario, policy: &str) -> Result<Row, BenchError> {
    let mut cluster = (*sc.resolved).clone();
    cluster.policy = PolicyChoice::parse(policy)?;
    let label = cluster.policy.label();
    let records = des::simulate(&cluster, &sc.items, &label)?;
    let summary = Summary::new(&records, &sc.items);
    let (p, o) = crate::workload::mean_sizes(&sc.items);
    let caps = cluster.instance_capacity_rps(p, o)?;
    let total: f64 = caps.iter().sum();
    let placed: u64 = summary.instances.iter().map(|i| i.requests).sum();
    let max_fair_share = (placed > 0 && total > 0.0).then(|| {
        summary
            .instances
            .iter()
            .zip(&caps)
            .map(|(i, c)| i.share / (c / total))
            .fold(0.0, f64::max)
    });
    Ok(Row {
        cluster: sc.cluster.clone(),
        workload: sc.workload.clone(),
        load: sc.load,
        policy: policy.to_string(),
        summary,
        max_fair_share,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_matrix_runs_every_choice_on_every_scenario_and_accounts_for_every_request() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
        let spec: MatrixSpec = toml::from_str(
            r#"
            requests = 300
            loads = [0.5, 1.5]
            policies = ["fifo/round_robin", "plain_router", "adaptive/load_balanced"]
            default = "adaptive/load_balanced"
            baselines = ["fifo/round_robin", "plain_router"]
            [[clusters]]
            name = "tiny"
            path = "small-tiny.toml"
            [[workloads]]
            name = "overload"
            spec = "workloads/overload.toml"
            [[workloads]]
            name = "missing"
            trace = "no-such-trace.csv"
            "#,
        )
        .unwrap();
        let (rows, skipped) = run(
            &spec,
            &base,
            &Options {
                threads: 2,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(
            rows.len(),
            2 * 3,
            "2 loads x 3 choices, the missing trace skipped"
        );
        assert_eq!(skipped.len(), 1);
        for r in &rows {
            let s = &r.summary;
            assert_eq!(s.requests, 300);
            assert_eq!(s.completed + s.rejected + s.failed, s.requests, "{r:?}");
            let by_reason: u64 = s.rejected_by.values().sum();
            assert_eq!(by_reason, s.rejected);
        }
        let md = crate::matrix_report::markdown(&spec, &rows, &skipped, "cmd");
        assert!(md.contains("| tiny | overload | 1.5 |"), "{md}");
        let again = run(&spec, &base, &Options::default()).unwrap().0;
        assert_eq!(again, rows, "deterministic whatever the thread count");
        assert!(
            MatrixSpec {
                default: "nope/round_robin".into(),
                ..spec
            }
            .validate()
            .is_err()
        );
    }
}
