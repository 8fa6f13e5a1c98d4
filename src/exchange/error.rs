//! ③ The OpenAI error body, `{"error":{"message","type","param","code"}}`, and the request
//! errors the parser reports.

use http::StatusCode;
use serde::Serialize;

/// The `type` field of an OpenAI error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[expect(
    clippy::enum_variant_names,
    reason = "OpenAI's names for its error types"
)]
pub(crate) enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    PermissionError,
    NotFoundError,
    RateLimitError,
    ApiError,
    ServerError,
}

/// An error as the client sees it: status plus the OpenAI body.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorBody {
    pub(crate) message: String,
    #[serde(rename = "type")]
    pub(crate) kind: ErrorType,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorBody,
}

impl ErrorBody {
    pub(crate) fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        ErrorBody {
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    #[must_use]
    pub(crate) fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    #[must_use]
    pub(crate) fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// `{"error": {...}}` as bytes.
    pub(crate) fn to_json(&self) -> bytes::Bytes {
        // Serialising plain strings and options cannot fail; the fallback keeps the shape anyway.
        serde_json::to_vec(&Envelope { error: self })
            .map(bytes::Bytes::from)
            .unwrap_or_else(|_| {
                bytes::Bytes::from_static(
                    br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#,
                )
            })
    }
}

/// What is wrong with a client's request body or headers. Always the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<String>,
        code: &'static str,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("unsupported content type {0:?}: send application/json")]
    ContentType(String),
    #[error("could not read the request body: {0}")]
    Body(String),
    #[error("the request body did not arrive within {0} s")]
    Timeout(u64),
    #[error("unsupported content encoding {0:?}: send the body uncompressed")]
    ContentEncoding(String),
}

impl RequestError {
    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        RequestError::Invalid {
            message: message.into(),
            param: Some(param.into()),
            code: "invalid_value",
        }
    }

    pub(crate) fn missing(param: &str) -> Self {
        RequestError::Invalid {
            message: format!("missing required parameter '{param}'"),
            param: Some(param.to_owned()),
            code: "missing_required_parameter",
        }
    }

    pub(crate) fn unsupported(param: &str, why: &str) -> Self {
        RequestError::Invalid {
            message: format!("unsupported parameter '{param}': {why}"),
            param: Some(param.to_owned()),
            code: "unsupported_parameter",
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RequestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::ContentType(_) | RequestError::ContentEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            RequestError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        let b = ErrorBody::new(ErrorType::InvalidRequestError, self.to_string());
        match self {
            RequestError::Json(_) => b.code("invalid_json"),
            RequestError::Invalid { param, code, .. } => {
                let b = b.code(*code);
                match param {
                    Some(p) => b.param(p.clone()),
                    None => b,
                }
            }
            RequestError::TooLarge { .. } => b.code("request_too_large"),
            RequestError::ContentType(_) => b.code("unsupported_media_type"),
            RequestError::Body(_) => b.code("invalid_body"),
            RequestError::Timeout(_) => b.code("request_timeout"),
            RequestError::ContentEncoding(_) => b.code("unsupported_content_encoding"),
        }
    }
}
