use super::*;
use serde_json::{Value, json};

fn parse(v: Value) -> Result<ChatRequest, RequestError> {
    ChatRequest::parse(v.to_string().as_bytes(), RequestLimits::default())
}

fn param_of(e: RequestError) -> Option<String> {
    match e {
        RequestError::Invalid { param, .. } => param,
        _ => None,
    }
}

#[test]
fn parses_known_and_keeps_unknown_fields() {
    let req = parse(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}], "cache_control": {"type": "x"}},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ],
        "stream": true,
        "stream_options": {"include_usage": false},
        "temperature": 0.5,
        "top_k": 40,
        "min_p": 0.1,
        "metadata": {"team": "a"}
    }))
    .unwrap();
    assert_eq!(req.model, "m");
    assert_eq!(req.messages.len(), 4);
    assert!(req.stream);
    assert!(!req.wants_stream_usage());
    assert_eq!(req.extra.len(), 2);
    assert_eq!(
        req.metadata.as_ref().unwrap()[0],
        ("team".into(), "a".into())
    );
    assert_eq!(req.messages[1].extra[0].0, "cache_control");
    assert_eq!(req.last_user_text().unwrap(), "hi");
}

#[test]
fn upstream_body_rewrites_model_and_asks_for_usage() {
    let req = parse(json!({
        "model": "alias",
        "messages": [{"role": "user", "content": "hi", "name": "u1"}],
        "stream": true,
        "top_k": 40
    }))
    .unwrap();
    let body: Value = serde_json::from_slice(&req.to_openai_body("upstream-name", true)).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "upstream-name",
            "messages": [{"role": "user", "content": "hi", "name": "u1"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "top_k": 40
        })
    );
    // A backend that rejects stream_options gets none.
    let body: Value = serde_json::from_slice(&req.to_openai_body("u", false)).unwrap();
    assert!(body.get("stream_options").is_none());
}

#[test]
fn the_clients_stream_options_are_kept_with_usage_set_once() {
    let req = parse(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_usage": false, "continuous_usage_stats": true}
    }))
    .unwrap();
    let asked = String::from_utf8(req.to_openai_body("u", true).to_vec()).unwrap();
    assert_eq!(asked.matches("include_usage").count(), 1, "{asked}");
    let body: Value = serde_json::from_str(&asked).unwrap();
    assert_eq!(
        body["stream_options"],
        json!({"continuous_usage_stats": true, "include_usage": true})
    );
    // Not asked for usage: the client's options go as they came.
    let body: Value = serde_json::from_slice(&req.to_openai_body("u", false)).unwrap();
    assert_eq!(
        body["stream_options"],
        json!({"include_usage": false, "continuous_usage_stats": true})
    );
}

#[test]
fn non_streaming_body_has_no_stream_fields() {
    let req = parse(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&req.to_openai_body("u", true)).unwrap();
    assert_eq!(
        body,
        json!({"model": "u", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    );
}

#[test]
fn errors_name_the_parameter() {
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (json!({"model": "m"}), "messages"),
        (json!({"model": "m", "messages": []}), "messages"),
        (
            json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (json!({"model": "m", "messages": "hi"}), "messages"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "true"}),
            "stream",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": 1}),
            "stream",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1000}),
            "n",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "NaN"}),
            "temperature",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 5}),
            "stop",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}}),
            "tools",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "metadata": {"a": 1}}),
            "metadata",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {}}),
            "stream_options",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant"}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "api_base": "http://evil"}),
            "api_base",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "base_url": "http://evil"}),
            "base_url",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "api_key": "k"}),
            "api_key",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "fallbacks": ["x"]}),
            "fallbacks",
        ),
    ];
    for (body, param) in cases {
        let e = parse(body.clone()).expect_err(&body.to_string());
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(param_of(e).as_deref(), Some(param), "{body}");
    }
}

#[test]
fn malformed_bodies_are_json_errors() {
    for body in [
        &b"{"[..],
        b"[]",
        b"",
        b"null",
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]} trailing",
        b"{\"model\":\"m\",\"model\":\"n\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"content\":\"y\"}]}",
        b"\xff\xfe",
    ] {
        let e = ChatRequest::parse(body, RequestLimits::default()).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
    }
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    let deep = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"x\"}}],\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(ChatRequest::parse(deep.as_bytes(), RequestLimits::default()).is_err());
}

#[test]
fn message_count_is_limited() {
    let msgs: Vec<Value> = (0..11)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let e = ChatRequest::parse(
        json!({"model": "m", "messages": msgs})
            .to_string()
            .as_bytes(),
        RequestLimits {
            max_messages: 10,
            ..RequestLimits::default()
        },
    )
    .unwrap_err();
    assert_eq!(param_of(e).as_deref(), Some("messages"));
}

#[test]
fn escaped_keys_are_understood() {
    let body = br#"{"mod\u0065l":"m","messages":[{"role":"user","content":"x"}]}"#;
    assert_eq!(
        ChatRequest::parse(body, RequestLimits::default())
            .unwrap()
            .model,
        "m"
    );
}

#[test]
fn text_content_is_unescaped_only_when_it_has_escapes() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"héllo \"you\"\n\u00e9"},{"role":"user","content":"plain é 😀"},{"role":"user","content":""}]}"#;
    let r = ChatRequest::parse(body.as_bytes(), RequestLimits::default()).unwrap();
    let texts: Vec<&str> = r
        .messages
        .iter()
        .map(|m| match &m.content {
            Some(Content::Text(t)) => t.as_str(),
            _ => panic!("text content"),
        })
        .collect();
    assert_eq!(texts, ["héllo \"you\"\né", "plain é 😀", ""]);
}
