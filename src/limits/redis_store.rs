//! ④ Counters in Redis, shared by every gateway that names the same store. Each admission and
//! each settlement is one Lua script, so it is atomic across the fleet; every key carries a TTL
//! a little past its window.
//!
//! A reservation lives only as long as its request could: it is scored by the store's clock
//! plus the request's own lifetime, and an admission the store runs after the gateway gave up
//! on it (Redis stalled, the script ran late) does nothing, judged by the store's clock inside
//! the script, so no reservation is ever written that no request owns. And it lives only as
//! long as its gateway: each gateway holds a lease (`modelgate:lease:<instance>`), renewed every
//! third of its length, and admissions drop the reservations of instances whose lease lapsed,
//! so a gateway killed with SIGKILL frees its tenants' budgets within a lease (10 s), not when
//! its requests would have ended. (Leases are plain keys the scripts read by name: one Redis,
//! not a Redis Cluster.)

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::usage::{Period, UsageEntry, UsageReport};
use super::{Charge, Levels, Limit, Refused, Scope, Windows};

/// How long a call to Redis may take before the store counts as unreachable.
const TIMEOUT: Duration = Duration::from_millis(500);
/// How long a gateway's lease lasts without renewal.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
const MINUTE_TTL_MS: u64 = 120_000;
const DAY_TTL_MS: u64 = 2 * 86_400_000;
const MONTH_TTL_MS: u64 = 32 * 86_400_000;

/// Checks every scope, then counts in every scope, or returns the first scope and cap over.
/// KEYS: per scope, its requests and tokens of this minute, its spend of this day and month,
/// its reservations (a sorted set of `<instance>-<n>:micros` scored by expiry).
/// ARGV: scopes, the gateway's deadline for this call (ms since the epoch), ticket id, tokens,
/// reserve (micros), then per scope its four caps (-1 for none), then the minute TTL, the
/// reservation's lifetime (ms), the lease (ms) and this gateway's lease key ('' for none).
/// Returns {-1, day, month, …} (levels of the scopes with spend caps), {-2} when the gateway
/// had already given up on this call, or {scope index, cap index, 1 when reservations in
/// flight are what fill the cap}.
const ADMIT: &str = r"
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[2]) then return {-2} end
local id = ARGV[3]
local tokens = tonumber(ARGV[4])
local reserve = tonumber(ARGV[5])
local lifetime = tonumber(ARGV[7 + n * 4])
local lease_ms = tonumber(ARGV[8 + n * 4])
local lease_key = ARGV[9 + n * 4]
if lease_key ~= '' then redis.call('SET', lease_key, '1', 'PX', lease_ms) end
local alive = {}
local function live(inst)
  if alive[inst] == nil then
    alive[inst] = redis.call('EXISTS', 'modelgate:lease:' .. inst) == 1
  end
  return alive[inst]
end
local function num(k) return tonumber(redis.call('GET', k) or '0') end
local function reserved(k)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  local sum = 0
  for _, m in ipairs(redis.call('ZRANGE', k, 0, -1)) do
    local inst = string.match(m, '^(%x+)%-')
    if inst and not live(inst) then
      redis.call('ZREM', k, m)
    else
      sum = sum + tonumber(string.match(m, ':(%d+)$'))
    end
  end
  return sum
end
local spent = {}
for i = 0, n - 1 do
  local k, a = i * 5, 6 + i * 4
  local rpm, tpm, dcap, mcap = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if rpm >= 0 and num(KEYS[k + 1]) + 1 > rpm then return {i, 0, 0} end
  if tpm >= 0 and num(KEYS[k + 2]) + tokens > tpm then return {i, 1, 0} end
  if dcap >= 0 or mcap >= 0 then
    local r = reserved(KEYS[k + 5])
    local sd, sm = num(KEYS[k + 3]), num(KEYS[k + 4])
    local d, m = sd + r, sm + r
    local held = 0
    if r > 0 then held = 1 end
    if dcap >= 0 and d + reserve > dcap then
      if sd + reserve <= dcap then return {i, 2, held} end
      return {i, 2, 0}
    end
    if mcap >= 0 and m + reserve > mcap then
      if sm + reserve <= mcap then return {i, 3, held} end
      return {i, 3, 0}
    end
    spent[i] = {d + reserve, m + reserve}
  end
end
local out = {-1}
for i = 0, n - 1 do
  local k, a = i * 5, 6 + i * 4
  redis.call('INCR', KEYS[k + 1])
  redis.call('PEXPIRE', KEYS[k + 1], ARGV[6 + n * 4])
  redis.call('INCRBY', KEYS[k + 2], tokens)
  redis.call('PEXPIRE', KEYS[k + 2], ARGV[6 + n * 4])
  if spent[i] then
    redis.call('ZADD', KEYS[k + 5], now + lifetime, id .. ':' .. reserve)
    if redis.call('PTTL', KEYS[k + 5]) < lifetime then
      redis.call('PEXPIRE', KEYS[k + 5], lifetime)
    end
    table.insert(out, spent[i][1])
    table.insert(out, spent[i][2])
  end
end
return out
";

/// Settles a ticket (if any) and records usage.
/// KEYS: per settled scope its spend of this day and month, its reservations, its tokens of
/// this minute; then the tenant's usage of this day and month, and the set of tenants.
/// ARGV: scopes, ticket id, cost (micros), extra tokens, usage field, input tokens, output
/// tokens, tenant, then the TTLs of a day, a month and a minute.
const FINISH: &str = r"
local n = tonumber(ARGV[1])
local cost = tonumber(ARGV[3])
local extra = tonumber(ARGV[4])
for i = 0, n - 1 do
  local k = i * 4
  redis.call('ZREM', KEYS[k + 3], ARGV[2])
  if cost > 0 then
    redis.call('INCRBY', KEYS[k + 1], cost)
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[9])
    redis.call('INCRBY', KEYS[k + 2], cost)
    redis.call('PEXPIRE', KEYS[k + 2], ARGV[10])
  end
  if extra > 0 then
    redis.call('INCRBY', KEYS[k + 4], extra)
    redis.call('PEXPIRE', KEYS[k + 4], ARGV[11])
  end
end
local u = n * 4
local f = ARGV[5]
for j, ttl in ipairs({ARGV[9], ARGV[10]}) do
  local key = KEYS[u + j]
  redis.call('HINCRBY', key, f .. '|requests', 1)
  redis.call('HINCRBY', key, f .. '|input_tokens', ARGV[6])
  redis.call('HINCRBY', key, f .. '|output_tokens', ARGV[7])
  redis.call('HINCRBY', key, f .. '|usd_micros', cost)
  redis.call('PEXPIRE', key, ttl)
end
redis.call('SADD', KEYS[u + 3], ARGV[8])
redis.call('PEXPIRE', KEYS[u + 3], ARGV[10])
return 1
";

pub struct RedisStore {
    url: String,
    client: redis::Client,
    conn: OnceLock<ConnectionManager>,
    admit: redis::Script,
    finish: redis::Script,
    lease: Duration,
    /// Held while the lease's renewal task should run; it ends when this is dropped.
    renewing: std::sync::Mutex<Option<std::sync::Arc<()>>>,
    /// The renewal task was started (once per store).
    started: std::sync::atomic::AtomicBool,
    /// Redis' clock minus this machine's, in ms, as last measured: deadlines sent to the
    /// scripts are on Redis' clock.
    offset_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

fn scope_key(s: &Scope) -> String {
    format!("modelgate:{}:{}", s.kind.as_str(), s.name)
}

fn cap(c: Option<u64>) -> i64 {
    c.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// A connection to Redis made on first use, which gives up on a call after `TIMEOUT` and
/// reconnects once: a stalled Redis costs a request half a second, never a hang.
pub(crate) fn lazy_connection(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

impl RedisStore {
    /// A store for `url` (`redis://host:port[/db]`); connects on first use.
    pub fn new(url: &str) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
        Ok(RedisStore {
            url: url.to_owned(),
            client,
            conn: OnceLock::new(),
            admit: redis::Script::new(ADMIT),
            finish: redis::Script::new(FINISH),
            lease: LEASE,
            renewing: std::sync::Mutex::new(None),
            started: std::sync::atomic::AtomicBool::new(false),
            offset_ms: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0)),
        })
    }

    /// Stops renewing this gateway's lease and makes no more admissions, as a crash would
    /// (for tests of what the other gateways then see).
    #[doc(hidden)]
    pub(crate) fn simulate_crash(&self) {
        self.started
            .store(true, std::sync::atomic::Ordering::Release);
        self.renewing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    /// The same store with a lease of another length (tests use short ones).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> RedisStore {
        self.lease = lease;
        self
    }

    /// Keeps this gateway's lease alive while the store lives: a renewal every third of the
    /// lease, from the first admission on.
    fn renew_lease(&self, key: &str) {
        if self.started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(mut conn) = self.conn() else {
            return;
        };
        let token = std::sync::Arc::new(());
        let alive = std::sync::Arc::downgrade(&token);
        *self
            .renewing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
        let (key, lease, offset) = (key.to_owned(), self.lease, self.offset_ms.clone());
        rt.spawn(async move {
            let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
            loop {
                if alive.upgrade().is_none() {
                    return;
                }
                // Redis' clock against ours, for the scripts' deadlines.
                let asked = super::unix_ms();
                let time = tokio::time::timeout(
                    TIMEOUT,
                    redis::cmd("TIME").query_async::<(u64, u64)>(&mut conn),
                )
                .await;
                if let Ok(Ok((secs, micros))) = time {
                    let answered = super::unix_ms();
                    let theirs = secs * 1000 + micros / 1000;
                    let ours = asked.midpoint(answered);
                    offset.store(
                        i64::try_from(theirs).unwrap_or(0) - i64::try_from(ours).unwrap_or(0),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(1).arg("PX").arg(ms);
                let renewed = matches!(
                    tokio::time::timeout(TIMEOUT, cmd.query_async::<()>(&mut conn)).await,
                    Ok(Ok(()))
                );
                // A failed renewal is tried again soon: two lost ones must not lapse the lease.
                let wait = if renewed {
                    lease / 3
                } else {
                    (lease / 3).min(Duration::from_millis(500))
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn conn(&self) -> Result<ConnectionManager, redis::RedisError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let c = lazy_connection(&self.client)?;
        Ok(self.conn.get_or_init(|| c).clone())
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.conn().map_err(|e| e.to_string())?;
        match tokio::time::timeout(TIMEOUT * 2, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("redis: {:?}", e.kind())),
            Err(_) => Err("redis: timed out".into()),
        }
    }

    pub(crate) async fn admit(
        &self,
        scopes: &[Scope],
        charge: Charge,
        w: &Windows,
        id: &str,
    ) -> Result<Result<Levels, Refused>, String> {
        let mut inv = self.admit.prepare_invoke();
        for s in scopes {
            let k = scope_key(s);
            inv.key(format!("{k}:rpm:{}", w.minute))
                .key(format!("{k}:tpm:{}", w.minute))
                .key(format!("{k}:usd:d:{}", w.day))
                .key(format!("{k}:usd:m:{}", w.month))
                .key(format!("{k}:reserved"));
        }
        // The gateway stops waiting for this call after TIMEOUT; the script does nothing after
        // (a little before) that, judged on Redis' clock.
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::Relaxed);
        let not_after = w
            .now_ms
            .saturating_add_signed(offset)
            .saturating_add(u64::try_from(TIMEOUT.as_millis()).unwrap_or(0) - 100);
        inv.arg(scopes.len())
            .arg(not_after)
            .arg(id)
            .arg(charge.tokens)
            .arg(charge.reserve_micros);
        for s in scopes {
            let l = &s.limits;
            inv.arg(cap(l.requests_per_minute))
                .arg(cap(l.tokens_per_minute))
                .arg(cap(l.usd_micros_per_day))
                .arg(cap(l.usd_micros_per_month));
        }
        // Ticket ids are `<instance>-<n>`: the instance names the lease.
        let lease_key = id
            .split_once('-')
            .map(|(instance, _)| format!("modelgate:lease:{instance}"))
            .unwrap_or_default();
        if !lease_key.is_empty() {
            self.renew_lease(&lease_key);
        }
        inv.arg(MINUTE_TTL_MS)
            .arg(
                u64::try_from(charge.lifetime.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX))
            .arg(lease_key);
        let out: Vec<i64> = self.run(&inv).await?;
        match out.as_slice() {
            [-2] => {
                Err("redis: the admission reached the store after the gateway gave up on it".into())
            }
            [-1, levels @ ..] => {
                let spend: Vec<&Scope> = scopes.iter().filter(|s| s.limits.has_spend()).collect();
                Ok(Ok(spend
                    .into_iter()
                    .zip(levels.chunks(2))
                    .map(|(s, l)| {
                        let v = |i: usize| l.get(i).map_or(0, |x| u64::try_from(*x).unwrap_or(0));
                        (s.clone(), v(0), v(1))
                    })
                    .collect()))
            }
            [i, which, held] => {
                let s = usize::try_from(*i)
                    .ok()
                    .and_then(|i| scopes.get(i))
                    .ok_or("redis: a scope out of range")?;
                let limit = match which {
                    0 => Limit::RequestsPerMinute,
                    1 => Limit::TokensPerMinute,
                    2 => Limit::UsdPerDay,
                    _ => Limit::UsdPerMonth,
                };
                Ok(Err(Refused {
                    kind: s.kind,
                    name: s.name.clone(),
                    limit,
                    cap: limit.cap(&s.limits).unwrap_or(0),
                    retry_after: super::spend_retry(limit, w, *held == 1),
                }))
            }
            _ => Err("redis: an unexpected answer from the admission script".into()),
        }
    }

    pub(crate) async fn finish(
        &self,
        settle: Option<&(String, Vec<Scope>, Charge)>,
        e: &UsageEntry,
        w: &Windows,
    ) -> Result<(), String> {
        let mut inv = self.finish.prepare_invoke();
        let (id, scopes, charged) = match settle {
            Some((id, scopes, charge)) => (id.as_str(), scopes.as_slice(), charge.tokens),
            None => ("", &[][..], 0),
        };
        for s in scopes {
            let k = scope_key(s);
            inv.key(format!("{k}:usd:d:{}", w.day))
                .key(format!("{k}:usd:m:{}", w.month))
                .key(format!("{k}:reserved"))
                .key(format!("{k}:tpm:{}", w.minute));
        }
        inv.key(format!("modelgate:usage:{}:d:{}", e.tenant, w.day))
            .key(format!("modelgate:usage:{}:m:{}", e.tenant, w.month))
            .key("modelgate:usage:tenants");
        let reserved_member = settle.map(|(id, _, c)| format!("{id}:{}", c.reserve_micros));
        inv.arg(scopes.len())
            .arg(reserved_member.as_deref().unwrap_or(id))
            .arg(e.cost_micros)
            .arg((e.input_tokens + e.output_tokens).saturating_sub(charged))
            .arg(e.field())
            .arg(e.input_tokens)
            .arg(e.output_tokens)
            .arg(&*e.tenant)
            .arg(DAY_TTL_MS)
            .arg(MONTH_TTL_MS)
            .arg(MINUTE_TTL_MS);
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    /// Drops a reservation whose request ended without an answer.
    pub(crate) async fn release(
        &self,
        id: &str,
        scopes: &[Scope],
        charge: Charge,
    ) -> Result<(), String> {
        let mut conn = self.conn().map_err(|e| e.to_string())?;
        let mut pipe = redis::pipe();
        for s in scopes {
            pipe.cmd("ZREM")
                .arg(format!("{}:reserved", scope_key(s)))
                .arg(format!("{id}:{}", charge.reserve_micros))
                .ignore();
        }
        match tokio::time::timeout(TIMEOUT * 2, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("redis: {:?}", e.kind())),
            Err(_) => Err("redis: timed out".into()),
        }
    }

    pub(crate) async fn usage(
        &self,
        tenant: Option<&str>,
        w: &Windows,
    ) -> Result<UsageReport, String> {
        let mut conn = self.conn().map_err(|e| e.to_string())?;
        let tenants: Vec<String> = match tenant {
            Some(t) => vec![t.to_owned()],
            None => {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg("modelgate:usage:tenants");
                tokio::time::timeout(TIMEOUT * 2, cmd.query_async(&mut conn))
                    .await
                    .map_err(|_| "redis: timed out".to_owned())?
                    .map_err(|e| format!("redis: {:?}", e.kind()))?
            }
        };
        let mut report = UsageReport {
            day: w.day.to_string(),
            month: w.month.to_string(),
            ..UsageReport::default()
        };
        for t in tenants {
            let mut periods: [Period; 2] = [Period::new(), Period::new()];
            for (i, key) in [
                format!("modelgate:usage:{t}:d:{}", w.day),
                format!("modelgate:usage:{t}:m:{}", w.month),
            ]
            .iter()
            .enumerate()
            {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(key);
                let fields: Vec<(String, u64)> =
                    tokio::time::timeout(TIMEOUT * 2, cmd.query_async(&mut conn))
                        .await
                        .map_err(|_| "redis: timed out".to_owned())?
                        .map_err(|e| format!("redis: {:?}", e.kind()))?;
                for (field, v) in fields {
                    if let Some((mo, metric)) = field.rsplit_once('|') {
                        periods[i].entry(mo.to_owned()).or_default().set(metric, v);
                    }
                }
            }
            let [d, m] = periods;
            if !d.is_empty() || !m.is_empty() {
                report.tenants.insert(t, (d, m));
            }
        }
        Ok(report)
    }
}
