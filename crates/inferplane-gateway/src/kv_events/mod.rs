//! Precise prefix routing: one KV event subscriber per instance that declares
//! `kv_events`, feeding the dispatcher's scheduler with the engine's own account of its
//! prefix cache (`Scheduler::cache_changed`).
//!
//! Each instance's task owns an [`inferplane_kv_events::Subscriber`] (SUB socket, replay
//! of missed batches) and a [`translate::Translator`] (engine hash -> own hash), turns
//! every batch into [`Change`]s in the gateway's own hashes, and hands them to the
//! dispatcher through the instance's [`Inbox`]: a bounded channel of at most
//! [`INBOX_BATCHES`] batches, with the dispatcher told by one [`Ctl::KvEvents`] only when
//! the inbox goes from idle to pending (as the probes' reports are coalesced), so an
//! instance holds at most one message in the dispatcher's control channel however many
//! events it sends. When the inbox is full the task drops the batch, forgets its map and,
//! as soon as there is room, sends [`Change::Lost`] (counted as `overflow`); a gap that
//! replay could not fill, a restart or an undecodable message likewise become `Lost`, a
//! warning and a count. Removing or re-registering the instance drops its [`KvEvents`],
//! which ends the task and its subscriber.

pub mod translate;

pub use translate::{Change, Counts, MAX_MAPPED_BLOCKS, Translator};

use crate::config::KvEventsSection;
use crate::dispatcher::Ctl;
use crate::telemetry::{KvEventKind, KvEventMetrics, KvLossReason};
use inferplane_core::InstanceId;
use inferplane_kv_events::{Subscriber, SubscriberConfig, SubscriberEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches of changes waiting for the dispatcher per instance. One batch is one engine
/// step's events (an engine stores at most its `max_num_batched_tokens` / 16 blocks a
/// step, 512 at vLLM's 8192: 4 KB of own hashes), so an inbox holds about 1 MB at worst.
pub const INBOX_BATCHES: usize = 256;

/// The dispatcher's end of an instance's changes.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Vec<Change>>,
    pending: Arc<AtomicBool>,
}

impl Inbox {
    /// Takes at most [`INBOX_BATCHES`] batches, oldest first, handing each change to
    /// `apply`. Returns whether more are left (then the caller must come back: the task
    /// does not tell it again).
    pub fn drain(&mut self, mut apply: impl FnMut(&Change)) -> bool {
        // cleared before reading: a batch sent from now on is told again
        self.pending.store(false, Ordering::SeqCst);
        for _ in 0..INBOX_BATCHES {
            match self.rx.try_recv() {
                Ok(batch) => batch.iter().for_each(&mut apply),
                Err(_) => return false,
            }
        }
        if self.rx.is_empty() {
            false
        } else {
            self.pending.store(true, Ordering::SeqCst);
            true
        }
    }
}

/// A running subscription of one instance; dropping it ends the task and its subscriber.
#[derive(Debug)]
pub struct KvEvents {
    /// Its changes for the dispatcher.
    pub inbox: Inbox,
    task: JoinHandle<()>,
}

impl Drop for KvEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts subscribing to `instance`'s engine. Must run inside a tokio runtime.
pub fn spawn(
    instance: InstanceId,
    section: &KvEventsSection,
    metrics: KvEventMetrics,
    ctl: mpsc::UnboundedSender<Ctl>,
) -> KvEvents {
    let config = SubscriberConfig {
        replay_endpoint: section.replay_endpoint.clone(),
        topic: section.topic.clone(),
        ..SubscriberConfig::new(section.endpoint.clone())
    };
    let (tx, rx) = mpsc::channel(INBOX_BATCHES);
    let pending = Arc::new(AtomicBool::new(false));
    let task = Task {
        instance,
        metrics,
        ctl,
        tx,
        pending: pending.clone(),
        translator: Translator::new(MAX_MAPPED_BLOCKS),
        lost_pending: false,
    };
    KvEvents {
        inbox: Inbox { rx, pending },
        task: tokio::spawn(task.run(config)),
    }
}

/// Counts the subscriber tasks running: up on start, down when the task ends or is
/// aborted (its future dropped).
struct Running(prometheus_client::metrics::gauge::Gauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Task {
    instance: InstanceId,
    metrics: KvEventMetrics,
    ctl: mpsc::UnboundedSender<Ctl>,
    tx: mpsc::Sender<Vec<Change>>,
    pending: Arc<AtomicBool>,
    translator: Translator,
    /// The inbox overflowed: `Lost` is still to be sent, batches are dropped until then.
    lost_pending: bool,
}

/// The dispatcher is gone: stop.
struct Closed;

impl Task {
    async fn run(mut self, config: SubscriberConfig) {
        self.metrics.subscribers.inc();
        let _running = Running(self.metrics.subscribers.clone());
        let mut sub = Subscriber::spawn(config);
        let tx = self.tx.clone();
        loop {
            let next = tokio::select! {
                permit = tx.reserve(), if self.lost_pending => match permit {
                    Ok(permit) => {
                        permit.send(vec![Change::Lost]);
                        self.lost_pending = false;
                        self.tell()
                    }
                    Err(_) => Err(Closed),
                },
                event = sub.recv() => match event {
                    Some(event) => self.handle(event),
                    None => Err(Closed),
                },
            };
            if next.is_err() {
                return;
            }
        }
    }

    fn handle(&mut self, event: SubscriberEvent) -> Result<(), Closed> {
        let instance = self.instance.clone();
        let id = instance.as_str();
        match event {
            SubscriberEvent::Connected => {
                tracing::debug!(instance = id, "KV events: subscribed");
                Ok(())
            }
            SubscriberEvent::Batch { batch, .. } => {
                if self.lost_pending {
                    return Ok(()); // dropped: a `Lost` is on its way
                }
                let mut out = Vec::new();
                let c = self.translator.batch(id, &batch, &mut out);
                self.count(c);
                if out.is_empty() {
                    return Ok(());
                }
                self.send(out)
            }
            SubscriberEvent::Gap { from, to } => {
                tracing::warn!(
                    instance = id,
                    from,
                    to,
                    "KV events missed and not replayed: the instance's prefix entries are dropped"
                );
                self.lose(KvLossReason::gap)
            }
            SubscriberEvent::Restarted { seq } => {
                tracing::warn!(
                    instance = id,
                    seq,
                    "KV events: the engine restarted; the instance's prefix entries are dropped"
                );
                self.lose(KvLossReason::restarted)
            }
            SubscriberEvent::Undecodable { seq, error } => {
                tracing::warn!(
                    instance = id,
                    ?seq,
                    error = %error,
                    "KV events: a message could not be decoded; the instance's prefix entries are dropped"
                );
                self.lose(KvLossReason::undecodable)
            }
        }
    }

    fn count(&self, c: Counts) {
        let m = &self.metrics;
        m.event(KvEventKind::stored, c.stored);
        m.event(KvEventKind::removed, c.removed);
        m.event(KvEventKind::cleared, c.cleared);
        m.event(KvEventKind::unplaced, c.unplaced);
        m.blocks
            .set(i64::try_from(self.translator.len()).unwrap_or(i64::MAX));
    }

    /// The engine's cache is unknown from here: forget the map and tell the dispatcher.
    fn lose(&mut self, reason: KvLossReason) -> Result<(), Closed> {
        self.metrics.loss(reason);
        self.translator.clear();
        self.metrics.blocks.set(0);
        if self.lost_pending {
            return Ok(());
        }
        match self.tx.try_send(vec![Change::Lost]) {
            Ok(()) => self.tell(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost_pending = true; // sent as soon as there is room
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// Queues `changes`; a full inbox turns into a pending `Lost` (an `overflow` loss).
    fn send(&mut self, changes: Vec<Change>) -> Result<(), Closed> {
        match self.tx.try_send(changes) {
            Ok(()) => self.tell(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    instance = self.instance.as_str(),
                    "KV events: the dispatcher fell behind; the instance's prefix entries are dropped"
                );
                self.metrics.loss(KvLossReason::overflow);
                self.translator.clear();
                self.metrics.blocks.set(0);
                self.lost_pending = true;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// Tells the dispatcher, once per idle-to-pending change of the inbox.
    fn tell(&self) -> Result<(), Closed> {
        if self.pending.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.ctl
            .send(Ctl::KvEvents {
                instance: self.instance.clone(),
            })
            .map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests;
