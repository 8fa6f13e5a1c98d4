//! Policies as written in `policies/*.yaml`: named lists of rules. The first rule whose `match`
//! fits a request decides it: `require` says which deployments it may use, `prefer` in which
//! order to try them. Every field's doc comment is its user documentation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::catalog::{CommercialUse, LicenseKind, Openness, OutputUse};
use crate::config::spec::Locality;

/// One policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFileSpec {
    /// The policies of this file.
    pub policies: Vec<Spanned<PolicySpec>>,
}

/// A named policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Name, used by `policies.active` in `modelgate.yaml` and by keys.
    pub name: String,
    /// What the policy is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Model names clients may ask for, each standing for a list of catalog models the rule then
    /// chooses among. `auto` always stands for every language model.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Rules, tried in order; the first that matches decides.
    pub rules: Vec<Spanned<RuleSpec>>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Name, reported in headers, errors, logs and metrics.
    pub name: String,
    /// Which requests the rule decides; empty matches every request.
    #[serde(default, rename = "match")]
    pub when: MatchSpec,
    /// What a deployment must satisfy to serve the request (hard requirements).
    #[serde(default)]
    pub require: RequireSpec,
    /// Order of preference among the allowed deployments, first criterion first:
    /// `local`, `cheapest` (for this request), `fastest` (observed time to first byte),
    /// `most_open`. Default `[local, cheapest]`.
    #[serde(default)]
    pub prefer: Vec<Preference>,
    /// An explicit order of models or deployments, tried before all others in this order.
    #[serde(default)]
    pub order: Vec<String>,
    /// Instead of a strict order of criteria, a weighted sum of each criterion's rank.
    #[serde(default)]
    pub weights: Option<WeightsSpec>,
    /// Try the next allowed deployment when one fails. Default true; false tries only the
    /// first.
    #[serde(default = "yes")]
    pub fallback: bool,
}

fn yes() -> bool {
    true
}

/// Conditions on the request; all given ones must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// The caller's tenant is one of these.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The caller's key id is one of these.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Every label has one of the given values. Labels come from the key's tenant, the
    /// `x-modelgate-labels: k=v, k2=v2` header and the body's `metadata`.
    #[serde(default)]
    pub labels: BTreeMap<String, OneOrMany>,
    /// The requested model (a catalog id, an alias, `auto` or a deployment) is one of these.
    #[serde(default)]
    pub models: Vec<String>,
    /// The API endpoint is one of these.
    #[serde(default)]
    pub endpoints: Vec<EndpointName>,
}

/// A string or a list of strings.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The API endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointName {
    ChatCompletions,
    Messages,
    Embeddings,
}

impl EndpointName {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointName::ChatCompletions => "chat_completions",
            EndpointName::Messages => "messages",
            EndpointName::Embeddings => "embeddings",
        }
    }

    /// The OpenTelemetry GenAI operation name.
    pub fn operation(self) -> &'static str {
        match self {
            EndpointName::ChatCompletions | EndpointName::Messages => "chat",
            EndpointName::Embeddings => "embeddings",
        }
    }
}

/// Hard requirements. An empty list or an absent field requires nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireSpec {
    /// Openness classes allowed.
    #[serde(default)]
    pub openness: Vec<Openness>,
    /// License terms.
    #[serde(default)]
    pub license: LicenseRequireSpec,
    /// Localities allowed.
    #[serde(default)]
    pub locality: Vec<Locality>,
    /// Data handling of the deployment.
    #[serde(default)]
    pub data: DataRequireSpec,
    /// Regions allowed (deployments without a region are refused when this is set).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Capabilities the model must have.
    #[serde(default)]
    pub capabilities: CapabilitiesRequireSpec,
    /// Catalog models allowed.
    #[serde(default)]
    pub models: Vec<String>,
    /// Catalog models refused.
    #[serde(default)]
    pub deny_models: Vec<String>,
    /// Deployments allowed, by name.
    #[serde(default)]
    pub deployments: Vec<String>,
    /// Price caps, in USD.
    #[serde(default)]
    pub max_price: MaxPriceSpec,
}

/// License requirements.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseRequireSpec {
    /// Licenses allowed, by id.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Licenses refused, by id.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Kinds of license allowed.
    #[serde(default)]
    pub kinds: Vec<LicenseKind>,
    /// The license must (true) or must not (false) be OSI-approved.
    #[serde(default)]
    pub osi_approved: Option<bool>,
    /// The license must (true) or must not (false) be open by the MOF's rule.
    #[serde(default)]
    pub open_per_mof: Option<bool>,
    /// Commercial-use grants allowed (`conditional` covers user caps and similar).
    #[serde(default)]
    pub commercial_use: Vec<CommercialUse>,
    /// false: no acceptable-use restrictions.
    #[serde(default)]
    pub use_restrictions: Option<bool>,
    /// false: no attribution duty.
    #[serde(default)]
    pub attribution_required: Option<bool>,
    /// What the license may say about using outputs.
    #[serde(default)]
    pub output_use: Vec<OutputUse>,
    /// false: offering the model as a service must not count as distribution.
    #[serde(default)]
    pub hosted_service_is_distribution: Option<bool>,
    /// Your monthly active users: licenses capped below this are refused (a cap binds above
    /// its number).
    #[serde(default)]
    pub monthly_active_users: Option<u64>,
    /// Your region (`EU`): licenses that exclude it are refused.
    #[serde(default)]
    pub operator_region: Option<String>,
    /// true: only licenses whose facts were checked against their text.
    #[serde(default)]
    pub verified: Option<bool>,
}

impl LicenseRequireSpec {
    /// Whether any license term is required (an unidentified model meets none).
    pub fn requires_anything(&self) -> bool {
        !self.ids.is_empty()
            || !self.deny.is_empty()
            || !self.kinds.is_empty()
            || self.osi_approved.is_some()
            || self.open_per_mof.is_some()
            || !self.commercial_use.is_empty()
            || self.use_restrictions.is_some()
            || self.attribution_required.is_some()
            || !self.output_use.is_empty()
            || self.hosted_service_is_distribution.is_some()
            || self.monthly_active_users.is_some()
            || self.operator_region.is_some()
            || self.verified.is_some()
    }
}

/// Data-handling requirements.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRequireSpec {
    /// false: the provider must not keep prompts.
    #[serde(default)]
    pub retains_prompts: Option<bool>,
    /// false: the provider must not train on prompts.
    #[serde(default)]
    pub trains_on_prompts: Option<bool>,
}

/// Capability requirements, beyond what the request itself needs (a request with tools needs
/// tool calls, one with images needs vision, whatever the rule says).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesRequireSpec {
    /// The model supports tool calls.
    #[serde(default)]
    pub tools: bool,
    /// The model takes images.
    #[serde(default)]
    pub vision: bool,
    /// The model supports JSON mode or structured output.
    #[serde(default)]
    pub json_mode: bool,
    /// The smallest context window allowed, in tokens.
    #[serde(default)]
    pub min_context_window: Option<u32>,
}

/// Price caps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPriceSpec {
    /// Most USD per million input tokens.
    #[serde(default)]
    pub input_per_million: Option<f64>,
    /// Most USD per million output tokens.
    #[serde(default)]
    pub output_per_million: Option<f64>,
    /// Most USD for one request at its worst case: the estimated prompt plus `max_tokens` (or
    /// the model's longest answer) of output.
    #[serde(default)]
    pub per_request: Option<f64>,
}

/// Ranking criteria.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    /// Local first, then in-cluster, then remote.
    Local,
    /// Lowest estimated cost for this request.
    Cheapest,
    /// Lowest observed time to first byte.
    Fastest,
    /// Open-source first, then open-weight, then closed; OSI licenses first within a class.
    MostOpen,
}

/// Weights of the criteria; each deployment's score is the weighted sum of its rank under each.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsSpec {
    /// Weight of `cheapest`.
    #[serde(default)]
    pub cost: f64,
    /// Weight of `fastest`.
    #[serde(default)]
    pub latency: f64,
    /// Weight of `most_open`.
    #[serde(default)]
    pub openness: f64,
    /// Weight of `local`.
    #[serde(default)]
    pub locality: f64,
}
