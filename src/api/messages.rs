//! ③ `POST /v1/messages`: Anthropic's Messages API as a front door. The request is read with
//! Anthropic's rules (`max_tokens` required, roles `user` and `assistant`, content blocks) and
//! turned into the gateway's one request type, so it is decided by the same policies and served
//! by any dialect. Tool results become `tool` messages placed before the text beside them;
//! `thinking` and `cache_control` are not carried.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::exchange::RequestError;
use crate::exchange::chat::{ChatRequest, RequestLimits};
use crate::exchange::depth::check_depth;

#[derive(Deserialize)]
struct MessagesRequest {
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<TextOrBlocks>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    metadata: Option<InMetadata>,
    /// `format` (a JSON schema the answer must follow) is read; the rest is not carried.
    #[serde(default)]
    output_config: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrBlocks {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: TextOrBlocks,
}

#[derive(Deserialize)]
struct InTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct InMetadata {
    #[serde(default)]
    user_id: Option<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> RequestError {
    RequestError::invalid(param, message)
}

/// The text of a block list (text blocks only).
fn blocks_text(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An image block as an OpenAI `image_url` part.
fn image_part(block: &Value, param: &str) -> Result<Value, RequestError> {
    let source = block
        .get("source")
        .ok_or_else(|| invalid(param, "an image block needs 'source'"))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(param, "a base64 image needs 'data'"))?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(param, "a url image needs 'url'"))?
            .to_owned(),
        _ => return Err(invalid(param, "image sources are 'base64' or 'url'")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// The content of a `tool_result` block as the text of a `tool` message.
fn tool_result_text(block: &Value) -> String {
    match block.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => blocks_text(parts),
        _ => String::new(),
    }
}

/// Reads an Anthropic Messages request into the gateway's request.
/// A user turn's content blocks: its tool results (each a tool message, first) and its text
/// and images (one user message).
fn user_turn(blocks: &[Value], param: &str, messages: &mut Vec<Value>) -> Result<(), RequestError> {
    let mut parts = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            // Tool results answer the previous turn's calls: they go first.
            Some("tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(param, "a tool_result block needs 'tool_use_id'"))?;
                let mut text = tool_result_text(b);
                if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    text = format!("Error: {text}");
                }
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                // Images a tool returned (a screenshot) follow the tool's message
                // as the user's content, which every dialect takes: never dropped.
                if let Some(Value::Array(inner)) = b.get("content") {
                    for ib in inner {
                        if ib.get("type").and_then(Value::as_str) == Some("image") {
                            parts.push(image_part(ib, param)?);
                        }
                    }
                }
            }
            Some("text") => {
                let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                if !t.is_empty() {
                    parts.push(json!({"type": "text", "text": t}));
                }
            }
            Some("image") => parts.push(image_part(b, param)?),
            Some(other) => {
                return Err(invalid(
                    param,
                    format!("content blocks of type '{other}' are not supported"),
                ));
            }
            None => return Err(invalid(param, "a content block needs 'type'")),
        }
    }
    if !parts.is_empty() {
        messages.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// An assistant turn's content blocks as one message with its tool calls (none when it has
/// neither text nor calls).
fn assistant_turn(blocks: &[Value], param: &str) -> Result<Option<Value>, RequestError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(param, "a tool_use block needs 'name'"))?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}));
            }
            // Reasoning of an earlier turn is not carried to other models.
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(invalid(
                    param,
                    format!("content blocks of type '{other}' are not supported"),
                ));
            }
            None => return Err(invalid(param, "a content block needs 'type'")),
        }
    }
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    msg.insert(
        "content".into(),
        if text.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    } else if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(Value::Object(msg)))
}

/// Anthropic's tools and tool choice in OpenAI's terms.
fn tools_of(
    tools: Option<Vec<InTool>>,
    tool_choice: Option<InToolChoice>,
    out: &mut Map<String, Value>,
) -> Result<(), RequestError> {
    if let Some(tools) = tools.filter(|t| !t.is_empty()) {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), json!(t.name));
                if let Some(d) = t.description {
                    f.insert("description".into(), json!(d));
                }
                f.insert(
                    "parameters".into(),
                    t.input_schema.unwrap_or_else(|| json!({"type": "object"})),
                );
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = tool_choice {
        let choice = match tc.kind.as_str() {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => {
                let name = tc
                    .name
                    .ok_or_else(|| invalid("tool_choice", "a 'tool' choice needs 'name'"))?;
                json!({"type": "function", "function": {"name": name}})
            }
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("unknown tool_choice type '{other}'"),
                ));
            }
        };
        if tc.kind != "none" || out.contains_key("tools") {
            out.insert("tool_choice".into(), choice);
        }
        if tc.disable_parallel_tool_use == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(())
}

pub fn parse(body: &[u8], limits: RequestLimits) -> Result<ChatRequest, RequestError> {
    check_depth(body, limits.max_depth)?;
    let r: MessagesRequest =
        crate::base::json(body).map_err(|e| RequestError::Json(e.to_string()))?;
    let max_tokens = r
        .max_tokens
        .ok_or_else(|| RequestError::missing("max_tokens"))?;
    if r.messages.is_empty() {
        return Err(invalid(
            "messages",
            "'messages' must contain at least one message",
        ));
    }
    let mut messages: Vec<Value> = Vec::with_capacity(r.messages.len() + 1);
    match r.system {
        Some(TextOrBlocks::Text(s)) if !s.is_empty() => {
            messages.push(json!({"role": "system", "content": s}))
        }
        Some(TextOrBlocks::Blocks(b)) => {
            let text = blocks_text(&b);
            if !text.is_empty() {
                messages.push(json!({"role": "system", "content": text}));
            }
        }
        _ => {}
    }
    for (i, m) in r.messages.into_iter().enumerate() {
        let param = format!("messages[{i}]");
        match (m.role.as_str(), m.content) {
            ("user", TextOrBlocks::Text(t)) => messages.push(json!({"role": "user", "content": t})),
            ("assistant", TextOrBlocks::Text(t)) => {
                messages.push(json!({"role": "assistant", "content": t}))
            }
            ("user", TextOrBlocks::Blocks(blocks)) => user_turn(&blocks, &param, &mut messages)?,
            ("assistant", TextOrBlocks::Blocks(blocks)) => {
                if let Some(m) = assistant_turn(&blocks, &param)? {
                    messages.push(m);
                }
            }
            (role, _) => {
                return Err(invalid(
                    &format!("{param}.role"),
                    format!("role '{role}' is not 'user' or 'assistant'"),
                ));
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(r.model));
    out.insert("messages".into(), Value::Array(messages));
    // `max_tokens: 0` warms Anthropic's prompt cache without an answer; the OpenAI shape this
    // is parsed through takes no 0, so it is set back after parsing.
    out.insert("max_tokens".into(), json!(max_tokens.max(1)));
    if let Some(s) = r.stop_sequences.filter(|s| !s.is_empty()) {
        out.insert("stop".into(), json!(s));
    }
    if let Some(t) = r.temperature {
        if !(0.0..=1.0).contains(&t) {
            return Err(invalid(
                "temperature",
                "'temperature' must be between 0 and 1",
            ));
        }
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = r.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(k) = r.top_k {
        out.insert("top_k".into(), json!(k));
    }
    if r.stream == Some(true) {
        out.insert("stream".into(), json!(true));
        // The answer's usage is part of Anthropic's stream: ask every backend for it.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    tools_of(r.tools, r.tool_choice, &mut out)?;
    if let Some(user) = r.metadata.and_then(|m| m.user_id) {
        out.insert("user".into(), json!(user));
    }
    // Structured output: Anthropic's `output_config.format` becomes OpenAI's
    // `response_format`, which every dialect's adapter carries in its own terms.
    if let Some(format) = r.output_config.as_ref().and_then(|c| c.get("format")) {
        match (
            format.get("type").and_then(Value::as_str),
            format.get("schema"),
        ) {
            (Some("json_schema"), Some(schema)) => {
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
                );
            }
            _ => {
                return Err(invalid(
                    "output_config.format",
                    "'output_config.format' must be {\"type\": \"json_schema\", \"schema\": {…}}",
                ));
            }
        }
    }
    let openai =
        serde_json::to_vec(&Value::Object(out)).map_err(|e| RequestError::Json(e.to_string()))?;
    // The body made here is what an OpenAI-compatible upstream is sent, its model replaced,
    // unless the request is changed below.
    let mut req = ChatRequest::parse_forwardable(&openai, limits)?;
    if max_tokens == 0 {
        req.max_tokens = Some(0);
        req.wire = None;
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_v(v: Value) -> Result<ChatRequest, RequestError> {
        parse(v.to_string().as_bytes(), RequestLimits::default())
    }

    #[test]
    fn a_tool_round_trip_becomes_openai_messages() {
        let req = parse_v(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are terse.",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "I'll check."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "21C, sunny"},
                    {"type": "text", "text": "And tomorrow?"}]}
            ],
            "tools": [{"name": "get_weather", "description": "Current weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stream": true, "top_k": 5, "metadata": {"user_id": "u1"}
        }))
        .unwrap();
        let body: Value = serde_json::from_slice(&req.to_openai_body("m", true)).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "I'll check.", "tool_calls": [
                    {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "content": "21C, sunny", "tool_call_id": "toolu_01"},
                {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}
            ])
        );
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(body["max_tokens"], 1024);
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["user"], "u1");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(
            body["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
    }

    #[test]
    fn anthropic_rules_are_enforced() {
        let e = parse_v(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
            .unwrap_err();
        assert!(
            matches!(e, RequestError::Invalid { ref param, .. } if param.as_deref() == Some("max_tokens"))
        );
        let e = parse_v(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})).unwrap_err();
        assert!(e.to_string().contains("not 'user' or 'assistant'"));
        let e = parse_v(json!({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]})).unwrap_err();
        assert!(e.to_string().contains("between 0 and 1"));
        assert!(parse_v(json!({"model": "m", "max_tokens": 5, "messages": []})).is_err());
    }

    #[test]
    fn images_become_image_url_parts() {
        let req = parse_v(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "text", "text": "what is this?"}]}]}))
        .unwrap();
        assert!(req.has_images());
        let body: Value = serde_json::from_slice(&req.to_openai_body("m", true)).unwrap();
        assert_eq!(
            body["messages"][0]["content"][0]["image_url"]["url"],
            "data:image/jpeg;base64,AAAA"
        );
        assert_eq!(
            body["messages"][0]["content"][1]["image_url"]["url"],
            "https://example.com/a.png"
        );
    }
}
