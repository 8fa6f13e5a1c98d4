//! Which catalog model a backend serves, from what it says about itself. Evidence, strongest
//! first: a pinned digest that matches; metadata (the GGUF header, Ollama's `/api/show`, vLLM's
//! `root`); the served name, matched whole. Evidence that disagrees (two sources naming two
//! models, a size or a license the model does not have) is never settled in favour of either
//! side: the model is unknown, and says why. Nothing here does I/O; discovery gathers the
//! evidence.

use std::sync::Arc;

use serde::Serialize;

use super::{Catalog, Model, names};

/// What a backend says about one model it serves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// The name the backend lists it under.
    pub(crate) served: String,
    /// vLLM's `root`: the Hugging Face repository (or the folder) the weights came from.
    pub(crate) root: Option<String>,
    /// The model's own metadata (GGUF header, Ollama's `model_info`).
    pub(crate) metadata: Option<Metadata>,
    /// The digest of the weights, when it could be taken (sha256 of the file, Ollama's digest,
    /// a Hugging Face revision found in a snapshot path).
    pub(crate) digest: Option<Digest>,
    /// The digest is being taken (a large file): not known yet.
    pub(crate) digest_pending: bool,
    /// Evidence that should be there is missing or says the weights are not the file's own (a
    /// busy Ollama that did not describe its model; an adapter on top): the model is unknown.
    pub(crate) incomplete: Option<String>,
    pub(crate) quantization: Option<String>,
}

/// A model file's self-description, in GGUF's terms (`general.*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Metadata {
    /// Where it was read: `GGUF header of /models/x.gguf`, `Ollama /api/show`.
    pub(crate) source: String,
    pub(crate) name: Option<String>,
    pub(crate) basename: Option<String>,
    pub(crate) size_label: Option<String>,
    pub(crate) finetune: Option<String>,
    /// `general.license`, or the first line of a license text.
    pub(crate) license: Option<String>,
    pub(crate) architecture: Option<String>,
    pub(crate) parameters: Option<f64>,
}

/// A digest of served weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Digest {
    Sha256(String),
    Revision(String),
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Digest::Sha256(d) => write!(f, "sha256:{d}"),
            Digest::Revision(r) => write!(f, "revision {r}"),
        }
    }
}

/// How a deployment's model was identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Basis {
    /// Named in the configuration (closed APIs, and local deployments that name their model).
    Configured,
    /// A pinned digest matched.
    Digest,
    /// The model's metadata.
    Metadata,
    /// The served name, matched whole.
    Name,
    /// Not identified: openness, license and commercial use unknown.
    Unknown,
}

impl Basis {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Basis::Configured => "configured",
            Basis::Digest => "digest",
            Basis::Metadata => "metadata",
            Basis::Name => "name",
            Basis::Unknown => "unknown",
        }
    }
}

/// The answer: the model (none when unknown), on what basis, and from what.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Identity {
    pub(crate) basis: Basis,
    /// The catalog id, when identified.
    pub(crate) model: Option<String>,
    /// What it was identified from, or why it was not, in words.
    pub(crate) evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) quantization: Option<String>,
}

impl Identity {
    pub(crate) fn configured(model: &str, quantization: Option<String>) -> Identity {
        Identity {
            basis: Basis::Configured,
            model: Some(model.to_owned()),
            evidence: "named in the configuration".into(),
            quantization,
        }
    }

    fn unknown(why: String, quantization: Option<String>) -> Identity {
        Identity {
            basis: Basis::Unknown,
            model: None,
            evidence: why,
            quantization,
        }
    }
}

/// One source's claim: which model (none: it names one the catalog does not have).
struct Claim<'a> {
    basis: Basis,
    said: String,
    model: Option<&'a Arc<Model>>,
}

/// The family of a license as a name or text gives it, for telling two licenses apart (a GGUF
/// that says `llama3.1` is not an MIT model). `None`: it says nothing recognisable.
pub(crate) fn license_family(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    let has = |w: &str| t.contains(w);
    let word = |w: &str| {
        t.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|x| x == w)
    };
    if has("research")
        || has("non-commercial")
        || has("noncommercial")
        || has("cc-by-nc")
        || has("cc by-nc")
        || has("creative commons attribution-noncommercial")
    {
        // Research-only and non-commercial terms, whoever writes them (Qwen's research
        // license, Mistral's, CC BY-NC): never the same as a commercial license of the family.
        Some("restricted")
    } else if has("llama") {
        Some("llama")
    } else if has("gemma") {
        Some("gemma")
    } else if has("qwen") || has("tongyi") {
        Some("qwen")
    } else if has("deepseek") {
        Some("deepseek")
    } else if has("apache") {
        Some("apache")
    } else if word("mit") {
        Some("mit")
    } else if has("openrail") {
        Some("openrail")
    } else if has("nvidia") {
        Some("nvidia")
    } else if word("mrl") {
        Some("restricted")
    } else {
        None
    }
}

/// The size a catalog model has, from its id (`llama-3.1-8b-instruct`: 8 B).
/// Mixture-of-experts ids (`8x7b`, `30b-a3b`, `17b-16e`) state active or per-expert sizes, not
/// the total a file reports: no size is read from them.
fn model_size(m: &Model) -> Option<f64> {
    let k = names::key(&m.id);
    let moe = k.split('-').any(|w| {
        w.contains('x') && w.starts_with(|c: char| c.is_ascii_digit())
            || (w.ends_with('e')
                && w.len() > 1
                && w[..w.len() - 1].bytes().all(|b| b.is_ascii_digit()))
    }) || k.contains("-a-");
    if moe { None } else { names::stated_size(&m.id) }
}

/// Identifies the model behind `ev` in `cat`. `expected` is a pinned digest: when set, only a
/// matching digest identifies (and a mismatch is an error, not an unknown).
pub(crate) fn identify(
    cat: &Catalog,
    ev: &Evidence,
    expected: Option<&Digest>,
    pinned_model: Option<&Arc<Model>>,
) -> Result<Identity, String> {
    let quantization = ev
        .quantization
        .clone()
        .or_else(|| names::quantization_of(&ev.served));
    if let Some(decided) = check_pin(ev, expected, pinned_model, &quantization) {
        return decided;
    }
    if let Some(why) = &ev.incomplete {
        return Ok(Identity::unknown(
            format!("not enough evidence: {why}"),
            quantization,
        ));
    }
    let mut claims: Vec<Claim<'_>> = Vec::new();
    if let Some(md) = &ev.metadata
        && let Err(why) = metadata_claims(cat, md, &mut claims)
    {
        return Ok(Identity::unknown(why, quantization));
    }
    // A folder of a Hugging Face snapshot names its repository (`models--org--name`): that is
    // metadata; any other root is a name the operator chose, worth what a served name is.
    let hub = |p: &str| hub_repo_of_path(p);
    if let Some(root) = ev.root.as_deref().filter(|r| *r != ev.served) {
        let (basis, repo) = match hub(root) {
            Some(repo) => (Basis::Metadata, repo),
            None if root.contains(['/', '\\']) && !root.starts_with(['/', '.', '~']) => {
                (Basis::Metadata, root.to_owned())
            }
            None => (Basis::Name, root.to_owned()),
        };
        let model = cat.match_served_name(&repo);
        // A folder that names nothing the catalog has says nothing either way.
        if basis == Basis::Metadata || model.is_some() {
            claims.push(Claim {
                basis,
                said: format!("vLLM's root is '{root}'"),
                model,
            });
        }
    }
    let served = hub(&ev.served).unwrap_or_else(|| ev.served.clone());
    claims.push(Claim {
        basis: Basis::Name,
        said: format!("the backend serves it as '{}'", ev.served),
        model: cat.match_served_name_as(&served, names::is_tag(&ev.served)),
    });

    // The strongest claim decides what is looked at; every other claim that names a model must
    // name the same one, and metadata that names a model the catalog lacks is not overridden by
    // a name.
    let strongest = &claims[0];
    let Some(model) = strongest.model else {
        let why = if strongest.basis == Basis::Name {
            format!(
                "{}, which no catalog model is called{}",
                strongest.said,
                if ev.metadata.is_none() && ev.root.is_none() {
                    ", and it gave no metadata"
                } else {
                    ""
                }
            )
        } else {
            format!("{}, which is not in the catalog", strongest.said)
        };
        return Ok(Identity::unknown(why, quantization));
    };
    for c in &claims[1..] {
        if let Some(other) = c.model
            && other.id != model.id
        {
            return Ok(Identity::unknown(
                format!(
                    "the evidence disagrees: {} ({}), but {} ({})",
                    strongest.said, model.id, c.said, other.id
                ),
                quantization,
            ));
        }
    }
    if let Some(md) = &ev.metadata
        && let Some(why) = disagreement(md, ev, model, strongest)
    {
        return Ok(Identity::unknown(why, quantization));
    }
    Ok(Identity {
        basis: strongest.basis,
        model: Some(model.id.clone()),
        evidence: strongest.said.clone(),
        quantization,
    })
}

/// What a pinned digest decides: a mismatch, a digest not (yet) shown, or, for a configured
/// model, its identity; `None` when the evidence is still to be read.
fn check_pin(
    ev: &Evidence,
    expected: Option<&Digest>,
    pinned_model: Option<&Arc<Model>>,
    quantization: &Option<String>,
) -> Option<Result<Identity, String>> {
    if let Some(want) = expected {
        match &ev.digest {
            Some(found) if found == want => {
                // The configuration names the model of these weights; a discovering backend's
                // models are still identified from what they say.
                if let Some(m) = pinned_model {
                    return Some(Ok(Identity {
                        basis: Basis::Digest,
                        model: Some(m.id.clone()),
                        evidence: format!("{found} matches the pinned digest"),
                        quantization: quantization.clone(),
                    }));
                }
            }
            Some(found) => {
                return Some(Err(format!(
                    "the weights do not match the pinned digest: expected {want}, found {found}"
                )));
            }
            None if ev.digest_pending => {
                return Some(Err(format!(
                    "the digest of its weights is still being taken (expected {want})"
                )));
            }
            None => {
                return Some(Err(format!(
                    "the pinned digest cannot be checked: expected {want}, and the backend shows no digest of its weights"
                )));
            }
        }
    }
    None
}

/// The claims a file's metadata makes; an error when it names a catalog model and something
/// the catalog lacks at once.
fn metadata_claims<'a>(
    cat: &'a Catalog,
    md: &Metadata,
    claims: &mut Vec<Claim<'a>>,
) -> Result<(), String> {
    // The composed name (`Meta-Llama-3.1` `8B` `Instruct`) and `general.name` are two
    // claims: each that names a model must name the same one.
    if let Some(b) = &md.basename {
        let mut full = b.clone();
        for part in [&md.size_label, &md.finetune].into_iter().flatten() {
            // `general.basename` may already carry the size (`Qwen2.5-7B`).
            if !names::key(&full).split('-').any(|w| w == names::key(part)) {
                full.push('-');
                full.push_str(part);
            }
        }
        claims.push(Claim {
            basis: Basis::Metadata,
            model: cat.match_served_name(&full),
            said: format!("{} names it '{full}'", md.source),
        });
    }
    if let Some(n) = &md.name {
        claims.push(Claim {
            basis: Basis::Metadata,
            model: cat.match_served_name(n),
            said: format!("{} calls it '{n}'", md.source),
        });
    }
    // Metadata that names something the catalog lacks, beside a claim that names a
    // catalog model (`general.name` a fine-tune, the composed name its base): which one the
    // file is cannot be told.
    let metadata: Vec<&Claim<'_>> = claims
        .iter()
        .filter(|c| c.basis == Basis::Metadata)
        .collect();
    if let (Some(named), Some(silent)) = (
        metadata.iter().find(|c| c.model.is_some()),
        metadata.iter().find(|c| c.model.is_none()),
    ) {
        return Err(format!(
            "the evidence disagrees: {} ({}), but {}, which is not in the catalog",
            named.said,
            named.model.map_or("", |m| m.id.as_str()),
            silent.said
        ));
    }
    Ok(())
}

/// Why the metadata's size or license disagrees with `model`, the strongest claim's, if it
/// does.
fn disagreement(
    md: &Metadata,
    ev: &Evidence,
    model: &Model,
    strongest: &Claim<'_>,
) -> Option<String> {
    let size = md
        .parameters
        .or_else(|| md.size_label.as_deref().and_then(names::parameters));
    // The size the catalog model has, or else the size the served name states (an 8 B
    // file served as `deepseek-r1:671b`).
    let stated = model_size(model).or_else(|| names::stated_size(&ev.served));
    if let (Some(found), Some(want)) = (size, stated)
        && !names::same_size(found, want)
    {
        return Some(format!(
            "the evidence disagrees: {} has {:.1} B parameters, but {} says it is {} ({:.1} B)",
            md.source,
            found / 1e9,
            strongest.said,
            model.id,
            want / 1e9
        ));
    }
    if let Some(l) = &md.license
        && let Some(found) = license_family(l)
    {
        let catalog = license_family(&model.license.id)
            .or_else(|| model.license.spdx.as_deref().and_then(license_family))
            .or_else(|| license_family(&model.license.name));
        // A license the metadata names that the catalog's cannot be matched with is a
        // disagreement too: it is never read as agreement.
        if catalog != Some(found) {
            return Some(format!(
                "the evidence disagrees: {} gives the license '{}', but {} is under {}",
                md.source,
                l.lines().next().unwrap_or("").trim(),
                model.id,
                model.license.id
            ));
        }
    }
    None
}

/// `…/models--meta-llama--Llama-3.1-8B-Instruct/snapshots/<rev>` → `meta-llama/Llama-3.1-8B-Instruct`.
pub(crate) fn hub_repo_of_path(path: &str) -> Option<String> {
    let dir = path
        .split(['/', '\\'])
        .find_map(|p| p.strip_prefix("models--"))?;
    Some(dir.replacen("--", "/", 1))
}

/// The Hugging Face revision in a snapshot path (`…/snapshots/<40 hex>`).
pub(crate) fn hub_revision_of_path(path: &str) -> Option<String> {
    let mut parts = path.split(['/', '\\']);
    while let Some(p) = parts.next() {
        if p == "snapshots" {
            let rev = parts.next()?;
            return (rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| rev.to_ascii_lowercase());
        }
    }
    None
}

#[cfg(test)]
mod tests;
