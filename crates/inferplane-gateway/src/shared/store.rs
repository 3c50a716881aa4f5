//! [`RedisFleet`]: one round trip per sync to Redis: a Lua script (atomic on the server,
//! so replicas reserve one after another) renews this replica's liveness, forgets
//! replicas not heard from within the expiry, makes this replica's reservation of each
//! instance by the rule of `inferplane_core::fleet` against the others' reservations,
//! and returns the live replicas' number and, per instance, the others' attempts in
//! flight and this replica's reservation.
//!
//! Keys, all under one hash tag `{prefix}` (one Redis Cluster slot), each replica's
//! expiring after `ttl`: `{prefix}:own:<replica>` (instance id to attempts in flight,
//! non-zero only), `{prefix}:res:<replica>` (instance id to reservation),
//! `{prefix}:want:<replica>` (the instances it wants more room on); and
//! `{prefix}:replicas`, a sorted set of replica ids scored by the server's time (`TIME`,
//! so replicas' clocks need not agree) of their last sync. Instance ids must name the
//! same engines on every replica.

use super::FleetView;
use inferplane_core::InstanceId;
use inferplane_core::fleet::{FleetDemand, FleetShare};
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// The sync script. ARGV: prefix, replica, ttl in ms, then per instance: id, in flight,
/// limit, wants (1 or 0). Mirrors `inferplane_core::fleet::reservation`.
const SYNC: &str = r"
local prefix, me, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local members = prefix .. ':replicas'
redis.call('ZADD', members, now, me)
redis.call('ZREMRANGEBYSCORE', members, '-inf', now - ttl)
local live = redis.call('ZRANGE', members, 0, -1)
local reserved, inflight, wanting = {}, {}, {}
local function add(into, key, ones)
  local h = redis.call('HGETALL', key)
  for i = 1, #h, 2 do
    into[h[i]] = (into[h[i]] or 0) + (ones and 1 or tonumber(h[i + 1]))
  end
end
for _, r in ipairs(live) do
  if r ~= me then
    add(reserved, prefix .. ':res:' .. r, false)
    add(inflight, prefix .. ':own:' .. r, false)
    add(wanting, prefix .. ':want:' .. r, true)
  end
end
local own_key, res_key, want_key =
  prefix .. ':own:' .. me, prefix .. ':res:' .. me, prefix .. ':want:' .. me
redis.call('DEL', own_key, res_key, want_key)
local out = { tostring(#live) }
for i = 4, #ARGV, 4 do
  local id, own, limit = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local wants = ARGV[i + 3] == '1'
  local free = math.max(0, limit - own - (reserved[id] or 0))
  local extra
  if wants then
    extra = math.ceil(free / ((wanting[id] or 0) + 1))
  else
    extra = math.min(1, free)
  end
  local res = own + extra
  redis.call('HSET', res_key, id, res)
  if own > 0 then redis.call('HSET', own_key, id, own) end
  if wants then redis.call('HSET', want_key, id, 1) end
  table.insert(out, id)
  table.insert(out, tostring(inflight[id] or 0))
  table.insert(out, tostring(res))
end
redis.call('PEXPIRE', own_key, ttl)
redis.call('PEXPIRE', res_key, ttl)
redis.call('PEXPIRE', want_key, ttl)
return out
";

/// Why a sync with the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not a Redis URL this build can use.
    #[error("invalid Redis URL")]
    Url(#[source] redis::RedisError),
    /// Connecting, or the script, failed.
    #[error("Redis")]
    Redis(#[from] redis::RedisError),
    /// The store did not answer within the time given.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The script's answer was not what it returns.
    #[error("unexpected answer from the sync script: {0}")]
    Answer(String),
}

/// A replica's connection to the shared store (reconnected after a failure).
pub struct RedisFleet {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    script: redis::Script,
    prefix: String,
    replica: String,
    ttl: Duration,
}

impl std::fmt::Debug for RedisFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFleet")
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisFleet {
    /// A store at `url` (not connected yet) for replica `replica`, whose counts expire
    /// `ttl` after its last sync.
    pub fn new(url: &str, prefix: &str, replica: &str, ttl: Duration) -> Result<Self, StoreError> {
        Ok(RedisFleet {
            client: redis::Client::open(url).map_err(StoreError::Url)?,
            conn: None,
            script: redis::Script::new(SYNC),
            prefix: format!("{{{prefix}}}"),
            replica: replica.to_string(),
            ttl,
        })
    }

    /// Publishes this replica's demand, reserves, and returns the fleet's view, within
    /// `limit` (connecting first if needed). A failure drops the connection, so the next
    /// sync reconnects.
    pub async fn sync(
        &mut self,
        own: &[FleetDemand],
        limit: Duration,
    ) -> Result<FleetView, StoreError> {
        let out = tokio::time::timeout(limit, self.round_trip(own)).await;
        let result = match out {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(limit)),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn round_trip(&mut self, own: &[FleetDemand]) -> Result<FleetView, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.client.get_multiplexed_async_connection().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Answer("no connection".into()));
        };
        let mut call = self.script.prepare_invoke();
        call.arg(&self.prefix)
            .arg(&self.replica)
            .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        for d in own {
            call.arg(d.id.as_str())
                .arg(d.inflight)
                .arg(d.limit)
                .arg(u8::from(d.wants));
        }
        let answer: Vec<String> = call.invoke_async(conn).await?;
        parse(&answer)
    }
}

/// The script's answer: the live replicas' number, then per instance: id, the others'
/// attempts in flight, this replica's reservation.
fn parse(answer: &[String]) -> Result<FleetView, StoreError> {
    let bad = || StoreError::Answer(format!("{answer:?}"));
    let (first, rest) = answer.split_first().ok_or_else(bad)?;
    let replicas: u32 = first.parse().map_err(|_| bad())?;
    if rest.len() % 3 != 0 {
        return Err(bad());
    }
    let mut shares = std::collections::HashMap::with_capacity(rest.len() / 3);
    for t in rest.chunks_exact(3) {
        let others: u32 = t[1].parse().map_err(|_| bad())?;
        let cap: u32 = t[2].parse().map_err(|_| bad())?;
        shares.insert(
            InstanceId::new(t[0].as_str()),
            FleetShare {
                others,
                cap: Some(cap),
            },
        );
    }
    Ok(FleetView {
        shares,
        replicas: replicas.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_bad_ones_are_errors() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let ok = parse(&s(&["3", "a", "2", "4", "b", "0", "1"])).unwrap();
        assert_eq!(ok.replicas, 3);
        let b = ok.shares[&InstanceId::new("b")];
        assert_eq!((b.others, b.cap), (0, Some(1)));
        assert_eq!(parse(&s(&["0"])).unwrap().replicas, 1, "never below one");
        for bad in [
            s(&[]),
            s(&["x"]),
            s(&["2", "a", "1"]),
            s(&["2", "a", "1", "-1"]),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_that_are_not_redis_are_refused() {
        assert!(RedisFleet::new("http://x", "p", "r", Duration::from_secs(1)).is_err());
        assert!(RedisFleet::new("redis://127.0.0.1:1", "p", "r", Duration::from_secs(1)).is_ok());
    }
}
