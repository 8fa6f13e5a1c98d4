//! ⑤ The OpenAI dialect: OpenAI itself, vLLM, llama.cpp's server, Ollama's `/v1` and TGI. Their
//! differences are data (URL, key, whether streams report usage), not code.
//!
//! Answers pass through as the upstream sent them once they are checked: a whole answer must
//! have `choices`; stream chunks are parsed only far enough to find usage, in-band errors and
//! the end, and relayed byte for byte.

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::sanitize::clean_message;
use super::{
    Adapter, AdapterError, AnswerBody, Completed, StreamTranslator, UpstreamFault, UpstreamRequest,
};
use crate::config::Deployment;
use crate::exchange::answer::{Choice, Completion, FinishReason, ToolCall};
use crate::exchange::chat::ChatRequest;
use crate::exchange::embeddings::{Embeddings, EmbeddingsRequest};
use crate::exchange::{ErrorBody, ErrorType, Usage};
use usage::WireUsage;

pub(crate) struct OpenAiCompat;

#[derive(Deserialize)]
struct AnswerProbe<'a> {
    #[serde(default, borrow)]
    model: Option<&'a serde_json::value::RawValue>,
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
        if let Some(native) = native(req, d) {
            return super::openai_responses::build(native, d);
        }
        // OpenAI's own API refuses arguments it does not define (400 `unrecognized request
        // argument`); servers such as vLLM, llama.cpp, Ollama and TGI take their own (`top_k`,
        // `min_p`, …). A field OpenAI does not take is refused here, naming it, rather than sent.
        if ep.kind == crate::config::spec::Kind::Openai
            && let Some((k, _)) = req
                .extra
                .iter()
                .find(|(k, _)| !OPENAI_FIELDS.contains(&k.as_str()))
        {
            return Err(AdapterError::Unsupported(format!(
                "'{k}' is not a parameter OpenAI's API takes (it goes to OpenAI-compatible servers such as vLLM, llama.cpp, Ollama and TGI)"
            )));
        }
        if req.max_output_tokens() == Some(0) {
            return Err(prewarm_only());
        }
        let headers = super::json_headers(d);
        Ok(UpstreamRequest {
            url: super::chat_url(d, req.stream)?,
            headers,
            body: Bytes::from(
                req.to_openai_body_capped(
                    &d.upstream_model,
                    ep.stream_usage,
                    req.output_limit(d.model.capabilities.max_output_tokens)
                        .map(|n| {
                            // OpenAI's models (reasoning ones, wherever they are served) take only
                            // `max_completion_tokens`; every other server reads `max_tokens`.
                            let field = if ep.kind == crate::config::spec::Kind::Openai
                                || d.model.developer == "OpenAI"
                            {
                                "max_completion_tokens"
                            } else {
                                "max_tokens"
                            };
                            (field, n)
                        }),
                ),
            ),
        })
    }

    fn parse_response(
        &self,
        body: Bytes,
        req: &ChatRequest,
        d: &Deployment,
    ) -> Result<Completed, AdapterError> {
        if native(req, d).is_some() {
            return super::openai_responses::parse(body);
        }
        // One pass finds the fields; serde's derive reads the body only when the pass cannot
        // vouch for it (and then gives the error it always gave).
        if let Some(done) = std::str::from_utf8(&body)
            .ok()
            .and_then(|text| scanned(text, &body))
        {
            return done;
        }
        probed(body)
    }

    fn parse_error(&self, status: StatusCode, body: &[u8], d: &Deployment) -> UpstreamFault {
        let message = error_message(body)
            .map(|m| clean_message(&m, d))
            .unwrap_or_else(|| format!("upstream answered HTTP {}", status.as_u16()));
        let mut body_out = ErrorBody::new(error_type(status), message);
        // Clients act on these (`context_length_exceeded` makes them trim their context).
        let (code, param) = error_code_param(body);
        body_out.code = code.map(|c| clean_message(&c, d));
        body_out.param = param.map(|p| clean_message(&p, d));
        UpstreamFault {
            status,
            body: body_out,
        }
    }

    fn build_embeddings(
        &self,
        req: &EmbeddingsRequest,
        d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError> {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), serde_json::json!(d.upstream_model));
        body.insert("input".into(), req.input_json());
        // Floats from every backend; the gateway writes base64 itself when the client asks.
        body.insert("encoding_format".into(), serde_json::json!("float"));
        if let Some(n) = req.dimensions {
            body.insert("dimensions".into(), serde_json::json!(n));
        }
        for (k, v) in &req.extra {
            body.insert(
                k.clone(),
                serde_json::from_str(v.get()).unwrap_or(serde_json::Value::Null),
            );
        }
        let headers = super::json_headers(d);
        Ok(UpstreamRequest {
            url: super::prepared(d.urls().embeddings.as_ref())?,
            headers,
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        })
    }

    fn parse_embeddings(&self, body: &[u8], d: &Deployment) -> Result<Embeddings, AdapterError> {
        #[derive(Deserialize)]
        struct List {
            data: Vec<Item>,
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            usage: Option<WireUsage>,
        }
        #[derive(Deserialize)]
        struct Item {
            #[serde(default)]
            index: usize,
            embedding: serde_json::Value,
        }
        let list: List = serde_json::from_slice(body)
            .map_err(|e| AdapterError::InvalidResponse(format!("not an embeddings answer: {e}")))?;
        let mut items = list.data;
        items.sort_by_key(|i| i.index);
        let vectors = items
            .into_iter()
            .map(|i| match i.embedding {
                serde_json::Value::String(b64) => decode_f32(&b64),
                v => serde_json::from_value::<Vec<f32>>(v).ok(),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                AdapterError::InvalidResponse("an embedding is neither floats nor base64".into())
            })?;
        Ok(Embeddings {
            model: list.model.unwrap_or_else(|| d.upstream_model.clone()),
            vectors,
            usage: list.usage.map(Usage::from),
        })
    }

    fn stream_translator(&self, req: &ChatRequest, d: &Deployment) -> Box<dyn StreamTranslator> {
        if native(req, d).is_some() {
            return Box::<super::openai_responses::NativeStream>::default();
        }
        Box::new(OpenAiStream::new(
            d.endpoint.stream_usage && !req.wants_stream_usage(),
        ))
    }
}

/// The Responses request to send as it is, when the deployment is OpenAI's own API.
fn native<'a>(
    req: &'a ChatRequest,
    d: &Deployment,
) -> Option<&'a serde_json::Map<String, serde_json::Value>> {
    req.native
        .as_deref()
        .filter(|_| d.endpoint.kind == crate::config::spec::Kind::Openai)
}

/// The OpenAI error type that goes with an upstream status.
pub(crate) fn error_type(status: StatusCode) -> ErrorType {
    match status.as_u16() {
        401 => ErrorType::AuthenticationError,
        403 => ErrorType::PermissionError,
        404 => ErrorType::NotFoundError,
        429 => ErrorType::RateLimitError,
        400..=499 => ErrorType::InvalidRequestError,
        _ => ErrorType::ApiError,
    }
}

/// A whole answer read through [`crate::exchange::scan`], as the serde probe reads it (`null`
/// counts as absent); `None` when the scan cannot vouch for the body or `usage` does not read.
fn scanned(text: &str, body: &Bytes) -> Option<Result<Completed, AdapterError>> {
    let [model, choices, usage, error] =
        crate::exchange::scan::fields(text, ["model", "choices", "usage", "error"])?;
    let present = |r: Option<std::ops::Range<usize>>| r.filter(|r| &text[r.clone()] != "null");
    if present(error).is_some() {
        return Some(Err(error_in_success()));
    }
    match present(choices) {
        None => return Some(Err(missing_choices())),
        // Anything else than an array is serde's to refuse, with its message.
        Some(r) if !text[r.clone()].starts_with('[') => return None,
        Some(_) => {}
    }
    let usage = match present(usage) {
        Some(r) => Some(usage::scanned(&text[r])?),
        None => None,
    };
    Some(Ok(Completed {
        usage,
        body: AnswerBody::OpenAi(body.clone(), present(model)),
    }))
}

/// A whole answer read with serde's derive.
fn probed(body: Bytes) -> Result<Completed, AdapterError> {
    let probe: AnswerProbe = crate::base::json(&body)
        .map_err(|e| AdapterError::InvalidResponse(format!("not a JSON object: {e}")))?;
    if probe.error.is_some() {
        return Err(error_in_success());
    }
    if probe.choices.is_none() {
        return Err(missing_choices());
    }
    let model_at = probe.model.and_then(|raw| {
        let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
        let end = start + raw.get().len();
        (end <= body.len()).then_some(start..end)
    });
    let usage = probe.usage.map(Usage::from);
    Ok(Completed {
        usage,
        body: AnswerBody::OpenAi(body, model_at),
    })
}

fn error_in_success() -> AdapterError {
    AdapterError::InvalidResponse("an error object in a successful response".into())
}

fn missing_choices() -> AdapterError {
    AdapterError::InvalidResponse("missing 'choices'".into())
}

/// `max_tokens: 0` (from the Messages API) asks only to warm a prompt cache: Anthropic's.
pub(crate) fn prewarm_only() -> AdapterError {
    AdapterError::Unsupported(
        "'max_tokens' 0 (warming the prompt cache without an answer) is Anthropic's; this model is served by another API".into(),
    )
}

/// The chat completion parameters OpenAI's API defines beyond those the gateway reads itself.
const OPENAI_FIELDS: &[&str] = &[
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "modalities",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "safety_identifier",
    "seed",
    "service_tier",
    "store",
    "top_logprobs",
    "user",
    "verbosity",
    "web_search_options",
];

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

/// `error.code` and `error.param` of an OpenAI-shaped error body, as strings (some servers
/// send the code as a number). Short values only: they are identifiers, not text.
fn error_code_param(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: Option<serde_json::Value>,
        #[serde(default)]
        param: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Shape {
        error: Inner,
    }
    let Ok(shape) = serde_json::from_slice::<Shape>(body) else {
        return (None, None);
    };
    let text = |v: Option<serde_json::Value>| {
        let s = match v? {
            serde_json::Value::String(s) => s,
            n @ serde_json::Value::Number(_) => n.to_string(),
            _ => return None,
        };
        (!s.is_empty() && s.len() <= 128).then_some(s)
    };
    (text(shape.error.code), text(shape.error.param))
}

/// Base64 little-endian float32s back into floats.
fn decode_f32(b64: &str) -> Option<Vec<f32>> {
    fn val(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    }
    let clean: Vec<u8> = b64.bytes().filter(|c| *c != b'=').collect();
    let mut bytes = Vec::with_capacity(clean.len() * 3 / 4);
    for c in clean.chunks(4) {
        let mut n = 0u32;
        for (i, ch) in c.iter().enumerate() {
            n |= val(*ch)? << (18 - 6 * i);
        }
        let take = c.len().saturating_sub(1);
        for i in 0..take {
            bytes.push(((n >> (16 - 8 * i)) & 0xff) as u8);
        }
    }
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// A whole OpenAI answer read into the gateway's picture, for clients of another format.
pub(crate) fn parse_completion(body: &[u8]) -> Result<Completion, AdapterError> {
    #[derive(Deserialize)]
    struct Whole {
        #[serde(default)]
        id: String,
        #[serde(default)]
        created: Option<u64>,
        #[serde(default)]
        model: String,
        choices: Vec<WholeChoice>,
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    #[derive(Deserialize)]
    struct WholeChoice {
        #[serde(default)]
        index: u32,
        message: WholeMessage,
        #[serde(default)]
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct WholeMessage {
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        tool_calls: Vec<WholeToolCall>,
    }
    #[derive(Deserialize)]
    struct WholeToolCall {
        #[serde(default)]
        id: String,
        function: WholeFunction,
    }
    #[derive(Deserialize)]
    struct WholeFunction {
        name: String,
        #[serde(default)]
        arguments: String,
    }
    let w: Whole =
        serde_json::from_slice(body).map_err(|e| AdapterError::InvalidResponse(e.to_string()))?;
    if w.choices.is_empty() {
        return Err(AdapterError::InvalidResponse("no choices".into()));
    }
    let mut choices = w.choices;
    choices.sort_by_key(|c| c.index);
    Ok(Completion {
        id: w.id,
        model: w.model,
        created: w.created.unwrap_or_else(crate::base::unix_now),
        choices: choices
            .into_iter()
            .map(|choice| Choice {
                text: choice.message.content,
                tool_calls: choice
                    .message
                    .tool_calls
                    .into_iter()
                    .map(|t| ToolCall {
                        id: t.id,
                        name: t.function.name,
                        arguments: t.function.arguments,
                    })
                    .collect(),
                finish: FinishReason::from_openai(
                    choice.finish_reason.as_deref().unwrap_or("stop"),
                ),
                stop_sequence: None,
            })
            .collect(),
        usage: w.usage.map(Usage::from).unwrap_or_default(),
    })
}

mod stream;
mod usage;
use stream::OpenAiStream;

#[cfg(test)]
mod tests;
