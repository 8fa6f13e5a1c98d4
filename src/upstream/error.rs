//! ⑥ What attempts meet, and what the client is told when none succeeded: 502, or 504 when
//! every attempt timed out, 429 when every one was rate limited, 503 when no allowed deployment
//! was up (or eligible), 400 when none could take the request, or the upstream's own 4xx when it
//! refused the request itself.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};

use super::retry::RetryOn;
use crate::adapters::UpstreamFault;
use crate::adapters::sanitize::clean;
use crate::config::Deployment;
use crate::config::secret::Masks;
use crate::exchange::{ErrorBody, ErrorType};

/// The phase a timeout hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Connect,
    FirstByte,
    FirstToken,
    /// The request's deadline (retries and fallbacks included).
    Total,
}

/// What one attempt met.
#[derive(Debug)]
pub(crate) enum AttemptError {
    Connect,
    Timeout(Phase),
    /// The connection failed (reset) before the answer began.
    Io(String),
    Status {
        fault: UpstreamFault,
        retry_after: Option<HeaderValue>,
    },
    Invalid(String),
    /// A stream failed before its first content reached the client.
    Stream(String),
    TooLarge(u64),
    Unsupported(String),
}

impl AttemptError {
    /// Whether another deployment should be tried after this.
    pub(crate) fn falls_back(&self) -> bool {
        match self {
            AttemptError::Status { fault, .. } => {
                let s = fault.status;
                s == StatusCode::REQUEST_TIMEOUT
                    || s == StatusCode::TOO_MANY_REQUESTS
                    || s == StatusCode::UNAUTHORIZED
                    || s == StatusCode::FORBIDDEN
                    || s.is_server_error()
                    || s.is_redirection()
            }
            AttemptError::Timeout(Phase::Total) => false,
            _ => true,
        }
    }

    /// Which retry setting covers this failure, if a retry of the same deployment can help.
    pub(crate) fn retry_on(&self) -> Option<RetryOn> {
        match self {
            AttemptError::Connect | AttemptError::Io(_) => Some(RetryOn::Connect),
            AttemptError::Timeout(Phase::Total) => None,
            AttemptError::Timeout(_) => Some(RetryOn::Timeout),
            AttemptError::Status { fault, .. } => match fault.status.as_u16() {
                408 => Some(RetryOn::RequestTimeout),
                429 => Some(RetryOn::RateLimited),
                // 508: the deployment leads back to a gateway already on the request's path;
                // calling it again would only go round again.
                508 => None,
                500..=599 => Some(RetryOn::ServerError),
                _ => None,
            },
            AttemptError::Stream(_) => Some(RetryOn::ServerError),
            AttemptError::Invalid(_) | AttemptError::TooLarge(_) | AttemptError::Unsupported(_) => {
                None
            }
        }
    }

    /// Whether the failure is the deployment's (it counts towards its ejection); `None` when it
    /// says nothing about the deployment's health.
    pub(crate) fn is_deployment_failure(&self) -> Option<bool> {
        match self {
            AttemptError::Unsupported(_) => None,
            AttemptError::Status { fault, .. } => {
                let s = fault.status;
                Some(s.is_server_error() || s.is_redirection())
            }
            _ => Some(true),
        }
    }

    /// The same error with every text that could carry upstream words cleaned: the
    /// deployment's key masked in every form, key-like tokens removed, then cut. Every
    /// attempt's error passes through here before it is logged or told to the client.
    #[must_use]
    pub(crate) fn cleaned(self, masks: &Masks) -> AttemptError {
        let c = |m: String| clean(&m, masks);
        match self {
            AttemptError::Io(m) => AttemptError::Io(c(m)),
            AttemptError::Invalid(m) => AttemptError::Invalid(c(m)),
            AttemptError::Stream(m) => AttemptError::Stream(c(m)),
            AttemptError::Unsupported(m) => AttemptError::Unsupported(c(m)),
            AttemptError::Status {
                mut fault,
                retry_after,
            } => {
                fault.body.message = c(fault.body.message);
                fault.body.param = fault.body.param.map(c);
                fault.body.code = fault.body.code.map(c);
                AttemptError::Status { fault, retry_after }
            }
            e @ (AttemptError::Connect | AttemptError::Timeout(_) | AttemptError::TooLarge(_)) => e,
        }
    }

    /// The upstream's `Retry-After`, if it sent one.
    pub(crate) fn retry_after(&self, now_unix: u64) -> Option<Duration> {
        match self {
            AttemptError::Status {
                retry_after: Some(v),
                ..
            } => super::retry::retry_after(v, now_unix),
            _ => None,
        }
    }

    /// Every label `label` gives (and `ok`), for metrics that must exist before the first
    /// event.
    pub(crate) const LABELS: &[&str] = &[
        "ok",
        "connect_error",
        "timeout",
        "io_error",
        "rate_limited",
        "client_error",
        "server_error",
        "invalid_response",
        "stream_error",
        "too_large",
        "unsupported",
    ];

    /// A closed label for metrics.
    pub(crate) fn label(&self) -> &'static str {
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
            AttemptError::Stream(_) => "stream_error",
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
            AttemptError::Timeout(Phase::FirstToken) => f.write_str("no first token in time"),
            AttemptError::Timeout(Phase::Total) => f.write_str("the request's time ran out"),
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
            AttemptError::Stream(e) => {
                write!(f, "the stream failed before its first content ({e})")
            }
            AttemptError::TooLarge(n) => write!(f, "answer larger than {n} bytes"),
            AttemptError::Unsupported(e) => write!(f, "not supported: {e}"),
        }
    }
}

/// One failed attempt.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) deployment: Arc<Deployment>,
    pub(crate) error: AttemptError,
}

/// Why an allowed deployment was not tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// Ejected for failing; eligible again after this long.
    Ejected(Duration),
    /// It asked (`Retry-After`) not to be called for this long yet.
    CoolingDown(Duration),
    /// Over its own requests or tokens per minute until this long from now.
    Limited(Duration),
    /// A reload since the decision no longer allows it.
    Reloaded,
}

impl SkipReason {
    /// Every label `label` gives, for metrics that must exist before the first event.
    pub(crate) const LABELS: &[&str] = &[
        "ejected",
        "cooling_down",
        "rate_limited_here",
        "disallowed_by_reload",
    ];

    /// A closed label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            SkipReason::Ejected(_) => "ejected",
            SkipReason::CoolingDown(_) => "cooling_down",
            SkipReason::Limited(_) => "rate_limited_here",
            SkipReason::Reloaded => "disallowed_by_reload",
        }
    }
}

/// An allowed deployment that was not tried.
#[derive(Debug)]
pub(crate) struct Skip {
    pub(crate) deployment: Arc<Deployment>,
    pub(crate) reason: SkipReason,
}

/// What a failed request comes to, in the order it is decided.
enum Verdict<'a> {
    /// The upstream refused the request itself: passed on as it is.
    Refused(&'a UpstreamFault),
    RateLimited,
    Unsupported,
    TimedOut,
    /// Nothing allowed was up, reachable or eligible.
    Unavailable,
    Invalid,
    Failed,
}

/// No attempt succeeded.
#[derive(Debug, thiserror::Error)]
#[error("{}", summary(.attempts, .skipped))]
pub(crate) struct UpstreamError {
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) skipped: Vec<Skip>,
    /// The deployment of each retry made (same deployment again).
    pub(crate) retries: Vec<Arc<Deployment>>,
}

fn summary(attempts: &[Attempt], skipped: &[Skip]) -> String {
    let mut parts: Vec<String> = attempts
        .iter()
        .map(|a| format!("deployment '{}': {}", a.deployment.name, a.error))
        .collect();
    for s in skipped {
        parts.push(match s.reason {
            SkipReason::Ejected(wait) => format!(
                "deployment '{}': ejected after failures, eligible again in {} s",
                s.deployment.name,
                wait.as_secs().max(1)
            ),
            SkipReason::CoolingDown(wait) => format!(
                "deployment '{}': asked for a pause (Retry-After), {} s left",
                s.deployment.name,
                wait.as_secs().max(1)
            ),
            SkipReason::Limited(wait) => format!(
                "deployment '{}': over its rate limit, {} s left in the minute",
                s.deployment.name,
                wait.as_secs().max(1)
            ),
            SkipReason::Reloaded => format!(
                "deployment '{}': no longer allowed after a reload",
                s.deployment.name
            ),
        });
    }
    if attempts.is_empty() {
        return format!("no allowed deployment is available: {}", parts.join("; "));
    }
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

    /// Every attempt was rate limited, and every deployment not tried was cooling down after
    /// its own rate limit.
    fn all_rate_limited(&self) -> bool {
        (!self.attempts.is_empty() || !self.skipped.is_empty())
            && self.attempts.iter().all(|a| matches!(&a.error, AttemptError::Status { fault, .. } if fault.status == StatusCode::TOO_MANY_REQUESTS))
            && self.skipped.iter().all(|s| {
                matches!(
                    s.reason,
                    SkipReason::CoolingDown(_) | SkipReason::Limited(_)
                )
            })
    }

    /// Every allowed deployment was down: not tried (ejected), not reachable, or saying it is
    /// unavailable.
    fn all_unavailable(&self) -> bool {
        (self.attempts.is_empty() && !self.skipped.is_empty())
            || self.all(|e| match e {
                AttemptError::Connect => true,
                AttemptError::Status { fault, .. } => {
                    fault.status == StatusCode::SERVICE_UNAVAILABLE
                }
                _ => false,
            })
    }

    /// What the failure as a whole was, decided once: the status, the body's type and code,
    /// and whether a `Retry-After` is sent all follow from it.
    fn verdict(&self) -> Verdict<'_> {
        if let Some(f) = self.client_fault() {
            Verdict::Refused(f)
        } else if self.all_rate_limited() {
            Verdict::RateLimited
        } else if self.all(|e| matches!(e, AttemptError::Unsupported(_))) {
            Verdict::Unsupported
        } else if self.all(|e| matches!(e, AttemptError::Timeout(_))) {
            Verdict::TimedOut
        } else if self.all_unavailable() {
            Verdict::Unavailable
        } else if self.all(|e| matches!(e, AttemptError::Invalid(_))) {
            Verdict::Invalid
        } else {
            Verdict::Failed
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self.verdict() {
            Verdict::Refused(f) => f.status,
            Verdict::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Verdict::Unsupported => StatusCode::BAD_REQUEST,
            Verdict::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Verdict::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Verdict::Invalid | Verdict::Failed => StatusCode::BAD_GATEWAY,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        let (kind, code) = match self.verdict() {
            Verdict::Refused(f) => return f.body.clone(),
            Verdict::RateLimited => (ErrorType::RateLimitError, "upstream_rate_limited"),
            Verdict::Unsupported => (ErrorType::InvalidRequestError, "unsupported_parameter"),
            Verdict::TimedOut => (ErrorType::ApiError, "upstream_timeout"),
            Verdict::Unavailable => (ErrorType::ServerError, "no_eligible_backend"),
            Verdict::Invalid => (ErrorType::ApiError, "upstream_invalid_response"),
            Verdict::Failed => (ErrorType::ApiError, "upstream_error"),
        };
        ErrorBody::new(kind, self.to_string()).code(code)
    }

    /// When to come back, in whole seconds: the upstream's `Retry-After` (validated and clamped
    /// as the gateway itself uses it, never relayed as sent) when every attempt was rate
    /// limited or unavailable, or the time until a skipped deployment is eligible again.
    pub(crate) fn retry_after(&self) -> Option<HeaderValue> {
        if !matches!(self.verdict(), Verdict::RateLimited | Verdict::Unavailable) {
            return None;
        }
        let now = super::unix_now();
        let from_upstream = self
            .attempts
            .iter()
            .rev()
            .find_map(|a| a.error.retry_after(now))
            .map(|w| w.min(super::retry::MAX_COOLDOWN));
        let wait = from_upstream.or_else(|| {
            self.skipped
                .iter()
                .filter_map(|s| match s.reason {
                    SkipReason::Ejected(w)
                    | SkipReason::CoolingDown(w)
                    | SkipReason::Limited(w) => Some(w),
                    SkipReason::Reloaded => None,
                })
                .min()
        })?;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Some(HeaderValue::from(secs.max(1)))
    }
}
