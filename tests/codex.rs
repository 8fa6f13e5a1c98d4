//! The Codex CLI (npm `@openai/codex`, which carries its own binary) pointed at the gateway as a
//! custom model provider speaking the Responses API, running one non-interactive task against a
//! strict fake upstream. `.ci/run` installs it and sets `MODELGATE_CODEX` to its launcher and
//! `MODELGATE_REQUIRE_CODEX=1`; without them the test says so and passes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code"
)]

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exec_gets_its_answer_through_the_gateway() {
    let Some(codex) = program_from_env("MODELGATE_CODEX", "CODEX", "the Codex CLI's launcher")
    else {
        return;
    };
    // Whatever Codex asks, the model answers in words: the task ends after one turn.
    let fake = FakeUpstream::start(
        Script::Sse {
            events: chunks("up-llama", "Hello from the fake", true),
            delay: Duration::ZERO,
            done: true,
        },
        Some(CANARY_KEY),
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}",
        deployment("oa", "llama-3.1-8b-instruct", &fake)
    ))
    .await;
    let home = temp_dir();
    let provider = format!(
        "model_providers.gw={{name=\"gw\", base_url=\"{}\", env_key=\"MODELGATE_TEST_KEY\", wire_api=\"responses\"}}",
        gw.url("/v1")
    );
    let run = tokio::process::Command::new(&codex)
        .args(["exec", "--skip-git-repo-check", "--color", "never"])
        .args([
            "-c",
            "model_provider=gw",
            "-c",
            "model=llama-3.1-8b-instruct",
        ])
        // Codex's defaults add OpenAI's hosted web search, which only OpenAI runs: the gateway
        // refuses it by name, so it is turned off. Its namespaced sub-agent tools go through.
        .args(["-c", "web_search=disabled"])
        .args(["-c", &provider])
        .arg("Say hello")
        .current_dir(&home)
        .env("CODEX_HOME", &*home)
        .env("MODELGATE_TEST_KEY", "unused")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("codex exec did not finish within 120 s")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "codex exec failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("Hello from the fake"),
        "no answer in:\n{stdout}\n{stderr}"
    );
    // It went through the policy to the fake, as chat, with Codex's instructions and tools.
    let seen = fake.seen();
    let chat = seen
        .iter()
        .find(|s| s.path == "/v1/chat/completions")
        .expect("nothing reached the upstream");
    assert!(chat.body["tools"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(chat.body.to_string().contains("Say hello"));
}
