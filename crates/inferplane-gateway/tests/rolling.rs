//! A rolling restart of three gateway replicas under load, behind a stand-in load
//! balancer that sends only to replicas whose `/ready` answers 200 (as a Kubernetes
//! Service does with readiness probes): each replica in turn leaves (`/ready` fails, it
//! serves on for the delay, then drains) and a new one takes its place. Clients retry on
//! another replica only when a connection is refused before anything was sent; every
//! request succeeds, streams whole.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use arc_swap::ArcSwap;
use common::*;
use inferplane_gateway::Gateway;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const MODEL: &str = "m";
const REPLICAS: usize = 3;

/// The replicas' URLs the balancer knows, and those whose `/ready` said 200 last.
#[derive(Default)]
struct Balancer {
    known: ArcSwap<Vec<String>>,
    ready: ArcSwap<Vec<String>>,
    next: AtomicUsize,
}

impl Balancer {
    /// Probes every known replica's `/ready` every 20 ms until `stop`.
    async fn probe(self: Arc<Self>, stop: Arc<AtomicBool>) {
        let http = reqwest::Client::new();
        while !stop.load(Ordering::Relaxed) {
            let known = self.known.load_full();
            let mut ready = Vec::new();
            for url in known.iter() {
                let ok = http
                    .get(format!("{url}/ready"))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if ok {
                    ready.push(url.clone());
                }
            }
            self.ready.store(Arc::new(ready));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pick(&self) -> Option<String> {
        let ready = self.ready.load();
        if ready.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(ready[i % ready.len()].clone())
    }
}

async fn replica(sims: &[inferplane_sim::SimServer]) -> Gateway {
    let mut f = fast_config();
    let servers: Vec<(&str, &inferplane_sim::SimServer)> = vec![("s0", &sims[0]), ("s1", &sims[1])];
    add_pool(&mut f, MODEL, &servers, 64);
    gateway(f, sims.len()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_request() {
    let sims = vec![sim("s0", MODEL).await, sim("s1", MODEL).await];
    let lb = Arc::new(Balancer::default());
    let mut gws = Vec::new();
    for _ in 0..REPLICAS {
        let gw = replica(&sims).await;
        lb.known.rcu(|k| [k.as_slice(), &[gw.url()]].concat());
        gws.push(gw);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(lb.clone().probe(stop.clone()));
    eventually("the balancer sees every replica", || async {
        lb.ready.load().len() == REPLICAS
    })
    .await;

    let done = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (lb, done, refused) = (lb.clone(), done.clone(), refused.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut results = Vec::new();
                let mut i = 0u32;
                while !done.load(Ordering::Relaxed) && i < 400 {
                    i += 1;
                    let stream = (c + i).is_multiple_of(2);
                    // retry only when the connection was refused: nothing was sent
                    let mut answer = None;
                    for _ in 0..50 {
                        let Some(url) = lb.pick() else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        match http
                            .post(format!("{url}/v1/chat/completions"))
                            .json(&chat(MODEL, 24, stream))
                            .timeout(Duration::from_secs(20))
                            .send()
                            .await
                        {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let body = r.text().await.map_err(|e| e.to_string());
                                answer = Some((status, body));
                                break;
                            }
                            Err(e) if e.is_connect() => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                answer = Some((0, Err(e.to_string())));
                                break;
                            }
                        }
                    }
                    results.push((stream, answer));
                }
                results
            })
        })
        .collect();

    // restart each replica in turn while the clients run
    for r in 0..REPLICAS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let old = gws.remove(0);
        let old_url = old.url();
        let fresh = replica(&sims).await;
        lb.known.rcu(|k| [k.as_slice(), &[fresh.url()]].concat());
        assert!(
            old.leave(Duration::from_millis(200)).await,
            "replica {r} drained within its grace"
        );
        lb.known.rcu(|k| {
            k.iter()
                .filter(|u| **u != old_url)
                .cloned()
                .collect::<Vec<_>>()
        });
        gws.push(fresh);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    done.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for c in clients {
        for (stream, answer) in c.await.unwrap() {
            sent += 1;
            let (status, body) = answer.expect("a replica answered within the retries");
            let body = body.unwrap_or_else(|e| panic!("the answer was cut: {e}"));
            assert_eq!(status, 200, "{body}");
            if stream {
                assert!(
                    body.trim_end().ends_with("data: [DONE]"),
                    "a whole stream: {body}"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    prober.await.unwrap();
    eprintln!(
        "{sent} requests through three restarts, {} connections refused and retried",
        refused.load(Ordering::Relaxed)
    );
    assert!(sent > 50, "the load ran through the restarts: {sent}");
}
