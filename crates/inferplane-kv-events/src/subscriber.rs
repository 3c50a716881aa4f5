//! A subscriber to one engine's KV events: SUB socket, sequence tracking, replay of missed
//! batches, and typed reports of what could not be recovered.

use crate::event::{DecodeError, KvEventBatch, decode_batch};
use crate::{END_SEQ, TransportError};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zeromq::{DealerSocket, Socket, SocketOptions, SocketRecv, SocketSend, SubSocket, ZmqMessage};

/// Where to subscribe and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberConfig {
    /// The engine's PUB endpoint, e.g. `tcp://10.0.0.5:5557`.
    pub endpoint: String,
    /// The engine's replay endpoint; `None`: gaps are reported, never repaired.
    pub replay_endpoint: Option<String>,
    /// Topic prefix to subscribe to (empty: everything).
    pub topic: String,
    /// Longest wait for one connection attempt.
    pub connect_timeout: Duration,
    /// Longest wait for a whole replay answer.
    pub replay_timeout: Duration,
    /// First delay between failed connection attempts; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest delay between connection attempts.
    pub backoff_max: Duration,
    /// Events buffered for the consumer before the subscriber waits for it.
    pub channel_capacity: usize,
}

impl SubscriberConfig {
    /// Defaults: 2 s connect and replay timeouts, backoff from 100 ms to 10 s.
    pub fn new(endpoint: impl Into<String>) -> Self {
        SubscriberConfig {
            endpoint: endpoint.into(),
            replay_endpoint: None,
            topic: String::new(),
            connect_timeout: Duration::from_secs(2),
            replay_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            channel_capacity: 1024,
        }
    }
}

/// What the subscriber reports, in order.
#[derive(Debug)]
pub enum SubscriberEvent {
    /// The SUB socket is connected (after start, and again after every reconnect the
    /// subscriber itself makes; the socket also reconnects on its own after a drop).
    Connected,
    /// A batch, in sequence order (replayed ones included).
    Batch {
        /// Its sequence number.
        seq: u64,
        /// Its events.
        batch: KvEventBatch,
    },
    /// Batches `from..=to` were missed and could not be replayed: the consumer's view
    /// of this engine's cache is incomplete, so it drops this engine's entries. Joining an
    /// engine that already published, the subscriber first replays from 0; what the
    /// engine's buffer no longer holds is reported this way too.
    Gap {
        /// First missed sequence number.
        from: u64,
        /// Last missed sequence number.
        to: u64,
    },
    /// The sequence went backwards: the engine restarted with an empty cache. The consumer
    /// drops this engine's entries; `seq`'s batch follows as a [`SubscriberEvent::Batch`].
    Restarted {
        /// The first sequence number after the restart.
        seq: u64,
    },
    /// A message that is not `[topic, 8-byte seq, payload]` or whose payload does not
    /// decode: its content is lost, as in a gap.
    Undecodable {
        /// Its sequence number, when the frame was readable.
        seq: Option<u64>,
        /// Why it was not decoded.
        error: UndecodableError,
    },
}

/// Why a message was not usable.
#[derive(Debug, thiserror::Error)]
pub enum UndecodableError {
    /// Not three frames with an 8-byte sequence number.
    #[error("expected [topic, 8-byte seq, payload], got {frames} frames")]
    Framing {
        /// Frames received.
        frames: usize,
    },
    /// The payload is not a KV event batch.
    #[error(transparent)]
    Payload(#[from] DecodeError),
}

/// A running subscription. Dropping it stops the task; [`Subscriber::shutdown`] also
/// waits for it.
#[derive(Debug)]
pub struct Subscriber {
    rx: mpsc::Receiver<SubscriberEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Starts subscribing in a background task; it connects (retrying with backoff) on its
    /// own, so the engine need not be up yet.
    pub fn spawn(config: SubscriberConfig) -> Subscriber {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut task = SubTask {
                config,
                tx,
                last: None,
                replay: None,
            };
            tokio::select! {
                _ = stop_rx => {}
                _ = task.run() => {}
            }
        });
        Subscriber {
            rx,
            stop: Some(stop_tx),
            task,
        }
    }

    /// The next event; `None` once the subscriber has stopped.
    pub async fn recv(&mut self) -> Option<SubscriberEvent> {
        self.rx.recv().await
    }

    /// Stops the task and waits for it to end (it closes its sockets).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

struct SubTask {
    config: SubscriberConfig,
    tx: mpsc::Sender<SubscriberEvent>,
    /// The last sequence number delivered or reported.
    last: Option<u64>,
    replay: Option<DealerSocket>,
}

/// The consumer went away: stop.
struct Closed;

impl SubTask {
    async fn run(&mut self) {
        let mut backoff = self.config.backoff_initial;
        loop {
            let socket = match self.connect().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, ?backoff, "KV event subscriber: connect failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    continue;
                }
            };
            backoff = self.config.backoff_initial;
            if self.emit(SubscriberEvent::Connected).await.is_err() {
                return;
            }
            match self.receive(socket).await {
                Ok(()) => {}
                Err(Closed) => return,
            }
        }
    }

    async fn connect(&self) -> Result<SubSocket, TransportError> {
        let mut options = SocketOptions::default();
        options.connect_timeout(self.config.connect_timeout);
        let mut socket = SubSocket::with_options(options);
        let endpoint = &self.config.endpoint;
        let fail = |source| TransportError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        socket.connect(endpoint).await.map_err(fail)?;
        socket.subscribe(&self.config.topic).await.map_err(fail)?;
        Ok(socket)
    }

    /// Receives until the socket fails (`Ok`: reconnect) or the consumer is gone.
    async fn receive(&mut self, mut socket: SubSocket) -> Result<(), Closed> {
        loop {
            let msg = match socket.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "KV event subscriber: socket failed, reconnecting");
                    let _ = socket.close().await;
                    return Ok(());
                }
            };
            self.handle(msg.into_vec()).await?;
        }
    }

    async fn emit(&self, event: SubscriberEvent) -> Result<(), Closed> {
        self.tx.send(event).await.map_err(|_| Closed)
    }

    async fn handle(&mut self, frames: Vec<Bytes>) -> Result<(), Closed> {
        let seq = match frames.as_slice() {
            [_topic, seq, _payload] => <[u8; 8]>::try_from(seq.as_ref())
                .ok()
                .map(u64::from_be_bytes),
            _ => None,
        };
        let Some(seq) = seq else {
            return self
                .emit(SubscriberEvent::Undecodable {
                    seq: None,
                    error: UndecodableError::Framing {
                        frames: frames.len(),
                    },
                })
                .await;
        };
        match self.last {
            Some(last) if seq <= last => {
                self.emit(SubscriberEvent::Restarted { seq }).await?;
            }
            Some(last) if seq > last + 1 => {
                self.recover(last + 1, seq - 1).await?;
            }
            // Joining a running engine: catch up on what its replay buffer still holds.
            None if seq > 0 => self.recover(0, seq - 1).await?,
            _ => {}
        }
        self.deliver(seq, &frames[2]).await
    }

    async fn deliver(&mut self, seq: u64, payload: &[u8]) -> Result<(), Closed> {
        self.last = Some(seq);
        let event = match decode_batch(payload) {
            Ok(batch) => SubscriberEvent::Batch { seq, batch },
            Err(e) => SubscriberEvent::Undecodable {
                seq: Some(seq),
                error: e.into(),
            },
        };
        self.emit(event).await
    }

    /// Replays `from..=to` when a replay endpoint is configured; reports what is still
    /// missing as one gap.
    async fn recover(&mut self, from: u64, to: u64) -> Result<(), Closed> {
        let mut next = from;
        if let Some(endpoint) = self.config.replay_endpoint.clone() {
            let timeout = self.config.replay_timeout;
            // A failed or timed-out replay drops its socket: the next one starts afresh.
            match tokio::time::timeout(timeout, self.replay(&endpoint, from, to)).await {
                Ok(Ok(batches)) => {
                    for (seq, payload) in batches {
                        if seq != next {
                            break; // the buffer no longer holds `next`
                        }
                        self.deliver(seq, &payload).await?;
                        next += 1;
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "KV event replay failed"),
                Err(_) => tracing::debug!(?timeout, "KV event replay timed out"),
            }
        }
        if next <= to {
            tracing::info!(from = next, to, "KV events missed and not replayed");
            self.last = Some(to);
            self.emit(SubscriberEvent::Gap { from: next, to }).await?;
        }
        Ok(())
    }

    /// Asks the replay socket for everything from `from`, keeping batches up to `to`. The
    /// socket is kept for the next replay only when this one completes.
    async fn replay(
        &mut self,
        endpoint: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Bytes)>, TransportError> {
        let fail = |source| TransportError::Replay {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut dealer = match self.replay.take() {
            Some(dealer) => dealer,
            None => {
                let mut options = SocketOptions::default();
                options.connect_timeout(self.config.connect_timeout);
                let mut dealer = DealerSocket::with_options(options);
                dealer.connect(endpoint).await.map_err(fail)?;
                dealer
            }
        };
        // A REQ-style request: empty delimiter, then the start sequence number.
        let mut request = ZmqMessage::from(Bytes::new());
        request.push_back(Bytes::copy_from_slice(&from.to_be_bytes()));
        dealer.send(request).await.map_err(fail)?;
        let mut out = Vec::new();
        loop {
            let frames = dealer.recv().await.map_err(fail)?.into_vec();
            // Replies are ["", seq, payload]; the end marker is ["", -1, ""].
            let (seq, payload) = match frames.as_slice() {
                [_delim, seq, payload] => (seq, payload),
                _ => {
                    return Err(TransportError::Protocol(
                        "replay reply is not [\"\", seq, payload]",
                    ));
                }
            };
            if seq.as_ref() == END_SEQ {
                self.replay = Some(dealer);
                return Ok(out);
            }
            let seq = <[u8; 8]>::try_from(seq.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| TransportError::Protocol("replay sequence number is not 8 bytes"))?;
            if (from..=to).contains(&seq) {
                out.push((seq, payload.clone()));
            }
        }
    }
}
