//! End-to-end: what the client formats and the dialects say about an answer stays true across
//! the translation: estimated usage within what the request allowed, message ids, and the
//! upstream's stop sequence.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn an_estimated_output_never_passes_the_requests_max_tokens() {
    // A backend that sends no usage in streams (llama.cpp's server): the gateway estimates.
    let chunk = |content: &str, finish: Option<&str>| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
        .to_string()
    };
    let mut events: Vec<String> = (0..10)
        .map(|_| chunk("a long run of words ", None))
        .collect();
    events.push(chunk("", Some("length")));
    let fake = FakeUpstream::start(
        Script::Sse {
            events,
            delay: std::time::Duration::ZERO,
            done: true,
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}",
        deployment("local", "qwen3-8b", &fake).replace("}\n", ", stream_usage: false}\n"),
    ))
    .await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "qwen3-8b", "stream": true, "max_tokens": 3, "n": 1, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "qwen3-8b", "stream": true, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let r = client()
            .post(gw.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Both formats' events, `event:` lines or not: their data.
        let text = r.text().await.unwrap();
        let events: Vec<String> = text
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(str::to_owned)
            .collect();
        let usage: Vec<Value> = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|v| v.get("usage").cloned().filter(|u| !u.is_null()))
            .collect();
        let out = usage
            .last()
            .and_then(|u| u.get("completion_tokens").or(u.get("output_tokens")))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{path}: no usage in {events:?}"));
        assert!(
            (1..=3).contains(&out),
            "{path}: {out} output tokens for max_tokens 3"
        );
    }
    // What the gateway counted (metrics, budgets) is bounded the same way.
    let counted = metric(
        &gw.metrics().await,
        "modelgate_tokens_total",
        &[("direction", "output")],
    );
    assert!(
        counted <= 6.0,
        "{counted} output tokens counted for two requests of 3"
    );
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn an_anthropic_message_id_is_prefixed_once() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "hello there".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{}/v1', api_key_env: CANARY, locality: remote}}\n",
        fake.addr
    ))
    .await;
    for stream in [false, true] {
        let r = client()
            .post(gw.url("/v1/messages"))
            .header("content-type", "application/json")
            .body(json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.contains("\"msg_"), "{text}");
        assert!(!text.contains("msg_msg_"), "stream {stream}: {text}");
    }
}

#[tokio::test]
async fn geminis_retry_info_is_read_where_gemini_puts_it() {
    let body = json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED",
    "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "6.2s"}
    ]}});
    let fake = FakeUpstream::start(
        Script::Status {
            status: 429,
            body,
            retry_after: None,
        },
        Some(CANARY_KEY),
    )
    .await;
    for (path, front, stream) in [
        ("/v1/chat/completions", "openai", false),
        ("/v1/chat/completions", "openai", true),
        ("/v1/messages", "anthropic", false),
        ("/v1/messages", "anthropic", true),
    ] {
        let gw = Gateway::start(&format!(
            "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: ge, kind: gemini, model: gemini-2.5-flash, base_url: 'http://{}/v1beta', api_key_env: CANARY, locality: remote, retries: {{attempts: 0}}}}\n",
            fake.addr
        ))
        .await;
        let before = fake.seen().len();
        for _ in 0..2 {
            let r = client()
                .post(gw.url(path))
                .header("content-type", "application/json")
                .body(json!({"model": "gemini-2.5-flash", "max_tokens": 16, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 429, "{front} stream {stream}");
            assert_eq!(
                r.headers()["retry-after"],
                "7",
                "{front} stream {stream}: 6.2 s, in whole seconds"
            );
        }
        // The second request was not sent: the deployment cools down for what Gemini asked.
        assert_eq!(fake.seen().len() - before, 1, "{front} stream {stream}");
        let sent = &fake.seen()[before];
        assert_eq!(sent.path.ends_with(":streamGenerateContent"), stream);
    }
}

#[tokio::test]
async fn fields_openai_does_not_take_never_reach_openai() {
    let openai = FakeUpstream::start(Script::Ok { text: "o".into() }, Some(CANARY_KEY)).await;
    let vllm = FakeUpstream::start(Script::Ok { text: "v".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: oa, kind: openai, model: gpt-4o, base_url: '{}', api_key_env: CANARY, locality: remote}}\n{}",
        openai.base_url(),
        deployment("local", "qwen3-8b", &vllm),
    ))
    .await;
    // Anthropic's top_k from the Messages API, and an OpenAI-format client's top_k.
    for (path, body) in [
        (
            "/v1/messages",
            json!({"model": "gpt-4o", "max_tokens": 16, "top_k": 5, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "top_k": 5, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let r = client()
            .post(gw.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let text = r.text().await.unwrap();
        assert!(text.contains("top_k"), "{path}: {text}");
    }
    assert!(openai.seen().is_empty(), "OpenAI got a field it refuses");
    // OpenAI's own fields still go to OpenAI; top_k goes to a server that takes it.
    let (status, _, v) = chat(
        &gw,
        json!({"model": "gpt-4o", "seed": 7, "user": "u1", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(openai.seen()[0].body["seed"], 7);
    let (status, _, v) = chat(
        &gw,
        json!({"model": "qwen3-8b", "top_k": 5, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(vllm.seen()[0].body["top_k"], 5);
}

#[tokio::test]
async fn an_anthropic_stop_sequence_and_input_count_reach_the_client() {
    let whole = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "one two"}], "stop_reason": "stop_sequence", "stop_sequence": "END",
        "usage": {"input_tokens": 777, "output_tokens": 3}});
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}");
    let stream = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 777, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "one two"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"}, "usage": {"output_tokens": 3}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    let fake = FakeUpstream::start(Script::Ok { text: "x".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{}/v1', api_key_env: CANARY, locality: remote}}\n",
        fake.addr
    ))
    .await;
    let ask = |path: &'static str, stream: bool| {
        let url = gw.url(path);
        async move {
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .body(json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "stream": stream, "stop": ["END"], "stop_sequences": ["END"], "messages": [{"role": "user", "content": "count"}]}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.text().await.unwrap()
        }
    };
    fake.set(Script::Status {
        status: 200,
        body: whole,
        retry_after: None,
    });
    let v: Value = serde_json::from_str(&ask("/v1/messages", false).await).unwrap();
    assert_eq!(v["stop_reason"], "stop_sequence", "{v}");
    assert_eq!(v["stop_sequence"], "END", "{v}");
    assert_eq!(v["usage"]["input_tokens"], 777, "{v}");
    let v: Value = serde_json::from_str(&ask("/v1/chat/completions", false).await).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    fake.set(Script::Sse {
        events: stream,
        delay: std::time::Duration::ZERO,
        done: false,
    });
    let text = ask("/v1/messages", true).await;
    let data: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let start = data.iter().find(|d| d["type"] == "message_start").unwrap();
    assert_eq!(start["message"]["usage"]["input_tokens"], 777, "{text}");
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "stop_sequence", "{text}");
    assert_eq!(delta["delta"]["stop_sequence"], "END", "{text}");
    let text = ask("/v1/chat/completions", true).await;
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
}

#[tokio::test]
async fn the_answer_names_the_model_as_the_gateway_does() {
    // The backend calls the model by its own name (llama.cpp: the GGUF file's path).
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "one two three".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}",
        deployment("local", "qwen3-8b", &fake).replace(
            "upstream_model: up-qwen3-8b",
            "upstream_model: '/data/models/Qwen3-8B-Q4_K_M.gguf'"
        ),
    ))
    .await;
    for path in ["/v1/chat/completions", "/v1/messages"] {
        for stream in [false, true] {
            let r = client()
                .post(gw.url(path))
                .header("content-type", "application/json")
                .body(json!({"model": "qwen3-8b", "max_tokens": 16, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-modelgate-model"], "qwen3-8b");
            let text = r.text().await.unwrap();
            assert!(
                !text.contains("/data/models"),
                "{path} stream {stream}: {text}"
            );
            let bodies: Vec<Value> = if stream {
                text.split("\n\n")
                    .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                    .filter_map(|d| serde_json::from_str(d).ok())
                    .collect()
            } else {
                vec![serde_json::from_str(&text).unwrap()]
            };
            let models: Vec<&Value> = bodies
                .iter()
                .filter_map(|b| b.get("model").or(b.pointer("/message/model")))
                .collect();
            assert!(!models.is_empty(), "{path} stream {stream}: {text}");
            assert!(
                models.iter().all(|m| *m == "qwen3-8b"),
                "{path} stream {stream}: {models:?}"
            );
        }
    }
    assert_eq!(
        fake.seen()[0].body["model"],
        "/data/models/Qwen3-8B-Q4_K_M.gguf"
    );
}

#[tokio::test]
async fn max_tokens_zero_warms_anthropics_cache_and_is_refused_elsewhere() {
    let anthropic = FakeUpstream::start(Script::Ok { text: "".into() }, Some(CANARY_KEY)).await;
    let other = FakeUpstream::start(Script::Ok { text: "x".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{}/v1', api_key_env: CANARY, locality: remote}}\n{}",
        anthropic.addr,
        deployment("local", "qwen3-8b", &other),
    ))
    .await;
    let ask = |model: &str| {
        client()
            .post(gw.url("/v1/messages"))
            .header("content-type", "application/json")
            .body(json!({"model": model, "max_tokens": 0, "system": [{"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}], "messages": [{"role": "user", "content": "hi"}]}).to_string())
            .send()
    };
    let r = ask("claude-sonnet-4-5").await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(anthropic.seen()[0].body["max_tokens"], 0);
    let r = ask("qwen3-8b").await.unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("max_tokens"), "{text}");
    assert!(other.seen().is_empty());
}

#[tokio::test]
async fn structured_output_reaches_every_dialect_in_its_own_terms() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
    let anthropic = FakeUpstream::start(
        Script::Ok {
            text: "{\"city\":\"Paris\"}".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gemini = FakeUpstream::start(
        Script::Ok {
            text: "{\"city\":\"Paris\"}".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let compat = FakeUpstream::start(
        Script::Ok {
            text: "{\"city\":\"Paris\"}".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{}/v1', api_key_env: CANARY, locality: remote}}\n  - {{name: ge, kind: gemini, model: gemini-2.5-flash, base_url: 'http://{}/v1beta', api_key_env: CANARY, locality: remote}}\n{}",
        anthropic.addr,
        gemini.addr,
        deployment("local", "qwen3-8b", &compat),
    ))
    .await;
    for model in ["claude-sonnet-4-5", "gemini-2.5-flash", "qwen3-8b"] {
        // From an Anthropic-format client, and from an OpenAI-format one.
        for (path, body) in [
            (
                "/v1/messages",
                json!({"model": model, "max_tokens": 64, "output_config": {"format": {"type": "json_schema", "schema": schema}}, "messages": [{"role": "user", "content": "Where?"}]}),
            ),
            (
                "/v1/chat/completions",
                json!({"model": model, "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}, "messages": [{"role": "user", "content": "Where?"}]}),
            ),
        ] {
            let r = client()
                .post(gw.url(path))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                200,
                "{model} via {path}: {}",
                r.text().await.unwrap()
            );
        }
    }
    for s in anthropic.seen() {
        assert_eq!(
            s.body["output_config"]["format"]["schema"], schema,
            "{}",
            s.body
        );
    }
    for s in gemini.seen() {
        assert_eq!(
            s.body["generationConfig"]["responseJsonSchema"], schema,
            "{}",
            s.body
        );
    }
    for s in compat.seen() {
        assert_eq!(
            s.body["response_format"]["json_schema"]["schema"], schema,
            "{}",
            s.body
        );
    }
    assert_eq!(
        anthropic.seen().len() + gemini.seen().len() + compat.seen().len(),
        6
    );
}

#[tokio::test]
async fn an_image_a_tool_returned_reaches_every_dialect() {
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let anthropic = FakeUpstream::start(
        Script::Ok {
            text: "a cat".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gemini = FakeUpstream::start(
        Script::Ok {
            text: "a cat".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let compat = FakeUpstream::start(
        Script::Ok {
            text: "a cat".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{}/v1', api_key_env: CANARY, locality: remote}}\n  - {{name: ge, kind: gemini, model: gemini-2.5-flash, base_url: 'http://{}/v1beta', api_key_env: CANARY, locality: remote}}\n{}",
        anthropic.addr,
        gemini.addr,
        deployment("local", "mistral-small-3.2-24b-instruct", &compat),
    ))
    .await;
    for model in [
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
        "mistral-small-3.2-24b-instruct",
    ] {
        let body = json!({"model": model, "max_tokens": 64,
        "tools": [{"name": "screenshot", "description": "takes one", "input_schema": {"type": "object", "properties": {}}}],
        "messages": [
            {"role": "user", "content": "What is on screen?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "the screen"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
            ]}]}
        ]});
        let r = client()
            .post(gw.url("/v1/messages"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, 200, "{model}: {}", r.text().await.unwrap());
    }
    for (fake, name) in [
        (&anthropic, "anthropic"),
        (&gemini, "gemini"),
        (&compat, "compat"),
    ] {
        let seen = fake.seen();
        assert_eq!(seen.len(), 1, "{name}");
        assert!(
            seen[0].body.to_string().contains(PNG),
            "{name} got no image: {}",
            seen[0].body
        );
    }
}

/// The choices of a stream of `chat.completion.chunk`s, reassembled by `index`: each choice's
/// text, finish reason, and whether its first chunk named the role. Panics on a chunk for a
/// choice that already finished, or on two finish reasons for one.
fn choices_of_stream(events: &[String]) -> Vec<(String, String, bool)> {
    let mut choices: Vec<(String, Option<String>, bool)> = Vec::new();
    for e in events {
        let Ok(v) = serde_json::from_str::<Value>(e) else {
            continue;
        };
        for c in v["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap() as usize;
            if choices.len() <= i {
                choices.resize(i + 1, (String::new(), None, false));
            }
            let (text, finish, role) = &mut choices[i];
            let delta = &c["delta"];
            assert!(
                finish.is_none(),
                "choice {i} went on after it finished: {e}"
            );
            if text.is_empty() && delta["role"] == "assistant" {
                *role = true;
            }
            text.push_str(delta["content"].as_str().unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                *finish = Some(f.to_owned());
            }
        }
    }
    choices
        .into_iter()
        .map(|(t, f, r)| (t, f.expect("every choice finishes"), r))
        .collect()
}

#[tokio::test]
async fn several_choices_come_back_as_choices_by_index() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "one two".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: ge, kind: gemini, model: gemini-2.5-flash, base_url: 'http://{a}/v1beta', api_key_env: CANARY, locality: remote}}\n  - {{name: oa, kind: openai, model: gpt-4o, base_url: 'http://{a}/v1', api_key_env: CANARY, locality: remote}}\n  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{a}/v1', api_key_env: CANARY, locality: remote}}\n",
        a = fake.addr
    ))
    .await;
    let want = |n: usize| -> Vec<String> { (0..n).map(|i| nth_text("one two", i)).collect() };
    for model in ["gemini-2.5-flash", "gpt-4o"] {
        for n in [2usize, 3] {
            let before = fake.seen().len();
            let (status, _, v) = chat(
                &gw,
                json!({"model": model, "n": n, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
            assert_eq!(status, 200, "{model}: {v}");
            let sent = &fake.seen()[before].body;
            if model.starts_with("gemini") {
                assert_eq!(sent["generationConfig"]["candidateCount"], n);
            } else {
                assert_eq!(sent["n"], n);
            }
            let choices = v["choices"].as_array().unwrap();
            let got: Vec<String> = choices
                .iter()
                .map(|c| c["message"]["content"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(got, want(n), "{model}: {v}");
            for (i, c) in choices.iter().enumerate() {
                assert_eq!(c["index"], i, "{model}");
                assert_eq!(c["finish_reason"], "stop", "{model}");
            }

            let r = client()
                .post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(json!({"model": model, "n": n, "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "hi"}]}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{model}");
            let events = sse_events(r).await;
            let choices = choices_of_stream(&events);
            let texts: Vec<String> = choices.iter().map(|c| c.0.clone()).collect();
            assert_eq!(texts, want(n), "{model}: {events:?}");
            assert!(
                choices.iter().all(|c| c.1 == "stop" && c.2),
                "{model}: every choice opens with its role and stops once: {events:?}"
            );
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        }
    }
    // A tool call in each of two Gemini candidates: each choice has its own, numbered from 0,
    // and no two share an id.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let (status, _, v) = chat(
        &gw,
        json!({"model": "gemini-2.5-flash", "n": 2, "tools": tools, "tool_choice": "required", "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<&str> = (0..2)
        .map(|i| {
            let c = &v["choices"][i];
            assert_eq!(c["finish_reason"], "tool_calls", "{v}");
            assert_eq!(
                c["message"]["tool_calls"].as_array().unwrap().len(),
                1,
                "{v}"
            );
            c["message"]["tool_calls"][0]["id"].as_str().unwrap()
        })
        .collect();
    assert_ne!(ids[0], ids[1], "{v}");
    // Anthropic answers one choice: n > 1 is refused before anything is sent.
    let before = fake.seen().len();
    let (status, _, v) = chat(
        &gw,
        json!({"model": "claude-sonnet-4-5", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let message = assert_openai_error(&v)["message"].as_str().unwrap();
    assert!(message.contains("'n'"), "{v}");
    assert_eq!(fake.seen().len(), before);
}
