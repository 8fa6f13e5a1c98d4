//! `modelgate diff`: what a configuration or policy change would move. Every request the two
//! configurations' rules can tell apart (each caller, each label set a rule matches on, each
//! model, alias and deployment name) is decided under both, and each change is listed under
//! the rule that now decides: deployments newly allowed, newly refused, tried in another
//! order. Each deployment is shown with its openness and place, so that "does this let
//! confidential traffic reach a closed model?" is one look at the `+` lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::json;

use super::cases::{self, Case};
use crate::config::Deployment;
use crate::config::keys::Caller;
use crate::policy::{EndpointName, Needs, PolicyError, Routing};

/// A request the diff decides.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Request {
    /// `tenant=x` or `key=x`.
    caller: String,
    labels: BTreeMap<String, String>,
    model: String,
    endpoint: EndpointName,
}

impl Request {
    fn describe(&self) -> String {
        let mut s = format!("{} model={}", self.caller, self.model);
        for (k, v) in &self.labels {
            let _ = write!(s, " {k}={v}");
        }
        if self.endpoint != EndpointName::ChatCompletions {
            let _ = write!(s, " endpoint={}", self.endpoint.as_str());
        }
        s
    }
}

/// How one request fares under one configuration.
#[derive(Debug, PartialEq)]
enum Fate {
    Allowed {
        policy: String,
        rule: String,
        tried: Vec<String>,
    },
    Refused {
        policy: Option<String>,
        rule: Option<String>,
        /// The model is not served at this endpoint at all.
        unknown: bool,
    },
}

impl Fate {
    fn tried(&self) -> &[String] {
        match self {
            Fate::Allowed { tried, .. } => tried,
            Fate::Refused { .. } => &[],
        }
    }

    fn unknown(&self) -> bool {
        matches!(self, Fate::Refused { unknown: true, .. })
    }

    fn rule(&self) -> (String, String) {
        match self {
            Fate::Allowed { policy, rule, .. } => (policy.clone(), rule.clone()),
            Fate::Refused { policy, rule, .. } => (
                policy.clone().unwrap_or_else(|| "-".into()),
                rule.clone().unwrap_or_else(|| "(none)".into()),
            ),
        }
    }
}

/// One kind of change to one deployment, under one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Allowed,
    Refused,
    Order,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Allowed => "newly allowed",
            Change::Refused => "newly refused",
            Change::Order => "order changed",
        }
    }
}

/// What `modelgate diff` found.
pub struct DiffReport {
    pub text: String,
    /// Requests whose outcome differs.
    pub changed: usize,
}

/// Diffs configuration `a` against `b` (the same entry file with two policy files, when
/// `policy_files` are given).
pub fn run(
    configs: &[std::path::PathBuf],
    policy_files: &[std::path::PathBuf],
    as_json: bool,
) -> Result<DiffReport, String> {
    let (a, b) = match (configs, policy_files) {
        ([a, b], []) => (
            cases::at_rest(Some(a), None)?,
            cases::at_rest(Some(b), None)?,
        ),
        (base, [pa, pb]) if base.len() <= 1 => (
            cases::at_rest(base.first().map(|p| p.as_path()), Some(pa))?,
            cases::at_rest(base.first().map(|p| p.as_path()), Some(pb))?,
        ),
        _ => {
            return Err(
                "give two configurations (--config A --config B), or two policy files (and at most one --config)"
                    .into(),
            );
        }
    };
    let requests = requests(&[&a, &b]);
    let mut moves: Moves = BTreeMap::new();
    let (mut changed, mut decided) = (0, 0);
    for r in &requests {
        let (Some(fa), Some(fb)) = (fate(r, &a), fate(r, &b)) else {
            continue;
        };
        if fa.unknown() && fb.unknown() {
            continue;
        }
        decided += 1;
        if fa.tried() == fb.tried() {
            continue;
        }
        changed += 1;
        let by_rule = moves.entry(fb.rule()).or_default();
        let (ta, tb) = (fa.tried(), fb.tried());
        for d in tb.iter().filter(|d| !ta.contains(d)) {
            by_rule
                .entry((Change::Allowed, d.clone()))
                .or_default()
                .push(r.clone());
        }
        for d in ta.iter().filter(|d| !tb.contains(d)) {
            by_rule
                .entry((Change::Refused, d.clone()))
                .or_default()
                .push(r.clone());
        }
        let same_set = ta.len() == tb.len() && ta.iter().all(|d| tb.contains(d));
        if same_set {
            let order = format!("[{}] -> [{}]", ta.join(", "), tb.join(", "));
            by_rule
                .entry((Change::Order, order))
                .or_default()
                .push(r.clone());
        }
    }
    let text = if as_json {
        json_text(&moves, &a, &b, decided, changed)?
    } else {
        plain_text(&moves, &a, &b, decided, changed)
    };
    Ok(DiffReport { text, changed })
}

/// Each rule's changes: a kind of change and the deployment (or order) it concerns, with the
/// requests it concerns.
type Moves = BTreeMap<(String, String), BTreeMap<(Change, String), Vec<Request>>>;

/// A deployment's openness and place, as either side knows it.
fn facts(a: &Routing, b: &Routing, name: &str) -> (String, String) {
    let d = find(b, name).or_else(|| find(a, name));
    d.map_or(("?".into(), "?".into()), |d| {
        (
            d.model.openness.as_str().to_owned(),
            d.locality().map_or("unknown", |l| l.as_str()).to_owned(),
        )
    })
}

fn json_text(
    moves: &Moves,
    a: &Routing,
    b: &Routing,
    decided: usize,
    changed: usize,
) -> Result<String, String> {
    let mut list = Vec::new();
    for ((policy, rule), changes) in moves {
        for ((change, what), reqs) in changes {
            let reqs: Vec<_> = reqs.iter().map(|r| json!({
                "caller": r.caller, "labels": r.labels, "model": r.model, "endpoint": r.endpoint.as_str(),
            })).collect();
            let mut v = json!({"policy": policy, "rule": rule, "change": format!("{change:?}").to_lowercase(), "requests": reqs});
            if *change == Change::Order {
                v["order"] = json!(what);
            } else {
                let (openness, locality) = facts(a, b, what);
                v["deployment"] = json!(what);
                v["openness"] = json!(openness);
                v["locality"] = json!(locality);
            }
            list.push(v);
        }
    }
    let v = json!({"requests": decided, "changed": changed, "changes": list});
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

fn plain_text(moves: &Moves, a: &Routing, b: &Routing, decided: usize, changed: usize) -> String {
    let mut text = String::new();
    for ((policy, rule), changes) in moves {
        let _ = writeln!(text, "policy {policy}, rule {rule}:");
        for ((change, what), reqs) in changes {
            let sign = match change {
                Change::Allowed => '+',
                Change::Refused => '-',
                Change::Order => '~',
            };
            let what = if *change == Change::Order {
                what.clone()
            } else {
                let (openness, locality) = facts(a, b, what);
                format!("{what} ({openness}, {locality})")
            };
            let _ = writeln!(
                text,
                "  {sign} {what} {} for {} request(s), e.g. {}",
                change.as_str(),
                reqs.len(),
                reqs.iter()
                    .take(3)
                    .map(Request::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    let _ = writeln!(text, "{changed} of {decided} requests decided differently");
    text
}

fn find<'a>(r: &'a Routing, name: &str) -> Option<&'a std::sync::Arc<Deployment>> {
    r.snapshot.deployments.iter().find(|d| d.name == name)
}

/// How `r` fares under `routing`; `None` when its caller does not exist there (a key only the
/// other configuration has) or the model is served by neither endpoint kind.
fn fate(r: &Request, routing: &Routing) -> Option<Fate> {
    let caller = caller_of(&r.caller, routing)?;
    let labels: Vec<(String, String)> = r.labels.clone().into_iter().collect();
    let decided = cases::decide(
        &Case {
            model: &r.model,
            endpoint: r.endpoint,
            caller: &caller,
            labels: &labels,
            needs: Needs::default(),
            prompt_tokens: 100,
            max_tokens: None,
        },
        routing,
    );
    let policy = cases::policy_of(routing, &caller).to_owned();
    Some(match decided {
        Ok(d) => Fate::Allowed {
            policy: d.policy.to_string(),
            rule: d.rule.to_string(),
            tried: d.candidates().iter().map(|c| c.name.clone()).collect(),
        },
        Err(e) => {
            let rule = match &e {
                PolicyError::Refused { rule, .. } => Some(rule.to_string()),
                _ => None,
            };
            Fate::Refused {
                policy: Some(policy),
                rule,
                unknown: matches!(e, PolicyError::UnknownModel(_)),
            }
        }
    })
}

fn caller_of(described: &str, routing: &Routing) -> Option<Caller> {
    let (kind, name) = described.split_once('=')?;
    match kind {
        "key" => cases::caller(routing, Some(name), None, None).ok(),
        _ => cases::caller(routing, None, Some(name), None).ok(),
    }
}

/// Every request either configuration's rules can tell apart.
fn requests(sides: &[&Routing]) -> Vec<Request> {
    let mut callers = BTreeSet::from(["tenant=default".to_owned()]);
    let mut label_sets = BTreeSet::from([BTreeMap::new()]);
    let mut models = BTreeSet::from(["auto".to_owned()]);
    for r in sides {
        let config = &r.snapshot.config;
        callers.extend(config.tenants.keys().map(|t| format!("tenant={t}")));
        callers.extend(
            config
                .keys
                .callers()
                .filter_map(|c| c.key_id.as_ref().map(|k| format!("key={k}"))),
        );
        for d in &r.snapshot.deployments {
            models.insert(d.name.clone());
            models.insert(d.model.id.clone());
        }
        for p in &config.policies {
            models.extend(p.aliases.keys().cloned());
            for rule in &p.rules {
                let m = &rule.value.when;
                callers.extend(m.tenants.iter().map(|t| format!("tenant={t}")));
                callers.extend(m.keys.iter().map(|k| format!("key={k}")));
                models.extend(m.models.iter().cloned());
                let mut sets = vec![BTreeMap::new()];
                for (k, values) in &m.labels {
                    sets = sets
                        .into_iter()
                        .flat_map(|s| {
                            values.values().into_iter().map(move |v| {
                                let mut s = s.clone();
                                s.insert(k.clone(), v);
                                s
                            })
                        })
                        .collect();
                }
                label_sets.extend(sets);
            }
        }
    }
    let mut out = Vec::new();
    for caller in &callers {
        for labels in &label_sets {
            for model in &models {
                for endpoint in [EndpointName::ChatCompletions, EndpointName::Embeddings] {
                    out.push(Request {
                        caller: caller.clone(),
                        labels: labels.clone(),
                        model: model.clone(),
                        endpoint,
                    });
                }
            }
        }
    }
    out
}
