//! [`LimitStore`]: tenants' limits shared by every gateway replica through Redis (the
//! `[shared]` store). Each admission and each settlement is one Lua script, atomic on the
//! server, doing what `window.rs` does locally, with the server's `TIME` as the clock (so
//! replicas' clocks need not agree and every replica sees the same minute).
//!
//! Keys, under the same hash tag `{prefix}` as the fleet's counts (one Redis Cluster
//! slot): `{prefix}:tw:<tenant>` (hash `win`, `req`, `tok`: the current window's
//! requests and tokens; expires after two windows), `{prefix}:tin:<replica>` (hash
//! `<tenant>:n` and `<tenant>:x`: this replica's requests in flight and their excess; a
//! replica counts only while it is live in `{prefix}:replicas`, the sorted set the fleet
//! sync renews, so a replica that dies frees what it held; a replica starting under
//! the same name clears its own at its first connection), `{prefix}:spend:<tenant>` (dollars spent;
//! with a `budget_period`, `{prefix}:spend:<tenant>:d<day>` or `:m<month>`, one key per
//! period named by this gateway's clock, expiring a day after the period ends), and
//! `{prefix}:tu:<tenant>`, the fleet's usage totals (`fleet_totals.rs`).

use super::period::period_of;
use super::window::{Ask, Held, Refusal, Standing, WINDOW_MS};
use crate::config::TenantLimits;
use crate::shared::StoreError;
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// The admission script. ARGV: prefix, tenant, replica, liveness ttl (ms), rpm, tpm,
/// concurrent, budget (-1: none), reserve, excess, spend key (of the budget period). Returns status, window, reset (ms),
/// requests, tokens (with the in-flight excess), spent, live replicas.
const ADMIT: &str = r"
local p, tenant, me, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local rpm, tpm, conc, budget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local reserve, excess, spend_key = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = math.floor(now / 60000)
local reset = (win + 1) * 60000 - now
local wk = p .. ':tw:' .. tenant
local w = redis.call('HMGET', wk, 'win', 'req', 'tok')
local req, tok = 0, 0
if tonumber(w[1]) == win then req, tok = tonumber(w[2]) or 0, tonumber(w[3]) or 0 end
local live = redis.call('ZRANGEBYSCORE', p .. ':replicas', now - ttl, '+inf')
local seen_me = false
local n, x = 0, 0
local function add(r)
  local v = redis.call('HMGET', p .. ':tin:' .. r, tenant .. ':n', tenant .. ':x')
  n = n + (tonumber(v[1]) or 0)
  x = x + (tonumber(v[2]) or 0)
end
for _, r in ipairs(live) do
  if r == me then seen_me = true end
  add(r)
end
if not seen_me then add(me) end
local replicas = #live + (seen_me and 0 or 1)
local spent = tonumber(redis.call('GET', spend_key) or '0') or 0
local status = 'ok'
if budget >= 0 and spent >= budget then status = 'budget'
elseif conc >= 0 and n >= conc then status = 'concurrent'
elseif rpm >= 0 and req >= rpm then status = 'requests'
elseif tpm >= 0 and reserve > tpm then status = 'toolarge'
elseif tpm >= 0 and tok + x + reserve > tpm then status = 'tokens'
end
if status == 'ok' then
  req, tok, x = req + 1, tok + reserve, x + excess
  redis.call('HSET', wk, 'win', win, 'req', req, 'tok', tok)
  redis.call('PEXPIRE', wk, 120000)
  local ik = p .. ':tin:' .. me
  redis.call('HINCRBY', ik, tenant .. ':n', 1)
  redis.call('HINCRBY', ik, tenant .. ':x', excess)
end
return { status, tostring(win), tostring(reset), tostring(req), tostring(tok + x),
  tostring(spent), tostring(replicas) }
";

/// The settlement script. ARGV: prefix, tenant, replica, window reserved in, reserve,
/// excess, used.
const SETTLE: &str = r"
local p, tenant, me = ARGV[1], ARGV[2], ARGV[3]
local held, reserve, excess, used = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = math.floor(now / 60000)
local wk = p .. ':tw:' .. tenant
local w = redis.call('HMGET', wk, 'win', 'req', 'tok')
local req, tok = 0, 0
if tonumber(w[1]) == win then req, tok = tonumber(w[2]) or 0, tonumber(w[3]) or 0 end
if held == win then
  tok = math.max(0, tok + used - reserve)
else
  tok = tok + math.max(0, used - reserve)
end
redis.call('HSET', wk, 'win', win, 'req', req, 'tok', tok)
redis.call('PEXPIRE', wk, 120000)
local ik = p .. ':tin:' .. me
if redis.call('HINCRBY', ik, tenant .. ':n', -1) < 0 then redis.call('HSET', ik, tenant .. ':n', 0) end
if redis.call('HINCRBY', ik, tenant .. ':x', -excess) < 0 then redis.call('HSET', ik, tenant .. ':x', 0) end
return 1
";

/// What the store said at admission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreAnswer {
    /// Admitted (with what it holds) or refused.
    pub result: Result<Held, Refusal>,
    /// The tenant's standing after it.
    pub standing: Standing,
    /// Live replicas, this one included.
    pub replicas: u32,
}

/// A replica's connection to the store for tenants' limits.
pub struct LimitStore {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    admit: redis::Script,
    settle: redis::Script,
    window: redis::Script,
    /// `{prefix}`: the key prefix in its hash tag.
    pub(super) prefix: String,
    replica: String,
    ttl: Duration,
    timeout: Duration,
    /// Whether this process has cleared its name's in-flight counts.
    cleared: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitStore")
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

fn opt(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-1".to_string(), |v| v.to_string())
}

impl LimitStore {
    /// A store at `url` for replica `replica` (live while the fleet sync renews it within
    /// `ttl`); every call gives up after `timeout`.
    pub fn new(
        url: &str,
        prefix: &str,
        replica: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        Ok(LimitStore {
            client: redis::Client::open(url).map_err(StoreError::Url)?,
            conn: tokio::sync::Mutex::new(None),
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
            window: redis::Script::new(WINDOW),
            prefix: format!("{{{prefix}}}"),
            replica: replica.to_string(),
            ttl,
            timeout,
            cleared: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A connection, made if needed. The first one this process makes clears what its
    /// name held in flight before (a replica restarted under the same name).
    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut c = self.client.get_multiplexed_async_connection().await?;
        if !self.cleared.load(std::sync::atomic::Ordering::Relaxed) {
            let _: () = redis::cmd("DEL")
                .arg(format!("{}:tin:{}", self.prefix, self.replica))
                .query_async(&mut c)
                .await?;
            self.cleared
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` within the timeout; a failure drops the connection.
    pub(super) async fn run<T, F>(
        &self,
        f: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let work = async {
            let c = self.conn().await?;
            f(c).await
        };
        let out = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if out.is_err() {
            *self.conn.lock().await = None;
        }
        out
    }

    /// The key of `tenant`'s spend in the budget period of `now_ms` (this gateway's clock:
    /// replicas a few seconds apart disagree only for those seconds at a period's turn).
    fn spend_key(&self, tenant: &str, limits: &TenantLimits, now_ms: u64) -> String {
        match period_of(limits.budget_period, now_ms) {
            Some(p) => format!("{}:spend:{tenant}:{}", self.prefix, p.key_suffix()),
            None => format!("{}:spend:{tenant}", self.prefix),
        }
    }

    /// Admits `ask` for `tenant` against `limits` at `now_ms`, fleet-wide.
    pub async fn admit(
        &self,
        tenant: &str,
        limits: &TenantLimits,
        ask: Ask,
        now_ms: u64,
    ) -> Result<StoreAnswer, StoreError> {
        let spend_key = self.spend_key(tenant, limits, now_ms);
        let spend_key = &spend_key;
        let answer: Vec<String> = self
            .run(|mut c| async move {
                let mut call = self.admit.prepare_invoke();
                call.arg(&self.prefix)
                    .arg(tenant)
                    .arg(&self.replica)
                    .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX))
                    .arg(opt(limits.requests_per_minute))
                    .arg(opt(limits.tokens_per_minute))
                    .arg(opt(limits.concurrent))
                    .arg(opt(limits.budget_usd))
                    .arg(ask.reserve)
                    .arg(ask.excess)
                    .arg(spend_key);
                Ok(call.invoke_async(&mut c).await?)
            })
            .await?;
        parse_admit(&answer, limits, ask, now_ms)
    }

    /// Settles what `held` reserved with `used` tokens.
    pub async fn settle(&self, tenant: &str, held: Held, used: u64) -> Result<(), StoreError> {
        self.run(|mut c| async move {
            let mut call = self.settle.prepare_invoke();
            call.arg(&self.prefix)
                .arg(tenant)
                .arg(&self.replica)
                .arg(held.window)
                .arg(held.ask.reserve)
                .arg(held.ask.excess)
                .arg(used);
            let _: i64 = call.invoke_async(&mut c).await?;
            Ok(())
        })
        .await
    }

    /// Counts `usd` spent by `tenant` at `now_ms`; returns the period's total. A period's
    /// key expires a day after the period ends.
    pub async fn spend(
        &self,
        tenant: &str,
        limits: &TenantLimits,
        usd: f64,
        now_ms: u64,
    ) -> Result<f64, StoreError> {
        let key = self.spend_key(tenant, limits, now_ms);
        let expire = period_of(limits.budget_period, now_ms).map(|p| p.reset_ms + 86_400_000);
        let (key, expire) = (&key, expire);
        self.run(|mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("INCRBYFLOAT").arg(key).arg(usd);
            if let Some(ms) = expire {
                pipe.cmd("PEXPIRE").arg(key).arg(ms).ignore();
            }
            let (v,): (f64,) = pipe.query_async(&mut c).await?;
            Ok(v)
        })
        .await
    }
}

/// The tenant's window as the store counts it: window index, requests, tokens (without
/// the in-flight excess), requests in flight on live replicas, spend. ARGV: prefix, tenant,
/// liveness ttl (ms), spend key (of the budget period).
const WINDOW: &str = r"
local p, tenant, ttl, spend_key = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = math.floor(now / 60000)
local w = redis.call('HMGET', p .. ':tw:' .. tenant, 'win', 'req', 'tok')
local req, tok = 0, 0
if tonumber(w[1]) == win then req, tok = tonumber(w[2]) or 0, tonumber(w[3]) or 0 end
local n = 0
for _, r in ipairs(redis.call('ZRANGEBYSCORE', p .. ':replicas', now - ttl, '+inf')) do
  n = n + (tonumber(redis.call('HGET', p .. ':tin:' .. r, tenant .. ':n')) or 0)
end
local spent = redis.call('GET', spend_key) or '0'
return { tostring(win), tostring((win + 1) * 60000 - now), tostring(req), tostring(tok),
  tostring(n), spent }
";

/// A tenant's window as the store counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetWindow {
    /// Milliseconds until it ends.
    pub reset_ms: u64,
    /// Requests admitted in it.
    pub requests: u32,
    /// Tokens reserved or used in it.
    pub tokens: u64,
    /// Requests in flight on live replicas.
    pub in_flight: u32,
    /// Spend.
    pub spent: f64,
}

impl LimitStore {
    /// The fleet's counts of `tenant`'s current window (and spend in the budget period)
    /// at `now_ms`.
    pub async fn window(
        &self,
        tenant: &str,
        limits: &TenantLimits,
        now_ms: u64,
    ) -> Result<FleetWindow, StoreError> {
        let spend_key = self.spend_key(tenant, limits, now_ms);
        let spend_key = &spend_key;
        let a: Vec<String> = self
            .run(|mut c| async move {
                let mut call = self.window.prepare_invoke();
                call.arg(&self.prefix)
                    .arg(tenant)
                    .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX))
                    .arg(spend_key);
                Ok(call.invoke_async(&mut c).await?)
            })
            .await?;
        let bad = || StoreError::Answer(format!("{a:?}"));
        let [_, reset, req, tok, n, spent] = a.as_slice() else {
            return Err(bad());
        };
        let num = |s: &String| s.parse::<u64>().map_err(|_| bad());
        Ok(FleetWindow {
            reset_ms: num(reset)?,
            requests: u32::try_from(num(req)?).unwrap_or(u32::MAX),
            tokens: num(tok)?,
            in_flight: u32::try_from(num(n)?).unwrap_or(u32::MAX),
            spent: spent.parse().map_err(|_| bad())?,
        })
    }
}

/// The admission script's answer.
fn parse_admit(
    a: &[String],
    limits: &TenantLimits,
    ask: Ask,
    now_ms: u64,
) -> Result<StoreAnswer, StoreError> {
    let bad = || StoreError::Answer(format!("{a:?}"));
    let [status, win, reset, req, tok, spent, replicas] = a else {
        return Err(bad());
    };
    let num = |s: &String| s.parse::<u64>().map_err(|_| bad());
    let (window, reset_ms, requests, tokens) = (num(win)?, num(reset)?, num(req)?, num(tok)?);
    let spent: f64 = spent.parse().map_err(|_| bad())?;
    let replicas = u32::try_from(num(replicas)?).unwrap_or(u32::MAX).max(1);
    let requests = u32::try_from(requests).unwrap_or(u32::MAX);
    let standing = Standing {
        requests: limits
            .requests_per_minute
            .map(|l| (l, l.saturating_sub(requests))),
        tokens: limits
            .tokens_per_minute
            .map(|l| (l, l.saturating_sub(tokens))),
        reset_ms,
    };
    let result = match status.as_str() {
        "ok" => Ok(Held { window, ask }),
        "budget" => Err(Refusal::Budget {
            limit: limits.budget_usd.unwrap_or(0.0),
            spent,
            retry_after_ms: period_of(limits.budget_period, now_ms).map(|p| p.reset_ms),
        }),
        "concurrent" => Err(Refusal::Concurrent {
            limit: limits.concurrent.unwrap_or(0),
        }),
        "requests" => Err(Refusal::Requests {
            limit: limits.requests_per_minute.unwrap_or(0),
            retry_after_ms: reset_ms,
        }),
        "toolarge" => Err(Refusal::TooLarge {
            limit: limits.tokens_per_minute.unwrap_or(0),
            asked: ask.reserve,
        }),
        "tokens" => Err(Refusal::Tokens {
            limit: limits.tokens_per_minute.unwrap_or(0),
            asked: ask.reserve,
            retry_after_ms: reset_ms,
        }),
        _ => return Err(bad()),
    };
    Ok(StoreAnswer {
        result,
        standing,
        replicas,
    })
}

/// The window length the scripts use, checked against `window.rs` at compile time.
const _: () = assert!(WINDOW_MS == 60_000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_answers_parse_and_bad_ones_are_errors() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let l = TenantLimits {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(1000),
            ..TenantLimits::default()
        };
        let ask = Ask {
            reserve: 5,
            excess: 1,
        };
        let ok = parse_admit(&s(&["ok", "7", "1500", "3", "600", "0", "2"]), &l, ask, 0).unwrap();
        assert_eq!(ok.result, Ok(Held { window: 7, ask }));
        assert_eq!(ok.standing.requests, Some((10, 7)));
        assert_eq!(ok.standing.tokens, Some((1000, 400)));
        assert_eq!(ok.replicas, 2);
        let no = parse_admit(
            &s(&["tokens", "7", "1500", "3", "600", "0", "1"]),
            &l,
            ask,
            0,
        )
        .unwrap();
        assert_eq!(no.result.unwrap_err().retry_after_secs(), Some(2));
        for bad in [
            s(&[]),
            s(&["ok", "7"]),
            s(&["what", "7", "1", "1", "1", "0", "1"]),
            s(&["ok", "x", "1", "1", "1", "0", "1"]),
        ] {
            assert!(parse_admit(&bad, &l, ask, 0).is_err(), "{bad:?}");
        }
    }
}
