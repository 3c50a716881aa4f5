//! Tenants' limits end to end over real HTTP: requests per minute, concurrent requests,
//! tokens per minute (a request larger than the window refused for good) and a spend
//! budget, refused with OpenAI's 429 and `Retry-After`, OpenAI's `x-ratelimit-*` headers
//! on every response; and, with Redis (Debian's `redis-server`, skipped when absent), a
//! token window shared by two replicas that many concurrent streaming clients of one
//! tenant never overshoot by more than one request's output, falling back to each
//! replica's share of the limits when Redis goes away; keys made or revoked through one
//! replica's admin API hold on the other.
//!
//! Windows are anchored minutes: each test first waits (at most its margin) until the
//! current minute has enough left for all it does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::redis::Redis;
use common::*;
use inferplane_gateway::config::{FileConfig, TenantSection};
use inferplane_gateway::tenants::{KeyDigest, WINDOW_MS, now_ms};
use inferplane_gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use std::time::Duration;

fn tenant(id: &str, key: &str, limits: &str) -> TenantSection {
    toml::from_str(&format!(
        "id = \"{id}\"\nkeys = [\"sha256:{}\"]\n[limits]\n{limits}",
        KeyDigest::of(key).hex(),
    ))
    .unwrap()
}

/// Waits until the current minute has at least `secs` left.
async fn fresh_window(secs: u64) {
    let left = WINDOW_MS - now_ms() % WINDOW_MS;
    if left < secs * 1000 {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

async fn post(http: &reqwest::Client, gw: &Gateway, key: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The value of the metric line starting with `prefix` (0 if absent).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn requests_per_minute_refuse_with_openais_429_and_headers_on_every_response() {
    fresh_window(15).await;
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 8);
    f.tenants = vec![
        tenant(
            "rpm",
            "key-of-rpm-tenant-000001",
            "requests_per_minute = 3\ntokens_per_minute = 100000",
        ),
        tenant(
            "small",
            "key-of-small-tenant-00001",
            "tokens_per_minute = 40",
        ),
        tenant("open", "key-of-open-tenant-000001", ""),
    ];
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    for left in ["2", "1", "0"] {
        let r = post(
            &http,
            &gw,
            "key-of-rpm-tenant-000001",
            &chat(MODEL, 4, false),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), Some(left));
        assert_eq!(header(&r, "x-ratelimit-limit-tokens"), Some("100000"));
        assert!(
            header(&r, "x-ratelimit-reset-requests")
                .unwrap()
                .ends_with('s')
        );
        assert!(header(&r, "x-ratelimit-remaining-tokens").is_some());
    }
    let r = post(
        &http,
        &gw,
        "key-of-rpm-tenant-000001",
        &chat(MODEL, 4, true),
    )
    .await;
    assert_eq!(r.status(), 429);
    let after: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), Some("0"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "requests");
    assert!(v["error"]["message"].as_str().unwrap().contains("Limit 3"));

    // a prompt larger than the whole token window is refused, and waiting would not help
    let long = "word ".repeat(400);
    let body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": long}], "max_tokens": 4});
    let r = post(&http, &gw, "key-of-small-tenant-00001", &body).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "tokens");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large")
    );

    // a tenant without limits gets no rate-limit headers
    let r = post(
        &http,
        &gw,
        "key-of-open-tenant-000001",
        &chat(MODEL, 4, false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "x-ratelimit-limit-requests").is_none());

    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            "inferplane_tenant_rejections_total{tenant=\"rpm\",reason=\"requests_per_minute\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "inferplane_tenant_rejections_total{tenant=\"small\",reason=\"tokens_per_minute\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "inferplane_tenant_requests_total{tenant=\"rpm\",status=\"rejected\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn concurrent_requests_and_spend_budgets_are_limits_too() {
    fresh_window(15).await;
    let a = sim_with("a", MODEL, |c| {
        // a real step time: a long stream stays in flight while the test looks
        c.profile = inferplane_sim::EngineProfile::preset("llama-3.1-8b-h100").unwrap();
    })
    .await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 8);
    f.pools[0].instances[0].price =
        Some(toml::from_str("per_million_tokens = { input = 1000.0, output = 1000.0 }").unwrap());
    f.tenants = vec![
        tenant("conc", "key-of-conc-tenant-000001", "concurrent = 2"),
        tenant("budget", "key-of-budget-tenant-0001", "budget_usd = 0.001"),
    ];
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let key = "key-of-conc-tenant-000001";
    // two long streams in flight (their headers arrived: admitted and running)
    let s1 = post(&http, &gw, key, &chat(MODEL, 400, true)).await;
    let s2 = post(&http, &gw, key, &chat(MODEL, 400, true)).await;
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    let r = post(&http, &gw, key, &chat(MODEL, 4, false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), Some("1"));
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent")
    );
    // one ends: room again
    assert!(s1.text().await.unwrap().contains("[DONE]"));
    let mut ok = false;
    for _ in 0..200 {
        if post(&http, &gw, key, &chat(MODEL, 4, false)).await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "a finished stream frees its place");
    // a client that leaves mid-stream frees its place too (what streamed is settled)
    drop(s2);
    let usage = format!("{}/admin/tenants/conc/usage", gw.url());
    eventually("the left stream is settled", || async {
        let v: Value = http.get(&usage).send().await.unwrap().json().await.unwrap();
        v["window"]["in_flight"] == 0 && v["window"]["scope"] == "local"
    })
    .await;

    // the first request spends more than the budget; from then on: insufficient_quota
    let key = "key-of-budget-tenant-0001";
    let r = post(&http, &gw, key, &chat(MODEL, 8, false)).await;
    assert_eq!(r.status(), 200);
    let mut refused = None;
    for _ in 0..200 {
        let r = post(&http, &gw, key, &chat(MODEL, 8, false)).await;
        if r.status() == 429 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let v = refused.expect("the spent budget refuses");
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert_eq!(v["error"]["type"], "insufficient_quota");
}

#[tokio::test]
async fn keys_are_made_listed_without_secrets_and_revoked_through_the_admin_api() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 8);
    f.tenants = vec![tenant(
        "team",
        "key-of-team-tenant-000001",
        "requests_per_minute = 1000",
    )];
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}/admin{path}", gw.url());
    let r = http
        .post(admin("/tenants/team/keys"))
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let secret = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["tenant"], "team");
    let r = post(&http, &gw, &secret, &chat(MODEL, 4, false)).await;
    assert_eq!(r.status(), 200);

    let listed = http
        .get(admin("/tenants"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains(&id) && listed.contains("\"ci\""),
        "{listed}"
    );
    let v: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v["tenants"][0]["id"], "team");
    assert!(
        v["tenants"][0]["totals"]["requests"].is_u64(),
        "the dashboard ranks by these: {v}"
    );
    let digest = KeyDigest::of(&secret).hex();
    let config_digest = KeyDigest::of("key-of-team-tenant-000001").hex();
    let metrics = metrics_text(&gw).await;
    for text in [&listed, &metrics] {
        assert!(
            !text.contains(&secret) && !text.contains(&digest) && !text.contains(&config_digest)
        );
        assert!(!text.contains("key-of-team-tenant-000001"));
    }
    let keys: Value = http
        .get(admin("/tenants/team/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2, "{keys}");

    // counted when the dispatcher hears of the end, just after the answer
    eventually("the answer is counted", || async {
        let v: Value = http
            .get(admin("/tenants/team/usage"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["totals"]["succeeded"] == 1
    })
    .await;
    let usage: Value = http
        .get(admin("/tenants/team/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["tenant"], "team");
    assert_eq!(usage["limits"]["requests_per_minute"], 1000);
    assert_eq!(usage["totals"]["succeeded"], 1, "{usage}");
    assert!(usage["totals"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(usage["window"]["requests"].as_u64().unwrap() >= 1);

    // malformed bodies name the field; unknown tenants and keys are 404s
    for (body, param) in [
        (json!({"name": 7}), "name"),
        (json!({"label": "x"}), "label"),
    ] {
        let r = http
            .post(admin("/tenants/team/keys"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param);
    }
    let r = http
        .post(admin("/tenants/nobody/keys"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(admin("/tenants/nobody/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = http
        .delete(admin(&format!("/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains(&secret));
    let r = post(&http, &gw, &secret, &chat(MODEL, 4, false)).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let r = http
        .delete(admin(&format!("/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

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
        f.shared.redis = Some(redis.to_string());
        f.shared.replica_id = Some(format!("gw-{r}"));
        f.shared.period = Duration::from_millis(20);
        f.shared.fallback_after = Duration::from_millis(200);
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
        let (http, url) = (http.clone(), gws[gw].url());
        async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat(MODEL, 4, false))
                .send()
                .await
                .unwrap()
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
    let keys: Value = http
        .get(admin(&gws[0], "/tenants/batch/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let mut refused = None;
    for _ in 0..200 {
        let r = post(&http, &gws[1], key, &chat(MODEL, 8, false)).await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
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
    let usage: Value = http
        .get(format!("{}/admin/tenants/daily/usage", gws[1].url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        usage["window"]["spent_usd"].as_f64().unwrap() > 0.001,
        "{usage}"
    );
    assert_eq!(usage["limits"]["budget_period"], "day");
}

#[tokio::test]
async fn spend_counted_while_redis_was_down_reaches_it_with_the_next() {
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
    // the next request's spend carries what the store missed
    let mut sent = false;
    for _ in 0..100 {
        let r = post(&http, &gws[0], key, &chat(MODEL, 8, false)).await;
        assert_eq!(r.status(), 200);
        let spent = cost(&metrics_text(&gws[0]).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if (stored().await - spent).abs() < 1e-9 * spent.max(1.0) {
            sent = true;
            break;
        }
    }
    assert!(
        sent,
        "Redis holds all this replica spent: {} of {}",
        stored().await,
        cost(&metrics_text(&gws[0]).await)
    );
    assert!(stored().await > 0.0);
}
