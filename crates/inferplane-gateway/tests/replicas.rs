//! Gateway replicas that act as one through Redis (Debian's `redis-server`, started here
//! on a port from the OS; skipped with a message when it is not installed): three
//! gateways in front of the same four simulators never put more on an engine than its
//! limit (counted at the simulator, `inferplane_sim_peak_requests`), while without the
//! store they do; follow-up turns of a session land on one instance
//! whichever replica serves them; and killing Redis mid-load fails no request, the
//! replicas fall back to their own counts and recover when it returns.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::redis::{Redis, in_fleet};
use common::*;
use inferplane_gateway::Gateway;
use inferplane_sim::{EngineProfile, SimServer};
use std::time::Duration;

const MODEL: &str = "m";
/// Each instance's in-flight limit.
const LIMIT: u32 = 4;
const REPLICAS: usize = 3;

async fn sims() -> Vec<SimServer> {
    let mut sims = Vec::new();
    for i in 0..4 {
        // a real step time, so streams overlap
        sims.push(
            sim_with(&format!("s{i}"), MODEL, |c| {
                c.profile = EngineProfile::preset("llama-3.1-8b-h100").unwrap();
            })
            .await,
        );
    }
    sims
}

/// Three gateways over `sims` (instance limit [`LIMIT`]), sharing `redis` (none: each
/// alone), routing by `routing`.
async fn replicas(sims: &[SimServer], redis: Option<&str>, routing: &str) -> Vec<Gateway> {
    replicas_with(sims, redis, routing, LIMIT).await
}

/// [`replicas`] with each instance's in-flight limit `limit`.
async fn replicas_with(
    sims: &[SimServer],
    redis: Option<&str>,
    routing: &str,
    limit: u32,
) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for r in 0..REPLICAS {
        let mut f = fast_config();
        let named: Vec<(String, &SimServer)> = sims
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("s{i}"), s))
            .collect();
        let servers: Vec<(&str, &SimServer)> =
            named.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        add_pool(&mut f, MODEL, &servers, limit);
        f.scheduler.routing = toml::from_str(routing).unwrap();
        in_fleet(&mut f, redis, r);
        // a sync stalled by a loaded machine must not pass for a dead replica (the
        // others would take its share of each engine and overfill it)
        f.shared.fallback_after = Duration::from_secs(1);
        gws.push(gateway(f, sims.len()).await);
    }
    gws
}

/// The simulator's `inferplane_sim_peak_requests`.
async fn peak(sim: &SimServer) -> u64 {
    let text = reqwest::get(format!("{}/metrics", sim.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("inferplane_sim_peak_requests"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// `n` streamed requests from `clients` concurrent clients, spread over the gateways;
/// returns the statuses.
async fn load(gws: &[Gateway], n: usize, clients: usize, max_tokens: u32) -> Vec<u16> {
    let http = reqwest::Client::new();
    let urls: Vec<String> = gws.iter().map(Gateway::url).collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, urls, next) = (http.clone(), urls.clone(), next.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return statuses;
                    }
                    let r = http
                        .post(format!("{}/v1/chat/completions", urls[i % urls.len()]))
                        .json(&chat(MODEL, max_tokens, true))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap();
                    if status == 200 {
                        assert!(body.contains("[DONE]"), "a whole stream: {body}");
                    }
                    statuses.push(status);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Waits until every replica has seen all of them through the store.
async fn wait_for_each_other(gws: &[Gateway]) {
    for gw in gws {
        eventually("every replica sees three", || async {
            metrics_text(gw)
                .await
                .contains("inferplane_fleet_replicas{store=\"redis\"} 3")
        })
        .await;
    }
}

/// How often a conversation's follow-up turns went where its first turn went.
#[derive(Default)]
struct Sticky {
    first: Option<String>,
    same: usize,
    follow_ups: usize,
}

impl Sticky {
    /// A new conversation starts.
    fn start(&mut self) {
        self.first = None;
    }

    /// A turn was served by the instance the answer names.
    fn served(&mut self, r: &reqwest::Response) {
        assert_eq!(r.status(), 200);
        let inst = r.headers()["x-inferplane-instance"].to_str().unwrap();
        match &self.first {
            None => self.first = Some(inst.to_string()),
            Some(f) => {
                self.follow_ups += 1;
                self.same += usize::from(f == inst);
            }
        }
    }

    fn assert_at_least(&self, share: f64, what: &str) {
        eprintln!(
            "{what}: follow-ups on the first turn's instance: {} of {}",
            self.same, self.follow_ups
        );
        assert!(
            self.same as f64 >= share * self.follow_ups as f64,
            "{what}: {} of {}",
            self.same,
            self.follow_ups
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_put_more_than_its_limit_on_an_engine() {
    let Some(redis) = Redis::start() else { return };
    let lb = r#"kind = "load_balanced""#;

    // without the store each replica fills every engine to the limit on its own
    let alone_sims = sims().await;
    let gws = replicas(&alone_sims, None, lb).await;
    let statuses = load(&gws, 96, 36, 48).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let mut alone = 0;
    for s in &alone_sims {
        alone = alone.max(peak(s).await);
    }
    drop(gws);

    let sims = sims().await;
    let gws = replicas(&sims, Some(&redis.url()), lb).await;
    wait_for_each_other(&gws).await;
    let views = gws[0].control_plane().instances().await.unwrap();
    assert!(
        views.iter().all(|v| v.fleet_reservation.is_some()),
        "each instance is reserved through the store: {views:?}"
    );
    let statuses = load(&gws, 96, 36, 48).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let mut shared = Vec::new();
    for s in &sims {
        shared.push(peak(s).await);
    }
    // the stated bound: reservations are made one replica at a time against the others',
    // so together they never exceed the limit while every replica syncs
    let bound = u64::from(LIMIT);
    eprintln!("peak requests per engine: alone {alone}, shared {shared:?}, bound {bound}");
    assert!(
        alone > bound,
        "the load is high enough to overfill engines without the store ({alone})"
    );
    assert!(
        shared.iter().all(|p| *p <= bound),
        "with the store no engine held more than {bound}: {shared:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_turns_land_on_one_instance_whichever_replica_serves_them() {
    let Some(redis) = Redis::start() else { return };
    let sims = sims().await;
    let gws = replicas(&sims, Some(&redis.url()), r#"kind = "affinity""#).await;
    let http = reqwest::Client::new();
    let mut sticky = Sticky::default();
    for s in 0..24 {
        sticky.start();
        for t in 0..4 {
            let gw = &gws[(s + t) % REPLICAS];
            let r = http
                .post(format!("{}/v1/chat/completions", gw.url()))
                .header("x-session-id", format!("session-{s}"))
                .json(&chat(MODEL, 4, false))
                .send()
                .await
                .unwrap();
            sticky.served(&r);
        }
    }
    sticky.assert_at_least(0.95, "affinity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_routing_keeps_a_conversation_on_one_instance_across_replicas() {
    let Some(redis) = Redis::start() else { return };
    let sims = sims().await;
    // an engine's usual batch: the home's slack (a quarter of it) is more than a request
    let gws = replicas_with(&sims, Some(&redis.url()), r#"kind = "prefix""#, 64).await;
    wait_for_each_other(&gws).await;
    let http = reqwest::Client::new();
    let mut sticky = Sticky::default();
    for c in 0..24 {
        // a system prompt of its own, long enough for several KV blocks, then turns
        let system = format!("conversation {c}: ").repeat(40);
        let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
        sticky.start();
        for t in 0..4 {
            messages.push(serde_json::json!({"role": "user", "content": format!("turn {t}")}));
            let gw = &gws[(c + t) % REPLICAS];
            let r = http
                .post(format!("{}/v1/chat/completions", gw.url()))
                .json(&serde_json::json!({"model": MODEL, "max_tokens": 4, "messages": messages}))
                .send()
                .await
                .unwrap();
            sticky.served(&r);
            let answer: serde_json::Value = r.json().await.unwrap();
            messages.push(answer["choices"][0]["message"].clone());
        }
    }
    sticky.assert_at_least(0.95, "prefix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_load_fails_nothing_and_the_replicas_recover_when_it_returns() {
    let Some(redis) = Redis::start() else { return };
    let port = redis.port;
    let sims = sims().await;
    let gws = replicas(&sims, Some(&redis.url()), r#"kind = "load_balanced""#).await;
    for gw in &gws {
        eventually("the store is in use", || async {
            metrics_text(gw)
                .await
                .contains("inferplane_shared_store_up{store=\"redis\"} 1")
        })
        .await;
    }
    let running = {
        let gws_urls: Vec<String> = gws.iter().map(Gateway::url).collect();
        tokio::spawn(async move {
            // the gateways are borrowed by the test; rebuild the load over their URLs
            let http = reqwest::Client::new();
            let mut statuses = Vec::new();
            for i in 0..60 {
                let r = http
                    .post(format!(
                        "{}/v1/chat/completions",
                        gws_urls[i % gws_urls.len()]
                    ))
                    .json(&chat(MODEL, 16, i % 2 == 0))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
                let _ = r.text().await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(redis);
    for gw in &gws {
        eventually("each replica falls back to its own counts", || async {
            metrics_text(gw)
                .await
                .contains("inferplane_shared_store_up{store=\"redis\"} 0")
        })
        .await;
    }
    let statuses = running.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no request failed because of the store: {statuses:?}"
    );
    let _back = Redis::on(port).unwrap();
    for gw in &gws {
        eventually("each replica recovers by itself", || async {
            metrics_text(gw)
                .await
                .contains("inferplane_shared_store_up{store=\"redis\"} 1")
        })
        .await;
    }
    let (status, _, _) = post_chat(&reqwest::Client::new(), &gws[0], &chat(MODEL, 4, false)).await;
    assert_eq!(status, 200);
}
