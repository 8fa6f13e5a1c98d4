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
    pub(crate) policies: Vec<Spanned<PolicySpec>>,
}

/// A named policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Name, used by `policies.active` in `modelgate.yaml` and by keys.
    pub(crate) name: String,
    /// What the policy is for.
    #[serde(default)]
    #[expect(dead_code, reason = "written for the policy's readers only")]
    pub(crate) description: Option<String>,
    /// Model names clients may ask for, each standing for a list of catalog models the rule then
    /// chooses among. `auto` always stands for every language model.
    #[serde(default)]
    pub(crate) aliases: BTreeMap<String, Vec<String>>,
    /// Rules, tried in order; the first that matches decides.
    pub(crate) rules: Vec<Spanned<RuleSpec>>,
    /// Every answer this policy decides carries the notice its model's license asks to be
    /// shown, in the `x-modelgate-license-notice` header (as `deployments[].notices` does for
    /// one deployment): for the callers, tenants or keys of an application that serves third
    /// parties. Default false.
    #[serde(default)]
    pub(crate) notices: bool,
    /// Put the prompt and the answer on the exported trace of this policy's requests
    /// (`gen_ai.input.messages`, `gen_ai.output.messages`). Never for a request labelled
    /// `data: confidential`, whatever this says. Default false: traces carry no content.
    #[serde(default)]
    pub(crate) trace_content: bool,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Name, reported in headers, errors, logs and metrics.
    pub(crate) name: String,
    /// Which requests the rule decides; empty matches every request.
    #[serde(default, rename = "match")]
    pub(crate) when: MatchSpec,
    /// What a deployment must satisfy to serve the request (hard requirements).
    #[serde(default)]
    pub(crate) require: RequireSpec,
    /// Order of preference among the allowed deployments, first criterion first:
    /// `local`, `cheapest` (for this request), `fastest` (observed time to first byte),
    /// `most_open`. Default `[local, cheapest]`.
    #[serde(default)]
    pub(crate) prefer: Vec<Preference>,
    /// An explicit order of models or deployments, tried before all others in this order.
    #[serde(default)]
    pub(crate) order: Vec<String>,
    /// Instead of a strict order of criteria, a weighted sum of each criterion's rank.
    #[serde(default)]
    pub(crate) weights: Option<WeightsSpec>,
    /// Try the next allowed deployment when one fails. Default true; false tries only the
    /// first.
    #[serde(default = "yes")]
    pub(crate) fallback: bool,
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
    pub(crate) tenants: Vec<String>,
    /// The caller's key id is one of these.
    #[serde(default)]
    pub(crate) keys: Vec<String>,
    /// Every label has one of the given values. Labels come from the key's tenant, the
    /// `x-modelgate-labels: k=v, k2=v2` header and the body's `metadata`.
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, OneOrMany>,
    /// The requested model (a catalog id, an alias, `auto` or a deployment) is one of these.
    #[serde(default)]
    pub(crate) models: Vec<String>,
    /// The API endpoint is one of these.
    #[serde(default)]
    pub(crate) endpoints: Vec<EndpointName>,
}

/// A string or a list of strings.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn values(&self) -> Vec<String> {
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
    Responses,
}

impl EndpointName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndpointName::ChatCompletions => "chat_completions",
            EndpointName::Messages => "messages",
            EndpointName::Embeddings => "embeddings",
            EndpointName::Responses => "responses",
        }
    }

    /// The OpenTelemetry GenAI operation name.
    pub(crate) fn operation(self) -> &'static str {
        match self {
            EndpointName::ChatCompletions | EndpointName::Messages | EndpointName::Responses => {
                "chat"
            }
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
    pub(crate) openness: Vec<Openness>,
    /// License terms.
    #[serde(default)]
    pub(crate) license: LicenseRequireSpec,
    /// Localities allowed.
    #[serde(default)]
    pub(crate) locality: Vec<Locality>,
    /// Data handling of the deployment.
    #[serde(default)]
    pub(crate) data: DataRequireSpec,
    /// Regions allowed (deployments without a region are refused when this is set).
    #[serde(default)]
    pub(crate) regions: Vec<String>,
    /// Capabilities the model must have.
    #[serde(default)]
    pub(crate) capabilities: CapabilitiesRequireSpec,
    /// Catalog models allowed.
    #[serde(default)]
    pub(crate) models: Vec<String>,
    /// Catalog models refused.
    #[serde(default)]
    pub(crate) deny_models: Vec<String>,
    /// Deployments allowed, by name.
    #[serde(default)]
    pub(crate) deployments: Vec<String>,
    /// Price caps, in USD.
    #[serde(default)]
    pub(crate) max_price: MaxPriceSpec,
}

/// License requirements.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseRequireSpec {
    /// Licenses allowed, by id.
    #[serde(default)]
    pub(crate) ids: Vec<String>,
    /// Licenses refused, by id.
    #[serde(default)]
    pub(crate) deny: Vec<String>,
    /// Kinds of license allowed.
    #[serde(default)]
    pub(crate) kinds: Vec<LicenseKind>,
    /// The license must (true) or must not (false) be OSI-approved.
    #[serde(default)]
    pub(crate) osi_approved: Option<bool>,
    /// The license must (true) or must not (false) be open by the MOF's rule.
    #[serde(default)]
    pub(crate) open_per_mof: Option<bool>,
    /// Commercial-use grants allowed (`conditional` covers user caps and similar).
    #[serde(default)]
    pub(crate) commercial_use: Vec<CommercialUse>,
    /// false: no acceptable-use restrictions.
    #[serde(default)]
    pub(crate) use_restrictions: Option<bool>,
    /// false: no attribution duty.
    #[serde(default)]
    pub(crate) attribution_required: Option<bool>,
    /// What the license may say about using outputs.
    #[serde(default)]
    pub(crate) output_use: Vec<OutputUse>,
    /// false: offering the model as a service must not count as distribution.
    #[serde(default)]
    pub(crate) hosted_service_is_distribution: Option<bool>,
    /// Your monthly active users: licenses capped below this are refused (a cap binds above
    /// its number).
    #[serde(default)]
    pub(crate) monthly_active_users: Option<u64>,
    /// Your region (`EU`): licenses that exclude it are refused.
    #[serde(default)]
    pub(crate) operator_region: Option<String>,
    /// true: only licenses whose facts were checked against their text.
    #[serde(default)]
    pub(crate) verified: Option<bool>,
}

impl LicenseRequireSpec {
    /// Whether any license term is required (an unidentified model meets none).
    pub(crate) fn requires_anything(&self) -> bool {
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
    pub(crate) retains_prompts: Option<bool>,
    /// false: the provider must not train on prompts.
    #[serde(default)]
    pub(crate) trains_on_prompts: Option<bool>,
}

/// Capability requirements, beyond what the request itself needs (a request with tools needs
/// tool calls, one with images needs vision, whatever the rule says).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesRequireSpec {
    /// The model supports tool calls.
    #[serde(default)]
    pub(crate) tools: bool,
    /// The model takes images.
    #[serde(default)]
    pub(crate) vision: bool,
    /// The model supports JSON mode or structured output.
    #[serde(default)]
    pub(crate) json_mode: bool,
    /// The smallest context window allowed, in tokens.
    #[serde(default)]
    pub(crate) min_context_window: Option<u32>,
}

/// Price caps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPriceSpec {
    /// Most USD per million input tokens.
    #[serde(default)]
    pub(crate) input_per_million: Option<f64>,
    /// Most USD per million output tokens.
    #[serde(default)]
    pub(crate) output_per_million: Option<f64>,
    /// Most USD for one request at its worst case: the estimated prompt plus `max_tokens` (or
    /// the model's longest answer) of output.
    #[serde(default)]
    pub(crate) per_request: Option<f64>,
}

/// Ranking criteria.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Preference {
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
    pub(crate) cost: f64,
    /// Weight of `fastest`.
    #[serde(default)]
    pub(crate) latency: f64,
    /// Weight of `most_open`.
    #[serde(default)]
    pub(crate) openness: f64,
    /// Weight of `local`.
    #[serde(default)]
    pub(crate) locality: f64,
}
