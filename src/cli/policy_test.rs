//! `modelgate test`: policy tests as YAML cases (a request, and what must happen to it), run
//! against a configuration at rest, one line per failing case and a count, for CI. The
//! conventions of `opa test` and Envoy's `router_check_tool`: the policy is code, and its
//! tests are kept and run beside it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::cases::{self, Case};
use crate::catalog::Openness;
use crate::config::spec::Locality;
use crate::policy::{Decision, EndpointName, Needs, PolicyError, Routing};
use crate::yaml::problem::Problems;

/// One test file (`policies/tests/*.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFileSpec {
    /// The configuration the cases are decided under, relative to this file. Default: the
    /// built-in one. `modelgate test --config` overrides it.
    #[serde(default)]
    pub(crate) config: Option<String>,
    /// The policy in force for every case (instead of the configuration's `policies.active`
    /// and the callers' own). Default: as the gateway would choose.
    #[serde(default)]
    pub(crate) policy: Option<Spanned<String>>,
    /// The cases, each a request and what must happen to it.
    pub(crate) cases: Vec<Spanned<CaseSpec>>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// What the case checks, printed when it fails.
    pub(crate) name: String,
    pub(crate) request: RequestSpec,
    pub(crate) expect: ExpectSpec,
}

/// A request, as the policy sees it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// The model asked for: a catalog id, an alias, `auto` or a deployment name.
    pub(crate) model: String,
    /// Default `chat_completions`.
    #[serde(default)]
    pub(crate) endpoint: Option<EndpointName>,
    /// The caller's key, by its id in the configuration (its tenant, labels and policy).
    #[serde(default)]
    pub(crate) key: Option<Spanned<String>>,
    /// The caller's tenant, when no key is given. Default: the keyless caller (`default`).
    #[serde(default)]
    pub(crate) tenant: Option<String>,
    /// Labels the request carries (`x-modelgate-labels`, `metadata`).
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// The request offers tools.
    #[serde(default)]
    pub(crate) tools: bool,
    /// The request has images.
    #[serde(default)]
    pub(crate) vision: bool,
    /// Answers asked for.
    #[serde(default)]
    pub(crate) n: Option<u32>,
    /// The prompt's size in tokens. Default 100.
    #[serde(default)]
    pub(crate) prompt_tokens: Option<u64>,
    /// The most output tokens asked for (`max_tokens`).
    #[serde(default)]
    pub(crate) max_tokens: Option<u32>,
}

/// What must happen. Without `refused`, the request must be allowed; every expectation given
/// must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// Exactly these deployments, in the order they would be tried.
    #[serde(default)]
    pub(crate) allowed: Option<Vec<String>>,
    /// The deployment tried first.
    #[serde(default)]
    pub(crate) first: Option<String>,
    /// None of these deployments (or deployments of these models) may be tried.
    #[serde(default)]
    pub(crate) not_allowed: Vec<String>,
    /// Every deployment tried is of one of these openness classes.
    #[serde(default)]
    pub(crate) openness: Vec<Openness>,
    /// Every deployment tried runs in one of these places.
    #[serde(default)]
    pub(crate) locality: Vec<Locality>,
    /// The rule that decides (or refuses).
    #[serde(default)]
    pub(crate) rule: Option<String>,
    /// The request is refused: `true`, or which way (`{rule: ..., reason: license}`).
    #[serde(default)]
    pub(crate) refused: Option<Refused>,
}

/// A refusal, as expected.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Refused {
    Any(bool),
    Why(RefusedSpec),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedSpec {
    /// The rule that refuses.
    #[serde(default)]
    pub(crate) rule: Option<String>,
    /// Why: a refusal reason (`openness`, `license`, `locality`, `data_handling`, `region`,
    /// `capability`, `model`, `deployment`, `price`, `context_window`) at least one refused
    /// deployment was refused for, or `unknown_model`, `no_rule`, `withheld`.
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// What `modelgate test` found.
pub struct Report {
    /// One line per failing case (and per problem with a file).
    pub text: String,
    pub passed: usize,
    pub failed: usize,
}

/// Runs the test files (directories: their `*.yaml` files), against `config` when given.
pub fn run(files: &[PathBuf], config: Option<&Path>) -> Report {
    let mut report = Report {
        text: String::new(),
        passed: 0,
        failed: 0,
    };
    let mut list = Vec::new();
    for f in files {
        match crate::config::load::yaml_files(f) {
            Ok(found) => list.extend(found),
            Err(e) => {
                let _ = writeln!(report.text, "{}: {e}", f.display());
                report.failed += 1;
            }
        }
    }
    for file in list {
        run_file(&file, config, &mut report);
    }
    report
}

fn run_file(path: &Path, config: Option<&Path>, report: &mut Report) {
    let name: Arc<str> = Arc::from(path.display().to_string());
    let mut problems = Problems::default();
    let spec = match std::fs::read_to_string(path) {
        Ok(text) => crate::yaml::parse::<TestFileSpec>(&name, &text, &mut problems),
        Err(e) => {
            problems.file(&name, format!("cannot read: {e}"));
            None
        }
    };
    let Some(spec) = spec else {
        let _ = writeln!(report.text, "{problems}");
        report.failed += 1;
        return;
    };
    let config = config.map(Path::to_path_buf).or_else(|| {
        let relative = spec.config.as_ref()?;
        Some(path.parent().unwrap_or(Path::new(".")).join(relative))
    });
    let routing = match cases::at_rest(config.as_deref(), None) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(report.text, "{name}: {e}");
            report.failed += 1;
            return;
        }
    };
    let policy = spec.policy.as_ref().map(|p| p.value.as_str());
    for case in &spec.cases {
        let at = format!("{name}:{}", case.referenced.line());
        match run_case(&case.value, policy, &routing) {
            Ok(()) => report.passed += 1,
            Err(why) => {
                report.failed += 1;
                let _ = writeln!(report.text, "FAIL {at} {:?}: {why}", case.value.name);
            }
        }
    }
}

/// Decides one case and checks what must hold; the difference when something does not.
fn run_case(case: &CaseSpec, policy: Option<&str>, routing: &Routing) -> Result<(), String> {
    let r = &case.request;
    let caller = cases::caller(
        routing,
        r.key.as_ref().map(|k| k.value.as_str()),
        r.tenant.as_deref(),
        policy,
    )?;
    check_names(&case.expect, routing)?;
    let labels: Vec<(String, String)> = r.labels.clone().into_iter().collect();
    let decided = cases::decide(
        &Case {
            model: &r.model,
            endpoint: r.endpoint.unwrap_or(EndpointName::ChatCompletions),
            caller: &caller,
            labels: &labels,
            needs: Needs {
                tools: r.tools,
                vision: r.vision,
                choices: r.n,
                hosted_tool: None,
            },
            prompt_tokens: r.prompt_tokens.unwrap_or(100),
            max_tokens: r.max_tokens,
        },
        routing,
    );
    let e = &case.expect;
    match (decided, &e.refused) {
        (Ok(d), None | Some(Refused::Any(false))) => check_allowed(e, &d),
        (Ok(d), Some(_)) => Err(format!(
            "expected a refusal; allowed by rule {}: {}",
            d.rule,
            names(&d).join(", ")
        )),
        (Err(err), None | Some(Refused::Any(false))) => {
            Err(format!("expected it allowed; refused: {err}"))
        }
        (Err(err), Some(Refused::Any(true))) => check_rule(e.rule.as_deref(), rule_of(&err)),
        (Err(err), Some(Refused::Why(why))) => {
            check_rule(why.rule.as_deref().or(e.rule.as_deref()), rule_of(&err))?;
            match &why.reason {
                Some(reason) if !reasons(&err).contains(&reason.as_str()) => Err(format!(
                    "expected refused for {reason}; refused for {}: {err}",
                    reasons(&err).join(", ")
                )),
                _ => Ok(()),
            }
        }
    }
}

/// The deployments a decision would try, in order.
fn names(d: &Decision) -> Vec<String> {
    d.candidates().iter().map(|c| c.name.clone()).collect()
}

fn check_allowed(e: &ExpectSpec, d: &Decision) -> Result<(), String> {
    let tried = names(d);
    check_rule(e.rule.as_deref(), Some(&d.rule))?;
    if let Some(allowed) = &e.allowed
        && *allowed != tried
    {
        return Err(format!(
            "allowed: expected [{}], got [{}]",
            allowed.join(", "),
            tried.join(", ")
        ));
    }
    if let Some(first) = &e.first
        && tried.first() != Some(first)
    {
        return Err(format!(
            "first: expected {first}, got {} (of [{}])",
            tried.first().map_or("nothing", String::as_str),
            tried.join(", ")
        ));
    }
    for c in d.candidates().iter() {
        if e.not_allowed
            .iter()
            .any(|n| *n == c.name || *n == c.model.id)
        {
            return Err(format!(
                "not_allowed: {} (model {}) is allowed, by rule {}",
                c.name, c.model.id, d.rule
            ));
        }
        if !e.openness.is_empty() && !e.openness.contains(&c.model.openness) {
            return Err(format!(
                "openness: {} is {}, by rule {}",
                c.name,
                c.model.openness.as_str(),
                d.rule
            ));
        }
        if !e.locality.is_empty() && !c.locality().is_some_and(|l| e.locality.contains(&l)) {
            return Err(format!(
                "locality: {} is {}, by rule {}",
                c.name,
                c.locality().map_or("unknown", |l| l.as_str()),
                d.rule
            ));
        }
    }
    Ok(())
}

fn check_rule(expected: Option<&str>, got: Option<&str>) -> Result<(), String> {
    match expected {
        Some(want) if got != Some(want) => Err(format!(
            "rule: expected {want}, got {}",
            got.unwrap_or("none")
        )),
        _ => Ok(()),
    }
}

/// The rule that refused, where one did.
fn rule_of(e: &PolicyError) -> Option<&str> {
    match e {
        PolicyError::Refused { rule, .. } => Some(rule),
        _ => None,
    }
}

/// The reasons a refusal gives.
fn reasons(e: &PolicyError) -> Vec<&str> {
    match e {
        PolicyError::UnknownModel(_) => vec!["unknown_model"],
        PolicyError::Withheld { .. } => vec!["withheld"],
        PolicyError::NoRule { .. } => vec!["no_rule"],
        PolicyError::Refused { refused, .. } => {
            let mut kinds: Vec<&str> = refused.iter().map(|(_, r)| r.kind.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            kinds
        }
    }
}

/// Deployment and model names an expectation gives must exist: a typo would pass for ever.
fn check_names(e: &ExpectSpec, routing: &Routing) -> Result<(), String> {
    let deployments = &routing.snapshot.config.deployments;
    let known = |n: &str, models_too: bool| {
        deployments
            .iter()
            .any(|d| d.name == n || (models_too && d.model.id == n))
    };
    let listed = e.allowed.iter().flatten().chain(e.first.iter());
    for n in listed {
        if !known(n, false) {
            return Err(format!("no deployment is named '{n}' in the configuration"));
        }
    }
    for n in &e.not_allowed {
        if !known(n, true) {
            return Err(format!(
                "not_allowed: no deployment or deployed model is named '{n}' in the configuration"
            ));
        }
    }
    if let Some(Refused::Why(RefusedSpec {
        reason: Some(reason),
        ..
    })) = &e.refused
        && !KNOWN_REASONS.contains(&reason.as_str())
    {
        return Err(format!(
            "refused.reason: '{reason}' is none of {}",
            KNOWN_REASONS.join(", ")
        ));
    }
    Ok(())
}

const KNOWN_REASONS: &[&str] = &[
    "openness",
    "license",
    "locality",
    "data_handling",
    "region",
    "capability",
    "model",
    "deployment",
    "price",
    "context_window",
    "unknown_model",
    "no_rule",
    "withheld",
];
