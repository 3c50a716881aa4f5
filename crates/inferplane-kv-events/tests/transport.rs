//! The publisher and subscriber over loopback TCP, ports from the OS.

use bytes::Bytes;
use inferplane_kv_events::{
    BlockHash, BlockRemoved, END_SEQ, KvEvent, KvEventBatch, Publisher, PublisherConfig,
    Subscriber, SubscriberConfig, SubscriberEvent, decode_batch, encode_batch,
};
use std::time::Duration;
use zeromq::{DealerSocket, PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const WAIT: Duration = Duration::from_secs(10);

fn batch(n: i128) -> KvEventBatch {
    KvEventBatch {
        ts: n as f64,
        events: vec![KvEvent::BlockRemoved(BlockRemoved {
            block_hashes: vec![BlockHash::Int(n)],
            medium: Some("GPU".into()),
        })],
        data_parallel_rank: None,
    }
}

fn hash_of(b: &KvEventBatch) -> i128 {
    match &b.events[0] {
        KvEvent::BlockRemoved(r) => match r.block_hashes[0] {
            BlockHash::Int(v) => v,
            BlockHash::Bytes(_) => -1,
        },
        _ => -1,
    }
}

async fn next(sub: &mut Subscriber) -> SubscriberEvent {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("subscriber event in time")
        .expect("subscriber running")
}

/// Publishes `batch(seq)` until the subscriber has seen one (a SUB socket misses what is
/// sent before its subscription reaches the publisher), returning the first seq it saw.
async fn sync(publisher: &mut Publisher, sub: &mut Subscriber) -> u64 {
    loop {
        let seq = publisher.publish(batch(0));
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            match ev {
                SubscriberEvent::Connected => continue,
                // Joined after the first batches: earlier ones replayed or reported.
                SubscriberEvent::Gap { from: 0, .. } => continue,
                SubscriberEvent::Batch { seq, .. } => {
                    // Drain the rest of the sync batches.
                    let mut last = seq;
                    while let Ok(Some(SubscriberEvent::Batch { seq, .. })) =
                        tokio::time::timeout(Duration::from_millis(200), sub.recv()).await
                    {
                        last = seq;
                    }
                    return last;
                }
                other => panic!("unexpected {other:?} while syncing at {seq}"),
            }
        }
    }
}

fn config_with_replay() -> PublisherConfig {
    PublisherConfig {
        replay_endpoint: Some("tcp://127.0.0.1:0".into()),
        topic: "kv".into(),
        ..PublisherConfig::new("tcp://127.0.0.1:0")
    }
}

#[tokio::test]
async fn subscriber_receives_batches_in_order_with_topic_filter() {
    let mut publisher = Publisher::bind(config_with_replay()).await.unwrap();
    let mut sub = Subscriber::spawn(SubscriberConfig {
        topic: "kv".into(),
        ..SubscriberConfig::new(publisher.endpoint())
    });
    let last = sync(&mut publisher, &mut sub).await;
    for n in 1..=20 {
        publisher.publish(batch(n));
    }
    for n in 1..=20 {
        match next(&mut sub).await {
            SubscriberEvent::Batch { seq, batch } => {
                assert_eq!(seq, last + n as u64);
                assert_eq!(hash_of(&batch), n);
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }
    sub.shutdown().await;
    publisher.shutdown().await;
}

#[tokio::test]
async fn replay_socket_answers_with_buffered_batches_then_the_end_marker() {
    let mut publisher = Publisher::bind(PublisherConfig {
        buffer_steps: 3,
        ..config_with_replay()
    })
    .await
    .unwrap();
    for n in 0..5 {
        publisher.publish(batch(n));
    }
    let mut dealer = DealerSocket::new();
    dealer
        .connect(publisher.replay_endpoint().unwrap())
        .await
        .unwrap();
    // Requests may race the publisher's task storing the batches: ask until all are in.
    let replies = loop {
        let req = ZmqMessage::try_from(vec![
            Bytes::new(),
            Bytes::copy_from_slice(&0u64.to_be_bytes()),
        ])
        .unwrap();
        dealer.send(req).await.unwrap();
        let mut replies = Vec::new();
        loop {
            let frames = tokio::time::timeout(WAIT, dealer.recv())
                .await
                .unwrap()
                .unwrap()
                .into_vec();
            assert_eq!(frames.len(), 3, "[\"\", seq, payload]");
            assert!(frames[0].is_empty(), "REQ-style empty delimiter");
            if frames[1].as_ref() == (-1i64).to_be_bytes() {
                assert!(frames[2].is_empty(), "end marker has an empty payload");
                break;
            }
            let seq = u64::from_be_bytes(frames[1].as_ref().try_into().unwrap());
            replies.push((seq, hash_of(&decode_batch(&frames[2]).unwrap())));
        }
        if replies.last().is_some_and(|r| r.0 == 4) {
            break replies;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        replies,
        vec![(2, 2), (3, 3), (4, 4)],
        "only the last buffer_steps kept"
    );
    publisher.shutdown().await;
}

#[tokio::test]
async fn a_gap_is_repaired_from_the_replay_socket() {
    // A scripted engine: raw PUB and ROUTER sockets, so the test decides what is missed.
    let mut pub_socket = PubSocket::new();
    let endpoint = pub_socket
        .bind("tcp://127.0.0.1:0")
        .await
        .unwrap()
        .to_string();
    let mut router = RouterSocket::new();
    let replay = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut sub = Subscriber::spawn(SubscriberConfig {
        replay_endpoint: Some(replay),
        ..SubscriberConfig::new(endpoint)
    });
    let send = |seq: u64| {
        ZmqMessage::try_from(vec![
            Bytes::new(),
            Bytes::copy_from_slice(&seq.to_be_bytes()),
            Bytes::from(encode_batch(&batch(i128::from(seq as u32))).unwrap()),
        ])
        .unwrap()
    };
    // Sync: send seq 0 until the subscriber sees it (repeats read as restarts).
    loop {
        pub_socket.send(send(0)).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            Ok(Some(SubscriberEvent::Batch { seq: 0, .. })) => break,
            Ok(Some(SubscriberEvent::Connected)) | Err(_) => {}
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        assert!(
            matches!(
                ev,
                SubscriberEvent::Restarted { seq: 0 } | SubscriberEvent::Batch { seq: 0, .. }
            ),
            "only repeats of 0 so far, got {ev:?}"
        );
    }
    let last = 0;
    // Skip last+1..=last+3 on PUB; the replay socket holds them.
    pub_socket.send(send(last + 4)).await.unwrap();
    let request = tokio::time::timeout(WAIT, router.recv())
        .await
        .unwrap()
        .unwrap()
        .into_vec();
    assert_eq!(request.len(), 3, "[identity, \"\", start]");
    assert!(request[1].is_empty());
    assert_eq!(request[2].as_ref(), (last + 1).to_be_bytes());
    for s in (last + 1)..=(last + 4) {
        let mut frames = send(s).into_vec();
        frames[0] = Bytes::new(); // delimiter in place of the topic
        frames.insert(0, request[0].clone());
        router
            .send(ZmqMessage::try_from(frames).unwrap())
            .await
            .unwrap();
    }
    let end = vec![
        request[0].clone(),
        Bytes::new(),
        Bytes::copy_from_slice(&END_SEQ),
        Bytes::new(),
    ];
    router
        .send(ZmqMessage::try_from(end).unwrap())
        .await
        .unwrap();
    for expected in (last + 1)..=(last + 4) {
        match next(&mut sub).await {
            SubscriberEvent::Batch { seq, batch } => {
                assert_eq!(seq, expected, "replayed in order, then the live one");
                assert_eq!(hash_of(&batch), i128::from(expected as u32));
            }
            other => panic!("expected batch {expected}, got {other:?}"),
        }
    }
    sub.shutdown().await;
}

#[tokio::test]
async fn batches_dropped_by_a_full_queue_are_reported_as_a_gap() {
    let mut publisher = Publisher::bind(PublisherConfig {
        queue_capacity: 1,
        ..config_with_replay()
    })
    .await
    .unwrap();
    let mut sub = Subscriber::spawn(SubscriberConfig {
        topic: "kv".into(),
        replay_endpoint: publisher.replay_endpoint().map(str::to_owned),
        ..SubscriberConfig::new(publisher.endpoint())
    });
    let start = sync(&mut publisher, &mut sub).await;
    // A burst without yielding (single-threaded test runtime): all but the first dropped,
    // never sent nor buffered, so replay cannot fill them.
    for n in 1..=50 {
        publisher.publish(batch(n));
    }
    assert_eq!(publisher.dropped(), 49);
    tokio::task::yield_now().await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let SubscriberEvent::Batch { seq, .. } = next(&mut sub).await {
            seen.push(seq);
        }
        if seen.len() == 1 {
            publisher.publish(batch(99));
        }
    }
    assert_eq!(seen, vec![start + 1, start + 51]);
    sub.shutdown().await;
    publisher.shutdown().await;
}

#[tokio::test]
async fn gap_event_precedes_the_batch_after_it() {
    let mut publisher = Publisher::bind(PublisherConfig {
        queue_capacity: 1,
        ..config_with_replay()
    })
    .await
    .unwrap();
    let mut sub = Subscriber::spawn(SubscriberConfig {
        topic: "kv".into(),
        replay_endpoint: publisher.replay_endpoint().map(str::to_owned),
        ..SubscriberConfig::new(publisher.endpoint())
    });
    let start = sync(&mut publisher, &mut sub).await;
    publisher.publish(batch(1));
    publisher.publish(batch(2)); // dropped: queue of one
    publisher.publish(batch(3)); // dropped
    match next(&mut sub).await {
        SubscriberEvent::Batch { seq, .. } => assert_eq!(seq, start + 1),
        other => panic!("{other:?}"),
    }
    publisher.publish(batch(4));
    match next(&mut sub).await {
        SubscriberEvent::Gap { from, to } => assert_eq!((from, to), (start + 2, start + 3)),
        other => panic!("expected the gap, got {other:?}"),
    }
    match next(&mut sub).await {
        SubscriberEvent::Batch { seq, batch } => {
            assert_eq!(seq, start + 4);
            assert_eq!(hash_of(&batch), 4);
        }
        other => panic!("{other:?}"),
    }
    sub.shutdown().await;
    publisher.shutdown().await;
}

#[tokio::test]
async fn an_engine_restart_on_the_same_port_is_reconnected_and_reported() {
    let mut publisher = Publisher::bind(PublisherConfig::new("tcp://127.0.0.1:0"))
        .await
        .unwrap();
    let endpoint = publisher.endpoint().to_owned();
    let mut sub = Subscriber::spawn(SubscriberConfig {
        backoff_initial: Duration::from_millis(20),
        ..SubscriberConfig::new(endpoint.clone())
    });
    let mut last = sync(&mut publisher, &mut sub).await;
    // Run the old sequence well ahead of what the restarted engine will send here.
    for _ in 0..100 {
        last = publisher.publish(batch(1));
    }
    loop {
        if let SubscriberEvent::Batch { seq, .. } = next(&mut sub).await
            && seq == last
        {
            break;
        }
    }
    publisher.shutdown().await;
    let mut restarted = Publisher::bind(PublisherConfig::new(endpoint))
        .await
        .unwrap();
    // Publish until the reconnected subscriber sees the new sequence.
    let mut saw_restart = false;
    loop {
        restarted.publish(batch(7));
        match tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            Ok(Some(SubscriberEvent::Restarted { seq })) => {
                assert!(seq <= last, "the sequence went back");
                saw_restart = true;
            }
            Ok(Some(SubscriberEvent::Batch { .. })) if saw_restart => break,
            Ok(Some(SubscriberEvent::Batch { seq, .. })) => {
                panic!("batch {seq} without a restart report");
            }
            Ok(Some(SubscriberEvent::Connected)) | Err(_) => {}
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    sub.shutdown().await;
    restarted.shutdown().await;
}

#[tokio::test]
async fn subscriber_waits_for_an_engine_that_is_not_up_yet_and_shuts_down_cleanly() {
    // A free port with nothing on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut sub = Subscriber::spawn(SubscriberConfig {
        connect_timeout: Duration::from_millis(100),
        backoff_initial: Duration::from_millis(20),
        ..SubscriberConfig::new(endpoint.clone())
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.recv())
            .await
            .is_err(),
        "nothing to report while the engine is down"
    );
    let mut publisher = Publisher::bind(PublisherConfig::new(endpoint))
        .await
        .unwrap();
    sync(&mut publisher, &mut sub).await;
    tokio::time::timeout(WAIT, sub.shutdown())
        .await
        .expect("shutdown is bounded");
    publisher.shutdown().await;
}

#[tokio::test]
async fn bad_payloads_are_reported_and_a_silent_replay_socket_times_out_into_a_gap() {
    let mut pub_socket = PubSocket::new();
    let endpoint = pub_socket
        .bind("tcp://127.0.0.1:0")
        .await
        .unwrap()
        .to_string();
    // A replay socket that takes requests and never answers.
    let mut router = RouterSocket::new();
    let replay = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut sub = Subscriber::spawn(SubscriberConfig {
        replay_endpoint: Some(replay),
        replay_timeout: Duration::from_millis(200),
        ..SubscriberConfig::new(endpoint)
    });
    let send = |seq: u64, payload: Bytes| {
        let mut msg = ZmqMessage::from(Bytes::new());
        msg.push_back(Bytes::copy_from_slice(&seq.to_be_bytes()));
        msg.push_back(payload);
        msg
    };
    let good = |seq: u64| Bytes::from(encode_batch(&batch(i128::from(seq as u32))).unwrap());
    loop {
        pub_socket.send(send(0, good(0))).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            Ok(Some(SubscriberEvent::Batch { seq: 0, .. })) => break,
            Ok(Some(SubscriberEvent::Connected)) | Err(_) => {}
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        assert!(matches!(
            ev,
            SubscriberEvent::Restarted { seq: 0 } | SubscriberEvent::Batch { seq: 0, .. }
        ));
    }
    pub_socket
        .send(send(1, Bytes::from_static(b"\xc1 not msgpack")))
        .await
        .unwrap();
    match next(&mut sub).await {
        SubscriberEvent::Undecodable { seq: Some(1), .. } => {}
        other => panic!("expected the bad payload reported, got {other:?}"),
    }
    pub_socket.send(send(4, good(4))).await.unwrap();
    let _request = tokio::time::timeout(WAIT, router.recv())
        .await
        .unwrap()
        .unwrap();
    match next(&mut sub).await {
        SubscriberEvent::Gap { from: 2, to: 3 } => {}
        other => panic!("expected Gap 2..=3 after the replay timed out, got {other:?}"),
    }
    match next(&mut sub).await {
        SubscriberEvent::Batch { seq: 4, .. } => {}
        other => panic!("{other:?}"),
    }
    // A message that is not three frames.
    pub_socket
        .send(ZmqMessage::from(Bytes::from_static(b"x")))
        .await
        .unwrap();
    match next(&mut sub).await {
        SubscriberEvent::Undecodable { seq: None, .. } => {}
        other => panic!("{other:?}"),
    }
    sub.shutdown().await;
}
