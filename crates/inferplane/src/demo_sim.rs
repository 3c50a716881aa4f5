//! The demo's last word: the same cluster and a mix like the demo's, run in the
//! discrete-event simulation (the very scheduler code, in virtual time) under the default
//! policy and under a plain round-robin router that lets the engines queue, below and
//! above the cluster's capacity. A few seconds of CPU; nothing is sent over the network.

use inferplane_bench::cluster::{Cluster, ClusterFile, InstanceGroup, Limits, PolicyChoice};
use inferplane_bench::report::Summary;
use inferplane_bench::workload::{
    Arrival, ClassSpec, LengthDist, PrefixSpec, SessionSpec, WorkloadSpec, mean_sizes,
};
use inferplane_core::{Layout, Priority};

/// One instance of the demo's cluster: id, GPU, layout, price per GPU-hour.
pub type Node = (&'static str, &'static str, Layout, f64);

/// Requests per simulated run.
const REQUESTS: usize = 6_000;

fn class(name: &str, weight: f64, priority: Priority, slo: bool) -> ClassSpec {
    ClassSpec {
        name: name.into(),
        weight,
        priority,
        ttft_ms: slo.then_some(1_500),
        e2e_ms: slo.then_some(8_000),
        cost_budget: None,
        max_tokens: None,
        tenant: None,
    }
}

/// The demo's mix: 10% high, 15% low, the rest normal; half of each with a 1.5 s TTFT and
/// 8 s end-to-end SLO; four shared system prompts; answers of 16-200 tokens.
fn mix(rate: f64) -> WorkloadSpec {
    WorkloadSpec {
        seed: 7,
        requests: REQUESTS,
        rate,
        arrival: Arrival::Poisson,
        prompt: LengthDist::Uniform { min: 20, max: 180 },
        output: LengthDist::Uniform { min: 16, max: 199 },
        max_tokens: None,
        classes: vec![
            class("high+slo", 0.05, Priority::High, true),
            class("high", 0.05, Priority::High, false),
            class("normal+slo", 0.375, Priority::Normal, true),
            class("normal", 0.375, Priority::Normal, false),
            class("low+slo", 0.075, Priority::Low, true),
            class("low", 0.075, Priority::Low, false),
        ],
        sessions: SessionSpec {
            share: 0.0,
            ..SessionSpec::default()
        },
        prefixes: PrefixSpec {
            share: 1.0,
            groups: 4,
            tokens: 330,
            zipf: 0.0,
        },
    }
}

/// Prints the comparison; an error here is reported, not fatal to the demo.
pub fn compare(model: &str, nodes: &[Node]) -> anyhow::Result<()> {
    let file = ClusterFile {
        policy: PolicyChoice::default(),
        scheduler: Limits::default(),
        instances: nodes
            .iter()
            .map(|&(id, gpu, layout, price)| InstanceGroup {
                id: Some(id.to_string()),
                model: model.to_string(),
                gpu: Some(gpu.to_string()),
                layout,
                profile: None,
                count: 1,
                max_inflight: None,
                price_per_gpu_hour: Some(price),
                kv_blocks: None,
            })
            .collect(),
    };
    let mut cluster = Cluster::resolve(file)?;
    let (prompt, output) = mean_sizes(&mix(1.0).generate()?);
    let capacity = cluster.capacity_rps(prompt, output)?;
    println!(
        "\nthe same cluster and a mix like this one in the simulation ({REQUESTS} requests per run, \
         `inferplane bench` for more):"
    );
    println!(
        "  {:<5} {:<26} {:>8} {:>11} {:>9} {:>9}",
        "load", "scheduler", "SLO met", "TTFT p99", "goodput", "rejected"
    );
    for load in [0.8, 1.3] {
        let items = mix(load * capacity).generate()?;
        for (name, choice) in [
            ("inferplane default", PolicyChoice::default()),
            ("plain round-robin router", PolicyChoice::plain()),
        ] {
            cluster.policy = choice;
            let run = inferplane_bench::des::simulate(&cluster, &items, name)?;
            let s = Summary::new(&run, &items);
            println!(
                "  {:<5} {:<26} {:>7.1}% {:>8.0} ms {:>5.1}/s {:>9}",
                format!("{load}x"),
                name,
                100.0 * s.slo_attainment.unwrap_or(0.0),
                s.ttft_ms.p99,
                s.goodput_rps,
                s.rejected
            );
        }
    }
    Ok(())
}
