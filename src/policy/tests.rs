//! Table tests: (request, labels, caller, catalog, policy) → allowed set, ranking, refusal reasons.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::base::testing::TempDir;
use crate::catalog::Model;
use crate::config::load::{Overrides, load};
use crate::config::{Discovered, Origin, Snapshot};

/// A snapshot from a configuration text (the shipped catalog and policies included).
fn snapshot(yaml: &str) -> Routing {
    let dir = TempDir::new("policy");
    let path = dir.join("modelgate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let env: HashMap<String, String> = [("KEY".to_owned(), "sk-test".to_owned())].into();
    let loaded =
        load(&Origin::File(path), &Overrides::default(), &env).unwrap_or_else(|p| panic!("{p}"));
    Routing::at_rest(Snapshot::build(
        Arc::new(loaded.config),
        &Discovered::default(),
    ))
}

/// The deployments most tests use: one of each kind of model and place.
const FLEET: &str = "
deployments:
  - {name: local-llama, kind: openai-compatible, base_url: 'http://127.0.0.1:1/v1', model: llama-3.1-8b-instruct}
  - {name: local-qwen, kind: openai-compatible, base_url: 'http://127.0.0.1:2/v1', model: qwen2.5-7b-instruct}
  - {name: local-smol, kind: openai-compatible, base_url: 'http://127.0.0.1:3/v1', model: smollm2-135m-instruct}
  - {name: cluster-olmo, kind: openai-compatible, base_url: 'http://olmo.svc:8000/v1', model: olmo-2-1124-7b-instruct, locality: cluster}
  - {name: hosted-llama, kind: openai-compatible, base_url: 'https://api.example.com/v1', model: llama-3.1-8b-instruct, price: {input: 0.05, output: 0.08}, data: {retains_prompts: true}}
  - {name: openai-gpt-4o, kind: openai, model: gpt-4o, api_key_env: KEY, data: {retains_prompts: true}}
  - {name: openai-mini, kind: openai, model: gpt-4.1-mini, api_key_env: KEY, data: {retains_prompts: true}}
  - {name: echo, kind: echo, model: echo}
";

struct Prompt(usize);

impl PromptSize for Prompt {
    fn bytes(&self) -> usize {
        self.0
    }
    fn tokens(&self, _: &Model) -> u64 {
        (self.0 as u64).div_ceil(4)
    }
}

struct Case<'a> {
    model: &'a str,
    caller: Caller,
    labels: Vec<(String, String)>,
    needs: Needs,
    prompt: usize,
    max_output: Option<u32>,
}

impl<'a> Case<'a> {
    fn new(model: &'a str) -> Self {
        Case {
            model,
            caller: Caller::anonymous(),
            labels: Vec::new(),
            needs: Needs::default(),
            prompt: 100,
            max_output: None,
        }
    }
    fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
    fn tenant(mut self, t: &str) -> Self {
        self.caller.tenant = Arc::from(t);
        self
    }
    fn decide(&self, s: &Routing) -> Result<Decision, PolicyError> {
        let prompt = Prompt(self.prompt);
        decide(
            &Ask {
                model: self.model,
                endpoint: EndpointName::ChatCompletions,
                caller: &self.caller,
                labels: &self.labels,
                needs: self.needs,
                prompt: &prompt,
                max_output: self.max_output,
            },
            s,
        )
    }
}

fn names(d: &Decision) -> Vec<&str> {
    d.candidates().iter().map(|d| d.name.as_str()).collect()
}

fn refused(d: &Decision) -> Vec<(&str, RefusalKind)> {
    let mut v: Vec<(&str, RefusalKind)> = d
        .refused()
        .into_iter()
        .map(|(d, r)| (d.name.as_str(), r.kind))
        .collect();
    v.sort();
    v
}

fn with_policy(policy: &str) -> String {
    format!("policies: {{active: {policy}}}\n{FLEET}")
}

#[test]
fn default_policy_allows_all_and_prefers_local_then_cheap() {
    let s = snapshot(&with_policy("default"));
    let d = Case::new("auto").decide(&s).unwrap();
    assert_eq!(&*d.policy, "default");
    assert_eq!(&*d.rule, "any");
    // Local ones (all free) in configuration order, the cluster one, then remote by price.
    assert_eq!(
        names(&d),
        [
            "local-llama",
            "local-qwen",
            "local-smol",
            "cluster-olmo",
            "hosted-llama",
            "openai-mini",
            "openai-gpt-4o"
        ]
    );
    assert!(d.refused().is_empty());
    // A model id means that model's deployments only; never another model.
    let d = Case::new("llama-3.1-8b-instruct").decide(&s).unwrap();
    assert_eq!(names(&d), ["local-llama", "hosted-llama"]);
    // A deployment name means that deployment.
    let d = Case::new("hosted-llama").decide(&s).unwrap();
    assert_eq!(names(&d), ["hosted-llama"]);
    assert!(matches!(
        Case::new("nope").decide(&s),
        Err(PolicyError::UnknownModel(_))
    ));
    // `auto` never picks the test model; asking for it by name works.
    assert_eq!(names(&Case::new("echo").decide(&s).unwrap()), ["echo"]);
}

#[test]
fn confidential_data_stays_on_local_open_weight_models() {
    let s = snapshot(&with_policy("confidential-local"));
    let d = Case::new("auto")
        .label("data", "confidential")
        .decide(&s)
        .unwrap();
    assert_eq!(&*d.rule, "confidential-stays-local");
    // most_open first: SmolLM2 is open-source; then the open-weight ones.
    // (Qwen's license is OSI-approved, Llama's is not.)
    assert_eq!(names(&d), ["local-smol", "local-qwen", "local-llama"]);
    assert_eq!(
        refused(&d),
        [
            ("cluster-olmo", RefusalKind::Locality),
            ("hosted-llama", RefusalKind::Locality),
            ("openai-gpt-4o", RefusalKind::Openness),
            ("openai-mini", RefusalKind::Openness),
        ]
    );
    // Asking for a closed model by name is refused, not silently downgraded.
    let e = Case::new("gpt-4o")
        .label("data", "confidential")
        .decide(&s)
        .unwrap_err();
    assert_eq!(e.status(), StatusCode::FORBIDDEN);
    let msg = e.to_string();
    assert!(
        msg.contains("confidential-stays-local") && msg.contains("openness closed"),
        "{msg}"
    );
    assert_eq!(e.body().code.as_deref(), Some("policy_violation"));
    // Without the label the other rule decides.
    assert_eq!(
        &*Case::new("gpt-4o").decide(&s).unwrap().rule,
        "everything-else"
    );
}

#[test]
fn research_uses_only_open_source_models_under_osi_licenses() {
    let s = snapshot(&with_policy("research-open-source"));
    let d = Case::new("auto")
        .label("purpose", "research")
        .decide(&s)
        .unwrap();
    assert_eq!(names(&d), ["local-smol", "cluster-olmo"]);
    for (dep, r) in d.refused() {
        assert!(
            dep.model.openness != crate::catalog::Openness::OpenSource,
            "{}",
            dep.name
        );
        assert_eq!(r.kind, RefusalKind::Openness);
    }
}

#[test]
fn product_traffic_never_uses_a_license_that_restricts_commercial_use() {
    let s = snapshot(&with_policy("commercial-safe"));
    let d = Case::new("auto").tenant("product").decide(&s).unwrap();
    assert_eq!(&*d.rule, "product-tenant");
    assert!(
        names(&d).iter().all(|n| !n.contains("llama")),
        "{:?}",
        names(&d)
    );
    let llama: Vec<_> = d
        .refused()
        .into_iter()
        .filter(|(d, _)| d.name.contains("llama"))
        .collect();
    assert_eq!(llama.len(), 2);
    assert!(
        llama
            .iter()
            .all(|(_, r)| r.kind == RefusalKind::License && r.detail.contains("conditional"))
    );
    // The label does the same for other tenants.
    let d = Case::new("llama-3.1-8b-instruct")
        .label("traffic", "product")
        .decide(&s);
    assert!(matches!(d, Err(PolicyError::Refused { .. })));
}

#[test]
fn the_cheapest_model_with_tools_and_a_32k_context() {
    let s = snapshot(&with_policy("cheapest-capable"));
    // The alias stands for its models' deployments, cheapest first. Without max_tokens the worst
    // case of gpt-4.1-mini is its longest answer (32,768 tokens, $0.052): over the 5-cent cap.
    let d = Case::new("agent").decide(&s).unwrap();
    assert_eq!(&*d.rule, "cheapest-tools-32k");
    assert_eq!(names(&d), ["local-llama", "hosted-llama"]);
    assert_eq!(refused(&d), [("openai-mini", RefusalKind::Price)]);
    let mut c = Case::new("agent");
    c.max_output = Some(1000);
    assert_eq!(
        names(&c.decide(&s).unwrap()),
        ["local-llama", "hosted-llama", "openai-mini"]
    );
    // `auto` is decided by the same rule; SmolLM2 (8k, no tools) and OLMo (4k) are refused.
    let d = Case::new("auto").decide(&s).unwrap();
    assert!(refused(&d).contains(&("local-smol", RefusalKind::Capability)));
    assert!(refused(&d).contains(&("cluster-olmo", RefusalKind::Capability)));
}

#[test]
fn request_needs_and_context_windows_are_checked() {
    let s = snapshot(&with_policy("default"));
    let mut c = Case::new("auto");
    c.needs.tools = true;
    let d = c.decide(&s).unwrap();
    for n in names(&d) {
        let dep = s.deployments.iter().find(|x| x.name == n).unwrap();
        assert!(dep.model.capabilities.tools, "{n}");
    }
    let mut c = Case::new("auto");
    c.needs.vision = true;
    assert_eq!(
        names(&c.decide(&s).unwrap()),
        ["openai-mini", "openai-gpt-4o"]
    );
    // 40k bytes of prompt (about 10k tokens) do not fit SmolLM2's 8k window nor OLMo's 4k.
    let mut c = Case::new("auto");
    c.prompt = 40_000;
    let d = c.decide(&s).unwrap();
    assert_eq!(
        refused(&d),
        [
            ("cluster-olmo", RefusalKind::Context),
            ("local-smol", RefusalKind::Context)
        ]
    );
}

#[test]
fn request_labels_narrow_the_callers_rule_never_widen_it() {
    // A permissive rule for a label comes before the strict rule of a tenant: a caller of that
    // tenant cannot escape by sending the label.
    let yaml = format!("policies: {{active: p, paths: [p.yaml]}}\n{FLEET}");
    let dir = TempDir::new("policy-narrow");
    std::fs::write(
        dir.join("p.yaml"),
        "policies:
  - name: p
    rules:
      - {name: ml-team-anything, match: {labels: {team: ml}}}
      - {name: secret-tenant-local, match: {tenants: [secret]}, require: {locality: [local]}}
      - {name: rest, require: {openness: [closed]}}
",
    )
    .unwrap();
    std::fs::write(dir.join("modelgate.yaml"), &yaml).unwrap();
    let env: HashMap<String, String> = [("KEY".to_owned(), "k".to_owned())].into();
    let loaded = load(
        &Origin::File(dir.join("modelgate.yaml")),
        &Overrides::default(),
        &env,
    )
    .unwrap();
    let s = Routing::at_rest(Snapshot::build(
        Arc::new(loaded.config),
        &Discovered::default(),
    ));

    let d = Case::new("auto")
        .tenant("secret")
        .label("team", "ml")
        .decide(&s)
        .unwrap();
    assert_eq!(&*d.rule, "ml-team-anything");
    assert_eq!(d.base_rule.as_deref(), Some("secret-tenant-local"));
    assert!(
        d.candidates()
            .iter()
            .all(|c| c.endpoint.locality == crate::config::spec::Locality::Local)
    );
    // The label does open the permissive rule to a caller whose own rule is the closed-only one?
    // No: the base rule ('rest') still applies, so the intersection is closed models only.
    let d = Case::new("auto").label("team", "ml").decide(&s).unwrap();
    assert!(
        d.candidates()
            .iter()
            .all(|c| c.model.openness == crate::catalog::Openness::Closed)
    );
    // A key's own labels cannot be overridden by the request.
    let mut c = Case::new("auto").label("team", "ml");
    c.caller.labels = Arc::from(vec![("team".to_owned(), "finance".to_owned())]);
    assert_eq!(&*c.decide(&s).unwrap().rule, "rest");
}

#[test]
fn order_weights_and_fallback() {
    let dir = TempDir::new("policy-order");
    std::fs::write(
        dir.join("p.yaml"),
        "policies:
  - name: ordered
    rules:
      - {name: pinned, match: {models: [auto]}, order: [openai-gpt-4o, qwen2.5-7b-instruct], prefer: [cheapest]}
      - {name: single, match: {models: [llama-3.1-8b-instruct]}, fallback: false}
      - {name: weighted, weights: {cost: 1, openness: 3}}
",
    )
    .unwrap();
    std::fs::write(
        dir.join("modelgate.yaml"),
        format!("policies: {{active: ordered, paths: [p.yaml]}}\n{FLEET}"),
    )
    .unwrap();
    let env: HashMap<String, String> = [("KEY".to_owned(), "k".to_owned())].into();
    let loaded = load(
        &Origin::File(dir.join("modelgate.yaml")),
        &Overrides::default(),
        &env,
    )
    .unwrap();
    let s = Routing::at_rest(Snapshot::build(
        Arc::new(loaded.config),
        &Discovered::default(),
    ));

    let d = Case::new("auto").decide(&s).unwrap();
    assert_eq!(&names(&d)[..2], ["openai-gpt-4o", "local-qwen"]);
    let d = Case::new("llama-3.1-8b-instruct").decide(&s).unwrap();
    assert_eq!(names(&d), ["local-llama"]);
    assert_eq!(d.held_back, 1);
    let d = Case::new("gpt-4o").decide(&s).unwrap();
    assert_eq!(&*d.rule, "weighted");
    let d = Case::new("openai-mini").decide(&s).unwrap();
    assert_eq!(names(&d), ["openai-mini"]);
}

#[test]
fn every_shipped_policy_file_is_built_in_and_loads() {
    let mut on_disk: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            // `policies/tests/` holds the policies' tests, not policies.
            .filter(|n| n.ends_with(".yaml"))
            .collect();
    on_disk.sort();
    let built_in: Vec<String> = crate::config::policies::builtin::FILES
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    assert_eq!(on_disk, built_in);
    let s = snapshot(&with_policy("company"));
    for p in [
        "default",
        "confidential-local",
        "research-open-source",
        "commercial-safe",
        "cheapest-capable",
        "company",
    ] {
        assert!(s.policies.get(p).is_some(), "{p}");
    }
}

#[test]
fn the_company_policy_combines_the_cases() {
    let s = snapshot(&with_policy("company"));
    let conf = Case::new("auto")
        .label("data", "confidential")
        .decide(&s)
        .unwrap();
    assert!(
        conf.candidates()
            .iter()
            .all(|d| d.endpoint.locality == crate::config::spec::Locality::Local)
    );
    let research = Case::new("auto")
        .label("purpose", "research")
        .decide(&s)
        .unwrap();
    assert!(
        research
            .candidates()
            .iter()
            .all(|d| d.model.openness == crate::catalog::Openness::OpenSource)
    );
    let product = Case::new("auto").tenant("product").decide(&s).unwrap();
    assert!(
        product
            .candidates()
            .iter()
            .all(|d| d.model.license.commercial_use == crate::catalog::CommercialUse::Allowed)
    );
    // Product traffic labelled confidential gets both: local and commercially safe.
    let both = Case::new("auto")
        .tenant("product")
        .label("data", "confidential")
        .decide(&s)
        .unwrap();
    assert_eq!(&*both.rule, "confidential-stays-local");
    assert_eq!(both.base_rule.as_deref(), Some("product-commercial-only"));
    assert_eq!(names(&both), ["local-smol", "local-qwen"]);
}

#[test]
fn invalid_policies_are_refused_with_their_place() {
    let dir = TempDir::new("policy-bad");
    std::fs::write(
        dir.join("p.yaml"),
        "policies:
  - name: bad
    aliases: {fast: [no-such-model]}
    rules:
      - {name: r, require: {models: [nope], license: {ids: [gpl-9]}, max_price: {per_request: -1}}}
      - {name: r}
",
    )
    .unwrap();
    std::fs::write(
        dir.join("modelgate.yaml"),
        "policies: {active: missing, paths: [p.yaml]}\n",
    )
    .unwrap();
    let p = load(
        &Origin::File(dir.join("modelgate.yaml")),
        &Overrides::default(),
        &HashMap::<String, String>::new(),
    )
    .unwrap_err();
    let text = p.to_string();
    for want in [
        "aliases.fast",
        "rules[0].require.models",
        "rules[0].require.license",
        "rules[0].require.max_price",
        "rules[1].name",
        "policies.active",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    assert!(text.contains("p.yaml:5:"), "{text}");
}

/// A snapshot with `policy_yaml` as policy `p` beside `FLEET`-like deployments.
fn with_policy_file(tag: &str, deployments: &str, policy_yaml: &str) -> Routing {
    let dir = TempDir::new(&format!("policy-{tag}"));
    std::fs::write(dir.join("p.yaml"), policy_yaml).unwrap();
    let yaml = format!("policies: {{active: p, paths: [p.yaml]}}\n{deployments}");
    std::fs::write(dir.join("modelgate.yaml"), &yaml).unwrap();
    let env: HashMap<String, String> = [("KEY".to_owned(), "k".to_owned())].into();
    let loaded = load(
        &Origin::File(dir.join("modelgate.yaml")),
        &Overrides::default(),
        &env,
    )
    .unwrap_or_else(|p| panic!("{p}"));
    Routing::at_rest(Snapshot::build(
        Arc::new(loaded.config),
        &Discovered::default(),
    ))
}

#[test]
fn request_labels_cannot_reach_a_rule_when_none_matches_without_them() {
    let s = with_policy_file(
        "label-only",
        FLEET,
        "policies:\n  - name: p\n    rules:\n      - {name: research-only, match: {labels: {purpose: research}}}\n",
    );
    for case in [
        Case::new("auto"),
        Case::new("auto").label("purpose", "research"),
    ] {
        match case.decide(&s) {
            Err(PolicyError::NoRule { policy }) => assert_eq!(&*policy, "p"),
            other => panic!("{:?}", other.map(|d| names(&d).join(","))),
        }
    }
    // A key's own label still selects the rule: the caller cannot change it.
    let mut c = Case::new("auto");
    c.caller.labels = Arc::from(vec![("purpose".to_owned(), "research".to_owned())]);
    assert_eq!(&*c.decide(&s).unwrap().rule, "research-only");
    // `modelgate check` warns about such a policy, and not about the shipped ones.
    let warnings = label_only_policies(&s);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("'research-only' needs label 'purpose'"));
    assert!(label_only_policies(&snapshot(&with_policy("default"))).is_empty());
}

#[test]
fn undeclared_data_handling_is_unknown_and_a_requirement_refuses_it() {
    let s = with_policy_file(
        "data-unknown",
        "deployments:
  - {name: remote-undeclared, kind: openai-compatible, base_url: 'https://api.example.com/v1', model: llama-3.1-8b-instruct}
  - {name: remote-declared, kind: openai-compatible, base_url: 'https://api.example.org/v1', model: llama-3.1-8b-instruct, data: {retains_prompts: false, trains_on_prompts: false}}
  - {name: remote-retains, kind: openai-compatible, base_url: 'https://api.example.net/v1', model: llama-3.1-8b-instruct, data: {retains_prompts: true}}
  - {name: local-undeclared, kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1', model: llama-3.1-8b-instruct}
  - {name: local-trains, kind: openai-compatible, base_url: 'http://127.0.0.1:10/v1', model: llama-3.1-8b-instruct, data: {trains_on_prompts: true}}
",
        "policies:\n  - name: p\n    rules:\n      - {name: private, require: {data: {retains_prompts: false, trains_on_prompts: false}}}\n",
    );
    let d = Case::new("llama-3.1-8b-instruct").decide(&s).unwrap();
    let mut allowed = names(&d);
    allowed.sort_unstable();
    assert_eq!(allowed, ["local-undeclared", "remote-declared"]);
    let why: HashMap<&str, String> = d
        .refused()
        .into_iter()
        .map(|(d, r)| (d.name.as_str(), r.detail.to_string()))
        .collect();
    assert!(
        why["remote-undeclared"].contains("does not declare"),
        "{why:?}"
    );
    assert!(
        why["remote-retains"].contains("retains_prompts: true"),
        "{why:?}"
    );
    assert!(
        why["local-trains"].contains("trains_on_prompts: true"),
        "{why:?}"
    );
}
