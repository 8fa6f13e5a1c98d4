//! The identity invariant as a property: for any evidence a backend may give about a model it
//! serves (a name, metadata, a root, in agreement or not), a rule that requires a license
//! attribute, an openness class or a locality never allows a deployment whose model was not
//! identified; and whatever was identified, every claim that named a model named that one.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::super::*;
use crate::catalog::identify::{Basis, Evidence, Metadata};
use crate::config::load::load_texts;
use crate::config::{Discovered, Snapshot};

/// Names as servers give them: catalogued, near-catalogued (a part, a superset), and foreign.
const NAMES: &[&str] = &[
    "llama3.1:8b",
    "llama3.1:latest",
    "Meta-Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "llama-3.1-8b-instruct-q4_K_M.gguf",
    "my-llama-3.1-8b-finetune",
    "deepseek-r1:8b",
    "deepseek-r1:70b",
    "DeepSeek-R1-Distill-Llama-8B",
    "deepseek-r1",
    "qwen2.5:latest",
    "qwen2.5:7b",
    "Qwen2.5-3B-Instruct",
    "gpt-4o-mini-2024-07-18",
    "openai/gpt-4o-mini",
    "gpt-4o",
    "distilgpt2",
    "gpt2-xl",
    "Phi-4-mini",
    "phi-4",
    "smollm2-135m-instruct",
    "/data/gpt2/Qwen2.5-32B-Instruct-Q4_K_M.gguf",
    "claude-3-5-haiku-20241022",
    "model.gguf",
    "house-model",
    "",
];
const BASENAMES: &[&str] = &[
    "Meta-Llama-3.1",
    "Llama-3.1",
    "DeepSeek-R1-Distill-Llama",
    "Qwen2.5",
    "smollm2",
    "Acme-Llama",
    "gpt2",
];
const SIZES: &[&str] = &["8B", "3B", "7B", "135M", "70B", "1.5B", "big"];
const FINETUNES: &[&str] = &["Instruct", "8k-lc100k-mix1-ep2", "Chat", "it"];
const LICENSES: &[&str] = &[
    "llama3.1",
    "apache-2.0",
    "MIT License",
    "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT",
    "other",
    "Qwen RESEARCH LICENSE AGREEMENT",
];
/// License requirements, each asking about an attribute an unknown license does not have.
const REQUIREMENTS: &[&str] = &[
    "license: {deny: [llama3.1-community]}",
    "license: {ids: [apache-2.0, mit]}",
    "license: {osi_approved: true}",
    "license: {commercial_use: [allowed]}",
    "license: {commercial_use: [allowed, conditional, unknown]}",
    "license: {use_restrictions: false}",
    "license: {monthly_active_users: 10}",
    "license: {operator_region: EU}",
    "openness: [open-weight, open-source]",
    "openness: [closed, open-weight, open-source]",
    "locality: [local]",
    "locality: [local, cluster, remote]",
    "license: {kinds: [permissive, unknown]}",
    "models: [llama-3.1-8b-instruct, qwen2.5-7b-instruct, gpt-4o, smollm2-135m-instruct]",
    "deny_models: [llama-3.1-8b-instruct]",
    "data: {retains_prompts: false}",
    "regions: [eu]",
    "max_price: {output_per_million: 1}",
    "max_price: {per_request: 0.5}",
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    (0..list.len()).prop_map(move |i| list[i].to_owned())
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        proptest::option::of(pick(BASENAMES)),
        proptest::option::of(pick(SIZES)),
        proptest::option::of(pick(FINETUNES)),
        proptest::option::of(pick(LICENSES)),
        proptest::option::of(pick(NAMES)),
        proptest::option::of(prop_oneof![
            Just(135e6),
            Just(3.1e9),
            Just(8.03e9),
            Just(70.6e9)
        ]),
    )
        .prop_map(
            |(basename, size_label, finetune, license, name, parameters)| Metadata {
                source: "generated metadata".into(),
                name,
                basename,
                size_label,
                finetune,
                license,
                architecture: None,
                parameters,
            },
        )
}

fn evidence() -> impl Strategy<Value = Evidence> {
    (
        pick(NAMES),
        proptest::option::of(pick(NAMES)),
        proptest::option::of(metadata()),
    )
        .prop_map(|(served, root, metadata)| Evidence {
            served,
            root,
            metadata,
            digest: None,
            digest_pending: false,
            incomplete: None,
            quantization: None,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn an_unidentified_model_passes_no_rule_that_asks_about_it(
        ev in evidence(),
        requirement in 0..REQUIREMENTS.len(),
    ) {
        let config = "deployments:\n  - {name: local, kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1', discover: true}\npolicies: {active: asks}\n";
        let policy = format!(
            "policies:\n  - name: asks\n    rules:\n      - name: r\n        require: {{{}}}\n",
            REQUIREMENTS[requirement]
        );
        let env: HashMap<String, String> = HashMap::new();
        let loaded = load_texts(config, &[], &[("p.yaml", &policy)], &env)
            .map_err(|p| TestCaseError::fail(format!("{p}")))?;
        let config = Arc::new(loaded.config);
        let discovered: Discovered = [("local".to_owned(), vec![ev.clone()])].into();
        let snapshot = Routing::at_rest(Snapshot::build(config.clone(), &discovered));
        if ev.served.is_empty() {
            return Ok(());
        }
        let d = snapshot.deployments.iter().find(|d| d.discovered_as.as_deref() == Some(&ev.served));
        let Some(d) = d else {
            return Err(TestCaseError::fail("the served model is missing"));
        };
        let identified = d.identity.model.clone();
        // Whatever named a model named the one identified: no substring, no contradiction.
        if let Some(id) = &identified {
            let claims = [
                Some(ev.served.as_str()),
                ev.root.as_deref(),
                ev.metadata.as_ref().and_then(|m| m.name.as_deref()),
            ];
            for c in claims.into_iter().flatten() {
                if let Some(m) = config.catalog.match_served_name(c) {
                    prop_assert_eq!(&m.id, id, "{} names another model", c);
                }
            }
        } else {
            prop_assert_eq!(d.identity.basis, Basis::Unknown);
            prop_assert_eq!(d.model.openness, crate::catalog::Openness::Unknown);
            prop_assert_eq!(d.locality(), None);
            // The invariant: asked about openness, license or locality, it is refused.
            let spec = snapshot.config.policies.iter().find(|p| p.name == "asks").unwrap();
            let refusal = compile::static_check(&spec.rules[0].value.require, d);
            prop_assert!(refusal.is_some(), "{} allowed {:?}", REQUIREMENTS[requirement], ev);
            let caller = Caller::anonymous();
            let ask = Ask {
                model: &d.name,
                endpoint: EndpointName::ChatCompletions,
                caller: &caller,
                labels: &[],
                needs: Needs::default(),
                prompt: &super::Bytes(10),
                max_output: None,
            };
            let decided = decide(&ask, &snapshot);
            prop_assert!(decided.is_err(), "{} allowed {:?}", REQUIREMENTS[requirement], ev);
        }
    }
}
