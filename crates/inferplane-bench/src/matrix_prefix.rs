//! The prefix-cache routing section of the matrix report: every `prefix` choice (in each
//! [`PrefixMode`]) against round robin and against the oracle, with the issue's targets:
//!
//! * prefix-cache hit rate >= 2x round robin's and >= 90% of the oracle's (same policy
//!   word, `prefix_oracle`) at loads 0.5 to 1.2;
//! * TTFT p99 <= 0.5x round robin's at load 0.8;
//! * no instance above 1.5x its fair share (its part of the estimated capacity);
//! * precise mode's hit rate >= approximate mode's (0.5 point tolerance: where the
//!   engines' caches hold every prefix both see the same, and runs differ by noise);
//! * throughput at SLO (the peak goodput over the loads run) >= 1.5x round robin's.
//!
//! Round robin is `fifo/round_robin` when the matrix runs it, else its first baseline.
//! The section is empty when no choice routes by `prefix`.

use crate::cluster::PolicyChoice;
use crate::des_cache::PrefixMode;
use crate::matrix::{MatrixSpec, Row};
use std::collections::BTreeMap;
use std::fmt::Write as _;

fn mode_of(policy: &str) -> Option<(String, PrefixMode)> {
    let c = PolicyChoice::parse(policy).ok()?;
    (c.routing == "prefix" && !c.plain_router).then(|| (c.policy.clone(), c.prefix_mode))
}

fn oracle_of(policy: &str, spec: &MatrixSpec) -> Option<String> {
    let (word, _) = mode_of(policy)?;
    spec.policies
        .iter()
        .find(|p| mode_of(p) == Some((word.clone(), PrefixMode::Oracle)))
        .cloned()
}

fn rr(spec: &MatrixSpec) -> Option<&str> {
    let want = "fifo/round_robin";
    if spec.policies.iter().any(|p| p == want) {
        Some(want)
    } else {
        spec.baselines.first().map(String::as_str)
    }
}

fn hit(r: &Row) -> f64 {
    r.summary.prefix_hit_rate.unwrap_or(0.0)
}

/// The checks one prefix row fails (`rows`: its scenario's runs), as short phrases.
pub fn failures(spec: &MatrixSpec, row: &Row, rows: &[&Row]) -> Vec<String> {
    let by = |p: &str| rows.iter().find(|r| r.policy == p).copied();
    let mut out = Vec::new();
    let Some((word, mode)) = mode_of(&row.policy) else {
        return out;
    };
    let stated = (0.45..=1.25).contains(&row.load);
    if let Some(b) = rr(spec).and_then(by) {
        if stated && hit(row) < 2.0 * hit(b) {
            out.push("hit < 2x RR".into());
        }
        if (row.load - 0.8).abs() < 0.01 && row.summary.ttft_ms.p99 > 0.5 * b.summary.ttft_ms.p99 {
            out.push("TTFT p99 > 0.5x RR".into());
        }
    }
    if mode != PrefixMode::Oracle
        && stated
        && let Some(o) = oracle_of(&row.policy, spec).as_deref().and_then(by)
        && hit(row) < 0.9 * hit(o)
    {
        out.push("hit < 90% of oracle".into());
    }
    if row.max_fair_share.is_some_and(|x| x > 1.5) {
        out.push("an instance > 1.5x fair share".into());
    }
    if mode == PrefixMode::Precise
        && let Some(a) = rows
            .iter()
            .find(|r| mode_of(&r.policy) == Some((word.clone(), PrefixMode::Approximate)))
        && hit(row) + 0.005 < hit(a)
    {
        out.push("precise < approximate hit".into());
    }
    out
}

/// Appends the section to `m` (nothing when no choice routes by `prefix`).
pub fn section(m: &mut String, spec: &MatrixSpec, rows: &[Row]) {
    if !spec.policies.iter().any(|p| mode_of(p).is_some()) {
        return;
    }
    let rr_name = rr(spec).unwrap_or("-");
    let mut scenarios: BTreeMap<(String, String, u64), Vec<&Row>> = BTreeMap::new();
    let order = |c: &str| spec.clusters.iter().position(|x| x.name == c).unwrap_or(0);
    for r in rows {
        let key = (
            format!("{:03}{}", order(&r.cluster), r.cluster),
            r.workload.clone(),
            (r.load * 1000.0).round() as u64,
        );
        scenarios.entry(key).or_default().push(r);
    }
    let _ = writeln!(m, "\n## Prefix-cache routing\n");
    let _ = writeln!(
        m,
        "Every `prefix` choice against {rr_name} (RR) and its oracle. Hit: prompt tokens \
         served from the engines' prefix caches over prompt tokens. Share: the busiest \
         instance's share of requests over its fair share (its part of the estimated \
         capacity).\n"
    );
    let _ = writeln!(
        m,
        "| cluster | workload | load | policy | hit % | RR hit % | x RR | % of oracle | TTFT p99 | RR TTFT p99 | goodput | max share / fair | targets |"
    );
    let _ = writeln!(
        m,
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for runs in scenarios.values() {
        let by = |p: &str| runs.iter().find(|r| r.policy == p).copied();
        let b = rr(spec).and_then(by);
        for r in runs.iter().filter(|r| mode_of(&r.policy).is_some()) {
            let o = oracle_of(&r.policy, spec).as_deref().and_then(by);
            let f = failures(spec, r, runs);
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.0} | {} | {:.1} | {} | {} |",
                r.cluster,
                r.workload,
                r.load,
                r.policy,
                hit(r) * 100.0,
                b.map_or("-".into(), |b| format!("{:.1}", hit(b) * 100.0)),
                b.filter(|b| hit(b) > 0.0)
                    .map_or("-".into(), |b| format!("{:.2}", hit(r) / hit(b))),
                o.filter(|o| hit(o) > 0.0)
                    .map_or("-".into(), |o| format!("{:.0}", 100.0 * hit(r) / hit(o))),
                r.summary.ttft_ms.p99,
                b.map_or("-".into(), |b| format!("{:.0}", b.summary.ttft_ms.p99)),
                r.summary.goodput_rps,
                r.max_fair_share
                    .map_or_else(|| "n/a".into(), |x| format!("{x:.2}")),
                if f.is_empty() {
                    "met".into()
                } else {
                    format!("✗ {}", f.join("; "))
                }
            );
        }
    }
    throughput_at_slo(m, spec, rows);
}

/// Throughput at SLO per cluster, workload and policy: the peak goodput over the loads
/// run, and the highest load whose SLO attainment is at least 90%.
fn throughput_at_slo(m: &mut String, spec: &MatrixSpec, rows: &[Row]) {
    let _ = writeln!(
        m,
        "\n### Throughput at SLO\n\nPeak goodput (requests/s meeting every target) over \
         the loads run, and the highest load with SLO attainment >= 90%; target for \
         `prefix` choices: >= 1.5x RR's peak.\n"
    );
    let _ = writeln!(
        m,
        "| cluster | workload | policy | peak goodput | x RR | at load | highest load at SLO >= 90% |"
    );
    let _ = writeln!(m, "|---|---|---|---:|---:|---:|---:|");
    let peak = |c: &str, w: &str, p: &str| {
        rows.iter()
            .filter(|r| r.cluster == c && r.workload == w && r.policy == p)
            .max_by(|a, b| a.summary.goodput_rps.total_cmp(&b.summary.goodput_rps))
    };
    for c in &spec.clusters {
        for w in &spec.workloads {
            let base = rr(spec).and_then(|b| peak(&c.name, &w.name, b));
            for p in &spec.policies {
                let Some(best) = peak(&c.name, &w.name, p) else {
                    continue;
                };
                let at_slo = rows
                    .iter()
                    .filter(|r| r.cluster == c.name && r.workload == w.name && &r.policy == p)
                    .filter(|r| r.summary.slo_attainment.is_some_and(|a| a >= 0.9))
                    .map(|r| r.load)
                    .fold(f64::NAN, f64::max);
                let ratio = base
                    .filter(|b| b.summary.goodput_rps > 0.0)
                    .map(|b| best.summary.goodput_rps / b.summary.goodput_rps);
                let miss = mode_of(p).is_some() && ratio.is_some_and(|x| x < 1.5);
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {:.1} | {}{} | {} | {} |",
                    c.name,
                    w.name,
                    p,
                    best.summary.goodput_rps,
                    ratio.map_or("-".into(), |x| format!("{x:.2}")),
                    if miss { " ✗" } else { "" },
                    best.load,
                    if at_slo.is_nan() {
                        "none".into()
                    } else {
                        at_slo.to_string()
                    }
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Summary;

    fn row(load: f64, policy: &str, hit: f64, p99: f64, share: f64) -> Row {
        let mut summary = Summary {
            prefix_hit_rate: Some(hit),
            goodput_rps: 10.0 * hit,
            ..Summary::default()
        };
        summary.ttft_ms.p99 = p99;
        Row {
            cluster: "c".into(),
            workload: "w".into(),
            load,
            policy: policy.into(),
            summary,
            max_fair_share: Some(share),
        }
    }

    #[test]
    fn prefix_rows_are_held_to_round_robin_the_oracle_and_fair_share() {
        let spec: MatrixSpec = toml::from_str(
            r#"
            loads = [0.8]
            policies = ["adaptive/prefix", "adaptive/prefix_precise", "adaptive/prefix_oracle", "fifo/round_robin"]
            default = "adaptive/prefix"
            baselines = ["fifo/round_robin"]
            [[clusters]]
            name = "c"
            path = "c.toml"
            [[workloads]]
            name = "w"
            spec = "w.toml"
            "#,
        )
        .unwrap();
        let rows = vec![
            row(0.8, "adaptive/prefix", 0.5, 40.0, 1.2),
            row(0.8, "adaptive/prefix_precise", 0.4, 80.0, 1.7),
            row(0.8, "adaptive/prefix_oracle", 0.52, 40.0, 1.0),
            row(0.8, "fifo/round_robin", 0.2, 100.0, 1.0),
        ];
        let runs: Vec<&Row> = rows.iter().collect();
        assert!(failures(&spec, &rows[0], &runs).is_empty());
        let f = failures(&spec, &rows[1], &runs).join("; ");
        for want in [
            "hit < 90% of oracle",
            "TTFT p99 > 0.5x RR",
            "1.5x fair",
            "precise <",
        ] {
            assert!(f.contains(want), "{want}: {f}");
        }
        assert!(
            failures(&spec, &rows[3], &runs).is_empty(),
            "not a prefix row"
        );
        let mut m = String::new();
        section(&mut m, &spec, &rows);
        assert!(
            m.contains("| c | w | 0.8 | adaptive/prefix | 50.0 | 20.0 | 2.50 | 96 |"),
            "{m}"
        );
        assert!(m.contains("### Throughput at SLO"));
    }
}
