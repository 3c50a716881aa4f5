//! The watch survives: bookmarks, 410 Expired, cut connections and 500s re-list or resume
//! without an instance ever leaving.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

#[tokio::test]
async fn a_410_and_broken_or_failing_watches_relist_or_resume_without_an_instance_leaving() {
    let a = sim("a", MODEL).await;
    let b = sim("b", MODEL).await;
    let api = KubeApi::start().await;
    for (name, s) in [("engine-a", &a), ("engine-b", &b)] {
        api.put(
            Kind::Pod,
            NS,
            pod(
                name,
                &[("app", "vllm"), LABEL],
                &[],
                "127.0.0.1",
                ("http", port_of(s)),
                true,
            ),
        );
    }
    let gw = discovering(&api, |k| {
        k.selector = Some("app=vllm".into());
        k.port = Some(inferplane_gateway::config::PortRef::Name("http".into()));
    })
    .await;
    let http = reqwest::Client::new();
    until(&http, &gw, "both routable", |m| {
        ready(m, "engine-a") && ready(m, "engine-b")
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let rec = recorder(
        http.clone(),
        gw.url(),
        vec!["engine-a".into(), "engine-b".into()],
        stop.clone(),
    );
    let lists = |api: &KubeApi| {
        api.requests()
            .iter()
            .filter(|r| r.contains("/pods?") && !r.contains("watch=true"))
            .count()
    };
    let watches_from = |api: &KubeApi, rv: u64| {
        api.requests()
            .iter()
            .filter(|r| r.contains("watch=true") && r.contains(&format!("resourceVersion={rv}&")))
            .count()
    };
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true"))
    );

    // 1. a bookmark carries the watch past changes it does not see: a cut connection then
    // resumes from the bookmark, with no re-list, though older history was dropped
    api.put(
        Kind::Pod,
        NS,
        pod(
            "unrelated",
            &[("app", "other")],
            &[],
            "127.0.0.2",
            ("http", 1),
            true,
        ),
    );
    let rv = api.bookmark();
    // a moment for the bookmark line to cross the loopback connection (not the assertion:
    // that is the resourceVersion the watch resumes from below)
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.compact();
    let before = lists(&api);
    api.drop_watches();
    wait(
        "the watch resumes from the bookmark",
        || watches_from(&api, rv) >= 1,
        &api,
    )
    .await;
    assert_eq!(lists(&api), before, "no re-list after a bookmark");

    touch(&api, &gw, &a).await;

    // 2. a change it does not see, history dropped, connection cut: 410 Expired, re-list
    api.put(
        Kind::Pod,
        NS,
        pod(
            "unrelated",
            &[("app", "other")],
            &[],
            "127.0.0.3",
            ("http", 1),
            true,
        ),
    );
    api.compact();
    let before = lists(&api);
    let inits = metric(&gw, "inferplane_discovery_events_total{kind=\"init\"}").await;
    api.drop_watches();
    wait("a re-list after 410", || lists(&api) > before, &api).await;
    for _ in 0..1000 {
        if metric(&gw, "inferplane_discovery_events_total{kind=\"init_done\"}").await > inits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(metric(&gw, "inferplane_discovery_events_total{kind=\"init_done\"}").await > inits);

    touch(&api, &gw, &a).await;

    // 3. watch requests answering 500, then a list answering 500 during a re-list
    api.fail_watches(2);
    api.drop_watches();
    let errors = metric(&gw, "inferplane_discovery_events_total{kind=\"error\"}").await;
    for _ in 0..1500 {
        if api.watchers() > 0
            && metric(&gw, "inferplane_discovery_events_total{kind=\"error\"}").await
                >= errors + 2.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // an event the watch sees ends the backoff's growth (kube's backoff restarts on an
    // event; it does not on a quiet watch), as any change in a cluster would
    touch(&api, &gw, &a).await;
    api.put(
        Kind::Pod,
        NS,
        pod(
            "unrelated",
            &[("app", "other")],
            &[],
            "127.0.0.4",
            ("http", 1),
            true,
        ),
    );
    api.compact();
    api.fail_lists(1);
    api.drop_watches();
    // the watch is live again: a new pod arrives
    let c = sim("c", MODEL).await;
    api.put(
        Kind::Pod,
        NS,
        pod(
            "engine-c",
            &[("app", "vllm"), LABEL],
            &[],
            "127.0.0.1",
            ("http", port_of(&c)),
            true,
        ),
    );
    until(&http, &gw, "engine-c routable after the errors", |m| {
        ready(m, "engine-c")
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (flapped, samples) = rec.await.unwrap();
    assert!(samples > 50, "recorded continuously ({samples} samples)");
    assert!(
        !flapped,
        "no instance left or stopped being ready during 410s and watch errors"
    );
    assert!(metric(&gw, "inferplane_discovery_events_total{kind=\"error\"}").await >= errors + 3.0);
    gw.shutdown().await;
}
