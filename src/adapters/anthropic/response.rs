//! Messages answers and errors → the gateway's. Usage adds cache reads and writes back into the
//! prompt tokens (Anthropic's `input_tokens` excludes them).

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::adapters::sanitize::clean_message;
use crate::adapters::{AdapterError, UpstreamFault};
use crate::config::Deployment;
use crate::exchange::answer::{Choice, Completion, FinishReason, ToolCall};
use crate::exchange::{ErrorBody, ErrorType, Usage};

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

/// Anthropic's `usage`.
#[derive(Deserialize, Default, Clone, Copy)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub(crate) input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) output_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Folds later counts over earlier ones (streams report input at the start, output at the
    /// end).
    pub(crate) fn merge(&mut self, later: WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    pub(crate) fn to_usage(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0) + read + write,
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: read,
            cache_write_tokens: write,
            reasoning_tokens: 0,
            estimated: false,
        }
    }
}

/// OpenAI's finish reason for Anthropic's `stop_reason`.
pub(crate) fn finish_reason(stop: &str) -> FinishReason {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        "stop_sequence" => FinishReason::StopSequence,
        // end_turn, pause_turn
        _ => FinishReason::Stop,
    }
}

/// A whole Messages answer.
pub(crate) fn parse(body: &[u8]) -> Result<Completion, AdapterError> {
    let m: Message = crate::base::json(body)
        .map_err(|e| AdapterError::InvalidResponse(format!("not a Messages answer: {e}")))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in &m.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                arguments: block
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            }),
            _ => {}
        }
    }
    let mut finish = m
        .stop_reason
        .as_deref()
        .map_or(FinishReason::Stop, finish_reason);
    if !tool_calls.is_empty() && finish == FinishReason::Stop {
        finish = FinishReason::ToolCalls;
    }
    Ok(Completion {
        id: format!("chatcmpl-{}", m.id),
        model: m.model,
        created: crate::base::unix_now(),
        choices: vec![Choice {
            text: (!text.is_empty()).then_some(text),
            tool_calls,
            finish,
            stop_sequence: m.stop_sequence,
        }],
        usage: m.usage.to_usage(),
    })
}

/// An Anthropic error (`{"type":"error","error":{"type","message"}}`). Its 529 (overloaded)
/// becomes 503, which OpenAI clients retry.
pub(crate) fn error(status: StatusCode, body: &[u8], d: &Deployment) -> UpstreamFault {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(|m| clean_message(m, d))
        .unwrap_or_else(|| format!("upstream answered HTTP {}", status.as_u16()));
    let status = if status.as_u16() == 529 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let kind = match v.pointer("/error/type").and_then(Value::as_str) {
        Some("invalid_request_error") => ErrorType::InvalidRequestError,
        Some("authentication_error") => ErrorType::AuthenticationError,
        Some("permission_error") => ErrorType::PermissionError,
        Some("not_found_error") => ErrorType::NotFoundError,
        Some("rate_limit_error") => ErrorType::RateLimitError,
        _ => crate::adapters::openai_compat::error_type(status),
    };
    UpstreamFault {
        status,
        body: ErrorBody::new(kind, message),
    }
}
