//! The scenario matrix as markdown: a headline table that holds the default policy to its
//! targets against both baselines and the best single policy, row by row, then every run.
//!
//! Targets (issue #9), each checked and marked `✗` where it fails:
//!
//! * SLO attainment of the default >= both baselines' (0.1 point tolerance);
//! * its TTFT p99 <= 1.1x the plain router's at load <= 0.7, and <= 0.5x the better
//!   baseline's at load >= 0.9;
//! * within 10% of the best single policy on SLO attainment and TTFT p99;
//! * on the overload workload at load 2.0: `critical` >= 99%, `high` >= 95%;
//! * every request accounted (completed + rejected + failed = sent).

use crate::matrix::{MatrixSpec, Row};
use crate::report::Summary;
use std::collections::BTreeMap;
use std::fmt::Write as _;

fn slo(s: &Summary) -> Option<f64> {
    s.slo_attainment.map(|a| a * 100.0)
}

fn fmt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), |v| format!("{v:.1}"))
}

fn class_slo(s: &Summary, class: &str) -> Option<f64> {
    s.classes
        .iter()
        .find(|c| c.class == class)
        .and_then(|c| c.attainment)
        .map(|a| a * 100.0)
}

/// The checks one scenario's default run fails, as short phrases (empty: all met).
pub fn failures(spec: &MatrixSpec, runs: &[&Row]) -> Vec<String> {
    let by = |p: &str| runs.iter().find(|r| r.policy == p).map(|r| &r.summary);
    let Some(d) = by(&spec.default) else {
        return Vec::new();
    };
    let load = runs.first().map_or(0.0, |r| r.load);
    let workload = runs.first().map_or("", |r| r.workload.as_str());
    let mut out = Vec::new();
    let baselines: Vec<(&str, &Summary)> = spec
        .baselines
        .iter()
        .filter_map(|b| by(b).map(|s| (b.as_str(), s)))
        .collect();
    for (name, b) in &baselines {
        if let (Some(x), Some(y)) = (slo(d), slo(b))
            && x + 0.1 < y
        {
            out.push(format!("SLO below {name}"));
        }
    }
    let plain = baselines.iter().find(|(n, _)| *n == "plain_router");
    if load <= 0.7
        && let Some((_, p)) = plain
        && d.ttft_ms.p99 > 1.1 * p.ttft_ms.p99
    {
        out.push("TTFT p99 > 1.1x plain".into());
    }
    if load >= 0.9 {
        let better = baselines
            .iter()
            .map(|(_, b)| b.ttft_ms.p99)
            .fold(f64::INFINITY, f64::min);
        if better.is_finite() && d.ttft_ms.p99 > 0.5 * better {
            out.push("TTFT p99 > 0.5x better baseline".into());
        }
    }
    let singles: Vec<&Summary> = runs
        .iter()
        .filter(|r| !spec.baselines.contains(&r.policy) && r.policy != spec.default)
        .map(|r| &r.summary)
        .collect();
    let best_slo = singles
        .iter()
        .filter_map(|s| slo(s))
        .fold(f64::NAN, f64::max);
    if let Some(x) = slo(d)
        && best_slo.is_finite()
        && x < 0.9 * best_slo
    {
        out.push("SLO not within 10% of the best policy".into());
    }
    let best_p99 = singles
        .iter()
        .map(|s| s.ttft_ms.p99)
        .fold(f64::INFINITY, f64::min);
    if best_p99.is_finite() && d.ttft_ms.p99 > 1.1 * best_p99 {
        out.push("TTFT p99 not within 10% of the best policy".into());
    }
    if workload == "overload" && load >= 2.0 {
        if class_slo(d, "critical").is_some_and(|a| a < 99.0) {
            out.push("critical < 99%".into());
        }
        if class_slo(d, "high").is_some_and(|a| a < 95.0) {
            out.push("high < 95%".into());
        }
    }
    for r in runs {
        let s = &r.summary;
        if s.completed + s.rejected + s.failed != s.requests {
            out.push(format!("{} lost requests", r.policy));
        }
    }
    out
}

/// The matrix as markdown; `command` is printed so it can be remade.
pub fn markdown(spec: &MatrixSpec, rows: &[Row], skipped: &[String], command: &str) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "Made with:\n\n```sh\n{command}\n```\n");
    for s in skipped {
        let _ = writeln!(m, "- {s}");
    }
    if !skipped.is_empty() {
        m.push('\n');
    }
    let mut scenarios: BTreeMap<(usize, usize, u64), Vec<&Row>> = BTreeMap::new();
    let cluster_ix = |c: &str| spec.clusters.iter().position(|x| x.name == c).unwrap_or(0);
    let workload_ix = |w: &str| spec.workloads.iter().position(|x| x.name == w).unwrap_or(0);
    for r in rows {
        let key = (
            cluster_ix(&r.cluster),
            workload_ix(&r.workload),
            (r.load * 1000.0).round() as u64,
        );
        scenarios.entry(key).or_default().push(r);
    }
    let _ = writeln!(
        m,
        "## Headline: `{}` against the baselines and the best single policy\n",
        spec.default
    );
    let base_names = spec.baselines.join(" / ");
    let _ = writeln!(
        m,
        "SLO attainment (%) and TTFT p99 (ms). Baselines: {base_names}.\n"
    );
    let _ = writeln!(
        m,
        "| cluster | workload | load | default SLO | baselines SLO | best policy SLO | default TTFT p99 | baselines TTFT p99 | best policy TTFT p99 | targets |"
    );
    let _ = writeln!(m, "|---|---|---:|---:|---:|---|---:|---:|---|---|");
    let mut failed = 0;
    for runs in scenarios.values() {
        let first = runs[0];
        let by = |p: &str| runs.iter().find(|r| r.policy == p).map(|r| &r.summary);
        let Some(d) = by(&spec.default) else { continue };
        let bases: Vec<&Summary> = spec.baselines.iter().filter_map(|b| by(b)).collect();
        let singles: Vec<&&Row> = runs
            .iter()
            .filter(|r| !spec.baselines.contains(&r.policy) && r.policy != spec.default)
            .collect();
        let best_slo = singles
            .iter()
            .max_by(|a, b| {
                slo(&a.summary)
                    .unwrap_or(-1.0)
                    .total_cmp(&slo(&b.summary).unwrap_or(-1.0))
            })
            .map(|r| format!("{} {}", fmt_pct(slo(&r.summary)), short(&r.policy)));
        let best_p99 = singles
            .iter()
            .min_by(|a, b| a.summary.ttft_ms.p99.total_cmp(&b.summary.ttft_ms.p99))
            .map(|r| format!("{:.0} {}", r.summary.ttft_ms.p99, short(&r.policy)));
        let f = failures(spec, runs);
        if !f.is_empty() {
            failed += 1;
        }
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            first.cluster,
            first.workload,
            first.load,
            fmt_pct(slo(d)),
            bases
                .iter()
                .map(|b| fmt_pct(slo(b)))
                .collect::<Vec<_>>()
                .join(" / "),
            best_slo.unwrap_or_default(),
            d.ttft_ms.p99,
            bases
                .iter()
                .map(|b| format!("{:.0}", b.ttft_ms.p99))
                .collect::<Vec<_>>()
                .join(" / "),
            best_p99.unwrap_or_default(),
            if f.is_empty() {
                "met".to_string()
            } else {
                format!("✗ {}", f.join("; "))
            }
        );
    }
    let _ = writeln!(
        m,
        "\n{} of {} rows miss a target.\n",
        failed,
        scenarios.len()
    );
    let _ = writeln!(m, "## Every run\n");
    let _ = writeln!(
        m,
        "| cluster | workload | load | policy | SLO % | SLO by class % | TTFT p50 | TTFT p99 | e2e p99 | completed | rejected by reason | goodput req/s | prefix hit % | max share / fair |"
    );
    let _ = writeln!(
        m,
        "|---|---|---:|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"
    );
    for runs in scenarios.values() {
        for r in runs {
            let s = &r.summary;
            let classes = s
                .classes
                .iter()
                .filter(|c| c.with_slo > 0)
                .map(|c| format!("{} {}", c.class, fmt_pct(c.attainment.map(|a| a * 100.0))))
                .collect::<Vec<_>>()
                .join(", ");
            let rejected = s
                .rejected_by
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.1} | {} | {} |",
                r.cluster,
                r.workload,
                r.load,
                r.policy,
                fmt_pct(slo(s)),
                classes,
                s.ttft_ms.p50,
                s.ttft_ms.p99,
                s.e2e_ms.p99,
                s.completed,
                if rejected.is_empty() {
                    "-".into()
                } else {
                    rejected
                },
                s.goodput_rps,
                fmt_pct(s.prefix_hit_rate.map(|h| h * 100.0)),
                r.max_fair_share
                    .map_or_else(|| "n/a".into(), |x| format!("{x:.2}"))
            );
        }
    }
    crate::matrix_prefix::section(&mut m, spec, rows);
    m
}

fn short(policy: &str) -> &str {
    policy.split('/').next().unwrap_or(policy)
}
