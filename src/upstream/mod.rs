//! ⑥ Call: the only module that talks to upstreams. Tries the decision's deployments in order,
//! one attempt each, and collects what each attempt met; a later attempt happens only when the
//! failure was the upstream's (connect error, timeout, 408, 429, 5xx, an invalid answer), never
//! when the request itself was refused.

pub mod client;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode};

use crate::adapters::{self, AdapterError, Completed, StreamTranslator, UpstreamFault};
use crate::api::chat::ChatRequest;
use crate::api::embeddings::{Embeddings, EmbeddingsRequest};
use crate::api::{ErrorBody, ErrorType};
use crate::config::{Deployment, Limits};
use crate::policy::Decision;
use crate::stream::relay::ByteStream;

/// Longest upstream error body read, in bytes.
const MAX_ERROR_BODY: usize = 64 << 10;

/// An answer from a deployment.
pub enum Answer {
    /// A whole answer in OpenAI's format.
    Complete(Completed),
    /// A stream still to be relayed.
    Stream {
        body: ByteStream,
        translator: Box<dyn StreamTranslator>,
    },
    /// A whole answer made locally (the echo model), for a client that asked for a stream.
    Local(crate::adapters::answer::Completion),
}

/// The deployment that answered, and what the failed attempts before it met.
pub struct Served<T = Answer> {
    pub deployment: Arc<Deployment>,
    pub answer: T,
    pub failed: Vec<Attempt>,
}

/// One failed attempt.
#[derive(Debug)]
pub struct Attempt {
    pub deployment: Arc<Deployment>,
    pub error: AttemptError,
}

/// The phase a timeout hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connect,
    FirstByte,
    Total,
}

/// What one attempt met.
#[derive(Debug)]
pub enum AttemptError {
    Connect,
    Timeout(Phase),
    Io(String),
    Status {
        fault: UpstreamFault,
        retry_after: Option<HeaderValue>,
    },
    Invalid(String),
    TooLarge(u64),
    Unsupported(String),
}

impl AttemptError {
    /// Whether another deployment should be tried after this.
    pub fn falls_back(&self) -> bool {
        match self {
            AttemptError::Status { fault, .. } => {
                let s = fault.status;
                s == StatusCode::REQUEST_TIMEOUT
                    || s == StatusCode::TOO_MANY_REQUESTS
                    || s == StatusCode::UNAUTHORIZED
                    || s == StatusCode::FORBIDDEN
                    || s.is_server_error()
            }
            _ => true,
        }
    }

    /// A closed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptError::Connect => "connect_error",
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Io(_) => "io_error",
            AttemptError::Status { fault, .. } if fault.status == StatusCode::TOO_MANY_REQUESTS => {
                "rate_limited"
            }
            AttemptError::Status { fault, .. } if fault.status.is_client_error() => "client_error",
            AttemptError::Status { .. } => "server_error",
            AttemptError::Invalid(_) => "invalid_response",
            AttemptError::TooLarge(_) => "too_large",
            AttemptError::Unsupported(_) => "unsupported",
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Connect => f.write_str("could not connect"),
            AttemptError::Timeout(Phase::Connect) => f.write_str("connect timed out"),
            AttemptError::Timeout(Phase::FirstByte) => f.write_str("no response in time"),
            AttemptError::Timeout(Phase::Total) => f.write_str("the answer took too long"),
            AttemptError::Io(e) => write!(f, "connection error ({e})"),
            AttemptError::Status { fault, .. } if matches!(fault.status.as_u16(), 401 | 403) => {
                write!(
                    f,
                    "HTTP {}: the upstream refused the gateway's credentials",
                    fault.status.as_u16()
                )
            }
            AttemptError::Status { fault, .. } => {
                write!(f, "HTTP {}: {}", fault.status.as_u16(), fault.body.message)
            }
            AttemptError::Invalid(e) => write!(f, "invalid answer ({e})"),
            AttemptError::TooLarge(n) => write!(f, "answer larger than {n} bytes"),
            AttemptError::Unsupported(e) => write!(f, "not supported: {e}"),
        }
    }
}

/// Every attempt failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", summary(.attempts))]
pub struct UpstreamError {
    pub attempts: Vec<Attempt>,
}

fn summary(attempts: &[Attempt]) -> String {
    let parts: Vec<String> = attempts
        .iter()
        .map(|a| format!("deployment '{}': {}", a.deployment.name, a.error))
        .collect();
    format!(
        "{} upstream attempt{} failed: {}",
        attempts.len(),
        if attempts.len() == 1 { "" } else { "s" },
        parts.join("; ")
    )
}

impl UpstreamError {
    /// A request the upstream refused as malformed, passed on as it is.
    fn client_fault(&self) -> Option<&UpstreamFault> {
        match self.attempts.last().map(|a| &a.error) {
            Some(AttemptError::Status { fault, .. })
                if fault.status.is_client_error()
                    && !matches!(fault.status.as_u16(), 401 | 403 | 408 | 429) =>
            {
                Some(fault)
            }
            _ => None,
        }
    }

    fn all(&self, f: impl Fn(&AttemptError) -> bool) -> bool {
        !self.attempts.is_empty() && self.attempts.iter().all(|a| f(&a.error))
    }

    fn all_rate_limited(&self) -> bool {
        self.all(|e| matches!(e, AttemptError::Status { fault, .. } if fault.status == StatusCode::TOO_MANY_REQUESTS))
    }

    pub fn status(&self) -> StatusCode {
        if let Some(f) = self.client_fault() {
            return f.status;
        }
        if self.all_rate_limited() {
            StatusCode::TOO_MANY_REQUESTS
        } else if self.all(|e| matches!(e, AttemptError::Unsupported(_))) {
            StatusCode::BAD_REQUEST
        } else if self.all(|e| matches!(e, AttemptError::Timeout(_))) {
            StatusCode::GATEWAY_TIMEOUT
        } else if self.all_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_GATEWAY
        }
    }

    /// Every allowed deployment was down: not reachable, or saying it is unavailable.
    fn all_unavailable(&self) -> bool {
        self.all(|e| match e {
            AttemptError::Connect => true,
            AttemptError::Status { fault, .. } => fault.status == StatusCode::SERVICE_UNAVAILABLE,
            _ => false,
        })
    }

    pub fn body(&self) -> ErrorBody {
        if let Some(f) = self.client_fault() {
            return f.body.clone();
        }
        let (kind, code) = if self.all_rate_limited() {
            (ErrorType::RateLimitError, "upstream_rate_limited")
        } else if self.all(|e| matches!(e, AttemptError::Unsupported(_))) {
            (ErrorType::InvalidRequestError, "unsupported_parameter")
        } else if self.all(|e| matches!(e, AttemptError::Timeout(_))) {
            (ErrorType::ApiError, "upstream_timeout")
        } else if self.all_unavailable() {
            (ErrorType::ServerError, "no_eligible_backend")
        } else if self.all(|e| matches!(e, AttemptError::Invalid(_))) {
            (ErrorType::ApiError, "upstream_invalid_response")
        } else {
            (ErrorType::ApiError, "upstream_error")
        };
        ErrorBody::new(kind, self.to_string()).code(code)
    }

    /// `Retry-After` of the last attempt that gave one, when every attempt was rate limited or
    /// unavailable.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        if !self.all_rate_limited() && !self.all_unavailable() {
            return None;
        }
        self.attempts.iter().rev().find_map(|a| match &a.error {
            AttemptError::Status { retry_after, .. } => retry_after.clone(),
            _ => None,
        })
    }
}

/// Tries the decision's deployments in order.
pub async fn call(
    decision: &Decision,
    req: &ChatRequest,
    limits: &Limits,
) -> Result<Served, UpstreamError> {
    fallback(decision, |d| attempt(d, req, limits)).await
}

/// The fallback loop: one attempt per allowed deployment, in the decision's order, until one
/// answers or a failure says the request itself is at fault. It can only reach deployments
/// through the decision.
pub async fn fallback<T, F, Fut>(
    decision: &Decision,
    mut attempt: F,
) -> Result<Served<T>, UpstreamError>
where
    F: FnMut(Arc<Deployment>) -> Fut,
    Fut: std::future::Future<Output = Result<T, AttemptError>>,
{
    let mut failed = Vec::new();
    for d in decision.candidates() {
        match attempt(d.clone()).await {
            Ok(answer) => {
                return Ok(Served {
                    deployment: d.clone(),
                    answer,
                    failed,
                });
            }
            Err(error) => {
                tracing::warn!(deployment = %d.name, error = %error, "upstream attempt failed");
                let next = error.falls_back();
                failed.push(Attempt {
                    deployment: d.clone(),
                    error,
                });
                if !next {
                    break;
                }
            }
        }
    }
    Err(UpstreamError { attempts: failed })
}

/// Seconds since the epoch, for `created` fields.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn attempt(
    d: Arc<Deployment>,
    req: &ChatRequest,
    limits: &Limits,
) -> Result<Answer, AttemptError> {
    let d = d.as_ref();
    let kind = d.kind();
    let Some(adapter) = kind.adapter() else {
        return Ok(echo(d, req));
    };
    let up = adapter.build_request(req, d).map_err(adapter_error)?;
    let response = send(adapter, d, up).await?;
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
        return Ok(Answer::Stream {
            body: Box::pin(response.bytes_stream()),
            translator: adapter.stream_translator(req, d),
        });
    }
    let body = read_capped(
        response,
        limits.max_response_bytes,
        d.endpoint.timeouts.total,
    )
    .await?;
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
    adapter: &dyn adapters::Adapter,
    d: &Deployment,
    up: adapters::UpstreamRequest,
) -> Result<reqwest::Response, AttemptError> {
    let ep = &d.endpoint;
    let client = ep
        .client
        .get()
        .map_err(|e| AttemptError::Unsupported(e.to_owned()))?;
    let mut builder = client.post(up.url.as_str()).body(up.body);
    for (name, value) in up.headers {
        builder = builder.header(name, value);
    }
    let sent = std::time::Instant::now();
    let response = match tokio::time::timeout(ep.timeouts.first_byte, builder.send()).await {
        Err(_) => return Err(AttemptError::Timeout(Phase::FirstByte)),
        Ok(Err(e)) => return Err(send_error(&e)),
        Ok(Ok(r)) => r,
    };
    d.stats.observe_first_byte(sent.elapsed());
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
    Err(AttemptError::Status {
        fault: adapter.parse_error(status, &body, d),
        retry_after,
    })
}

/// Embeddings: the decision's deployments in order, as for chat.
pub async fn embed(
    decision: &Decision,
    req: &EmbeddingsRequest,
    limits: &Limits,
) -> Result<Served<Embeddings>, UpstreamError> {
    fallback(decision, |d| async move {
        let adapter = d
            .kind()
            .adapter()
            .ok_or_else(|| AttemptError::Unsupported("the echo model has no embeddings".into()))?;
        let up = adapter.build_embeddings(req, &d).map_err(adapter_error)?;
        let response = send(adapter, &d, up).await?;
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
pub async fn count_tokens(d: &Deployment, body: &serde_json::Value) -> Result<Bytes, AttemptError> {
    let adapter = d
        .kind()
        .adapter()
        .ok_or_else(|| AttemptError::Unsupported("no token counting here".into()))?;
    let mut body = body.clone();
    body["model"] = serde_json::Value::String(d.upstream_model.clone());
    if let Some(o) = body.as_object_mut() {
        o.remove("stream");
        o.remove("max_tokens");
    }
    let mut headers = vec![
        (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            http::HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(adapters::anthropic::VERSION),
        ),
    ];
    if let Some((name, value)) = &d.endpoint.auth_header {
        headers.push((name.clone(), value.clone()));
    }
    let up = adapters::UpstreamRequest {
        url: format!("{}/messages/count_tokens", d.endpoint.base_url),
        headers,
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    };
    let response = send(adapter, d, up).await?;
    read_capped(response, MAX_ERROR_BODY as u64, d.endpoint.timeouts.total).await
}

fn echo(d: &Deployment, req: &ChatRequest) -> Answer {
    let id = format!("chatcmpl-{}", crate::server::request_id::fresh());
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
