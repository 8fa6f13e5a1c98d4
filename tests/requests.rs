//! End-to-end: bad client input and client keys, each answered with the right status and an
//! OpenAI error body, and nothing sent upstream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use serde_json::{Value, json};
use support::*;

async fn gateway_with_fake() -> (Gateway, FakeUpstream) {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "fine".into(),
        },
        None,
    )
    .await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\nlimits: {{max_body_bytes: 65536}}\ndeployments:\n{}",
        deployment("local", "qwen3-8b", &fake)
    );
    (Gateway::start(&yaml).await, fake)
}

async fn send(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = client().request(method, gw.url(path)).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let v = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
    (status, headers, v)
}

#[tokio::test]
async fn bad_input_gets_an_openai_error_and_never_reaches_the_upstream() {
    let (gw, fake) = gateway_with_fake().await;
    let ok_msgs = json!([{"role": "user", "content": "hi"}]);
    // (what, body, status, param, code)
    type Case<'a> = (&'a str, Vec<u8>, u16, Option<&'a str>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("malformed JSON", b"{\"model\": ".to_vec(), 400, None, Some("invalid_json")),
        ("top-level array", b"[]".to_vec(), 400, None, Some("invalid_json")),
        ("empty body", Vec::new(), 400, None, Some("invalid_json")),
        ("missing messages", json!({"model": "qwen3-8b"}).to_string().into_bytes(), 400, Some("messages"), Some("missing_required_parameter")),
        ("missing model", json!({"messages": ok_msgs}).to_string().into_bytes(), 400, Some("model"), Some("missing_required_parameter")),
        ("messages of the wrong type", json!({"model": "qwen3-8b", "messages": "hi"}).to_string().into_bytes(), 400, Some("messages"), Some("invalid_type")),
        ("stream as a string", json!({"model": "qwen3-8b", "messages": ok_msgs, "stream": "true"}).to_string().into_bytes(), 400, Some("stream"), Some("invalid_type")),
        ("negative max_tokens", json!({"model": "qwen3-8b", "messages": ok_msgs, "max_tokens": -1}).to_string().into_bytes(), 400, Some("max_tokens"), Some("invalid_type")),
        ("client-chosen upstream", json!({"model": "qwen3-8b", "messages": ok_msgs, "api_base": "http://169.254.169.254"}).to_string().into_bytes(), 400, Some("api_base"), Some("unsupported_parameter")),
        ("unknown model", json!({"model": "gpt-17", "messages": ok_msgs}).to_string().into_bytes(), 404, Some("model"), Some("model_not_found")),
        ("oversized body", format!("{{\"model\":\"qwen3-8b\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}", "x".repeat(70_000)).into_bytes(), 413, None, Some("request_too_large")),
        ("invalid UTF-8", b"{\"model\":\"qwen3-8b\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}".to_vec(), 400, None, Some("invalid_json")),
        ("deep nesting", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), 413, None, None),
    ];
    for (what, body, status, param, code) in cases {
        let (got, headers, v) = send(
            &gw,
            reqwest::Method::POST,
            "/v1/chat/completions",
            body,
            Some("application/json"),
        )
        .await;
        assert_eq!(got, status, "{what}: {v}");
        let e = assert_openai_error(&v);
        assert_eq!(e["param"].as_str(), param, "{what}: {v}");
        if let Some(c) = code {
            assert_eq!(e["code"], c, "{what}: {v}");
        }
        assert!(headers.contains_key("x-request-id"), "{what}");
        assert_eq!(headers["content-type"], "application/json", "{what}");
    }
    // Within the size limit, deep nesting is refused for its depth.
    let (got, _, v) = send(
        &gw,
        reqwest::Method::POST,
        "/v1/chat/completions",
        format!("{}{}", "[".repeat(1000), "]".repeat(1000)).into_bytes(),
        None,
    )
    .await;
    assert_eq!(got, 400, "{v}");
    assert_eq!(v["error"]["code"], "too_deep");
    let (got, _, _) = send(
        &gw,
        reqwest::Method::POST,
        "/v1/chat/completions",
        b"x".to_vec(),
        Some("text/plain"),
    )
    .await;
    assert_eq!(got, 415);
    assert!(fake.seen().is_empty(), "nothing reached the upstream");

    // The gateway still serves.
    let (status, _, _) = chat(&gw, json!({"model": "qwen3-8b", "messages": ok_msgs})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths() {
    let (gw, _fake) = gateway_with_fake().await;
    let (status, headers, v) = send(
        &gw,
        reqwest::Method::GET,
        "/v1/chat/completions",
        Vec::new(),
        None,
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    assert_openai_error(&v);
    let (status, headers, v) =
        send(&gw, reqwest::Method::DELETE, "/v1/models", Vec::new(), None).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET");
    assert_openai_error(&v);
    for path in [
        "/v1/completions",
        "/",
        "/admin/reload",
        "/metrics",
        "/v1/../etc/passwd",
    ] {
        let (status, _, v) = send(&gw, reqwest::Method::GET, path, Vec::new(), None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(assert_openai_error(&v)["code"], "unknown_url");
    }
}

#[tokio::test]
async fn client_keys_are_checked_by_hash() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "fine".into(),
        },
        None,
    )
    .await;
    let key = "mg-test-key-for-team-a";
    let yaml = format!(
        "reload: {{poll_interval: 0}}\nkeys:\n  - {{id: app, tenant: team-a, sha256: {}}}\ndeployments:\n{}",
        modelgate::config::keys::hash_hex(key),
        deployment("local", "qwen3-8b", &fake)
    );
    let gw = Gateway::start(&yaml).await;
    let body =
        json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let post = |auth: Option<String>| {
        let mut rb = client()
            .post(gw.url("/v1/chat/completions"))
            .body(body.clone());
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    let cases: Vec<(Option<String>, u16, &str)> = vec![
        (None, 401, "missing_api_key"),
        (Some("Bearer mg-wrong".into()), 401, "invalid_api_key"),
        (Some("Bearer ' OR '1'='1".into()), 401, "invalid_api_key"),
        (Some(format!("Basic {key}")), 401, "invalid_api_key"),
        (
            Some(format!("Bearer {}", "k".repeat(10_000))),
            401,
            "invalid_api_key",
        ),
    ];
    for (auth, status, code) in cases {
        let r = post(auth.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{auth:?}");
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let e = assert_openai_error(&v);
        assert_eq!(e["type"], "authentication_error");
        assert_eq!(e["code"], code);
    }
    let r = post(Some(format!("Bearer {key}"))).await.unwrap();
    assert_eq!(r.status(), 200);
    // Models are listed only to callers with a key, too.
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(fake.seen().len(), 1);
}
