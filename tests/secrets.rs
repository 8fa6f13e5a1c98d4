//! Secrets never leak: a gateway at the most verbose log level, holding canary provider keys
//! and canary client keys, is driven through every kind of answer, including upstreams that
//! echo the key back in their errors. Then everything it wrote (its whole log, `/metrics`,
//! every response body and header it sent) is searched for the canaries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;
use support::process::Process;
use support::*;

const CLIENT_KEY: &str = "mg-canary-client-0b7e41d2c9a85f36";

/// Everything a client got back: status, headers and body.
async fn record(out: &mut String, r: reqwest::Response) {
    let _ = writeln!(out, "{}", r.status());
    for (k, v) in r.headers() {
        let _ = writeln!(out, "{k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }
    let _ = writeln!(out, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test]
async fn no_canary_appears_in_logs_metrics_or_responses() {
    // Upstreams that quote the key they were sent, as OpenAI's 401 does.
    let echo_key = json!({"error": {"message": format!("Incorrect API key provided: {CANARY_KEY}. You can find your API key at ..."), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
    let openai = FakeUpstream::start(
        Script::Ok {
            text: "fine".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let broken = FakeUpstream::start(
        Script::Sequence(vec![
            Script::Status { status: 401, body: echo_key.clone(), retry_after: None },
            Script::Status { status: 500, body: json!({"error": {"message": format!("upstream used key {CANARY_KEY}")}}), retry_after: None },
            Script::Status { status: 400, body: json!({"error": {"message": format!("bad request for Bearer {CANARY_KEY}"), "type": "invalid_request_error"}}), retry_after: None },
            Script::Redirect(format!("http://127.0.0.1:1/?key={CANARY_KEY}")),
            Script::Sse { events: vec![json!({"error": {"message": format!("in-band {CANARY_KEY}")}}).to_string()], delay: Duration::ZERO, done: false },
        ]),
        Some(CANARY_KEY),
    )
    .await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\nkeys:\n  - {{id: canary-client, tenant: t, sha256: {}}}\ndeployments:\n{}{}",
        modelgate::config::keys::hash_hex(CLIENT_KEY),
        deployment("good", "qwen3-8b", &openai),
        deployment("broken", "llama-3.1-8b-instruct", &broken).replace(
            "}\n",
            ", retries: {attempts: 0}, breaker: {consecutive_failures: 0}}\n"
        ),
    );
    let mut p = Process::start_with(&yaml, &[("RUST_LOG", "trace")]);
    let c = client();
    let mut seen = String::new();
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };
    let url = format!("{}/v1/chat/completions", p.base);
    for (model, stream) in [("qwen3-8b", false), ("qwen3-8b", true)] {
        let r = c
            .post(&url)
            .bearer_auth(CLIENT_KEY)
            .body(chat(model, stream))
            .send()
            .await
            .unwrap();
        record(&mut seen, r).await;
    }
    // Each scripted failure of the broken upstream, streaming and not.
    for i in 0..5 {
        let r = c
            .post(&url)
            .bearer_auth(CLIENT_KEY)
            .body(chat("llama-3.1-8b-instruct", i == 4))
            .send()
            .await
            .unwrap();
        record(&mut seen, r).await;
    }
    // Wrong and malformed client keys, including one a character off the canary.
    for auth in [
        format!("Bearer {CLIENT_KEY}x"),
        format!("Basic {CLIENT_KEY}"),
        CLIENT_KEY.to_owned(),
    ] {
        let r = c
            .post(&url)
            .header("authorization", auth)
            .body(chat("qwen3-8b", false))
            .send()
            .await
            .unwrap();
        record(&mut seen, r).await;
    }
    let r = c
        .post(&url)
        .header("x-api-key", format!("{CLIENT_KEY}-wrong"))
        .body("{")
        .send()
        .await
        .unwrap();
    record(&mut seen, r).await;
    for path in ["/v1/models", "/v1/usage", "/v1/nothing"] {
        let r = c
            .get(format!("{}{path}", p.base))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        record(&mut seen, r).await;
    }
    for path in ["/metrics", "/v1/usage", "/readyz"] {
        let r = c.get(format!("{}{path}", p.admin)).send().await.unwrap();
        record(&mut seen, r).await;
    }
    // A reload, and a refused reload.
    std::fs::write(&p.config, yaml.replace("reload:", "relaod:")).unwrap();
    p.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.signal("-TERM");
    p.wait(Duration::from_secs(10));
    let log = p.log.lock().unwrap().clone();
    // Every request leaves its lines, and the decision's come at debug level.
    assert!(
        log.lines().count() > 25 && log.contains(" DEBUG "),
        "the trace log is suspiciously short:\n{log}"
    );
    assert!(log.contains("request served") && log.contains("request failed"));
    for (what, text) in [("the log", &log), ("what clients got", &seen)] {
        for canary in [CANARY_KEY, &CANARY_KEY[..16], CLIENT_KEY, &CLIENT_KEY[..16]] {
            if let Some(i) = text.find(canary) {
                let start = text[..i].rfind('\n').map_or(0, |j| j + 1);
                let end = text[i..].find('\n').map_or(text.len(), |j| i + j);
                panic!("{what} holds a canary: {}", &text[start..end]);
            }
        }
    }
}

/// A key the key-like-token heuristic does not catch: only exact masking keeps it in.
const PLAIN_KEY: &str = "plainsecret+only/letters=zq";

#[tokio::test]
async fn a_plain_key_in_every_encoding_stays_in_on_the_other_error_paths() {
    // Embeddings, token counts, and a 502 that sums up several attempts (retry and fallback).
    let forms = [
        PLAIN_KEY.to_owned(),
        "plainsecret%2Bonly%2Fletters%3Dzq".to_owned(),
        "plainsecret%2bonly%2fletters%3dzq".to_owned(),
        "cGxhaW5zZWNyZXQrb25seS9sZXR0ZXJzPXpx".to_owned(),
        format!("authorization=Bearer%20{PLAIN_KEY}"),
    ]
    .join(" ");
    let status = |code: u16| Script::Status {
        status: code,
        body: json!({"error": {"message": format!("upstream saw {forms}"), "type": "invalid_request_error", "param": null, "code": null}}),
        retry_after: None,
    };
    let openai = FakeUpstream::start(status(400), Some(PLAIN_KEY)).await;
    let anthropic = FakeUpstream::start(
        Script::Status {
            status: 400,
            body: json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("count failed for {forms}")}}),
            retry_after: None,
        },
        Some(PLAIN_KEY),
    )
    .await;
    let failing = FakeUpstream::start(status(500), Some(PLAIN_KEY)).await;
    let also_failing = FakeUpstream::start(status(503), Some(PLAIN_KEY)).await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  \
         - {{name: emb, kind: openai-compatible, model: text-embedding-3-small, base_url: '{}', api_key_env: PLAIN}}\n  \
         - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{}/v1', api_key_env: PLAIN, locality: remote}}\n  \
         - {{name: f1, kind: openai-compatible, model: qwen3-8b, base_url: '{}', api_key_env: PLAIN, retries: {{attempts: 1, backoff: 1ms}}}}\n  \
         - {{name: f2, kind: openai-compatible, model: qwen3-8b, base_url: '{}', api_key_env: PLAIN}}\n",
        openai.base_url(),
        anthropic.addr,
        failing.base_url(),
        also_failing.base_url(),
    );
    let mut p = Process::start_with(&yaml, &[("PLAIN", PLAIN_KEY), ("RUST_LOG", "trace")]);
    let c = client();
    let mut seen = String::new();
    for (path, body) in [
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "hi"}),
        ),
        (
            "/v1/messages/count_tokens",
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let r = c
            .post(format!("{}{path}", p.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_success(), "{path}");
        record(&mut seen, r).await;
    }
    assert!(failing.seen().len() >= 2 && !also_failing.seen().is_empty());
    assert!(seen.contains("[redacted]"), "{seen}");
    let metrics = p.metrics().await;
    p.signal("-TERM");
    p.wait(Duration::from_secs(10));
    let log = p.log.lock().unwrap().clone();
    for (what, text) in [
        ("what clients got", &seen),
        ("the log", &log),
        ("/metrics", &metrics),
    ] {
        for leak in ["plainsec", "cGxhaW5zZWNy", "only/letters"] {
            assert!(!text.contains(leak), "{what} leaks '{leak}':\n{text}");
        }
    }
}
