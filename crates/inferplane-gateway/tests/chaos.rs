//! Chaos, bounded in count and time: a pool where one engine fails every request, one
//! hangs before its first token, one is slowed 10x and one is healthy, under concurrent
//! streamed and whole requests, with an engine killed midway; and ten times the load a
//! pool can serve, of mixed classes, with the default scheduling and queue settings: the
//! lowest classes are shed first with a quick 429 and `Retry-After` (within their class's
//! wait target, never after the queue timeout), critical work is served. Every client gets
//! an answer (a success or an OpenAI-shaped error), nothing hangs past its timeouts, and
//! every accepted request is accounted for: completed + rejected + failed + cancelled = sent.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use inferplane_core::Priority;
use inferplane_core::scheduler::SchedulerConfig;
use inferplane_sim::{EngineProfile, FaultConfig};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn every_request_is_answered_and_accounted_for_under_mixed_faults() {
    let good = sim("good", MODEL).await;
    let failing = sim_with("failing", MODEL, |c| c.faults.fail_all = true).await;
    let hung = sim_with("hung", MODEL, |c| c.faults.hang_before_first_token = true).await;
    let slow = sim_with("slow", MODEL, |c| c.faults.slowdown = 10.0).await;
    let dying = sim("dying", MODEL).await;
    let mut f = fast_config();
    f.timeouts.first_byte = Duration::from_millis(400);
    f.timeouts.total = Duration::from_secs(10);
    f.retry.max_attempts = 3;
    add_pool(
        &mut f,
        MODEL,
        &[
            ("good", &good),
            ("failing", &failing),
            ("hung", &hung),
            ("slow", &slow),
            ("dying", &dying),
        ],
        8,
    );
    let gw = gateway(f, 5).await;
    let http = reqwest::Client::new();
    let sent = 60u64;
    let tasks: Vec<_> = (0..sent)
        .map(|i| {
            let (http, url) = (http.clone(), gw.url());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&chat(MODEL, 4, i % 2 == 0))
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                (status, body)
            })
        })
        .collect();
    // an engine dies while requests are in flight
    tokio::time::sleep(Duration::from_millis(100)).await;
    dying.faults().set(FaultConfig {
        refuse_connections: true,
        ..FaultConfig::default()
    });
    let mut ok = 0;
    for t in tasks {
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("no client is left hanging")
            .unwrap();
        if status == 200 {
            ok += 1;
        } else {
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("an OpenAI-shaped error: {status} {body}"));
            assert!(v["error"]["message"].is_string(), "{v}");
        }
    }
    // retries land on the good and the slow engines
    assert!(ok >= sent * 3 / 4, "{ok} of {sent} served");
    assert_accounted(&gw, sent).await;
    gw.shutdown().await;
}

/// What one overload client saw.
struct Answer {
    class: Priority,
    status: u16,
    code: String,
    retry_after: Option<u32>,
    took: Duration,
}

#[tokio::test]
async fn ten_times_overload_sheds_the_lowest_class_first_with_quick_429s_and_loses_nothing() {
    // Two engines running at most 2 sequences each (vLLM's `max_num_seqs`, which vLLM does
    // not report, so the pool says it as `max_batch`). The scheduling and queue settings
    // are the defaults (policy, overload waits, queue timeout, max queue); only health,
    // scrape and circuit timings are sped up by `fast_config`.
    let seqs = 2u32;
    let a = sim_with("a", MODEL, |c| c.profile.max_num_seqs = seqs).await;
    let b = sim_with("b", MODEL, |c| c.profile.max_num_seqs = seqs).await;
    let profile = EngineProfile::preset("tiny").unwrap();
    let mut f = fast_config();
    f.pools.push(
        toml::from_str(&format!(
            "model = \"{MODEL}\"\nmax_batch = {seqs}\n\
             [[instances]]\nid = \"a\"\nurl = \"{}\"\n[[instances]]\nid = \"b\"\nurl = \"{}\"\n",
            a.url(),
            b.url()
        ))
        .unwrap(),
    );
    let sched = f.clone().validate().unwrap().scheduler_for(MODEL);
    assert_eq!(
        sched,
        SchedulerConfig::default(),
        "the default scheduling and queue"
    );
    let queue_timeout = sched.queue_timeout.unwrap();
    let waits = sched.overload.wait;
    let gw = gateway(f, 2).await;

    // What the pool serves: 4 sequences, each `max_tokens` steps of a full batch (the
    // engines may run slower than their model in a debug build, which only adds overload).
    let max_tokens = 100u32;
    let step = profile.decode_step_base_secs + f64::from(seqs) * profile.decode_secs_per_seq;
    let capacity = f64::from(2 * seqs) / (f64::from(max_tokens) * step); // requests/s
    let window = Duration::from_secs(2);
    let overload = 10.0;
    let n = (overload * capacity * window.as_secs_f64()).round() as u64;
    let classes = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];
    // the mix, per ten requests: 1 critical, 2 high, 3 normal, 4 low
    let mix = [0, 1, 1, 2, 2, 2, 3, 3, 3, 3].map(|c| classes[c]);

    let http = reqwest::Client::new();
    // a first answer per slot measures the engines (nothing is shed on a guess before)
    let body = chat(MODEL, max_tokens, false);
    let warm: Vec<_> = (0..2 * seqs)
        .map(|_| post_chat(&http, &gw, &body))
        .collect();
    for (status, _, body) in futures_util::future::join_all(warm).await {
        assert_eq!(status, 200, "{body}");
    }
    let warm_up = u64::from(2 * seqs);

    // open loop: n requests spread evenly over the window, in the mix's order; each client
    // waits for its answer no longer than its class's wait target, half again, and a
    // moment to be served
    let gap = window.div_f64(n as f64);
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(gap);
    for i in 0..n {
        tick.tick().await;
        let class = mix[i as usize % mix.len()];
        let (http, url) = (http.clone(), gw.url());
        let timeout = waits.get(class).mul_f64(1.5) + Duration::from_secs(2);
        let stream = i % 2 == 0;
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .header("x-priority", class.as_str())
                .json(&chat(MODEL, max_tokens, stream))
                .timeout(timeout)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{class}: no answer within {timeout:?}: {e}"));
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse().unwrap());
            let body = r
                .text()
                .await
                .unwrap_or_else(|e| panic!("{class}: no whole answer within {timeout:?}: {e}"));
            let code = if status == 200 {
                let whole = if stream {
                    body.trim_end().ends_with("data: [DONE]")
                } else {
                    body.contains("\"choices\"")
                };
                assert!(whole, "a complete answer: {body}");
                String::new()
            } else {
                let v: serde_json::Value = serde_json::from_str(&body)
                    .unwrap_or_else(|_| panic!("an OpenAI-shaped error: {status} {body}"));
                assert!(v["error"]["message"].is_string(), "{v}");
                v["error"]["code"].as_str().unwrap_or_default().to_string()
            };
            Answer {
                class,
                status,
                code,
                retry_after,
                took: start.elapsed(),
            }
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("every client gets an answer in time"));
    }

    let mut served = [0u64; 4];
    let mut sent = [0u64; 4];
    let mut shed = [0u64; 4];
    let mut slowest_429 = Duration::ZERO;
    for a in &answers {
        let c = a.class.index();
        sent[c] += 1;
        match (a.status, a.code.as_str()) {
            (200, _) => served[c] += 1,
            (429, "shed" | "queue_full") => {
                shed[c] += 1;
                slowest_429 = slowest_429.max(a.took);
                let after = a.retry_after.expect("a 429 says Retry-After");
                assert!((1..=30).contains(&after), "Retry-After {after}");
            }
            // a class's wait target ran out in the queue: a clear 503, not a hang
            (503, "queue_timeout") => assert_eq!(a.retry_after, Some(1)),
            (s, code) => panic!("unexpected answer {s} {code} for {}", a.class),
        }
        if a.status != 200 {
            // refused within the class's wait target (half again as slack), never held
            // for the queue timeout
            let bound = waits.get(a.class).mul_f64(1.5);
            assert!(a.took <= bound, "{} refused after {:?}", a.class, a.took);
        }
    }
    let rate = |c: Priority| served[c.index()] as f64 / sent[c.index()] as f64;
    eprintln!(
        "capacity {capacity:.1}/s, sent {n} in {window:?}: served {served:?} of {sent:?}, \
         429 {shed:?} (critical, high, normal, low), slowest 429 {slowest_429:?}"
    );
    assert!(slowest_429 < queue_timeout / 2, "{slowest_429:?}");
    assert!(shed[Priority::Low.index()] > 0, "low is shed with 429");
    assert!(rate(Priority::Critical) >= 0.9, "critical is served");
    for pair in classes.windows(2) {
        assert!(
            rate(pair[0]) >= rate(pair[1]),
            "{} before {}",
            pair[0],
            pair[1]
        );
    }
    assert!(rate(Priority::Low) < rate(Priority::Critical));
    // and no more than the overload requires: what the pool can serve within high's wait
    // target after the critical work is served (here all of it: the last high request finds
    // less than half its wait target of work ahead of it)
    let high = Priority::High.index();
    let room = capacity * (window + waits.high).as_secs_f64() - (sent[0] + warm_up) as f64;
    let servable = room.clamp(0.0, sent[high] as f64);
    assert!(
        served[high] as f64 >= 0.9 * servable,
        "high: {} served of {servable:.0} servable",
        served[high]
    );

    let counted = assert_accounted(&gw, warm_up + n).await;
    assert_eq!(
        counted.status("success"),
        warm_up + served.iter().sum::<u64>(),
        "{counted:?}"
    );
    gw.shutdown().await;
}
