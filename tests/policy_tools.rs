//! Changing a policy safely, as a pull request would: `modelgate test` on case files (passing,
//! failing, malformed) and on the shipped policies' own tests, and `modelgate diff` between two
//! shipped policies and between two versions of a policy file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Runs the binary in `dir`; no provider key is set (the tools must not need one).
fn run(args: &[&str], dir: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped fleet, copied beside the test files of a temporary directory.
fn with_fleet() -> support::TempDir {
    let dir = support::temp_dir();
    std::fs::create_dir_all(dir.join("fleet")).unwrap();
    std::fs::copy(
        repo().join("policies/tests/fleet/modelgate.yaml"),
        dir.join("fleet/modelgate.yaml"),
    )
    .unwrap();
    dir
}

#[test]
fn the_shipped_policies_pass_their_own_tests() {
    let (code, out, err) = run(&["test", "policies/tests"], &repo());
    assert_eq!(code, Some(0), "{out}{err}");
    let last = out.lines().last().unwrap();
    assert!(last.ends_with("passed, 0 failed"), "{out}");
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 20, "{out}");
}

#[test]
fn a_passing_and_a_failing_case_file() {
    let dir = with_fleet();
    std::fs::write(
        dir.join("good.yaml"),
        "config: fleet/modelgate.yaml\npolicy: confidential-local\ncases:\n  - name: stays local\n    request: {model: auto, labels: {data: confidential}}\n    expect: {rule: confidential-stays-local, locality: [local], not_allowed: [gpt-4o]}\n  - name: closed refused\n    request: {model: gpt-4o, labels: {data: confidential}}\n    expect: {refused: {rule: confidential-stays-local, reason: openness}}\n",
    )
    .unwrap();
    let (code, out, _) = run(&["test", "good.yaml"], &dir);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), "2 passed, 0 failed");

    // Wrong on purpose, one way per line: the first deployment, the rule, a refusal expected
    // of an allowed request, an allowed one expected of a refused request, a reason.
    std::fs::write(
        dir.join("bad.yaml"),
        "config: fleet/modelgate.yaml\npolicy: company\ncases:\n  - name: wrong first\n    request: {model: auto, labels: {data: confidential}}\n    expect: {first: local-llama}\n  - name: wrong rule\n    request: {model: auto}\n    expect: {rule: product-commercial-only}\n  - name: expects a refusal\n    request: {model: gpt-4o}\n    expect: {refused: true}\n  - name: expects it allowed\n    request: {model: gpt-4o, labels: {data: confidential}}\n    expect: {first: openai/gpt-4o}\n  - name: wrong reason\n    request: {model: gpt-4o, labels: {data: confidential}}\n    expect: {refused: {reason: price}}\n  - name: a closed model reaches confidential traffic\n    request: {model: auto, labels: {data: confidential}}\n    expect: {openness: [closed]}\n",
    )
    .unwrap();
    let (code, out, _) = run(&["test", "good.yaml", "bad.yaml"], &dir);
    assert_eq!(code, Some(1), "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 6, "{out}");
    // Each names the file and line of its case, its name, and the difference.
    assert!(
        fails[0]
            .contains("bad.yaml:4 \"wrong first\": first: expected local-llama, got local-olmo"),
        "{out}"
    );
    assert!(
        fails[1].contains("bad.yaml:7 ")
            && fails[1].contains("rule: expected product-commercial-only, got everyone-else"),
        "{out}"
    );
    assert!(
        fails[2].contains("expected a refusal; allowed by rule everyone-else: openai/gpt-4o"),
        "{out}"
    );
    assert!(
        fails[3].contains(
            "expected it allowed; refused: policy 'company' rule 'confidential-stays-local'"
        ),
        "{out}"
    );
    assert!(
        fails[4].contains("expected refused for price; refused for openness"),
        "{out}"
    );
    assert!(
        fails[5].contains("openness: local-olmo is open-source"),
        "{out}"
    );
    assert_eq!(out.lines().last().unwrap(), "2 passed, 6 failed");
}

#[test]
fn malformed_case_files_are_refused_with_file_line_and_field() {
    let dir = with_fleet();
    // An unknown field, and (in another file) a deployment that does not exist: a typo in an
    // expectation must fail rather than pass for ever.
    std::fs::write(
        dir.join("typo.yaml"),
        "config: fleet/modelgate.yaml\ncases:\n  - name: x\n    request: {model: auto}\n    expect: {frist: local-olmo}\n",
    )
    .unwrap();
    let (code, out, _) = run(&["test", "typo.yaml"], &dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("typo.yaml:5") && out.contains("cases[0].expect") && out.contains("frist"),
        "{out}"
    );
    std::fs::write(
        dir.join("ghost.yaml"),
        "config: fleet/modelgate.yaml\ncases:\n  - name: ghost\n    request: {model: auto}\n    expect: {not_allowed: [no-such-deployment]}\n  - name: bad key\n    request: {model: auto, key: nobody}\n    expect: {first: local-olmo}\n",
    )
    .unwrap();
    let (code, out, _) = run(&["test", "ghost.yaml"], &dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ghost.yaml:3 \"ghost\": not_allowed: no deployment or deployed model is named 'no-such-deployment'"), "{out}");
    assert!(
        out.contains("ghost.yaml:6 \"bad key\": no key has the id 'nobody'"),
        "{out}"
    );
    // No test at all is not a pass.
    let (code, out, _) = run(&["test", "fleet/nothing-here"], &dir);
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn diff_between_two_shipped_policies_names_what_moves() {
    let dir = with_fleet();
    let fleet = std::fs::read_to_string(dir.join("fleet/modelgate.yaml")).unwrap();
    std::fs::write(
        dir.join("fleet/local.yaml"),
        fleet.replace("active: company", "active: confidential-local"),
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "diff",
            "--config",
            "fleet/modelgate.yaml",
            "--config",
            "fleet/local.yaml",
        ],
        &dir,
    );
    assert_eq!(code, Some(1), "{out}{err}");
    // Research traffic, held to open source by `company`, may reach closed models under
    // `confidential-local`: the `+` lines say so, with each deployment's openness.
    let section = out
        .split("policy confidential-local, rule everything-else:")
        .nth(1)
        .expect(&out);
    assert!(
        section.contains("+ openai/gpt-4o (closed, remote) newly allowed for")
            && section.contains("purpose=research"),
        "{out}"
    );
    // Confidential traffic reaches no closed model in either: no `+` line for one under the
    // confidential rule.
    let confidential = out
        .split("policy confidential-local, rule confidential-stays-local:")
        .nth(1)
        .map(|s| s.split("\npolicy ").next().unwrap())
        .unwrap_or("");
    assert!(!confidential.contains("closed"), "{out}");
    assert!(
        out.trim_end().ends_with("requests decided differently"),
        "{out}"
    );

    let (_, json, _) = run(
        &[
            "diff",
            "--json",
            "--config",
            "fleet/modelgate.yaml",
            "--config",
            "fleet/local.yaml",
        ],
        &dir,
    );
    let v: Value = serde_json::from_str(&json).unwrap();
    assert!(v["changed"].as_u64().unwrap() > 0);
    let changes = v["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| {
        c["rule"] == "everything-else"
            && c["change"] == "allowed"
            && c["deployment"] == "openai/gpt-4o"
            && c["openness"] == "closed"
            && c["requests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["labels"]["purpose"] == "research")
    }));

    // The same configuration twice: nothing moves, exit 0.
    let (code, out, _) = run(
        &[
            "diff",
            "--config",
            "fleet/modelgate.yaml",
            "--config",
            "fleet/modelgate.yaml",
        ],
        &dir,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("0 of "), "{out}");
}

#[test]
fn diff_of_two_versions_of_a_policy_file_shows_confidential_traffic_reaching_closed_models() {
    let dir = with_fleet();
    let old = std::fs::read_to_string(repo().join("policies/company.yaml")).unwrap();
    // The change under review drops the confidential rule's requirements.
    let new = old.replace(
        "        require:\n          openness: [open-weight, open-source]\n          locality: [local]\n          data: {retains_prompts: false, trains_on_prompts: false}\n",
        "        require: {}\n",
    );
    assert_ne!(old, new);
    std::fs::write(dir.join("old.yaml"), old).unwrap();
    std::fs::write(dir.join("new.yaml"), new).unwrap();
    let (code, out, err) = run(
        &[
            "diff",
            "--config",
            "fleet/modelgate.yaml",
            "old.yaml",
            "new.yaml",
        ],
        &dir,
    );
    assert_eq!(code, Some(1), "{out}{err}");
    let section = out
        .split("policy company, rule confidential-stays-local:")
        .nth(1)
        .expect(&out);
    for d in [
        "openai/gpt-4o",
        "anthropic/claude-sonnet-4-5",
        "gemini/gemini-2.5-flash",
    ] {
        assert!(
            section.contains(&format!("+ {d} (closed, remote) newly allowed")),
            "{d}: {out}"
        );
    }
    assert!(section.contains("data=confidential"), "{out}");
    // Wrong arity is an error, not a silent nothing.
    let (code, _, err) = run(&["diff", "old.yaml"], &dir);
    assert_eq!(code, Some(2), "{err}");
}
