//! ④ Policies compiled against a snapshot's deployments when it is built: every requirement that
//! does not depend on the request is evaluated once per (rule, deployment), so deciding a request
//! is lookups plus the few checks that need the request itself.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;

use super::sets::Target;
use crate::config::Deployment;
use crate::config::policies::spec::{
    EndpointName, PolicySpec, Preference, RequireSpec, RuleSpec, WeightsSpec,
};

/// Why a deployment may not serve a request: a closed kind (a metric label) and the detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub(crate) kind: RefusalKind,
    pub(crate) detail: Arc<str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RefusalKind {
    Openness,
    License,
    Locality,
    Data,
    Region,
    Capability,
    Model,
    Deployment,
    Price,
    Context,
}

impl RefusalKind {
    pub(crate) const ALL: [RefusalKind; 10] = [
        RefusalKind::Openness,
        RefusalKind::License,
        RefusalKind::Locality,
        RefusalKind::Data,
        RefusalKind::Region,
        RefusalKind::Capability,
        RefusalKind::Model,
        RefusalKind::Deployment,
        RefusalKind::Price,
        RefusalKind::Context,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Openness => "openness",
            RefusalKind::License => "license",
            RefusalKind::Locality => "locality",
            RefusalKind::Data => "data_handling",
            RefusalKind::Region => "region",
            RefusalKind::Capability => "capability",
            RefusalKind::Model => "model",
            RefusalKind::Deployment => "deployment",
            RefusalKind::Price => "price",
            RefusalKind::Context => "context_window",
        }
    }
}

fn refuse(kind: RefusalKind, detail: String) -> Option<Refusal> {
    Some(Refusal {
        kind,
        detail: Arc::from(detail),
    })
}

/// A rule's conditions on the request.
#[derive(Debug, Default)]
pub(crate) struct Match {
    pub(crate) tenants: Vec<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) labels: Vec<(String, Vec<String>)>,
    pub(crate) models: Vec<String>,
    pub(crate) endpoints: Vec<EndpointName>,
}

/// A rule, ready to decide.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) name: Arc<str>,
    /// The name as the answer's `x-modelgate-rule` header (none if it cannot be one).
    pub(crate) header: Option<HeaderValue>,
    pub(crate) when: Match,
    /// By deployment index: why the request-independent requirements refuse it.
    pub(crate) static_refusal: Vec<Option<Refusal>>,
    /// Caps checked against each request's estimate.
    pub(crate) per_request_cap: Option<f64>,
    pub(crate) prefer: Vec<Preference>,
    /// By deployment index: its position in `order`, if listed.
    pub(crate) order: Vec<Option<usize>>,
    pub(crate) weights: Option<WeightsSpec>,
    pub(crate) fallback: bool,
}

/// A policy, ready to decide.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub(crate) name: Arc<str>,
    pub(crate) header: HeaderValue,
    /// Its answers carry their model's license notice.
    pub(crate) notices: bool,
    /// Its requests' prompts and answers go on their traces.
    pub(crate) trace_content: bool,
    /// Alias name → the deployments of its models, grouped.
    pub(crate) aliases: crate::base::FastMap<String, Target>,
    pub(crate) rules: Vec<CompiledRule>,
}

/// Alias name → the deployment indices of its models (ascending).
pub(super) type AliasMembers = HashMap<String, Vec<usize>>;

impl CompiledPolicy {
    /// The policy, its aliases still to be grouped (they are returned beside it).
    pub(super) fn compile(
        spec: &PolicySpec,
        deployments: &[Arc<Deployment>],
    ) -> (CompiledPolicy, AliasMembers) {
        let aliases = spec
            .aliases
            .iter()
            .map(|(name, models)| {
                let idx = deployments
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| models.contains(&d.model.id))
                    .map(|(i, _)| i)
                    .collect();
                (name.clone(), idx)
            })
            .collect();
        let policy = CompiledPolicy {
            name: Arc::from(spec.name.as_str()),
            header: HeaderValue::from_str(&spec.name).unwrap_or(HeaderValue::from_static("-")),
            notices: spec.notices,
            trace_content: spec.trace_content,
            aliases: crate::base::FastMap::default(),
            rules: spec
                .rules
                .iter()
                .map(|r| CompiledRule::compile(&r.value, deployments))
                .collect(),
        };
        (policy, aliases)
    }
}

impl CompiledRule {
    fn compile(r: &RuleSpec, deployments: &[Arc<Deployment>]) -> CompiledRule {
        let m = &r.when;
        CompiledRule {
            name: Arc::from(r.name.as_str()),
            header: HeaderValue::from_str(&r.name).ok(),
            when: Match {
                tenants: m.tenants.clone(),
                keys: m.keys.clone(),
                labels: m
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.values()))
                    .collect(),
                models: m.models.clone(),
                endpoints: m.endpoints.clone(),
            },
            static_refusal: deployments
                .iter()
                .map(|d| static_check(&r.require, d))
                .collect(),
            per_request_cap: r.require.max_price.per_request,
            prefer: if r.prefer.is_empty() && r.weights.is_none() {
                vec![Preference::Local, Preference::Cheapest]
            } else {
                r.prefer.clone()
            },
            order: deployments
                .iter()
                .map(|d| {
                    r.order
                        .iter()
                        .position(|o| *o == d.name || *o == d.model.id)
                })
                .collect(),
            weights: r.weights.clone(),
            fallback: r.fallback,
        }
    }
}

fn list<T: std::fmt::Debug>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:?}").to_lowercase()).collect();
    items.join(", ")
}

/// The first request-independent requirement `d` fails.
pub(crate) fn static_check(req: &RequireSpec, d: &Deployment) -> Option<Refusal> {
    // In the order a refusal names its reason: what the model is, then where it runs, then
    // what it can do, then which it is, then what it costs.
    check_openness(req, d)
        .or_else(|| check_license_identity(req, d))
        .or_else(|| check_license_terms(req, d))
        .or_else(|| check_place(req, d))
        .or_else(|| check_capabilities(req, d))
        .or_else(|| check_names(req, d))
        .or_else(|| check_price(req, d))
}

/// The model's openness class.
fn check_openness(req: &RequireSpec, d: &Deployment) -> Option<Refusal> {
    use RefusalKind as K;
    let m = &d.model;
    if !req.openness.is_empty() && !req.openness.contains(&m.openness) {
        let allowed: Vec<&str> = req.openness.iter().map(|o| o.as_str()).collect();
        return refuse(
            K::Openness,
            format!(
                "openness {} is not one of {}",
                m.openness.as_str(),
                allowed.join(", ")
            ),
        );
    }
    None
}

/// Which license the model is under: known at all, and one allowed.
fn check_license_identity(req: &RequireSpec, d: &Deployment) -> Option<Refusal> {
    use RefusalKind as K;
    let m = &d.model;
    let l = &m.license;
    let lr = &req.license;
    if m.test_only && lr.requires_anything() {
        return refuse(
            K::License,
            format!(
                "{} is a test model, not a language model: it has no license terms to test",
                m.id
            ),
        );
    }
    if m.uncatalogued && lr.requires_anything() {
        // A license nobody could name meets no license requirement, a deny list included: the
        // model might be under exactly the license it denies.
        return refuse(
            K::License,
            format!(
                "license unknown: the model was not identified ({})",
                d.identity.evidence
            ),
        );
    }
    if !lr.ids.is_empty() && !lr.ids.contains(&l.id) {
        return refuse(
            K::License,
            format!("license {} is not one of {}", l.id, lr.ids.join(", ")),
        );
    }
    if lr.deny.contains(&l.id) {
        return refuse(K::License, format!("license {} is denied", l.id));
    }
    if !lr.kinds.is_empty() && !lr.kinds.contains(&l.kind) {
        return refuse(
            K::License,
            format!("license kind {:?} is not allowed", l.kind).to_lowercase(),
        );
    }
    None
}

/// What the license's terms allow.
fn check_license_terms(req: &RequireSpec, d: &Deployment) -> Option<Refusal> {
    use RefusalKind as K;
    let l = &d.model.license;
    let lr = &req.license;
    if let Some(want) = lr.osi_approved
        && l.osi_approved != want
    {
        return refuse(
            K::License,
            format!(
                "license {} is {}OSI-approved",
                l.id,
                if l.osi_approved { "" } else { "not " }
            ),
        );
    }
    if let Some(want) = lr.open_per_mof
        && l.open_per_mof != want
    {
        return refuse(
            K::License,
            format!(
                "license {} is {}open by the MOF's rule",
                l.id,
                if l.open_per_mof { "" } else { "not " }
            ),
        );
    }
    if !lr.commercial_use.is_empty() && !lr.commercial_use.contains(&l.commercial_use) {
        return refuse(
            K::License,
            format!(
                "license {} grants commercial use '{}', not {}",
                l.id,
                l.commercial_use.as_str(),
                lr.commercial_use
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        );
    }
    if lr.use_restrictions == Some(false) && l.use_restrictions {
        return refuse(K::License, format!("license {} restricts uses", l.id));
    }
    if lr.attribution_required == Some(false) && l.attribution_required {
        return refuse(K::License, format!("license {} requires attribution", l.id));
    }
    if !lr.output_use.is_empty() && !lr.output_use.contains(&l.output_use_restricted) {
        return refuse(
            K::License,
            format!(
                "license {} restricts outputs ({:?})",
                l.id, l.output_use_restricted
            )
            .to_lowercase(),
        );
    }
    if lr.hosted_service_is_distribution == Some(false) && l.hosted_service_is_distribution {
        return refuse(
            K::License,
            format!("license {} counts a hosted service as distribution", l.id),
        );
    }
    // The caps bind above the number ("greater than 700 million monthly active users").
    if let (Some(users), Some(cap)) = (lr.monthly_active_users, l.mau_limit)
        && users > cap
    {
        return refuse(K::License, format!("license {} caps users at {cap}", l.id));
    }
    if let Some(region) = &lr.operator_region
        && l.territorial_exclusions
            .iter()
            .any(|r| r.eq_ignore_ascii_case(region))
    {
        return refuse(K::License, format!("license {} excludes {region}", l.id));
    }
    if lr.verified == Some(true) && !l.verified {
        return refuse(
            K::License,
            format!("license {} facts are not verified", l.id),
        );
    }
    None
}

/// Where the model runs and what happens to the prompts there.
fn check_place(req: &RequireSpec, d: &Deployment) -> Option<Refusal> {
    use RefusalKind as K;
    let ep = &d.endpoint;
    let locality = d.locality();
    if !req.locality.is_empty() {
        match locality {
            Some(l) if req.locality.contains(&l) => {}
            Some(l) => {
                return refuse(
                    K::Locality,
                    format!(
                        "locality {} is not one of {}",
                        l.as_str(),
                        list(&req.locality)
                    ),
                );
            }
            None => {
                return refuse(
                    K::Locality,
                    format!(
                        "locality unknown: the server is at {}, but the model was not identified, so where it runs is not known",
                        ep.locality.as_str()
                    ),
                );
            }
        }
    }
    // Undeclared is unknown, and a requirement refuses unknown; a local deployment of an
    // identified model runs where the configuration says, so it keeps nothing unless declared
    // to (an unidentified one may be a proxy to anywhere).
    let local = locality == Some(crate::config::spec::Locality::Local);
    let asks_data = req.data.retains_prompts.is_some() || req.data.trains_on_prompts.is_some();
    if locality.is_none() && asks_data {
        return refuse(
            K::Data,
            "data handling unknown: the model was not identified, so who receives the prompts is not known".into(),
        );
    }
    for (required, declared, what) in [
        (
            req.data.retains_prompts,
            ep.data.retains_prompts,
            "retains_prompts",
        ),
        (
            req.data.trains_on_prompts,
            ep.data.trains_on_prompts,
            "trains_on_prompts",
        ),
    ] {
        let Some(required) = required else {
            continue;
        };
        let known = declared.or((local && !required).then_some(false));
        match known {
            Some(v) if v == required => {}
            Some(v) => {
                return refuse(K::Data, format!("the deployment declares {what}: {v}"));
            }
            None => {
                return refuse(
                    K::Data,
                    format!("the deployment does not declare data.{what} (unknown is refused)"),
                );
            }
        }
    }
    if !req.regions.is_empty() && locality.is_none() {
        return refuse(
            K::Region,
            "region unknown: the model was not identified, so where it runs is not known".into(),
        );
    }
    if !req.regions.is_empty() && !ep.region.as_ref().is_some_and(|r| req.regions.contains(r)) {
        return refuse(
            K::Region,
            format!(
                "region {} is not one of {}",
                ep.region.as_deref().unwrap_or("(unknown)"),
                req.regions.join(", ")
            ),
        );
    }
    None
}

/// What the model can do.
fn check_capabilities(req: &RequireSpec, d: &Deployment) -> Option<Refusal> {
    use RefusalKind as K;
    let m = &d.model;
    let caps = &req.capabilities;
    let mc = &m.capabilities;
    for (needed, has, what) in [
        (caps.tools, mc.tools, "tool calls"),
        (caps.vision, mc.vision, "image input"),
        (caps.json_mode, mc.json_mode, "JSON mode"),
    ] {
        if needed && !has {
            return refuse(K::Capability, format!("model {} has no {what}", m.id));
        }
    }
    if let Some(min) = caps.min_context_window
        && mc.context_window < min
    {
        return refuse(
            K::Capability,
            format!("context window {} is under {min}", mc.context_window),
        );
    }
    None
}

/// Which model and deployment it is.
fn check_names(req: &RequireSpec, d: &Deployment) -> Option<Refusal> {
    use RefusalKind as K;
    let m = &d.model;
    if m.uncatalogued && (!req.models.is_empty() || !req.deny_models.is_empty()) {
        // Its id is only what the backend calls it: it may be any model, the denied ones too.
        return refuse(
            K::Model,
            format!(
                "the model served as {} was not identified as any catalog model",
                d.upstream_model
            ),
        );
    }
    if !req.models.is_empty() && !req.models.contains(&m.id) {
        return refuse(
            K::Model,
            format!("model {} is not one of the allowed models", m.id),
        );
    }
    if req.deny_models.contains(&m.id) {
        return refuse(K::Model, format!("model {} is denied", m.id));
    }
    if !req.deployments.is_empty() && !req.deployments.contains(&d.name) {
        return refuse(
            K::Deployment,
            format!(
                "deployment {} is not one of the allowed deployments",
                d.name
            ),
        );
    }
    None
}

/// What it costs.
fn check_price(req: &RequireSpec, d: &Deployment) -> Option<Refusal> {
    use RefusalKind as K;
    let m = &d.model;
    let ep = &d.endpoint;
    let p = &req.max_price;
    let caps_price =
        p.input_per_million.is_some() || p.output_per_million.is_some() || p.per_request.is_some();
    if m.uncatalogued && ep.price_override.is_none() && caps_price {
        return refuse(
            K::Price,
            "price unknown: the model was not identified and the deployment sets no price".into(),
        );
    }
    if let Some(cap) = p.input_per_million
        && d.price.input > cap
    {
        return refuse(
            K::Price,
            format!(
                "input costs {} per million tokens, over {cap}",
                d.price.input
            ),
        );
    }
    if let Some(cap) = p.output_per_million
        && d.price.output > cap
    {
        return refuse(
            K::Price,
            format!(
                "output costs {} per million tokens, over {cap}",
                d.price.output
            ),
        );
    }
    None
}
