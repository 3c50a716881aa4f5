//! An API-key check at the edge: the bearer token hashed (SHA-256), looked up among 1,000
//! tenants' keys, and compared in constant time; a known and an unknown key. And a
//! limited tenant's admission and settlement as a replica counts it alone.

#![allow(missing_docs, clippy::unwrap_used)]

use axum::http::{HeaderMap, HeaderValue, header};
use criterion::{Criterion, criterion_group, criterion_main};
use inferplane_core::{RequestId, RequestMeta, TenantId, Time};
use inferplane_gateway::config::TenantSection;
use inferplane_gateway::tenants::{Ask, KeyDigest, Limiter, Tenants, Usage};

fn bench(c: &mut Criterion) {
    let sections: Vec<TenantSection> = (0..1000)
        .map(|i| {
            toml::from_str(&format!(
                "id = \"t{i}\"\nkeys = [\"sha256:{}\"]",
                KeyDigest::of(&format!("tenant-key-{i:08}-abcdefgh")).hex()
            ))
            .unwrap()
        })
        .collect();
    let tenants =
        Tenants::new(&inferplane_gateway::config::validate_tenants(&sections, &[]).unwrap());
    let headers = |key: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        h
    };
    let known = headers("tenant-key-00000500-abcdefgh");
    let unknown = headers("tenant-key-99999999-abcdefgh");
    assert!(tenants.authenticate(&known).unwrap().is_some());
    c.bench_function("key_check_known_of_1000", |b| {
        b.iter(|| tenants.authenticate(&known).is_ok())
    });
    c.bench_function("key_check_unknown_of_1000", |b| {
        b.iter(|| tenants.authenticate(&unknown).is_err())
    });
    let limits = inferplane_gateway::config::TenantLimits {
        requests_per_minute: Some(u32::MAX),
        tokens_per_minute: Some(u64::MAX / 4),
        concurrent: Some(u32::MAX),
        budget_usd: Some(1e12),
        budget_period: None,
    };
    let mut usage = Usage::default();
    let ask = Ask {
        reserve: 600,
        excess: 400,
    };
    let mut now = 1_000_000u64;
    c.bench_function("limits_admit_and_settle", |b| {
        b.iter(|| {
            now += 1;
            let (held, _) = usage.admit(&limits, ask, now).unwrap();
            usage.settle(held, 700, now);
        })
    });
    // the whole path: the tenant's lock, the output estimate, the reservation's drop
    let configs = inferplane_gateway::config::validate_tenants(&sections, &[]).unwrap();
    let configs: Vec<_> = configs
        .into_iter()
        .map(|mut t| {
            t.limits = limits;
            t
        })
        .collect();
    let limiter = std::sync::Arc::new(Limiter::new(
        &configs,
        &inferplane_gateway::telemetry::Telemetry::new(),
        None,
    ));
    let mut meta = RequestMeta::new(RequestId(1), "m", 500, 256, Time::ZERO);
    meta.tenant = Some(TenantId(500));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("limiter_admit_and_drop", |b| {
        b.iter(|| {
            let r = rt.block_on(limiter.admit(&meta, 1_000_000)).unwrap();
            if let Some(r) = &r {
                r.answered(500, 100);
            }
            drop(r);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
