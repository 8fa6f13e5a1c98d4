//! The command line, run as a user would: `check`, `explain`, `catalog`, `key new`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::process::Command;

use serde_json::Value;

fn run(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn check_reports_every_problem_with_file_line_and_field() {
    let dir = support::temp_dir();
    std::fs::write(
        dir.join("modelgate.yaml"),
        "deployments:\n  - {name: a, kind: openai-compatible, base_url: 'http://127.0.0.1:1/v1', model: llama-9}\n  - {name: b, kind: openai, model: gpt-4o, api_key_env: MISSING_KEY_VAR}\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["check", "--config", "modelgate.yaml"], &dir);
    assert!(!ok);
    assert!(
        err.contains("modelgate.yaml:2:5: deployments[0].model: unknown model 'llama-9'"),
        "{err}"
    );
    assert!(err.contains("modelgate.yaml:3:5: deployments[1].api_key_env: environment variable MISSING_KEY_VAR is not set"), "{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
    let (ok, out, _) = run(&["check"], &dir);
    assert!(ok, "the built-in configuration is valid");
    assert!(out.contains("configuration is valid"));
}

#[test]
fn explain_prints_the_decision_without_calling_anything() {
    let dir = support::temp_dir();
    std::fs::write(
        dir.join("modelgate.yaml"),
        "policies: {active: company}\ndeployments:\n  - {name: local, kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1', model: qwen2.5-7b-instruct}\n  - {name: cloud, kind: openai-compatible, base_url: 'https://api.example.com/v1', model: llama-3.3-70b-instruct, price: {input: 0.59, output: 0.79}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("req.json"),
        r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    let (ok, out, err) = run(
        &[
            "explain",
            "--config",
            "modelgate.yaml",
            "req.json",
            "--label",
            "data=confidential",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("policy company rule confidential-stays-local"),
        "{out}"
    );
    assert!(out.contains("1. local"), "{out}");
    assert!(out.contains("cloud — locality: locality remote"), "{out}");
    let (ok, out, _) = run(
        &[
            "explain",
            "--config",
            "modelgate.yaml",
            "req.json",
            "--tenant",
            "product",
            "--json",
        ],
        &dir,
    );
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rule"], "product-commercial-only");
    assert_eq!(v["allowed"][0]["deployment"], "local");
    assert_eq!(v["refused"][0]["reason"], "license");
    std::fs::write(
        dir.join("req.json"),
        r#"{"model":"llama-3.3-70b-instruct","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    let (ok, out, _) = run(
        &[
            "explain",
            "--config",
            "modelgate.yaml",
            "req.json",
            "--tenant",
            "product",
        ],
        &dir,
    );
    assert!(!ok, "a refused request exits non-zero");
    assert!(out.contains("refused (403)"), "{out}");
}

#[test]
fn catalog_lists_every_model_with_its_class_and_license() {
    let dir = support::temp_dir();
    let (ok, out, _) = run(&["catalog"], &dir);
    assert!(ok);
    let gpt2 = out.lines().find(|l| l.starts_with("gpt2-xl ")).unwrap();
    assert!(
        gpt2.contains("open-weight") && gpt2.contains("gpt2-modified-mit"),
        "{gpt2}"
    );
    let (ok, out, _) = run(&["catalog", "--json"], &dir);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    let olmo = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "olmo-2-1124-7b-instruct")
        .unwrap();
    assert_eq!(olmo["openness"], "open-source");
    assert_eq!(olmo["license"]["osi_approved"], true);
    // Every fact says where it came from; OLMo 2 has no MOF class of its own (the MOT's record
    // is OLMo 1's).
    assert!(
        olmo["sources"]["artifacts"]
            .as_str()
            .unwrap()
            .contains("allenai/OLMo")
    );
    assert!(olmo["mof_class"].is_null(), "{olmo}");
}

#[test]
fn key_new_prints_a_key_and_its_hash() {
    let dir = support::temp_dir();
    let (ok, out, _) = run(&["key", "new", "--tenant", "team-a"], &dir);
    assert!(ok);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key:    "))
        .unwrap();
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("sha256: "))
        .unwrap();
    assert_eq!(modelgate::config::keys::hash_hex(key), hash);
    assert!(out.contains(&format!("tenant: team-a, sha256: {hash}")));
}

#[test]
fn explain_shows_the_worst_case_the_policy_enforces() {
    // A cap of $0.01 per request: 3 choices of at most 4,000 tokens at $1 per M output tokens
    // cost at most $0.012 (plus the prompt) and are refused; 2 choices ($0.008) are allowed, and
    // explain's worst case is the very number the cap compared.
    let dir = support::temp_dir();
    std::fs::write(
        dir.join("p.yaml"),
        "policies:\n  - name: capped\n    rules:\n      - {name: cap, require: {max_price: {per_request: 0.01}}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("modelgate.yaml"),
        "policies: {active: capped, paths: [p.yaml]}\ndeployments:\n  - {name: cloud, kind: openai-compatible, base_url: 'https://api.example.com/v1', model: llama-3.3-70b-instruct, price: {input: 1, output: 1}}\n",
    )
    .unwrap();
    let explain = |n: u32| {
        std::fs::write(
            dir.join("req.json"),
            format!(
                r#"{{"model":"llama-3.3-70b-instruct","n":{n},"max_tokens":4000,"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        )
        .unwrap();
        let (ok, out, _) = run(
            &[
                "explain",
                "--config",
                "modelgate.yaml",
                "req.json",
                "--json",
            ],
            &dir,
        );
        (ok, serde_json::from_str::<Value>(&out).unwrap())
    };
    let (ok, v) = explain(2);
    assert!(ok, "{v}");
    let worst = v["allowed"][0]["worst_case_cost_usd"].as_f64().unwrap();
    assert!((0.008..0.0081).contains(&worst), "{v}");
    let (ok, v) = explain(3);
    assert!(!ok, "{v}");
    let detail = v["error"]["message"].as_str().unwrap();
    assert!(detail.contains("12000 output tokens"), "{v}");
}
