//! A Responses request's tools and output format in chat's terms. Function tools, and the
//! function tools of a `namespace` (named `<namespace>__<name>` for the dialects, and named back
//! in the calls the answer makes); a tool only OpenAI's platform runs is refused by name.

use serde_json::{Map, Value, json};

use crate::exchange::RequestError;

/// Tools OpenAI runs itself: no other dialect can, so a request naming one goes only to an
/// OpenAI deployment (the policy refuses every other), never answered without it.
pub(crate) const BUILT_IN_TOOLS: &[&str] = &[
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

/// What a request's tools are: the functions of its namespaces (to name their calls back), and
/// the first built-in tool it has, if any.
#[derive(Default)]
pub(crate) struct Tools {
    pub(crate) namespaced: Namespaced,
    pub(crate) hosted: Option<&'static str>,
}

/// Items of built-in tools' calls, and the tool each belongs to.
const HOSTED_ITEMS: &[(&str, &str)] = &[
    ("web_search_call", "web_search"),
    ("file_search_call", "file_search"),
    ("computer_call", "computer_use_preview"),
    ("computer_call_output", "computer_use_preview"),
    ("code_interpreter_call", "code_interpreter"),
    ("image_generation_call", "image_generation"),
    ("local_shell_call", "local_shell"),
    ("local_shell_call_output", "local_shell"),
    ("shell_call", "shell"),
    ("shell_call_output", "shell"),
    ("apply_patch_call", "apply_patch"),
    ("apply_patch_call_output", "apply_patch"),
    ("mcp_call", "mcp"),
    ("mcp_list_tools", "mcp"),
    ("mcp_approval_request", "mcp"),
    ("mcp_approval_response", "mcp"),
    ("custom_tool_call", "custom"),
    ("custom_tool_call_output", "custom"),
];

/// The built-in tool an input item of type `kind` belongs to, if it is such an item.
pub(crate) fn hosted_item(kind: &str) -> Option<&'static str> {
    HOSTED_ITEMS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, t)| *t)
}

/// The built-in tool (or item of one) named `kind`, as a name that lives as long as the process.
pub(crate) fn hosted(kind: &str) -> Option<&'static str> {
    BUILT_IN_TOOLS.iter().copied().find(|t| *t == kind)
}

/// Function tools in chat's terms; a built-in tool is kept for OpenAI's own API and named.
pub(super) fn tools(
    tools: Option<Vec<Value>>,
    choice: Option<Value>,
    chat: &mut Map<String, Value>,
    echo: &mut Map<String, Value>,
) -> Result<Tools, RequestError> {
    let tools = tools.unwrap_or_default();
    let mut out = Vec::with_capacity(tools.len());
    let mut namespaced = Vec::new();
    let mut first_hosted = None;
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
            kind => match hosted(kind) {
                Some(h) => {
                    first_hosted.get_or_insert(h);
                }
                None => return Err(refused(t, &format!("tools[{i}].type"))),
            },
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
        // A built-in tool chosen: only OpenAI's own API, which takes it as sent, runs it.
        Value::Object(o)
            if o.get("type")
                .and_then(Value::as_str)
                .is_some_and(|k| hosted(k).is_some()) =>
        {
            Value::Null
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
    if chat.contains_key("tools") && !chat_choice.is_null() {
        chat.insert("tool_choice".into(), chat_choice);
    }
    echo.insert("tool_choice".into(), choice);
    Ok(Tools {
        namespaced,
        hosted: first_hosted,
    })
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
