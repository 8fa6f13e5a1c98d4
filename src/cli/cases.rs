//! Requests as `modelgate test` and `modelgate diff` describe them (a caller, labels, a model,
//! a size), decided against a configuration at rest: nothing is called and no backend is asked.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::Model;
use crate::config::keys::Caller;
use crate::config::load::{self, Env, Overrides};
use crate::config::{Discovered, Origin, Snapshot};
use crate::policy::{self, Ask, Decision, EndpointName, Needs, PolicyError, PromptSize, Routing};

/// A configuration loaded for policy tests and diffs. Every provider key counts as set, so a
/// deployment of a closed API is decided on like any other whatever the shell holds (the
/// question is what the policy allows, not which keys are at hand), and backends that discover
/// their models are not asked: test against deployments that name their model.
pub(crate) fn at_rest(
    config: Option<&Path>,
    policy_file: Option<&Path>,
) -> Result<Routing, String> {
    let origin = config.map_or(Origin::Embedded, |p| Origin::File(p.to_path_buf()));
    let overrides = Overrides {
        policy_file: policy_file.map(Path::to_path_buf),
        ..Overrides::default()
    };
    let loaded = load::load(&origin, &overrides, &EveryKeySet)
        .map_err(|p| format!("the configuration is invalid:\n{p}"))?;
    let config = Arc::new(loaded.config);
    Ok(Routing::at_rest(Snapshot::build(
        config,
        &Discovered::default(),
    )))
}

/// An environment in which every variable a key is read from is set.
struct EveryKeySet;

impl Env for EveryKeySet {
    fn var(&self, name: &str) -> Option<String> {
        // Keys only: nothing is exported from a decision at rest.
        (!name.starts_with("OTEL_")).then(|| "unused: decided at rest".to_owned())
    }
}

/// One request, as a test case or a diff describes it.
pub(crate) struct Case<'a> {
    pub(crate) model: &'a str,
    pub(crate) endpoint: EndpointName,
    pub(crate) caller: &'a Caller,
    pub(crate) labels: &'a [(String, String)],
    pub(crate) needs: Needs,
    pub(crate) prompt_tokens: u64,
    pub(crate) max_tokens: Option<u32>,
}

/// A prompt of a given number of tokens, for every model.
struct Tokens(u64);

impl PromptSize for Tokens {
    fn bytes(&self) -> usize {
        // Four bytes a token, the estimate the gateway itself uses for text.
        usize::try_from(self.0.saturating_mul(4)).unwrap_or(usize::MAX)
    }

    fn tokens(&self, _: &Model) -> u64 {
        self.0
    }
}

/// The decision for `case`, as the gateway would make it.
pub(crate) fn decide(case: &Case, routing: &Routing) -> Result<Decision, PolicyError> {
    let prompt = Tokens(case.prompt_tokens);
    let ask = Ask {
        model: case.model,
        endpoint: case.endpoint,
        caller: case.caller,
        labels: case.labels,
        needs: case.needs,
        prompt: &prompt,
        max_output: case.max_tokens,
    };
    policy::decide(&ask, routing)
}

/// The caller of a key by id, of a tenant by name (configured or not), or the anonymous one;
/// with `policy` in force instead of its own when given.
pub(crate) fn caller(
    routing: &Routing,
    key: Option<&str>,
    tenant: Option<&str>,
    policy: Option<&str>,
) -> Result<Caller, String> {
    let config = &routing.snapshot.config;
    let mut caller = match (key, tenant) {
        (Some(k), _) => config
            .keys
            .by_id(k)
            .cloned()
            .ok_or_else(|| format!("no key has the id '{k}'"))?,
        (None, Some(t)) => config.tenants.get(t).cloned().unwrap_or_else(|| Caller {
            tenant: Arc::from(t),
            ..Caller::anonymous()
        }),
        (None, None) => config.anonymous.clone(),
    };
    if let Some(p) = policy {
        if !config.policies.iter().any(|s| s.name == p) {
            return Err(format!("no policy is named '{p}'"));
        }
        caller.policy = Some(Arc::from(p));
    }
    Ok(caller)
}

/// The policy a caller's requests are decided by.
pub(crate) fn policy_of<'a>(routing: &'a Routing, caller: &'a Caller) -> &'a str {
    let config = &routing.snapshot.config;
    caller
        .policy
        .as_deref()
        .filter(|p| config.policies.iter().any(|s| s.name == *p))
        .unwrap_or(&config.active_policy)
}
