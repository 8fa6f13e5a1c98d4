//! ③ Answers in Anthropic's format, for `/v1/messages`: a whole `message`, the encoder of its
//! event stream, and its error body.

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use crate::accounting::tokens::estimated_usage;
use crate::exchange::answer::{Completion, FinishReason, Piece};
use crate::exchange::encode::{Encoder, End};
use crate::exchange::{ErrorBody, ErrorType, Usage};

/// Anthropic's `stop_reason` for an OpenAI finish reason.
pub(crate) fn stop_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Anthropic's `usage`: `input_tokens` excludes tokens read from or written to the cache.
fn usage_json(u: &Usage) -> Value {
    let input = u
        .prompt_tokens
        .saturating_sub(u.cached_tokens)
        .saturating_sub(u.cache_write_tokens);
    json!({
        "input_tokens": input,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
    })
}

/// An Anthropic message id: an Anthropic upstream's own (`msg_…`, which may reach here as
/// `chatcmpl-msg_…`) as it is, any other id with `msg_` in front of it once.
fn message_id(id: &str) -> String {
    let bare = id.strip_prefix("chatcmpl-").unwrap_or(id);
    if bare.starts_with("msg_") {
        bare.to_owned()
    } else {
        format!("msg_{bare}")
    }
}

/// A tool call's arguments as an object (invalid or empty JSON becomes `{}`).
fn input_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// A whole answer as Anthropic's `message`.
pub(crate) fn message_json(c: &Completion) -> Bytes {
    let (first, mut content) = (c.first(), Vec::new());
    if let Some(t) = first.text.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for t in &first.tool_calls {
        content.push(json!({"type": "tool_use", "id": t.id, "name": t.name, "input": input_object(&t.arguments)}));
    }
    let m = json!({
        "id": message_id(&c.id),
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": content,
        "stop_reason": stop_reason(first.finish),
        "stop_sequence": first.stop_sequence,
        "usage": usage_json(&c.usage),
    });
    Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}

/// Anthropic's error `type` for an OpenAI one.
fn error_type(kind: ErrorType) -> &'static str {
    match kind {
        ErrorType::InvalidRequestError => "invalid_request_error",
        ErrorType::AuthenticationError => "authentication_error",
        ErrorType::PermissionError => "permission_error",
        ErrorType::NotFoundError => "not_found_error",
        ErrorType::RateLimitError => "rate_limit_error",
        ErrorType::ApiError | ErrorType::ServerError => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`. Not-found errors keep their type whatever
/// OpenAI called them.
pub(crate) fn error_json(e: &ErrorBody, status: u16) -> Bytes {
    Bytes::from(serde_json::to_vec(&error_value(e, Some(status))).unwrap_or_default())
}

/// The error object of a whole answer (with its status) and of a stream's `error` event
/// (without one: an overloaded upstream still reads as overloaded).
fn error_value(e: &ErrorBody, status: Option<u16>) -> Value {
    let kind = match status {
        Some(404) => "not_found_error",
        Some(413) => "request_too_large",
        Some(503) => "overloaded_error",
        None if e.code.as_deref() == Some("upstream_overloaded") => "overloaded_error",
        _ => error_type(e.kind),
    };
    json!({"type": "error", "error": {"type": kind, "message": e.message}})
}

fn event(out: &mut BytesMut, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&serde_json::to_vec(data).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

// === impl AnthropicEncoder ===

/// Writes the Messages API's event stream: `message_start`, content blocks (text, tool use),
/// `message_delta` with the stop reason and usage, `message_stop`.
pub(crate) struct AnthropicEncoder {
    started: bool,
    /// The open content block: its index, and the tool call it carries, if any.
    open: Option<(u32, Option<u32>)>,
    next_block: u32,
    /// Block index of each tool call seen, by tool-call index.
    tool_blocks: Vec<(u32, u32)>,
    finish: Option<FinishReason>,
    model: String,
    stop_sequence: Option<String>,
    /// Usage the upstream reported before the answer began (Anthropic's `message_start`).
    reported: Option<Usage>,
    prompt_estimate: u64,
    output_limit: Option<u64>,
    /// Pieces of a choice other than the first are not this format's: a Messages client
    /// cannot ask for several, and one upstream sending them anyway must not mix them in.
    other_choice: bool,
}

impl AnthropicEncoder {
    /// `model` is what the stream names as the model (the backend's own name never shows).
    pub(crate) fn new(prompt_estimate: u64, output_limit: Option<u64>, model: &str) -> Self {
        AnthropicEncoder {
            model: model.to_owned(),
            started: false,
            open: None,
            next_block: 0,
            tool_blocks: Vec::new(),
            finish: None,
            stop_sequence: None,
            reported: None,
            prompt_estimate,
            output_limit,
            other_choice: false,
        }
    }

    fn start(&mut self, id: &str, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
            "id": message_id(id), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": match &self.reported {
                // The upstream's own count, in Anthropic's terms, when it gave one.
                Some(u) => usage_json(u),
                None => json!({"input_tokens": self.prompt_estimate, "output_tokens": 0}),
            }}}),
        );
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some((index, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, block: Value, tool: Option<u32>, out: &mut BytesMut) -> u32 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open = Some((index, tool));
        index
    }
}

impl Encoder for AnthropicEncoder {
    fn piece(&mut self, p: Piece<'_>, out: &mut BytesMut) {
        if self.other_choice && p.of_a_choice() {
            return;
        }
        match p {
            Piece::Start { id, .. } => self.start(id, out),
            Piece::Choice(n) => self.other_choice = n != 0,
            Piece::Text(t) => {
                self.start("modelgate", out);
                let index = match self.open {
                    Some((i, None)) => i,
                    _ => self.open_block(json!({"type": "text", "text": ""}), None, out),
                };
                event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
                );
            }
            Piece::ToolCall {
                index: tool,
                id,
                name,
                arguments,
            } => {
                self.start("modelgate", out);
                let known = self
                    .tool_blocks
                    .iter()
                    .find(|(t, _)| *t == tool)
                    .map(|(_, b)| *b);
                let block = match (known, name) {
                    (Some(b), _) => b,
                    (None, name) => {
                        let b = self.open_block(
                            json!({"type": "tool_use", "id": id.unwrap_or(""), "name": name.unwrap_or(""), "input": {}}),
                            Some(tool),
                            out,
                        );
                        self.tool_blocks.push((tool, b));
                        b
                    }
                };
                if !arguments.is_empty() {
                    event(
                        out,
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": block,
                                "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                    );
                }
            }
            Piece::Finish(r) => self.finish = Some(r),
            Piece::StopSequence(s) => self.stop_sequence = Some(s.to_owned()),
            Piece::Usage(u) => {
                if !self.started {
                    self.reported = Some(u);
                }
            }
        }
    }

    fn done(&mut self, end: End, out: &mut BytesMut) {
        self.start("modelgate", out);
        self.close(out);
        let usage = end.usage.unwrap_or_else(|| {
            estimated_usage(self.prompt_estimate, end.output_chars, self.output_limit)
        });
        let stop = self.finish.unwrap_or(FinishReason::Stop);
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(stop), "stop_sequence": self.stop_sequence},
                    "usage": usage_json(&usage)}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn error(&mut self, e: &ErrorBody, out: &mut BytesMut) {
        event(out, "error", &error_value(e, None));
    }
}

#[cfg(test)]
mod id_tests {
    #[test]
    fn message_ids_are_prefixed_once() {
        assert_eq!(super::message_id("chatcmpl-msg_01A"), "msg_01A");
        assert_eq!(super::message_id("msg_01A"), "msg_01A");
        assert_eq!(super::message_id("chatcmpl-abc"), "msg_abc");
        assert_eq!(super::message_id("fakeresp"), "msg_fakeresp");
    }
}
