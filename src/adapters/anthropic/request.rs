//! OpenAI request → Messages request. System and developer messages become `system`; tool calls
//! become `tool_use` blocks and tool messages `tool_result` blocks, consecutive ones in one user
//! turn right after the calls; empty text blocks are dropped (the API refuses them); images
//! become base64 or URL image blocks.

use serde_json::{Map, Value, json};

use crate::adapters::AdapterError;
use crate::adapters::media::data_url;
use crate::config::Deployment;
use crate::exchange::chat::{ChatRequest, Part, Role, ToolChoice};

/// Output tokens asked for when neither the request nor the catalog says.
const DEFAULT_MAX_TOKENS: u32 = 4096;

fn unsupported(what: impl Into<String>) -> AdapterError {
    AdapterError::Unsupported(what.into())
}

fn bad(e: crate::exchange::RequestError) -> AdapterError {
    AdapterError::Unsupported(e.to_string())
}

/// Appends blocks to the conversation, merging them into the last turn when it has the same
/// role (the API wants turns to alternate).
fn push(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((r, b)) if *r == role => b.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

fn image_block(url: &str) -> Value {
    match data_url(url) {
        Some((media, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// The Messages request for `req` on `d`.
pub(crate) fn build(req: &ChatRequest, d: &Deployment) -> Result<Value, AdapterError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported(
            "Anthropic models answer one choice at a time ('n' > 1)",
        ));
    }
    let (system, turns) = conversation(req)?;
    if turns.is_empty() {
        return Err(unsupported(
            "the conversation has no user or assistant content",
        ));
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(d.upstream_model));
    let max_tokens = req
        .max_output_tokens()
        .or(d.model.capabilities.max_output_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    let stop = req.stop_list();
    if !stop.is_empty() {
        out.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(format) = output_format(req)? {
        out.insert("output_config".into(), format);
    }
    if let Some(t) = req.temperature {
        if t > 1.0 {
            return Err(unsupported(
                "Anthropic models take a temperature between 0 and 1",
            ));
        }
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    for name in ["top_k", "thinking", "service_tier"] {
        if let Some(v) = req.extra(name) {
            let v: Value = serde_json::from_str(v.get()).unwrap_or(Value::Null);
            if !v.is_null() {
                out.insert(name.into(), v);
            }
        }
    }
    if let Some((tools, choice)) = tools(req)? {
        out.insert("tools".into(), tools);
        out.insert("tool_choice".into(), choice);
    }
    if let Some(user) = req.extra("user")
        && let Ok(user) = serde_json::from_str::<String>(user.get())
    {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// The system text and the turns of a conversation, in Anthropic's terms: system and developer
/// messages joined into the system prompt, tool results opening the next user turn.
#[expect(
    clippy::type_complexity,
    reason = "the two halves of a Messages request"
)]
fn conversation(
    req: &ChatRequest,
) -> Result<(Vec<String>, Vec<(&'static str, Vec<Value>)>), AdapterError> {
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(t) = m.text().filter(|t| !t.is_empty()) {
                    system.push(t);
                }
            }
            Role::User => {
                let mut blocks = Vec::new();
                for p in m.parts().map_err(bad)? {
                    match p {
                        Part::Text { text } if !text.is_empty() => {
                            blocks.push(json!({"type": "text", "text": text}))
                        }
                        Part::Text { .. } => {}
                        Part::ImageUrl { image_url } => blocks.push(image_block(&image_url.url)),
                        Part::Other => {
                            return Err(unsupported(
                                "only text and image parts can be sent to Anthropic models",
                            ));
                        }
                    }
                }
                push(&mut turns, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                if let Some(t) = m.text().filter(|t| !t.is_empty()) {
                    blocks.push(json!({"type": "text", "text": t}));
                }
                for c in m.tool_call_list().map_err(bad)? {
                    let input = match serde_json::from_str::<Value>(&c.function.arguments) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => json!({}),
                    };
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.function.name, "input": input}));
                }
                push(&mut turns, "assistant", blocks);
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().unwrap_or_default();
                let text = m.text().unwrap_or_default();
                let block = if text.is_empty() {
                    json!({"type": "tool_result", "tool_use_id": id})
                } else {
                    json!({"type": "tool_result", "tool_use_id": id, "content": text})
                };
                // Tool results answer the calls just made: they open the next user turn.
                match turns.last_mut() {
                    Some((r, b)) if *r == "user" => {
                        let first_other = b
                            .iter()
                            .position(|x| {
                                x.get("type").and_then(Value::as_str) != Some("tool_result")
                            })
                            .unwrap_or(b.len());
                        b.insert(first_other, block);
                    }
                    _ => turns.push(("user", vec![block])),
                }
            }
            Role::Function => {
                return Err(unsupported(
                    "'function' messages (deprecated) cannot be sent to Anthropic models",
                ));
            }
        }
    }
    Ok((system, turns))
}

/// A JSON schema the answer must follow, in Anthropic's terms; `json_object` (any JSON) has
/// none and is refused rather than ignored.
fn output_format(req: &ChatRequest) -> Result<Option<Value>, AdapterError> {
    let Some(rf) = &req.response_format else {
        return Ok(None);
    };
    let rf: Value = serde_json::from_str(rf.get()).unwrap_or(Value::Null);
    match (
        rf.get("type").and_then(Value::as_str),
        rf.pointer("/json_schema/schema"),
    ) {
        (Some("json_schema"), Some(schema)) => Ok(Some(
            json!({"format": {"type": "json_schema", "schema": schema}}),
        )),
        (Some("text"), _) => Ok(None),
        _ => Err(unsupported(
            "Anthropic models take a response_format of type json_schema (with a schema) only",
        )),
    }
}

/// The tools and the tool choice, if the request has tools.
fn tools(req: &ChatRequest) -> Result<Option<(Value, Value)>, AdapterError> {
    let tools = req.tool_list().map_err(bad)?;
    let parallel_off = req
        .extra("parallel_tool_calls")
        .is_some_and(|v| v.get() == "false");
    if tools.is_empty() {
        return Ok(None);
    }
    let tools: Vec<Value> = tools
        .into_iter()
        .map(|t| {
            let mut tool = Map::new();
            tool.insert("name".into(), json!(t.function.name));
            if let Some(d) = t.function.description {
                tool.insert("description".into(), json!(d));
            }
            let schema = t
                .function
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            tool.insert("input_schema".into(), schema);
            Value::Object(tool)
        })
        .collect();

    let mut choice = match req.tool_choice().map_err(bad)? {
        None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::None) => json!({"type": "none"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Named(name)) => json!({"type": "tool", "name": name}),
    };
    if parallel_off && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    Ok(Some((Value::Array(tools), choice)))
}
