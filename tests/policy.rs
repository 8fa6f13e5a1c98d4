//! End-to-end: policies decide where requests go, over real HTTP, with a fake local open-weight
//! backend and a fake closed API; what the closed one never sees is checked on its side.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use serde_json::{Value, json};
use support::*;

/// A local open-weight model, a local open-source one, and a closed API (GPT-4o at its list
/// price, on a fake that checks the key as OpenAI does).
async fn fleet(policy: &str) -> (Gateway, FakeUpstream, FakeUpstream, FakeUpstream) {
    let local = FakeUpstream::start(
        Script::Ok {
            text: "local answer".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let open = FakeUpstream::start(
        Script::Ok {
            text: "open answer".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let closed = FakeUpstream::start(
        Script::Ok {
            text: "closed answer".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\npolicies: {{active: {policy}}}\ndeployments:\n{}{}  - {{name: closed-gpt-4o, kind: openai, model: gpt-4o, base_url: '{}', api_key_env: CANARY, locality: remote, data: {{retains_prompts: true}}}}\n",
        deployment("local-llama", "llama-3.1-8b-instruct", &local),
        deployment("local-smol", "smollm2-135m-instruct", &open),
        closed.base_url()
    );
    (Gateway::start(&yaml).await, local, open, closed)
}

async fn ask(
    gw: &Gateway,
    body: Value,
    labels: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(l) = labels {
        rb = rb.header("x-modelgate-labels", l);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let v = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
    (status, headers, v)
}

fn msg(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "the merger terms are ..."}]})
}

#[tokio::test]
async fn confidential_requests_never_reach_the_closed_api() {
    let (gw, local, open, closed) = fleet("confidential-local").await;

    let (status, h, _) = ask(&gw, msg("auto"), Some("data=confidential")).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-rule"], "confidential-stays-local");
    assert_ne!(h["x-modelgate-openness"], "closed");

    // The same through the body's metadata.
    let mut body = msg("auto");
    body["metadata"] = json!({"data": "confidential"});
    let (status, h, _) = ask(&gw, body, None).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-rule"], "confidential-stays-local");

    // Asked for by name: refused, with the rule and the reason.
    let (status, _, v) = ask(&gw, msg("gpt-4o"), Some("data=confidential")).await;
    assert_eq!(status, 403, "{v}");
    let e = assert_openai_error(&v);
    assert_eq!(e["code"], "policy_violation");
    assert_eq!(e["type"], "permission_error");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("confidential-stays-local")
            && m.contains("closed-gpt-4o")
            && m.contains("openness closed"),
        "{m}"
    );

    // Every local deployment failing: the request fails (503), it does not go to the closed API.
    local.set(Script::Status {
        status: 503,
        body: json!({"error": {"message": "busy"}}),
        retry_after: None,
    });
    open.set(Script::Status {
        status: 500,
        body: json!({"error": {"message": "down"}}),
        retry_after: None,
    });
    let (status, _, v) = ask(&gw, msg("auto"), Some("data=confidential")).await;
    assert!(status == 503 || status == 502, "{status} {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("local-"),
        "{v}"
    );
    assert!(
        closed.seen().is_empty(),
        "the closed API saw a confidential request"
    );

    // Without the label the closed model is allowed.
    let (status, h, _) = ask(&gw, msg("gpt-4o"), None).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-deployment"], "closed-gpt-4o");
    assert_eq!(closed.seen().len(), 1);

    let metrics = gw.metrics().await;
    assert!(
        metric(
            &metrics,
            "modelgate_policy_refusals_total",
            &[("rule", "confidential-stays-local"), ("reason", "openness")]
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "modelgate_policy_decisions_total",
            &[("rule", "confidential-stays-local"), ("result", "refused")]
        ),
        1.0
    );
}

#[tokio::test]
async fn research_requests_only_reach_open_source_models() {
    let (gw, local, open, closed) = fleet("research-open-source").await;
    for _ in 0..3 {
        let (status, h, _) = ask(&gw, msg("auto"), Some("purpose=research")).await;
        assert_eq!(status, 200);
        assert_eq!(h["x-modelgate-openness"], "open-source");
        assert_eq!(h["x-modelgate-model"], "smollm2-135m-instruct");
    }
    open.set(Script::Status {
        status: 503,
        body: json!({}),
        retry_after: None,
    });
    let (status, _, _) = ask(&gw, msg("auto"), Some("purpose=research")).await;
    assert_eq!(status, 503);
    // Tried and retried; no other deployment may take it.
    assert_eq!(open.seen().len(), 5);
    assert!(local.seen().is_empty() && closed.seen().is_empty());
}

#[tokio::test]
async fn a_price_cap_refuses_an_expensive_request() {
    let (gw, _local, _open, closed) = fleet("company").await;
    // GPT-4o at $10 per million output tokens: 120k tokens may cost $1.20, over the $1 cap.
    let mut body = msg("gpt-4o");
    body["max_tokens"] = json!(120_000);
    let (status, _, v) = ask(&gw, body, None).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the cap of $1"),
        "{v}"
    );
    assert!(closed.seen().is_empty());
    // A small one passes, and says what it cost: 11 input and 7 output tokens of GPT-4o.
    let mut body = msg("gpt-4o");
    body["max_tokens"] = json!(100);
    let (status, h, _) = ask(&gw, body, None).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-cost-usd"], "0.00009750");
    assert_eq!(h["x-modelgate-license"], "openai-api-terms");
    let m = gw.metrics().await;
    let cost = metric(
        &m,
        "modelgate_cost_usd_total",
        &[("deployment", "closed-gpt-4o"), ("openness", "closed")],
    );
    assert!((cost - 0.0000975).abs() < 1e-12, "{cost}");
}

#[tokio::test]
async fn product_keys_never_get_a_restricted_license() {
    let local = FakeUpstream::start(Script::Ok { text: "x".into() }, Some(CANARY_KEY)).await;
    let key = "mg-product-key";
    let yaml = format!(
        "reload: {{poll_interval: 0}}\npolicies: {{active: commercial-safe}}\nkeys:\n  - {{id: shop, tenant: product, sha256: {}}}\n  - {{id: lab, tenant: research, sha256: {}}}\ndeployments:\n{}{}",
        modelgate::config::keys::hash_hex(key),
        modelgate::config::keys::hash_hex("mg-lab-key"),
        deployment("llama", "llama-3.1-8b-instruct", &local),
        deployment("qwen", "qwen2.5-7b-instruct", &local),
    );
    let gw = Gateway::start(&yaml).await;
    let send = |k: &'static str, model: &'static str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {k}"))
            .body(msg(model).to_string())
            .send()
    };
    let r = send(key, "auto").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-modelgate-model"], "qwen2.5-7b-instruct");
    let r = send(key, "llama-3.1-8b-instruct").await.unwrap();
    assert_eq!(r.status(), 403);
    // The label cannot take a product key out of its rule.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-modelgate-labels", "traffic=internal")
        .body(msg("llama-3.1-8b-instruct").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = send("mg-lab-key", "llama-3.1-8b-instruct").await.unwrap();
    assert_eq!(r.status(), 200);
    // Each caller is shown the models its policy lets it use.
    let gw = &gw;
    let list = |k: &'static str| async move {
        let r = client()
            .get(gw.url("/v1/models"))
            .header("authorization", format!("Bearer {k}"))
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(key).await, ["qwen2.5-7b-instruct"]);
    assert_eq!(
        list("mg-lab-key").await,
        ["qwen2.5-7b-instruct", "llama-3.1-8b-instruct"]
    );
    let r = client()
        .get(gw.url("/v1/models/llama-3.1-8b-instruct"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
