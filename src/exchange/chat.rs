//! ③ `POST /v1/chat/completions`: the request, parsed once into owned types.
//!
//! Known fields are typed; every other field is kept as raw JSON and passed through to
//! OpenAI-compatible backends, so `top_k` or `min_p` reach vLLM untouched. The upstream body is
//! re-serialised from this struct, so what the policy decided on and what is sent cannot
//! disagree; or, for a body that writing back would give unchanged but for its model, the
//! client's bytes with the model replaced ([`splice`]): bytes this parse read whole, refusing
//! any field named twice, so that no reader can find in them what it did not.

use std::borrow::Cow;
use std::cell::Cell;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::depth::check_depth;
use super::error::RequestError;

/// Top-level fields a client may not set: they would let a request choose an upstream, a key
/// or the gateway's own retry behaviour (CVE-2024-6587 and its relatives in other gateways).
const FORBIDDEN_FIELDS: &[&str] = &[
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "custom_llm_provider",
    "extra_headers",
    "fallbacks",
    "mock_response",
    "mock_testing_fallbacks",
    "num_retries",
    "timeout",
];

/// Limits on a request's shape, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub(crate) max_messages: usize,
    /// Deepest nesting of arrays and objects anywhere in the body.
    pub(crate) max_depth: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_messages: 10_000,
            max_depth: 64,
        }
    }
}

/// Unknown fields, in the client's order, as raw JSON.
pub(crate) type Extra = Vec<(String, Box<RawValue>)>;

/// One chat completion request.
#[derive(Debug)]
pub struct ChatRequest {
    pub(crate) model: String,
    pub(crate) messages: Vec<Message>,
    pub(crate) stream: bool,
    /// `stream_options` as sent; `include_usage` is read from it.
    pub(crate) stream_options: Option<serde_json::Map<String, serde_json::Value>>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) max_completion_tokens: Option<u32>,
    /// Not the client's: the caller has a spend budget, so when the client set no
    /// `max_tokens`, each upstream is asked for at most its model's longest answer (what the
    /// reservation assumed).
    pub(crate) cap_output: bool,
    pub(crate) n: Option<u32>,
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
    pub(crate) stop: Option<Box<RawValue>>,
    pub(crate) tools: Option<Box<RawValue>>,
    pub(crate) tool_choice: Option<Box<RawValue>>,
    pub(crate) response_format: Option<Box<RawValue>>,
    /// `metadata` (string → string, as OpenAI defines it); also a source of request labels.
    pub(crate) metadata: Option<Vec<(String, String)>>,
    pub(crate) extra: Extra,
    /// A Responses API request as OpenAI's own `/v1/responses` takes it (the conversation's
    /// items in `input`, no `model`): what an OpenAI deployment is sent instead of chat, so
    /// that reasoning items and the rest of what chat cannot carry reach it.
    pub(crate) native: Option<std::sync::Arc<serde_json::Map<String, serde_json::Value>>>,
    /// A tool of the Responses API that only OpenAI's platform runs, if the request has one.
    pub(crate) hosted_tool: Option<&'static str>,
    /// The client's body, when it may be forwarded as it came but for its model (set by
    /// [`ChatRequest::parse_forwardable`] only; see [`splice`]).
    pub(crate) wire: Option<splice::Wire>,
}

/// A message's author.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// A message's `content`: a string, or an array of parts kept raw (text, image_url, input_audio,
/// file). Dialect adapters that need the parts parse them.
#[derive(Debug)]
pub(crate) enum Content {
    Text(String),
    Parts(Box<RawValue>),
}

/// One message of the conversation.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) role: Role,
    pub(crate) content: Option<Content>,
    pub(crate) name: Option<String>,
    pub(crate) tool_calls: Option<Box<RawValue>>,
    pub(crate) tool_call_id: Option<String>,
    pub(crate) extra: Extra,
    /// Written back, it would not be what was read: a `null` left out, a missing `content`
    /// written as `null`.
    pub(crate) reshaped: bool,
}

impl ChatRequest {
    /// Parses and validates a request body. Errors name the offending parameter.
    pub fn parse(body: &[u8], limits: RequestLimits) -> Result<ChatRequest, RequestError> {
        Self::parse_spanned(body, limits).map(|(req, _)| req)
    }

    /// [`Self::parse`], keeping a copy of the body when an OpenAI-compatible upstream may be
    /// sent it as it came, its model replaced: for a body that is the request as the gateway
    /// means to send it (an OpenAI client's, or the one an Anthropic request is made into).
    /// A caller that changes the request after must clear `wire`.
    pub(crate) fn parse_forwardable(
        body: &[u8],
        limits: RequestLimits,
    ) -> Result<ChatRequest, RequestError> {
        let (mut req, span) = Self::parse_spanned(body, limits)?;
        req.wire = span.map(|model| splice::Wire::new(body, model));
        Ok(req)
    }

    /// The request, and where its model's string lies in `body` if it may be spliced.
    fn parse_spanned(
        body: &[u8],
        limits: RequestLimits,
    ) -> Result<(ChatRequest, Option<std::ops::Range<usize>>), RequestError> {
        check_depth(body, limits.max_depth)?;
        let failed_param = Cell::new(None);
        // One UTF-8 check of the whole body (see `base::json`).
        let parsed = match std::str::from_utf8(body) {
            Ok(text) => match quick::read(text) {
                Some(read) => Ok(read),
                None => read_request(
                    &mut serde_json::Deserializer::from_str(text),
                    &failed_param,
                    body,
                ),
            },
            Err(_) => read_request(
                &mut serde_json::Deserializer::from_slice(body),
                &failed_param,
                &[],
            ),
        };
        let (req, span) = match parsed {
            Ok(read) => read,
            Err(e) => {
                // A syntax error inside a field's value is the body's fault, not the field's.
                let data_error = e.classify() == serde_json::error::Category::Data;
                return Err(match failed_param.get().filter(|_| data_error) {
                    Some((param, code)) => RequestError::Invalid {
                        message: if code == "invalid_type" {
                            format!("invalid '{param}': {}", strip_position(&e))
                        } else {
                            strip_position(&e)
                        },
                        param: Some(param.to_owned()),
                        code,
                    },
                    None => RequestError::Json(e.to_string()),
                });
            }
        };
        req.validate(limits)?;
        Ok((req, span))
    }

    fn validate(&self, limits: RequestLimits) -> Result<(), RequestError> {
        if self.model.is_empty() {
            return Err(RequestError::invalid("model", "'model' must not be empty"));
        }
        if self.messages.is_empty() {
            return Err(RequestError::invalid(
                "messages",
                "'messages' must contain at least one message",
            ));
        }
        if self.messages.len() > limits.max_messages {
            return Err(RequestError::invalid(
                "messages",
                format!(
                    "'messages' has {} entries; the limit is {}",
                    self.messages.len(),
                    limits.max_messages
                ),
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            m.validate(i)?;
        }
        if let Some(n) = self.n
            && !(1..=128).contains(&n)
        {
            return Err(RequestError::invalid("n", "'n' must be between 1 and 128"));
        }
        for (param, v) in [
            ("max_tokens", self.max_tokens),
            ("max_completion_tokens", self.max_completion_tokens),
        ] {
            if v == Some(0) {
                return Err(RequestError::invalid(
                    param,
                    format!("'{param}' must be at least 1"),
                ));
            }
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(RequestError::invalid(
                "temperature",
                "'temperature' must be between 0 and 2",
            ));
        }
        if let Some(p) = self.top_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(RequestError::invalid(
                "top_p",
                "'top_p' must be between 0 and 1",
            ));
        }
        if let Some(stop) = &self.stop {
            let ok = match stop.get().as_bytes().first() {
                Some(b'"') | Some(b'n') => true,
                Some(b'[') => serde_json::from_str::<Vec<String>>(stop.get()).is_ok(),
                _ => false,
            };
            if !ok {
                return Err(RequestError::invalid(
                    "stop",
                    "'stop' must be a string or an array of strings",
                ));
            }
        }
        if let Some(tools) = &self.tools
            && !tools.get().starts_with('[')
        {
            return Err(RequestError::invalid("tools", "'tools' must be an array"));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(RequestError::invalid(
                "stream_options",
                "'stream_options' is only allowed when 'stream' is true",
            ));
        }
        Ok(())
    }

    /// Whether the client asked for the final usage chunk of a stream.
    pub(crate) fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }

    /// The output cap the client asked for, under either name.
    pub(crate) fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The longest answer `model` is asked for: the client's, else, for a budgeted caller,
    /// the model's longest (unknown: the context window bounds it, and the reservation too).
    /// `model_max` is the model's own longest answer, from the catalog.
    pub(crate) fn output_limit(&self, model_max: Option<u32>) -> Option<u32> {
        self.max_output_tokens()
            .or(if self.cap_output { model_max } else { None })
    }

    /// Whether the request uses tool calls.
    pub(crate) fn uses_tools(&self) -> bool {
        self.tools
            .as_ref()
            .is_some_and(|t| t.get().trim_start_matches('[').trim_start() != "]")
    }

    /// Serialises the request for an OpenAI-compatible upstream: `model` replaced by the
    /// deployment's upstream name and, for streams, `stream_options.include_usage` asked for
    /// when the backend supports it, so that streamed traffic is accounted.
    pub fn to_openai_body(&self, upstream_model: &str, ask_stream_usage: bool) -> Vec<u8> {
        self.to_openai_body_capped(upstream_model, ask_stream_usage, None)
    }

    /// [`Self::to_openai_body`], with the gateway's output cap (when the client set none) as
    /// `(field, tokens)`: OpenAI's reasoning models take only `max_completion_tokens`.
    pub(crate) fn to_openai_body_capped(
        &self,
        upstream_model: &str,
        ask_stream_usage: bool,
        cap: Option<(&'static str, u32)>,
    ) -> Vec<u8> {
        if let Some(body) = self.spliced(upstream_model, ask_stream_usage, cap) {
            return body;
        }
        self.written(upstream_model, ask_stream_usage, cap)
    }

    /// The request written back: what [`Self::to_openai_body_capped`] sends when it cannot
    /// forward the client's body.
    fn written(
        &self,
        upstream_model: &str,
        ask_stream_usage: bool,
        cap: Option<(&'static str, u32)>,
    ) -> Vec<u8> {
        let body = OpenAiBody {
            req: self,
            model: upstream_model,
            ask_stream_usage,
            cap,
        };
        // Sized for the conversation, so that a usual body is written without growing.
        let mut out = Vec::with_capacity(256 + self.text_len() + 64 * self.messages.len());
        // Serialising owned strings, numbers and raw JSON into a Vec cannot fail.
        match serde_json::to_writer(&mut out, &body) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Whether any message carries an image.
    pub(crate) fn has_images(&self) -> bool {
        self.messages.iter().any(|m| match &m.content {
            Some(Content::Parts(p)) => p.get().contains("\"image_url\""),
            _ => false,
        })
    }

    /// All text of the conversation, for token estimates.
    pub(crate) fn text_len(&self) -> usize {
        self.messages
            .iter()
            .map(|m| match &m.content {
                Some(Content::Text(t)) => t.len(),
                Some(Content::Parts(p)) => p.get().len(),
                None => 0,
            } + m.tool_calls.as_ref().map_or(0, |t| t.get().len()))
            .sum()
    }

    /// The text of the last user message, if it has any.
    pub(crate) fn last_user_text(&self) -> Option<Cow<'_, str>> {
        let m = self.messages.iter().rev().find(|m| m.role == Role::User)?;
        match m.content.as_ref()? {
            Content::Text(t) => Some(Cow::Borrowed(t)),
            Content::Parts(p) => {
                #[derive(Deserialize)]
                struct Part {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(default)]
                    text: Option<String>,
                }
                let parts: Vec<Part> = serde_json::from_str(p.get()).ok()?;
                let text: Vec<String> = parts
                    .into_iter()
                    .filter(|p| p.kind == "text")
                    .filter_map(|p| p.text)
                    .collect();
                Some(Cow::Owned(text.join("\n")))
            }
        }
    }
}

/// One part of an array `content`, for dialects that translate parts.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Part {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ImageUrl {
    pub(crate) url: String,
}

/// A tool call of an assistant message, as OpenAI carries it.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolCallIn {
    #[serde(default)]
    pub(crate) id: String,
    pub(crate) function: FunctionIn,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FunctionIn {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) arguments: String,
}

/// A tool definition, as OpenAI carries it.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolIn {
    pub(crate) function: ToolFunction,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ToolFunction {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) parameters: Option<serde_json::Value>,
}

/// `tool_choice`, read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

impl ChatRequest {
    /// The tools, read for dialects that translate them.
    pub(crate) fn tool_list(&self) -> Result<Vec<ToolIn>, RequestError> {
        match &self.tools {
            None => Ok(Vec::new()),
            Some(t) => serde_json::from_str(t.get())
                .map_err(|e| RequestError::invalid("tools", e.to_string())),
        }
    }

    /// `tool_choice`, read for dialects that translate it.
    pub(crate) fn tool_choice(&self) -> Result<Option<ToolChoice>, RequestError> {
        let Some(raw) = &self.tool_choice else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(raw.get())
            .map_err(|e| RequestError::invalid("tool_choice", e.to_string()))?;
        Ok(Some(match &v {
            serde_json::Value::String(s) if s == "auto" => ToolChoice::Auto,
            serde_json::Value::String(s) if s == "none" => ToolChoice::None,
            serde_json::Value::String(s) if s == "required" => ToolChoice::Required,
            _ => match v
                .pointer("/function/name")
                .and_then(serde_json::Value::as_str)
            {
                Some(name) => ToolChoice::Named(name.to_owned()),
                None => return Err(RequestError::invalid("tool_choice", "unknown tool_choice")),
            },
        }))
    }

    /// The stop sequences, as a list.
    pub(crate) fn stop_list(&self) -> Vec<String> {
        let Some(raw) = &self.stop else {
            return Vec::new();
        };
        serde_json::from_str::<Vec<String>>(raw.get())
            .or_else(|_| serde_json::from_str::<String>(raw.get()).map(|s| vec![s]))
            .unwrap_or_default()
    }

    /// A passed-through field, if the client sent it.
    pub(crate) fn extra(&self, name: &str) -> Option<&RawValue> {
        self.extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl Message {
    /// The content as text (text parts joined), if it has any.
    pub(crate) fn text(&self) -> Option<String> {
        match &self.content {
            None => None,
            Some(Content::Text(t)) => Some(t.clone()),
            Some(Content::Parts(_)) => Some(
                self.parts()
                    .ok()?
                    .into_iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(text),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }

    /// The content's parts (a string content is one text part).
    pub(crate) fn parts(&self) -> Result<Vec<Part>, RequestError> {
        match &self.content {
            None => Ok(Vec::new()),
            Some(Content::Text(t)) => Ok(vec![Part::Text { text: t.clone() }]),
            Some(Content::Parts(p)) => serde_json::from_str(p.get())
                .map_err(|e| RequestError::invalid("messages", e.to_string())),
        }
    }

    /// The assistant's tool calls.
    pub(crate) fn tool_call_list(&self) -> Result<Vec<ToolCallIn>, RequestError> {
        match &self.tool_calls {
            None => Ok(Vec::new()),
            Some(t) => serde_json::from_str(t.get())
                .map_err(|e| RequestError::invalid("messages", e.to_string())),
        }
    }

    fn validate(&self, i: usize) -> Result<(), RequestError> {
        let param = || format!("messages[{i}]");
        match (&self.content, self.role) {
            (Some(Content::Parts(p)), _) if !p.get().starts_with('[') => {
                return Err(RequestError::invalid(
                    format!("{}.content", param()),
                    "'content' must be a string or an array of content parts",
                ));
            }
            (None, Role::System | Role::Developer | Role::User) => {
                return Err(RequestError::invalid(
                    format!("{}.content", param()),
                    format!("a '{}' message needs 'content'", role_name(self.role)),
                ));
            }
            (None, Role::Assistant) if self.tool_calls.is_none() => {
                return Err(RequestError::invalid(
                    format!("{}.content", param()),
                    "an 'assistant' message needs 'content' or 'tool_calls'",
                ));
            }
            _ => {}
        }
        if self.role == Role::Tool && self.tool_call_id.is_none() {
            return Err(RequestError::invalid(
                format!("{}.tool_call_id", param()),
                "a 'tool' message needs 'tool_call_id'",
            ));
        }
        Ok(())
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Function => "function",
    }
}

/// serde_json appends " at line L column C" to its messages; a client's body is one line.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

pub(crate) mod quick;
pub(crate) mod splice;
mod wire;
use wire::{OpenAiBody, read_request};

#[cfg(test)]
mod tests;
