//! ⑤ OpenAI's own Responses API, for a Responses client on an OpenAI deployment: the request
//! goes to `/responses` as the client wrote it (the conversation's items in `input`), so
//! reasoning items and what else chat cannot carry reach OpenAI, and its answer comes back as
//! OpenAI wrote it. Only the usage and the end of the answer are read here.

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value, json};

use super::{
    AdapterError, AnswerBody, Completed, Flow, StreamFault, StreamTranslator, UpstreamRequest,
};
use crate::config::Deployment;
use crate::exchange::Usage;
use crate::exchange::encode::Encoder;
use crate::exchange::sse::SseEvent;

/// The request to OpenAI's `/responses` for the client's `native` body.
pub(crate) fn build(
    native: &Map<String, Value>,
    d: &Deployment,
) -> Result<UpstreamRequest, AdapterError> {
    let url = d.urls().responses.clone().ok_or_else(|| {
        AdapterError::Unsupported("the deployment's base URL is not a valid URL".into())
    })?;
    let mut body = native.clone();
    body.insert("model".into(), json!(d.upstream_model));
    let body = serde_json::to_vec(&Value::Object(body))
        .map_err(|e| AdapterError::Unsupported(e.to_string()))?;
    Ok(UpstreamRequest {
        url,
        headers: super::json_headers(d),
        body: Bytes::from(body),
    })
}

/// The Responses API's `usage`, in the gateway's terms.
pub(crate) fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.as_object()?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let detail = |d: &str, k: &str| {
        u.get(d)
            .and_then(|x| x.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Some(Usage {
        prompt_tokens: n("input_tokens"),
        completion_tokens: n("output_tokens"),
        cached_tokens: detail("input_tokens_details", "cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: detail("output_tokens_details", "reasoning_tokens"),
        estimated: false,
    })
}

/// A whole answer: a response object with its `output`.
pub(crate) fn parse(body: Bytes) -> Result<Completed, AdapterError> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| AdapterError::InvalidResponse(format!("not a JSON object: {e}")))?;
    if v.get("object").and_then(Value::as_str) != Some("response")
        || !v.get("output").is_some_and(Value::is_array)
    {
        return Err(AdapterError::InvalidResponse(
            "not a response object with its 'output'".into(),
        ));
    }
    Ok(Completed {
        usage: v.get("usage").and_then(usage_of),
        body: AnswerBody::Responses(body),
    })
}

/// Reads OpenAI's typed events and hands each to the client's encoder as it is.
#[derive(Default)]
pub(crate) struct NativeStream {
    usage: Option<Usage>,
    chars: usize,
    committed: bool,
}

impl StreamTranslator for NativeStream {
    fn event(
        &mut self,
        ev: &SseEvent,
        enc: &mut dyn Encoder,
        out: &mut BytesMut,
    ) -> Result<Flow, StreamFault> {
        let data: Value = serde_json::from_slice(&ev.data)
            .map_err(|_| StreamFault::invalid("event: not JSON"))?;
        let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "error" => {
                let message = data.get("message").and_then(Value::as_str).unwrap_or("");
                return Err(StreamFault::reported(message, "upstream_error"));
            }
            "response.failed" => {
                let message = data
                    .pointer("/response/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the upstream response failed");
                return Err(StreamFault::reported(message, "upstream_error"));
            }
            "response.output_text.delta" | "response.function_call_arguments.delta" => {
                let delta = data.get("delta").and_then(Value::as_str).unwrap_or("");
                self.chars += delta.len();
            }
            _ => {}
        }
        if kind.starts_with("response.output_item") || kind.ends_with(".delta") {
            self.committed = true;
        }
        let done = matches!(kind, "response.completed" | "response.incomplete");
        if done {
            self.usage = data.pointer("/response/usage").and_then(usage_of);
        }
        enc.native(&data, out);
        Ok(if done { Flow::Done } else { Flow::More })
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
