//! End-to-end: both client formats (OpenAI's `/v1/chat/completions`, Anthropic's `/v1/messages`)
//! routed to each upstream dialect (OpenAI-compatible, Anthropic, Gemini), through strict fakes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use serde_json::{Value, json};
use support::*;

/// One fake serving all three dialects, and a gateway with a deployment of each.
async fn gateway() -> (Gateway, FakeUpstream) {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let a = fake.addr;
    let yaml = format!(
        "reload: {{poll_interval: 0}}
deployments:
  - {{name: oa, kind: openai-compatible, model: llama-3.1-8b-instruct, base_url: 'http://{a}/v1', api_key_env: CANARY}}
  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{a}/v1', api_key_env: CANARY, locality: remote}}
  - {{name: ge, kind: gemini, model: gemini-2.5-flash, base_url: 'http://{a}/v1beta', api_key_env: CANARY, locality: remote}}
  - {{name: emb-oa, kind: openai, model: text-embedding-3-small, base_url: 'http://{a}/v1', api_key_env: CANARY}}
  - {{name: emb-ge, kind: gemini, model: gemini-embedding-001, base_url: 'http://{a}/v1beta', api_key_env: CANARY}}
"
    );
    (Gateway::start(&yaml).await, fake)
}

const MODELS: [&str; 3] = [
    "llama-3.1-8b-instruct",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
];

async fn post(gw: &Gateway, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn openai_clients_get_the_same_shape_from_every_dialect() {
    let (gw, fake) = gateway().await;
    for model in MODELS {
        let (status, h, text) = post(
            &gw,
            "/v1/chat/completions",
            &json!({"model": model, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]}),
        )
        .await;
        assert_eq!(status, 200, "{model}: {text}");
        assert_eq!(h["x-modelgate-model"], model);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(
            v["choices"][0]["message"]["content"], "Hello from the fake",
            "{model}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{model}");
        assert!(h.contains_key("x-modelgate-cost-usd"));

        // Streamed: chunks, the text in order, one finish reason, usage, [DONE].
        let (status, _, text) = post(&gw, "/v1/chat/completions", &json!({"model": model, "stream": true,
            "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Say hello"}]})).await;
        assert_eq!(status, 200);
        let events: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(events.last(), Some(&"[DONE]"), "{model}: {text}");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["role"], "assistant",
            "{model}"
        );
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .filter_map(|c| c["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hello from the fake", "{model}");
        let finishes: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .map(|c| &c["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, [&json!("stop")], "{model}");
        assert!(
            chunks.last().unwrap()["usage"]["completion_tokens"]
                .as_u64()
                .unwrap()
                > 0,
            "{model}"
        );
    }
    // Each upstream got its own format and its own key header, no other.
    let seen = fake.seen();
    let anthropic: Vec<&Seen> = seen.iter().filter(|s| s.path == "/v1/messages").collect();
    assert_eq!(anthropic.len(), 2);
    assert_eq!(anthropic[0].headers["x-api-key"], CANARY_KEY);
    assert!(anthropic[0].headers.get("authorization").is_none());
    assert_eq!(anthropic[0].body["system"], "Be brief.");
    let gemini: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.starts_with("/v1beta/"))
        .collect();
    assert_eq!(gemini.len(), 2);
    assert_eq!(gemini[1].query.as_deref(), Some("alt=sse"));
    assert_eq!(gemini[0].headers["x-goog-api-key"], CANARY_KEY);
    assert_eq!(
        gemini[0].body["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );
}

#[tokio::test]
async fn a_tool_call_round_trip_through_every_dialect() {
    let (gw, fake) = gateway().await;
    for model in MODELS {
        for stream in [false, true] {
            let ask = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": weather_tool()});
            let (status, _, text) = post(&gw, "/v1/chat/completions", &ask).await;
            assert_eq!(status, 200, "{model}: {text}");
            let (id, name, args, finish) = if stream {
                let chunks: Vec<Value> = text
                    .split("\n\n")
                    .filter_map(|e| e.strip_prefix("data: "))
                    .filter(|e| *e != "[DONE]")
                    .map(|e| serde_json::from_str(e).unwrap())
                    .collect();
                let calls: Vec<&Value> = chunks
                    .iter()
                    .filter_map(|c| c["choices"].get(0))
                    .filter_map(|c| c["delta"]["tool_calls"].get(0))
                    .collect();
                assert!(calls.iter().all(|c| c["index"] == 0), "{model}: {calls:?}");
                let args: String = calls
                    .iter()
                    .filter_map(|c| c["function"]["arguments"].as_str())
                    .collect();
                let finish = chunks
                    .iter()
                    .filter_map(|c| c["choices"].get(0))
                    .find_map(|c| c["finish_reason"].as_str())
                    .unwrap()
                    .to_owned();
                (
                    calls[0]["id"].as_str().unwrap().to_owned(),
                    calls[0]["function"]["name"].as_str().unwrap().to_owned(),
                    args,
                    finish,
                )
            } else {
                let v: Value = serde_json::from_str(&text).unwrap();
                let c = &v["choices"][0]["message"]["tool_calls"][0];
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["function"]["name"].as_str().unwrap().to_owned(),
                    c["function"]["arguments"].as_str().unwrap().to_owned(),
                    v["choices"][0]["finish_reason"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            };
            assert_eq!(finish, "tool_calls", "{model} stream={stream}");
            assert_eq!(name, "get_weather");
            assert_eq!(
                serde_json::from_str::<Value>(&args).unwrap(),
                json!({"city": "Paris"}),
                "{model}"
            );
            // The result goes back; the answer is text.
            let back = json!({"model": model, "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": args}}]},
                {"role": "tool", "tool_call_id": id, "content": "21C, sunny"}], "tools": weather_tool()});
            let (status, _, text) = post(&gw, "/v1/chat/completions", &back).await;
            assert_eq!(status, 200, "{model}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["choices"][0]["message"]["content"], "Hello from the fake",
                "{model}"
            );
        }
    }
    let seen = fake.seen();
    let results: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path == "/v1/messages" && s.body["messages"].as_array().unwrap().len() == 3)
        .collect();
    assert_eq!(
        results[0].body["messages"][2]["content"][0]["type"],
        "tool_result"
    );
    let gem: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.path.starts_with("/v1beta/") && s.body["contents"].as_array().unwrap().len() == 3
        })
        .collect();
    assert_eq!(
        gem[0].body["contents"][2]["parts"][0]["functionResponse"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn image_input_reaches_every_dialect_in_its_own_form() {
    let (gw, fake) = gateway().await;
    for model in MODELS {
        let (status, _, text) = post(
            &gw,
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}),
        )
        .await;
        // Llama 3.1 takes no images: the policy refuses it rather than send them.
        if model == "llama-3.1-8b-instruct" {
            assert_eq!(status, 403, "{text}");
            assert!(text.contains("takes no images"));
            continue;
        }
        assert_eq!(status, 200, "{model}: {text}");
    }
    let seen = fake.seen();
    let a = seen.iter().find(|s| s.path == "/v1/messages").unwrap();
    assert_eq!(
        a.body["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    let g = seen
        .iter()
        .find(|s| s.path.starts_with("/v1beta/"))
        .unwrap();
    assert_eq!(
        g.body["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}})
    );
}

#[tokio::test]
async fn anthropic_clients_are_served_by_every_dialect() {
    let (gw, _fake) = gateway().await;
    for model in MODELS {
        let (status, _, text) = post(
            &gw,
            "/v1/messages",
            &json!({"model": model, "max_tokens": 100,
            "system": "Be brief.", "messages": [{"role": "user", "content": "Say hello"}]}),
        )
        .await;
        assert_eq!(status, 200, "{model}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(
            v["content"],
            json!([{"type": "text", "text": "Hello from the fake"}]),
            "{model}"
        );
        assert_eq!(v["stop_reason"], "end_turn");
        assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);

        let (status, _, text) = post(
            &gw,
            "/v1/messages",
            &json!({"model": model, "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "Say hello"}]}),
        )
        .await;
        assert_eq!(status, 200);
        let names: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("event: "))
            .map(|e| e.split('\n').next().unwrap())
            .collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}: {text}");
        assert_eq!(
            &names[names.len() - 2..],
            ["message_delta", "message_stop"],
            "{model}"
        );
        let said: String = text
            .split("\n\n")
            .filter_map(|e| e.split_once("\ndata: ").map(|(_, d)| d))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|d| d["type"] == "content_block_delta")
            .filter_map(|d| d["delta"]["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(said, "Hello from the fake", "{model}");

        // Tools, in Anthropic's format, through any dialect.
        let (status, _, text) = post(&gw, "/v1/messages", &json!({"model": model, "max_tokens": 100,
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]})).await;
        assert_eq!(status, 200, "{model}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["stop_reason"], "tool_use", "{model}");
        let call = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap();
        assert_eq!(call["input"], json!({"city": "Paris"}));
        let (status, _, text) = post(&gw, "/v1/messages", &json!({"model": model, "max_tokens": 100, "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": call["id"], "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "21C"}]}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]})).await;
        assert_eq!(status, 200, "{model}: {text}");
        assert!(text.contains("Hello from the fake"));
    }
    // Errors come back in Anthropic's format.
    let (status, _, text) = post(
        &gw,
        "/v1/messages",
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn upstream_errors_of_each_dialect_map_to_the_openai_status() {
    let (gw, fake) = gateway().await;
    fake.set(Script::Status { status: 529, body: json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), retry_after: None });
    let (status, _, text) = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 503, "{text}");
    fake.set(Script::Status { status: 400, body: json!({"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}), retry_after: None });
    let (status, _, text) = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Invalid JSON payload"));
    // What no Anthropic model can take is a 400 before any call.
    fake.set(Script::Ok { text: "x".into() });
    let before = fake.seen().len();
    let (status, _, text) = post(&gw, "/v1/chat/completions", &json!({"model": "claude-sonnet-4-5", "temperature": 1.7, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("temperature between 0 and 1"));
    assert_eq!(fake.seen().len(), before);
}

#[tokio::test]
async fn embeddings_from_openai_compatible_and_gemini_in_float_and_base64() {
    let (gw, fake) = gateway().await;
    for model in ["text-embedding-3-small", "gemini-embedding-001"] {
        let (status, h, text) = post(
            &gw,
            "/v1/embeddings",
            &json!({"model": model, "input": ["hello", "abc"]}),
        )
        .await;
        assert_eq!(status, 200, "{model}: {text}");
        assert_eq!(h["x-modelgate-model"], model);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(
            v["data"][0]["embedding"],
            json!([5.0, 104.0, 0.5, -0.25]),
            "{model}"
        );
        assert_eq!(v["data"][1]["index"], 1);
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        // base64: little-endian float32, as the OpenAI SDK asks by default.
        let (status, _, text) = post(
            &gw,
            "/v1/embeddings",
            &json!({"model": model, "input": "abc", "encoding_format": "base64"}),
        )
        .await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["data"][0]["embedding"],
            modelgate::exchange::embeddings::base64_f32(&[3.0, 97.0, 0.5, -0.25])
        );
    }
    let seen = fake.seen();
    let oa = seen.iter().find(|s| s.path == "/v1/embeddings").unwrap();
    assert_eq!(oa.body["encoding_format"], "float");
    let ge = seen
        .iter()
        .find(|s| s.path.ends_with(":batchEmbedContents"))
        .unwrap();
    assert_eq!(
        ge.body["requests"][1]["model"],
        "models/gemini-embedding-001"
    );
    // An embedding model cannot chat, nor a chat model embed.
    let (status, _, text) = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("is an embedding model"));
    let (status, _, text) = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "claude-sonnet-4-5", "input": "x"}),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    let (status, _, text) = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "auto", "input": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small"}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
}

#[tokio::test]
async fn count_tokens_is_asked_of_anthropic_and_estimated_elsewhere() {
    let (gw, fake) = gateway().await;
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello there"}], "system": "Be brief."});
    let (status, h, text) = post(&gw, "/v1/messages/count_tokens", &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"input_tokens": 42})
    );
    assert!(h.get("x-modelgate-estimated").is_none());
    let seen = fake.seen();
    let sent = seen
        .iter()
        .find(|s| s.path == "/v1/messages/count_tokens")
        .unwrap();
    assert_eq!(sent.body["model"], "claude-sonnet-4-5");
    assert!(sent.body.get("max_tokens").is_none());
    let (status, h, text) = post(&gw, "/v1/messages/count_tokens", &json!({"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "Hello there"}]})).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(h["x-modelgate-estimated"], "true");
    assert!(
        serde_json::from_str::<Value>(&text).unwrap()["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}
