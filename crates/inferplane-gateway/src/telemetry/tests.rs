//! Tests of the metric families and their handles.

use super::*;
use inferplane_core::EngineInfo;

#[test]
fn pool_and_instance_handles_write_the_labelled_series() {
    let t = Telemetry::new();
    let p = t.pool("m");
    p.request(Route::chat_completions, Status::success);
    p.request(Route::completions, Status::rejected);
    p.ttft.observe(0.05);
    let i = t.instance("m", "a");
    i.healthy.set(1);
    let text = t.encode();
    for needle in [
        "inferplane_requests_total{model=\"m\",route=\"chat_completions\",status=\"success\"} 1",
        "inferplane_requests_total{model=\"m\",route=\"completions\",status=\"rejected\"} 1",
        "inferplane_ttft_seconds_count{model=\"m\"} 1",
        "inferplane_instance_healthy{model=\"m\",instance=\"a\"} 1",
        "inferplane_queue_depth{model=\"m\",priority=\"critical\"} 0",
        "inferplane_rejects_total{model=\"m\",reason=\"shed\"} 0",
        "inferplane_active_policy{model=\"m\",policy=\"adaptive\"} 0",
        "inferplane_policy_switches_total{model=\"m\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    // unknown figures have no series (never NaN); known ones do, until unknown again
    assert!(!text.contains("NaN"), "{text}");
    assert!(!text.contains("inferplane_instance_engine_kv_usage{"));
    assert!(!text.contains("inferplane_slo_attainment{"));
    i.engine_kv.set(Some(0.5));
    p.slo_attainment.set(Some(0.99));
    let text = t.encode();
    assert!(text.contains("inferplane_instance_engine_kv_usage{model=\"m\",instance=\"a\"} 0.5"));
    assert!(text.contains("inferplane_slo_attainment{model=\"m\"} 0.99"));
    i.engine_kv.set(None);
    i.engine_running.set(Some(f64::NAN));
    let text = t.encode();
    assert!(!text.contains("inferplane_instance_engine_kv_usage{"));
    assert!(!text.contains("NaN"), "{text}");
    t.remove_instance("m", "a");
    assert!(!t.encode().contains("instance=\"a\""));
}

#[test]
fn engine_fact_gauges_exist_only_while_known() {
    let t = Telemetry::new();
    let i = t.instance("m", "a");
    let series = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .map(str::to_string)
    };
    let text = t.encode();
    assert_eq!(series(&text, "inferplane_instance_engine_max_batch"), None);
    i.engine_info.set(&EngineInfo {
        max_batch: Some(256),
        max_model_len: Some(8192),
        kv_capacity_tokens: Some(u64::MAX),
    });
    let text = t.encode();
    assert_eq!(
        series(&text, "inferplane_instance_engine_max_batch").as_deref(),
        Some("inferplane_instance_engine_max_batch{model=\"m\",instance=\"a\"} 256")
    );
    assert_eq!(
        series(&text, "inferplane_instance_engine_max_model_len").as_deref(),
        Some("inferplane_instance_engine_max_model_len{model=\"m\",instance=\"a\"} 8192")
    );
    assert_eq!(
        series(&text, "inferplane_instance_engine_kv_capacity_tokens"),
        None,
        "a capacity beyond the gauge's range is not published as a wrapped number"
    );
    assert!(
        !text
            .lines()
            .any(|l| (l.starts_with("inferplane_instance_engine_max")
                || l.starts_with("inferplane_instance_engine_kv_capacity"))
                && l.ends_with("NaN")),
        "{text}"
    );
    i.engine_info.set(&EngineInfo {
        max_model_len: Some(4096),
        ..EngineInfo::default()
    });
    let text = t.encode();
    assert_eq!(series(&text, "inferplane_instance_engine_max_batch"), None);
    assert!(
        text.contains("inferplane_instance_engine_max_model_len{model=\"m\",instance=\"a\"} 4096")
    );
    t.remove_instance("m", "a");
    assert!(!t.encode().contains("instance=\"a\""));
}
