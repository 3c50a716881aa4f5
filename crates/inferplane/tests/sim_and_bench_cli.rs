//! The `sim` and `bench` subcommands through the real binary: several simulated engines
//! from one command (and one profiled by the planner), and a workload written to JSONL then
//! simulated into a report.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::sim;
use std::process::Command;

fn get(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

#[test]
fn sim_count_starts_several_engines_each_serving_the_model() {
    let (_sim, urls) = sim(&["--count", "3", "--model", "m", "--profile", "tiny"], 3);
    assert_eq!(urls.len(), 3);
    let distinct: std::collections::HashSet<_> = urls.iter().collect();
    assert_eq!(distinct.len(), 3, "three ports");
    for u in &urls {
        assert!(get(&format!("{u}/v1/models")).contains("\"id\":\"m\""));
    }
}

#[test]
fn sim_with_a_gpu_takes_its_profile_from_the_planner() {
    let (_sim, urls) = sim(
        &[
            "--port",
            "0",
            "--model",
            "llama-3.1-8b",
            "--gpu",
            "h100-sxm",
            "--tp",
            "2",
        ],
        1,
    );
    let metrics = get(&format!("{}/metrics", urls[0]));
    // The KV capacity comes from the planner's memory model, not a preset.
    let blocks = metrics
        .lines()
        .find(|l| l.starts_with("vllm:cache_config_info"))
        .and_then(|l| l.split("num_gpu_blocks=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(
        blocks > 20_000,
        "two H100s hold well over 320k tokens of 8B KV: {blocks}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_inferplane"))
        .args([
            "sim",
            "--port",
            "0",
            "--model",
            "llama-3.1-405b",
            "--gpu",
            "a10g",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "405B does not fit one A10G");
}

#[test]
fn a_written_workload_replays_through_the_simulation_into_a_report() {
    let dir = std::env::temp_dir().join(format!("inferplane-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.jsonl");
    let bin = env!("CARGO_BIN_EXE_inferplane");
    let out = Command::new(bin)
        .args([
            "bench",
            "workload",
            "--requests",
            "300",
            "--rate",
            "20",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap().lines().count(),
        300
    );
    let cluster = format!("{}/../../bench/small-tiny.toml", env!("CARGO_MANIFEST_DIR"));
    let report = dir.join("report");
    let out = Command::new(bin)
        .args(["bench", "simulate", "--cluster", &cluster, "--trace"])
        .arg(&trace)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("| requests | 300 |"), "{md}");
    for f in [
        "report.json",
        "ttft_cdf.svg",
        "latency_cdf.svg",
        "instance_load.svg",
    ] {
        assert!(report.join(f).exists(), "{f}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
