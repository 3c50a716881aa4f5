//! Tenants' limits across replicas, with Redis (Debian's `redis-server`, skipped when
//! absent): a token window shared by two replicas that many concurrent streaming clients
//! of one tenant never overshoot by more than one request's output, falling back to each
//! replica's share of the limits when Redis goes away, with the fleet's usage totals the
//! same on both; keys made or revoked through one replica's admin API hold on the other;
//! a daily budget spent through one refuses on the other; spend counted while Redis was
//! down reaches it once it is back.
//!
//! Windows are anchored minutes: each test first waits (at most its margin) until the
//! current minute has enough left for all it does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::limits::*;
use common::redis::{Redis, in_fleet};
use common::*;
use inferplane_gateway::config::FileConfig;
use inferplane_gateway::tenants::now_ms;
use inferplane_gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use std::time::Duration;

const TPM: u64 = 4_000;
const MAX_TOKENS: u32 = 64;

/// Two replicas sharing `redis`, in front of two simulators with seeded output lengths.
async fn two_replicas(sims: &[inferplane_sim::SimServer], redis: &str) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for r in 0..2 {
        let mut f: FileConfig = fast_config();
        add_pool(&mut f, MODEL, &[("s0", &sims[0]), ("s1", &sims[1])], 8);
        f.tenants = vec![
            tenant(
                "batch",
                "key-of-batch-tenant-00001",
                &format!("tokens_per_minute = {TPM}"),
            ),
            tenant(
                "rpm",
                "key-of-rpm-tenant-000001",
                "requests_per_minute = 10",
            ),
            tenant(
                "daily",
                "key-of-daily-tenant-00001",
                "budget_usd = 0.001\nbudget_period = \"day\"",
            ),
            tenant(
                "spender",
                "key-of-spender-tenant-001",
                "budget_usd = 1000.0",
            ),
        ];
        for i in &mut f.pools[0].instances {
            i.price = Some(
                toml::from_str("per_million_tokens = { input = 1000.0, output = 1000.0 }").unwrap(),
            );
        }
        in_fleet(&mut f, Some(redis), r);
        let cfg: GatewayConfig = f.validate().unwrap();
        let gw = Gateway::start(cfg).await.unwrap();
        wait_ready(&gw, 2).await;
        gws.push(gw);
    }
    for gw in &gws {
        eventually("each replica sees the other", || async {
            metrics_text(gw)
                .await
                .contains("inferplane_fleet_replicas{store=\"redis\"} 2")
        })
        .await;
    }
    gws
}

#[tokio::test]
async fn a_token_window_shared_by_two_replicas_is_never_overshot_by_more_than_one_output() {
    let Some(redis) = Redis::start() else { return };
    fresh_window(40).await;
    let mut sims = Vec::new();
    for i in 0..2 {
        sims.push(
            sim_with(&format!("s{i}"), MODEL, |c| {
                c.stop_seed = Some(11 + i);
                c.profile = inferplane_sim::EngineProfile::preset("llama-3.1-8b-h100").unwrap();
            })
            .await,
        );
    }
    let gws = two_replicas(&sims, &redis.url()).await;
    let urls: Vec<String> = gws.iter().map(Gateway::url).collect();
    let http = reqwest::Client::new();
    // 32 clients, 10 streams each, alternating replicas
    let tasks: Vec<_> = (0..32)
        .map(|c| {
            let (http, urls) = (http.clone(), urls.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..10 {
                    let r = http
                        .post(format!("{}/v1/chat/completions", urls[(c + i) % 2]))
                        .bearer_auth("key-of-batch-tenant-00001")
                        // distinct prompts: the simulators' lengths vary (uniform up to
                        // max_tokens), so predictions miss both ways
                        .json(&json!({
                            "model": MODEL,
                            "messages": [{"role": "user", "content": format!("question {c}-{i}")}],
                            "max_tokens": MAX_TOKENS,
                            "stream": true,
                        }))
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
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        ok >= 10 && ok < statuses.len(),
        "some served, the window filled: {ok}"
    );
    let mut used = 0.0;
    for gw in &gws {
        let m = metrics_text(gw).await;
        used += metric(
            &m,
            "inferplane_tenant_prompt_tokens_total{tenant=\"batch\"}",
        );
        used += metric(
            &m,
            "inferplane_tenant_completion_tokens_total{tenant=\"batch\"}",
        );
    }
    assert!(
        used <= (TPM + u64::from(MAX_TOKENS)) as f64,
        "the window ({TPM}) overshot by more than one output: {used} tokens served"
    );
    assert!(used >= TPM as f64 / 2.0, "the window was used: {used}");
    eprintln!(
        "served {ok} of {}, {used} tokens of a {TPM} window",
        statuses.len()
    );

    // each replica reports its totals to the store: both show the fleet's, the same
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let fleet_of = |gw: &Gateway| {
        let (http, url) = (
            http.clone(),
            format!("{}/admin/tenants/batch/usage", gw.url()),
        );
        async move {
            let v: Value = get_json(&http, url).await;
            (v["totals"].clone(), v["fleet_totals"].clone())
        }
    };
    eventually("the fleet's totals add up on both replicas", || async {
        let (_, a) = fleet_of(&gws[0]).await;
        let (_, b) = fleet_of(&gws[1]).await;
        let tokens = a["prompt_tokens"].as_f64().unwrap_or(-1.0)
            + a["completion_tokens"].as_f64().unwrap_or(-1.0);
        a == b
            && tokens == used
            && a["requests"] == json!(ok)
            && a["succeeded"] == json!(ok)
            && a["rejected"][1] == json!(["tokens_per_minute", refused])
    })
    .await;
    let (local, fleet) = fleet_of(&gws[0]).await;
    assert!(
        local["requests"].as_u64().unwrap() < fleet["requests"].as_u64().unwrap(),
        "one replica's own totals are not the fleet's: {local} vs {fleet}"
    );
    // the tenant list (the dashboard's top tenants) shows the same
    let listed = get_json(&http, format!("{}/admin/tenants", gws[1].url())).await;
    let batch = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "batch")
        .unwrap();
    assert_eq!(batch["fleet_totals"], fleet, "{listed}");

    // Redis goes away: each replica counts alone, on its share (10 / 2) of the limit
    drop(redis);
    let key = "key-of-rpm-tenant-000001";
    let mut admitted = 0;
    for _ in 0..6 {
        let r = post(&http, &gws[0], key, &chat(MODEL, 4, false)).await;
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => break,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(admitted, 5, "a replica alone takes its share of the limit");
    let m = metrics_text(&gws[0]).await;
    assert_eq!(metric(&m, "inferplane_tenant_limits_store_up"), 0.0);
    assert_eq!(metric(&m, "inferplane_tenant_limits_fallbacks_total"), 1.0);
}

#[tokio::test]
async fn keys_made_or_revoked_on_one_replica_hold_on_every_replica() {
    let Some(redis) = Redis::start() else { return };
    let sims = vec![sim("s0", MODEL).await, sim("s1", MODEL).await];
    let gws = two_replicas(&sims, &redis.url()).await;
    let http = reqwest::Client::new();
    let admin = |gw: &Gateway, path: &str| format!("{}/admin{path}", gw.url());
    let made: Value = http
        .post(admin(&gws[0], "/tenants/batch/keys"))
        .json(&json!({"name": "fleet"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    let status = |gw: usize, key: String| {
        let (http, gw) = (http.clone(), &gws[gw]);
        async move {
            post(&http, gw, &key, &chat(MODEL, 4, false))
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(0, secret.clone()).await, 200);
    eventually("the other replica takes the new key", || {
        let s = status(1, secret.clone());
        async move { s.await == 200 }
    })
    .await;
    // revoked on the other replica: refused on both
    let r = http
        .delete(admin(&gws[1], &format!("/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(1, secret.clone()).await, 401);
    eventually("the first replica refuses the revoked key", || {
        let s = status(0, secret.clone());
        async move { s.await == 401 }
    })
    .await;
    // a config key revoked on one replica is revoked on the other too
    let r = http
        .delete(admin(&gws[0], "/keys/rpm-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("the config key is revoked fleet-wide", || {
        let s = status(1, "key-of-rpm-tenant-000001".to_string());
        async move { s.await == 401 }
    })
    .await;
    // without the store, nothing changes and the admin is told so
    drop(redis);
    let r = http
        .post(admin(&gws[0], "/tenants/batch/keys"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "shared_store_unavailable");
    let keys: Value = get_json(&http, admin(&gws[0], "/tenants/batch/keys")).await;
    assert_eq!(
        keys["keys"].as_array().unwrap().len(),
        1,
        "only the config's: {keys}"
    );
}

#[tokio::test]
async fn a_daily_budget_spent_through_one_replica_refuses_on_the_other_until_midnight() {
    let Some(redis) = Redis::start() else { return };
    let sims = vec![sim("s0", MODEL).await, sim("s1", MODEL).await];
    let gws = two_replicas(&sims, &redis.url()).await;
    let http = reqwest::Client::new();
    let key = "key-of-daily-tenant-00001";
    // 8 tokens out and a prompt at $1000 per million: more than the $0.001 at once
    let r = post(&http, &gws[0], key, &chat(MODEL, 8, false)).await;
    assert_eq!(r.status(), 200);
    let (mut refused, mut served_by_other) = (None, 0);
    for _ in 0..200 {
        let r = post(&http, &gws[1], key, &chat(MODEL, 8, false)).await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
        served_by_other += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = refused.expect("the other replica refuses the spent budget");
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    let to_midnight = (86_400_000 - now_ms() % 86_400_000).div_ceil(1000);
    assert!(
        retry <= to_midnight && retry + 5 >= to_midnight,
        "Retry-After {retry}, midnight in {to_midnight} s"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("starts over in"),
        "{v}"
    );
    // the fleet's spend is the day's key, which expires a day after the day
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let day = now_ms() / 86_400_000;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("*:spend:daily:d{day}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 86_400_000 && ttl <= 2 * 86_400_000, "ttl {ttl} ms");
    let usage: Value = get_json(&http, format!("{}/admin/tenants/daily/usage", gws[1].url())).await;
    assert!(
        usage["window"]["spent_usd"].as_f64().unwrap() > 0.001,
        "{usage}"
    );
    assert_eq!(usage["limits"]["budget_period"], "day");

    // the fleet's totals: the same spend, the refusal, and the first replica's request
    // still counted once it is gone (its last totals are reported as it shuts down)
    let spent = usage["window"]["spent_usd"].as_f64().unwrap();
    let mut gws = gws;
    let first = gws.remove(0);
    assert!(first.shutdown().await, "drained");
    let fleet_usage = || async {
        let v: Value = get_json(&http, format!("{}/admin/tenants/daily/usage", gws[0].url())).await;
        v["fleet_totals"].clone()
    };
    eventually(
        "the fleet's totals count both replicas' requests",
        || async {
            let f = fleet_usage().await;
            let cost = f["cost_usd"].as_f64().unwrap_or(0.0);
            (cost - spent).abs() < 1e-9 && f["rejected"][3] == json!(["budget", 1])
        },
    )
    .await;
    let f = fleet_usage().await;
    assert_eq!(f["requests"], json!(1 + served_by_other), "{f}");
    assert_eq!(f["succeeded"], json!(1 + served_by_other), "{f}");
}

#[tokio::test]
async fn spend_counted_while_redis_was_down_reaches_it_once_it_is_back() {
    let Some(redis) = Redis::start() else { return };
    let port = redis.port;
    let sims = vec![sim("s0", MODEL).await, sim("s1", MODEL).await];
    let gws = two_replicas(&sims, &redis.url()).await;
    let http = reqwest::Client::new();
    let key = "key-of-spender-tenant-001";
    drop(redis);
    for _ in 0..2 {
        let r = post(&http, &gws[0], key, &chat(MODEL, 8, false)).await;
        assert_eq!(r.status(), 200, "counted locally while Redis is down");
    }
    // the spend's own attempt fails too (connection refused) before Redis is back
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _redis = Redis::on(port).expect("redis-server ran a moment ago");
    let cost = |m: &str| metric(m, "inferplane_tenant_cost_usd_total{tenant=\"spender\"}");
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let stored = || {
        let client = client.clone();
        async move {
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg("*:spend:spender")
                .query_async(&mut c)
                .await
                .unwrap();
            match keys.first() {
                Some(k) => ::redis::cmd("GET")
                    .arg(k)
                    .query_async::<f64>(&mut c)
                    .await
                    .unwrap(),
                None => 0.0,
            }
        }
    };
    // the replica sends what the store missed once it is back, with no request needed
    let spent = cost(&metrics_text(&gws[0]).await);
    assert!(spent > 0.0);
    let holds = |spent: f64| async move { (stored().await - spent).abs() < 1e-9 * spent.max(1.0) };
    eventually("Redis holds all this replica spent", || holds(spent)).await;
    // and a request's spend afterwards adds to it
    let r = post(&http, &gws[0], key, &chat(MODEL, 8, false)).await;
    assert_eq!(r.status(), 200);
    eventually("Redis holds the next spend too", || async {
        let now = cost(&metrics_text(&gws[0]).await);
        now > spent && holds(now).await
    })
    .await;
    assert!(stored().await > 0.0);
}
