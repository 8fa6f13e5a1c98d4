//! The catalog as written in `providers/*.yaml`: what each model is, independent of who serves
//! it. Every field's doc comment is the user documentation of that field.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// One catalog file. Files are merged; ids must be unique across all of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFileSpec {
    /// Licenses and provider terms, referenced by id from models.
    #[serde(default)]
    pub(crate) licenses: Vec<Spanned<LicenseSpec>>,
    /// Models.
    #[serde(default)]
    pub(crate) models: Vec<Spanned<ModelSpec>>,
}

/// A license or a provider's terms, with the attributes a policy can test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseSpec {
    /// Our key for the license, referenced by models (`apache-2.0`, `llama3.1-community`).
    pub(crate) id: String,
    /// Human-readable name.
    pub(crate) name: String,
    /// SPDX identifier, when the license has one.
    #[serde(default)]
    pub(crate) spdx: Option<String>,
    /// What kind of license this is.
    pub(crate) kind: LicenseKind,
    /// On the OSI's list of approved licenses.
    pub(crate) osi_approved: bool,
    /// Open by the Model Openness Framework's rule (OSI, FSF, open-data or OpenMDW);
    /// defaults to `osi_approved`.
    #[serde(default)]
    pub(crate) open_per_mof: Option<bool>,
    /// Whether the license grants commercial use.
    pub(crate) commercial_use: CommercialUse,
    /// An acceptable-use or prohibited-use policy restricts what the model may be used for
    /// (a bare "comply with the law" is not a restriction).
    pub(crate) use_restrictions: bool,
    /// Monthly active users above which the license no longer applies, if any.
    #[serde(default)]
    pub(crate) mau_limit: Option<u64>,
    /// A notice, display text or license copy is required.
    pub(crate) attribution_required: bool,
    /// Name prefix required for derived models ("Llama"), if any.
    #[serde(default)]
    pub(crate) derivative_naming: Option<String>,
    /// What the license says about using outputs (to train other models, for instance).
    pub(crate) output_use_restricted: OutputUse,
    /// Offering the model as a hosted service counts as distribution (Gemma terms).
    #[serde(default)]
    pub(crate) hosted_service_is_distribution: bool,
    /// Regions whose residents or companies are not granted the license (for some models).
    #[serde(default)]
    pub(crate) territorial_exclusions: Vec<String>,
    /// Where the text of the license is.
    #[serde(default)]
    pub(crate) url: Option<String>,
    /// Where these facts come from.
    pub(crate) source: String,
    /// The facts were checked against the license text itself.
    #[serde(default)]
    pub(crate) verified: bool,
    /// What the license obliges whoever uses, serves or passes on the model to do: show a
    /// text, keep a notice, pass use restrictions on. Listed by `GET /v1/models`; the texts of
    /// the duties that come `when: serve` are the `x-modelgate-license-notice` header of answers
    /// where notices are turned on. Empty when the license obliges nothing or nobody checked.
    #[serde(default)]
    pub(crate) duties: Vec<DutySpec>,
}

/// One thing a license obliges its licensee to do, with the clause it comes from.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DutySpec {
    /// What is to be done.
    pub(crate) kind: DutyKind,
    /// What brings the duty on (at least one).
    pub(crate) when: Vec<Trigger>,
    /// The text to show, keep or pass on. Required for `display`, `notice` and `flow_down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// `text` is the license's own wording, to be reproduced as it is; otherwise the wording
    /// is the catalog's, and `source` says what the license asks for.
    #[serde(default)]
    pub(crate) verbatim: bool,
    /// The document the duty points to (the use policy, the license to hand on). Required for
    /// `use_policy` and `license_copy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
    /// The clause the duty comes from, and which text of the license was read.
    pub(crate) source: String,
}

/// The kinds of duty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DutyKind {
    /// Show `text` where the product's users see it (a website, user interface, about page or
    /// product documentation): Llama's "Built with Llama".
    Display,
    /// Keep `text` with every copy passed on (a "Notice" file).
    Notice,
    /// Hand recipients a copy of the license (`url`).
    LicenseCopy,
    /// Keep copyright and license notices with copies (Apache-2.0 §4, MIT, CC-BY).
    Attribution,
    /// The licensee's own use is bound by a use policy (`url`); nothing to pass on.
    UsePolicy,
    /// Use restrictions bind the licensee's users too: they go into the terms the users accept,
    /// and the users are told (`text`).
    FlowDown,
}

/// What brings a duty on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Trigger {
    /// Any use of the model by the licensee.
    Use,
    /// Making the model available to others: answers from it in a product, a hosted API, this
    /// gateway serving third parties.
    Serve,
    /// Passing on copies of the weights.
    Redistribute,
    /// Distributing a model trained, fine-tuned or improved with it or its outputs.
    Train,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LicenseKind {
    Permissive,
    Copyleft,
    OpenData,
    OpenMdw,
    Openrail,
    CustomCommunity,
    ResearchOnly,
    ProprietaryTerms,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CommercialUse {
    /// Granted without conditions.
    Allowed,
    /// Granted with a user cap, revenue cap, registration or similar condition.
    Conditional,
    /// Not granted (research or evaluation only).
    Prohibited,
    /// Nobody checked: policies treat it as not allowed.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutputUse {
    None,
    Naming,
    FlowDown,
    NoImprovingOtherLlms,
    NoCompetingModels,
    Unknown,
}

/// One model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The id clients ask for (`gpt-4o`, `llama-3.1-8b-instruct`).
    pub(crate) id: String,
    /// Human-readable name.
    pub(crate) name: String,
    /// Who trained it.
    pub(crate) developer: String,
    /// Id of the license of the weights (or of the provider's terms for closed models).
    pub(crate) license: String,
    /// What was released.
    pub(crate) artifacts: ArtifactsSpec,
    /// The openness class. Optional: it is derived from `artifacts` and the license, and a
    /// file that states a class its facts contradict is rejected.
    #[serde(default)]
    pub(crate) openness: Option<Openness>,
    /// Model Openness Framework class, where the MOF has published one.
    #[serde(default)]
    pub(crate) mof_class: Option<MofClass>,
    /// What the model can do.
    pub(crate) capabilities: CapabilitiesSpec,
    /// List price of the developer's own API, for closed models and first-party APIs.
    #[serde(default)]
    pub(crate) price: Option<PriceSpec>,
    /// Names inference servers use for exactly this model (Ollama tags, Hugging Face repository
    /// names, GGUF file names, dated API ids). Matched whole, after normalisation
    /// (`catalog::names::key`), never as substrings; a name two models claim is refused.
    #[serde(default)]
    pub(crate) served_as: Vec<String>,
    /// The day its provider stopped serving it (`2026-03-31`): kept as a fact, warned about
    /// when deployed.
    #[serde(default)]
    pub(crate) retired: Option<String>,
    /// Where the artifact, license and capability facts come from.
    pub(crate) sources: SourcesSpec,
    /// A test model, not a language model (the built-in `echo`).
    #[serde(default)]
    pub(crate) test_only: bool,
    /// What the model does: `chat` (default) or `embedding`.
    #[serde(default)]
    pub(crate) task: Task,
}

/// What a model is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Task {
    /// Chat completions (and Anthropic messages).
    #[default]
    Chat,
    /// Embeddings.
    Embedding,
}

/// The released artifacts of a model.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsSpec {
    /// The weights can be downloaded.
    pub(crate) weights: bool,
    /// Downloading them requires accepting terms.
    #[serde(default)]
    pub(crate) weights_gated: bool,
    /// The architecture (model code) is published.
    pub(crate) architecture: bool,
    /// How much of the training code is published.
    pub(crate) training_code: TrainingCode,
    /// How much is published about the training data.
    pub(crate) training_data: TrainingData,
    /// Intermediate training checkpoints are published.
    #[serde(default)]
    pub(crate) checkpoints: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TrainingCode {
    None,
    Inference,
    Partial,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TrainingData {
    None,
    Summary,
    Detailed,
    Released,
}

/// The three openness classes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Openness {
    /// Not identified: nothing is known of its weights (a model a backend serves that the
    /// catalog cannot name, or whose evidence disagrees). Policies that ask for a class refuse
    /// it unless they list `unknown`.
    Unknown,
    /// API only: no weights.
    Closed,
    /// Weights published; training code or data not.
    OpenWeight,
    /// Weights, training code and training data documented or released, under open licenses.
    OpenSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[expect(clippy::upper_case_acronyms, reason = "the MOF's own class names")]
pub(crate) enum MofClass {
    I,
    II,
    III,
}

/// What a model can do.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesSpec {
    /// Context window in tokens.
    pub(crate) context_window: u32,
    /// Longest answer in tokens, if the developer documents one.
    #[serde(default)]
    pub(crate) max_output_tokens: Option<u32>,
    /// Tool (function) calls.
    #[serde(default)]
    pub(crate) tools: bool,
    /// Image input.
    #[serde(default)]
    pub(crate) vision: bool,
    /// JSON mode or structured output.
    #[serde(default)]
    pub(crate) json_mode: bool,
}

/// A price in USD per million tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// Input (prompt) tokens.
    pub(crate) input: f64,
    /// Output (completion) tokens, reasoning included.
    pub(crate) output: f64,
    /// Input tokens read from a prompt cache.
    #[serde(default)]
    pub(crate) cache_read: Option<f64>,
    /// Input tokens written to a prompt cache.
    #[serde(default)]
    pub(crate) cache_write: Option<f64>,
    /// The date the price was read.
    pub(crate) as_of: String,
    /// Where it was read.
    pub(crate) source: String,
}

/// Sources of a model's facts.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSpec {
    /// Source of the artifact facts.
    pub(crate) artifacts: String,
    /// Source of the license facts.
    pub(crate) license: String,
    /// Source of the capability facts.
    #[serde(default)]
    pub(crate) capabilities: Option<String>,
    /// Source of the MOF class.
    #[serde(default)]
    pub(crate) mof: Option<String>,
}
