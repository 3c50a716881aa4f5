//! A publisher that speaks vLLM's `ZmqEventPublisher` protocol: batches on a PUB socket as
//! `[topic, seq, payload]`, and a ROUTER replay socket that answers a start sequence
//! number with the buffered batches from there on, then an end marker.

use crate::event::{KvEventBatch, encode_batch};
use crate::{END_SEQ, TransportError};
use bytes::Bytes;
use std::collections::VecDeque;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// Where and how to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    /// PUB endpoint to bind, e.g. `tcp://*:5557` or `tcp://127.0.0.1:0`.
    pub endpoint: String,
    /// ROUTER endpoint to bind for replay requests; `None`: no replay.
    pub replay_endpoint: Option<String>,
    /// The first frame of every message (vLLM's `topic`, empty by default).
    pub topic: String,
    /// Batches kept for replay (vLLM's `buffer_steps`).
    pub buffer_steps: usize,
    /// Batches waiting to be sent before newer ones are dropped (and their sequence
    /// numbers skipped, so subscribers see the gap).
    pub queue_capacity: usize,
}

impl PublisherConfig {
    /// vLLM's defaults (`buffer_steps = 10_000`) for a PUB endpoint, no replay, no topic.
    pub fn new(endpoint: impl Into<String>) -> Self {
        PublisherConfig {
            endpoint: endpoint.into(),
            replay_endpoint: None,
            topic: String::new(),
            buffer_steps: 10_000,
            queue_capacity: 1024,
        }
    }
}

/// A running publisher. Sequence numbers start at 0 and grow by one per published (or
/// dropped) batch.
#[derive(Debug)]
pub struct Publisher {
    tx: mpsc::Sender<(u64, KvEventBatch)>,
    next_seq: u64,
    dropped: u64,
    endpoint: String,
    replay_endpoint: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// ZMQ's `tcp://*:port` (every interface, vLLM's default) as the address the socket
/// library resolves: `tcp://0.0.0.0:port`.
fn bind_address(endpoint: &str) -> String {
    match endpoint.strip_prefix("tcp://*:") {
        Some(port) => format!("tcp://0.0.0.0:{port}"),
        None => endpoint.to_owned(),
    }
}

impl Publisher {
    /// Binds the sockets and starts the sending task. Binding to port 0 picks a free port:
    /// see [`Publisher::endpoint`]. `tcp://*:port` binds every interface, as in ZMQ.
    pub async fn bind(config: PublisherConfig) -> Result<Publisher, TransportError> {
        let mut pub_socket = PubSocket::new();
        let endpoint = pub_socket
            .bind(&bind_address(&config.endpoint))
            .await
            .map_err(|source| TransportError::Bind {
                endpoint: config.endpoint.clone(),
                source,
            })?
            .to_string();
        let (replay, replay_endpoint) = match &config.replay_endpoint {
            Some(ep) => {
                let mut router = RouterSocket::new();
                let bound = router.bind(&bind_address(ep)).await.map_err(|source| {
                    TransportError::Bind {
                        endpoint: ep.clone(),
                        source,
                    }
                })?;
                (Some(router), Some(bound.to_string()))
            }
            None => (None, None),
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(
            SendTask {
                pub_socket,
                replay,
                topic: Bytes::from(config.topic.into_bytes()),
                buffer: VecDeque::new(),
                buffer_steps: config.buffer_steps,
            }
            .run(rx, stop_rx),
        );
        Ok(Publisher {
            tx,
            next_seq: 0,
            dropped: 0,
            endpoint,
            replay_endpoint,
            stop: Some(stop_tx),
            task,
        })
    }

    /// The bound PUB endpoint, port resolved (`tcp://127.0.0.1:40123`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bound replay endpoint, port resolved.
    pub fn replay_endpoint(&self) -> Option<&str> {
        self.replay_endpoint.as_deref()
    }

    /// Queues a batch; never waits. Returns its sequence number. When the queue is full
    /// the batch is dropped but its number is still used, so subscribers see a gap.
    pub fn publish(&mut self, batch: KvEventBatch) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.tx.try_send((seq, batch)).is_err() {
            self.dropped += 1;
            tracing::warn!(
                seq,
                "KV event queue full or publisher stopped: batch dropped"
            );
        }
        seq
    }

    /// Batches dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Sends what is queued, then closes the sockets.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

struct SendTask {
    pub_socket: PubSocket,
    replay: Option<RouterSocket>,
    topic: Bytes,
    buffer: VecDeque<(u64, Bytes)>,
    buffer_steps: usize,
}

impl SendTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(u64, KvEventBatch)>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                item = rx.recv() => match item {
                    Some((seq, batch)) => self.send(seq, &batch).await,
                    None => break,
                },
                req = recv_replay(&mut self.replay) => self.serve_replay(req).await,
            }
        }
        // Drain what was queued before the stop.
        rx.close();
        while let Some((seq, batch)) = rx.recv().await {
            self.send(seq, &batch).await;
        }
        let _ = self.pub_socket.close().await;
        if let Some(router) = self.replay.take() {
            let _ = router.close().await;
        }
    }

    async fn send(&mut self, seq: u64, batch: &KvEventBatch) {
        let payload = match encode_batch(batch) {
            Ok(p) => Bytes::from(p),
            Err(e) => {
                tracing::error!(seq, error = %e, "KV event batch not encodable: skipped");
                return;
            }
        };
        let mut msg = ZmqMessage::from(self.topic.clone());
        msg.push_back(Bytes::copy_from_slice(&seq.to_be_bytes()));
        msg.push_back(payload.clone());
        if let Err(e) = self.pub_socket.send(msg).await {
            tracing::warn!(seq, error = %e, "KV event batch not sent");
        }
        if self.buffer_steps > 0 {
            if self.buffer.len() == self.buffer_steps {
                self.buffer.pop_front();
            }
            self.buffer.push_back((seq, payload));
        }
    }

    /// Answers `[identity, "", start_seq]` with `[identity, "", seq, payload]` for every
    /// buffered batch from `start_seq` on, then `[identity, "", -1, ""]`.
    async fn serve_replay(&mut self, req: Result<ZmqMessage, zeromq::ZmqError>) {
        let Some(router) = self.replay.as_mut() else {
            return;
        };
        let frames = match req {
            Ok(m) => m.into_vec(),
            Err(e) => {
                tracing::debug!(error = %e, "replay socket receive failed");
                return;
            }
        };
        let [identity, delimiter, start] = frames.as_slice() else {
            tracing::warn!(frames = frames.len(), "invalid replay request: ignored");
            return;
        };
        let Ok(start) = <[u8; 8]>::try_from(start.as_ref()) else {
            tracing::warn!("replay request without an 8-byte sequence number: ignored");
            return;
        };
        let start = u64::from_be_bytes(start);
        let replies = self
            .buffer
            .iter()
            .filter(|(seq, _)| *seq >= start)
            .map(|(seq, payload)| (Bytes::copy_from_slice(&seq.to_be_bytes()), payload.clone()))
            .chain(std::iter::once((
                Bytes::from_static(&END_SEQ),
                Bytes::new(),
            )));
        for (seq, payload) in replies {
            let mut msg = ZmqMessage::from(identity.clone());
            msg.push_back(delimiter.clone());
            msg.push_back(seq);
            msg.push_back(payload);
            if let Err(e) = router.send(msg).await {
                tracing::debug!(error = %e, "replay reply not sent: client gone");
                return;
            }
        }
    }
}

/// The next replay request, or never when there is no replay socket.
async fn recv_replay(replay: &mut Option<RouterSocket>) -> Result<ZmqMessage, zeromq::ZmqError> {
    match replay {
        Some(router) => router.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn star_binds_every_interface_as_in_zmq() {
        assert_eq!(bind_address("tcp://*:5557"), "tcp://0.0.0.0:5557");
        assert_eq!(bind_address("tcp://127.0.0.1:1"), "tcp://127.0.0.1:1");
        let p = Publisher::bind(PublisherConfig {
            replay_endpoint: Some("tcp://*:0".into()),
            ..PublisherConfig::new("tcp://*:0")
        })
        .await
        .unwrap();
        assert!(
            p.endpoint().starts_with("tcp://0.0.0.0:"),
            "{}",
            p.endpoint()
        );
        assert!(p.replay_endpoint().is_some_and(|e| !e.ends_with(":0")));
        p.shutdown().await;
    }
}
