//! The simulated engine: continuous batching over virtual time, the way vLLM schedules.
//!
//! Each [`Engine::step`] plans one forward pass starting at `now`: running sequences first
//! (decode one token, or the next chunk of a prefill), then waiting sequences are admitted
//! while `max_num_seqs`, the `max_num_batched_tokens` budget and the KV cache allow. When a
//! running sequence needs a block and none is free, the newest running sequence is
//! preempted: its blocks are freed and it goes back to the head of the queue to be
//! recomputed (prompt plus the tokens generated so far), as vLLM's recompute preemption
//! does. Prompt blocks already in the prefix cache are not prefilled again.
//!
//! How long an output is: exactly `max_tokens` by default; with a stop seed, a length drawn
//! from the request's content hash (uniform in `1..=max_tokens`, finish reason `stop` when
//! short); with `min_tokens = m > 0` ([`Engine::add_with_min_tokens`]), exactly `m` tokens,
//! overriding the seed. The last is the simulator's reading of vLLM's `min_tokens` (no
//! end-of-sequence before `m` tokens): the simulated model emits its end-of-sequence token
//! as soon as `min_tokens` allows, so a benchmark client can tell the engine a request's
//! true output length while a gateway in between sees only `max_tokens`, a cap.
//!
//! The engine is pure: no clock, no I/O, no randomness but a seeded hash.

use crate::fasthash::FastMap;
use crate::kv::KvCache;
use crate::profile::{BLOCK_SIZE, EngineProfile};
use inferplane_core::Time;
use std::collections::VecDeque;
use std::time::Duration;

#[path = "engine_io.rs"]
mod io;

pub use io::{AddError, CacheEvent, EngineStats, Event, FinishReason, SeqId, SeqInput, StepInfo};

#[derive(Debug, Clone)]
struct Seq {
    input: SeqInput,
    target: u32,
    /// Tokens to prefill on the current admission (prompt, or prompt + generated after preemption).
    prefill_len: u32,
    /// Tokens of `prefill_len` computed so far.
    prefilled: u32,
    /// Tokens whose KV is held.
    kv_tokens: u32,
    generated: u32,
    shared: Vec<u64>,
    private: u32,
    cached_tokens: Option<u32>,
}

impl Seq {
    fn blocks(&self) -> u32 {
        self.shared.len() as u32 + self.private
    }
    fn in_prefill(&self) -> bool {
        self.prefilled < self.prefill_len
    }
}

fn blocks_for(tokens: u64) -> u64 {
    tokens.div_ceil(u64::from(BLOCK_SIZE))
}

enum Work {
    Prefill(u32),
    Decode,
}

/// One simulated engine instance.
#[derive(Debug, Clone)]
pub struct Engine {
    profile: EngineProfile,
    kv: KvCache,
    seqs: FastMap<SeqId, Seq>,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    next_id: u64,
    stop_seed: Option<u64>,
    stats: EngineStats,
    plan: Vec<(SeqId, u32, bool)>,
    /// Cache changes since the last drain, in order; `None`: not recording.
    cache_events: Option<Vec<CacheEvent>>,
}

impl Engine {
    /// An idle engine. With `stop_seed`, each request stops after a length drawn from
    /// its content hash and the seed (uniform in `1..=max_tokens`); otherwise every
    /// request generates exactly `max_tokens`.
    pub fn new(profile: EngineProfile, stop_seed: Option<u64>) -> Self {
        let kv = KvCache::new(profile.kv_blocks);
        Engine {
            profile,
            kv,
            seqs: FastMap::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            stop_seed,
            stats: EngineStats::default(),
            plan: Vec::new(),
            cache_events: None,
        }
    }

    /// From now on, record every prefix-cache change (stores, evictions, clears) for
    /// [`Engine::drain_cache_events`].
    pub fn record_cache_events(&mut self) {
        self.kv.record_evictions();
        self.cache_events.get_or_insert_with(Vec::new);
    }

    /// Moves the cache changes recorded since the last call into `out`, in order.
    pub fn drain_cache_events(&mut self, out: &mut Vec<CacheEvent>) {
        if let Some(log) = self.cache_events.as_mut() {
            self.kv
                .take_evicted(|hash| log.push(CacheEvent::Removed { hash }));
            out.append(log);
        }
    }

    /// Empties the prefix cache, as vLLM's `POST /reset_prefix_cache` does: only when no
    /// sequence holds a block; returns whether it did.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if !self.kv.clear() {
            return false;
        }
        if let Some(log) = self.cache_events.as_mut() {
            self.kv
                .take_evicted(|hash| log.push(CacheEvent::Removed { hash }));
            log.push(CacheEvent::Cleared);
        }
        true
    }

    /// The profile the engine runs with.
    pub fn profile(&self) -> &EngineProfile {
        &self.profile
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Sequences running (admitted to the batch).
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Sequences waiting for admission.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Fraction of KV blocks referenced by running sequences, 0..=1.
    pub fn kv_usage(&self) -> f64 {
        f64::from(self.kv.in_use()) / f64::from(self.kv.total().max(1))
    }

    /// KV blocks referenced by running sequences.
    pub fn kv_blocks_in_use(&self) -> u32 {
        self.kv.in_use()
    }

    /// Whether any sequence is running or waiting.
    pub fn has_work(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// Submits a request with no minimum output length; it waits for admission at the
    /// next step.
    pub fn add(&mut self, input: SeqInput) -> Result<SeqId, AddError> {
        self.add_with_min_tokens(input, 0)
    }

    /// Submits a request that generates exactly `min_tokens` tokens when `min_tokens > 0`
    /// (finish reason `stop` below `max_tokens`, `length` at it), overriding the stop
    /// seed; `0` means no minimum, as [`Engine::add`]. Refused when `min_tokens` is above
    /// `max_tokens`.
    pub fn add_with_min_tokens(
        &mut self,
        input: SeqInput,
        min_tokens: u32,
    ) -> Result<SeqId, AddError> {
        if input.prompt_tokens == 0 {
            return Err(AddError::EmptyPrompt);
        }
        if input.max_tokens == 0 {
            return Err(AddError::ZeroMaxTokens);
        }
        if min_tokens > input.max_tokens {
            return Err(AddError::MinTokensAboveMax {
                min_tokens,
                max_tokens: input.max_tokens,
            });
        }
        let requested = u64::from(input.prompt_tokens) + u64::from(input.max_tokens);
        if requested > u64::from(self.profile.max_model_len) {
            return Err(AddError::ContextTooLong {
                max_model_len: self.profile.max_model_len,
                requested,
                prompt: input.prompt_tokens,
                max_tokens: input.max_tokens,
            });
        }
        let needed = blocks_for(requested);
        if needed > u64::from(self.kv.total()) {
            return Err(AddError::ExceedsKvCache {
                needed,
                total: self.kv.total(),
            });
        }
        let target = match self.stop_seed {
            _ if min_tokens > 0 => min_tokens,
            Some(seed) => {
                let h =
                    xxhash_rust::xxh3::xxh3_64_with_seed(&input.content_hash.to_le_bytes(), seed);
                1 + (h % u64::from(input.max_tokens)) as u32
            }
            None => input.max_tokens,
        };
        let id = SeqId(self.next_id);
        self.next_id += 1;
        let prefill_len = input.prompt_tokens;
        self.seqs.insert(
            id,
            Seq {
                input,
                target,
                prefill_len,
                prefilled: 0,
                kv_tokens: 0,
                generated: 0,
                shared: Vec::new(),
                private: 0,
                cached_tokens: None,
            },
        );
        self.waiting.push_back(id);
        self.stats.peak_requests = self.stats.peak_requests.max(self.seqs.len() as u64);
        Ok(id)
    }

    /// Removes a request wherever it is and frees its blocks. Returns whether it existed.
    pub fn abort(&mut self, id: SeqId) -> bool {
        if !self.seqs.contains_key(&id) {
            return false;
        }
        self.release(id);
        self.running.retain(|s| *s != id);
        self.waiting.retain(|s| *s != id);
        self.seqs.remove(&id);
        self.stats.aborted += 1;
        true
    }

    fn release(&mut self, id: SeqId) {
        if let Some(seq) = self.seqs.get_mut(&id) {
            for h in seq.shared.drain(..) {
                self.kv.release(h);
            }
            self.kv.free(seq.private);
            seq.private = 0;
            seq.kv_tokens = 0;
        }
    }

    /// Preempts the newest running sequence; it returns to the head of the queue.
    fn preempt_newest(&mut self) -> Option<SeqId> {
        let victim = self.running.pop()?;
        self.release(victim);
        if let Some(seq) = self.seqs.get_mut(&victim) {
            seq.prefill_len = seq.input.prompt_tokens + seq.generated;
            seq.prefilled = 0;
        }
        self.waiting.push_front(victim);
        self.stats.preemptions += 1;
        Some(victim)
    }

    /// Plans and applies one step starting at `now`, appending what happens at its end to
    /// `events`. Returns `None` (and does nothing) when there is no work.
    pub fn step(&mut self, now: Time, events: &mut Vec<Event>) -> Option<StepInfo> {
        let mut budget = self.profile.max_num_batched_tokens;
        let mut plan = std::mem::take(&mut self.plan);
        plan.clear();
        let mut preempted = 0u32;

        // 1. Running sequences, oldest first.
        let mut i = 0;
        while i < self.running.len() {
            let id = self.running[i];
            let Some(seq) = self.seqs.get(&id) else {
                i += 1;
                continue;
            };
            let work = if seq.in_prefill() {
                Work::Prefill((seq.prefill_len - seq.prefilled).min(budget))
            } else {
                Work::Decode
            };
            let tokens = match work {
                Work::Prefill(c) => c,
                Work::Decode => 1,
            };
            if tokens == 0 || tokens > budget {
                i += 1;
                continue;
            }
            let need = blocks_for(u64::from(seq.kv_tokens + tokens)) as u32 - seq.blocks();
            let mut scheduled = true;
            while !self.kv.alloc(need) {
                let Some(victim) = self.preempt_newest() else {
                    scheduled = false;
                    break;
                };
                preempted += 1;
                if victim == id {
                    scheduled = false;
                    break;
                }
            }
            if !scheduled {
                break; // `id` itself was preempted: it was the newest, nothing follows it
            }
            if let Some(seq) = self.seqs.get_mut(&id) {
                seq.private += need;
            }
            budget -= tokens;
            plan.push((id, tokens, matches!(work, Work::Prefill(_))));
            i += 1;
        }

        // 2. Admit waiting sequences (not in a step that had to preempt, as vLLM does).
        // A step whose running set was preempted away entirely admits anyway, or it would stall.
        while (preempted == 0 || plan.is_empty())
            && budget > 0
            && self.running.len() < self.profile.max_num_seqs as usize
        {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            if !self.try_admit(id, &mut budget, &mut plan) {
                break;
            }
            self.waiting.pop_front();
            self.running.push(id);
        }

        if plan.is_empty() {
            self.plan = plan;
            return None;
        }

        // 3. Cost of the step.
        let mut prefill_tokens = 0u32;
        let mut decode_seqs = 0u32;
        let mut context = 0u64;
        for &(id, tokens, is_prefill) in &plan {
            if is_prefill {
                prefill_tokens += tokens;
            } else {
                decode_seqs += 1;
            }
            if let Some(seq) = self.seqs.get(&id) {
                context += u64::from(seq.kv_tokens + tokens);
            }
        }
        let dur: Duration = self.profile.step_time(prefill_tokens, decode_seqs, context);
        let end = now + dur;

        // 4. Effects at the end of the step.
        for &(id, tokens, is_prefill) in &plan {
            self.apply(id, tokens, is_prefill, events);
        }
        self.plan = plan;
        Some(StepInfo {
            end,
            prefill_tokens,
            decode_seqs,
            preempted,
        })
    }

    /// Admits the head of the queue if its first chunk fits; takes prefix-cache hits.
    fn try_admit(
        &mut self,
        id: SeqId,
        budget: &mut u32,
        plan: &mut Vec<(SeqId, u32, bool)>,
    ) -> bool {
        let Some(seq) = self.seqs.get(&id) else {
            return true; // stale id: drop it from the queue
        };
        // Prefix-cache lookup over full prompt blocks, always leaving one token to compute.
        let max_hit_blocks = ((seq.prefill_len - 1) / BLOCK_SIZE) as usize;
        let hashes = &seq.input.block_hashes[..seq.input.block_hashes.len().min(max_hit_blocks)];
        let hit = self.kv.match_prefix(hashes);
        let hit_tokens = hit as u32 * BLOCK_SIZE;
        let chunk = (seq.prefill_len - hit_tokens).min(*budget);
        let need = blocks_for(u64::from(hit_tokens + chunk)) as u32 - hit as u32;
        // Acquire the hits first so that allocating cannot evict them.
        let hit_hashes: Vec<u64> = hashes[..hit].to_vec();
        for &h in &hit_hashes {
            self.kv.acquire(h);
        }
        if !self.kv.alloc(need) {
            for &h in &hit_hashes {
                self.kv.release(h);
            }
            return false;
        }
        let first_admission = seq.cached_tokens.is_none();
        let prompt = seq.input.prompt_tokens;
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.shared = hit_hashes;
            seq.private = need;
            seq.prefilled = hit_tokens;
            seq.kv_tokens = hit_tokens;
            if first_admission {
                seq.cached_tokens = Some(hit_tokens);
            }
        }
        if first_admission {
            self.stats.prompt_tokens += u64::from(prompt);
            self.stats.prefix_cache_queries += u64::from(prompt);
            self.stats.prefix_cache_hits += u64::from(hit_tokens);
        }
        *budget -= chunk;
        plan.push((id, chunk, true));
        true
    }

    fn apply(&mut self, id: SeqId, tokens: u32, is_prefill: bool, events: &mut Vec<Event>) {
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        seq.kv_tokens += tokens;
        let sampled = if is_prefill {
            seq.prefilled += tokens;
            // Newly full prompt blocks enter the prefix cache.
            let full = (seq.prefilled.min(seq.input.prompt_tokens) / BLOCK_SIZE) as usize;
            while seq.shared.len() < full.min(seq.input.block_hashes.len()) {
                let i = seq.shared.len();
                let h = seq.input.block_hashes[i];
                let stored = self.kv.promote(h);
                if let Some(log) = self.cache_events.as_mut().filter(|_| stored) {
                    // Evictions made room for this block: they come first.
                    self.kv
                        .take_evicted(|hash| log.push(CacheEvent::Removed { hash }));
                    let bs = BLOCK_SIZE as usize;
                    log.push(CacheEvent::Stored {
                        hash: h,
                        parent: i.checked_sub(1).map(|p| seq.input.block_hashes[p]),
                        tokens: seq
                            .input
                            .block_tokens
                            .get(i * bs..(i + 1) * bs)
                            .map(<[u32]>::to_vec)
                            .unwrap_or_default(),
                    });
                }
                seq.private -= 1;
                seq.shared.push(h);
            }
            !seq.in_prefill()
        } else {
            true
        };
        if !sampled {
            return;
        }
        let index = seq.generated;
        seq.generated += 1;
        self.stats.generation_tokens += 1;
        events.push(Event::Token { id, index });
        if seq.generated >= seq.target {
            let reason = if seq.target < seq.input.max_tokens {
                FinishReason::Stop
            } else {
                FinishReason::Length
            };
            events.push(Event::Finished {
                id,
                reason,
                cached_tokens: seq.cached_tokens.unwrap_or(0),
                completion_tokens: seq.generated,
            });
            self.release(id);
            self.seqs.remove(&id);
            self.running.retain(|s| *s != id);
            self.stats.finished += 1;
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
