//! End-to-end: the notice a license asks to be shown, on the answers of a deployment with
//! `notices: true` (or of a policy with `notices: true`), whole and streamed, in every client
//! format; never on the others; and the duties `GET /v1/models` lists.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use serde_json::{Value, json};
use support::*;

const NOTICE: &str = "x-modelgate-license-notice";

/// Llama 3.1 with notices, Llama 3.3 without, and Qwen3 (Apache-2.0, nothing to show) with.
fn deployments(fake: &FakeUpstream) -> String {
    let url = fake.base_url();
    format!(
        "  - {{name: llama-notices, kind: openai-compatible, model: llama-3.1-8b-instruct, base_url: '{url}', api_key_env: CANARY, notices: true}}
  - {{name: llama-plain, kind: openai-compatible, model: llama-3.3-70b-instruct, base_url: '{url}', api_key_env: CANARY}}
  - {{name: qwen-notices, kind: openai-compatible, model: qwen3-8b, base_url: '{url}', api_key_env: CANARY, notices: true}}
"
    )
}

async fn gateway(extra: &str) -> (Gateway, FakeUpstream) {
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "fine thanks".into(),
        },
        None,
    )
    .await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\n{extra}deployments:\n{}",
        deployments(&fake)
    );
    (Gateway::start(&yaml).await, fake)
}

/// The notice header of an answer to `path` for `model`, whole or streamed, after checking the
/// answer came whole.
async fn notice(gw: &Gateway, path: &str, model: &str, stream: bool) -> Option<String> {
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let body = match path {
        "/v1/responses" => json!({"model": model, "input": "hi", "stream": stream}),
        "/v1/messages" => {
            json!({"model": model, "max_tokens": 16, "messages": msgs, "stream": stream})
        }
        _ => json!({"model": model, "messages": msgs, "stream": stream}),
    };
    let r = client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path} {model}");
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    assert!(text.contains("fine"), "{path} {model} {stream}: {text}");
    headers.get(NOTICE).map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn answers_of_a_deployment_with_notices_carry_its_license_notice() {
    let (gw, _fake) = gateway("").await;
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        for stream in [false, true] {
            assert_eq!(
                notice(&gw, path, "llama-3.1-8b-instruct", stream)
                    .await
                    .as_deref(),
                Some("Built with Llama"),
                "{path} stream={stream}"
            );
            // Without `notices`, nothing, though the license has a notice.
            assert_eq!(
                notice(&gw, path, "llama-3.3-70b-instruct", stream).await,
                None,
                "{path} stream={stream}"
            );
            // With it, nothing either when the license asks nothing of answers.
            assert_eq!(
                notice(&gw, path, "qwen3-8b", stream).await,
                None,
                "{path} stream={stream}"
            );
        }
    }
}

#[tokio::test]
async fn a_policy_with_notices_puts_them_on_every_answer_it_decides() {
    let dir = temp_dir();
    let policy = dir.join("shop.yaml");
    std::fs::write(
        &policy,
        "policies:\n  - name: shop\n    notices: true\n    rules:\n      - name: anything\n",
    )
    .unwrap();
    let extra = format!(
        "policies: {{paths: ['{}'], active: shop}}\n",
        policy.display()
    );
    let (gw, _fake) = gateway(&extra).await;
    // The model list says so of every deployment whose license has a notice.
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    for m in v["data"].as_array().unwrap() {
        let has_notice = m["license"].get("notice").is_some();
        assert_eq!(
            m["deployments"][0].get("notices").is_some(),
            has_notice,
            "{m}"
        );
    }
    for stream in [false, true] {
        for model in ["llama-3.1-8b-instruct", "llama-3.3-70b-instruct"] {
            assert_eq!(
                notice(&gw, "/v1/chat/completions", model, stream)
                    .await
                    .as_deref(),
                Some("Built with Llama"),
                "{model} stream={stream}"
            );
        }
        assert_eq!(
            notice(&gw, "/v1/chat/completions", "qwen3-8b", stream).await,
            None
        );
    }
}

#[tokio::test]
async fn the_model_list_names_each_license_duty_and_its_clause() {
    let (gw, _fake) = gateway("").await;
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let model = |id: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {v}"))
            .clone()
    };
    let llama = model("llama-3.1-8b-instruct");
    let license = &llama["license"];
    assert_eq!(license["notice"], "Built with Llama");
    let duties = license["duties"].as_array().unwrap();
    let kinds: Vec<&str> = duties.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["display", "license_copy", "notice", "use_policy"]);
    assert_eq!(duties[0]["text"], "Built with Llama");
    assert_eq!(duties[0]["when"], json!(["serve", "redistribute"]));
    assert_eq!(duties[0]["verbatim"], true);
    // The Notice text as the license writes it: JSON carries its ©.
    assert_eq!(
        duties[2]["text"],
        "Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright © Meta Platforms, Inc. All Rights Reserved."
    );
    assert_eq!(
        duties[3]["url"],
        "https://llama.meta.com/llama3_1/use-policy"
    );
    for d in duties {
        assert!(d["source"].as_str().unwrap().contains("§1.b."), "{d}");
    }
    assert_eq!(llama["deployments"][0]["notices"], true);
    // Without `notices`, the deployment says nothing of them; the duties are still listed.
    let plain = model("llama-3.3-70b-instruct");
    assert!(plain["deployments"][0].get("notices").is_none(), "{plain}");
    assert_eq!(plain["license"]["notice"], "Built with Llama");
    // Apache-2.0: attribution on redistribution, nothing on answers.
    let qwen = model("qwen3-8b");
    assert!(qwen["license"].get("notice").is_none(), "{qwen}");
    assert_eq!(qwen["license"]["duties"][0]["kind"], "attribution");
    assert_eq!(
        qwen["license"]["duties"][0]["when"],
        json!(["redistribute"])
    );
    assert!(qwen["deployments"][0].get("notices").is_none(), "{qwen}");
}
