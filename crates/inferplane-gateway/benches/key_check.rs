//! An API-key check at the edge: the bearer token hashed (SHA-256), looked up among 1,000
//! tenants' keys, and compared in constant time; a known and an unknown key.

#![allow(missing_docs, clippy::unwrap_used)]

use axum::http::{HeaderMap, HeaderValue, header};
use criterion::{Criterion, criterion_group, criterion_main};
use inferplane_gateway::config::TenantSection;
use inferplane_gateway::tenants::{KeyDigest, Tenants};

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
