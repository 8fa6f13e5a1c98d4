//! Translation table tests (fixtures from Anthropic's documentation and SDK), compared as
//! parsed JSON, and stream translation under arbitrary chunking.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::adapters::{Flow, run_stream};
use crate::api::Front;
use crate::config::Origin;
use crate::config::load::{Overrides, load};
use crate::exchange::chat::RequestLimits;

const STREAM: &str = include_str!("testdata/tool_use_stream.txt");

fn deployment() -> Arc<Deployment> {
    let env: HashMap<String, String> = [(
        "ANTHROPIC_API_KEY".to_owned(),
        "sk-ant-canary-0123456789".to_owned(),
    )]
    .into();
    let loaded = load(&Origin::Embedded, &Overrides::default(), &env).unwrap();
    loaded
        .config
        .deployments
        .iter()
        .find(|d| d.name == "anthropic/claude-sonnet-4-5")
        .unwrap()
        .clone()
}

fn request(v: Value) -> ChatRequest {
    ChatRequest::parse(v.to_string().as_bytes(), RequestLimits::default()).unwrap()
}

fn body(req: &ChatRequest) -> Value {
    let up = Anthropic.build_request(req, &deployment()).unwrap();
    serde_json::from_slice(&up.body).unwrap()
}

#[test]
fn headers_url_and_a_plain_request() {
    let d = deployment();
    let req = request(json!({"model": "claude-sonnet-4-5", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Weather in Paris?"}],
        "stop": "END", "temperature": 0.5, "top_p": 0.9, "seed": 3, "logit_bias": {"1": 2}}));
    let up = Anthropic.build_request(&req, &d).unwrap();
    assert_eq!(up.url.to_string(), "https://api.anthropic.com/v1/messages");
    let h: HashMap<String, String> = up
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(h["x-api-key"], "sk-ant-canary-0123456789");
    assert_eq!(h["anthropic-version"], "2023-06-01");
    assert!(!h.contains_key("authorization"));
    let b: Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(
        b,
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 64000,
            "system": "You are terse.\n\nAnswer in French.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
            "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9
        })
    );
}

#[test]
fn a_tool_round_trip_with_merged_results_and_no_empty_text() {
    let req = request(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "toolu_02", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "21C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "18C"},
        {"role": "user", "content": "Which is warmer?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required", "parallel_tool_calls": false}),
    );
    let b = body(&req);
    assert_eq!(
        b["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "21C, sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "18C"},
                {"type": "text", "text": "Which is warmer?"}]}
        ])
    );
    assert_eq!(
        b["tools"],
        json!([{"name": "get_weather", "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
    assert_eq!(
        b["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(b["max_tokens"], 1024);
}

#[test]
fn images_and_choices_map() {
    let req = request(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    );
    let b = body(&req);
    assert_eq!(
        b["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}})
    );
    assert_eq!(
        b["messages"][0]["content"][2],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}})
    );
    assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "f"}));
    assert_eq!(
        b["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
}

#[test]
fn what_cannot_be_translated_is_refused() {
    let d = deployment();
    for v in [
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 1.5}),
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}),
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
    ] {
        assert!(
            matches!(
                Anthropic.build_request(&request(v.clone()), &d),
                Err(AdapterError::Unsupported(_))
            ),
            "{v}"
        );
    }
}

#[test]
fn a_whole_answer_with_a_tool_call_and_cache_usage() {
    let d = deployment();
    let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
    let answer = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5",
        "content":[{"type":"text","text":"I'll check."},{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"city":"Paris"}}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":377,"output_tokens":65,"cache_creation_input_tokens":100,"cache_read_input_tokens":20}}"#;
    let done = Anthropic
        .parse_response(Bytes::from_static(answer), &req, &d)
        .unwrap();
    let openai: Value =
        serde_json::from_slice(&Front::OpenAi.whole(done.body, "answer-model").unwrap()).unwrap();
    assert_eq!(
        openai["choices"][0],
        json!({"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "I'll check.", "refusal": null,
            "tool_calls": [{"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}})
    );
    assert_eq!(openai["usage"]["prompt_tokens"], 497);
    assert_eq!(openai["usage"]["completion_tokens"], 65);
    assert_eq!(
        openai["usage"]["prompt_tokens_details"]["cached_tokens"],
        20
    );
    let u = done.usage.unwrap();
    assert_eq!((u.cached_tokens, u.cache_write_tokens), (20, 100));
    for (stop, want) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
    ] {
        let a = format!(
            r#"{{"id":"m","model":"x","content":[{{"type":"text","text":"a"}}],"stop_reason":"{stop}","usage":{{"input_tokens":1,"output_tokens":1}}}}"#
        );
        let done = Anthropic.parse_response(Bytes::from(a), &req, &d).unwrap();
        let v: Value =
            serde_json::from_slice(&Front::OpenAi.whole(done.body, "answer-model").unwrap())
                .unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], want, "{stop}");
    }
}

#[test]
fn errors_keep_their_status_and_type_and_lose_secrets() {
    let d = deployment();
    let f = Anthropic.parse_error(StatusCode::from_u16(529).unwrap(), br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#, &d);
    assert_eq!(f.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(f.body.message, "Overloaded");
    let f = Anthropic.parse_error(StatusCode::BAD_REQUEST, br#"{"type":"error","error":{"type":"invalid_request_error","message":"bad key sk-ant-canary-0123456789"}}"#, &d);
    assert_eq!(f.body.kind, crate::exchange::ErrorType::InvalidRequestError);
    assert!(!f.body.message.contains("canary"));
    let f = Anthropic.parse_error(
        StatusCode::TOO_MANY_REQUESTS,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
        &d,
    );
    assert_eq!(f.body.kind, crate::exchange::ErrorType::RateLimitError);
}

fn openai_events(out: &str) -> Vec<Value> {
    out.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn the_sdk_fixture_stream_becomes_openai_chunks() {
    let d = deployment();
    let req = request(
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}),
    );
    let (out, last) = run_stream(&Anthropic, &req, &d, Front::OpenAi, &[STREAM.as_bytes()]);
    assert!(matches!(last, Ok(Flow::Done)), "{last:?}");
    assert!(out.ends_with("data: [DONE]\n\n"));
    let ev = openai_events(&out);
    let deltas: Vec<&Value> = ev
        .iter()
        .filter_map(|e| e["choices"].get(0).map(|c| &c["delta"]))
        .collect();
    assert_eq!(deltas[0], &json!({"role": "assistant", "content": ""}));
    assert_eq!(
        deltas[1],
        &json!({"content": "I'll check the current weather in Paris for you."})
    );
    // The tool call is OpenAI's index 0, though Anthropic's block index is 1.
    assert_eq!(
        deltas[2],
        &json!({"tool_calls": [{"index": 0, "id": "toolu_01NR", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]})
    );
    let args: String = deltas[3..5]
        .iter()
        .map(|d| {
            d["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(args, "{\"location\": \"Paris\"}");
    assert!(
        deltas[3..5]
            .iter()
            .all(|d| d["tool_calls"][0]["index"] == 0 && d["tool_calls"][0].get("id").is_none())
    );
    let finish: Vec<&Value> = ev
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(
        finish,
        [&json!("tool_calls")],
        "only the last chunk carries a finish reason"
    );
    let usage = &ev.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 387);
    assert_eq!(usage["completion_tokens"], 65);
    assert!(
        ev.iter()
            // The model the answer names is the gateway's (the catalog's), not the snapshot the
            // upstream reported.
            .all(|e| e["id"] == "chatcmpl-msg_019Q" && e["model"] == d.upstream_model.as_str())
    );
    assert!(!out.contains("ping"));
}

#[test]
fn an_error_event_before_content_and_after() {
    let d = deployment();
    let req = request(
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    );
    let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let (out, last) = run_stream(&Anthropic, &req, &d, Front::OpenAi, &[stream.as_bytes()]);
    let fault = last.unwrap_err();
    assert_eq!(fault.body.code.as_deref(), Some("upstream_overloaded"));
    assert!(!out.contains("[DONE]"));
    assert!(out.contains("\"error\""));
}

/// The stream with every `"created":N` made equal.
fn without_created(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\"created\":") {
        out.push_str(&rest[..i + 10]);
        rest = rest[i + 10..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('0');
    }
    out.push_str(rest);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// However the upstream's bytes are cut, the client reads the same events.
    #[test]
    fn any_chunking_gives_the_same_client_stream(cuts in proptest::collection::btree_set(0..STREAM.len(), 0..40)) {
        let d = deployment();
        let req = request(json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}));
        let whole = run_stream(&Anthropic, &req, &d, Front::OpenAi, &[STREAM.as_bytes()]).0;
        let bytes = STREAM.as_bytes();
        let mut chunks = Vec::new();
        let mut from = 0;
        for c in cuts {
            chunks.push(&bytes[from..c]);
            from = c;
        }
        chunks.push(&bytes[from..]);
        let (out, _) = run_stream(&Anthropic, &req, &d, Front::OpenAi, &chunks);
        // Byte-identical but for the clock (`created`).
        prop_assert_eq!(without_created(&out), without_created(&whole));
    }
}
