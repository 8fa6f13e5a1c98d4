//! A Responses API request: read with OpenAI's rules, its input normalised into the items a
//! conversation stores, and the conversation (stored history, then this input) turned into the
//! gateway's one request type, so every dialect can answer it.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::exchange::RequestError;
use crate::exchange::chat::{ChatRequest, RequestLimits};
use crate::exchange::depth::check_depth;

use super::{item_id, tools};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    model: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    text: Option<TextConfig>,
    #[serde(default)]
    reasoning: Option<Reasoning>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    safety_identifier: Option<String>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default)]
    conversation: Option<Value>,
    #[serde(default)]
    prompt: Option<Value>,
    // Read and not needed: what to include in the output, caching and tier hints.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted; nothing it asks for is produced")]
    include: Option<Value>,
    #[serde(default)]
    #[expect(dead_code, reason = "accepted as a hint")]
    prompt_cache_key: Option<Value>,
    #[serde(default)]
    #[expect(dead_code, reason = "accepted as a hint")]
    prompt_cache_retention: Option<Value>,
    #[serde(default)]
    #[expect(dead_code, reason = "accepted as a hint")]
    service_tier: Option<Value>,
    #[serde(default)]
    #[expect(dead_code, reason = "accepted; obfuscation is not added")]
    stream_options: Option<Value>,
    /// What a client says about itself (Codex sends it); not carried.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted and not carried")]
    client_metadata: Option<Value>,
    #[serde(default)]
    truncation: Option<String>,
    #[serde(default)]
    top_logprobs: Option<u32>,
    #[serde(default)]
    max_tool_calls: Option<u32>,
}

#[derive(Deserialize)]
struct TextConfig {
    #[serde(default)]
    format: Option<Value>,
    /// Read and not carried: only OpenAI's own models take it.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted and not carried")]
    verbosity: Option<Value>,
}

#[derive(Deserialize)]
struct Reasoning {
    #[serde(default)]
    effort: Option<String>,
    #[serde(default)]
    summary: Option<Value>,
    #[serde(default, rename = "generate_summary")]
    #[expect(dead_code, reason = "deprecated alias of summary")]
    generate_summary: Option<Value>,
}

/// A Responses request, read and checked; its conversation is built once the history of
/// `previous_response_id` is known.
pub(crate) struct Parsed {
    /// This turn's input, as the items a conversation stores (each with an id).
    pub(crate) input: Vec<Value>,
    pub(crate) instructions: Option<String>,
    /// Keep the response and its items (default true, as OpenAI).
    pub(crate) store: bool,
    pub(crate) previous_response_id: Option<String>,
    /// `metadata`, a source of labels as in chat.
    pub(crate) metadata: Option<Map<String, Value>>,
    /// The functions of namespaces, by the name the dialects call them.
    pub(crate) namespaced: tools::Namespaced,
    /// The first built-in tool (or item of one) the request has: only OpenAI's API can serve it.
    pub(crate) hosted: Option<&'static str>,
    /// The request's settings as the response object repeats them.
    pub(crate) echo: Map<String, Value>,
    /// Chat fields other than the messages, ready for the gateway's request.
    chat: Map<String, Value>,
}

fn invalid(param: &str, message: impl Into<String>) -> RequestError {
    RequestError::invalid(param, message)
}

/// Reads a Responses request.
pub(crate) fn parse(body: &[u8], limits: RequestLimits) -> Result<Parsed, RequestError> {
    check_depth(body, limits.max_depth)?;
    let w: Wire = crate::base::json(body).map_err(wire_error)?;
    refuse_unserved(&w)?;
    let input = input_of(w.input, w.previous_response_id.is_some(), limits)?;

    let mut chat = Map::new();
    let mut echo = Map::new();
    chat.insert("model".into(), json!(w.model));
    echo.insert("model".into(), json!(w.model));
    if let Some(m) = w.max_output_tokens {
        chat.insert("max_tokens".into(), json!(m.max(1)));
    }
    for (name, v) in [("temperature", w.temperature), ("top_p", w.top_p)] {
        if let Some(v) = v {
            chat.insert(name.into(), json!(v));
        }
    }
    echo.insert("temperature".into(), json!(w.temperature.unwrap_or(1.0)));
    echo.insert("top_p".into(), json!(w.top_p.unwrap_or(1.0)));
    echo.insert("max_output_tokens".into(), json!(w.max_output_tokens));
    if w.stream == Some(true) {
        chat.insert("stream".into(), json!(true));
        // The usage is part of the last event: ask every backend for it.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let tools = tools::tools(w.tools, w.tool_choice, &mut chat, &mut echo)?;
    // An item of a built-in tool's call in the input needs OpenAI's own API as much as the tool.
    let hosted = tools.hosted.or_else(|| {
        input
            .iter()
            .filter_map(|i| i.get("type").and_then(Value::as_str))
            .find_map(tools::hosted_item)
    });
    let format = tools::text_format(w.text.and_then(|t| t.format), &mut chat)?;
    echo.insert("text".into(), json!({"format": format}));
    let reasoning = w.reasoning.unwrap_or(Reasoning {
        effort: None,
        summary: None,
        generate_summary: None,
    });
    if let Some(effort) = &reasoning.effort {
        chat.insert("reasoning_effort".into(), json!(effort));
    }
    echo.insert(
        "reasoning".into(),
        json!({"effort": reasoning.effort, "summary": reasoning.summary}),
    );
    if let Some(p) = w.parallel_tool_calls {
        chat.insert("parallel_tool_calls".into(), json!(p));
    }
    echo.insert(
        "parallel_tool_calls".into(),
        json!(w.parallel_tool_calls.unwrap_or(true)),
    );
    let metadata = match w.metadata {
        Some(m) if m.values().any(|v| !v.is_string()) => {
            return Err(invalid("metadata", "'metadata' values must be strings"));
        }
        m => m,
    };
    if let Some(m) = &metadata {
        chat.insert("metadata".into(), Value::Object(m.clone()));
    }
    echo.insert(
        "metadata".into(),
        Value::Object(metadata.clone().unwrap_or_default()),
    );
    if let Some(u) = w.user.as_ref().or(w.safety_identifier.as_ref()) {
        chat.insert("user".into(), json!(u));
    }
    echo.insert("user".into(), json!(w.user));
    echo.insert("safety_identifier".into(), json!(w.safety_identifier));
    echo.insert("instructions".into(), json!(w.instructions));
    let store = w.store.unwrap_or(true);
    echo.insert("store".into(), json!(store));
    echo.insert("previous_response_id".into(), json!(w.previous_response_id));
    echo.insert(
        "truncation".into(),
        json!(w.truncation.as_deref().unwrap_or("disabled")),
    );
    echo.insert("top_logprobs".into(), json!(w.top_logprobs));
    echo.insert("max_tool_calls".into(), json!(w.max_tool_calls));
    echo.insert("service_tier".into(), json!("default"));
    Ok(Parsed {
        namespaced: tools.namespaced,
        hosted,
        input,
        instructions: w.instructions,
        store,
        previous_response_id: w.previous_response_id,
        metadata,
        echo,
        chat,
    })
}

/// This turn's input as stored items: a string is one user message.
fn input_of(
    input: Option<Value>,
    continues: bool,
    limits: RequestLimits,
) -> Result<Vec<Value>, RequestError> {
    let input = match input {
        Some(Value::String(s)) => vec![json!({
            "type": "message", "id": item_id("msg"), "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": s}],
        })],
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| normalise(item, &format!("input[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(invalid(
                "input",
                "'input' must be a string or a list of items",
            ));
        }
        None => return Err(RequestError::missing("input")),
    };
    if input.is_empty() && !continues {
        return Err(invalid("input", "'input' must contain at least one item"));
    }
    if input.len() > limits.max_messages {
        return Err(invalid(
            "input",
            format!("'input' holds more than {} items", limits.max_messages),
        ));
    }
    Ok(input)
}

/// A body serde refused: an unknown parameter is named as OpenAI names it.
fn wire_error(e: serde_json::Error) -> RequestError {
    let text = e.to_string();
    match text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        Some((name, _)) => RequestError::Invalid {
            message: format!("unknown parameter: '{}'", crate::base::printable(name)),
            param: Some(crate::base::printable(name)),
            code: "unknown_parameter",
        },
        None => RequestError::Json(text),
    }
}

/// Refuses what the gateway cannot do rather than answering without it.
fn refuse_unserved(w: &Wire) -> Result<(), RequestError> {
    if w.background == Some(true) {
        return Err(RequestError::unsupported(
            "background",
            "background responses are not served by this gateway",
        ));
    }
    if w.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(RequestError::unsupported(
            "conversation",
            "the Conversations API is not served; continue with 'previous_response_id'",
        ));
    }
    if w.prompt.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(RequestError::unsupported(
            "prompt",
            "stored prompt templates are not served",
        ));
    }
    if w.previous_response_id.as_deref() == Some("") {
        return Err(invalid(
            "previous_response_id",
            "'previous_response_id' is empty",
        ));
    }
    if let Some(t) = w.truncation.as_deref()
        && t != "disabled"
        && t != "auto"
    {
        return Err(invalid(
            "truncation",
            "'truncation' is 'auto' or 'disabled'",
        ));
    }
    Ok(())
}

/// One input item in the form a conversation stores: `type` and `id` always set, message
/// content as a list of typed parts. Items no dialect here can take are refused.
fn normalise(item: Value, param: &str) -> Result<Value, RequestError> {
    let Value::Object(mut m) = item else {
        return Err(invalid(param, "an input item must be an object"));
    };
    let kind = match m.get("type").and_then(Value::as_str) {
        Some(k) => k.to_owned(),
        // A bare `{role, content}` is a message.
        None if m.contains_key("role") => "message".to_owned(),
        None => return Err(invalid(param, "an input item needs 'type'")),
    };
    m.insert("type".into(), json!(kind));
    match kind.as_str() {
        "message" => {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(invalid(
                    &format!("{param}.role"),
                    format!("role '{role}' is not 'user', 'assistant', 'system' or 'developer'"),
                ));
            }
            let assistant = role == "assistant";
            let parts = match m.remove("content") {
                Some(Value::String(s)) => {
                    let t = if assistant {
                        "output_text"
                    } else {
                        "input_text"
                    };
                    vec![json!({"type": t, "text": s})]
                }
                Some(Value::Array(parts)) => parts,
                _ => {
                    return Err(invalid(
                        &format!("{param}.content"),
                        "a message's 'content' is a string or a list of parts",
                    ));
                }
            };
            for (j, p) in parts.iter().enumerate() {
                check_part(p, &format!("{param}.content[{j}]"))?;
            }
            m.insert("content".into(), Value::Array(parts));
            m.entry("status").or_insert(json!("completed"));
            id_or_fresh(&mut m, "msg");
        }
        "function_call" => {
            for field in ["call_id", "name", "arguments"] {
                if !m.get(field).is_some_and(Value::is_string) {
                    return Err(RequestError::missing(&format!("{param}.{field}")));
                }
            }
            m.entry("status").or_insert(json!("completed"));
            id_or_fresh(&mut m, "fc");
        }
        "function_call_output" => {
            if !m.get("call_id").is_some_and(Value::is_string) {
                return Err(RequestError::missing(&format!("{param}.call_id")));
            }
            match m.get("output") {
                Some(Value::String(_)) => {}
                Some(Value::Array(parts)) => {
                    for (j, p) in parts.iter().enumerate() {
                        check_part(p, &format!("{param}.output[{j}]"))?;
                    }
                }
                _ => return Err(RequestError::missing(&format!("{param}.output"))),
            }
            m.entry("status").or_insert(json!("completed"));
            id_or_fresh(&mut m, "fco");
        }
        // Kept in the conversation; carried to no dialect but OpenAI's own.
        "reasoning" => id_or_fresh(&mut m, "rs"),
        "item_reference" => {
            return Err(RequestError::unsupported(
                param,
                "item references are not served; send the item itself or use 'previous_response_id'",
            ));
        }
        // The call of a built-in tool, or its output: for OpenAI's own API.
        other if tools::hosted_item(other).is_some() => {}
        other => {
            return Err(invalid(
                &format!("{param}.type"),
                format!("input items of type '{other}' are not served"),
            ));
        }
    }
    Ok(Value::Object(m))
}

fn id_or_fresh(m: &mut Map<String, Value>, prefix: &str) {
    if !m.get("id").is_some_and(Value::is_string) {
        m.insert("id".into(), json!(item_id(prefix)));
    }
}

/// A content part of a message or a tool's output.
fn check_part(p: &Value, param: &str) -> Result<(), RequestError> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match kind {
        "input_text" | "output_text" => p.get("text").is_some_and(Value::is_string),
        "refusal" => p.get("refusal").is_some_and(Value::is_string),
        "input_image" => {
            if p.get("file_id").is_some_and(|f| !f.is_null()) {
                return Err(RequestError::unsupported(
                    param,
                    "images by 'file_id' need OpenAI's Files API; send 'image_url' (a URL or a data URL)",
                ));
            }
            p.get("image_url").is_some_and(Value::is_string)
        }
        "input_file" => {
            if p.get("file_id").is_some_and(|f| !f.is_null()) {
                return Err(RequestError::unsupported(
                    param,
                    "files by 'file_id' need OpenAI's Files API; send 'file_data'",
                ));
            }
            p.get("file_data").is_some_and(Value::is_string)
        }
        "" => return Err(invalid(param, "a content part needs 'type'")),
        other => {
            return Err(invalid(
                &format!("{param}.type"),
                format!("content parts of type '{other}' are not served"),
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            param,
            format!("an '{kind}' part is missing its content"),
        ))
    }
}

impl Parsed {
    /// The gateway's request for this turn: `instructions`, then the stored `history`, then
    /// this input. Returns it with the count of reasoning items no chat message can carry.
    pub(crate) fn to_chat(
        &self,
        history: &[Value],
        limits: RequestLimits,
    ) -> Result<(ChatRequest, usize), RequestError> {
        let mut messages = Vec::with_capacity(history.len() + self.input.len() + 1);
        if let Some(i) = self.instructions.as_deref().filter(|i| !i.is_empty()) {
            messages.push(json!({"role": "system", "content": i}));
        }
        let mut dropped = 0;
        for item in history.iter().chain(&self.input) {
            dropped += usize::from(!super::messages::push(item, &mut messages));
        }
        if messages.is_empty() {
            return Err(invalid(
                "input",
                "the conversation has no message to answer",
            ));
        }
        let mut chat = self.chat.clone();
        chat.insert("messages".into(), Value::Array(messages));
        let body = serde_json::to_vec(&Value::Object(chat))
            .map_err(|e| RequestError::Json(e.to_string()))?;
        Ok((ChatRequest::parse(&body, limits)?, dropped))
    }
}
