//! Failing fast: the time from sending a chat request to receiving the 503
//! `no_ready_instance`, over loopback HTTP through a real gateway, when the pool's only
//! instance is unreachable (nothing listens at its address, so it never passes a health
//! check). The target is under 50 ms.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use inferplane_gateway::{FileConfig, Gateway};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // an address nothing listens on: bound, then released
    let dead = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    });
    let mut f = FileConfig::default();
    f.server.listen = "127.0.0.1:0".into();
    f.health.interval = Duration::from_millis(100);
    f.pools.push(
        toml::from_str(&format!(
            "model = \"m\"\n[[instances]]\nid = \"dead\"\nurl = \"http://{dead}\"\n"
        ))
        .unwrap(),
    );
    let gw = rt.block_on(Gateway::start(f.validate().unwrap())).unwrap();
    let url = format!("{}/v1/chat/completions", gw.url());
    let http = reqwest::Client::new();
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "m", "max_tokens": 4,
        "messages": [{"role": "user", "content": "hello"}],
    }))
    .unwrap();
    let ask = || async {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "no_ready_instance", "{v}");
    };
    // the instance has been judged (its health checks failed), as it would be in service
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ask().await;
    });
    c.bench_function("fail_fast_no_ready_instance_503", |b| {
        b.iter(|| rt.block_on(ask()))
    });
    rt.block_on(gw.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
