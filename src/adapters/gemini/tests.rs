//! Translation table tests (examples from Google's documentation), compared as parsed JSON,
//! and stream translation under arbitrary chunking.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::adapters::{Flow, run_stream};
use crate::api::Front;
use crate::config::Origin;
use crate::config::load::{Overrides, load};
use crate::exchange::answer::FinishReason;
use crate::exchange::chat::RequestLimits;

const STREAM: &str = include_str!("testdata/stream.txt");

fn deployment() -> Arc<Deployment> {
    let env: HashMap<String, String> = [(
        "GEMINI_API_KEY".to_owned(),
        "AIzaCanary0123456789".to_owned(),
    )]
    .into();
    let loaded = load(&Origin::Embedded, &Overrides::default(), &env).unwrap();
    loaded
        .config
        .deployments
        .iter()
        .find(|d| d.name == "gemini/gemini-2.5-flash")
        .unwrap()
        .clone()
}

fn request(v: Value) -> ChatRequest {
    ChatRequest::parse(v.to_string().as_bytes(), RequestLimits::default()).unwrap()
}

#[test]
fn the_documented_request_shape() {
    let d = deployment();
    let req = request(json!({"model": "gemini-2.5-flash", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21C, sunny"},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}}],
        "tool_choice": "auto", "temperature": 0.7, "top_p": 0.95, "top_k": 40, "max_tokens": 512, "stop": ["\n\n"], "n": 1,
        "response_format": {"type": "json_object"}}));
    let up = Gemini.build_request(&req, &d).unwrap();
    assert_eq!(
        up.url.to_string(),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    );
    let key = up
        .headers
        .iter()
        .find(|(n, _)| n == "x-goog-api-key")
        .unwrap();
    assert_eq!(key.1, "AIzaCanary0123456789");
    let b: Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(
        b,
        json!({
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "21C, sunny"}}},
                    {"text": "And this?"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Current weather",
                "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}]}],
            "generationConfig": {"temperature": 0.7, "topP": 0.95, "topK": 40, "maxOutputTokens": 512,
                "stopSequences": ["\n\n"], "candidateCount": 1, "responseMimeType": "application/json"}
        })
    );
    let mut s = request(
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    );
    let up = Gemini.build_request(&s, &d).unwrap();
    assert!(
        up.url
            .to_string()
            .ends_with(":streamGenerateContent?alt=sse")
    );
    let b: Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(
        b["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}})
    );
    s.stream = false;
    let bad = request(
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]}),
    );
    assert!(matches!(
        Gemini.build_request(&bad, &d),
        Err(AdapterError::Unsupported(_))
    ));
    let orphan = request(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "y"}]}),
    );
    assert!(Gemini.build_request(&orphan, &d).is_err());
    // More candidates than the API gives: refused here, naming the parameter.
    let many =
        request(json!({"model": "m", "n": 9, "messages": [{"role": "user", "content": "x"}]}));
    match Gemini.build_request(&many, &d) {
        Err(AdapterError::Unsupported(m)) => assert!(m.contains("'n'"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let eight =
        request(json!({"model": "m", "n": 8, "messages": [{"role": "user", "content": "x"}]}));
    assert!(Gemini.build_request(&eight, &d).is_ok());
}

#[test]
fn the_documented_answer_and_finish_reasons() {
    let d = deployment();
    let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
    let answer = br#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "It is 21C and sunny."}]},
        "finishReason": "STOP", "index": 0, "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 9, "totalTokenCount": 40, "thoughtsTokenCount": 19, "cachedContentTokenCount": 4},
        "modelVersion": "gemini-2.5-flash", "responseId": "abc"}"#;
    let done = Gemini
        .parse_response(Bytes::from_static(answer), &req, &d)
        .unwrap();
    let v: Value =
        serde_json::from_slice(&Front::OpenAi.whole(done.body, "gemini-2.5-flash").unwrap())
            .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "It is 21C and sunny."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["model"], "gemini-2.5-flash");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 28, "total_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 19}})
    );

    let call = br#"{"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQB"}]}, "finishReason": "STOP"}], "responseId": "r1"}"#;
    let done = Gemini
        .parse_response(Bytes::from_static(call), &req, &d)
        .unwrap();
    let v: Value =
        serde_json::from_slice(&Front::OpenAi.whole(done.body, "gemini-2.5-flash").unwrap())
            .unwrap();
    assert_eq!(
        v["choices"][0]["finish_reason"], "tool_calls",
        "Gemini says STOP; it is a tool call"
    );
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_r1_0"
    );

    for (reason, want) in [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
    ] {
        let a = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"text": "a"}}]}}, "finishReason": "{reason}"}}]}}"#
        );
        let done = Gemini.parse_response(Bytes::from(a), &req, &d).unwrap();
        let v: Value =
            serde_json::from_slice(&Front::OpenAi.whole(done.body, "gemini-2.5-flash").unwrap())
                .unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], want, "{reason}");
    }
    let malformed = br#"{"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}]}"#;
    assert!(
        Gemini
            .parse_response(Bytes::from_static(malformed), &req, &d)
            .is_err()
    );
    let blocked = br#"{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}"#;
    let done = Gemini
        .parse_response(Bytes::from_static(blocked), &req, &d)
        .unwrap();
    let v: Value =
        serde_json::from_slice(&Front::OpenAi.whole(done.body, "gemini-2.5-flash").unwrap())
            .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn errors_are_read_in_both_shapes() {
    let d = deployment();
    let e = Gemini.parse_error(StatusCode::BAD_REQUEST, br#"{"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"$schema\"", "status": "INVALID_ARGUMENT"}}"#, &d);
    assert!(e.body.message.starts_with("Invalid JSON payload"));
    let e = Gemini.parse_error(StatusCode::TOO_MANY_REQUESTS, br#"[{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}]"#, &d);
    assert_eq!(e.body.message, "Resource exhausted");
    assert_eq!(e.body.kind, crate::exchange::ErrorType::RateLimitError);
    let e = Gemini.parse_error(
        StatusCode::FORBIDDEN,
        br#"{"error": {"message": "API key AIzaCanary0123456789 is invalid"}}"#,
        &d,
    );
    assert!(!e.body.message.contains("Canary"));
}

fn chunks_of(out: &str) -> Vec<Value> {
    out.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn a_stream_with_text_and_a_whole_function_call() {
    let d = deployment();
    let req = request(
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}),
    );
    let (out, last) = run_stream(&Gemini, &req, &d, Front::OpenAi, &[STREAM.as_bytes()]);
    assert!(matches!(last, Ok(Flow::Done)), "{last:?}");
    assert!(out.ends_with("data: [DONE]\n\n"));
    let c = chunks_of(&out);
    let deltas: Vec<&Value> = c
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .map(|c| &c["delta"])
        .collect();
    assert_eq!(deltas[0], &json!({"role": "assistant", "content": ""}));
    assert_eq!(deltas[1], &json!({"content": "It is"}));
    assert_eq!(deltas[2], &json!({"content": " 21C and sunny."}));
    assert_eq!(
        deltas[3],
        &json!({"tool_calls": [{"index": 0, "id": "call_abc123_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]})
    );
    let finishes: Vec<&Value> = c
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("tool_calls")]);
    let usage = &c.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 28, "candidates plus thoughts");
    assert_eq!(usage["prompt_tokens"], 12);
}

#[test]
fn a_stream_cut_before_its_finish_reason_is_incomplete() {
    let d = deployment();
    let req = request(
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    );
    let first = STREAM.split("\n\n").next().unwrap();
    let (out, last) = run_stream(
        &Gemini,
        &req,
        &d,
        Front::OpenAi,
        &[format!("{first}\n\n").as_bytes()],
    );
    assert!(matches!(last, Ok(Flow::More)), "not complete");
    assert!(!out.contains("[DONE]"));
    let bad = "data: {\"candidates\": [{\"finishReason\": \"MALFORMED_FUNCTION_CALL\"}]}\n\n";
    let (_, last) = run_stream(&Gemini, &req, &d, Front::OpenAi, &[bad.as_bytes()]);
    assert!(last.is_err());
    let err = "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded\"}}\n\n";
    let (out, last) = run_stream(&Gemini, &req, &d, Front::OpenAi, &[err.as_bytes()]);
    assert!(last.is_err());
    assert!(out.contains("overloaded"));
}

#[test]
fn a_gemini_stream_for_an_anthropic_client() {
    let d = deployment();
    let req = request(
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    );
    let (out, _) = run_stream(&Gemini, &req, &d, Front::Anthropic, &[STREAM.as_bytes()]);
    let names: Vec<&str> = out
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("event: "))
        .map(|e| e.split('\n').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(out.contains("\"stop_reason\":\"tool_use\""));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_the_same_client_stream(cuts in proptest::collection::btree_set(0..STREAM.len(), 0..40)) {
        let d = deployment();
        let req = request(json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}));
        let strip = |s: &str| s.split("\"created\":").map(|p| p.trim_start_matches(|c: char| c.is_ascii_digit())).collect::<Vec<_>>().join("\"created\":0");
        let whole = strip(&run_stream(&Gemini, &req, &d, Front::OpenAi, &[STREAM.as_bytes()]).0);
        let bytes = STREAM.as_bytes();
        let mut chunks = Vec::new();
        let mut from = 0;
        for c in cuts {
            chunks.push(&bytes[from..c]);
            from = c;
        }
        chunks.push(&bytes[from..]);
        prop_assert_eq!(strip(&run_stream(&Gemini, &req, &d, Front::OpenAi, &chunks).0), whole);
    }
}

#[test]
fn candidates_of_a_stream_are_choices_and_are_held_to_their_count() {
    let d = deployment();
    let req = request(
        json!({"model": "m", "stream": true, "n": 2, "messages": [{"role": "user", "content": "x"}]}),
    );
    let ev = |cands: Value| {
        format!(
            "data: {}\n\n",
            json!({"candidates": cands, "responseId": "r"})
        )
    };
    // Candidate 1 first, then both, then candidate 0 finishes before candidate 1.
    let events = [
        ev(json!([{"index": 1, "content": {"parts": [{"text": "b"}]}}])),
        ev(
            json!([{"index": 0, "content": {"parts": [{"text": "a"}]}}, {"index": 1, "content": {"parts": [{"text": "b"}]}}]),
        ),
        ev(json!([{"index": 0, "content": {"parts": [{"text": "."}]}, "finishReason": "STOP"}])),
        ev(
            json!([{"index": 1, "content": {"parts": [{"text": "!"}]}, "finishReason": "MAX_TOKENS"}]),
        ),
    ];
    let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    let (out, last) = run_stream(&Gemini, &req, &d, Front::OpenAi, &chunks);
    assert!(matches!(last, Ok(Flow::Done)), "{last:?}");
    let mut text = [String::new(), String::new()];
    let mut finish = [Vec::new(), Vec::new()];
    let mut roles = [0, 0];
    for c in chunks_of(&out) {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            assert!(finish[i].is_empty(), "choice {i} after its finish: {out}");
            text[i].push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            roles[i] += usize::from(ch["delta"]["role"] == "assistant");
            if let Some(f) = ch["finish_reason"].as_str() {
                finish[i].push(f.to_owned());
            }
        }
    }
    assert_eq!(text, ["a.", "bb!"]);
    assert_eq!(finish, [vec!["stop"], vec!["length"]]);
    assert_eq!(roles, [1, 1]);

    // Only candidate 0 finished: not complete.
    let (_, last) = run_stream(&Gemini, &req, &d, Front::OpenAi, &chunks[..3]);
    assert!(matches!(last, Ok(Flow::More)), "{last:?}");
    // A candidate the request did not ask for, or text after a candidate's finish reason.
    for bad in [
        ev(json!([{"index": 2, "content": {"parts": [{"text": "c"}]}}])),
        format!(
            "{}{}",
            ev(
                json!([{"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}])
            ),
            ev(json!([{"index": 0, "content": {"parts": [{"text": "late"}]}}]))
        ),
    ] {
        let (out, last) = run_stream(&Gemini, &req, &d, Front::OpenAi, &[bad.as_bytes()]);
        assert!(last.is_err(), "{out}");
        assert!(!out.contains("late"), "{out}");
    }
}

#[test]
fn candidates_of_a_whole_answer_are_choices_in_index_order() {
    let body = br#"{"candidates": [
        {"index": 1, "content": {"parts": [{"text": "second"}]}, "finishReason": "MAX_TOKENS"},
        {"index": 0, "content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP"}],
        "responseId": "r9"}"#;
    let c = super::response::parse(body, "m").unwrap();
    assert_eq!(c.choices.len(), 2);
    assert_eq!(c.choices[0].finish, FinishReason::ToolCalls);
    assert_eq!(c.choices[0].tool_calls[0].id, "call_r9_0");
    assert_eq!(c.choices[1].text.as_deref(), Some("second"));
    assert_eq!(c.choices[1].finish, FinishReason::Length);
    let v: Value = serde_json::from_slice(&crate::api::openai_out::completion_json(&c)).unwrap();
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][1]["message"]["content"], "second");
}
