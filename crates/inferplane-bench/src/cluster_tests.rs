//! Tests of cluster files and policy choices.

use super::*;

#[test]
fn cluster_files_resolve_expand_counts_and_name_what_is_wrong() {
    let f: ClusterFile = toml::from_str(
        r#"
        [policy]
        policy = "adaptive"
        routing = "load_balanced"
        [[instances]]
        id = "h"
        model = "llama-3.1-8b"
        gpu = "h100-sxm"
        count = 3
        price_per_gpu_hour = 2.5
        [[instances]]
        model = "m"
        profile = "tiny"
        max_inflight = 8
        "#,
    )
    .unwrap();
    let c = Cluster::resolve(f).unwrap();
    assert_eq!(c.instance_count(), 4);
    assert_eq!(c.instances[2].spec.id.as_str(), "h-2");
    assert_eq!(c.instances[3].spec.max_inflight, Some(8));
    assert_eq!(c.instances[0].spec.max_inflight, None);
    assert_eq!(c.policy.label(), "adaptive/load_balanced/least_ttft");
    assert!(c.capacity_rps(500.0, 200.0).unwrap() > 1.0);
    let bad: ClusterFile = toml::from_str("[[instances]]\nmodel = \"m\"\n").unwrap();
    assert!(
        Cluster::resolve(bad)
            .unwrap_err()
            .to_string()
            .contains("instances[0]")
    );
    assert!(
        toml::from_str::<ClusterFile>("[policy]\nrouting = 3\n[[instances]]\nmodel=\"m\"").is_err()
    );
}

#[test]
fn policy_choices_parse_with_defaults_and_reject_unknown_names() {
    let c = PolicyChoice::parse("priority/round_robin").unwrap();
    assert_eq!(c.balance, "least_ttft", "the core's default");
    let e = PolicyChoice::parse("fifo/sticky").unwrap_err().to_string();
    assert!(e.contains("affinity"), "{e}");
    assert!(PolicyChoice::parse("a/b/c/d").is_err());
    let cfg = scheduler_config(
        &c,
        &Limits {
            max_queue: 7,
            queue_timeout: None,
            seed: 3,
            ..Limits::default()
        },
    )
    .unwrap();
    assert_eq!(cfg.max_queue, 7);
    assert_eq!(cfg.queue_timeout, None);
    assert!(matches!(cfg.policy, PolicyConfig::Priority(_)));
    assert!(matches!(cfg.routing, RoutingConfig::RoundRobin(_)));
    let lb = scheduler_config(
        &PolicyChoice::parse("adaptive/load_balanced/power_of_two").unwrap(),
        &Limits::default(),
    )
    .unwrap();
    assert!(matches!(
        lb.routing,
        RoutingConfig::LoadBalanced(ref c) if matches!(c.algorithm, inferplane_core::BalanceConfig::PowerOfTwo(_))
    ));
    // Every name the validator accepts is one the core knows.
    for p in policies() {
        for r in routings() {
            for b in balances() {
                let c = PolicyChoice {
                    policy: p.into(),
                    routing: r.into(),
                    balance: b.into(),
                    plain_router: false,
                    prefix_mode: PrefixMode::Approximate,
                };
                scheduler_config(&c, &Limits::default()).unwrap();
            }
        }
    }
}

#[test]
fn prefix_modes_parse_from_the_routing_word_and_only_with_prefix_routing() {
    let c = PolicyChoice::parse("adaptive/prefix_precise").unwrap();
    assert_eq!(
        (c.routing.as_str(), c.prefix_mode),
        ("prefix", PrefixMode::Precise)
    );
    assert_eq!(c.label(), "adaptive/prefix_precise/least_ttft");
    let o = PolicyChoice::parse("adaptive/prefix_oracle").unwrap();
    assert_eq!(o.prefix_mode, PrefixMode::Oracle);
    assert_eq!(
        PolicyChoice::parse("adaptive/prefix").unwrap().prefix_mode,
        PrefixMode::Approximate
    );
    // the same strategy in every mode: only what the DES tells it differs
    let cfg = scheduler_config(&c, &Limits::default()).unwrap();
    assert!(matches!(cfg.routing, RoutingConfig::Prefix(_)));
    let bad = PolicyChoice {
        prefix_mode: PrefixMode::Oracle,
        ..PolicyChoice::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("prefix_mode")
    );
    let f: ClusterFile = toml::from_str(
        "[policy]\nrouting = \"prefix\"\nprefix_mode = \"precise\"\n[scheduler]\nkv_event_delay = \"5ms\"\n[[instances]]\nmodel = \"m\"\nprofile = \"tiny\"\nkv_blocks = 64\n",
    )
    .unwrap();
    let c = Cluster::resolve(f).unwrap();
    assert_eq!(c.policy.prefix_mode, PrefixMode::Precise);
    assert_eq!(c.limits.kv_event_delay, Duration::from_millis(5));
    assert_eq!(c.instances[0].profile.kv_blocks, 64);
}
