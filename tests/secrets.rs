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
        modelgate::auth::keys::hash_hex(CLIENT_KEY),
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
    assert!(
        log.lines().count() > 50,
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
