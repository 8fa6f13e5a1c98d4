//! Gemini answers and errors → the gateway's. Gemini says `STOP` even when it calls a function:
//! that is `tool_calls`. Safety and recitation stops are `content_filter`; a malformed or
//! unexpected tool call is an error, never a silent `stop`. Usage counts thoughts as output.

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::adapters::sanitize::clean_message;
use crate::adapters::{AdapterError, UpstreamFault};
use crate::config::Deployment;
use crate::exchange::answer::{Choice, Completion, FinishReason, ToolCall};
use crate::exchange::{ErrorBody, Usage};

/// One `GenerateContentResponse` (a whole answer, or one event of a stream).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Response {
    #[serde(default)]
    pub(crate) candidates: Vec<Candidate>,
    #[serde(default)]
    pub(crate) usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub(crate) model_version: Option<String>,
    #[serde(default)]
    pub(crate) response_id: Option<String>,
    #[serde(default)]
    pub(crate) prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub(crate) error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    /// Which answer of `candidateCount` this is; absent means its place in the list.
    #[serde(default)]
    pub(crate) index: Option<u32>,
    #[serde(default)]
    pub(crate) content: Option<CandidateContent>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct CandidateContent {
    #[serde(default)]
    pub(crate) parts: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    #[serde(default)]
    pub(crate) block_reason: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageMetadata {
    #[serde(default)]
    pub(crate) prompt_token_count: u64,
    #[serde(default)]
    pub(crate) candidates_token_count: u64,
    #[serde(default)]
    pub(crate) thoughts_token_count: u64,
    #[serde(default)]
    pub(crate) cached_content_token_count: u64,
}

impl UsageMetadata {
    pub(crate) fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: self.candidates_token_count + self.thoughts_token_count,
            cached_tokens: self.cached_content_token_count,
            cache_write_tokens: 0,
            reasoning_tokens: self.thoughts_token_count,
            estimated: false,
        }
    }
}

/// What a `finishReason` means.
pub(crate) enum Stop {
    Reason(FinishReason),
    /// A stop that is an error (a malformed or unexpected tool call).
    Error(String),
}

pub(crate) fn finish(reason: &str) -> Stop {
    match reason {
        "STOP" => Stop::Reason(FinishReason::Stop),
        "MAX_TOKENS" => Stop::Reason(FinishReason::Length),
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS" => Stop::Error(
            format!("Gemini could not produce a valid tool call ({reason})"),
        ),
        // SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, LANGUAGE, IMAGE_*, OTHER, …
        _ => Stop::Reason(FinishReason::ContentFilter),
    }
}

/// The text and function-call parts of a candidate (thoughts left out).
pub(crate) fn split_parts(parts: &[Value]) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(fc) = p.get("functionCall") {
            let name = fc
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let args = fc
                .get("args")
                .map_or_else(|| "{}".to_owned(), Value::to_string);
            calls.push((name, args));
        }
    }
    (text, calls)
}

/// An id for a function call Gemini gave none.
pub(crate) fn call_id(response_id: &str, n: usize) -> String {
    format!(
        "call_{}_{n}",
        response_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>()
    )
}

/// A whole answer.
pub(crate) fn parse(body: &[u8], model: &str) -> Result<Completion, AdapterError> {
    let r: Response = crate::base::json(body)
        .map_err(|e| AdapterError::InvalidResponse(format!("not a Gemini answer: {e}")))?;
    if r.error.is_some() {
        return Err(AdapterError::InvalidResponse(
            "an error in a successful answer".into(),
        ));
    }
    let rid = r.response_id.clone().unwrap_or_else(crate::base::fresh_id);
    let usage = r.usage_metadata.unwrap_or_default().to_usage();
    if r.candidates.is_empty() {
        // A blocked prompt: no candidates, a block reason.
        if r.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            return Ok(Completion {
                id: format!("chatcmpl-{rid}"),
                model: r.model_version.unwrap_or_else(|| model.to_owned()),
                created: crate::base::unix_now(),
                choices: vec![Choice::text(None, FinishReason::ContentFilter)],
                usage,
            });
        }
        return Err(AdapterError::InvalidResponse("no candidates".into()));
    }
    let mut candidates: Vec<(u32, Candidate)> = r
        .candidates
        .into_iter()
        .enumerate()
        .map(|(at, c)| (c.index.unwrap_or(u32::try_from(at).unwrap_or(u32::MAX)), c))
        .collect();
    // Choices go out in the order of Gemini's indexes, numbered from 0 as OpenAI's are.
    candidates.sort_by_key(|(i, _)| *i);
    let mut calls_so_far = 0;
    let mut choices = Vec::with_capacity(candidates.len());
    for (_, c) in candidates {
        let (text, calls) = split_parts(&c.content.map(|c| c.parts).unwrap_or_default());
        let mut reason = match finish(c.finish_reason.as_deref().unwrap_or("STOP")) {
            Stop::Reason(r) => r,
            Stop::Error(e) => return Err(AdapterError::InvalidResponse(e)),
        };
        if !calls.is_empty() && reason == FinishReason::Stop {
            reason = FinishReason::ToolCalls;
        }
        let tool_calls = calls
            .into_iter()
            .map(|(name, arguments)| {
                // Numbered across choices, so no two calls of one answer share an id.
                calls_so_far += 1;
                ToolCall {
                    id: call_id(&rid, calls_so_far - 1),
                    name,
                    arguments,
                }
            })
            .collect();
        choices.push(Choice {
            text: (!text.is_empty()).then_some(text),
            tool_calls,
            finish: reason,
            stop_sequence: None,
        });
    }
    Ok(Completion {
        id: format!("chatcmpl-{rid}"),
        model: r.model_version.unwrap_or_else(|| model.to_owned()),
        created: crate::base::unix_now(),
        choices,
        usage,
    })
}

/// The wait a Gemini error asks for: `error.details[]` of `@type`
/// `type.googleapis.com/google.rpc.RetryInfo` with `retryDelay` (`"1s"`, `"1.5s"`), in whole
/// seconds rounded up, as a `Retry-After` value.
pub(crate) fn retry_delay(body: &[u8]) -> Option<http::HeaderValue> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = match &v {
        Value::Array(a) => a.first()?.get("error")?,
        _ => v.get("error")?,
    };
    let delay = e.get("details")?.as_array()?.iter().find_map(|d| {
        (d.get("@type")?.as_str()? == "type.googleapis.com/google.rpc.RetryInfo")
            .then(|| d.get("retryDelay")?.as_str())
            .flatten()
    })?;
    let secs: f64 = delay.strip_suffix('s')?.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    // Clamped like any Retry-After the gateway reads.
    let whole = secs.min(86_400.0).ceil() as u64;
    Some(http::HeaderValue::from(whole))
}

/// A Gemini error: `{"error":{"code","message","status"}}`, sometimes inside an array.
pub(crate) fn error(status: StatusCode, body: &[u8], d: &Deployment) -> UpstreamFault {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = match &v {
        Value::Array(a) => a.first().and_then(|x| x.get("error")),
        _ => v.get("error"),
    };
    let message = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(|m| clean_message(m, d))
        .unwrap_or_else(|| format!("upstream answered HTTP {}", status.as_u16()));
    UpstreamFault {
        status,
        body: ErrorBody::new(crate::adapters::openai_compat::error_type(status), message),
    }
}
