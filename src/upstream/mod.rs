//! ⑥ Call: the only module that talks to upstreams. The attempt loop (`fallback`) tries the
//! decision's deployments in order, with retries, ejection and the request's deadline; each
//! attempt here builds the dialect's request, sends it within the phase timeouts, and reads the
//! answer. A stream is read up to its first content before it counts as answered: until then a
//! failure can still go to the next deployment.

pub(crate) mod breaker;
pub mod client;
pub(crate) mod error;
pub(crate) mod fallback;
pub(crate) mod health;
pub(crate) mod relay;
pub(crate) mod retry;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::adapters::{self, AdapterError, Completed};
use crate::config::{Deployment, Limits};
use crate::exchange::chat::ChatRequest;
use crate::exchange::embeddings::{Embeddings, EmbeddingsRequest};
use crate::exchange::encode::Encoder;
use crate::policy::Decision;
pub(crate) use error::{Attempt, AttemptError, Phase, Skip, SkipReason, UpstreamError};
pub(crate) use fallback::{Plan, Served};
use health::Health;
use relay::{Bounds, Deadline, Primed, Relay};

/// Longest upstream error body read, in bytes.
const MAX_ERROR_BODY: usize = 64 << 10;

/// An answer from a deployment.
pub(crate) enum Answer {
    /// A whole answer.
    Complete(Completed),
    /// A stream whose first content has arrived, ready to relay.
    Stream(Box<Relay>),
    /// A whole answer made locally (the echo model), for a client that asked for a stream.
    Local(crate::exchange::answer::Completion),
}

/// What streams need from the request's side: the client's encoder, and the drain signal.
pub(crate) struct StreamSetup<'a> {
    /// The client's encoder, for the deployment that answers.
    pub(crate) encoder: &'a (dyn Fn(&Deployment) -> Box<dyn Encoder> + Sync),
    pub(crate) drain: &'a (dyn Fn() -> Deadline + Sync),
}

/// Tries the decision's deployments.
pub(crate) async fn call(
    pools: &client::Pools,
    decision: &Decision,
    plan: &Plan<'_>,
    req: &ChatRequest,
    limits: &Limits,
    setup: &StreamSetup<'_>,
) -> Result<Served<Answer>, UpstreamError> {
    fallback::run(decision, plan, |d| {
        let health = plan.health.of(&d);
        attempt(pools, health, d, req, limits, setup)
    })
    .await
}

/// Seconds since the epoch, for `created` fields.
pub(crate) use crate::base::unix_now;

async fn attempt(
    pools: &client::Pools,
    health: &Health,
    d: Arc<Deployment>,
    req: &ChatRequest,
    limits: &Limits,
    setup: &StreamSetup<'_>,
) -> Result<Answer, AttemptError> {
    let d = d.as_ref();
    let Some(adapter) = d.kind().adapter() else {
        return Ok(echo(d, req));
    };
    let up = adapter.build_request(req, d).map_err(adapter_error)?;
    let response = send(pools, health, adapter, d, up).await?;
    let t = &d.endpoint.timeouts;
    if req.stream {
        let is_sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(AttemptError::Invalid(
                "a stream was asked for but the answer is not text/event-stream".into(),
            ));
        }
        let mut relay = Relay::new(
            Box::pin(response.bytes_stream()),
            adapter.stream_translator(req, d),
            (setup.encoder)(d),
            Bounds {
                max_line: limits.max_sse_line_bytes,
                idle: t.idle,
                backstop: t.stream_total,
            },
            Some((setup.drain)()),
            d.endpoint.masks.clone(),
        );
        return match relay.prime(t.first_token).await {
            Primed::Ready => Ok(Answer::Stream(Box::new(relay))),
            Primed::TimedOut => Err(AttemptError::Timeout(Phase::FirstToken)),
            Primed::Failed(why) => Err(AttemptError::Stream(why)),
        };
    }
    let body = read_capped(response, limits.max_response_bytes, t.total).await?;
    adapter
        .parse_response(body, req, d)
        .map(Answer::Complete)
        .map_err(adapter_error)
}

fn adapter_error(e: AdapterError) -> AttemptError {
    match e {
        AdapterError::InvalidResponse(m) => AttemptError::Invalid(m),
        AdapterError::Unsupported(m) => AttemptError::Unsupported(m),
    }
}

/// Sends an upstream request within the first-byte timeout; a non-2xx answer is read (capped)
/// and becomes the attempt's error.
async fn send(
    pools: &client::Pools,
    health: &Health,
    adapter: &dyn adapters::Adapter,
    d: &Deployment,
    up: adapters::UpstreamRequest,
) -> Result<reqwest::Response, AttemptError> {
    let ep = &d.endpoint;
    let client = pools
        .client(ep.timeouts.connect)
        .map_err(AttemptError::Unsupported)?;
    let mut builder = client
        .post(up.url)
        .body(up.body)
        .header(crate::hop::HOPS.clone(), crate::hop::outgoing());
    for (name, value) in up.headers {
        builder = builder.header(name, value);
    }
    let sent = std::time::Instant::now();
    let response = match tokio::time::timeout(ep.timeouts.first_byte, builder.send()).await {
        Err(_) => return Err(AttemptError::Timeout(Phase::FirstByte)),
        Ok(Err(e)) => return Err(send_error(&e)),
        Ok(Ok(r)) => r,
    };
    health.observe_first_byte(sent.elapsed());
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .filter(|v| v.len() <= 64)
        .cloned();
    let body = read_capped(response, MAX_ERROR_BODY as u64, ep.timeouts.total)
        .await
        .unwrap_or_default();
    // Some dialects say how long to wait in the body (Gemini's RetryInfo), not in a header.
    let retry_after = retry_after.or_else(|| adapter.retry_after_in_body(&body));
    Err(AttemptError::Status {
        fault: adapter.parse_error(status, &body, d),
        retry_after,
    })
}

/// Embeddings: the decision's deployments in order, as for chat.
pub(crate) async fn embed(
    pools: &client::Pools,
    decision: &Decision,
    plan: &Plan<'_>,
    req: &EmbeddingsRequest,
    limits: &Limits,
) -> Result<Served<Embeddings>, UpstreamError> {
    fallback::run(decision, plan, |d| async move {
        let health = plan.health.of(&d);
        let adapter = d
            .kind()
            .adapter()
            .ok_or_else(|| AttemptError::Unsupported("the echo model has no embeddings".into()))?;
        let up = adapter.build_embeddings(req, &d).map_err(adapter_error)?;
        let response = send(pools, health, adapter, &d, up).await?;
        let body = read_capped(
            response,
            limits.max_response_bytes,
            d.endpoint.timeouts.total,
        )
        .await?;
        adapter.parse_embeddings(&body, &d).map_err(adapter_error)
    })
    .await
}

/// Anthropic's `count_tokens` on an Anthropic deployment: the client's body with the
/// deployment's model name.
pub(crate) async fn count_tokens(
    pools: &client::Pools,
    health: &Health,
    d: &Deployment,
    body: &serde_json::Value,
) -> Result<Bytes, AttemptError> {
    let adapter = d
        .kind()
        .adapter()
        .ok_or_else(|| AttemptError::Unsupported("no token counting here".into()))?;
    let up = adapter.build_count_tokens(body, d).map_err(adapter_error)?;
    let response = send(pools, health, adapter, d, up).await?;
    read_capped(response, MAX_ERROR_BODY as u64, d.endpoint.timeouts.total).await
}

fn echo(d: &Deployment, req: &ChatRequest) -> Answer {
    let id = format!("chatcmpl-{}", crate::base::fresh_id());
    let c = adapters::echo::complete(req, &d.upstream_model, &id, unix_now());
    if req.stream {
        Answer::Local(c)
    } else {
        Answer::Complete(Completed {
            usage: Some(c.usage),
            body: adapters::AnswerBody::Parsed(c),
        })
    }
}

fn send_error(e: &reqwest::Error) -> AttemptError {
    if e.is_connect() {
        if e.is_timeout() {
            AttemptError::Timeout(Phase::Connect)
        } else {
            AttemptError::Connect
        }
    } else if e.is_timeout() {
        AttemptError::Timeout(Phase::FirstByte)
    } else {
        AttemptError::Io(error_chain_kind(e))
    }
}

/// A short, secret-free description of a transport error.
fn error_chain_kind(e: &reqwest::Error) -> String {
    if e.is_body() || e.is_decode() {
        "body error".into()
    } else if e.is_request() {
        "request error".into()
    } else {
        "transport error".into()
    }
}

/// Reads a body up to `limit` bytes within `total`.
async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
    total: Duration,
) -> Result<Bytes, AttemptError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(AttemptError::TooLarge(limit));
    }
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| AttemptError::Io(error_chain_kind(&e)))?
        {
            if buf.len() as u64 + chunk.len() as u64 > limit {
                return Err(AttemptError::TooLarge(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(total, read)
        .await
        .unwrap_or(Err(AttemptError::Timeout(Phase::Total)))
}
