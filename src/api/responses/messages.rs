//! A conversation's items as chat messages: what every dialect's adapter reads. Calls of one
//! turn join one assistant message; a tool's output is a `tool` message, and images it returned
//! follow it as the user's content.

use serde_json::{Map, Value, json};

/// Appends one stored item as chat messages; false when no message can carry it (reasoning).
pub(super) fn push(item: &Value, messages: &mut Vec<Value>) -> bool {
    let field = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
    match field("type") {
        "message" => {
            let role = field("role");
            let parts = item.get("content").and_then(Value::as_array);
            let parts = parts.map(Vec::as_slice).unwrap_or_default();
            if role == "assistant" {
                let text = parts_text(parts);
                messages.push(json!({"role": "assistant", "content": text}));
            } else if role == "user" && parts.iter().any(|p| !is_text(p)) {
                let parts: Vec<Value> = parts.iter().filter_map(chat_part).collect();
                messages.push(json!({"role": "user", "content": parts}));
            } else {
                messages.push(json!({"role": role, "content": parts_text(parts)}));
            }
        }
        "function_call" => {
            // A namespace's function goes by the name the dialects were given for it.
            let name = match item.get("namespace").and_then(Value::as_str) {
                Some(ns) => format!("{ns}{}{}", super::tools::SEPARATOR, field("name")),
                None => field("name").to_owned(),
            };
            let call = json!({"id": field("call_id"), "type": "function",
                "function": {"name": name, "arguments": field("arguments")}});
            // Calls of one turn go in one assistant message, after its text if it has some.
            match messages.last_mut() {
                Some(Value::Object(last))
                    if last.get("role").and_then(Value::as_str) == Some("assistant") =>
                {
                    match last.get_mut("tool_calls") {
                        Some(Value::Array(calls)) => calls.push(call),
                        _ => {
                            last.insert("tool_calls".into(), json!([call]));
                        }
                    }
                }
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts_text(parts),
                _ => String::new(),
            };
            messages
                .push(json!({"role": "tool", "tool_call_id": field("call_id"), "content": output}));
            // Images a tool returned follow its message as the user's content.
            if let Some(Value::Array(parts)) = item.get("output") {
                let images: Vec<Value> = parts
                    .iter()
                    .filter(|p| !is_text(p))
                    .filter_map(chat_part)
                    .collect();
                if !images.is_empty() {
                    messages.push(json!({"role": "user", "content": images}));
                }
            }
        }
        _ => return false,
    }
    true
}

fn is_text(p: &Value) -> bool {
    matches!(
        p.get("type").and_then(Value::as_str),
        Some("input_text" | "output_text" | "refusal")
    )
}

/// The text of a list of parts, joined.
fn parts_text(parts: &[Value]) -> String {
    let mut out = String::new();
    for p in parts {
        if let Some(t) = p
            .get("text")
            .or_else(|| p.get("refusal"))
            .and_then(Value::as_str)
        {
            out.push_str(t);
        }
    }
    out
}

/// A Responses content part as a chat content part.
fn chat_part(p: &Value) -> Option<Value> {
    let s = |k: &str| p.get(k).and_then(Value::as_str);
    Some(match s("type")? {
        "input_text" | "output_text" => json!({"type": "text", "text": s("text")?}),
        "input_image" => {
            let mut image = Map::new();
            image.insert("url".into(), json!(s("image_url")?));
            if let Some(d) = s("detail") {
                image.insert("detail".into(), json!(d));
            }
            json!({"type": "image_url", "image_url": image})
        }
        "input_file" => {
            let mut file = Map::new();
            file.insert("file_data".into(), json!(s("file_data")?));
            if let Some(n) = s("filename") {
                file.insert("filename".into(), json!(n));
            }
            json!({"type": "file", "file": file})
        }
        _ => return None,
    })
}
