//! Shadow decisions: how they compare with the live one, and what they say when the shadow
//! policy refuses, knows no such model or has no rule.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::catalog::Model;
use crate::config::keys::Caller;
use crate::config::load::load_texts;
use crate::config::{Discovered, Snapshot};
use crate::policy::{EndpointName, Needs, PromptSize, decide};

#[test]
fn agreement_compares_first_choices() {
    let cases = [
        ((Some(1), Some(1)), Agreement::Same),
        ((Some(1), Some(2)), Agreement::OtherDeployment),
        ((Some(1), None), Agreement::ShadowRefuses),
        ((None, Some(1)), Agreement::ShadowAllows),
        ((None, None), Agreement::Same),
    ];
    for ((live, shadow), want) in cases {
        assert_eq!(Agreement::of(live, shadow), want, "{live:?} {shadow:?}");
    }
    let labels: Vec<&str> = Agreement::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(
        labels,
        [
            "same",
            "other_deployment",
            "shadow_refuses",
            "shadow_allows"
        ]
    );
}

#[test]
fn the_main_reason_is_the_most_common_and_the_first_on_a_tie() {
    let mut by_kind = [0; RefusalKind::ALL.len()];
    assert_eq!(main_reason(&by_kind), "refused");
    by_kind[RefusalKind::Price as usize] = 2;
    by_kind[RefusalKind::Openness as usize] = 2;
    assert_eq!(main_reason(&by_kind), "openness");
    by_kind[RefusalKind::Locality as usize] = 3;
    assert_eq!(main_reason(&by_kind), "locality");
}

const POLICIES: &str = "
policies:
  - name: lenient
    aliases: {fast: [qwen2.5-7b-instruct]}
    rules:
      - {name: any, prefer: [local, cheapest]}
  - name: strict
    rules:
      - name: open-local
        match: {tenants: [default]}
        require: {openness: [open-weight, open-source], locality: [local]}
        prefer: [most_open]
";

const ENTRY: &str = "
policies: {active: lenient, shadow: strict}
deployments:
  - {name: local-llama, kind: openai-compatible, base_url: 'http://127.0.0.1:1/v1', model: llama-3.1-8b-instruct}
  - {name: local-qwen, kind: openai-compatible, base_url: 'http://127.0.0.1:2/v1', model: qwen2.5-7b-instruct}
  - {name: local-smol, kind: openai-compatible, base_url: 'http://127.0.0.1:3/v1', model: smollm2-135m-instruct}
  - {name: openai-gpt-4o, kind: openai, model: gpt-4o, api_key_env: KEY}
";

fn routing() -> Routing {
    let env: HashMap<String, String> = [("KEY".to_owned(), "sk-test".to_owned())].into();
    let loaded =
        load_texts(ENTRY, &[], &[("p.yaml", POLICIES)], &env).unwrap_or_else(|p| panic!("{p}"));
    Routing::at_rest(Snapshot::build(
        Arc::new(loaded.config),
        &Discovered::default(),
    ))
}

struct Prompt;

impl PromptSize for Prompt {
    fn bytes(&self) -> usize {
        100
    }
    fn tokens(&self, _: &Model) -> u64 {
        25
    }
}

/// The live decision's first deployment (or refusal) and the shadow's summary.
fn both(s: &Routing, caller: &Caller, model: &str) -> (Result<String, String>, Shadowed) {
    let ask = Ask {
        model,
        endpoint: EndpointName::ChatCompletions,
        caller,
        labels: &[],
        needs: Needs::default(),
        prompt: &Prompt,
        max_output: Some(100),
    };
    let live = decide(&ask, s);
    let shadowed = shadow(&ask, s, live.as_ref()).unwrap();
    let live = match live {
        Ok(d) => Ok(d.candidates().first().unwrap().name.clone()),
        Err(e) => Err(e.to_string()),
    };
    (live, shadowed)
}

#[test]
fn the_shadow_says_where_it_would_send_a_request_or_why_not() {
    let s = routing();
    let caller = s.config.anonymous.clone();
    assert_eq!(caller.policy, None);

    let (live, sh) = both(&s, &caller, "local-llama");
    assert_eq!(live.as_deref(), Ok("local-llama"));
    assert_eq!(
        (&*sh.live, &*sh.policy, sh.rule.as_deref()),
        ("lenient", "strict", Some("open-local"))
    );
    assert_eq!((sh.deployment(), sh.refused), (Some("local-llama"), None));
    assert_eq!(sh.agreement(), Agreement::Same);

    // Every model: the shadow prefers the most open one.
    let (live, sh) = both(&s, &caller, "auto");
    assert_ne!(live.as_deref(), Ok("local-smol"));
    assert_eq!(sh.deployment(), Some("local-smol"));
    assert_eq!(sh.agreement(), Agreement::OtherDeployment);

    let (live, sh) = both(&s, &caller, "gpt-4o");
    assert_eq!(live.as_deref(), Ok("openai-gpt-4o"));
    assert_eq!((sh.deployment(), sh.refused), (None, Some("openness")));
    assert_eq!(sh.rule.as_deref(), Some("open-local"));
    assert_eq!(sh.agreement(), Agreement::ShadowRefuses);

    // An alias only the live policy has: the shadow knows no such model.
    let (live, sh) = both(&s, &caller, "fast");
    assert_eq!(live.as_deref(), Ok("local-qwen"));
    assert_eq!(
        (sh.rule.as_deref(), sh.refused),
        (None, Some("model_not_found"))
    );
    assert_eq!(sh.agreement(), Agreement::ShadowRefuses);

    let (live, sh) = both(&s, &caller, "no-such-model");
    assert!(live.is_err());
    assert_eq!(&*sh.live, "lenient");
    assert_eq!(sh.refused, Some("model_not_found"));
    assert_eq!(sh.agreement(), Agreement::Same);

    // Another tenant: no rule of the shadow matches.
    let other = Caller {
        tenant: Arc::from("other"),
        ..caller.clone()
    };
    let (_, sh) = both(&s, &other, "local-llama");
    assert_eq!((sh.rule.as_deref(), sh.refused), (None, Some("no_rule")));
    assert_eq!(sh.agreement(), Agreement::ShadowRefuses);
}

#[test]
fn a_request_the_live_policy_refuses_is_shadowed_too() {
    let s = routing();
    let lenient = s.policies.list.iter().position(|p| &*p.name == "lenient");
    let caller = Caller {
        policy: Some(Arc::from("strict")),
        shadow: lenient,
        ..s.config.anonymous.clone()
    };
    let (live, sh) = both(&s, &caller, "gpt-4o");
    assert!(live.unwrap_err().contains("open-local"));
    assert_eq!((&*sh.live, &*sh.policy), ("strict", "lenient"));
    assert_eq!(sh.deployment(), Some("openai-gpt-4o"));
    assert_eq!(sh.agreement(), Agreement::ShadowAllows);
}

#[test]
fn without_a_shadow_nothing_is_decided() {
    let s = routing();
    let caller = Caller::anonymous();
    let ask = Ask {
        model: "auto",
        endpoint: EndpointName::ChatCompletions,
        caller: &caller,
        labels: &[],
        needs: Needs::default(),
        prompt: &Prompt,
        max_output: None,
    };
    let live = decide(&ask, &s);
    assert!(shadow(&ask, &s, live.as_ref()).is_none());
}
