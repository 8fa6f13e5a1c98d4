//! The official `openai` and `anthropic` Python SDKs as clients of the gateway, routed to each
//! upstream dialect (strict fakes run here, in Rust). Runs `tests/python/test_dialects.py` and
//! `test_responses.py` (the Responses API) with the Python named by `MODELGATE_PYTHON` (`.ci/run`
//! sets it to a virtualenv with both SDKs); without it the test says so and passes, unless
//! `MODELGATE_REQUIRE_PYTHON=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code"
)]

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_against_every_dialect() {
    let Some(python) = program_from_env(
        "MODELGATE_PYTHON",
        "PYTHON",
        "a Python with the openai and anthropic SDKs",
    ) else {
        return;
    };
    let fake = FakeUpstream::start(
        Script::Ok {
            text: "Hello from the fake".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    // Gemini out of quota: it says how long to wait in its error body.
    let busy = FakeUpstream::start(
        Script::Status {
            status: 429,
            body: serde_json::json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "6.2s"}]}}),
            retry_after: None,
        },
        Some(CANARY_KEY),
    )
    .await;
    // A server that sends no usage in streams, even when asked (as llama.cpp's did).
    let quiet = FakeUpstream::start(
        Script::Sse {
            events: chunks("up-qwen3-8b", "a much longer answer than two tokens", false),
            delay: std::time::Duration::ZERO,
            done: true,
        },
        Some(CANARY_KEY),
    )
    .await;
    let (a, b, q) = (fake.addr, busy.addr, quiet.addr);
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}
deployments:
  - {{name: oa, kind: openai-compatible, model: llama-3.1-8b-instruct, upstream_model: '/models/Llama-3.1-8B-Instruct-Q4_K_M.gguf', base_url: 'http://{a}/v1', api_key_env: CANARY, notices: true}}
  - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{a}/v1', api_key_env: CANARY, locality: remote}}
  - {{name: ge, kind: gemini, model: gemini-2.5-flash, base_url: 'http://{a}/v1beta', api_key_env: CANARY, locality: remote}}
  - {{name: ge-busy, kind: gemini, model: gemini-2.5-pro, base_url: 'http://{b}/v1beta', api_key_env: CANARY, locality: remote, retries: {{attempts: 0}}}}
  - {{name: gpt, kind: openai, model: gpt-4o, base_url: 'http://{a}/v1', api_key_env: CANARY, locality: remote}}
  - {{name: quiet, kind: openai-compatible, model: qwen3-8b, base_url: 'http://{q}/v1', api_key_env: CANARY}}
  - {{name: emb-oa, kind: openai, model: text-embedding-3-small, base_url: 'http://{a}/v1', api_key_env: CANARY}}
  - {{name: emb-ge, kind: gemini, model: gemini-embedding-001, base_url: 'http://{a}/v1beta', api_key_env: CANARY}}
"
    ))
    .await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");
    let out = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{dir}/test_dialects.py"))
        .arg(format!("{dir}/test_responses.py"))
        .env("MODELGATE_URL", &gw.base)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(
        text.contains("passed") && !text.contains("skipped"),
        "{text}"
    );
    // The SDK requests reached all three dialects, each in its own format.
    let seen = fake.seen();
    for path in ["/v1/chat/completions", "/v1/messages"] {
        assert!(
            seen.iter().any(|s| s.path == path),
            "nothing reached {path}"
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.path.starts_with("/v1beta/models/gemini-2.5-flash:"))
    );
    // Anthropic's top_k never reached OpenAI; Gemini's 429 was not retried at once.
    assert!(
        !seen
            .iter()
            .any(|s| s.body["model"] == "gpt-4o" && s.body.get("top_k").is_some()),
        "OpenAI got a field it refuses"
    );
    assert_eq!(
        busy.seen().len(),
        1,
        "the second request waited out the cool-down"
    );
}
