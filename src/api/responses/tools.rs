//! A Responses request's tools and output format in chat's terms. Function tools, and the
//! function tools of a `namespace` (named `<namespace>__<name>` for the dialects, and named back
//! in the calls the answer makes); a tool only OpenAI's platform runs is refused by name.

use serde_json::{Map, Value, json};

use crate::exchange::RequestError;

/// Tools OpenAI runs itself: no other dialect can, so a request naming one is refused rather
/// than answered without it.
const BUILT_IN_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
    "file_search",
    "computer_use_preview",
    "computer_use",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
];

fn invalid(param: &str, message: impl Into<String>) -> RequestError {
    RequestError::invalid(param, message)
}

/// The separator of a namespace and a function's name in the name the dialects see.
pub(crate) const SEPARATOR: &str = "__";

/// A function of a namespace: the name the dialects call it by, its namespace, its own name.
pub(crate) type Namespaced = Vec<(String, String, String)>;

/// Function tools in chat's terms; a built-in tool is refused, naming it. Returns the functions
/// of namespaces, to name their calls back.
pub(super) fn tools(
    tools: Option<Vec<Value>>,
    choice: Option<Value>,
    chat: &mut Map<String, Value>,
    echo: &mut Map<String, Value>,
) -> Result<Namespaced, RequestError> {
    let tools = tools.unwrap_or_default();
    let mut out = Vec::with_capacity(tools.len());
    let mut namespaced = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        match t.get("type").and_then(Value::as_str).unwrap_or("") {
            "function" => out.push(function(t, None, &format!("tools[{i}]"))?),
            "namespace" => {
                let ns = t
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| RequestError::missing(&format!("tools[{i}].name")))?;
                let inner = t.get("tools").and_then(Value::as_array);
                for (j, f) in inner
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let param = format!("tools[{i}].tools[{j}]");
                    if f.get("type").and_then(Value::as_str) != Some("function") {
                        return Err(refused(f, &format!("{param}.type")));
                    }
                    let tool = function(f, Some(ns), &param)?;
                    let flat = tool["function"]["name"].as_str().unwrap_or("").to_owned();
                    let name = f["name"].as_str().unwrap_or("").to_owned();
                    namespaced.push((flat, ns.to_owned(), name));
                    out.push(tool);
                }
            }
            _ => return Err(refused(t, &format!("tools[{i}].type"))),
        }
    }
    let mut names: Vec<&str> = out
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid("tools", format!("two tools are named '{}'", w[0])));
    }
    echo.insert("tools".into(), Value::Array(tools));
    if !out.is_empty() {
        chat.insert("tools".into(), Value::Array(out));
    }
    let choice = choice.unwrap_or_else(|| json!("auto"));
    let chat_choice = match &choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => choice.clone(),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| RequestError::missing("tool_choice.name"))?;
            let name = match o.get("namespace").and_then(Value::as_str) {
                Some(ns) => format!("{ns}{SEPARATOR}{name}"),
                None => name.to_owned(),
            };
            json!({"type": "function", "function": {"name": name}})
        }
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
            return Err(invalid(
                "tool_choice",
                format!(
                    "a tool_choice of type '{kind}' is not served; use 'auto', 'none', 'required' or a function"
                ),
            ));
        }
        _ => {
            return Err(invalid(
                "tool_choice",
                "'tool_choice' is 'auto', 'none', 'required' or a function",
            ));
        }
    };
    if chat.contains_key("tools") {
        chat.insert("tool_choice".into(), chat_choice);
    }
    echo.insert("tool_choice".into(), choice);
    Ok(namespaced)
}

/// A tool this gateway cannot give a dialect: a built-in one (named as such) or an unknown type.
fn refused(t: &Value, param: &str) -> RequestError {
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
    if BUILT_IN_TOOLS.contains(&kind) {
        RequestError::Invalid {
            message: format!(
                "the built-in tool '{kind}' runs only inside OpenAI's platform and is not served by this gateway; declare a function tool instead"
            ),
            param: Some(param.to_owned()),
            code: "unsupported_tool",
        }
    } else {
        invalid(param, format!("unknown tool type '{kind}'"))
    }
}

/// A function tool as chat declares it; a namespace's function is named `<namespace>__<name>`.
fn function(t: &Value, namespace: Option<&str>, param: &str) -> Result<Value, RequestError> {
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RequestError::missing(&format!("{param}.name")))?;
    let mut f = Map::new();
    let name = match namespace {
        Some(ns) => format!("{ns}{SEPARATOR}{name}"),
        None => name.to_owned(),
    };
    f.insert("name".into(), json!(name));
    if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
        f.insert("description".into(), d.clone());
    }
    f.insert(
        "parameters".into(),
        t.get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    );
    if let Some(s) = t.get("strict").filter(|s| !s.is_null()) {
        f.insert("strict".into(), s.clone());
    }
    Ok(json!({"type": "function", "function": f}))
}

/// `text.format` as chat's `response_format`; returns the format the response repeats.
pub(super) fn text_format(
    format: Option<Value>,
    chat: &mut Map<String, Value>,
) -> Result<Value, RequestError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(json!({"type": "text"}));
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            chat.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .ok_or_else(|| RequestError::missing("text.format.schema"))?;
            let name = format
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| RequestError::missing("text.format.name"))?;
            let mut js = Map::new();
            js.insert("name".into(), json!(name));
            js.insert("schema".into(), schema.clone());
            for k in ["strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    js.insert(k.into(), v.clone());
                }
            }
            chat.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": js}),
            );
        }
        _ => {
            return Err(invalid(
                "text.format.type",
                "'text.format.type' is 'text', 'json_object' or 'json_schema'",
            ));
        }
    }
    Ok(format)
}
