//! ⑤ The OpenAI dialect: OpenAI itself, vLLM, llama.cpp's server, Ollama's `/v1` and TGI. Their
//! differences are data (URL, key, whether streams report usage), not code.
//!
//! Answers pass through as the upstream sent them once they are checked: a whole answer must
//! have `choices`; stream chunks are parsed only far enough to find usage, in-band errors and
//! the end, and relayed byte for byte.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::sanitize::clean_message;
use super::{
    Adapter, AdapterError, Completed, Flow, StreamFault, StreamTranslator, UpstreamFault,
    UpstreamRequest,
};
use crate::api::chat::ChatRequest;
use crate::api::{ErrorBody, ErrorType, Usage, WireUsage};
use crate::config::Deployment;
use crate::stream::sse::{SseEvent, write_data};

pub struct OpenAiCompat;

#[derive(Deserialize)]
struct AnswerProbe {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

impl Adapter for OpenAiCompat {
    fn build_request(
        &self,
        req: &ChatRequest,
        d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError> {
        let ep = &d.endpoint;
        let mut headers = Vec::with_capacity(2);
        headers.push((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        if let Some((name, value)) = &ep.auth_header {
            headers.push((name.clone(), value.clone()));
        }
        Ok(UpstreamRequest {
            url: format!("{}/chat/completions", ep.base_url),
            headers,
            body: Bytes::from(req.to_openai_body(&d.upstream_model, ep.stream_usage)),
        })
    }

    fn parse_response(
        &self,
        body: Bytes,
        _req: &ChatRequest,
        _d: &Deployment,
    ) -> Result<Completed, AdapterError> {
        let probe: AnswerProbe = serde_json::from_slice(&body)
            .map_err(|e| AdapterError::InvalidResponse(format!("not a JSON object: {e}")))?;
        if probe.error.is_some() {
            return Err(AdapterError::InvalidResponse(
                "an error object in a successful response".into(),
            ));
        }
        if probe.choices.is_none() {
            return Err(AdapterError::InvalidResponse("missing 'choices'".into()));
        }
        Ok(Completed {
            usage: probe.usage.map(Usage::from),
            body,
        })
    }

    fn parse_error(&self, status: StatusCode, body: &[u8], d: &Deployment) -> UpstreamFault {
        let message = error_message(body)
            .map(|m| clean_message(&m, d))
            .unwrap_or_else(|| format!("upstream answered HTTP {}", status.as_u16()));
        UpstreamFault {
            status,
            body: ErrorBody::new(error_type(status), message),
        }
    }

    fn stream_translator(&self, req: &ChatRequest, d: &Deployment) -> Box<dyn StreamTranslator> {
        Box::new(OpenAiStream {
            strip_usage_chunk: d.endpoint.stream_usage && !req.wants_stream_usage(),
            client_wants_usage: req.wants_stream_usage(),
            prompt_estimate: (req.text_len() as u64).div_ceil(4),
            head: None,
            usage: None,
            chars: 0,
            committed: false,
        })
    }
}

/// The OpenAI error type that goes with an upstream status.
pub fn error_type(status: StatusCode) -> ErrorType {
    match status.as_u16() {
        401 => ErrorType::AuthenticationError,
        403 => ErrorType::PermissionError,
        404 => ErrorType::NotFoundError,
        429 => ErrorType::RateLimitError,
        400..=499 => ErrorType::InvalidRequestError,
        _ => ErrorType::ApiError,
    }
}

/// The message of an error body in any of the shapes OpenAI-compatible servers use:
/// `{"error":{"message":…}}` (OpenAI, vLLM ≥ 0.10.1), `{"error":"…"}` (Ollama),
/// `{"object":"error","message":…}` (older vLLM), `{"detail":…}` (FastAPI servers).
fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object {
            #[serde(default)]
            message: Option<String>,
        },
        Text(String),
    }
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        error: Option<ErrorField>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        detail: Option<serde_json::Value>,
    }
    let shape: Shape = serde_json::from_slice(body).ok()?;
    match (shape.error, shape.message, shape.detail) {
        (Some(ErrorField::Object { message: Some(m) }), _, _) => Some(m),
        (Some(ErrorField::Text(m)), _, _) => Some(m),
        (_, Some(m), _) => Some(m),
        (_, _, Some(serde_json::Value::String(m))) => Some(m),
        (_, _, Some(d)) => Some(d.to_string()),
        _ => None,
    }
}

// === impl OpenAiStream ===

struct OpenAiStream {
    /// We asked for the usage chunk; the client did not, so it must not see it.
    strip_usage_chunk: bool,
    /// The client asked for the usage chunk: if the upstream sends none (llama.cpp's server
    /// ignores the option), the gateway sends an estimate.
    client_wants_usage: bool,
    prompt_estimate: u64,
    /// `id`, `created` and `model` of the first chunk, for a chunk the gateway adds.
    head: Option<ChunkHead>,
    usage: Option<Usage>,
    chars: usize,
    committed: bool,
}

#[derive(Deserialize)]
struct ChunkHead {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Option<Vec<ChoiceProbe>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct ChoiceProbe {
    #[serde(default)]
    delta: Option<DeltaProbe>,
}

#[derive(Deserialize)]
struct DeltaProbe {
    #[serde(default)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    reasoning_content: Option<Box<RawValue>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

impl StreamTranslator for OpenAiStream {
    fn event(&mut self, ev: &SseEvent, out: &mut BytesMut) -> Result<Flow, StreamFault> {
        if ev.data.as_ref() == b"[DONE]" {
            if self.client_wants_usage && self.usage.is_none() {
                self.write_estimated_usage(out);
            }
            return Ok(Flow::Done);
        }
        let probe: ChunkProbe = serde_json::from_slice(&ev.data).map_err(|_| StreamFault {
            body: ErrorBody::new(ErrorType::ApiError, "upstream sent an invalid stream chunk")
                .code("upstream_invalid_response"),
        })?;
        if let Some(err) = probe.error {
            let message = error_message(format!("{{\"error\":{}}}", err.get()).as_bytes())
                .unwrap_or_else(|| "upstream reported an error".into());
            return Err(StreamFault {
                body: ErrorBody::new(ErrorType::ApiError, clean_message_plain(&message))
                    .code("upstream_error"),
            });
        }
        if self.head.is_none() {
            self.head = serde_json::from_slice(&ev.data).ok();
        }
        let choices = probe.choices.unwrap_or_default();
        for c in &choices {
            if let Some(d) = &c.delta {
                let text = d.content.as_ref().map_or(0, |c| content_len(c))
                    + d.reasoning_content.as_ref().map_or(0, |c| content_len(c));
                self.chars += text;
                if text > 0 || d.tool_calls.is_some() {
                    self.committed = true;
                }
            }
        }
        if let Some(u) = probe.usage {
            self.usage = Some(u.into());
            if self.strip_usage_chunk && choices.is_empty() {
                return Ok(Flow::More);
            }
            self.committed = true;
        }
        write_data(out, &ev.data);
        Ok(Flow::More)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn output_chars(&self) -> usize {
        self.chars
    }

    fn committed(&self) -> bool {
        self.committed
    }
}

impl OpenAiStream {
    /// The usage chunk the upstream did not send, estimated from the text (a quarter of its
    /// bytes per token) and marked as an estimate.
    fn write_estimated_usage(&self, out: &mut BytesMut) {
        let head = self.head.as_ref();
        let completion = (self.chars as u64).div_ceil(4);
        let chunk = serde_json::json!({
            "id": head.and_then(|h| h.id.as_deref()).unwrap_or("chatcmpl-modelgate"),
            "object": "chat.completion.chunk",
            "created": head.and_then(|h| h.created).unwrap_or_else(crate::upstream::unix_now),
            "model": head.and_then(|h| h.model.as_deref()).unwrap_or(""),
            "choices": [],
            "usage": {
                "prompt_tokens": self.prompt_estimate,
                "completion_tokens": completion,
                "total_tokens": self.prompt_estimate + completion,
                "modelgate_estimated": true,
            },
        });
        write_data(out, &serde_json::to_vec(&chunk).unwrap_or_default());
    }
}

/// Length of a raw JSON string value without its quotes (0 for `null`).
fn content_len(raw: &RawValue) -> usize {
    let s = raw.get();
    if s.starts_with('"') {
        s.len().saturating_sub(2)
    } else {
        0
    }
}

fn clean_message_plain(m: &str) -> String {
    super::sanitize::clean(m, None)
}

#[cfg(test)]
mod tests;
