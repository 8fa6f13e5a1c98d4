//! A fake of OpenAI's own Responses API (`POST /v1/responses`), as strict as the real one about
//! what it is sent (the key, JSON, `model`, `input` items of known types, no `id` on an input
//! message, no unknown parameter, no `previous_response_id` it never issued) and answering in
//! its formats: a response object with a reasoning item, or the typed event stream with
//! sequence numbers. Offered tools and no tool output yet, it calls the first function.

use std::time::Duration;

use http::{HeaderMap, Response};
use serde_json::{Value, json};

use super::{FakeBody, Script, json_response};

/// Top-level parameters of `POST /v1/responses` (OpenAI's `CreateResponse`).
const PARAMETERS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "max_tool_calls",
    "temperature",
    "top_p",
    "top_logprobs",
    "text",
    "reasoning",
    "parallel_tool_calls",
    "metadata",
    "user",
    "safety_identifier",
    "store",
    "previous_response_id",
    "stream",
    "stream_options",
    "background",
    "conversation",
    "prompt",
    "include",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "truncation",
];

const ITEM_TYPES: &[&str] = &[
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "item_reference",
    "web_search_call",
    "file_search_call",
    "computer_call",
    "computer_call_output",
];

fn error(status: u16, message: &str, param: Option<&str>) -> Response<FakeBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}}),
    )
}

fn check(headers: &HeaderMap, body: &Value, key: Option<&str>) -> Result<(), Response<FakeBody>> {
    if let Some(k) = key
        && headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(format!("Bearer {k}").as_str())
    {
        return Err(error(401, "Incorrect API key provided", None));
    }
    let Some(obj) = body.as_object() else {
        return Err(error(400, "body must be a JSON object", None));
    };
    if let Some(k) = obj.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
        return Err(error(400, &format!("Unknown parameter: '{k}'."), Some(k)));
    }
    if !obj.get("model").is_some_and(Value::is_string) {
        return Err(error(
            400,
            "Missing required parameter: 'model'.",
            Some("model"),
        ));
    }
    if let Some(id) = obj.get("previous_response_id").and_then(Value::as_str) {
        return Err(error(
            400,
            &format!("Previous response with id '{id}' not found."),
            Some("previous_response_id"),
        ));
    }
    let items = match obj.get("input") {
        Some(Value::String(_)) => return Ok(()),
        Some(Value::Array(items)) => items,
        _ => {
            return Err(error(
                400,
                "Missing required parameter: 'input'.",
                Some("input"),
            ));
        }
    };
    for (i, item) in items.iter().enumerate() {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        if !ITEM_TYPES.contains(&kind) {
            return Err(error(
                400,
                &format!("Invalid value: '{kind}'."),
                Some(&format!("input[{i}].type")),
            ));
        }
        let role = item.get("role").and_then(Value::as_str).unwrap_or("");
        if kind == "message" && role != "assistant" && item.get("id").is_some() {
            return Err(error(
                400,
                &format!("Unknown parameter: 'input[{i}].id'."),
                Some(&format!("input[{i}].id")),
            ));
        }
        if kind == "reasoning"
            && !(item
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.starts_with("rs_"))
                && item.get("summary").is_some_and(Value::is_array))
        {
            return Err(error(
                400,
                "a reasoning item needs its 'id' and 'summary'",
                Some(&format!("input[{i}]")),
            ));
        }
        for (j, part) in item
            .get("content")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ok = match part["type"].as_str().unwrap_or("") {
                "input_text" | "output_text" => part["text"].is_string(),
                "refusal" => part["refusal"].is_string(),
                "input_image" => part["image_url"].is_string() || part["file_id"].is_string(),
                "input_file" => part["file_data"].is_string() || part["file_id"].is_string(),
                _ => false,
            };
            if !ok {
                let param = format!("input[{i}].content[{j}]");
                return Err(error(400, "Invalid content part.", Some(&param)));
            }
        }
    }
    if let Some(f) = obj.get("text").and_then(|t| t.get("format")) {
        let ok = match f["type"].as_str().unwrap_or("") {
            "text" | "json_object" => true,
            "json_schema" => f["name"].is_string() && f["schema"].is_object(),
            _ => false,
        };
        if !ok {
            return Err(error(400, "Invalid 'text.format'.", Some("text.format")));
        }
    }
    Ok(())
}

fn usage() -> Value {
    json!({"input_tokens": 30, "input_tokens_details": {"cached_tokens": 4},
           "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 42})
}

fn response(model: &str, status: &str, output: &[Value], usage: Value) -> Value {
    json!({"id": "resp_fake", "object": "response", "created_at": 1_700_000_000, "status": status,
           "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
           "model": model, "output": output, "parallel_tool_calls": true, "previous_response_id": null,
           "reasoning": {"effort": "low", "summary": null}, "store": true, "temperature": 1.0,
           "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
           "truncation": "disabled", "usage": usage, "user": null, "metadata": {}})
}

/// The functions the fake calls: with function tools offered and no tool output at the end of
/// the input, the first one, or every one when the request asks for calls "in parallel".
fn calls_tools(body: &Value) -> Vec<String> {
    let names: Vec<String> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter(|t| t["type"] == "function")
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let last = body
        .get("input")
        .and_then(Value::as_array)
        .and_then(|i| i.last());
    let answered =
        last.is_some_and(|l| l.get("type").and_then(Value::as_str) == Some("function_call_output"));
    if answered {
        Vec::new()
    } else if body.to_string().contains("in parallel") {
        names
    } else {
        names.into_iter().take(1).collect()
    }
}

/// The fake `POST /v1/responses`.
pub fn openai_responses(
    headers: &HeaderMap,
    body: &Value,
    script: &Script,
    key: Option<&str>,
) -> Response<FakeBody> {
    if let Script::Status { status, body, .. } = script {
        return json_response(*status, body);
    }
    if let Err(r) = check(headers, body, key) {
        return r;
    }
    let text = match script {
        Script::Ok { text } => text.clone(),
        // Scripted events, as a test wants them (a stream cut in the middle).
        Script::Sse {
            events,
            delay,
            done,
        } => return super::sse(events.clone(), *delay, *done),
        _ => return error(500, "unscripted", None),
    };
    let model = body["model"].as_str().unwrap_or("");
    let reasoning = json!({"type": "reasoning", "id": "rs_fake", "summary": [], "encrypted_content": "gAAAA-fake"});
    let calls = calls_tools(body);
    let mut output = vec![reasoning];
    if calls.is_empty() {
        output.push(
            json!({"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}),
        );
    }
    for (i, name) in calls.iter().enumerate() {
        output.push(json!({"type": "function_call", "id": format!("fc_fake_{i}"), "call_id": format!("call_fake_{}", i + 1),
            "name": name, "arguments": "{\"city\":\"Paris\"}", "status": "completed"}));
    }
    if body.get("stream") != Some(&Value::Bool(true)) {
        return json_response(200, &response(model, "completed", &output, usage()));
    }
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut ev = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        events.push((kind.to_owned(), data));
    };
    let pending = response(model, "in_progress", &[], Value::Null);
    ev("response.created", json!({"response": pending}));
    ev("response.in_progress", json!({"response": pending}));
    for (index, item) in output.iter().enumerate() {
        let mut added = item.clone();
        match item["type"].as_str().unwrap_or("") {
            "message" => {
                added["status"] = json!("in_progress");
                added["content"] = json!([]);
                ev(
                    "response.output_item.added",
                    json!({"output_index": index, "item": added}),
                );
                let at = json!({"item_id": item["id"], "output_index": index, "content_index": 0});
                let part = |t: &str| json!({"type": "output_text", "text": t, "annotations": [], "logprobs": []});
                let with = |extra: Value| {
                    let mut d = at.clone();
                    for (k, v) in extra.as_object().unwrap() {
                        d[k] = v.clone();
                    }
                    d
                };
                ev(
                    "response.content_part.added",
                    with(json!({"part": part("")})),
                );
                for w in text.split_inclusive(' ') {
                    ev(
                        "response.output_text.delta",
                        with(json!({"delta": w, "logprobs": []})),
                    );
                }
                ev(
                    "response.output_text.done",
                    with(json!({"text": text, "logprobs": []})),
                );
                ev(
                    "response.content_part.done",
                    with(json!({"part": part(&text)})),
                );
            }
            "function_call" => {
                added["status"] = json!("in_progress");
                added["arguments"] = json!("");
                ev(
                    "response.output_item.added",
                    json!({"output_index": index, "item": added}),
                );
                for d in ["{\"city\":", "\"Paris\"}"] {
                    ev(
                        "response.function_call_arguments.delta",
                        json!({"item_id": item["id"], "output_index": index, "delta": d}),
                    );
                }
                ev(
                    "response.function_call_arguments.done",
                    json!({"item_id": item["id"], "output_index": index, "arguments": item["arguments"]}),
                );
            }
            _ => ev(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            ),
        }
        ev(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }
    ev(
        "response.completed",
        json!({"response": response(model, "completed", &output, usage())}),
    );
    let frames = events
        .into_iter()
        .enumerate()
        .map(|(i, (kind, mut data))| {
            data["sequence_number"] = json!(i);
            format!("event: {kind}\ndata: {data}")
        })
        .collect();
    // No `[DONE]`: the Responses API's stream ends after its last event.
    super::sse(frames, Duration::from_millis(1), false)
}
