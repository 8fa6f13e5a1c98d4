//! The one error boundary: every failure of a request becomes an OpenAI error body with the
//! right status here, and nowhere else.

use http::{HeaderValue, Response, StatusCode, header};

use crate::conversations::ConversationError;
use crate::exchange::{ErrorBody, ErrorType, RequestError};
use crate::policy::PolicyError;
use crate::stream::body::ResponseBody;
use crate::stream::respond::json_response;
use crate::upstream::UpstreamError;

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("missing API key: send 'Authorization: Bearer <key>'")]
    Missing,
    #[error("malformed Authorization header: send 'Authorization: Bearer <key>'")]
    Malformed,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has expired")]
    Expired,
}

/// Everything that can end a request with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    #[error("unknown path {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("too many requests in flight")]
    Overloaded,
    #[error("request loop: the request came back to the gateway it passed through")]
    Loop,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
    #[error("internal error")]
    Internal(String),
}

/// A closed set of error kinds, for metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    BadRequest,
    Auth,
    Policy,
    NotFound,
    Upstream,
    Overloaded,
    Limited,
    Internal,
}

impl ErrorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Auth => "auth",
            ErrorKind::Policy => "policy",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Limited => "limited",
            ErrorKind::Internal => "internal",
        }
    }
}

impl GatewayError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            GatewayError::Request(e) => e.status(),
            GatewayError::Auth(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Policy(e) => e.status(),
            GatewayError::Upstream(e) => e.status(),
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::Conversation(e) => match e {
                ConversationError::NotFound(_) => StatusCode::NOT_FOUND,
                ConversationError::TooLarge(_) => StatusCode::BAD_REQUEST,
                ConversationError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Limit(e) => e.status(),
            GatewayError::Loop => StatusCode::LOOP_DETECTED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            GatewayError::Request(_) | GatewayError::MethodNotAllowed { .. } => {
                ErrorKind::BadRequest
            }
            GatewayError::Auth(_) => ErrorKind::Auth,
            GatewayError::NotFound(_) => ErrorKind::NotFound,
            GatewayError::Conversation(e) => match e {
                ConversationError::NotFound(_) => ErrorKind::NotFound,
                ConversationError::TooLarge(_) => ErrorKind::BadRequest,
                ConversationError::Unavailable(_) => ErrorKind::Internal,
            },
            GatewayError::Policy(e) => {
                if matches!(e, PolicyError::UnknownModel(_)) {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Policy
                }
            }
            GatewayError::Upstream(_) => ErrorKind::Upstream,
            GatewayError::Overloaded => ErrorKind::Overloaded,
            GatewayError::Loop => ErrorKind::BadRequest,
            GatewayError::Limit(_) => ErrorKind::Limited,
            GatewayError::Forbidden(_) => ErrorKind::Auth,
            GatewayError::Internal(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        match self {
            GatewayError::Request(e) => e.body(),
            GatewayError::Auth(e) => {
                let code = match e {
                    AuthError::Missing => "missing_api_key",
                    AuthError::Malformed | AuthError::Invalid => "invalid_api_key",
                    AuthError::Expired => "expired_api_key",
                };
                ErrorBody::new(ErrorType::AuthenticationError, e.to_string()).code(code)
            }
            GatewayError::Policy(e) => e.body(),
            GatewayError::Upstream(e) => e.body(),
            GatewayError::NotFound(path) => ErrorBody::new(
                ErrorType::InvalidRequestError,
                format!(
                    "unknown path {}: modelgate serves /v1/chat/completions, /v1/responses, /v1/messages, /v1/embeddings and /v1/models",
                    printable(path)
                ),
            )
            .code("unknown_url"),
            GatewayError::Conversation(e) => {
                let (kind, code) = match e {
                    ConversationError::NotFound(_) => {
                        (ErrorType::InvalidRequestError, "response_not_found")
                    }
                    ConversationError::TooLarge(_) => {
                        (ErrorType::InvalidRequestError, "conversation_too_large")
                    }
                    ConversationError::Unavailable(_) => {
                        (ErrorType::ServerError, "response_store_unavailable")
                    }
                };
                ErrorBody::new(kind, e.to_string()).code(code)
            }
            GatewayError::MethodNotAllowed { allow } => ErrorBody::new(
                ErrorType::InvalidRequestError,
                format!("method not allowed: use {allow}"),
            )
            .code("method_not_allowed"),
            GatewayError::Overloaded => ErrorBody::new(
                ErrorType::ServerError,
                "the gateway is at its limit of requests in flight; retry shortly",
            )
            .code("overloaded"),
            GatewayError::Limit(e) => e.body(),
            GatewayError::Loop => ErrorBody::new(
                ErrorType::InvalidRequestError,
                "request loop detected: this request has already passed through this gateway (is a deployment's base_url the gateway itself?)",
            )
            .code("loop_detected"),
            GatewayError::Forbidden(m) => {
                ErrorBody::new(ErrorType::PermissionError, *m).code("forbidden")
            }
            GatewayError::Internal(_) => {
                ErrorBody::new(ErrorType::ServerError, "internal error").code("internal_error")
            }
        }
    }

    /// The response: status, OpenAI error body, and the headers the status calls for.
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        self.into_response_for(crate::api::Front::OpenAi)
    }

    /// The response in the error format of the client's API.
    pub(crate) fn into_response_for(self, front: crate::api::Front) -> Response<ResponseBody> {
        let status = self.status();
        let body = match front {
            crate::api::Front::OpenAi | crate::api::Front::Responses => self.body().to_json(),
            crate::api::Front::Anthropic => {
                crate::api::anthropic_out::error_json(&self.body(), status.as_u16())
            }
        };
        let mut res = json_response(status, body);
        let h = res.headers_mut();
        match &self {
            GatewayError::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            GatewayError::Upstream(e) => {
                if let Some(ra) = e.retry_after() {
                    h.insert(header::RETRY_AFTER, ra);
                }
            }
            GatewayError::Overloaded => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::Limit(e) => e.headers(h),
            _ => {}
        }
        res
    }
}

/// What a caught panic becomes: a 500 that says nothing of the panic.
pub(crate) fn panic_response(
    _panic: Box<dyn std::any::Any + Send + 'static>,
) -> Response<ResponseBody> {
    tracing::error!("a request handler panicked");
    GatewayError::Internal("panic".into()).into_response()
}

/// Text from a request, safe to echo in an error message: short, printable.
pub(crate) use crate::base::printable;
