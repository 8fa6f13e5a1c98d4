//! ④ Governance: requests and tokens per minute, spend per day and per month, for each key,
//! tenant and deployment that has limits. Spend is reserved before a call from its worst-case
//! cost and settled after it from the actual usage, so concurrent requests overshoot a budget
//! by at most the reservations in flight. Counters live in this process (`memory`) or in Redis,
//! shared by a fleet of gateways; every answered request's usage is recorded in the same store
//! for `GET /v1/usage`.

pub(crate) mod memory;
pub mod redis_store;
pub mod usage;
pub(crate) mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};

pub use crate::config::scopes::{LimitSet, Scope, ScopeKind, caller_scopes, micros};
use crate::config::spec::StoreErrorMode;
use crate::exchange::{ErrorBody, ErrorType};
pub(crate) use usage::{UsageEntry, UsageReport};
pub(crate) use window::Windows;

/// Milliseconds since the epoch, by this machine's clock.
pub(crate) use crate::base::unix_ms;

/// Which cap refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    RequestsPerMinute,
    TokensPerMinute,
    UsdPerDay,
    UsdPerMonth,
}

impl Limit {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Limit::RequestsPerMinute => "requests_per_minute",
            Limit::TokensPerMinute => "tokens_per_minute",
            Limit::UsdPerDay => "usd_per_day",
            Limit::UsdPerMonth => "usd_per_month",
        }
    }

    /// The cap of this kind in `l`.
    pub(crate) fn cap(self, l: &LimitSet) -> Option<u64> {
        match self {
            Limit::RequestsPerMinute => l.requests_per_minute,
            Limit::TokensPerMinute => l.tokens_per_minute,
            Limit::UsdPerDay => l.usd_micros_per_day,
            Limit::UsdPerMonth => l.usd_micros_per_month,
        }
    }

    /// Until the window of this cap starts again.
    pub(crate) fn reset(self, w: &Windows) -> Duration {
        match self {
            Limit::RequestsPerMinute | Limit::TokensPerMinute => w.to_next_minute,
            Limit::UsdPerDay => w.to_next_day,
            Limit::UsdPerMonth => w.to_next_month,
        }
    }
}

/// What a request asks of its scopes' counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Charge {
    /// Tokens counted now: the prompt (estimated) plus `max_tokens`.
    pub tokens: u64,
    /// The worst-case cost, reserved until the request settles.
    pub reserve_micros: u64,
    /// How long the reservation may live: the request's own time plus a margin (a stream
    /// whose client stops reading is cut after `server.write_stall_timeout`, 30 s). A reservation
    /// nobody settled or released (a lost release, a late admission) is gone after it; one of
    /// a gateway that died is gone when its lease lapses (Redis), sooner.
    pub lifetime: Duration,
}

/// How much longer than its request a reservation lives.
pub(crate) const RESERVATION_MARGIN: Duration = Duration::from_secs(60);

/// When a refusal by spend may be retried: in a second when reservations in flight are what
/// fill the budget (they settle or go within seconds), else when the window starts again.
fn spend_retry(limit: Limit, w: &Windows, reservations_fill_it: bool) -> Duration {
    if reservations_fill_it {
        Duration::from_secs(1)
    } else {
        limit.reset(w)
    }
}

/// A refusal: which scope's which cap, and when to come back.
#[derive(Clone, Debug)]
pub struct Refused {
    pub(crate) kind: ScopeKind,
    pub(crate) name: Arc<str>,
    pub(crate) limit: Limit,
    pub(crate) cap: u64,
    pub(crate) retry_after: Duration,
}

/// Why a request cannot be counted.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("{}", refused_message(.0))]
    Refused(Refused),
    #[error("the limit store cannot be reached")]
    Unavailable,
}

fn refused_message(r: &Refused) -> String {
    let what = match r.limit {
        Limit::RequestsPerMinute => format!("{} requests per minute", r.cap),
        Limit::TokensPerMinute => format!("{} tokens per minute", r.cap),
        Limit::UsdPerDay => format!("a budget of ${:.2} per day", r.cap as f64 / 1e6),
        Limit::UsdPerMonth => format!("a budget of ${:.2} per month", r.cap as f64 / 1e6),
    };
    format!(
        "{} '{}' is over its limit of {what}; retry in {} s",
        r.kind.as_str(),
        r.name,
        r.retry_after.as_secs().max(1)
    )
}

impl LimitError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            LimitError::Refused(_) => StatusCode::TOO_MANY_REQUESTS,
            LimitError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        match self {
            LimitError::Refused(r) => {
                let code = match r.limit {
                    Limit::RequestsPerMinute | Limit::TokensPerMinute => "rate_limit_exceeded",
                    Limit::UsdPerDay | Limit::UsdPerMonth => "budget_exceeded",
                };
                ErrorBody::new(ErrorType::RateLimitError, self.to_string()).code(code)
            }
            LimitError::Unavailable => ErrorBody::new(
                ErrorType::ServerError,
                "the gateway cannot reach its limit store, and requests with limits are refused until it can",
            )
            .code("limit_store_unavailable"),
        }
    }

    /// `Retry-After` and OpenAI's `x-ratelimit-*` headers.
    pub(crate) fn headers(&self, h: &mut HeaderMap) {
        let LimitError::Refused(r) = self else {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return;
        };
        let secs = r.retry_after.as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            h.insert(http::header::RETRY_AFTER, v);
        }
        let suffix = match r.limit {
            Limit::RequestsPerMinute => "requests",
            Limit::TokensPerMinute => "tokens",
            Limit::UsdPerDay | Limit::UsdPerMonth => "usd-micros",
        };
        for (name, value) in [
            (format!("x-ratelimit-limit-{suffix}"), r.cap.to_string()),
            (format!("x-ratelimit-remaining-{suffix}"), "0".to_owned()),
            (format!("x-ratelimit-reset-{suffix}"), format!("{secs}s")),
        ] {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                h.insert(n, v);
            }
        }
    }
}

/// Where the counters are.
#[expect(
    clippy::large_enum_variant,
    reason = "one per gateway: what the smaller variant would save is a few hundred bytes once"
)]
pub enum Store {
    Memory(memory::MemoryStore),
    Redis(redis_store::RedisStore),
}

/// Spend levels after an admission, for the budget gauges: (scope, day, month) in micros,
/// reservations included.
pub(crate) type Levels = Vec<(Scope, u64, u64)>;

/// The limiter of a running gateway: the store and what to do when it fails.
pub struct Limiter {
    store: Store,
    pub(crate) on_error: StoreErrorMode,
    /// A prefix that makes ticket ids unique across gateways sharing a store.
    instance: u64,
    next: AtomicU64,
    /// Store failures, by operation (`admit`, `settle`, `usage`).
    errors: std::sync::OnceLock<prometheus::IntCounterVec>,
}

impl std::fmt::Debug for Limiter {
    // The store's URL may carry a password: only its kind is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.store {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        };
        f.debug_struct("Limiter")
            .field("store", &kind)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    #[cfg(test)]
    pub(crate) fn memory() -> Limiter {
        Limiter::new(
            Store::Memory(memory::MemoryStore::default()),
            StoreErrorMode::Closed,
        )
    }

    /// The limiter a configuration asks for (its store was validated when it was loaded).
    pub(crate) fn for_config(c: &crate::config::Config) -> Limiter {
        let store = match redis_store::RedisStore::new(&c.limit_store) {
            Ok(r) if c.limit_store != "memory" => Store::Redis(r),
            _ => Store::Memory(memory::MemoryStore::default()),
        };
        Limiter::new(store, c.on_store_error)
    }

    /// Counts store failures in `errors`.
    pub(crate) fn count_errors_in(&self, errors: prometheus::IntCounterVec) {
        let _ = self.errors.set(errors);
    }

    pub fn new(store: Store, on_error: StoreErrorMode) -> Limiter {
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        Limiter {
            store,
            on_error,
            instance: u64::from_le_bytes(seed),
            next: AtomicU64::new(1),
            errors: std::sync::OnceLock::new(),
        }
    }

    /// The store's description, to tell whether a reload changed it.
    pub(crate) fn describes(&self) -> String {
        match &self.store {
            Store::Memory(_) => "memory".to_owned(),
            Store::Redis(r) => r.url().to_owned(),
        }
    }

    fn failed(&self, op: &str) {
        if let Some(e) = self.errors.get() {
            e.with_label_values(&[op]).inc();
        }
    }

    /// Counts a request against `scopes` (and reserves its worst case), or says which cap
    /// refuses it. With no scope, nothing is asked of the store.
    pub async fn admit(
        self: &Arc<Self>,
        scopes: &[Scope],
        charge: Charge,
    ) -> Result<Option<(Ticket, Levels)>, LimitError> {
        if scopes.is_empty() {
            return Ok(None);
        }
        let w = Windows::now();
        // `{instance:016x}-{n:016x}`, without `format!`'s machinery on every request.
        let mut id = String::with_capacity(33);
        crate::base::push_hex(&mut id, self.instance);
        id.push('-');
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        crate::base::push_hex(&mut id, n);
        let result = match &self.store {
            Store::Memory(m) => Ok(m.admit(scopes, charge, &w, &id)),
            Store::Redis(r) => r.admit(scopes, charge, &w, &id).await,
        };
        match result {
            Ok(Ok(levels)) => Ok(Some((
                Ticket {
                    id,
                    scopes: scopes.to_vec(),
                    charge,
                    limiter: self.clone(),
                    settled: AtomicBool::new(false),
                },
                levels,
            ))),
            Ok(Err(refused)) => Err(LimitError::Refused(refused)),
            Err(e) => {
                // The script may still run (a stalled Redis wakes up): whatever it wrote under
                // this ticket is taken back, queued behind it.
                if matches!(self.store, Store::Redis(_)) && charge.reserve_micros > 0 {
                    self.release(id, scopes.to_vec(), charge);
                }
                self.admit_failed(&e, None)
            }
        }
    }

    /// An admission the store could not answer: counted, logged, and refused or let through
    /// (as `open`) by `limits.on_store_error`.
    fn admit_failed<T>(&self, e: &impl std::fmt::Display, open: T) -> Result<T, LimitError> {
        self.failed("admit");
        tracing::warn!(error = %e, "the limit store failed");
        match self.on_error {
            StoreErrorMode::Closed => Err(LimitError::Unavailable),
            StoreErrorMode::Open => Ok(open),
        }
    }

    /// Counts one attempt against a deployment's own limits (no reservation: deployments have
    /// no budgets).
    pub(crate) async fn count(&self, scope: &Scope, tokens: u64) -> Result<(), LimitError> {
        let w = Windows::now();
        let scopes = std::slice::from_ref(scope);
        let charge = Charge {
            tokens,
            reserve_micros: 0,
            lifetime: Duration::ZERO,
        };
        let result = match &self.store {
            Store::Memory(m) => Ok(m.admit(scopes, charge, &w, "")),
            Store::Redis(r) => r.admit(scopes, charge, &w, "").await,
        };
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(refused)) => Err(LimitError::Refused(refused)),
            Err(e) => self.admit_failed(&e, ()),
        }
    }

    /// Records an answered request's usage, settling its ticket if it has one. Off the
    /// request's path: the store is written in the background.
    pub fn finish(self: &Arc<Self>, ticket: Option<&Ticket>, entry: UsageEntry) {
        let settle = ticket.and_then(|t| {
            (!t.settled.swap(true, Ordering::AcqRel))
                .then(|| (t.id.clone(), t.scopes.clone(), t.charge))
        });
        let this = self.clone();
        let w = Windows::now();
        match &self.store {
            Store::Memory(m) => m.finish(settle.as_ref(), &entry, &w),
            Store::Redis(_) => {
                tokio::spawn(async move {
                    let Store::Redis(r) = &this.store else { return };
                    if let Err(e) = r.finish(settle.as_ref(), &entry, &w).await {
                        this.failed("settle");
                        tracing::warn!(error = %e, "could not record usage in the limit store");
                    }
                });
            }
        }
    }

    /// Releases a ticket whose request ended without an answer.
    fn release(self: &Arc<Self>, id: String, scopes: Vec<Scope>, charge: Charge) {
        match &self.store {
            Store::Memory(m) => m.release(&id, &scopes, charge),
            Store::Redis(_) => {
                let this = self.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let Store::Redis(r) = &this.store else { return };
                        if r.release(&id, &scopes, charge).await.is_err() {
                            this.failed("settle");
                        }
                    });
                }
            }
        }
    }

    /// Stops this gateway's lease renewal, as a crash would (tests).
    #[doc(hidden)]
    pub fn simulate_crash(&self) {
        if let Store::Redis(r) = &self.store {
            r.simulate_crash();
        }
    }

    /// Usage of the current day and month, for every tenant or one.
    pub(crate) async fn usage(&self, tenant: Option<&str>) -> Result<UsageReport, LimitError> {
        let w = Windows::now();
        let r = match &self.store {
            Store::Memory(m) => Ok(m.usage(tenant, &w)),
            Store::Redis(r) => r.usage(tenant, &w).await,
        };
        r.map_err(|e| {
            self.failed("usage");
            tracing::warn!(error = %e, "could not read usage from the limit store");
            LimitError::Unavailable
        })
    }
}

/// An admitted request's claim on its scopes, settled once with the actual usage or released
/// when dropped unsettled (the request failed, or its client left before an answer).
pub struct Ticket {
    id: String,
    scopes: Vec<Scope>,
    charge: Charge,
    limiter: Arc<Limiter>,
    settled: AtomicBool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.limiter.release(
                self.id.clone(),
                std::mem::take(&mut self.scopes),
                self.charge,
            );
        }
    }
}

#[cfg(test)]
mod tests;
