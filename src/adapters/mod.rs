//! ⑤ Translate: one adapter per wire dialect, not per vendor. Adapters are pure and synchronous
//! (no I/O), so each is tested with plain `#[test]`s; `upstream` does the calling.

pub(crate) mod anthropic;
pub(crate) mod echo;
pub(crate) mod gemini;
pub(crate) mod media;
pub(crate) mod openai_compat;
pub(crate) mod openai_responses;
pub(crate) mod sanitize;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::config::Deployment;
use crate::config::spec::Kind;
use crate::exchange::chat::ChatRequest;
use crate::exchange::embeddings::{Embeddings, EmbeddingsRequest};
use crate::exchange::encode::Encoder;
use crate::exchange::sse::SseEvent;
use crate::exchange::{ErrorBody, ErrorType, Usage};

/// An HTTP request to an upstream, built from the parsed request, never from client bytes.
pub struct UpstreamRequest {
    pub(crate) url: http::Uri,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

/// A whole (non-streaming) answer.
#[derive(Debug)]
pub struct Completed {
    pub(crate) body: AnswerBody,
    pub(crate) usage: Option<Usage>,
}

/// A whole answer as the upstream gave it (OpenAI's format, relayed as it is to OpenAI
/// clients), or translated into the gateway's own picture.
#[derive(Debug)]
pub(crate) enum AnswerBody {
    /// With where its top-level `model` value lies, found while the answer was checked, so
    /// that naming the model that answered does not read it again.
    OpenAi(Bytes, Option<std::ops::Range<usize>>),
    Parsed(crate::exchange::answer::Completion),
    /// A response object of OpenAI's Responses API, for a Responses client.
    Responses(Bytes),
}

/// What the upstream said was wrong, in OpenAI's shape, with nothing secret left in it.
#[derive(Debug, Clone)]
pub struct UpstreamFault {
    pub(crate) status: StatusCode,
    pub(crate) body: ErrorBody,
}

/// Why an adapter could not use what the upstream sent.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("upstream sent an invalid response: {0}")]
    InvalidResponse(String),
    #[error("this deployment cannot serve the request: {0}")]
    Unsupported(String),
}

/// The headers of a JSON request to a deployment: the content type and the deployment's key
/// (room for one more, a dialect's version header).
pub(crate) fn json_headers(d: &Deployment) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut headers = Vec::with_capacity(3);
    headers.push((
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    ));
    if let Some((name, value)) = &d.endpoint.auth_header {
        headers.push((name.clone(), value.clone()));
    }
    headers
}

/// An upstream URL made from configured parts (never from a client's).
/// A URL the deployment prepared at load, or why there is none.
pub(crate) fn prepared(url: Option<&http::Uri>) -> Result<http::Uri, AdapterError> {
    url.cloned()
        .ok_or_else(|| AdapterError::Unsupported("the upstream URL is invalid".into()))
}

/// The URL a chat request to `d` goes to, made when the configuration loaded.
fn chat_url(d: &Deployment, stream: bool) -> Result<http::Uri, AdapterError> {
    d.chat_url(stream).ok_or_else(|| {
        AdapterError::Unsupported("the deployment's base URL is not a valid URL".into())
    })
}

/// A dialect.
pub trait Adapter: Send + Sync {
    /// The upstream request for `req` on deployment `d`.
    fn build_request(
        &self,
        req: &ChatRequest,
        d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError>;

    /// A whole answer, translated to OpenAI's format.
    fn parse_response(
        &self,
        body: Bytes,
        req: &ChatRequest,
        d: &Deployment,
    ) -> Result<Completed, AdapterError>;

    /// An error answer, translated and sanitised.
    fn parse_error(&self, status: StatusCode, body: &[u8], d: &Deployment) -> UpstreamFault;

    /// How long an error answer asks the gateway to wait, where the dialect says it in the
    /// body rather than in `Retry-After` (Gemini's `RetryInfo`), as a `Retry-After` value.
    fn retry_after_in_body(&self, _body: &[u8]) -> Option<http::HeaderValue> {
        None
    }

    /// A translator for one streamed answer.
    fn stream_translator(&self, req: &ChatRequest, d: &Deployment) -> Box<dyn StreamTranslator>;

    /// The upstream request for embeddings, for dialects that have them.
    fn build_embeddings(
        &self,
        _req: &EmbeddingsRequest,
        _d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError> {
        Err(AdapterError::Unsupported(
            "this provider has no embeddings API".into(),
        ))
    }

    /// An embeddings answer.
    fn parse_embeddings(&self, _body: &[u8], _d: &Deployment) -> Result<Embeddings, AdapterError> {
        Err(AdapterError::Unsupported(
            "this provider has no embeddings API".into(),
        ))
    }

    /// The upstream request that counts a Messages request's tokens, for dialects that can
    /// (its answer is passed on as it is).
    fn build_count_tokens(
        &self,
        _body: &serde_json::Value,
        _d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError> {
        Err(AdapterError::Unsupported("no token counting here".into()))
    }
}

/// Whether a stream goes on after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    More,
    /// The upstream finished the answer; the relay ends the client's stream with `[DONE]`.
    Done,
}

/// The upstream reported an error inside its stream.
#[derive(Debug, Clone)]
pub struct StreamFault {
    pub(crate) body: ErrorBody,
}

impl StreamFault {
    /// An event that is not what its dialect says it is; the same code as a whole answer
    /// that does not parse.
    pub(crate) fn invalid(what: &str) -> StreamFault {
        StreamFault {
            body: ErrorBody::new(
                ErrorType::ApiError,
                format!("upstream sent an invalid stream {what}"),
            )
            .code("upstream_invalid_response"),
        }
    }

    /// An error the upstream reported in its stream. Its message is raw: the relay cleans
    /// every stream error with the deployment's masks.
    pub(crate) fn reported(message: impl Into<String>, code: &'static str) -> StreamFault {
        StreamFault {
            body: ErrorBody::new(ErrorType::ApiError, message).code(code),
        }
    }
}

/// Translates one upstream stream, event by event, into pieces of the answer for the client's
/// encoder.
pub trait StreamTranslator: Send {
    /// Hands what `ev` says to `enc`, which writes the client's bytes to `out`.
    fn event(
        &mut self,
        ev: &SseEvent,
        enc: &mut dyn Encoder,
        out: &mut BytesMut,
    ) -> Result<Flow, StreamFault>;

    /// The upstream body ended. Dialects without an end marker (Gemini) decide here whether
    /// the answer was complete; the default says it was not.
    fn end_of_stream(
        &mut self,
        _enc: &mut dyn Encoder,
        _out: &mut BytesMut,
    ) -> Result<Flow, StreamFault> {
        Ok(Flow::More)
    }

    /// Whether a usage chunk went to the client as the upstream sent it.
    fn usage_relayed(&self) -> bool {
        false
    }

    /// Usage the upstream reported, if any yet.
    fn usage(&self) -> Option<Usage>;

    /// Bytes of generated text seen so far, for an estimate when no usage comes.
    fn output_chars(&self) -> usize;

    /// Whether any chunk with content (text, a tool call, usage) has been relayed: the point
    /// after which the answer can no longer be taken back.
    fn committed(&self) -> bool;
}

impl Kind {
    /// The adapter of this dialect; `None` for the in-process echo model.
    pub fn adapter(self) -> Option<&'static dyn Adapter> {
        match self {
            Kind::Openai | Kind::OpenaiCompatible => Some(&openai_compat::OpenAiCompat),
            Kind::Anthropic => Some(&anthropic::Anthropic),
            Kind::Gemini => Some(&gemini::Gemini),
            Kind::Echo => None,
        }
    }
}

/// Runs an upstream stream, cut into `chunks`, through a dialect's translator and a client's
/// encoder, as the relay does; returns what the client would read.
#[cfg(test)]
pub(crate) fn run_stream(
    adapter: &dyn Adapter,
    req: &ChatRequest,
    d: &Deployment,
    front: crate::api::Front,
    chunks: &[&[u8]],
) -> (String, Result<Flow, StreamFault>) {
    let mut t = adapter.stream_translator(req, d);
    let mut enc = front.encoder(
        req.wants_stream_usage(),
        (req.text_len() as u64).div_ceil(4),
        None,
        &d.upstream_model,
    );
    let mut dec = crate::exchange::sse::SseDecoder::new(1 << 20);
    let mut out = BytesMut::new();
    let mut last = Ok(Flow::More);
    let mut events = Vec::new();
    'outer: for c in chunks {
        dec.feed(c, &mut events).map_err(|_| ()).ok();
        for e in events.drain(..) {
            last = t.event(&e, enc.as_mut(), &mut out);
            if !matches!(last, Ok(Flow::More)) {
                break 'outer;
            }
        }
    }
    if matches!(last, Ok(Flow::More)) {
        dec.finish(&mut events).expect("bounded test events");
        for e in events.drain(..) {
            last = t.event(&e, enc.as_mut(), &mut out);
        }
        if matches!(last, Ok(Flow::More)) {
            last = t.end_of_stream(enc.as_mut(), &mut out);
        }
    }
    match &last {
        Ok(Flow::Done) => {
            let end = crate::exchange::encode::End {
                usage: t.usage(),
                usage_relayed: t.usage_relayed(),
                output_chars: t.output_chars(),
            };
            enc.done(end, &mut out);
        }
        Err(f) => enc.error(&f.body, &mut out),
        Ok(Flow::More) => {}
    }
    (String::from_utf8_lossy(&out).into_owned(), last)
}
