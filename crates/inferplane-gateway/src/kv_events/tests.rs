//! The subscriber task's bound: a dispatcher that does not keep up costs at most
//! [`INBOX_BATCHES`] batches and one control message, then a `Lost`.

use super::*;
use crate::telemetry::Telemetry;
use inferplane_core::prefix::block_hashes_of_ids;
use inferplane_kv_events::{BlockHash, BlockStored, KvEvent, KvEventBatch, encode_batch};
use std::time::Duration;
use zeromq::{PubSocket, Socket, SocketSend, ZmqMessage};

async fn publish(socket: &mut PubSocket, seq: u64, n: u32) {
    let ids: Vec<u32> = (0..16).map(|i| i + n * 16).collect();
    let batch = KvEventBatch {
        ts: 0.0,
        events: vec![KvEvent::BlockStored(BlockStored {
            block_hashes: block_hashes_of_ids(&ids)
                .into_iter()
                .map(|h| BlockHash::Int(i128::from(h) + 1))
                .collect(),
            parent_block_hash: None,
            token_ids: ids,
            block_size: 16,
            lora_id: None,
            medium: None,
        })],
        data_parallel_rank: None,
    };
    let mut msg = ZmqMessage::from(Vec::<u8>::new());
    msg.push_back(seq.to_be_bytes().to_vec().into());
    msg.push_back(encode_batch(&batch).unwrap().into());
    socket.send(msg).await.unwrap();
}

#[tokio::test]
async fn a_dispatcher_that_falls_behind_gets_a_bounded_inbox_one_message_and_then_lost() {
    let mut socket = PubSocket::new();
    let endpoint = socket.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let telemetry = Telemetry::new();
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let section = KvEventsSection {
        endpoint,
        replay_endpoint: None,
        topic: String::new(),
    };
    let mut kv = spawn(
        InstanceId::new("e"),
        &section,
        telemetry.kv_events("m", "e"),
        ctl_tx,
    );
    // Until the subscriber is connected, what is published is missed (a PUB socket's
    // slow joiner): publish until the dispatcher is told once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seq = 0;
    while ctl_rx.try_recv().is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never told");
        publish(&mut socket, seq, 0).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(10)).await; // publishing rate
    }
    // Far more batches than the inbox holds, with nobody draining it.
    for n in 0..(INBOX_BATCHES as u32 * 2) {
        publish(&mut socket, seq, n).await;
        seq += 1;
    }
    let overflowed = || {
        telemetry
            .encode()
            .lines()
            .any(|l| l.contains("reason=\"overflow\"") && !l.ends_with(" 0"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !overflowed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no overflow counted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        ctl_rx.try_recv().is_err(),
        "however many events, one message in the control channel"
    );
    let mut batches = 0;
    let mut lost = false;
    let more = kv.inbox.drain(|c| {
        batches += 1;
        lost |= *c == Change::Lost;
    });
    assert!(!more);
    assert!(batches <= INBOX_BATCHES + 1, "bounded: {batches}");
    // With room again the task sends the `Lost` it owes (and tells the dispatcher).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !lost {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Lost after the overflow"
        );
        if ctl_rx.try_recv().is_ok() {
            kv.inbox.drain(|c| lost |= *c == Change::Lost);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(kv);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while telemetry.kv_event_subscribers() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task did not end"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
