use super::*;
use crate::catalog::tests_support::shipped;

fn md(basename: &str, size: &str, finetune: Option<&str>, license: Option<&str>) -> Metadata {
    Metadata {
        source: "test metadata".into(),
        basename: Some(basename.into()),
        size_label: Some(size.into()),
        finetune: finetune.map(str::to_owned),
        license: license.map(str::to_owned),
        ..Metadata::default()
    }
}

fn who(cat: &Catalog, served: &str, root: Option<&str>, m: Option<Metadata>) -> Identity {
    identify(
        cat,
        &Evidence {
            served: served.into(),
            root: root.map(str::to_owned),
            metadata: m,
            ..Evidence::default()
        },
        None,
        None,
    )
    .unwrap()
}

#[test]
fn metadata_sets() {
    let cat = shipped();
    let id = |i: &Identity| i.model.clone().unwrap_or_else(|| "unknown".into());
    for (served, root, m, want, basis) in [
        // Ollama's library files name themselves.
        (
            "llama3.1:8b",
            None,
            Some(md(
                "Meta-Llama-3.1",
                "8B",
                Some("Instruct"),
                Some("llama3.1"),
            )),
            "llama-3.1-8b-instruct",
            Basis::Metadata,
        ),
        // A neutral file name: the header decides.
        (
            "/models/model.gguf",
            None,
            Some(md(
                "smollm2",
                "135M",
                Some("8k-lc100k-mix1-ep2"),
                Some("apache-2.0"),
            )),
            "smollm2-135m-instruct",
            Basis::Metadata,
        ),
        // The header names a model the tag does not: neither wins.
        (
            "qwen2.5:latest",
            None,
            Some(md("Qwen2.5", "3B", Some("Instruct"), None)),
            "unknown",
            Basis::Unknown,
        ),
        // A fine-tune under its base's tag.
        (
            "llama3.1:8b",
            None,
            Some(md("Hermes-3-Llama-3.1", "8B", None, None)),
            "unknown",
            Basis::Unknown,
        ),
        // The license the file gives is not the catalog's.
        (
            "llama3.1:8b",
            None,
            Some(md(
                "Meta-Llama-3.1",
                "8B",
                Some("Instruct"),
                Some("MIT License"),
            )),
            "unknown",
            Basis::Unknown,
        ),
        // An 8 B file under the 671 B tag.
        (
            "deepseek-r1:671b",
            None,
            Some(Metadata {
                parameters: Some(8.03e9),
                source: "test".into(),
                ..Metadata::default()
            }),
            "unknown",
            Basis::Unknown,
        ),
        // vLLM: the root beats the served name; a snapshot path names its repository.
        (
            "llama-8b",
            Some("meta-llama/Llama-3.1-8B-Instruct"),
            None,
            "llama-3.1-8b-instruct",
            Basis::Metadata,
        ),
        (
            "/data/hub/models--meta-llama--Llama-3.1-8B-Instruct/snapshots/0e9e39f249a16976918f6564b8830bc894c89659",
            None,
            None,
            "llama-3.1-8b-instruct",
            Basis::Name,
        ),
        // A root that is a folder the operator named is worth a name, and disagrees here.
        (
            "llama-3.1-8b-instruct",
            Some("/srv/qwen"),
            None,
            "llama-3.1-8b-instruct",
            Basis::Name,
        ),
        (
            "llama3.1:8b",
            Some("Qwen/Qwen2.5-7B-Instruct"),
            None,
            "unknown",
            Basis::Unknown,
        ),
    ] {
        let i = who(&cat, served, root, m);
        assert_eq!(id(&i), want, "{served}: {}", i.evidence);
        assert_eq!(i.basis, basis, "{served}: {}", i.evidence);
    }
}

#[test]
fn base_models_are_not_their_instruct_tags_and_moe_sizes_are_totals() {
    let cat = shipped();
    // `llama3.1:8b` is the instruct model on Ollama; `Llama-3.1-8B` is the base model.
    assert_eq!(
        cat.match_served_name("llama3.1:8b").map(|m| m.id.as_str()),
        Some("llama-3.1-8b-instruct")
    );
    assert!(cat.match_served_name("meta-llama/Llama-3.1-8B").is_none());
    // Mixture-of-experts: the file's total size against an id that states per-expert or
    // active sizes is not a disagreement.
    for (id, total) in [
        ("mixtral-8x7b-instruct-v0.1", 46.7e9),
        ("qwen3-30b-a3b", 30.5e9),
    ] {
        let m = cat.get(id).unwrap();
        assert!(
            model_size(m).is_none_or(|s| names::same_size(s, total)),
            "{id}"
        );
    }
}

#[test]
fn license_families() {
    for (text, family) in [
        ("llama3.1", Some("llama")),
        ("LLAMA 3.1 COMMUNITY LICENSE AGREEMENT", Some("llama")),
        ("apache-2.0", Some("apache")),
        ("MIT License", Some("mit")),
        ("Copyright John Smith", None),
        ("Qwen RESEARCH LICENSE AGREEMENT", Some("restricted")),
        ("cc-by-nc-4.0", Some("restricted")),
        ("Mistral AI Research License", Some("restricted")),
        ("other", None),
    ] {
        assert_eq!(license_family(text), family, "{text}");
    }
}
