//! Tests of run summaries and their markdown report.

use super::*;
use crate::record::{Failure, InstanceUsage, Record};

#[test]
fn summary_counts_percentiles_slo_and_share() {
    let mut items: Vec<WorkItem> = (0..4).map(|i| WorkItem::plain(i as f64, 10, 11)).collect();
    for it in &mut items {
        it.class = Some("c".into());
        it.ttft_ms = Some(150);
    }
    let ok = |item: u32, ttft: f64, inst: u32| Record {
        item,
        arrival: f64::from(item),
        failure: None,
        instance: Some(inst),
        ttft: Some(ttft),
        e2e: ttft + 1.0,
        output_tokens: 11,
        cached_tokens: Some(5),
    };
    let mut rejected = ok(3, 0.0, 0);
    rejected.failure = Some(Failure::Rejected(inferplane_core::RejectKind::QueueFull));
    rejected.instance = None;
    let run = RunRecords {
        label: "x".into(),
        mode: "simulated".into(),
        duration: 10.0,
        records: vec![ok(0, 0.1, 0), ok(1, 0.1, 1), ok(2, 0.2, 1), rejected],
        instances: vec![
            InstanceUsage {
                id: "a".into(),
                gpus: 1,
                busy_secs: Some(5.0),
                price_per_gpu_hour: Some(3.6),
                ..Default::default()
            },
            InstanceUsage {
                id: "b".into(),
                gpus: 1,
                busy_secs: Some(10.0),
                price_per_gpu_hour: Some(3.6),
                ..Default::default()
            },
        ],
        itl_us: None,
    };
    let s = Summary::new(&run, &items);
    assert_eq!(
        (s.requests, s.completed, s.rejected, s.failed),
        (4, 3, 1, 0)
    );
    assert_eq!(s.errors.get("queue_full"), Some(&1));
    assert_eq!(s.rejected_by.get("queue_full"), Some(&1));
    assert_eq!(s.classes[0].completed + s.classes[0].rejected, 4);
    assert!(
        (s.goodput_rps - 0.2).abs() < 1e-9,
        "2 served within 150 ms over 10 s"
    );
    assert!((s.throughput_rps - 0.3).abs() < 1e-9);
    assert!((s.ttft_ms.p50 - 100.0).abs() < 0.5, "{:?}", s.ttft_ms);
    assert!((s.tpot_ms.p50 - 100.0).abs() < 0.5, "1 s over 10 tokens");
    assert_eq!(
        s.slo_attainment,
        Some(0.5),
        "2 of 4 met 150 ms; the rejected one missed"
    );
    assert_eq!(s.instances[1].requests, 2);
    assert!((s.utilisation.unwrap() - 0.75).abs() < 1e-9);
    assert!((s.cost_usd.unwrap() - 0.02).abs() < 1e-9);
    assert!((s.prefix_hit_rate.unwrap() - 0.5).abs() < 1e-9);
    let md = markdown("t", &[s.clone(), s], Some("inferplane bench"));
    assert!(
        md.contains("| TTFT p99 (ms) |") && md.contains("(+0%)"),
        "{md}"
    );
    assert!(md.contains("queue_full"));
}
