//! Where a workload comes from: a spec (TOML or the default mix) or a trace (JSONL or the
//! Azure CSV, optionally given a spec's classes and the `max_tokens` its clients send),
//! and the one function that scales it to a load of a cluster. The CLI and the scenario
//! matrix both build their requests here.

use crate::cluster::Cluster;
use crate::error::BenchError;
use crate::trace;
use crate::workload::{Arrival, WorkItem, WorkloadSpec, mean_sizes};
use std::path::{Path, PathBuf};

/// A workload source and its overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Source {
    /// Workload spec file; `None`: the default mix.
    pub spec: Option<PathBuf>,
    /// A trace to replay instead of generating.
    pub trace: Option<PathBuf>,
    /// Give trace requests the spec's priority and SLO classes.
    pub trace_classes: bool,
    /// The `max_tokens` the trace's clients send (traces that record only true lengths);
    /// default [`trace::TRACE_MAX_TOKENS`].
    pub trace_max_tokens: Option<u32>,
    /// Number of requests (generated), or the first N of the trace.
    pub requests: Option<usize>,
    /// Mean arrival rate (generated), or the rate to rescale the trace to.
    pub rate: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
    /// Bursty gamma arrivals with this coefficient of variation.
    pub burst_cv: Option<f64>,
}

impl Source {
    /// The spec with its overrides.
    pub fn spec(&self) -> Result<WorkloadSpec, BenchError> {
        let mut spec = match &self.spec {
            Some(p) => read_spec(p)?,
            None => WorkloadSpec::default(),
        };
        if let Some(n) = self.requests {
            spec.requests = n;
        }
        if let Some(r) = self.rate {
            spec.rate = r;
        }
        if let Some(s) = self.seed {
            spec.seed = s;
        }
        if let Some(cv) = self.burst_cv {
            spec.arrival = Arrival::Gamma { cv };
        }
        Ok(spec)
    }

    /// The requests, a trace rescaled to `rate` when one is given (else the source's own).
    pub fn items(&self, rate: Option<f64>) -> Result<Vec<WorkItem>, BenchError> {
        let rate = rate.or(self.rate);
        match &self.trace {
            Some(path) => {
                let mut items = trace::read(path)?;
                if let Some(n) = self.requests {
                    items.truncate(n);
                }
                let spec = self.spec()?;
                if self.trace_classes {
                    trace::assign_classes(&mut items, &spec.classes, spec.seed);
                }
                trace::cap_max_tokens(
                    &mut items,
                    self.trace_max_tokens.unwrap_or(trace::TRACE_MAX_TOKENS),
                );
                if let Some(r) = rate {
                    trace::scale_to_rate(&mut items, r)?;
                }
                Ok(items)
            }
            None => {
                let mut spec = self.spec()?;
                if let Some(r) = rate {
                    spec.rate = r;
                }
                spec.generate()
            }
        }
    }

    /// The requests with their rate scaled to `load` times the cluster's estimated
    /// capacity for their mean sizes; returns the items and the capacity estimate.
    pub fn items_at_load(
        &self,
        cluster: &Cluster,
        load: f64,
    ) -> Result<(Vec<WorkItem>, f64), BenchError> {
        if !(load.is_finite() && load > 0.0) {
            return Err(BenchError::Workload(
                "load must be a positive number".into(),
            ));
        }
        // Sizes first (the rate does not change them), then the rate that gives `load`.
        let probe = self.items(None)?;
        let (prompt, output) = mean_sizes(&probe);
        let capacity = cluster.capacity_rps(prompt, output)?;
        Ok((self.items(Some(load * capacity))?, capacity))
    }
}

/// Reads a workload spec file.
pub fn read_spec(path: &Path) -> Result<WorkloadSpec, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    toml::from_str(&text).map_err(|source| BenchError::Toml {
        path: path.to_path_buf(),
        source,
    })
}
