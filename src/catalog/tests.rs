use std::sync::Arc;

use super::*;
use crate::yaml;
use crate::yaml::problem::Problems;

fn load(files: &[(&str, &str)]) -> (Catalog, Problems) {
    let mut problems = Problems::default();
    let mut parsed = Vec::new();
    for (name, text) in files {
        let name: Arc<str> = Arc::from(*name);
        if let Some(f) = yaml::parse::<CatalogFileSpec>(&name, text, &mut problems) {
            parsed.push((name, f));
        }
    }
    (Catalog::build(parsed, &mut problems), problems)
}

fn shipped() -> Catalog {
    let (cat, problems) = load(builtin::FILES);
    assert!(problems.is_empty(), "{problems}");
    cat
}

#[test]
fn every_shipped_file_is_built_in() {
    let mut on_disk: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/providers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
    on_disk.sort();
    let built_in: Vec<String> = builtin::FILES
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    assert_eq!(on_disk, built_in);
}

#[test]
fn shipped_catalog_loads_and_covers_the_reference_models() {
    let cat = shipped();
    assert!(cat.models.len() >= 35, "{} models", cat.models.len());
    // The classes of shared/openness.md §3.1, derived, never typed.
    let expected = [
        ("gpt-4o", Openness::Closed),
        ("gpt-4.1", Openness::Closed),
        ("o3", Openness::Closed),
        ("claude-sonnet-4-5", Openness::Closed),
        ("gemini-2.5-pro", Openness::Closed),
        ("gpt-oss-20b", Openness::OpenWeight),
        ("gpt-oss-120b", Openness::OpenWeight),
        ("gemma-3-27b-it", Openness::OpenWeight),
        ("llama-3.1-8b-instruct", Openness::OpenWeight),
        ("llama-3.3-70b-instruct", Openness::OpenWeight),
        ("llama-4-maverick-17b-128e-instruct", Openness::OpenWeight),
        ("mistral-7b-instruct-v0.3", Openness::OpenWeight),
        ("mixtral-8x7b-instruct-v0.1", Openness::OpenWeight),
        ("deepseek-v3", Openness::OpenWeight),
        ("deepseek-r1", Openness::OpenWeight),
        ("qwen2.5-7b-instruct", Openness::OpenWeight),
        ("qwen3-235b-a22b", Openness::OpenWeight),
        ("phi-4", Openness::OpenWeight),
        ("granite-4.0-h-small", Openness::OpenWeight),
        ("falcon-40b", Openness::OpenWeight),
        ("gpt2-xl", Openness::OpenWeight),
        ("smollm2-135m-instruct", Openness::OpenSource),
        ("smollm3-3b", Openness::OpenSource),
        ("olmo-2-1124-7b-instruct", Openness::OpenSource),
        ("olmoe-1b-7b-0924-instruct", Openness::OpenSource),
        ("pythia-6.9b", Openness::OpenSource),
        ("smolvlm-instruct", Openness::OpenSource),
        ("olmo-2-0325-32b-instruct", Openness::OpenSource),
        ("deepseek-r1-distill-llama-8b", Openness::OpenWeight),
        ("deepseek-v3.2", Openness::OpenWeight),
        ("llama-3.2-11b-vision-instruct", Openness::OpenWeight),
        ("gpt-4", Openness::Closed),
        ("gemini-1.0-ultra", Openness::Closed),
        // A test model has no class.
        ("echo", Openness::Unknown),
    ];
    for (id, class) in expected {
        let m = cat.get(id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(m.openness, class, "{id}");
    }
    // Every entry: class follows from its facts; closed models carry provider terms.
    for m in cat.models.iter().filter(|m| !m.test_only) {
        assert_eq!(
            derive_openness(&m.artifacts, &m.license),
            m.openness,
            "{}",
            m.id
        );
        if m.openness == Openness::Closed {
            assert_eq!(m.license.kind, LicenseKind::ProprietaryTerms, "{}", m.id);
            // Gemini 1.0 Ultra was offered to allowlisted customers only, without a list price.
            assert!(
                m.price.is_some() || m.id == "gemini-1.0-ultra",
                "{} has no list price",
                m.id
            );
        }
        assert!(
            !m.sources.artifacts.is_empty() && !m.sources.license.is_empty(),
            "{}",
            m.id
        );
    }
}

#[test]
fn license_attributes() {
    let cat = shipped();
    let l = |id: &str| cat.license(id).unwrap().clone();
    assert!(l("apache-2.0").osi_approved);
    assert_eq!(l("apache-2.0").commercial_use, CommercialUse::Allowed);
    assert!(!l("apache-2.0").use_restrictions);
    assert!(!l("llama3.1-community").osi_approved);
    assert_eq!(
        l("llama3.1-community").commercial_use,
        CommercialUse::Conditional
    );
    assert_eq!(l("llama3.1-community").mau_limit, Some(700_000_000));
    assert_eq!(
        l("llama3.1-community").derivative_naming.as_deref(),
        Some("Llama")
    );
    assert_eq!(
        l("qwen-research-2024").commercial_use,
        CommercialUse::Prohibited
    );
    assert_eq!(l("qwen-2024").mau_limit, Some(100_000_000));
    assert!(l("gemma-tou").hosted_service_is_distribution);
    assert_eq!(l("gemma-tou").output_use_restricted, OutputUse::FlowDown);
    assert!(l("deepseek-model-1.0").use_restrictions);
    assert_eq!(
        l("openai-api-terms").output_use_restricted,
        OutputUse::NoCompetingModels
    );
    assert!(!l("gpt2-modified-mit").osi_approved);
    assert_eq!(
        l("llama4-community").territorial_exclusions,
        vec!["EU".to_owned()]
    );
    // The EU clause of the Llama 3.2 / 3.3 use policies covers multimodal models only.
    assert_eq!(
        l("llama3.2-community-vision").territorial_exclusions,
        vec!["EU".to_owned()]
    );
    assert!(l("llama3.2-community").territorial_exclusions.is_empty());
    assert!(l("llama3.3-community").territorial_exclusions.is_empty());
    assert_eq!(
        l("llama3-community").output_use_restricted,
        OutputUse::NoImprovingOtherLlms
    );
    assert_eq!(
        l("google-gemini-api-terms").output_use_restricted,
        OutputUse::NoCompetingModels
    );
    assert_eq!(
        l("anthropic-api-terms").output_use_restricted,
        OutputUse::NoCompetingModels
    );
    // open_per_mof defaults to osi_approved.
    assert!(l("mit").open_per_mof);
    assert!(!l("gemma-tou").open_per_mof);
}

#[test]
fn shipped_licenses_list_their_duties_and_the_notice_answers_carry() {
    use super::spec::{DutyKind, Trigger};
    let cat = shipped();
    let l = |id: &str| cat.license(id).unwrap().clone();
    // Llama 3.1 and later: "Built with Llama" where the product is made available; the
    // Notice text (with its ©) goes with copies of the weights only.
    for id in [
        "llama3.1-community",
        "llama3.2-community",
        "llama3.2-community-vision",
        "llama3.3-community",
        "llama4-community",
    ] {
        let lic = l(id);
        assert_eq!(lic.notice.as_deref(), Some("Built with Llama"), "{id}");
        assert_eq!(lic.notice_header.as_ref().unwrap(), "Built with Llama");
        let notice = lic
            .duties
            .iter()
            .find(|d| d.kind == DutyKind::Notice)
            .unwrap();
        assert!(
            notice.text.as_deref().unwrap().contains("Copyright ©"),
            "{id}"
        );
        assert_eq!(notice.when, [Trigger::Redistribute], "{id}");
        assert!(lic.duties.iter().any(|d| d.kind == DutyKind::UsePolicy));
    }
    assert_eq!(
        l("llama3.1-community").duties[2].text.as_deref(),
        Some(
            "Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright © Meta Platforms, Inc. All Rights Reserved."
        )
    );
    assert_eq!(
        l("llama3-community").notice.as_deref(),
        Some("Built with Meta Llama 3")
    );
    // Gemma and DeepSeek v1: hosting is distribution, and the use restrictions flow down.
    for id in ["gemma-tou", "deepseek-model-1.0"] {
        let lic = l(id);
        let flow = lic
            .duties
            .iter()
            .find(|d| d.kind == DutyKind::FlowDown)
            .unwrap();
        assert!(flow.when.contains(&Trigger::Serve), "{id}");
        assert_eq!(lic.notice, flow.text, "{id}");
    }
    // Licenses whose conditions are on copies or on trained models put nothing on answers.
    for id in [
        "apache-2.0",
        "mit",
        "gpt2-modified-mit",
        "qwen-2024",
        "qwen-research-2024",
    ] {
        let lic = l(id);
        assert!(!lic.duties.is_empty(), "{id}");
        assert!(lic.notice.is_none(), "{id}");
        assert!(
            lic.duties.iter().all(|d| !d.when.contains(&Trigger::Serve)),
            "{id}"
        );
    }
    // Every duty says where it comes from.
    for lic in &cat.licenses {
        for d in &lic.duties {
            assert!(!d.source.trim().is_empty(), "{}", lic.id);
        }
    }
}

#[test]
fn duties_are_checked_where_they_are_written() {
    let text = "licenses:
  - id: x
    name: X
    kind: custom_community
    osi_approved: false
    commercial_use: allowed
    use_restrictions: false
    attribution_required: true
    output_use_restricted: none
    source: test
    duties:
      - {kind: display, text: Built with X, verbatim: true, when: [serve], source: '§1'}
      - {kind: display, when: [serve], source: '§2'}
      - {kind: notice, text: 'X™ 通义', when: [serve], source: '§3'}
      - {kind: use_policy, when: [use], source: '§4'}
      - {kind: notice, text: kept, when: [], source: '§5'}
      - {kind: display, text: shown, when: [serve], source: ''}
";
    let (cat, problems) = load(&[("t.yaml", text)]);
    let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "licenses[0].duties[1]",
            "licenses[0].duties[2]",
            "licenses[0].duties[3]",
            "licenses[0].duties[4]",
            "licenses[0].duties[5]",
        ],
        "{problems}"
    );
    assert!(problems.0[1].message.contains("U+901A"), "{problems}");
    // An unknown kind or trigger is refused by name.
    let bad = text.replace("kind: use_policy", "kind: shout");
    let (_, problems) = load(&[("t.yaml", &bad)]);
    assert!(problems.to_string().contains("shout"), "{problems}");
    let bad = text.replace("when: [use]", "when: [sell]");
    let (_, problems) = load(&[("t.yaml", &bad)]);
    assert!(problems.to_string().contains("sell"), "{problems}");
    // The license is still there, for the models that name it, with the problems reported.
    assert!(cat.license("x").is_some());
}

const LICENSES: &str = "licenses:
  - {id: open, name: Open, kind: permissive, osi_approved: true, commercial_use: allowed, use_restrictions: false, attribution_required: true, output_use_restricted: none, source: test}
  - {id: custom, name: Custom, kind: custom_community, osi_approved: false, commercial_use: conditional, use_restrictions: true, attribution_required: true, output_use_restricted: naming, source: test}
  - {id: terms, name: Terms, kind: proprietary_terms, osi_approved: false, commercial_use: allowed, use_restrictions: true, attribution_required: false, output_use_restricted: unknown, source: test}
";

fn model(id: &str, license: &str, artifacts: &str, openness: Option<&str>) -> String {
    format!(
        "  - {{id: {id}, name: {id}, developer: d, license: {license}, artifacts: {artifacts}, {}capabilities: {{context_window: 8}}, sources: {{artifacts: a, license: l}}}}\n",
        openness
            .map(|o| format!("openness: {o}, "))
            .unwrap_or_default()
    )
}

#[test]
fn derivation_rule() {
    let full = "{weights: true, architecture: true, training_code: full, training_data: released}";
    let detailed =
        "{weights: true, architecture: true, training_code: full, training_data: detailed}";
    let summary =
        "{weights: true, architecture: true, training_code: full, training_data: summary}";
    let partial =
        "{weights: true, architecture: true, training_code: partial, training_data: released}";
    let none = "{weights: false, architecture: false, training_code: none, training_data: none}";
    let models = [
        model("a", "open", full, None),
        model("b", "open", detailed, None),
        model("c", "open", summary, None),
        model("d", "open", partial, None),
        model("e", "custom", full, None),
        model("f", "terms", none, None),
    ]
    .concat();
    let text = format!("{LICENSES}models:\n{models}");
    let (cat, problems) = load(&[("t.yaml", &text)]);
    assert!(problems.is_empty(), "{problems}");
    let class = |id: &str| cat.get(id).unwrap().openness;
    assert_eq!(class("a"), Openness::OpenSource);
    assert_eq!(class("b"), Openness::OpenSource);
    assert_eq!(class("c"), Openness::OpenWeight, "data only summarised");
    assert_eq!(class("d"), Openness::OpenWeight, "training code partial");
    assert_eq!(class("e"), Openness::OpenWeight, "license not open");
    assert_eq!(class("f"), Openness::Closed);
}

#[test]
fn a_stated_class_that_the_facts_contradict_is_refused() {
    let summary =
        "{weights: true, architecture: true, training_code: inference, training_data: summary}";
    let text = format!(
        "{LICENSES}models:\n{}{}",
        model("ok", "open", summary, Some("open-weight")),
        model("liar", "open", summary, Some("open-source"))
    );
    let (cat, problems) = load(&[("t.yaml", &text)]);
    assert_eq!(problems.len(), 1, "{problems}");
    let p = &problems.0[0];
    assert_eq!(&*p.file, "t.yaml");
    assert_eq!(p.path, "models[1].openness");
    assert_eq!(p.line, 7);
    assert!(
        p.message.contains("'open-source'") && p.message.contains("'open-weight'"),
        "{}",
        p.message
    );
    assert!(cat.get("ok").is_some() && cat.get("liar").is_none());
}

#[test]
fn all_problems_are_reported_at_once() {
    let none = "{weights: false, architecture: false, training_code: none, training_data: none}";
    let text = format!(
        "{LICENSES}models:\n{}{}{}",
        model("x", "missing-license", none, None),
        model("x2", "open", none, None),
        model("x2", "terms", none, None),
    );
    let (_, problems) = load(&[("t.yaml", &text)]);
    let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["models[0].license", "models[1].license", "models[2].id"],
        "{problems}"
    );
}

#[test]
fn unknown_fields_are_refused_with_their_place() {
    let text = "models:\n  - id: a\n    name: a\n    developer: d\n    licence: mit\n";
    let (_, problems) = load(&[("t.yaml", text)]);
    assert_eq!(problems.len(), 1);
    let p = &problems.0[0];
    assert_eq!(p.line, 5, "{p}");
    assert!(
        p.path.starts_with("models[0]") || p.path.starts_with("models.0"),
        "{p}"
    );
    assert!(p.message.contains("licence"), "{p}");
}

#[test]
fn served_names_find_catalog_models() {
    let cat = shipped();
    let find = |s: &str| cat.match_served_name(s).map(|m| m.id.clone());
    assert_eq!(
        find("llama3.1:8b").as_deref(),
        Some("llama-3.1-8b-instruct")
    );
    assert_eq!(
        find("meta-llama/Llama-3.1-8B-Instruct").as_deref(),
        Some("llama-3.1-8b-instruct")
    );
    assert_eq!(
        find("/models/SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(),
        Some("smollm2-135m-instruct")
    );
    assert_eq!(find("gpt-4o-mini").as_deref(), Some("gpt-4o-mini"));
    assert_eq!(find("qwen2.5:7b").as_deref(), Some("qwen2.5-7b-instruct"));
    assert_eq!(find("my-own-finetune"), None);
    let u = cat.uncatalogued("my-own-finetune");
    assert_eq!(u.openness, Openness::Unknown);
    assert_eq!(u.license.commercial_use, CommercialUse::Unknown);
    assert!(u.uncatalogued);
}

/// Every line of `testdata/served_names.tsv`: a name as Ollama, llama.cpp, vLLM or an API
/// serves it, and the catalog model it is (or `unknown`).
#[test]
fn a_table_of_served_names() {
    let cat = shipped();
    let table = include_str!("testdata/served_names.tsv");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in table.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(name), Some(want)) = (cols.next(), cols.next()) else {
            panic!("a line without two columns: {line:?}");
        };
        let got = cat
            .match_served_name(name)
            .map_or("unknown", |m| m.id.as_str());
        if got != want {
            wrong.push(format!("{name}: {got}, expected {want}"));
        }
        // By name alone, identification says the same, on the basis of the name.
        let id = crate::catalog::identify::identify(
            &cat,
            &crate::catalog::identify::Evidence {
                served: name.to_owned(),
                ..Default::default()
            },
            None,
            None,
        )
        .unwrap();
        assert_eq!(id.model.as_deref().unwrap_or("unknown"), want, "{name}");
        checked += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked >= 150, "{checked} names");
}
