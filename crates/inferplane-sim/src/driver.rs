//! The engine task: one tokio task owns an [`Engine`] and runs its steps in scaled real
//! time; HTTP handlers submit and abort through a channel and receive their tokens on a
//! per-request channel.
//!
//! Virtual time is real time since start multiplied by the time scale. A step that the
//! model says takes `d` virtual seconds is slept for `d * slowdown / time_scale` real
//! seconds; sleeps shorter than the timer's millisecond resolution are carried over to the
//! next step instead, so long runs keep the right average pace.

use crate::engine::{AddError, CacheEvent, Engine, Event, FinishReason, SeqId, SeqInput};
use crate::faults::Faults;
use crate::metrics::SimMetrics;
use inferplane_core::Time;
use inferplane_kv_events::Publisher;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What a request's handler receives from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The `index`-th output token (0-based) is ready.
    Token {
        /// 0-based token index.
        index: u32,
    },
    /// The request finished.
    Finished {
        /// Why it stopped.
        reason: FinishReason,
        /// Prompt tokens served from the prefix cache.
        cached_tokens: u32,
        /// Tokens generated.
        completion_tokens: u32,
    },
}

enum Cmd {
    Add {
        input: SeqInput,
        min_tokens: u32,
        out: mpsc::UnboundedSender<Output>,
        reply: oneshot::Sender<Result<SeqId, AddError>>,
    },
    Abort(SeqId),
    ResetPrefixCache(oneshot::Sender<bool>),
}

/// Error submitting to the engine task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The engine refused the request.
    #[error(transparent)]
    Refused(#[from] AddError),
    /// The engine task is gone (the server is shutting down).
    #[error("the simulated engine is shutting down")]
    Stopped,
}

/// A cheap, clonable handle to the engine task.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl EngineHandle {
    /// Submits a request; its outputs arrive on `out`. With `min_tokens > 0` it generates
    /// exactly that many tokens (see [`Engine::add_with_min_tokens`]); `0` means no minimum.
    pub async fn submit(
        &self,
        input: SeqInput,
        min_tokens: u32,
        out: mpsc::UnboundedSender<Output>,
    ) -> Result<SeqId, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Add {
                input,
                min_tokens,
                out,
                reply,
            })
            .map_err(|_| SubmitError::Stopped)?;
        Ok(rx.await.map_err(|_| SubmitError::Stopped)??)
    }

    /// Aborts a request (no-op if it already finished).
    pub fn abort(&self, id: SeqId) {
        let _ = self.tx.send(Cmd::Abort(id));
    }

    /// Empties the prefix cache if no request holds a block ([`Engine::reset_prefix_cache`]).
    pub async fn reset_prefix_cache(&self) -> Result<bool, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::ResetPrefixCache(reply))
            .map_err(|_| SubmitError::Stopped)?;
        rx.await.map_err(|_| SubmitError::Stopped)
    }
}

/// Where the engine's cache changes go: batched per step and published as vLLM does.
#[derive(Debug)]
pub struct KvEventSink {
    publisher: Publisher,
    changes: Vec<CacheEvent>,
}

impl KvEventSink {
    /// Publishes through `publisher`.
    pub fn new(publisher: Publisher) -> Self {
        KvEventSink {
            publisher,
            changes: Vec::new(),
        }
    }

    fn flush(&mut self, engine: &mut Engine) {
        engine.drain_cache_events(&mut self.changes);
        if let Some(batch) = crate::kv_events::to_batch(&self.changes, unix_secs_f64()) {
            self.publisher.publish(batch);
        }
        self.changes.clear();
    }
}

/// Seconds since the Unix epoch for a batch's `ts`, as vLLM stamps it; never used for any
/// decision.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn unix_secs_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Starts the engine task. It stops when every handle is dropped. With a `kv_events` sink
/// the engine records its cache changes and the task publishes them after every step.
pub fn spawn(
    mut engine: Engine,
    time_scale: f64,
    faults: Faults,
    metrics: Arc<SimMetrics>,
    kv_events: Option<KvEventSink>,
) -> EngineHandle {
    if kv_events.is_some() {
        engine.record_cache_events();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = Driver {
        engine,
        kv_events,
        rx,
        outs: HashMap::new(),
        time_scale: if time_scale.is_finite() && time_scale > 0.0 {
            time_scale
        } else {
            1.0
        },
        faults,
        metrics,
        start: Instant::now(),
        last_end: Time::ZERO,
        last_stats: Default::default(),
    };
    tokio::spawn(driver.run());
    EngineHandle { tx }
}

struct Driver {
    engine: Engine,
    kv_events: Option<KvEventSink>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    outs: HashMap<SeqId, mpsc::UnboundedSender<Output>>,
    time_scale: f64,
    faults: Faults,
    metrics: Arc<SimMetrics>,
    start: Instant,
    last_end: Time,
    last_stats: crate::engine::EngineStats,
}

/// Sleeps shorter than this are carried over rather than slept (timer resolution).
const MIN_SLEEP: Duration = Duration::from_millis(1);
/// How far behind schedule the driver may be before it stops trying to catch up.
const MAX_LAG: Duration = Duration::from_millis(20);

impl Driver {
    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add {
                input,
                min_tokens,
                out,
                reply,
            } => {
                let res = self.engine.add_with_min_tokens(input, min_tokens);
                if let Ok(id) = res {
                    self.outs.insert(id, out);
                }
                let _ = reply.send(res);
            }
            Cmd::Abort(id) => {
                self.engine.abort(id);
                self.outs.remove(&id);
            }
            Cmd::ResetPrefixCache(reply) => {
                let done = self.engine.reset_prefix_cache();
                self.flush_kv_events();
                let _ = reply.send(done);
            }
        }
    }

    fn virtual_now(&self, real: Instant) -> Time {
        let v =
            Time::from_secs_f64(real.duration_since(self.start).as_secs_f64() * self.time_scale);
        v.max(self.last_end)
    }

    fn flush_kv_events(&mut self) {
        if let Some(sink) = self.kv_events.as_mut() {
            sink.flush(&mut self.engine);
        }
    }

    fn publish(&mut self) {
        self.flush_kv_events();
        let stats = self.engine.stats();
        self.metrics.update(
            self.engine.num_running(),
            self.engine.num_waiting(),
            self.engine.kv_usage(),
            stats,
            self.last_stats,
        );
        self.last_stats = stats;
    }

    fn deliver(&mut self, events: &mut Vec<Event>) {
        for ev in events.drain(..) {
            match ev {
                Event::Token { id, index } => {
                    let gone = match self.outs.get(&id) {
                        Some(out) => out.send(Output::Token { index }).is_err(),
                        None => false,
                    };
                    if gone {
                        // The client went away: stop spending engine time on it.
                        self.engine.abort(id);
                        self.outs.remove(&id);
                    }
                }
                Event::Finished {
                    id,
                    reason,
                    cached_tokens,
                    completion_tokens,
                } => {
                    if let Some(out) = self.outs.remove(&id) {
                        let _ = out.send(Output::Finished {
                            reason,
                            cached_tokens,
                            completion_tokens,
                        });
                    }
                }
            }
        }
    }

    async fn run(mut self) {
        let mut events = Vec::new();
        let mut schedule: Option<Instant> = None;
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let real_now = Instant::now();
            let vnow = self.virtual_now(real_now);
            let Some(info) = self.engine.step(vnow, &mut events) else {
                // Idle: wait for the next command.
                self.publish();
                schedule = None;
                match self.rx.recv().await {
                    Some(cmd) => self.handle(cmd),
                    None => return,
                }
                continue;
            };
            self.last_end = info.end;
            let slowdown = self.faults.get().slowdown;
            let real_dur = info
                .end
                .saturating_since(vnow)
                .mul_f64(slowdown / self.time_scale);
            let base = match schedule {
                Some(s) if s + MAX_LAG >= real_now => s,
                _ => real_now,
            };
            let target = base + real_dur;
            schedule = Some(target);
            if target > real_now + MIN_SLEEP {
                let sleep = tokio::time::sleep_until(target);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        cmd = self.rx.recv() => match cmd {
                            Some(cmd) => self.handle(cmd),
                            None => return,
                        },
                    }
                }
            } else {
                tokio::task::yield_now().await;
            }
            self.deliver(&mut events);
            self.publish();
        }
    }
}
