//! ④ Decide: which deployments may serve a request, and in which order to try them. Pure and
//! synchronous: the snapshot has everything needed, compiled when it was built.
//!
//! The rule that decides is the first whose `match` fits. Request labels may only narrow it: the
//! rule matched without them (from the caller and the model alone) is applied too, and only
//! deployments both allow remain. The [`Decision`] is the only way to name a deployment to the
//! upstream layer, and only this module can make one, so no retry or fallback can reach a
//! deployment the decision left out.

mod check;
pub(crate) mod compile;
mod decision;
pub(crate) mod labels;
mod rank;
pub(crate) mod recheck;
mod routing;
mod sets;
mod shadow;
mod table;

use std::sync::Arc;

use http::StatusCode;

pub use crate::config::policies::spec::EndpointName;
use check::Memo;
#[cfg(test)]
use check::dynamic_check;
use compile::{CompiledRule, Match};
pub(crate) use compile::{Refusal, RefusalKind};
use decision::{AllRefused, Applied, Checked, Checks, Listing, Refused, Undecided};
pub use decision::{CandidateIter, Candidates, Decision};
use rank::Ranked;
pub use routing::{Observed, Routing};
use sets::Target;
pub use shadow::{Agreement, Shadowed, shadow};
use table::Table;

use crate::base::printable;
use crate::catalog::{Model, Task};
use crate::config::Deployment;
use crate::config::keys::Caller;
use crate::exchange::{ErrorBody, ErrorType};

/// What the request needs whatever the rule says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub(crate) tools: bool,
    pub(crate) vision: bool,
    /// Answers asked for (`n`); `None` is one. Each may be as long as the longest answer.
    pub(crate) choices: Option<u32>,
    /// A tool only OpenAI's platform runs (`web_search`…), named: only an OpenAI deployment
    /// can serve the request.
    pub(crate) hosted_tool: Option<&'static str>,
}

/// The size of a request's prompt, for context and price checks.
pub trait PromptSize {
    /// Bytes of text: a bound on the tokens of any byte-level tokenizer.
    fn bytes(&self) -> usize;
    /// Estimated input tokens for `model` (computed only when a check needs it).
    fn tokens(&self, model: &Model) -> u64;
}

/// A request, as the policy sees it.
pub struct Ask<'a> {
    /// The requested model: a catalog id, an alias, `auto`, a deployment or a served name.
    pub model: &'a str,
    pub endpoint: EndpointName,
    pub caller: &'a Caller,
    /// Labels the request carries (header and metadata); the caller's own come on top.
    pub labels: &'a [(String, String)],
    pub needs: Needs,
    pub prompt: &'a dyn PromptSize,
    /// The output cap the request asked for.
    pub max_output: Option<u32>,
}

/// What a refusal for a built-in tool says: only OpenAI's own API runs those tools.
pub(crate) const HOSTED_ONLY: &str = "which only OpenAI's own API runs";

impl PolicyError {
    /// Whether every deployment was refused only because none can run the request's built-in
    /// tool: the request, not the policy, is what no deployment here can serve.
    pub(crate) fn only_for_hosted_tools(&self) -> bool {
        match self {
            PolicyError::Refused { refused, .. } => {
                !refused.is_empty() && refused.iter().all(|(_, r)| r.detail.contains(HOSTED_ONLY))
            }
            _ => false,
        }
    }
}

/// Why no deployment may serve a request.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("model '{0}' is not served here")]
    UnknownModel(String),
    /// A deployment asked for by name that is configured but not served (its weights do not
    /// match their pin).
    #[error("deployment '{name}' is not served: {why}")]
    Withheld { name: String, why: String },
    #[error("no rule of policy '{policy}' matches this request")]
    NoRule { policy: Arc<str> },
    #[error("{}", refused_message(.policy, .rule, .model, .refused))]
    Refused {
        policy: Arc<str>,
        rule: Arc<str>,
        model: String,
        refused: Vec<(String, Refusal)>,
    },
}

fn refused_message(policy: &str, rule: &str, model: &str, refused: &[(String, Refusal)]) -> String {
    let reasons: Vec<String> = refused
        .iter()
        .take(10)
        .map(|(d, r)| format!("{d}: {}", r.detail))
        .collect();
    let more = if refused.len() > 10 {
        format!("; and {} more", refused.len() - 10)
    } else {
        String::new()
    };
    format!(
        "policy '{policy}' rule '{rule}' allows none of the {} deployment(s) for model '{}': {}{more}",
        refused.len(),
        printable(model),
        reasons.join("; ")
    )
}

impl PolicyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            PolicyError::UnknownModel(_) => StatusCode::NOT_FOUND,
            PolicyError::Withheld { .. } => StatusCode::SERVICE_UNAVAILABLE,
            PolicyError::NoRule { .. } | PolicyError::Refused { .. } => StatusCode::FORBIDDEN,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        match self {
            PolicyError::UnknownModel(m) => ErrorBody::new(
                ErrorType::InvalidRequestError,
                format!(
                    "model '{}' is not served by this gateway; GET /v1/models lists the models you can use",
                    printable(m)
                ),
            )
            .param("model")
            .code("model_not_found"),
            PolicyError::Withheld { .. } => ErrorBody::new(ErrorType::ApiError, self.to_string())
                .param("model")
                .code("deployment_withheld"),
            PolicyError::NoRule { .. } | PolicyError::Refused { .. } => {
                ErrorBody::new(ErrorType::PermissionError, self.to_string())
                    .param("model")
                    .code("policy_violation")
            }
        }
    }
}

/// The kind of model an endpoint needs.
fn task_of(endpoint: EndpointName) -> Task {
    match endpoint {
        EndpointName::Embeddings => Task::Embedding,
        EndpointName::ChatCompletions | EndpointName::Messages | EndpointName::Responses => {
            Task::Chat
        }
    }
}

fn label_fits(m: &Match, labels: &dyn Fn(&str) -> Option<String>) -> bool {
    m.labels
        .iter()
        .all(|(k, values)| labels(k).is_some_and(|v| values.contains(&v)))
}

/// Whether a rule's `match` fits; `with_request_labels` says which labels count.
fn matches(rule: &CompiledRule, ask: &Ask, with_request_labels: bool) -> bool {
    let m = &rule.when;
    let c = ask.caller;
    if !m.tenants.is_empty() && !m.tenants.iter().any(|t| **t == *c.tenant) {
        return false;
    }
    if !m.keys.is_empty()
        && !c
            .key_id
            .as_ref()
            .is_some_and(|k| m.keys.iter().any(|x| **x == **k))
    {
        return false;
    }
    if !m.models.is_empty() && !m.models.iter().any(|x| x == ask.model) {
        return false;
    }
    if !m.endpoints.is_empty() && !m.endpoints.contains(&ask.endpoint) {
        return false;
    }
    let lookup = |k: &str| -> Option<String> {
        // The caller's labels are fixed; the request's can only add new ones.
        if let Some((_, v)) = c.labels.iter().find(|(ck, _)| ck == k) {
            return Some(v.clone());
        }
        if with_request_labels {
            ask.labels
                .iter()
                .find(|(rk, _)| rk == k)
                .map(|(_, v)| v.clone())
        } else {
            None
        }
    };
    label_fits(m, &lookup)
}

/// Decides where a request may go, under its caller's policy.
pub fn decide(ask: &Ask, snapshot: &Routing) -> Result<Decision, PolicyError> {
    let p = snapshot
        .policies
        .index_for_caller(ask.caller.policy.as_deref());
    decide_under(ask, snapshot, p).map_err(|u| u.into_error(&snapshot.policies, ask.model))
}

/// Decides where a request may go under the policy at position `p` of the snapshot's, whichever
/// its caller's is; a refusal of every deployment is left unlisted (counted by reason).
fn decide_under(ask: &Ask, snapshot: &Routing, p: usize) -> Result<Decision, Undecided> {
    let compiled = &snapshot.policies;
    let Some(policy) = compiled.list.get(p) else {
        return Err(PolicyError::NoRule {
            policy: Arc::from("(none)"),
        }
        .into());
    };
    let target = match policy.aliases.get(ask.model) {
        Some(t) => Some(t),
        None => compiled.sets.target(ask.model, task_of(ask.endpoint)),
    };
    let Some(target) = target else {
        if let Some((name, why)) = snapshot.withheld.iter().find(|(n, _)| n == ask.model) {
            return Err(PolicyError::Withheld {
                name: name.clone(),
                why: why.clone(),
            }
            .into());
        }
        return Err(PolicyError::UnknownModel(ask.model.to_owned()).into());
    };
    if target.members().is_empty() {
        return Err(PolicyError::UnknownModel(ask.model.to_owned()).into());
    }
    // Request labels only narrow: the rule found without them must exist and applies as well,
    // so a label can never reach what the caller could not reach without it.
    let base = policy.rules.iter().position(|r| matches(r, ask, false));
    let found = policy.rules.iter().position(|r| matches(r, ask, true));
    let (Some(base), Some(found)) = (base, found) else {
        return Err(PolicyError::NoRule {
            policy: policy.name.clone(),
        }
        .into());
    };
    let applied = Applied {
        policy: p,
        rule: found,
        base: Some(base).filter(|b| *b != found),
    };
    let Some((rule, base)) = applied.rules(compiled) else {
        return Err(PolicyError::NoRule {
            policy: policy.name.clone(),
        }
        .into());
    };

    let table = match base {
        None => compiled.rule_number(p, found).and_then(|n| {
            let t = target.table(n, || Table::build(rule, &compiled.deployments, target))?;
            Some((t, n))
        }),
        Some(_) => None,
    };
    let (ranked, mut refused, checked) = match table {
        Some((t, n)) => t.decide(rule, n, ask, &compiled.deployments, target),
        None => scan(rule, base, ask, snapshot, target),
    };
    let Some(mut candidates) = ranked else {
        return Err(Undecided::Refused(Box::new(AllRefused {
            policy: policy.name.clone(),
            rule: rule.name.clone(),
            by_kind: refused.by_kind,
            listing: Listing {
                applied,
                target: target.clone(),
                checked,
            },
        })));
    };
    let mut held_back = 0;
    if !rule.fallback || base.is_some_and(|b| !b.fallback) {
        held_back = candidates.keep_first();
    }
    if refused.by_kind.iter().any(|n| *n > 0) {
        refused.listing = Some(Listing {
            applied,
            target: target.clone(),
            checked,
        });
    }
    Ok(Decision {
        policy: policy.name.clone(),
        policy_header: policy.header.clone(),
        notices: policy.notices,
        trace_content: policy.trace_content,
        rule: rule.name.clone(),
        rule_header: rule.header.clone(),
        base_rule: base.map(|b| b.name.clone()),
        compiled: compiled.clone(),
        candidates,
        held_back,
        refused,
    })
}

/// Decides by checking every group of `target` under the rules: the allowed deployments
/// ranked (none if every one is refused), what was refused, and the checks that refused groups.
fn scan(
    rule: &CompiledRule,
    base: Option<&CompiledRule>,
    ask: &Ask,
    snapshot: &Routing,
    target: &Target,
) -> (Option<Ranked>, Refused, Checks) {
    let compiled = &snapshot.policies;
    // One verdict per group of alike deployments: its first member's is every member's.
    let mut allowed: Vec<(usize, &[usize])> = Vec::with_capacity(target.group_count());
    let mut refused = Refused::default();
    let mut checked: Vec<(usize, Checked)> = Vec::new();
    let mut memo = Memo::new(rule, base, target.group_count());
    for (at, group) in target.groups().enumerate() {
        let Some(&first) = group.first() else {
            continue;
        };
        let (Some(d), Some(class)) = (compiled.deployments.get(first), compiled.sets.class(first))
        else {
            continue;
        };
        let kind = match fixed(rule, first).or_else(|| base.and_then(|b| fixed(b, first))) {
            Some(r) => r.kind,
            None => {
                let Some(c) = memo.check(rule, base, ask, d) else {
                    allowed.push((at, group));
                    continue;
                };
                let kind = c.kind();
                checked.push((class, c));
                kind
            }
        };
        if let Some(n) = refused.by_kind.get_mut(kind as usize) {
            *n += group.len();
        }
    }
    let ranked =
        (!allowed.is_empty()).then(|| rank::rank_groups(rule, ask, snapshot, target, &allowed));
    (ranked, refused, Checks::ByClass(checked))
}

/// Why `rule` refuses deployment `i` whatever the request.
fn fixed(rule: &CompiledRule, i: usize) -> Option<&Refusal> {
    rule.static_refusal.get(i)?.as_ref()
}

/// Policies no request can be decided by without request labels: every rule asks for a label
/// that no key or tenant carries, so a request is refused whatever labels it sends (they only
/// narrow). For `modelgate check`, as warnings.
pub(crate) fn label_only_policies(snapshot: &Routing) -> Vec<String> {
    let cfg = &snapshot.config;
    let callers: Vec<&Caller> = cfg
        .keys
        .callers()
        .chain(std::iter::once(&cfg.anonymous))
        .collect();
    let carried = |k: &str, values: &[String]| {
        callers
            .iter()
            .any(|c| c.labels.iter().any(|(ck, v)| ck == k && values.contains(v)))
    };
    let mut out = Vec::new();
    for p in &snapshot.policies.list {
        let needs: Vec<String> = p
            .rules
            .iter()
            .filter_map(|r| {
                r.when
                    .labels
                    .iter()
                    .find(|(k, values)| !carried(k, values))
                    .map(|(k, _)| format!("'{}' needs label '{k}'", r.name))
            })
            .collect();
        if !p.rules.is_empty() && needs.len() == p.rules.len() {
            out.push(format!(
                "policy '{}': every rule matches only on labels no key or tenant carries ({}); request labels only narrow, so its requests are refused whatever labels they send",
                p.name,
                needs.join(", ")
            ));
        }
    }
    out
}

/// The deployments (of `indices`, those of model `model`) a caller may use at all: those its
/// rule for a request of that model, without request labels, does not refuse outright. This is
/// what `GET /v1/models` lists.
pub(crate) fn listable(
    snapshot: &Routing,
    caller: &Caller,
    model: &str,
    indices: &[usize],
) -> Vec<usize> {
    struct NoPrompt;
    impl PromptSize for NoPrompt {
        fn bytes(&self) -> usize {
            0
        }
        fn tokens(&self, _: &Model) -> u64 {
            0
        }
    }
    let Some(policy) = snapshot.policies.for_caller(caller.policy.as_deref()) else {
        return Vec::new();
    };
    let ask = Ask {
        model,
        endpoint: EndpointName::ChatCompletions,
        caller,
        labels: &[],
        needs: Needs::default(),
        prompt: &NoPrompt,
        max_output: None,
    };
    let Some(rule) = policy.rules.iter().find(|r| matches(r, &ask, false)) else {
        return Vec::new();
    };
    indices
        .iter()
        .copied()
        .filter(|i| rule.static_refusal.get(*i).is_some_and(Option::is_none))
        .collect()
}

/// The longest answer a request may get on `d`: its `max_tokens`, else the model's longest
/// answer, else what is left of the context window.
pub(crate) fn worst_output(d: &Deployment, prompt_tokens: u64, max_output: Option<u32>) -> u64 {
    let caps = &d.model.capabilities;
    max_output
        .map(u64::from)
        .or(caps.max_output_tokens.map(u64::from))
        .unwrap_or_else(|| u64::from(caps.context_window).saturating_sub(prompt_tokens))
}

/// The most a request may cost on `d`, and the output tokens that assumes: every choice (`n`)
/// as long as it may be. What the price cap enforces, what a budget reserves and what
/// `modelgate explain` shows, from this one function.
pub(crate) fn request_worst_case(
    d: &Deployment,
    prompt_tokens: u64,
    max_output: Option<u32>,
    choices: Option<u32>,
) -> (f64, u64) {
    let out = worst_output(d, prompt_tokens, max_output) * u64::from(choices.unwrap_or(1));
    (worst_case_cost(d, prompt_tokens, out), out)
}

/// The cost of these tokens on `d`.
pub(crate) fn worst_case_cost(d: &Deployment, prompt_tokens: u64, output_tokens: u64) -> f64 {
    cost_at(
        [d.price.input, d.price.output],
        prompt_tokens,
        output_tokens,
    )
}

/// The cost of these tokens at `price` (input and output, per million tokens): the one
/// formula, so that a decision by table prices to the bit what the scan does.
fn cost_at(price: [f64; 2], prompt_tokens: u64, output_tokens: u64) -> f64 {
    (prompt_tokens as f64 * price[0] + output_tokens as f64 * price[1]) / 1e6
}

#[cfg(test)]
mod property;
#[cfg(test)]
mod tests;
