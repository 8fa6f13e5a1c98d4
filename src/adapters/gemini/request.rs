//! OpenAI request → Gemini `generateContent` request. System and developer messages become
//! `systemInstruction`; roles become `user` and `model`, consecutive turns of one role merged;
//! tool calls become `functionCall` parts and tool messages `functionResponse` parts (the function
//! name recovered from the call, a string result wrapped as `{"result": …}`); tool parameters go
//! as `parametersJsonSchema`, so full JSON Schema needs no rewriting; images go inline.

use serde_json::{Map, Value, json};

use crate::adapters::AdapterError;
use crate::adapters::media::data_url;
use crate::exchange::chat::{ChatRequest, Part, Role, ToolChoice};

fn unsupported(what: impl Into<String>) -> AdapterError {
    AdapterError::Unsupported(what.into())
}

fn bad(e: crate::exchange::RequestError) -> AdapterError {
    AdapterError::Unsupported(e.to_string())
}

fn push(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((r, p)) if *r == role => p.extend(parts),
        _ => turns.push((role, parts)),
    }
}

/// A JSON value from a raw extra field, if the client sent one.
fn extra(req: &ChatRequest, name: &str) -> Option<Value> {
    req.extra(name)
        .and_then(|v| serde_json::from_str(v.get()).ok())
        .filter(|v: &Value| !v.is_null())
}

/// The Gemini request for `req`.
pub(crate) fn build(
    req: &ChatRequest,
    model: &crate::catalog::Model,
) -> Result<Value, AdapterError> {
    let (system, turns) = conversation(req)?;
    if turns.is_empty() {
        return Err(unsupported(
            "the conversation has no user or assistant content",
        ));
    }

    let mut out = Map::new();
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    out.insert(
        "contents".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    let config = generation_config(req, model)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    tools(req, &mut out)?;
    Ok(Value::Object(out))
}

/// The system instruction's parts and the turns of a conversation, in Gemini's terms: tool
/// results named after the calls they answer.
#[expect(clippy::type_complexity, reason = "the two halves of a Gemini request")]
fn conversation(
    req: &ChatRequest,
) -> Result<(Vec<Value>, Vec<(&'static str, Vec<Value>)>), AdapterError> {
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool-call id → function name, to name the responses.
    let mut names: Vec<(String, String)> = Vec::new();
    for m in &req.messages {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(t) = m.text().filter(|t| !t.is_empty()) {
                    system.push(json!({"text": t}));
                }
            }
            Role::User => {
                let mut parts = Vec::new();
                for p in m.parts().map_err(bad)? {
                    match p {
                        Part::Text { text } if !text.is_empty() => {
                            parts.push(json!({"text": text}))
                        }
                        Part::Text { .. } => {}
                        Part::ImageUrl { image_url } => match data_url(&image_url.url) {
                            Some((mime, data)) => {
                                parts.push(json!({"inlineData": {"mimeType": mime, "data": data}}))
                            }
                            None => {
                                return Err(unsupported(
                                    "Gemini models take images inline: send them as data: URLs",
                                ));
                            }
                        },
                        Part::Other => {
                            return Err(unsupported(
                                "only text and image parts can be sent to Gemini models",
                            ));
                        }
                    }
                }
                push(&mut turns, "user", parts);
            }
            Role::Assistant => {
                let mut parts = Vec::new();
                if let Some(t) = m.text().filter(|t| !t.is_empty()) {
                    parts.push(json!({"text": t}));
                }
                for c in m.tool_call_list().map_err(bad)? {
                    let args = match serde_json::from_str::<Value>(&c.function.arguments) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => json!({}),
                    };
                    names.push((c.id.clone(), c.function.name.clone()));
                    parts.push(json!({"functionCall": {"name": c.function.name, "args": args}}));
                }
                push(&mut turns, "model", parts);
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().unwrap_or_default();
                let name = names
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| {
                        unsupported(format!("tool message '{id}' answers no earlier tool call"))
                    })?;
                let text = m.text().unwrap_or_default();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"result": text}),
                };
                push(
                    &mut turns,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            Role::Function => {
                return Err(unsupported(
                    "'function' messages (deprecated) cannot be sent to Gemini models",
                ));
            }
        }
    }
    Ok((system, turns))
}

/// Most candidates one request may ask for.
const MAX_CANDIDATES: u32 = 8;

/// The sampling and output settings (`generationConfig`), empty when the request sets none.
fn generation_config(
    req: &ChatRequest,
    model: &crate::catalog::Model,
) -> Result<Map<String, Value>, AdapterError> {
    let mut config = Map::new();
    if let Some(t) = req.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        config.insert("topP".into(), json!(p));
    }
    if let Some(n) = req.output_limit(model.capabilities.max_output_tokens) {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    let stop = req.stop_list();
    if !stop.is_empty() {
        config.insert("stopSequences".into(), json!(stop));
    }
    if let Some(n) = req.n {
        // The API refuses more: said here, in the client's terms.
        if n > MAX_CANDIDATES {
            return Err(unsupported(format!(
                "Gemini models answer at most {MAX_CANDIDATES} choices ('n')"
            )));
        }
        config.insert("candidateCount".into(), json!(n));
    }
    for (from, to) in [
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = extra(req, from) {
            config.insert(to.into(), v);
        }
    }
    if let Some(rf) = &req.response_format {
        let rf: Value = serde_json::from_str(rf.get()).unwrap_or(Value::Null);
        match rf.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = rf.pointer("/json_schema/schema") {
                    config.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => {}
        }
    }
    Ok(config)
}

/// The function declarations and the calling mode, if the request has tools.
fn tools(req: &ChatRequest, out: &mut Map<String, Value>) -> Result<(), AdapterError> {
    let tools = req.tool_list().map_err(bad)?;
    if !tools.is_empty() {
        let decls: Vec<Value> = tools
            .into_iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), json!(t.function.name));
                if let Some(d) = t.function.description {
                    f.insert("description".into(), json!(d));
                }
                if let Some(p) = t.function.parameters {
                    f.insert("parametersJsonSchema".into(), p);
                }
                Value::Object(f)
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        let calling = match req.tool_choice().map_err(bad)? {
            None | Some(ToolChoice::Auto) => None,
            Some(ToolChoice::None) => Some(json!({"mode": "NONE"})),
            Some(ToolChoice::Required) => Some(json!({"mode": "ANY"})),
            Some(ToolChoice::Named(name)) => {
                Some(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
            }
        };
        if let Some(c) = calling {
            out.insert("toolConfig".into(), json!({"functionCallingConfig": c}));
        }
    }
    Ok(())
}
