//! End-to-end: OpenAI's Responses API (`/v1/responses`) served through every upstream dialect
//! (OpenAI-compatible, Anthropic, Gemini) by the strict fakes, whole and streamed, and the
//! conversations it keeps (`previous_response_id`), their tenants and their labels.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use serde_json::{Value, json};
use support::*;

const MODELS: [&str; 3] = [
    "llama-3.1-8b-instruct",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
];

fn deployments(a: std::net::SocketAddr) -> String {
    format!(
        "  - {{name: oa, kind: openai-compatible, model: llama-3.1-8b-instruct, base_url: 'http://{a}/v1', api_key_env: CANARY}}
  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{a}/v1', api_key_env: CANARY, locality: remote}}
  - {{name: ge, kind: gemini, model: gemini-2.5-flash, base_url: 'http://{a}/v1beta', api_key_env: CANARY, locality: remote}}
  - {{name: vis, kind: openai-compatible, model: gemma-3-12b-it, base_url: 'http://{a}/v1', api_key_env: CANARY}}
"
    )
}

async fn gateway_with(script: Script, extra: &str) -> (Gateway, FakeUpstream) {
    let fake = FakeUpstream::start(script, Some(CANARY_KEY)).await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\n{extra}deployments:\n{}",
        deployments(fake.addr)
    );
    (Gateway::start(&yaml).await, fake)
}

async fn gateway() -> (Gateway, FakeUpstream) {
    gateway_with(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        "",
    )
    .await
}

async fn send(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = client().request(method, gw.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

async fn create(gw: &Gateway, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let (s, h, t) = send(gw, reqwest::Method::POST, "/v1/responses", None, Some(body)).await;
    (
        s,
        h,
        serde_json::from_str(&t).unwrap_or_else(|_| panic!("{s}: {t}")),
    )
}

/// The typed events of a streamed response: (event name, data).
async fn stream(gw: &Gateway, body: &Value) -> (u16, Vec<(String, Value)>) {
    let (s, _, text) = send(gw, reqwest::Method::POST, "/v1/responses", None, Some(body)).await;
    let events = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_else(|| panic!("an event without its name: {e}"));
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect();
    (s, events)
}

fn weather_tool() -> Value {
    json!([{"type": "function", "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": true}])
}

/// The text of a response object's message items.
fn output_text(r: &Value) -> String {
    r["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|c| c["text"].as_str())
        .collect()
}

/// A response to `body`, whole or streamed (its events checked), which must succeed.
async fn answer(gw: &Gateway, body: &Value, streamed: bool) -> Value {
    if streamed {
        let (s, events) = stream(gw, body).await;
        assert_eq!(s, 200, "{body}: {events:?}");
        check_stream(&events)
    } else {
        let (s, _, r) = create(gw, body).await;
        assert_eq!(s, 200, "{body}: {r}");
        r
    }
}

/// Checks the events of a stream: numbered from 0 without a gap, the lifecycle in order, and
/// what the deltas add up to is what the `.done` events and the final response say.
fn check_stream(events: &[(String, Value)]) -> Value {
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str(), "{data}");
        assert_eq!(data["sequence_number"], i, "{name}");
    }
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events[1].0, "response.in_progress");
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "response.completed", "{events:?}");
    let mut text = String::new();
    let mut args = String::new();
    for (name, d) in events {
        match name.as_str() {
            "response.output_text.delta" => text.push_str(d["delta"].as_str().unwrap()),
            "response.output_text.done" => assert_eq!(d["text"], text.as_str()),
            "response.function_call_arguments.delta" => args.push_str(d["delta"].as_str().unwrap()),
            "response.function_call_arguments.done" => {
                assert_eq!(d["arguments"], args.as_str());
                args.clear();
            }
            _ => {}
        }
    }
    let response = data["response"].clone();
    assert_eq!(response["status"], "completed");
    assert_eq!(output_text(&response), text);
    response
}

#[tokio::test]
async fn text_through_every_dialect_whole_and_streamed() {
    let (gw, _fake) = gateway().await;
    for model in MODELS {
        let (s, h, r) = create(
            &gw,
            &json!({"model": model, "instructions": "Be brief.", "input": "Say hello",
                    "max_output_tokens": 100, "temperature": 0.5, "metadata": {"ticket": "t-1"}}),
        )
        .await;
        assert_eq!(s, 200, "{model}: {r}");
        assert_eq!(h["x-modelgate-model"], model);
        assert_eq!(r["object"], "response");
        assert!(r["id"].as_str().unwrap().starts_with("resp_"), "{r}");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], model);
        assert_eq!(r["instructions"], "Be brief.");
        assert_eq!(r["temperature"], 0.5);
        assert_eq!(r["max_output_tokens"], 100);
        assert_eq!(r["metadata"]["ticket"], "t-1");
        assert_eq!(output_text(&r), "Hello from the fake", "{model}: {r}");
        let item = &r["output"][0];
        assert_eq!(item["type"], "message");
        assert_eq!(item["role"], "assistant");
        assert!(item["id"].as_str().unwrap().starts_with("msg_"));
        let u = &r["usage"];
        assert!(u["input_tokens"].as_u64().unwrap() > 0, "{r}");
        assert!(u["output_tokens"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
        );
        assert!(u["input_tokens_details"]["cached_tokens"].is_u64());
        assert!(u["output_tokens_details"]["reasoning_tokens"].is_u64());

        let (s, events) = stream(
            &gw,
            &json!({"model": model, "input": "Say hello", "stream": true}),
        )
        .await;
        assert_eq!(s, 200);
        let done = check_stream(&events);
        assert_eq!(output_text(&done), "Hello from the fake", "{model}");
        assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ] {
            assert!(names.contains(&want), "{model}: no {want} in {names:?}");
        }
    }
}

#[tokio::test]
async fn a_function_call_round_trip_through_every_dialect() {
    let (gw, fake) = gateway().await;
    for model in MODELS {
        for streamed in [false, true] {
            let first = json!({"model": model, "input": "Weather in Paris?", "tools": weather_tool(),
                               "tool_choice": "auto", "stream": streamed, "store": false});
            let r = answer(&gw, &first, streamed).await;
            let call = r["output"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["type"] == "function_call")
                .unwrap_or_else(|| panic!("{model}: no call in {r}"))
                .clone();
            assert_eq!(call["name"], "get_weather");
            let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(args["city"], "Paris", "{model}");
            assert!(call["id"].as_str().unwrap().starts_with("fc_"));
            // The result goes back with the call, as a client without a stored
            // conversation sends it.
            let second = json!({"model": model, "tools": weather_tool(), "stream": streamed, "input": [
                {"role": "user", "content": "Weather in Paris?"},
                call,
                {"type": "function_call_output", "call_id": call["call_id"], "output": "{\"temp\": 21}"},
            ]});
            let r = answer(&gw, &second, streamed).await;
            assert_eq!(output_text(&r), "Hello from the fake", "{model}: {r}");
        }
    }
    // Each dialect got the result attached to its call, in its own terms (the strict fakes
    // refuse a result without its call).
    let seen = fake.seen();
    assert!(seen.iter().any(|s| {
        s.body["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"))
    }));
}

#[tokio::test]
async fn an_image_and_a_json_schema_reach_every_dialect() {
    let (gw, fake) = gateway().await;
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let schema = json!({"format": {"type": "json_schema", "name": "answer", "strict": true,
        "schema": {"type": "object", "properties": {"what": {"type": "string"}},
                   "required": ["what"], "additionalProperties": false}}});
    for model in MODELS {
        let (s, _, r) = create(
            &gw,
            &json!({"model": model, "input": "What is this?", "text": schema}),
        )
        .await;
        assert_eq!(s, 200, "{model}: {r}");
        assert_eq!(r["text"]["format"]["type"], "json_schema");
    }
    // Images go to the models that take them; the one that takes none is refused by policy.
    for model in [
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
        "gemma-3-12b-it",
        "llama-3.1-8b-instruct",
    ] {
        let (s, _, r) = create(
            &gw,
            &json!({"model": model, "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": png, "detail": "low"}]}]}),
        )
        .await;
        let want = if model.starts_with("llama") { 403 } else { 200 };
        assert_eq!(s, want, "{model}: {r}");
    }
    let seen = fake.seen();
    let oa = seen
        .iter()
        .find(|s| s.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(oa.body["response_format"]["type"], "json_schema");
    let vis = seen
        .iter()
        .find(|s| s.body["model"] == "gemma-3-12b-it")
        .unwrap();
    assert_eq!(
        vis.body["messages"][0]["content"][1]["image_url"]["url"],
        png
    );
    assert_eq!(
        vis.body["messages"][0]["content"][1]["image_url"]["detail"],
        "low"
    );
    assert_eq!(oa.body["response_format"]["json_schema"]["name"], "answer");
    let an: Vec<_> = seen.iter().filter(|s| s.path == "/v1/messages").collect();
    assert!(
        an[0].body["output_config"]["format"]["schema"].is_object(),
        "{}",
        an[0].body
    );
    assert_eq!(an[1].body["messages"][0]["content"][1]["type"], "image");
    let ge: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/v1beta/"))
        .collect();
    assert_eq!(
        ge[0].body["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert!(
        ge[1].body["contents"][0]["parts"][1]["inlineData"].is_object(),
        "{}",
        ge[1].body
    );
}

#[tokio::test]
async fn three_turns_with_previous_response_id_on_each_dialect() {
    let (gw, fake) = gateway().await;
    for model in [
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
        "llama-3.1-8b-instruct",
    ] {
        let mut previous = Value::Null;
        for (turn, said) in ["My name is Ada.", "I live in Paris.", "Where do I live?"]
            .iter()
            .enumerate()
        {
            let streamed = turn == 1;
            let body = json!({"model": model, "input": said, "previous_response_id": previous,
                              "stream": streamed, "instructions": "Be brief."});
            let r = answer(&gw, &body, streamed).await;
            assert_eq!(r["previous_response_id"], previous);
            previous = r["id"].clone();
        }
        // The third request carried the whole conversation: three user turns, two answers.
        let last = fake.seen().last().unwrap().body.clone();
        let text = last.to_string();
        for said in ["My name is Ada.", "I live in Paris.", "Where do I live?"] {
            assert!(text.contains(said), "{model}: {said} missing from {last}");
        }
        assert_eq!(
            text.matches("Hello from the fake").count(),
            2,
            "{model}: {last}"
        );
        // The stored response and its input items read back.
        let id = previous.as_str().unwrap();
        let (s, _, t) = send(
            &gw,
            reqwest::Method::GET,
            &format!("/v1/responses/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "{t}");
        let got: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(got["id"], id);
        assert_eq!(output_text(&got), "Hello from the fake");
        let (s, _, t) = send(
            &gw,
            reqwest::Method::GET,
            &format!("/v1/responses/{id}/input_items"),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "{t}");
        let items: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(items["object"], "list");
        assert_eq!(items["data"].as_array().unwrap().len(), 1, "{items}");
        assert_eq!(items["data"][0]["content"][0]["text"], "Where do I live?");
        // Deleted, it is gone.
        let (s, _, t) = send(
            &gw,
            reqwest::Method::DELETE,
            &format!("/v1/responses/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "{t}");
        assert_eq!(serde_json::from_str::<Value>(&t).unwrap()["deleted"], true);
        let (s, _, t) = send(
            &gw,
            reqwest::Method::GET,
            &format!("/v1/responses/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(s, 404, "{t}");
        assert_openai_error(&serde_json::from_str(&t).unwrap());
    }
}

#[tokio::test]
async fn a_stream_broken_midway_ends_failed_and_is_not_kept() {
    let (gw, _fake) = gateway_with(
        Script::Stream {
            first: std::time::Duration::ZERO,
            every: std::time::Duration::from_millis(5),
            chunks: 3,
            end: End::Cut,
        },
        "",
    )
    .await;
    let (s, events) = stream(
        &gw,
        &json!({"model": "llama-3.1-8b-instruct", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"response.completed"), "{names:?}");
    assert_eq!(names.last(), Some(&"response.failed"), "{names:?}");
    assert!(names.contains(&"error"), "{names:?}");
    let failed = &events.last().unwrap().1["response"];
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"]["message"].is_string());
    let id = failed["id"].as_str().unwrap();
    let (s, _, _) = send(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn built_in_tools_go_only_to_openai_and_unknown_fields_are_refused_by_name() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let a = fake.addr;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}
deployments:
{}  - {{name: gpt, kind: openai, model: gpt-4o, base_url: 'http://{a}/v1', api_key_env: CANARY}}
",
        deployments(a)
    ))
    .await;
    // No OpenAI deployment among those asked for: a request no deployment can serve, naming
    // the tool.
    for body in [
        json!({"model": "llama-3.1-8b-instruct", "input": "hi", "tools": [{"type": "web_search"}]}),
        json!({"model": "claude-sonnet-4-5", "input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
        json!({"model": "llama-3.1-8b-instruct", "input": [{"role": "user", "content": "news?"}, {"type": "web_search_call", "id": "ws_1", "status": "completed"}]}),
    ] {
        let (s, _, r) = create(&gw, &body).await;
        assert_eq!(s, 400, "{r}");
        let e = assert_openai_error(&r);
        assert_eq!(e["code"], "unsupported_tool", "{r}");
        let tool = if body.to_string().contains("file_search") {
            "file_search"
        } else {
            "web_search"
        };
        assert!(e["message"].as_str().unwrap().contains(tool), "{r}");
    }
    assert!(
        fake.seen().is_empty(),
        "nothing refused reached an upstream"
    );
    // Among several, the OpenAI deployment serves it, with the tool as the client sent it.
    let (s, h, r) = create(
        &gw,
        &json!({"model": "auto", "input": "news?", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(h["x-modelgate-deployment"], "gpt");
    let sent = fake.seen().last().unwrap().body.clone();
    assert_eq!(sent["tools"][0]["type"], "web_search");
    assert_eq!(sent["tool_choice"]["type"], "web_search");

    let (s, _, r) = create(
        &gw,
        &json!({"model": "llama-3.1-8b-instruct", "input": "hi", "previous_response_id": "resp_nope"}),
    )
    .await;
    assert_eq!(s, 404, "{r}");
    let (s, _, r) = create(
        &gw,
        &json!({"model": "llama-3.1-8b-instruct", "input": "hi", "frobnicate": 1}),
    )
    .await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(r["error"]["param"], "frobnicate", "{r}");
    assert_eq!(r["error"]["code"], "unknown_parameter", "{r}");
}

#[tokio::test]
async fn a_stored_conversation_belongs_to_its_tenant_and_keeps_its_labels() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let a = fake.addr;
    let local = FakeUpstream::start(
        Script::Ok {
            text: "Hello from the local model".into(),
        },
        None,
    )
    .await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}
keys:
  - {{id: key-a, tenant: a, sha256: {}}}
  - {{id: key-a2, tenant: a, sha256: {}}}
  - {{id: key-public, tenant: a, sha256: {}, labels: {{data: public}}}}
  - {{id: key-secret, tenant: a, sha256: {}, labels: {{data: confidential}}}}
  - {{id: key-b, tenant: b, sha256: {}}}
policies: {{active: confidential-local}}
deployments:
  - {{name: closed, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{a}/v1', api_key_env: CANARY, locality: remote}}
  - {{name: local, kind: openai-compatible, model: llama-3.1-8b-instruct, base_url: '{}', locality: local, data: {{retains_prompts: false, trains_on_prompts: false}}}}
",
        modelgate::config::keys::hash_hex("sk-a"),
        modelgate::config::keys::hash_hex("sk-a2"),
        modelgate::config::keys::hash_hex("sk-public"),
        modelgate::config::keys::hash_hex("sk-secret"),
        modelgate::config::keys::hash_hex("sk-b"),
        local.base_url(),
    );
    let gw = Gateway::start(&yaml).await;
    let post = |key: &'static str, body: Value| {
        let gw = &gw;
        async move {
            let (s, h, t) = send(
                gw,
                reqwest::Method::POST,
                "/v1/responses",
                Some(key),
                Some(&body),
            )
            .await;
            (s, h, serde_json::from_str::<Value>(&t).unwrap())
        }
    };
    // A confidential first turn, on the local model.
    let (s, h, first) = post(
        "sk-a",
        json!({"model": "auto", "input": "Our secret plan", "metadata": {"data": "confidential"}}),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(h["x-modelgate-deployment"], "local");
    let id = first["id"].as_str().unwrap().to_owned();

    // Another tenant cannot see, continue or delete it.
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/responses/{id}")),
        (
            reqwest::Method::GET,
            format!("/v1/responses/{id}/input_items"),
        ),
        (reqwest::Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let (s, _, t) = send(&gw, method, &path, Some("sk-b"), None).await;
        assert_eq!(s, 404, "{path}: {t}");
        assert!(!t.contains("secret"), "{t}");
    }
    let (s, _, r) = post(
        "sk-b",
        json!({"model": "auto", "input": "go on", "previous_response_id": id}),
    )
    .await;
    assert_eq!(s, 404, "{r}");
    assert!(!r.to_string().contains("secret"));

    // The same tenant continues it; the second turn asks for the closed model and says
    // nothing of confidentiality, and still stays local, or is refused.
    let (s, h, r) = post(
        "sk-a2",
        json!({"model": "auto", "input": "And the next step?", "previous_response_id": id,
               "metadata": {"data": "public"}}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(h["x-modelgate-deployment"], "local");
    assert_eq!(h["x-modelgate-rule"], "confidential-stays-local");
    let (s, _, r) = post(
        "sk-a",
        json!({"model": "claude-sonnet-4-5", "input": "Summarise", "previous_response_id": r["id"]}),
    )
    .await;
    assert_eq!(s, 403, "{r}");
    assert!(
        fake.seen().is_empty(),
        "no turn of a confidential conversation reached the closed deployment"
    );
    // A key whose own label says otherwise cannot continue it.
    let (s, _, r) = post(
        "sk-public",
        json!({"model": "auto", "input": "go on", "previous_response_id": id}),
    )
    .await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(r["error"]["code"], "conversation_label_conflict");
    // A conversation confidential by its key's label stays so when another key continues it.
    let (s, h, r) = post("sk-secret", json!({"model": "auto", "input": "Plan B"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(h["x-modelgate-deployment"], "local");
    let (s, h, r) = post(
        "sk-a",
        json!({"model": "auto", "input": "more", "previous_response_id": r["id"]}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(h["x-modelgate-rule"], "confidential-stays-local");
    assert_eq!(h["x-modelgate-deployment"], "local");
    // Its first turn reads back for its own tenant.
    let (s, _, t) = send(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        Some("sk-a"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{t}");
}

#[tokio::test]
async fn two_parallel_calls_and_their_outputs_through_every_dialect() {
    let (gw, _fake) = gateway().await;
    let tools = json!([
        {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    ]);
    for model in MODELS {
        for streamed in [false, true] {
            let body = json!({"model": model, "input": "Weather and time in Paris, in parallel",
                              "tools": tools, "parallel_tool_calls": true, "stream": streamed});
            let r = if streamed {
                let (s, events) = stream(&gw, &body).await;
                assert_eq!(s, 200);
                let added = events
                    .iter()
                    .filter(|(n, d)| {
                        n == "response.output_item.added" && d["item"]["type"] == "function_call"
                    })
                    .count();
                assert_eq!(added, 2, "{model}: {events:?}");
                check_stream(&events)
            } else {
                let (s, _, r) = create(&gw, &body).await;
                assert_eq!(s, 200, "{model}: {r}");
                r
            };
            let calls: Vec<&Value> = r["output"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["type"] == "function_call")
                .collect();
            let names: Vec<&str> = calls.iter().map(|c| c["name"].as_str().unwrap()).collect();
            assert_eq!(names, ["get_weather", "get_time"], "{model}: {r}");
            assert_ne!(calls[0]["call_id"], calls[1]["call_id"]);
            // Both outputs go back on the stored conversation.
            let outputs: Vec<Value> = calls
                .iter()
                .map(|c| json!({"type": "function_call_output", "call_id": c["call_id"], "output": "ok"}))
                .collect();
            let (s, _, r) = create(
                &gw,
                &json!({"model": model, "tools": tools, "previous_response_id": r["id"], "input": outputs}),
            )
            .await;
            assert_eq!(s, 200, "{model}: {r}");
            assert_eq!(output_text(&r), "Hello from the fake", "{model}: {r}");
        }
    }
}

#[tokio::test]
async fn gateways_sharing_redis_continue_each_others_conversations() {
    let Some(binary) = support::redis::Redis::find() else {
        return;
    };
    let mut redis = support::redis::Redis::start(binary);
    let store = format!("responses: {{store: '{}', ttl: 1h}}\n", redis.url());
    let (one, _fake) = gateway_with(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        &store,
    )
    .await;
    let (two, fake) = gateway_with(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        &store,
    )
    .await;
    let (s, _, first) = create(
        &one,
        &json!({"model": "claude-sonnet-4-5", "input": "My name is Ada."}),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    // Written in the background: the other gateway finds it once Redis has it.
    let id = first["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (s, _, _) = send(
            &two,
            reqwest::Method::GET,
            &format!("/v1/responses/{id}"),
            None,
            None,
        )
        .await;
        if s == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never reached Redis");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (s, _, r) = create(
        &two,
        &json!({"model": "claude-sonnet-4-5", "input": "What is my name?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        fake.seen()
            .last()
            .unwrap()
            .body
            .to_string()
            .contains("My name is Ada."),
        "the other gateway replayed the conversation"
    );
    // Deleted through one, gone for both.
    let (s, _, _) = send(
        &two,
        reqwest::Method::DELETE,
        &format!("/v1/responses/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    for gw in [&one, &two] {
        let (s, _, _) = send(
            gw,
            reqwest::Method::GET,
            &format!("/v1/responses/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(s, 404);
    }
    // With Redis gone, a conversation this gateway never saw cannot be read: 503, not 404.
    redis.down();
    let (s, _, t) = send(
        &two,
        reqwest::Method::GET,
        "/v1/responses/resp_elsewhere",
        None,
        None,
    )
    .await;
    assert_eq!(s, 503, "{t}");
    let e = assert_openai_error(&serde_json::from_str(&t).unwrap()).clone();
    assert_eq!(e["code"], "response_store_unavailable");
}

#[tokio::test]
async fn a_namespace_of_functions_is_called_by_its_names_on_every_dialect() {
    let (gw, fake) = gateway().await;
    let tools = json!([{"type": "namespace", "name": "weather", "description": "Weather tools",
        "tools": [{"type": "function", "name": "current", "description": "Current weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    for model in MODELS {
        for streamed in [false, true] {
            let body = json!({"model": model, "input": "Weather in Paris?", "tools": tools, "stream": streamed});
            let r = answer(&gw, &body, streamed).await;
            let call = r["output"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["type"] == "function_call")
                .unwrap_or_else(|| panic!("{model}: no call in {r}"))
                .clone();
            assert_eq!(call["namespace"], "weather", "{model}: {call}");
            assert_eq!(call["name"], "current", "{model}: {call}");
            assert_eq!(r["tools"], tools, "the response repeats the tools as sent");
            let (s, _, r) = create(
                &gw,
                &json!({"model": model, "tools": tools, "previous_response_id": r["id"], "input": [
                    {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]}),
            )
            .await;
            assert_eq!(s, 200, "{model}: {r}");
        }
    }
    // The dialects saw one function, named with its namespace.
    let seen = fake.seen();
    let oa = seen
        .iter()
        .find(|s| s.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(oa.body["tools"][0]["function"]["name"], "weather__current");
}

#[tokio::test]
async fn a_conversation_over_its_bounds_is_refused_and_store_false_keeps_nothing() {
    let (gw, fake) = gateway_with(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        "responses: {max_items: 4}\n",
    )
    .await;
    let model = "claude-sonnet-4-5";
    // One input item and one output item per turn: the third turn would hold five.
    let mut previous = Value::Null;
    for turn in 0..2 {
        let (s, _, r) = create(
            &gw,
            &json!({"model": model, "input": format!("turn {turn}"), "previous_response_id": previous}),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        previous = r["id"].clone();
    }
    let before = fake.seen().len();
    let (s, _, r) = create(
        &gw,
        &json!({"model": model, "input": "turn 2", "previous_response_id": previous}),
    )
    .await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(assert_openai_error(&r)["code"], "conversation_too_large");
    assert_eq!(
        fake.seen().len(),
        before,
        "refused before any upstream call"
    );

    let (s, _, r) = create(
        &gw,
        &json!({"model": model, "input": "forget me", "store": false}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["store"], false);
    let (s, _, _) = send(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/responses/{}", r["id"].as_str().unwrap()),
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn malformed_requests_get_openai_errors_and_nothing_breaks() {
    let (gw, fake) = gateway().await;
    let m = "llama-3.1-8b-instruct";
    let bodies = [
        json!({"input": "no model"}),
        json!({"model": m}),
        json!({"model": m, "input": 7}),
        json!({"model": m, "input": []}),
        json!({"model": m, "input": [7]}),
        json!({"model": m, "input": [{"type": "message", "role": "tool", "content": "x"}]}),
        json!({"model": m, "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
        json!({"model": m, "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}),
        json!({"model": m, "input": [{"type": "function_call", "name": "f"}]}),
        json!({"model": m, "input": [{"type": "function_call_output", "call_id": "c"}]}),
        json!({"model": m, "input": [{"type": "item_reference", "id": "msg_1"}]}),
        json!({"model": m, "input": "x", "tools": [{"type": "function"}]}),
        json!({"model": m, "input": "x", "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "a"}]}),
        json!({"model": m, "input": "x", "tool_choice": {"type": "allowed_tools"}}),
        json!({"model": m, "input": "x", "text": {"format": {"type": "json_schema"}}}),
        json!({"model": m, "input": "x", "text": {"format": {"type": "yaml"}}}),
        json!({"model": m, "input": "x", "metadata": {"k": 1}}),
        json!({"model": m, "input": "x", "background": true}),
        json!({"model": m, "input": "x", "conversation": "conv_1"}),
        json!({"model": m, "input": "x", "truncation": "sometimes"}),
        json!({"model": m, "input": "x", "previous_response_id": ""}),
        json!({"model": m, "input": "x", "max_output_tokens": -1}),
    ];
    for body in bodies {
        let (s, _, r) = create(&gw, &body).await;
        assert_eq!(s, 400, "{body}: {r}");
        assert_openai_error(&r);
    }
    let (s, _, t) = send(&gw, reqwest::Method::POST, "/v1/responses", None, None).await;
    assert_eq!(s, 400, "{t}");
    let (s, h, _) = send(
        &gw,
        reqwest::Method::PUT,
        "/v1/responses/resp_1",
        None,
        None,
    )
    .await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "GET, DELETE");
    let (s, _, _) = send(
        &gw,
        reqwest::Method::GET,
        "/v1/responses/resp_1/other",
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert!(fake.seen().is_empty());
    let (s, _, r) = create(&gw, &json!({"model": m, "input": "still here"})).await;
    assert_eq!(s, 200, "{r}");
}

#[tokio::test]
async fn an_openai_deployment_gets_the_responses_api_itself_and_keeps_its_reasoning() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: gpt, kind: openai, model: gpt-4o, base_url: 'http://{a}/v1', api_key_env: CANARY}}\n  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{a}/v1', api_key_env: CANARY}}\n",
        a = fake.addr
    ))
    .await;
    let mut previous = Value::Null;
    for (turn, streamed) in [false, true, false].into_iter().enumerate() {
        let body = json!({"model": "gpt-4o", "input": format!("turn {turn}"), "stream": streamed,
                          "previous_response_id": previous, "reasoning": {"effort": "low"}});
        let r = answer(&gw, &body, streamed).await;
        assert_ne!(r["id"], "resp_fake", "the gateway's own id");
        assert_eq!(r["model"], "gpt-4o");
        assert_eq!(r["output"][0]["type"], "reasoning", "{r}");
        assert_eq!(r["output"][0]["encrypted_content"], "gAAAA-fake");
        assert_eq!(output_text(&r), "Hello from the fake");
        assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 5);
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 4);
        previous = r["id"].clone();
    }
    let seen = fake.seen();
    assert!(
        seen.iter().all(|s| s.path == "/v1/responses"),
        "chat was never used"
    );
    // The third turn carried the whole conversation, reasoning items included.
    let last = &seen.last().unwrap().body;
    let input = last["input"].as_array().unwrap();
    let kinds: Vec<&str> = input.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "reasoning",
            "message",
            "message",
            "reasoning",
            "message",
            "message"
        ],
        "{last}"
    );
    assert!(last.get("previous_response_id").is_none());
    // Continued on a translated dialect, the reasoning items stay behind, and it says so.
    let (s, h, r) = create(
        &gw,
        &json!({"model": "claude-sonnet-4-5", "input": "and now?", "previous_response_id": previous}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(h["x-modelgate-dropped-items"], "reasoning=3");

    // A tool round trip, whole and streamed.
    for streamed in [false, true] {
        let body = json!({"model": "gpt-4o", "input": "Weather in Paris?", "tools": weather_tool(), "stream": streamed});
        let r = answer(&gw, &body, streamed).await;
        let call = r["output"][1].clone();
        assert_eq!(call["type"], "function_call", "{r}");
        let (s, _, r) = create(
            &gw,
            &json!({"model": "gpt-4o", "tools": weather_tool(), "previous_response_id": r["id"], "input": [
                {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]}),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(output_text(&r), "Hello from the fake");
    }
}

#[tokio::test]
async fn an_openai_deployment_gets_parallel_calls_images_schemas_and_breaks_visibly() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: gpt, kind: openai, model: gpt-4o, base_url: 'http://{}/v1', api_key_env: CANARY}}\n",
        fake.addr
    ))
    .await;
    let tools = json!([
        {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}},
        {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}},
    ]);
    for streamed in [false, true] {
        let r = answer(
            &gw,
            &json!({"model": "gpt-4o", "input": "Weather and time, in parallel", "tools": tools, "stream": streamed}),
            streamed,
        )
        .await;
        let names: Vec<&str> = r["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "function_call")
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["get_weather", "get_time"], "{r}");
    }
    let png = "data:image/png;base64,iVBORw0KGgo=";
    let r = answer(
        &gw,
        &json!({"model": "gpt-4o", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": png}]}],
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}}}),
        false,
    )
    .await;
    assert_eq!(r["text"]["format"]["name"], "answer");
    let sent = fake.seen().last().unwrap().body.clone();
    assert_eq!(sent["input"][0]["content"][1]["image_url"], png);
    assert_eq!(sent["text"]["format"]["type"], "json_schema");

    // OpenAI's stream stops after its first delta: the client's ends failed, and nothing is kept.
    let created = json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_fake", "object": "response", "status": "in_progress", "output": []}});
    let added = json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
        "item": {"type": "message", "id": "msg_fake", "status": "in_progress", "role": "assistant", "content": []}});
    let delta = json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_fake",
        "output_index": 0, "content_index": 0, "delta": "Hel"});
    fake.set(Script::Sse {
        events: [
            ("response.created", created),
            ("response.output_item.added", added),
            ("response.output_text.delta", delta),
        ]
        .iter()
        .map(|(k, v)| format!("event: {k}\ndata: {v}"))
        .collect(),
        delay: std::time::Duration::ZERO,
        done: false,
    });
    let (s, events) = stream(
        &gw,
        &json!({"model": "gpt-4o", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"response.failed"), "{names:?}");
    assert!(!names.contains(&"response.completed"));
    let id = events.last().unwrap().1["response"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _, _) = send(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
}
