//! ③→⑦ The life of one request, top to bottom: parse, decide, admit, call, respond. One file
//! per endpoint; what they share is here: opening a request (content type, body, labels),
//! deciding, and the one way out of a failed request (its log line and its error in the
//! client's format). `admit.rs` counts a request against its caller's limits, `record.rs`
//! settles an answered one.

mod admit;
mod chat;
mod count_tokens;
mod embeddings;
mod models;
mod record;
pub(crate) mod responses;
mod trace;
mod usage;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use tokio::sync::watch;

pub(crate) use chat::{chat_completions, messages};
pub(crate) use count_tokens::count_tokens;
pub(crate) use embeddings::embeddings;
pub(crate) use models::models;
pub(crate) use usage::usage;

use crate::api::{self, Front};
use crate::auth::{Authed, Caller};
use crate::error::GatewayError;
use crate::exchange::headers::X_REQUEST_ID;
use crate::live::Current;
use crate::metrics::Metrics;
use crate::policy::recheck::{Asked, Recheck};
use crate::policy::{self, Decision, PolicyError};
use crate::stream::body::ResponseBody;
use crate::upstream::relay::Deadline;

/// What every request shares: metrics, the live configuration, and the drain signal.
pub(crate) struct Ctx {
    pub(crate) metrics: Arc<Metrics>,
    /// The newest current, for attempts that start after a reload.
    pub(crate) live: crate::live::Live,
    /// Turns true when the drain deadline of a shutdown has passed.
    pub(crate) drain_deadline: watch::Receiver<bool>,
    /// One permit per request in flight until its answer starts
    /// (`server.max_concurrent_requests`).
    pub(crate) admission: Arc<tokio::sync::Semaphore>,
    /// One permit per stream past its first content (`server.max_open_streams`), taken in
    /// exchange for its admission permit, held until it ends.
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    /// Connections to upstreams, kept across reloads.
    pub(crate) pools: Arc<crate::upstream::client::Pools>,
    /// Responses kept for `previous_response_id`.
    pub(crate) conversations: Arc<crate::conversations::Conversations>,
}

impl Ctx {
    fn deadline(&self) -> Deadline {
        let mut rx = self.drain_deadline.clone();
        Box::pin(async move {
            if rx.wait_for(|passed| *passed).await.is_err() {
                // No shutdown can come any more: never fire.
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A response, the policy that decided it (for the request metrics), and whether its log line
/// is written (the boundary writes the line of every request that has none).
pub(crate) struct Outcome {
    pub(crate) response: Response<ResponseBody>,
    pub(crate) policy: Option<Arc<str>>,
    pub(crate) logged: bool,
}

impl Outcome {
    /// An answer whose line the boundary writes.
    fn unlogged(response: Response<ResponseBody>) -> Outcome {
        Outcome {
            response,
            policy: None,
            logged: false,
        }
    }
}

impl From<GatewayError> for Outcome {
    fn from(e: GatewayError) -> Outcome {
        Outcome::unlogged(e.into_response())
    }
}

/// A failed request: why, and the policy that had decided it, if one had.
type Failure = (GatewayError, Option<Arc<str>>);

/// A failure before any policy decided.
fn undecided(e: impl Into<GatewayError>) -> Failure {
    (e.into(), None)
}

/// A model request as it arrives: who asks, under which current, since when, in which format.
struct Opened {
    caller: Caller,
    current: Arc<Current>,
    request_id: HeaderValue,
    started: Instant,
    /// The endpoint label of its log line.
    endpoint: &'static str,
    /// The format its errors are written in.
    front: Front,
    /// What its caller's shadow policy made of it, once decided: for its log line.
    shadow: std::sync::OnceLock<policy::Shadowed>,
    /// Its trace, when traces are exported and it is sampled.
    trace: crate::telemetry::traces::Trace,
}

/// What a model request sent: its headers and its JSON body.
struct Sent {
    headers: HeaderMap,
    body: Bytes,
}

impl Opened {
    /// Opens a request: notes who asks and when, and checks that it sent JSON; its body is
    /// read next (`Unread::read`). Not async, so that the futures of the endpoints hold what
    /// was opened rather than the request as well (each level of a future holds its arguments
    /// for as long as it lives, and is copied whole when it is made).
    fn open<B>(
        authed: Authed<B>,
        endpoint: &'static str,
        front: Front,
    ) -> (Opened, Result<Unread<B>, Failure>) {
        let started = Instant::now();
        let Authed {
            caller,
            current,
            request,
        } = authed;
        let request_id = request
            .headers()
            .get(&X_REQUEST_ID)
            .cloned()
            .unwrap_or(HeaderValue::from_static("-"));
        let limits = current.config.limits;
        let trace = trace::open(&current, request.headers(), endpoint);
        trace::caller(&trace, &caller, request_id.to_str().unwrap_or("-"));
        let opened = Opened {
            caller,
            current,
            request_id,
            started,
            endpoint,
            front,
            shadow: std::sync::OnceLock::new(),
            trace,
        };
        let (parts, body) = request.into_parts();
        let unread = match api::check_json_content_type(&parts.headers) {
            Ok(()) => Ok(Unread {
                headers: parts.headers,
                body,
                limit: limits.max_body_bytes,
                within: limits.body_read_timeout,
            }),
            Err(e) => Err(undecided(e)),
        };
        (opened, unread)
    }

    /// The one way out of a model request: an answer as it is, a failure logged with what was
    /// known and written in the client's format.
    fn exit(&self, result: Result<Outcome, Failure>) -> Outcome {
        let (e, policy) = match result {
            Ok(o) => return o,
            Err(f) => f,
        };
        trace::failed(&self.trace, &e);
        if tracing::enabled!(tracing::Level::INFO)
            && let Some(mut line) = crate::telemetry::info_line("request failed")
        {
            line.str("endpoint", self.endpoint)
                .str("request_id", self.request_id.to_str().unwrap_or("-"))
                .str("tenant", &self.caller.tenant)
                .str("policy", policy.as_deref().unwrap_or("-"));
            for (name, value) in self
                .shadow
                .get()
                .into_iter()
                .flat_map(record::shadow_fields)
            {
                line.str(name, value);
            }
            line.u64("status", e.status().as_u16().into())
                .str("error", e.kind().as_str())
                .str("detail", &e.to_string())
                .u64("duration_ms", self.started.elapsed().as_millis() as u64);
        }
        Outcome {
            response: e.into_response_for(self.front),
            policy,
            logged: true,
        }
    }

    /// Counts the request against its caller's limits with `charge` (nothing without one, or
    /// without limits); a refusal names the `policy` that had decided.
    async fn admit(
        &self,
        ctx: &Ctx,
        policy: &Arc<str>,
        charge: Option<crate::limits::Charge>,
    ) -> Result<Option<crate::limits::Ticket>, Failure> {
        admit::admit(ctx, &self.current, &self.caller, charge)
            .await
            .map_err(|e| (e, Some(policy.clone())))
    }

    /// What decides again, before each attempt after a reload, whether a deployment is
    /// still allowed for what was asked.
    fn recheck<'a>(&'a self, ctx: &Ctx, asked: Asked<'a>) -> Recheck<'a, Current> {
        Recheck::new(ctx.live.clone(), self.current.clone(), &self.caller, asked)
    }

    /// Decides `ask` under its caller's policy, and under the caller's shadow policy if it has
    /// one: that is counted and kept for the log line, never routed by, and whatever it says
    /// leaves the live decision as it is.
    fn decide(&self, ctx: &Ctx, ask: &policy::Ask) -> Result<Decision, Failure> {
        let live = policy::decide(ask, &self.current);
        if let Some(s) = policy::shadow(ask, &self.current, live.as_ref()) {
            ctx.metrics.shadowed(&s);
            // Set once: a request is decided once.
            let _ = self.shadow.set(s);
        }
        trace::decided(&self.trace, ask, &live, self.shadow.get());
        self.decided(ctx, live)
    }

    /// Records a decision, or its refusal, in the metrics and (at debug level) the log.
    fn decided(
        &self,
        ctx: &Ctx,
        decided: Result<Decision, PolicyError>,
    ) -> Result<Decision, Failure> {
        let decision = decided.map_err(|e| {
            let name = ctx.metrics.refusal(&e);
            (GatewayError::from(e), name)
        })?;
        ctx.metrics.decision(&decision);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let refused: Vec<String> = decision
                .refused()
                .iter()
                .map(|(d, r)| format!("{}: {}", d.name, r.detail))
                .collect();
            let allowed: Vec<&str> = decision
                .candidates()
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            tracing::debug!(
                request_id = self.request_id.to_str().unwrap_or("-"),
                policy = &*decision.policy,
                rule = &*decision.rule,
                base_rule = decision.base_rule.as_deref().unwrap_or("-"),
                allowed = ?allowed,
                refused = ?refused,
                "decision"
            );
        }
        Ok(decision)
    }
}

/// A model request whose body is still to be read: its headers (JSON, checked) and its body,
/// with the size and time it may take.
struct Unread<B> {
    headers: HeaderMap,
    body: B,
    limit: u64,
    within: std::time::Duration,
}

impl<B> Unread<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Reads the body within the configured size and time.
    async fn read(self) -> Result<Sent, Failure> {
        let Unread {
            headers,
            body,
            limit,
            within,
        } = self;
        let body = api::read_body(body, limit, within)
            .await
            .map_err(undecided)?;
        Ok(Sent { headers, body })
    }
}

/// The body of a request that `Opened::open` let through, read; or why it was not.
async fn read<B>(unread: Result<Unread<B>, Failure>) -> Result<Sent, Failure>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    unread?.read().await
}

/// The labels a request carries in its headers (and, for chat, its metadata).
fn labels(
    headers: &HeaderMap,
    metadata: Option<&[(String, String)]>,
) -> Result<Vec<(String, String)>, Failure> {
    policy::labels::collect(headers, metadata).map_err(undecided)
}
