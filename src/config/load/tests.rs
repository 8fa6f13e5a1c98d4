use std::collections::HashMap;

use super::deployment::points_at;
use super::*;
use crate::base::testing::TempDir;
use crate::config::spec::Locality;

/// Writes `files` into a fresh directory; returns it and the path of the first.
fn write(files: &[(&str, &str)]) -> (TempDir, PathBuf) {
    let dir = TempDir::new("load");
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let first = dir.join(files[0].0);
    (dir, first)
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load_text(text: &str, env_pairs: &[(&str, &str)]) -> Result<Loaded, Problems> {
    let (_dir, path) = write(&[("modelgate.yaml", text)]);
    load(&Origin::File(path), &Overrides::default(), &env(env_pairs))
}

#[test]
fn embedded_default_loads_and_enables_keyed_deployments() {
    let loaded = load(&Origin::Embedded, &Overrides::default(), &env(&[])).unwrap();
    let c = &loaded.config;
    assert_eq!(c.deployments.len(), 1, "only echo without keys");
    assert_eq!(c.deployments[0].name, "echo");
    assert_eq!(c.discover.len(), 3);
    assert!(!c.auth_required);
    assert!(loaded.disabled.contains(&"openai/gpt-4o".to_owned()));

    let loaded = load(
        &Origin::Embedded,
        &Overrides::default(),
        &env(&[("OPENAI_API_KEY", "sk-canary-1")]),
    )
    .unwrap();
    let names: Vec<&str> = loaded
        .config
        .deployments
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert!(names.contains(&"openai/gpt-4o"), "{names:?}");
    let d = loaded
        .config
        .deployments
        .iter()
        .find(|d| d.name == "openai/gpt-4o")
        .unwrap();
    assert_eq!(d.endpoint.locality, Locality::Remote);
    assert_eq!(d.price.input, 2.5, "remote deployments cost the list price");
    assert!(!format!("{d:?}").contains("canary"), "the key never prints");
}

#[test]
fn a_minimal_file_works() {
    let loaded = load_text(
        "deployments:\n  - {name: local, kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1/', model: llama-3.1-8b-instruct, upstream_model: meta-llama/Llama-3.1-8B-Instruct}\n",
        &[],
    )
    .unwrap();
    let d = &loaded.config.deployments[0];
    assert_eq!(d.endpoint.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(d.endpoint.locality, Locality::Local);
    assert_eq!(
        d.price.input, 0.0,
        "local deployments cost nothing by default"
    );
    assert_eq!(d.upstream_model, "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(loaded.config.server.listen.to_string(), "127.0.0.1:8400");
}

#[test]
fn every_problem_is_reported_with_file_line_and_field() {
    let text = "\
deployments:
  - name: a
    kind: openai-compatible
    model: no-such-model
    base_url: http://127.0.0.1:1/v1
  - name: a
    kind: openai
    model: gpt-4o
  - name: b
    kind: openai
    model: gpt-4o
    api_key_env: NOT_SET_ANYWHERE
  - name: c
    kind: openai-compatible
    model: gpt-4o
    base_url: 'ftp://x'
keys:
  - {id: k, tenant: t, sha256: nothex}
";
    let problems = load_text(text, &[]).unwrap_err();
    let got: Vec<(u64, &str)> = problems
        .0
        .iter()
        .map(|p| (p.line, p.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (18, "keys[0].sha256"),
            (2, "deployments[0].model"),
            (6, "deployments[1].name"),
            (9, "deployments[2].api_key_env"),
            (13, "deployments[3].base_url"),
        ],
        "{problems}"
    );
    assert!(
        problems
            .0
            .iter()
            .all(|p| p.file.ends_with("modelgate.yaml"))
    );
    assert!(problems.to_string().contains("NOT_SET_ANYWHERE is not set"));
}

#[test]
fn unknown_and_mistyped_fields_are_refused() {
    let p = load_text("listen: 127.0.0.1:1\nlisten_addr: x\n", &[]).unwrap_err();
    assert_eq!(p.0[0].line, 2, "{p}");
    assert!(p.0[0].message.contains("listen_addr"), "{p}");
    let p = load_text("limits:\n  max_body_bytes: lots\n", &[]).unwrap_err();
    assert_eq!(p.0[0].line, 2, "{p}");
    assert_eq!(p.0[0].path, "limits.max_body_bytes", "{p}");
    let p = load_text(
        "deployments:\n  - {name: x, kind: magic, model: echo}\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(p.0[0].line, 2, "{p}");
    let p = load_text("server: {drain_timeout: forever}\n", &[]).unwrap_err();
    assert!(p.0[0].message.contains("duration"), "{p}");
    // Pools of permits past any machine's sockets would not start: refused, by field.
    for field in [
        "max_connections",
        "max_concurrent_requests",
        "max_open_streams",
    ] {
        let p =
            load_text(&format!("server: {{{field}: 18446744073709551615}}\n"), &[]).unwrap_err();
        assert_eq!(p.0[0].path, format!("server.{field}"), "{p}");
        assert!(p.0[0].message.contains("at most"), "{p}");
    }
    assert!(
        load_text(
            "server: {max_open_streams: 0, max_concurrent_requests: 1000000}\n",
            &[]
        )
        .is_ok()
    );
}

#[test]
fn no_keys_beyond_loopback_unless_said() {
    let p = load_text("listen: 0.0.0.0:8400\n", &[]).unwrap_err();
    assert_eq!(p.0[0].path, "listen");
    assert!(load_text("listen: 0.0.0.0:8400\nauth: none\n", &[]).is_ok());
    let key = crate::config::keys::hash_hex("mg-test");
    let loaded = load_text(
        &format!("listen: 0.0.0.0:8400\nkeys:\n  - {{id: a, tenant: t, sha256: {key}}}\n"),
        &[],
    )
    .unwrap();
    assert!(loaded.config.auth_required);
    assert!(
        load_text(
            &format!("auth: none\nkeys:\n  - {{id: a, tenant: t, sha256: {key}}}\n"),
            &[]
        )
        .is_err()
    );
}

#[test]
fn secrets_stay_out_of_problems() {
    let p = load_text(
        "deployments:\n  - {name: x, kind: openai, model: no-such, api_key_env: K}\n",
        &[("K", "sk-canary-secret-value")],
    )
    .unwrap_err();
    assert!(!p.to_string().contains("canary"), "{p}");
    let p = load_text(
        "deployments:\n  - {name: x, kind: openai, model: gpt-4o, api_key_env: K}\n",
        &[("K", "sk-canary\nbad")],
    )
    .unwrap_err();
    assert!(!p.to_string().contains("canary"), "{p}");
}

#[test]
fn catalog_paths_extend_the_catalog() {
    let (_dir, path) = write(&[
        (
            "modelgate.yaml",
            "catalog: {paths: [extra]}\ndeployments:\n  - {name: mine, kind: openai-compatible, base_url: 'http://127.0.0.1:1/v1', model: my-model}\n",
        ),
        (
            "extra/mine.yaml",
            "models:\n  - {id: my-model, name: Mine, developer: us, license: apache-2.0, artifacts: {weights: true, architecture: true, training_code: full, training_data: released}, capabilities: {context_window: 4096}, sources: {artifacts: us, license: us}}\n",
        ),
    ]);
    let loaded = load(&Origin::File(path), &Overrides::default(), &env(&[])).unwrap();
    assert_eq!(
        loaded.config.deployments[0].model.openness,
        crate::catalog::Openness::OpenSource
    );
    assert_eq!(loaded.watched.len(), 2);
}

#[test]
fn a_bad_catalog_file_names_itself() {
    let (_dir, path) = write(&[
        ("modelgate.yaml", "catalog: {paths: [bad.yaml]}\n"),
        ("bad.yaml", "models:\n  - {id: x}\n"),
    ]);
    let p = load(&Origin::File(path), &Overrides::default(), &env(&[])).unwrap_err();
    assert!(p.0[0].file.ends_with("bad.yaml"), "{p}");
    assert_eq!(p.0[0].line, 2, "{p}");
}

#[test]
fn fingerprint_sees_changes() {
    let (_dir, path) = write(&[("modelgate.yaml", "listen: 127.0.0.1:1\n")]);
    let a = fingerprint(std::slice::from_ref(&path));
    std::fs::write(&path, "listen: 127.0.0.1:2\n").unwrap();
    assert_ne!(a, fingerprint(std::slice::from_ref(&path)));
}

#[test]
fn a_deployment_pointing_at_the_gateway_itself_is_refused() {
    for base in [
        "http://127.0.0.1:8400/v1",
        "http://localhost:8400/v1",
        "http://[::1]:8400/v1",
        "http://127.0.0.1:8401",
    ] {
        let text = format!(
            "deployments:\n  - {{name: self, kind: openai-compatible, base_url: '{base}', model: llama-3.1-8b-instruct}}\n"
        );
        let p = load_text(&text, &[])
            .err()
            .unwrap_or_else(|| panic!("{base} loaded"));
        let p = p.to_string();
        assert!(p.contains("deployments[0].base_url"), "{p}");
        assert!(p.contains("own address"), "{p}");
    }
    // Another port on this machine is another server.
    let text = "deployments:\n  - {name: other, kind: openai-compatible, base_url: 'http://127.0.0.1:8000/v1', model: llama-3.1-8b-instruct}\n";
    load_text(text, &[]).unwrap();
    let listen: SocketAddr = "0.0.0.0:9000".parse().unwrap();
    let admin: SocketAddr = "127.0.0.1:9001".parse().unwrap();
    assert!(points_at([listen, admin], "http://localhost:9000"));
    assert!(points_at([listen, admin], "http://0.0.0.0:9000"));
    assert!(!points_at([listen, admin], "http://api.example:9000"));
    assert!(!points_at([listen, admin], "https://127.0.0.1/v1"));
}

#[test]
fn an_unknown_shadow_policy_is_refused_with_file_line_and_field() {
    let key = crate::config::keys::hash_hex("mg-test");
    let text = format!(
        "policies:\n  shadow: nope\ntenants:\n  - {{name: t, shadow: nor-this}}\nkeys:\n  - {{id: k, tenant: t, shadow: nor-that, sha256: {key}}}\n"
    );
    let problems = load_text(&text, &[]).unwrap_err();
    let got: Vec<(u64, &str, &str)> = problems
        .0
        .iter()
        .map(|p| (p.line, p.path.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "policies.shadow", "no policy is named 'nope'"),
            (4, "tenants[0].shadow", "no policy is named 'nor-this'"),
            (6, "keys[0].shadow", "no policy is named 'nor-that'"),
        ],
        "{problems}"
    );
    assert!(
        problems
            .0
            .iter()
            .all(|p| p.file.ends_with("modelgate.yaml"))
    );
}

#[test]
fn a_callers_shadow_is_its_keys_else_its_tenants_else_the_global_one_found_at_load() {
    let key = |n: &str| crate::config::keys::hash_hex(&format!("mg-{n}"));
    let text = format!(
        "policies: {{active: default, shadow: company}}\ntenants:\n  - {{name: t, shadow: commercial-safe}}\n  - {{name: own, policies: [company]}}\nkeys:\n  - {{id: by-tenant, tenant: t, sha256: {}}}\n  - {{id: by-key, tenant: t, shadow: research-open-source, sha256: {}}}\n  - {{id: global, tenant: u, sha256: {}}}\n  - {{id: its-own, tenant: u, policy: company, sha256: {}}}\n  - {{id: tenants-own, tenant: own, sha256: {}}}\n",
        key("a"),
        key("b"),
        key("c"),
        key("d"),
        key("e")
    );
    let loaded = load_text(&text, &[]).unwrap();
    let c = &loaded.config;
    let shadow_of =
        |caller: &crate::config::keys::Caller| caller.shadow.map(|i| c.policies[i].name.clone());
    let by_id = |id: &str| shadow_of(c.keys.by_id(id).unwrap());
    assert_eq!(by_id("by-tenant").as_deref(), Some("commercial-safe"));
    assert_eq!(by_id("by-key").as_deref(), Some("research-open-source"));
    assert_eq!(by_id("global").as_deref(), Some("company"));
    // A shadow that is the caller's own policy would always agree: none.
    assert_eq!(by_id("its-own"), None);
    assert_eq!(by_id("tenants-own"), None);
    assert_eq!(shadow_of(&c.anonymous).as_deref(), Some("company"));
    let none = load_text("deployments: []\n", &[]).unwrap();
    assert_eq!(none.config.anonymous.shadow, None);
}
