//! End-to-end: a shadow policy decides every request beside the live one, over real HTTP with
//! the gateway binary. Its verdicts are counted by agreement and written in the request lines,
//! and nothing is ever routed by it: the fakes behind the gateway see only what the live
//! policy sent them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::process::Process;
use support::*;

const SERIES: &str = "modelgate_shadow_decisions_total";

/// The shadow decisions counted with this agreement, between the live `confidential-local`
/// and the shadow `research-open-source`.
fn shadowed(metrics: &str, agreement: &str) -> f64 {
    metric(
        metrics,
        SERIES,
        &[
            ("policy", "confidential-local"),
            ("shadow", "research-open-source"),
            ("agreement", agreement),
        ],
    )
}

async fn post(p: &Process, path: &str, body: Value, labels: Option<&str>) -> u16 {
    let mut rb = client()
        .post(format!("{}{path}", p.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(l) = labels {
        rb = rb.header("x-modelgate-labels", l);
    }
    rb.send().await.unwrap().status().as_u16()
}

fn msg(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_shadow_policy_is_counted_and_logged_but_never_routes() {
    let ok = |t: &str| Script::Ok { text: t.into() };
    let llama = FakeUpstream::start(ok("llama"), Some(CANARY_KEY)).await;
    let smol = FakeUpstream::start(ok("smol"), Some(CANARY_KEY)).await;
    let closed = FakeUpstream::start(ok("closed"), Some(CANARY_KEY)).await;
    let emb = FakeUpstream::start(ok("emb"), Some(CANARY_KEY)).await;
    // The open-source model costs a little, so `auto` goes to llama first under the live
    // policy and to smol (the only open-source one) under the shadow's research rule.
    let yaml = format!(
        "reload: {{poll_interval: 0}}\npolicies: {{active: confidential-local, shadow: research-open-source}}\ndeployments:\n{}{}  - {{name: local-smol, kind: openai-compatible, model: smollm2-135m-instruct, upstream_model: up-smollm2-135m-instruct, base_url: '{}', api_key_env: CANARY, price: {{input: 0.01, output: 0.01}}}}\n  - {{name: closed-gpt-4o, kind: openai, model: gpt-4o, base_url: '{}', api_key_env: CANARY, locality: remote, data: {{retains_prompts: true}}}}\n",
        deployment("local-llama", "llama-3.1-8b-instruct", &llama),
        deployment("emb", "text-embedding-3-small", &emb),
        smol.base_url(),
        closed.base_url()
    );
    let mut p = Process::start(&yaml);

    // Every series exists before the first request.
    let m = p.metrics().await;
    for a in [
        "same",
        "other_deployment",
        "shadow_refuses",
        "shadow_allows",
    ] {
        let line = m
            .lines()
            .find(|l| l.starts_with(SERIES) && l.contains(&format!("agreement=\"{a}\"")));
        assert!(line.is_some_and(|l| l.ends_with(" 0")), "{a}:\n{m}");
    }

    let chat = "/v1/chat/completions";
    // Both send it to llama, in each API's format: the same.
    assert_eq!(post(&p, chat, msg("local-llama"), None).await, 200);
    assert_eq!(post(&p, chat, msg("local-llama"), None).await, 200);
    let anthropic = json!({"model": "local-llama", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&p, "/v1/messages", anthropic, None).await, 200);
    let responses = json!({"model": "local-llama", "input": "hi", "store": false});
    assert_eq!(post(&p, "/v1/responses", responses, None).await, 200);
    // Both refuse it (no such model): the same.
    assert_eq!(post(&p, chat, msg("no-such-model"), None).await, 404);
    // The shadow's research rule sends `auto` to the open-source model instead.
    let research = Some("purpose=research");
    assert_eq!(post(&p, chat, msg("auto"), research).await, 200);
    // ...and refuses llama, which is open-weight, not open-source.
    let llama_model = msg("llama-3.1-8b-instruct");
    assert_eq!(post(&p, chat, llama_model, research).await, 200);
    // ...and the closed embedding model.
    let embed = json!({"model": "text-embedding-3-small", "input": "hi"});
    assert_eq!(post(&p, "/v1/embeddings", embed, research).await, 200);
    // The live policy keeps confidential data local; the shadow has no such rule.
    let confidential = Some("data=confidential");
    assert_eq!(post(&p, chat, msg("gpt-4o"), confidential).await, 403);

    let m = p.metrics().await;
    assert_eq!(shadowed(&m, "same"), 5.0, "{m}");
    assert_eq!(shadowed(&m, "other_deployment"), 1.0, "{m}");
    assert_eq!(shadowed(&m, "shadow_refuses"), 2.0, "{m}");
    assert_eq!(shadowed(&m, "shadow_allows"), 1.0, "{m}");
    assert_eq!(metric(&m, SERIES, &[]), 9.0, "{m}");

    // Routed by the live policy alone: the shadow's choices (smol for `auto`, the closed API
    // for the confidential request) were never called.
    assert_eq!(llama.seen().len(), 6);
    assert_eq!(emb.seen().len(), 1);
    assert!(smol.seen().is_empty(), "the shadow's choice was called");
    assert!(closed.seen().is_empty(), "the shadow's choice was called");

    p.signal("-TERM");
    p.wait(Duration::from_secs(10));
    let log = p.log.lock().unwrap().clone();
    let line = |agreement: &str, more: &[&str]| {
        log.lines()
            .filter(|l| l.contains("request served") || l.contains("request failed"))
            .filter(|l| l.contains(&format!("shadow_agreement={agreement}")))
            .any(|l| {
                l.contains("shadow=research-open-source") && more.iter().all(|m| l.contains(m))
            })
    };
    assert!(
        line(
            "same",
            &[
                "request served",
                "shadow_rule=everything-else",
                "shadow_deployment=local-llama",
                "shadow_refused=-"
            ]
        ),
        "{log}"
    );
    assert!(
        line(
            "same",
            &[
                "request failed",
                "shadow_rule=-",
                "shadow_deployment=-",
                "shadow_refused=model_not_found"
            ]
        ),
        "{log}"
    );
    assert!(
        line(
            "other_deployment",
            &[
                "shadow_rule=research-open-source-only",
                "shadow_deployment=local-smol",
                "deployment=local-llama"
            ]
        ),
        "{log}"
    );
    assert!(
        line(
            "shadow_refuses",
            &[
                "request served",
                "shadow_deployment=-",
                "shadow_refused=openness"
            ]
        ),
        "{log}"
    );
    assert!(
        line(
            "shadow_allows",
            &[
                "request failed",
                "policy=confidential-local",
                "shadow_deployment=closed-gpt-4o"
            ]
        ),
        "{log}"
    );
}
