//! End-to-end: chat completions through the gateway to a fake OpenAI-compatible upstream, over
//! real loopback HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::*;

fn config(fakes: &[(&str, &str, &FakeUpstream)]) -> String {
    let mut s = String::from("reload: {poll_interval: 0}\ndeployments:\n");
    for (name, model, fake) in fakes {
        s.push_str(&deployment(name, model, fake));
    }
    s
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

#[tokio::test]
async fn a_json_answer_passes_through_with_the_decision_headers() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "Hello there".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&config(&[("local", "llama-3.1-8b-instruct", &fake)])).await;
    let mut body = hello("llama-3.1-8b-instruct");
    body["top_k"] = json!(40);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-secret-should-not-travel")
        .header("x-custom", "nope")
        .header("cookie", "a=b")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-modelgate-model"], "llama-3.1-8b-instruct");
    assert_eq!(h["x-modelgate-provider"], "openai-compatible");
    assert_eq!(h["x-modelgate-deployment"], "local");
    assert_eq!(h["x-modelgate-policy"], "default");
    assert_eq!(h["x-modelgate-openness"], "open-weight");
    assert_eq!(h["x-modelgate-license"], "llama3.1-community");
    assert_eq!(h["x-request-id"].len(), 32);
    let v: Value = r.json_value().await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there");
    assert_eq!(v["usage"]["total_tokens"], 18);

    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.path, "/v1/chat/completions");
    assert_eq!(
        s.body["model"], "up-llama-3.1-8b-instruct",
        "model rewritten to the upstream name"
    );
    assert_eq!(s.body["top_k"], 40, "unknown fields pass through");
    assert_eq!(
        s.headers["authorization"],
        format!("Bearer {CANARY_KEY}").as_str()
    );
    for h in ["x-custom", "cookie", "x-request-id"] {
        assert!(
            s.headers.get(h).is_none(),
            "client header {h} was forwarded"
        );
    }
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "modelgate_requests_total",
            &[("endpoint", "chat_completions"), ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "modelgate_tokens_total",
            &[("deployment", "local"), ("direction", "output")]
        ),
        7.0
    );
    assert_eq!(
        metric(
            &m,
            "modelgate_upstream_attempts_total",
            &[("deployment", "local"), ("result", "ok")]
        ),
        1.0
    );
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap()
    }
}

#[tokio::test]
async fn streams_are_relayed_chunk_by_chunk_without_buffering() {
    let events: Vec<String> = chunks("m", "one two three four", false);
    let n = events.len();
    let fake = FakeUpstream::start(
        Script::Sse {
            events,
            delay: Duration::from_millis(150),
            done: true,
        },
        None,
    )
    .await;
    let gw = Gateway::start(&config(&[("local", "qwen3-8b", &fake)])).await;
    let mut body = hello("qwen3-8b");
    body["stream"] = json!(true);
    let started = Instant::now();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let mut arrivals = Vec::new();
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(started.elapsed());
        all.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(all).unwrap();
    assert_eq!(text.matches("data: ").count(), n + 1, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    // Each upstream chunk arrives on its own, about 150 ms after the previous one: nothing
    // waited for the whole answer.
    assert!(
        arrivals.len() >= n,
        "{} arrivals for {n} chunks",
        arrivals.len()
    );
    assert!(
        arrivals[0] < Duration::from_millis(600),
        "first chunk after {:?}",
        arrivals[0]
    );
    assert!(
        *arrivals.last().unwrap() - arrivals[0] >= Duration::from_millis(150 * (n as u64 - 1)),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn usage_is_asked_for_upstream_and_shown_only_when_the_client_asked() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "a b c".into(),
        },
        None,
    )
    .await;
    let gw = Gateway::start(&config(&[("local", "qwen3-8b", &fake)])).await;

    let mut body = hello("qwen3-8b");
    body["stream"] = json!(true);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let events = sse_events(r).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events.iter().all(|e| !e.contains("\"prompt_tokens\"")),
        "{events:?}"
    );
    assert_eq!(
        fake.seen()[0].body["stream_options"]["include_usage"],
        true,
        "gateway asks for usage"
    );

    body["stream_options"] = json!({"include_usage": true});
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let events = sse_events(r).await;
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    // Both streams were accounted from the upstream's usage.
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "modelgate_tokens_total",
            &[("deployment", "local"), ("direction", "input")]
        ),
        22.0
    );
}

#[tokio::test]
async fn a_stream_cut_before_done_ends_with_an_error_event() {
    let mut events = chunks("m", "partial answer", false);
    events.truncate(2);
    let fake = FakeUpstream::start(
        Script::Sse {
            events,
            delay: Duration::ZERO,
            done: false,
        },
        None,
    )
    .await;
    let gw = Gateway::start(&config(&[("local", "qwen3-8b", &fake)])).await;
    let mut body = hello("qwen3-8b");
    body["stream"] = json!(true);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(r).await;
    assert!(!events.contains(&"[DONE]".to_owned()), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    let e = assert_openai_error(&last);
    assert_eq!(e["code"], "upstream_stream_cut");
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "modelgate_stream_ends_total",
            &[("reason", "upstream_cut")]
        ),
        1.0
    );
}

#[tokio::test]
async fn an_in_band_error_ends_the_stream_with_an_error_event() {
    let mut events = chunks("m", "partial", false);
    events.push(json!({"error": {"message": "overloaded", "type": "server_error"}}).to_string());
    let fake = FakeUpstream::start(
        Script::Sse {
            events,
            delay: Duration::ZERO,
            done: true,
        },
        None,
    )
    .await;
    let gw = Gateway::start(&config(&[("local", "qwen3-8b", &fake)])).await;
    let mut body = hello("qwen3-8b");
    body["stream"] = json!(true);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let events = sse_events(r).await;
    assert!(!events.contains(&"[DONE]".to_owned()));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(assert_openai_error(&last)["message"], "overloaded");
}

#[tokio::test]
async fn upstream_errors_map_to_the_right_status() {
    let err = |m: &str| json!({"error": {"message": m, "type": "invalid_request_error", "param": null, "code": null}});
    let cases: Vec<(Script, u16, &str)> = vec![
        (
            Script::Status {
                status: 400,
                body: err("context too long"),
                retry_after: None,
            },
            400,
            "context too long",
        ),
        (
            Script::Status {
                status: 404,
                body: err("no such model"),
                retry_after: None,
            },
            404,
            "no such model",
        ),
        (
            Script::Status {
                status: 422,
                body: json!({"detail": "bad"}),
                retry_after: None,
            },
            422,
            "bad",
        ),
        (
            Script::Status {
                status: 500,
                body: err("boom"),
                retry_after: None,
            },
            502,
            "HTTP 500: boom",
        ),
        (
            Script::Status {
                status: 503,
                body: json!("plain"),
                retry_after: Some("3".into()),
            },
            503,
            "HTTP 503",
        ),
        (
            Script::Status {
                status: 429,
                body: err("slow down"),
                retry_after: Some("7".into()),
            },
            429,
            "slow down",
        ),
        (
            Script::Status {
                status: 401,
                body: err(&format!("Incorrect API key provided: {CANARY_KEY}")),
                retry_after: None,
            },
            502,
            "refused the gateway's credentials",
        ),
        (
            Script::Raw {
                content_type: "application/json".into(),
                body: "{\"not\":\"a completion\"}".into(),
            },
            502,
            "missing 'choices'",
        ),
        (
            Script::Raw {
                content_type: "application/json".into(),
                body: "garbage".into(),
            },
            502,
            "invalid answer",
        ),
    ];
    for (script, want, text) in cases {
        // A gateway each: a Retry-After cools the deployment down for the next request.
        let fake = FakeUpstream::start(script, None).await;
        let gw = Gateway::start(&config(&[("local", "qwen3-8b", &fake)])).await;
        let (status, headers, v) = chat(&gw, hello("qwen3-8b")).await;
        assert_eq!(status.as_u16(), want, "{v}");
        let e = assert_openai_error(&v);
        assert!(
            e["message"].as_str().unwrap().contains(text),
            "{v} should contain {text}"
        );
        assert!(!v.to_string().contains("canary"), "{v}");
        assert!(headers.contains_key("x-request-id"));
        if want == 429 {
            assert_eq!(headers["retry-after"], "7");
            assert_eq!(e["type"], "rate_limit_error");
        }
        if want == 503 {
            assert_eq!(headers["retry-after"], "3");
        }
    }
}

#[tokio::test]
async fn a_failing_deployment_falls_back_to_the_next() {
    let broken = FakeUpstream::start(
        Script::Status {
            status: 503,
            body: json!({}),
            retry_after: None,
        },
        None,
    )
    .await;
    let good = FakeUpstream::start(
        Script::Ok {
            text: "from the second".into(),
        },
        None,
    )
    .await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}{}",
        deployment("first", "qwen3-8b", &broken),
        deployment("second", "qwen3-8b", &good).replace("}\n", ", price: {input: 1, output: 1}}\n")
    );
    let gw = Gateway::start(&yaml).await;
    let (status, headers, v) = chat(&gw, hello("qwen3-8b")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["x-modelgate-deployment"], "second");
    // Tried, retried once (the default), then the next deployment.
    assert_eq!(broken.seen().len(), 2);
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "modelgate_fallbacks_total", &[]), 1.0);
    assert_eq!(
        metric(&m, "modelgate_retries_total", &[("deployment", "first")]),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "modelgate_upstream_attempts_total",
            &[("deployment", "first"), ("result", "server_error")]
        ),
        2.0
    );

    // A request the upstream refuses as malformed is not retried elsewhere.
    broken.set(Script::Status {
        status: 400,
        body: json!({"error": {"message": "bad"}}),
        retry_after: None,
    });
    let (status, _, _) = chat(&gw, hello("qwen3-8b")).await;
    assert_eq!(status, 400);
    assert_eq!(good.seen().len(), 1);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_503() {
    let fake = FakeUpstream::start(Script::Ok { text: "x".into() }, None).await;
    let dead = format!("http://127.0.0.1:{}/v1", free_port().await);
    let yaml = config(&[("local", "qwen3-8b", &fake)]).replace(&fake.base_url(), &dead);
    let gw = Gateway::start(&yaml).await;
    let (status, _, v) = chat(&gw, hello("qwen3-8b")).await;
    assert_eq!(status, 503);
    assert_eq!(assert_openai_error(&v)["code"], "no_eligible_backend");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not connect")
    );
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn models_are_listed_with_openness_license_and_price() {
    let fake = FakeUpstream::start(Script::Ok { text: "x".into() }, None).await;
    let yaml = format!(
        "{}  - {{name: echo, kind: echo, model: echo}}\n",
        config(&[("local", "llama-3.1-8b-instruct", &fake)])
    );
    let gw = Gateway::start(&yaml).await;
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json_value().await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["llama-3.1-8b-instruct", "echo"]);
    let m = &v["data"][0];
    assert_eq!(m["object"], "model");
    assert_eq!(m["openness"], "open-weight");
    assert_eq!(m["license"]["id"], "llama3.1-community");
    assert_eq!(m["license"]["commercial_use"], "conditional");
    assert_eq!(m["deployments"][0]["locality"], "local");
    assert_eq!(m["deployments"][0]["price"]["input"], 0.0);
    assert_eq!(m["deployments"][0]["identified"]["basis"], "configured");

    let r = client()
        .get(gw.url("/v1/models/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A test model has no openness class.
    assert_eq!(r.json_value().await["openness"], "unknown");
    let r = client()
        .get(gw.url("/v1/models/gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        assert_openai_error(&r.json_value().await)["code"],
        "model_not_found"
    );
}

#[tokio::test]
async fn http2_without_tls_is_served() {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "over h2".into(),
        },
        None,
    )
    .await;
    let gw = Gateway::start(&config(&[("local", "qwen3-8b", &fake)])).await;
    modelgate::upstream::client::install_crypto();
    #[expect(clippy::disallowed_methods, reason = "a test client speaking h2c")]
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let r = h2
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(hello("qwen3-8b").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("over h2"));
}
