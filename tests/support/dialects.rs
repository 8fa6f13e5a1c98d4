//! Fake Anthropic and Gemini APIs for the tests: they refuse what the real APIs refuse (missing
//! `max_tokens`, a conversation whose roles do not alternate, an empty text block, a missing
//! version header, a tool call without its result right after, unknown fields where the real
//! API rejects them) with the real error formats, and answer in the documented formats,
//! streaming event by event with a little time between events.

use std::time::Duration;

use http::{HeaderMap, Response};
use serde_json::{Value, json};

use super::{FakeBody, Script, json_response, sse};

/// `text` cut where the first of the request's stop sequences (`stops`: a string or a list)
/// begins, as every API does, and the sequence it stopped at.
pub fn cut_at_stop(text: &str, stops: Option<&Value>) -> (String, Option<String>) {
    let list: Vec<&str> = match stops {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    list.iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s).map(|at| (at, *s)))
        .min()
        .map_or((text.to_owned(), None), |(at, s)| {
            (text[..at].to_owned(), Some(s.to_owned()))
        })
}

/// Whether a request offers tools and does not already end with a tool result: the fake then
/// calls the first tool, so that tests can send the result back.
pub fn wants_tool_call(body: &Value) -> bool {
    let has_tools = body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let last_is_result = |msgs: Option<&Vec<Value>>| {
        msgs.and_then(|m| m.last()).is_some_and(|m| {
            m.get("role").and_then(Value::as_str) == Some("tool")
                || m.get("content").and_then(Value::as_array).is_some_and(|c| {
                    c.iter()
                        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                })
                || m.get("parts")
                    .and_then(Value::as_array)
                    .is_some_and(|p| p.iter().any(|x| x.get("functionResponse").is_some()))
        })
    };
    has_tools
        && !last_is_result(body.get("messages").and_then(Value::as_array))
        && !last_is_result(body.get("contents").and_then(Value::as_array))
}

/// The tools the fake calls: the first one, or, when the request asks for calls "in parallel",
/// every tool offered (`list` points at the tools, `name` at a tool's name within one).
pub fn tools_to_call(body: &Value, list: &str, name: &str) -> Vec<String> {
    let names: Vec<String> = body
        .pointer(list)
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.pointer(name).and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return vec!["f".to_owned()];
    }
    if body.to_string().contains("in parallel") {
        names
    } else {
        names.into_iter().take(1).collect()
    }
}

// === Anthropic ===

fn anthropic_error(status: u16, kind: &str, message: &str) -> Response<FakeBody> {
    json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}),
    )
}

const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
    "output_config",
];

fn check_anthropic(
    headers: &HeaderMap,
    body: &Value,
    key: Option<&str>,
) -> Result<(), Response<FakeBody>> {
    let bad = |m: &str| Err(anthropic_error(400, "invalid_request_error", m));
    if let Some(k) = key
        && headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(k)
    {
        return Err(anthropic_error(
            401,
            "authentication_error",
            "invalid x-api-key",
        ));
    }
    if headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        != Some("2023-06-01")
    {
        return bad("anthropic-version: header is required");
    }
    let Some(obj) = body.as_object() else {
        return bad("body must be an object");
    };
    for k in obj.keys() {
        if !ANTHROPIC_FIELDS.contains(&k.as_str()) {
            return bad(&format!("{k}: Extra inputs are not permitted"));
        }
    }
    if !obj.get("model").is_some_and(Value::is_string) {
        return bad("model: Field required");
    }
    // 0 is allowed: Anthropic documents it for warming the prompt cache without an answer.
    if obj.get("max_tokens").and_then(Value::as_u64).is_none() {
        return bad("max_tokens: Field required");
    }
    if obj
        .get("temperature")
        .and_then(Value::as_f64)
        .is_some_and(|t| !(0.0..=1.0).contains(&t))
    {
        return bad("temperature: Input should be less than or equal to 1");
    }
    if let Some(s) = obj.get("system")
        && !s.is_string()
        && !s.is_array()
    {
        return bad("system: Input should be a valid string or list");
    }
    let Some(msgs) = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return bad("messages: at least one message is required");
    };
    let mut previous: Option<&str> = None;
    let mut pending_tool_uses: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return bad(&format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        if previous == Some(role) {
            return bad("messages: roles must alternate between \"user\" and \"assistant\"");
        }
        previous = Some(role);
        let blocks: Vec<Value> = match m.get("content") {
            Some(Value::String(s)) if s.is_empty() => {
                return bad("messages: text content blocks must be non-empty");
            }
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(b)) if !b.is_empty() => b.clone(),
            _ => {
                return bad(&format!(
                    "messages.{i}.content: content must be a non-empty string or list"
                ));
            }
        };
        // Results for the previous turn's tool calls come first.
        if !pending_tool_uses.is_empty() {
            let results: Vec<&str> = blocks
                .iter()
                .take_while(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                .filter_map(|b| b.get("tool_use_id").and_then(Value::as_str))
                .collect();
            if pending_tool_uses
                .iter()
                .any(|id| !results.contains(&id.as_str()))
            {
                return bad(
                    "messages: `tool_use` ids were found without `tool_result` blocks immediately after",
                );
            }
            pending_tool_uses.clear();
        }
        for b in &blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text")
                    if b.get("text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty() =>
                {
                    return bad("messages: text content blocks must be non-empty");
                }
                Some("text") => {}
                Some("image") => {
                    let t = b.pointer("/source/type").and_then(Value::as_str);
                    if t != Some("base64") && t != Some("url") {
                        return bad("messages: image source type must be base64 or url");
                    }
                }
                Some("tool_use") if role == "assistant" => {
                    if !b.get("input").is_some_and(Value::is_object) {
                        return bad("messages: tool_use.input must be an object");
                    }
                    pending_tool_uses
                        .push(b.get("id").and_then(Value::as_str).unwrap_or("").to_owned());
                }
                Some("tool_result") if role == "user" => {}
                other => {
                    return bad(&format!(
                        "messages: unexpected content block {other:?} for role {role}"
                    ));
                }
            }
        }
    }
    for t in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !t.get("name").is_some_and(Value::is_string)
            || !t.get("input_schema").is_some_and(Value::is_object)
        {
            return bad("tools: each tool needs name and input_schema");
        }
    }
    Ok(())
}

fn anthropic_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}")
}

/// The fake `POST /v1/messages`.
pub fn anthropic(
    headers: &HeaderMap,
    body: &Value,
    script: &Script,
    key: Option<&str>,
) -> Response<FakeBody> {
    if let Err(r) = check_anthropic(headers, body, key) {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("");
    let stream = body.get("stream") == Some(&Value::Bool(true));
    let text = match script {
        Script::Ok { text } => text.clone(),
        Script::Status { status, body, .. } => return json_response(*status, body),
        Script::Sse { events, delay, .. } => return sse(events.clone(), *delay, false),
        _ => return anthropic_error(500, "api_error", "unscripted"),
    };
    let tool = wants_tool_call(body).then(|| tools_to_call(body, "/tools", "/name"));
    let (text, stopped_at) = cut_at_stop(&text, body.get("stop_sequences"));
    let (end, stop_sequence) = match &stopped_at {
        Some(s) => ("stop_sequence", json!(s)),
        None => ("end_turn", Value::Null),
    };
    if !stream {
        let (content, stop) = match &tool {
            Some(names) => {
                let mut blocks = vec![json!({"type": "text", "text": "I'll check."})];
                for (i, name) in names.iter().enumerate() {
                    blocks.push(json!({"type": "tool_use", "id": format!("toolu_fake_{}", i + 1), "name": name, "input": {"city": "Paris"}}));
                }
                (Value::Array(blocks), "tool_use")
            }
            None => (json!([{"type": "text", "text": text}]), end),
        };
        return json_response(
            200,
            &json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": content,
                    "stop_reason": stop, "stop_sequence": if tool.is_some() { Value::Null } else { stop_sequence },
                    "usage": {"input_tokens": 21, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}}),
        );
    }
    let mut ev = vec![anthropic_event(
        "message_start",
        &json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 21, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}}}),
    )];
    ev.push(anthropic_event("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    ev.push(anthropic_event("ping", &json!({"type": "ping"})));
    let words: Vec<String> = match &tool {
        Some(_) => vec!["I'll check.".to_owned()],
        None => text.split_inclusive(' ').map(str::to_owned).collect(),
    };
    for w in &words {
        ev.push(anthropic_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        ));
    }
    ev.push(anthropic_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    for (i, name) in tool.iter().flatten().enumerate() {
        let index = i + 1;
        ev.push(anthropic_event("content_block_start", &json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": format!("toolu_fake_{index}"), "name": name, "input": {}}})));
        for part in ["", "{\"city\": ", "\"Paris\"}"] {
            ev.push(anthropic_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        ev.push(anthropic_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    let (stop, stop_sequence) = if tool.is_some() {
        ("tool_use", Value::Null)
    } else {
        (end, stop_sequence)
    };
    ev.push(anthropic_event("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": stop_sequence}, "usage": {"output_tokens": 7}})));
    ev.push(anthropic_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    sse(ev, Duration::from_millis(2), false)
}

/// The fake `POST /v1/messages/count_tokens`.
pub fn anthropic_count_tokens(
    headers: &HeaderMap,
    body: &Value,
    key: Option<&str>,
) -> Response<FakeBody> {
    if let Some(k) = key
        && headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(k)
    {
        return anthropic_error(401, "authentication_error", "invalid x-api-key");
    }
    for k in body.as_object().into_iter().flat_map(|o| o.keys()) {
        if ![
            "model",
            "messages",
            "system",
            "tools",
            "tool_choice",
            "thinking",
        ]
        .contains(&k.as_str())
        {
            return anthropic_error(
                400,
                "invalid_request_error",
                &format!("{k}: Extra inputs are not permitted"),
            );
        }
    }
    json_response(200, &json!({"input_tokens": 42}))
}

/// A vector for a text: its length and first byte, so tests can tell inputs apart.
fn vector_of(text: &str) -> Vec<f32> {
    vec![
        text.len() as f32,
        f32::from(text.bytes().next().unwrap_or(0)),
        0.5,
        -0.25,
    ]
}

/// The fake `POST /v1/embeddings` (OpenAI's format).
pub fn openai_embeddings(
    headers: &HeaderMap,
    body: &Value,
    key: Option<&str>,
) -> Response<FakeBody> {
    if let Some(k) = key
        && headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {k}"))
    {
        return json_response(
            401,
            &json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        );
    }
    let texts: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect(),
        _ => {
            return json_response(
                400,
                &json!({"error": {"message": "'input' is required", "type": "invalid_request_error", "param": "input", "code": null}}),
            );
        }
    };
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector_of(t)}))
        .collect();
    json_response(
        200,
        &json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 5, "total_tokens": 5}}),
    )
}

// === Gemini ===

fn gemini_error(status: u16, code: &str, message: &str) -> Response<FakeBody> {
    json_response(
        status,
        &json!({"error": {"code": status, "message": message, "status": code}}),
    )
}

const GEMINI_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
];
const GENERATION_FIELDS: &[&str] = &[
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "responseMimeType",
    "responseJsonSchema",
    "responseSchema",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "thinkingConfig",
];

fn check_gemini(
    headers: &HeaderMap,
    body: &Value,
    key: Option<&str>,
) -> Result<(), Response<FakeBody>> {
    let bad = |m: &str| Err(gemini_error(400, "INVALID_ARGUMENT", m));
    if let Some(k) = key
        && headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(k)
    {
        return Err(gemini_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
        ));
    }
    let Some(obj) = body.as_object() else {
        return bad("Invalid JSON payload received.");
    };
    for k in obj.keys() {
        if !GEMINI_FIELDS.contains(&k.as_str()) {
            return bad(&format!(
                "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
            ));
        }
    }
    for k in obj
        .get("generationConfig")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|g| g.keys())
    {
        if !GENERATION_FIELDS.contains(&k.as_str()) {
            return bad(&format!(
                "Invalid JSON payload received. Unknown name \"{k}\" at 'generation_config'"
            ));
        }
    }
    let Some(contents) = obj
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    else {
        return bad("* GenerateContentRequest.contents: contents is not specified");
    };
    for c in contents {
        let role = c.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "model" {
            return bad("Please use a valid role: user, model.");
        }
        let Some(parts) = c
            .get("parts")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
        else {
            return bad(
                "* GenerateContentRequest.contents.parts: contents.parts must not be empty.",
            );
        };
        for p in parts {
            let known = [
                "text",
                "inlineData",
                "functionCall",
                "functionResponse",
                "fileData",
            ];
            if !known.iter().any(|k| p.get(*k).is_some()) {
                return bad(
                    "* GenerateContentRequest.contents.parts.data: required oneof field 'data' must have one initialized field",
                );
            }
            if let Some(fr) = p.get("functionResponse")
                && (!fr.get("name").is_some_and(Value::is_string)
                    || !fr.get("response").is_some_and(Value::is_object))
            {
                return bad("functionResponse needs a name and an object response");
            }
        }
    }
    Ok(())
}

/// The fake `POST /v1beta/models/{model}:generateContent` (and `:streamGenerateContent`).
pub fn gemini(
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Value,
    script: &Script,
    key: Option<&str>,
) -> Response<FakeBody> {
    let Some((model, method)) = path.trim_start_matches("/v1beta/models/").split_once(':') else {
        return gemini_error(404, "NOT_FOUND", "method not found");
    };
    if method == "batchEmbedContents" {
        if let Some(k) = key
            && headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(k)
        {
            return gemini_error(400, "INVALID_ARGUMENT", "API key not valid.");
        }
        let Some(reqs) = body.get("requests").and_then(Value::as_array) else {
            return gemini_error(400, "INVALID_ARGUMENT", "requests is required");
        };
        let embeddings: Vec<Value> = reqs
            .iter()
            .map(|r| json!({"values": vector_of(r.pointer("/content/parts/0/text").and_then(Value::as_str).unwrap_or(""))}))
            .collect();
        return json_response(200, &json!({"embeddings": embeddings}));
    }
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" if query == Some("alt=sse") => true,
        _ => return gemini_error(404, "NOT_FOUND", "method not found"),
    };
    if let Err(r) = check_gemini(headers, body, key) {
        return r;
    }
    let text = match script {
        Script::Ok { text } => text.clone(),
        Script::Status { status, body, .. } => return json_response(*status, body),
        Script::Sse { events, delay, .. } => return sse(events.clone(), *delay, false),
        _ => return gemini_error(500, "INTERNAL", "unscripted"),
    };
    let tool = wants_tool_call(body)
        .then(|| tools_to_call(body, "/tools/0/functionDeclarations", "/name"));
    let usage = json!({"promptTokenCount": 17, "candidatesTokenCount": 6, "thoughtsTokenCount": 2, "totalTokenCount": 25});
    // Gemini answers `candidateCount` candidates (at most 8), each with its `index`; candidate
    // i says one more word than candidate i - 1, so they end in different events of a stream.
    let count = match body.pointer("/generationConfig/candidateCount") {
        None => 1,
        Some(c) => match c.as_u64().filter(|c| (1..=8).contains(c)) {
            Some(c) => c as usize,
            None => {
                return gemini_error(
                    400,
                    "INVALID_ARGUMENT",
                    "* GenerateContentRequest.generation_config.candidate_count: must be between 1 and 8",
                );
            }
        },
    };
    let stops = body.pointer("/generationConfig/stopSequences");
    let texts: Vec<String> = (0..count)
        .map(|i| cut_at_stop(&super::nth_text(&text, i), stops).0)
        .collect();
    let response = |cands: Vec<(usize, Value, Option<&str>)>, usage: Option<&Value>| {
        let cands: Vec<Value> = cands
            .into_iter()
            .map(|(i, parts, finish)| {
                let mut c = json!({"content": {"role": "model", "parts": parts}, "index": i});
                if let Some(f) = finish {
                    c["finishReason"] = json!(f);
                }
                c
            })
            .collect();
        let mut r = json!({"candidates": cands, "modelVersion": model, "responseId": "fakeresp"});
        if let Some(u) = usage {
            r["usageMetadata"] = u.clone();
        }
        r
    };
    let call = |names: &Vec<String>| {
        Value::Array(
            names
                .iter()
                .map(|name| json!({"functionCall": {"name": name, "args": {"city": "Paris"}}}))
                .collect(),
        )
    };
    if !stream {
        let cands = (0..count)
            .map(|i| {
                let parts = match &tool {
                    Some(name) => call(name),
                    None => json!([{"text": texts[i]}]),
                };
                (i, parts, Some("STOP"))
            })
            .collect();
        return json_response(200, &response(cands, Some(&usage)));
    }
    let mut ev = Vec::new();
    match &tool {
        Some(name) => ev.push(
            response(
                (0..count).map(|i| (i, call(name), Some("STOP"))).collect(),
                Some(&usage),
            )
            .to_string(),
        ),
        None => {
            let words: Vec<Vec<&str>> = texts
                .iter()
                .map(|t| t.split_inclusive(' ').collect())
                .collect();
            let longest = words.iter().map(Vec::len).max().unwrap_or(0);
            for at in 0..longest {
                let cands = words
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| {
                        let word = w.get(at)?;
                        let last = at + 1 == w.len();
                        Some((i, json!([{"text": word}]), last.then_some("STOP")))
                    })
                    .collect();
                ev.push(response(cands, Some(&usage)).to_string());
            }
        }
    }
    sse(ev, Duration::from_millis(2), false)
}
