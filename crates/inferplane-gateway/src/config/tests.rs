//! Tests of configuration parsing and validation.

use super::*;

fn validate(text: &str) -> Result<GatewayConfig, String> {
    FileConfig::parse(text, "test.toml")
        .map_err(|e| e.to_string())?
        .validate()
        .map_err(|e| e.to_string())
}

#[test]
fn a_full_config_parses_with_durations_and_defaults() {
    let c = validate(
        r#"
        [server]
        listen = "0.0.0.0:9000"
        [admin]
        token = "s3cret"
        [health]
        interval = "2s"
        [[pools]]
        model = "llama"
        max_inflight = 8
        queue_timeout = "1m"
        [[pools.instances]]
        url = "http://10.0.0.1:8000/"
        layout = { tp = 2 }
        price = { per_gpu_hour = 2.5 }
        [[pools.instances]]
        id = "b"
        url = "http://10.0.0.2:8000"
        max_inflight = 4
        "#,
    )
    .unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.health.interval, Duration::from_secs(2));
    assert_eq!(c.health.timeout, Duration::from_secs(2), "default kept");
    let pool = &c.pools[0];
    assert_eq!(pool.scheduler.queue_timeout, Some(Duration::from_secs(60)));
    assert_eq!(pool.scheduler.policy, PolicyConfig::default());
    assert_eq!(pool.instances[0].id.as_str(), "10.0.0.1:8000");
    assert_eq!(pool.instances[0].url, "http://10.0.0.1:8000");
    assert_eq!(pool.instances[0].max_inflight, Some(8), "pool default");
    assert_eq!(pool.instances[0].layout.tp, 2);
    assert_eq!(pool.instances[1].max_inflight, Some(4));
}

#[test]
fn scheduling_choices_come_from_the_section_or_the_pool() {
    let c = validate(
        r#"
        [scheduler]
        policy = { kind = "priority" }
        routing = { kind = "load_balanced", algorithm = { kind = "power_of_two" } }
        seed = 9
        [[pools]]
        model = "a"
        [[pools]]
        model = "b"
        policy = { kind = "fifo" }
        routing = { kind = "affinity" }
        "#,
    )
    .unwrap();
    assert!(matches!(
        c.pools[0].scheduler.policy,
        PolicyConfig::Priority(_)
    ));
    assert_eq!(c.pools[0].scheduler.seed, 9);
    assert!(matches!(c.pools[1].scheduler.policy, PolicyConfig::Fifo(_)));
    assert!(matches!(
        c.pools[1].scheduler.routing,
        RoutingConfig::Affinity(_)
    ));
    assert!(matches!(
        c.scheduler_for("new").policy,
        PolicyConfig::Priority(_)
    ));
    let err = validate("[scheduler]\npolicy = { kind = \"fastest\" }").unwrap_err();
    assert!(err.contains("fastest"), "{err}");
}

#[test]
fn errors_name_the_offending_path() {
    let cases = [
        (
            "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"ftp://x\"",
            "pools[0].instances[0].url",
        ),
        (
            "[[pools]]\nmodel = \"m\"\n[[pools]]\nmodel = \"n\"\n[[pools.instances]]\nurl = \"http://a:1\"\nmax_inflight = 0",
            "pools[1].instances[0].max_inflight",
        ),
        (
            "[[pools]]\nmodel = \"m\"\n[[pools]]\nmodel = \"m\"",
            "pools[1].model",
        ),
        (
            "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"http://a:1\"\n[[pools.instances]]\nurl = \"http://a:1\"",
            "pools[0].instances[1].id",
        ),
        ("[server]\nlisten = \"nowhere\"", "server.listen"),
        ("[health]\nunhealthy_after = 0", "health.unhealthy_after"),
        (
            "[scrape]\ninterval = \"5s\"\nstale_after = \"1s\"",
            "scrape.stale_after",
        ),
        (
            "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"http://a:1\"\nlayout = { tp = 0 }",
            "pools[0].instances[0].layout",
        ),
        (
            "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"http://a:1\"\nmax_model_len = 0",
            "pools[0].instances[0].max_model_len",
        ),
        (
            "[[pools]]\nmodel = \"m\"\nmax_batch = 0",
            "pools[0].max_batch",
        ),
    ];
    for (text, path) in cases {
        let err = validate(text).unwrap_err();
        assert!(err.starts_with(path), "{text}\n -> {err}");
    }
}

#[test]
fn unknown_keys_and_bad_durations_are_parse_errors() {
    let err = validate("[server]\nlisten_on = \"x\"").unwrap_err();
    assert!(err.contains("listen_on"), "{err}");
    let err = validate("[health]\ninterval = \"soon\"").unwrap_err();
    assert!(err.contains("interval") || err.contains("soon"), "{err}");
}

#[test]
fn instance_urls_from_flags_join_or_create_pools() {
    let mut f = FileConfig::default();
    f.add_instance_url("m", "http://127.0.0.1:9001");
    f.add_instance_url("m", "http://127.0.0.1:9002");
    let c = f.validate().unwrap();
    assert_eq!(c.pools.len(), 1);
    assert_eq!(c.pools[0].instances.len(), 2);
    assert!(
        check_url("https://x:1")
            .unwrap_err()
            .to_string()
            .contains("https")
    );
    assert!(check_url("http://x:1/v1").is_err());
    // credentials are refused and never repeated back
    for url in [
        "http://user:s3cret@x:1",
        "user:s3cret@x:1",
        "http://s3cret@x:1/",
    ] {
        let e = check_url(url).unwrap_err();
        assert_eq!(e, UrlError::Credentials, "{url}");
        assert!(!e.to_string().contains("s3cret"));
    }
}

#[test]
fn engine_limits_are_kept_per_instance_and_per_pool() {
    let c = validate(
        r#"
        [[pools]]
        model = "m"
        max_model_len = 8192
        [[pools.instances]]
        id = "own"
        url = "http://10.0.0.1:8000"
        max_model_len = 4096
        max_batch = 32
        [[pools.instances]]
        id = "pooled"
        url = "http://10.0.0.2:8000"
        "#,
    )
    .unwrap();
    let own = c.engine_overrides[&inferplane_core::InstanceId::new("own")];
    assert_eq!((own.max_model_len, own.max_batch), (Some(4096), Some(32)));
    assert!(
        !c.engine_overrides
            .contains_key(&inferplane_core::InstanceId::new("pooled")),
        "an instance that configures nothing has no entry; the pool's value applies"
    );
    assert_eq!(c.engine_for("m").max_model_len, Some(8192));
    assert_eq!(c.engine_for("m").max_batch, None);
    assert_eq!(c.engine_for("other"), EngineInfo::default());
    let err = validate("[[pools]]\nmodel = \"m\"\nmax_model_len = -1").unwrap_err();
    assert!(err.contains("max_model_len"), "{err}");
}

#[test]
fn a_pool_sets_its_own_timeouts_over_the_global_ones() {
    let c = validate(
        r#"
        [timeouts]
        first_byte = "20s"
        idle = "40s"
        [[pools]]
        model = "big"
        timeouts = { first_byte = "2m", total = "30m" }
        [[pools]]
        model = "small"
        "#,
    )
    .unwrap();
    let big = c.timeouts_for("big");
    assert_eq!(big.first_byte, Duration::from_secs(120));
    assert_eq!(big.idle, Duration::from_secs(40), "unset: the global one");
    assert_eq!(big.total, Duration::from_secs(1800));
    assert_eq!(big.connect, c.timeouts.connect);
    assert_eq!(c.timeouts_for("small"), &c.timeouts);
    assert_eq!(c.timeouts_for("unknown"), &c.timeouts);
    let err = validate("[[pools]]\nmodel = \"m\"\ntimeouts = { idle = \"0s\" }\n").unwrap_err();
    assert!(err.contains("pools[0].timeouts.idle"), "{err}");
    let err = validate("[[pools]]\nmodel = \"m\"\ntimeouts = { connect = \"1s\" }\n").unwrap_err();
    assert!(err.contains("connect"), "{err}");
}

#[test]
fn kv_events_take_tcp_endpoints_only_and_errors_name_the_field() {
    let inst = |kv: &str| {
        format!(
            "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nid = \"a\"\nurl = \"http://a:1\"\nkv_events = {kv}"
        )
    };
    let c = validate(&inst(
        r#"{ endpoint = "tcp://10.0.0.5:5557", replay_endpoint = "tcp://10.0.0.5:5558" }"#,
    ))
    .unwrap();
    let kv = &c.kv_events[&inferplane_core::InstanceId::new("a")];
    assert_eq!(kv.endpoint, "tcp://10.0.0.5:5557");
    assert_eq!(kv.replay_endpoint.as_deref(), Some("tcp://10.0.0.5:5558"));
    assert_eq!(kv.topic, "", "the topic defaults to vLLM's empty one");
    for (kv, path) in [
        (
            r#"{ endpoint = "ipc:///tmp/kv" }"#,
            "pools[0].instances[0].kv_events.endpoint",
        ),
        (
            r#"{ endpoint = "tcp://*:5557" }"#,
            "pools[0].instances[0].kv_events.endpoint",
        ),
        (
            r#"{ endpoint = "tcp://a:5557", replay_endpoint = "inproc://x" }"#,
            "pools[0].instances[0].kv_events.replay_endpoint",
        ),
        (
            r#"{ endpoint = "tcp://a:5557", replay_endpoint = "tcp://a:5557" }"#,
            "pools[0].instances[0].kv_events.replay_endpoint",
        ),
    ] {
        let err = validate(&inst(kv)).unwrap_err();
        assert!(err.starts_with(path), "{kv}\n -> {err}");
        assert!(err.contains("tcp://"), "{err}");
    }
    assert!(
        validate(&inst(r#"{ endpoint = "tcp://a:1", hwm = 3 }"#)).is_err(),
        "unknown keys are refused"
    );
}

const POOL: &str =
    "[[pools]]\nmodel = \"m\"\n[[pools.instances]]\nurl = \"http://10.0.0.1:8000\"\n";

#[test]
fn tenants_take_key_digests_and_refuse_plain_keys_naming_the_field() {
    let digest = crate::tenants::KeyDigest::of("a-key-of-enough-length").hex();
    let c = validate(&format!(
        "{POOL}[[tenants]]\nid = \"team-a\"\nkeys = [\"sha256:{digest}\"]\ndefault_priority = \"low\"\nmax_priority = \"high\"\nweight = 3\n[[tenants]]\nid = \"team-b\"\n"
    ))
    .unwrap();
    assert_eq!(c.tenants.len(), 2);
    assert_eq!(c.tenants[0].keys[0].0, "team-a-0");
    assert_eq!(c.tenants[0].weight, 3);
    assert_eq!(c.tenants[1].weight, 1, "weight defaults to 1");
    assert!(!c.tenants[0].limits.any(), "no limits unless configured");
    let c = validate(&format!(
        "{POOL}[[tenants]]\nid = \"a\"\n[tenants.limits]\nrequests_per_minute = 60\ntokens_per_minute = 1000\nconcurrent = 4\nbudget_usd = 2.5\n"
    ))
    .unwrap();
    let l = c.tenants[0].limits;
    assert_eq!(
        (
            l.requests_per_minute,
            l.tokens_per_minute,
            l.concurrent,
            l.budget_usd
        ),
        (Some(60), Some(1000), Some(4), Some(2.5))
    );
    for (tenants, field) in [
        (
            "id = \"team-a\"\nkeys = [\"sk-plain-text-key-123\"]",
            "tenants[0].keys[0]",
        ),
        ("id = \"Team A\"", "tenants[0].id"),
        ("id = \"a\"\nweight = 0", "tenants[0].weight"),
        (
            "id = \"a\"\ndefault_priority = \"high\"\nmax_priority = \"normal\"",
            "tenants[0].default_priority",
        ),
        ("id = \"a\"\n[[tenants]]\nid = \"a\"", "tenants[1].id"),
        (
            &format!(
                "id = \"a\"\nkeys = [\"sha256:{digest}\"]\n[[tenants]]\nid = \"b\"\nkeys = [\"sha256:{digest}\"]"
            ),
            "tenants[1].keys[0]",
        ),
        (
            "id = \"a\"\nkeys = [\"env:INFERPLANE_TEST_UNSET_TENANT_KEY\"]",
            "tenants[0].keys[0]",
        ),
        (
            "id = \"a\"\n[tenants.limits]\nrequests_per_minute = 0",
            "tenants[0].limits.requests_per_minute",
        ),
        (
            "id = \"a\"\n[tenants.limits]\ntokens_per_minute = 0",
            "tenants[0].limits.tokens_per_minute",
        ),
        (
            "id = \"a\"\n[tenants.limits]\nconcurrent = 0",
            "tenants[0].limits.concurrent",
        ),
        (
            "id = \"a\"\n[tenants.limits]\nbudget_usd = -1.0",
            "tenants[0].limits.budget_usd",
        ),
        (
            "id = \"a\"\n[tenants.limits]\nbudget_period = \"day\"",
            "tenants[0].limits.budget_period",
        ),
        (
            "id = \"a\"\n[tenants.limits]\nbudget_usd = 1.0\nbudget_period = \"week\"",
            "budget_period",
        ),
        ("id = \"a\"\n[tenants.limits]\nrpm = 5", "rpm"),
    ] {
        let e = validate(&format!("{POOL}[[tenants]]\n{tenants}\n")).unwrap_err();
        assert!(e.contains(field), "{field}: {e}");
    }
    // the digest is not echoed by an error about a duplicate
    let e = validate(&format!(
        "{POOL}[[tenants]]\nid = \"a\"\nkeys = [\"sha256:{digest}\", \"sha256:{digest}\"]\n"
    ))
    .unwrap_err();
    assert!(!e.contains(&digest), "{e}");
}

#[test]
fn tenant_headroom_is_a_scheduler_setting() {
    use inferplane_core::schedule::headroom::TenantHeadroom;
    let c = validate(POOL).unwrap();
    assert_eq!(c.pools[0].scheduler.tenant_headroom, TenantHeadroom::Wide);
    let c = validate(&format!("[scheduler]\ntenant_headroom = \"peak\"\n{POOL}")).unwrap();
    assert_eq!(c.pools[0].scheduler.tenant_headroom, TenantHeadroom::Peak);
    assert_eq!(
        c.scheduler_for("new-model").tenant_headroom,
        TenantHeadroom::Peak
    );
    let e = validate(&format!("[scheduler]\ntenant_headroom = \"lots\"\n{POOL}")).unwrap_err();
    assert!(e.contains("tenant_headroom"), "{e}");
}
