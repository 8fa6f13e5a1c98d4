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
mod plain;
pub(crate) mod relay;
pub(crate) mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::adapters::{self, AdapterError, Completed, UpstreamRequest};
use crate::config::{Deployment, Limits};
use crate::exchange::chat::ChatRequest;
use crate::exchange::embeddings::{Embeddings, EmbeddingsRequest};
use crate::exchange::encode::Encoder;
use crate::policy::Decision;
use crate::telemetry::traces::{self, Trace};
pub(crate) use error::{Attempt, AttemptError, Phase, Skip, SkipReason, UpstreamError};
pub(crate) use fallback::{Plan, Served};
use health::Health;
use relay::{Bounds, Deadline, Primed, Relay};

/// Longest upstream error body read, in bytes.
const MAX_ERROR_BODY: usize = 64 << 10;

/// An attempt's one timer, moved from phase to phase (first byte, then the body or the first
/// token). Moving it later only extends a registered timer, a store rather than another
/// registration with the time driver, so an attempt registers one timer whatever its phases.
type Timer<'a> = Pin<&'a mut tokio::time::Sleep>;

/// A new attempt's timer, set by the first phase.
fn timer() -> tokio::time::Sleep {
    tokio::time::sleep(Duration::MAX)
}

/// `work`, unless `limit` passes first (from now): then a timeout in `phase`. `work` comes
/// pinned where the caller made it: taken by value, it would be moved in here and then again
/// into its pinned place, and this future (with every one above it) would hold it twice.
async fn within<T>(
    mut timer: Timer<'_>,
    limit: Duration,
    phase: Phase,
    mut work: Pin<&mut impl Future<Output = Result<T, AttemptError>>>,
) -> Result<T, AttemptError> {
    timer.as_mut().reset(tokio::time::Instant::now() + limit);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = work.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(AttemptError::Timeout(phase))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// An answer from a deployment.
pub(crate) enum Answer {
    /// A whole answer.
    Complete(Completed),
    /// A stream whose first content has arrived, ready to relay.
    Stream(Box<Relay>),
    /// A whole answer made locally (the echo model), for a client that asked for a stream.
    Local(crate::exchange::answer::Completion),
}

/// What streams need from the request's side: the client's encoder, and the drain signal; and
/// what the request's side makes while an attempt's answer is on its way.
pub(crate) struct StreamSetup<'a> {
    /// The client's encoder, for the deployment that answers.
    pub(crate) encoder: &'a (dyn Fn(&Deployment) -> Box<dyn Encoder> + Sync),
    pub(crate) drain: &'a (dyn Fn() -> Deadline + Sync),
    /// Called once an attempt's request has gone out to `d` and its answer is awaited (not
    /// for one answered at once): what the answer from `d` will need can be made then.
    pub(crate) waiting: &'a (dyn Fn(&Arc<Deployment>) + Sync),
}

impl fallback::Answered for Answer {
    fn record_later(&mut self, health: &Arc<Health>) -> bool {
        let Answer::Stream(relay) = self else {
            return false;
        };
        let health = health.clone();
        relay.later(move |_| health.breaker.record(true, tokio::time::Instant::now()));
        true
    }
}

impl fallback::Answered for Embeddings {}

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
        attempt(pools, health, d, req, limits, setup, plan.trace)
    })
    .await
}

/// The trace context on a request to a deployment that may have it (the attempt in
/// progress set it when it started).
fn traced(mut up: UpstreamRequest, trace: &Trace) -> UpstreamRequest {
    if let Some(tp) = traces::upstream_traceparent(trace) {
        up.headers.push((traces::TRACEPARENT, tp));
    }
    up
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
    trace: &Trace,
) -> Result<Answer, AttemptError> {
    let arc = d;
    let d = arc.as_ref();
    let Some(adapter) = d.kind().adapter() else {
        return Ok(echo(d, req));
    };
    let up = traced(adapter.build_request(req, d).map_err(adapter_error)?, trace);
    let mut timer = std::pin::pin!(timer());
    let t = &d.endpoint.timeouts;
    // Boxed now, not once primed: the attempt's future holds a pointer across the wait for the
    // first content, not the relay's 472 bytes (copied with it into its box). Made in its box.
    let relay = || {
        crate::base::boxed(|| {
            Relay::new(
                adapter.stream_translator(req, d),
                (setup.encoder)(d),
                Bounds {
                    max_line: limits.max_sse_line_bytes,
                    idle: t.idle,
                    backstop: t.stream_total,
                },
                Some((setup.drain)()),
                d.endpoint.masks.clone(),
            )
        })
    };
    // While the answer is on its way (the core idle otherwise), what comes after it is made:
    // the stream's relay here, the client's answer's parts by the request's side. Made after
    // it came, they are on the way to the first token.
    let (response, made) = {
        let sending = std::pin::pin!(send(pools, health, adapter, d, up, timer.as_mut()));
        crate::base::meanwhile(sending, || {
            (setup.waiting)(&arc);
            req.stream.then(relay)
        })
        .await
    };
    let response = response?;
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
        let mut relay = made.flatten().unwrap_or_else(relay);
        relay.attach(client::chunks(response));
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + t.first_token);
        return match relay.prime(timer).await {
            Primed::Ready => Ok(Answer::Stream(relay)),
            Primed::TimedOut => Err(AttemptError::Timeout(Phase::FirstToken)),
            Primed::Failed(why) => Err(AttemptError::Stream(why)),
        };
    }
    let body = read_capped(response, limits.max_response_bytes, timer, t.total).await?;
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
///
/// Not an `async fn`, and the request made where it is handed over: an `async fn` keeps its
/// arguments twice (as given, and as its body's own), and a named request keeps its room
/// beside the future it was moved into. Each is a copy of `up` or of the request (144 and
/// 256 bytes) in every attempt's future.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn send<'a>(
    pools: &'a client::Pools,
    health: &'a Health,
    adapter: &'a dyn adapters::Adapter,
    d: &'a Deployment,
    up: adapters::UpstreamRequest,
    mut timer: Timer<'a>,
) -> impl Future<Output = Result<client::Response, AttemptError>> + 'a {
    async move {
        let ep = &d.endpoint;
        let sent = std::time::Instant::now();
        let (limit, phase) = (ep.timeouts.first_byte, Phase::FirstByte);
        let response = match plain(&up.url) {
            Some((authority, path)) => {
                let pool = pools.plain(authority, ep.timeouts.connect);
                let path = path.clone();
                let host = match &ep.host {
                    Some(host) => host.clone(),
                    // Made as at load (host, and port unless 80), never from the authority whole:
                    // that may carry credentials.
                    None => crate::config::deployment::plain_http_host(&up.url.to_string())
                        .ok_or_else(|| AttemptError::Unsupported("the URL's host".into()))?,
                };
                let sending = std::pin::pin!(pool.send(outgoing(up, Some(host), Some(path))));
                within(timer.as_mut(), limit, phase, sending).await?
            }
            None => {
                let client = pools
                    .data(ep.timeouts.connect)
                    .map_err(AttemptError::Unsupported)?;
                let host = ep.host.clone();
                let request = async move {
                    match client.request(outgoing(up, host, None)).await {
                        Ok(response) => Ok(response.map(plain::UpBody::unleased)),
                        Err(e) => Err(send_error(&e)),
                    }
                };
                within(timer.as_mut(), limit, phase, std::pin::pin!(request)).await?
            }
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
        let body = read_capped(response, MAX_ERROR_BODY as u64, timer, ep.timeouts.total)
            .await
            .unwrap_or_default();
        // Some dialects say how long to wait in the body (Gemini's RetryInfo), not in a header.
        let retry_after = retry_after.or_else(|| adapter.retry_after_in_body(&body));
        Err(AttemptError::Status {
            fault: adapter.parse_error(status, &body, d),
            retry_after,
        })
    }
}

/// The request as it goes upstream: the dialect's headers after the gateway's own (user agent,
/// hops, host), to `path` on a plain-HTTP pool's connection or to the whole URL.
fn outgoing(
    up: adapters::UpstreamRequest,
    host: Option<http::HeaderValue>,
    path: Option<http::uri::PathAndQuery>,
) -> http::Request<client::Body> {
    let mut request = http::Request::new(client::Body::new(up.body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = match path {
        Some(path) => http::Uri::from(path),
        None => up.url,
    };
    let headers = request.headers_mut();
    // Room for all of them, so the map never grows: user agent, hops, host and the dialect's.
    headers.reserve(up.headers.len() + 3);
    headers.insert(http::header::USER_AGENT, client::USER_AGENT.clone());
    headers.insert(crate::hop::HOPS.clone(), crate::hop::outgoing());
    if let Some(host) = host {
        headers.insert(http::header::HOST, host);
    }
    for (name, value) in up.headers {
        headers.append(name, value);
    }
    request
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
        let up = traced(
            adapter.build_embeddings(req, &d).map_err(adapter_error)?,
            plan.trace,
        );
        let mut timer = std::pin::pin!(timer());
        let response = send(pools, health, adapter, &d, up, timer.as_mut()).await?;
        let body = read_capped(
            response,
            limits.max_response_bytes,
            timer,
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
    let mut timer = std::pin::pin!(timer());
    let response = send(pools, health, adapter, d, up, timer.as_mut()).await?;
    read_capped(
        response,
        MAX_ERROR_BODY as u64,
        timer,
        d.endpoint.timeouts.total,
    )
    .await
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

/// The authority and the path of a plain-HTTP URL: those go through our own pool.
fn plain(url: &http::Uri) -> Option<(&http::uri::Authority, &http::uri::PathAndQuery)> {
    if url.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    Some((url.authority()?, url.path_and_query()?))
}

fn send_error(e: &client::Error) -> AttemptError {
    if e.is_connect() {
        if timed_out(e) {
            AttemptError::Timeout(Phase::Connect)
        } else {
            AttemptError::Connect
        }
    } else {
        AttemptError::Io("transport error".into())
    }
}

/// Whether the connector gave up at its connect timeout (an I/O error of kind `TimedOut` under
/// the client's error).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Reads a body up to `limit` bytes within `total`. A body that comes in one chunk (most
/// whole answers) is passed on as it came, not copied.
async fn read_capped(
    response: client::Response,
    limit: u64,
    timer: Timer<'_>,
    total: Duration,
) -> Result<Bytes, AttemptError> {
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    let mut body = response.into_body();
    if body.size_hint().lower() > limit {
        return Err(AttemptError::TooLarge(limit));
    }
    let read = async {
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        let mut len: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| AttemptError::Io("body error".into()))?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            len += chunk.len() as u64;
            if len > limit {
                return Err(AttemptError::TooLarge(limit));
            }
            match first.take() {
                None if buf.is_empty() => first = Some(chunk),
                held => {
                    if let Some(held) = held {
                        buf.reserve(held.len() + chunk.len());
                        buf.extend_from_slice(&held);
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| buf.freeze()))
    };
    within(timer, total, Phase::Total, std::pin::pin!(read)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(url: &str) -> adapters::UpstreamRequest {
        adapters::UpstreamRequest {
            url: url.parse().unwrap(),
            headers: vec![
                (
                    http::header::CONTENT_TYPE,
                    "application/json".parse().unwrap(),
                ),
                (http::header::AUTHORIZATION, "Bearer k".parse().unwrap()),
            ],
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn an_upstream_request_carries_the_gateways_headers_then_the_dialects() {
        let path = "/v1/chat/completions?x=1".parse().unwrap();
        let host = http::HeaderValue::from_static("127.0.0.1:8000");
        let r = outgoing(
            up("http://127.0.0.1:8000/v1/chat/completions?x=1"),
            Some(host),
            Some(path),
        );
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.uri(), "/v1/chat/completions?x=1");
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "user-agent",
                "x-modelgate-hops",
                "host",
                "content-type",
                "authorization"
            ]
        );
        assert_eq!(r.headers()[http::header::HOST], "127.0.0.1:8000");
        // Room for every header from the start: the map never grew.
        assert!(r.headers().capacity() >= 5);

        // To the whole URL, without a host of its own (hyper-util's client writes it).
        let r = outgoing(
            up("https://api.example.test/v1/chat/completions"),
            None,
            None,
        );
        assert_eq!(r.uri(), "https://api.example.test/v1/chat/completions");
        assert!(r.headers().get(http::header::HOST).is_none());
        assert_eq!(r.headers().len(), 4);
    }
}
