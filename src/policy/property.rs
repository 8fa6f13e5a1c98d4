//! The policy invariant as a property: for random catalogs, deployments, policies, requests
//! and upstream failure schedules, every attempt the upstream layer makes (first try and every
//! fallback) is inside the set the policy allowed, and a reference model written independently
//! of `decide` (straight from the generated facts, no compiled tables) agrees on that set.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use proptest::prelude::*;

use super::*;
use crate::adapters::UpstreamFault;
use crate::config::load::load_texts;
use crate::config::{Discovered, Snapshot};
use crate::exchange::{ErrorBody, ErrorType};
use crate::upstream::{self, AttemptError};

const OPENNESS: [&str; 3] = ["closed", "open-weight", "open-source"];
const COMMERCIAL: [&str; 4] = ["allowed", "conditional", "prohibited", "unknown"];
const LOCALITY: [&str; 3] = ["local", "cluster", "remote"];
const REGIONS: [&str; 2] = ["eu", "us"];
const WINDOWS: [u32; 4] = [2048, 8192, 32768, 131072];

#[derive(Clone, Debug)]
struct License {
    osi: bool,
    commercial: usize,
    restricted: bool,
    mau: Option<u64>,
    excludes_eu: bool,
}

#[derive(Clone, Debug)]
struct ModelFacts {
    license: usize,
    weights: bool,
    full_code: bool,
    data_released: bool,
    window: usize,
    tools: bool,
    vision: bool,
}

#[derive(Clone, Debug)]
struct DeploymentFacts {
    model: usize,
    locality: usize,
    retains: bool,
    region: Option<usize>,
    price: (u8, u8),
}

#[derive(Clone, Debug, Default)]
struct Require {
    openness: Vec<usize>,
    osi: Option<bool>,
    commercial: Vec<usize>,
    no_restrictions: bool,
    mau: Option<u64>,
    operator_eu: bool,
    locality: Vec<usize>,
    no_retention: bool,
    regions: Vec<usize>,
    tools: bool,
    min_window: Option<usize>,
    max_input: Option<u8>,
    per_request: Option<f64>,
}

#[derive(Clone, Debug)]
struct Rule {
    tenants: Vec<usize>,
    label: Option<usize>,
    models: Vec<usize>,
    require: Require,
    fallback: bool,
}

#[derive(Clone, Debug)]
struct RequestFacts {
    /// 0..models: a model id; then deployment names; then `auto`; then an unknown name.
    target: usize,
    tenant: usize,
    label: Option<usize>,
    /// It continues a stored conversation (the Responses API's `previous_response_id`)
    /// decided with this label: the conversation's label wins over the request's.
    continues: Option<usize>,
    tools: bool,
    vision: bool,
    prompt: usize,
    max_output: Option<u32>,
}

#[derive(Clone, Debug)]
struct World {
    licenses: Vec<License>,
    models: Vec<ModelFacts>,
    deployments: Vec<DeploymentFacts>,
    rules: Vec<Rule>,
    request: RequestFacts,
    /// By deployment: how its attempt fails, if it does (0 connect, 1 HTTP 500, 2 HTTP 400).
    failures: Vec<Option<u8>>,
    /// A reload after this many attempts (during a retry's wait or before a fallback) that
    /// narrows what the request may reach to these deployments (a changed key or policy).
    reload: Option<(usize, Vec<usize>)>,
}

fn subset(n: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::btree_set(0..n, 0..=n).prop_map(|s| s.into_iter().collect())
}

/// Usually empty (no requirement), sometimes a subset: most rules require a few things.
fn sparse(n: usize) -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![4 => Just(Vec::new()), 1 => subset(n)]
}

fn rarely() -> proptest::bool::Weighted {
    proptest::bool::weighted(0.15)
}

fn maybe<T: Strategy>(s: T) -> proptest::option::OptionStrategy<T> {
    proptest::option::weighted(0.15, s)
}

fn world() -> impl Strategy<Value = World> {
    let license = (
        any::<bool>(),
        0..4usize,
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(1000u64), Just(700_000_000u64)]),
        any::<bool>(),
    )
        .prop_map(|(osi, commercial, restricted, mau, excludes_eu)| License {
            osi,
            commercial,
            restricted,
            mau,
            excludes_eu,
        });
    (
        proptest::collection::vec(license, 1..4),
        1..6usize,
        1..9usize,
    )
        .prop_flat_map(|(licenses, n_models, n_deps)| {
            let nl = licenses.len();
            let model = (
                0..nl,
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0..4usize,
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(
                    |(license, weights, full_code, data_released, window, tools, vision)| {
                        ModelFacts {
                            license,
                            weights,
                            full_code,
                            data_released,
                            window,
                            tools,
                            vision,
                        }
                    },
                );
            let deployment = (
                0..n_models,
                0..3usize,
                any::<bool>(),
                proptest::option::of(0..2usize),
                (0..20u8, 0..40u8),
            )
                .prop_map(|(model, locality, retains, region, price)| {
                    DeploymentFacts {
                        model,
                        locality,
                        retains,
                        region,
                        price,
                    }
                });
            let rule = rule_strategy(n_models);
            let request = (
                // `auto` often: it has many candidates, so fallbacks happen.
                prop_oneof![2 => Just(n_models + n_deps), 3 => 0..n_models + n_deps + 2],
                0..3usize,
                proptest::option::of(0..2usize),
                maybe(0..2usize),
                rarely(),
                rarely(),
                prop_oneof![8 => Just(10usize), 1 => Just(20_000), 1 => Just(200_000)],
                proptest::option::of(prop_oneof![Just(16u32), Just(100_000)]),
            )
                .prop_map(
                    |(target, tenant, label, continues, tools, vision, prompt, max_output)| {
                        RequestFacts {
                            target,
                            tenant,
                            label,
                            continues,
                            tools,
                            vision,
                            prompt,
                            max_output,
                        }
                    },
                );
            (
                Just(licenses),
                proptest::collection::vec(model, n_models),
                proptest::collection::vec(deployment, n_deps),
                proptest::collection::vec(rule, 1..5),
                request,
                proptest::collection::vec(proptest::option::weighted(0.6, 0..5u8), n_deps),
                proptest::option::weighted(0.3, (1..4usize, subset(n_deps))),
            )
                .prop_map(
                    |(licenses, models, deployments, rules, request, failures, reload)| World {
                        licenses,
                        models,
                        deployments,
                        rules,
                        request,
                        failures,
                        reload,
                    },
                )
        })
}

/// A rule over `n_models` models: which requests it matches and what it requires.
fn rule_strategy(n_models: usize) -> impl Strategy<Value = Rule> {
    let require = (
        sparse(3),
        maybe(any::<bool>()),
        sparse(4),
        rarely(),
        maybe(prop_oneof![Just(500u64), Just(1_000_000_000u64)]),
        rarely(),
        (sparse(3), rarely(), sparse(2), rarely(), maybe(0..4usize)),
        (
            maybe(0..20u8),
            maybe(prop_oneof![Just(0.0001f64), Just(0.01), Just(1.0)]),
        ),
    )
        .prop_map(
            |(
                openness,
                osi,
                commercial,
                no_restrictions,
                mau,
                operator_eu,
                (locality, no_retention, regions, tools, min_window),
                (max_input, per_request),
            )| Require {
                openness,
                osi,
                commercial,
                no_restrictions,
                mau,
                operator_eu,
                locality,
                no_retention,
                regions,
                tools,
                min_window,
                max_input,
                per_request,
            },
        );
    (
        sparse(2),
        maybe(0..2usize),
        prop_oneof![3 => Just(Vec::new()), 1 => proptest::collection::vec(0..n_models + 1, 1..3)],
        require,
        proptest::bool::weighted(0.8),
    )
        .prop_map(|(tenants, label, models, require, fallback)| Rule {
            tenants,
            label,
            models,
            require,
            fallback,
        })
}

fn quoted(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

/// A model without weights must carry provider terms.
fn model_license(m: &ModelFacts) -> String {
    if m.weights {
        format!("l{}", m.license)
    } else {
        "terms".into()
    }
}

impl World {
    fn catalog_yaml(&self) -> String {
        let mut s = String::from("licenses:\n");
        for (i, l) in self.licenses.iter().enumerate() {
            s += &format!(
                "  - {{id: l{i}, name: L, kind: {}, osi_approved: {}, commercial_use: {}, use_restrictions: {}, {}attribution_required: false, output_use_restricted: none, territorial_exclusions: {}, source: t}}\n",
                if l.osi {
                    "permissive"
                } else {
                    "custom_community"
                },
                l.osi,
                COMMERCIAL[l.commercial],
                l.restricted,
                l.mau
                    .map(|m| format!("mau_limit: {m}, "))
                    .unwrap_or_default(),
                if l.excludes_eu { "[EU]" } else { "[]" },
            );
        }
        s += "  - {id: terms, name: T, kind: proprietary_terms, osi_approved: false, commercial_use: allowed, use_restrictions: true, attribution_required: false, output_use_restricted: unknown, source: t}\nmodels:\n";
        for (i, m) in self.models.iter().enumerate() {
            s += &format!(
                "  - {{id: m{i}, name: M, developer: d, license: {}, artifacts: {{weights: {}, architecture: true, training_code: {}, training_data: {}}}, capabilities: {{context_window: {}, tools: {}, vision: {}}}, sources: {{artifacts: t, license: t}}}}\n",
                model_license(m),
                m.weights,
                if m.full_code { "full" } else { "inference" },
                if m.data_released {
                    "released"
                } else {
                    "summary"
                },
                WINDOWS[m.window],
                m.tools,
                m.vision,
            );
        }
        s
    }

    fn policy_yaml(&self) -> String {
        format!("policies:\n{}", self.rules_yaml("p", &self.rules))
    }

    /// One policy named `name` with `rules`, as an item of a `policies:` list.
    fn rules_yaml(&self, name: &str, rules: &[Rule]) -> String {
        let n_models = self.models.len();
        let mut s = format!("  - name: {name}\n    rules:\n");
        for (i, r) in rules.iter().enumerate() {
            let q = &r.require;
            let models = quoted(r.models.iter().map(|m| {
                if *m == n_models {
                    "auto".to_owned()
                } else {
                    format!("m{m}")
                }
            }));
            s += &format!(
                "      - name: r{i}\n        fallback: {}\n        match: {{tenants: {}, models: {}{}}}\n",
                r.fallback,
                quoted(r.tenants.iter().map(|t| format!("t{t}"))),
                models,
                r.label
                    .map(|l| format!(", labels: {{data: v{l}}}"))
                    .unwrap_or_default(),
            );
            s += &format!(
                "        require:\n          openness: {}\n          locality: {}\n          regions: {}\n          data: {{retains_prompts: {}}}\n          capabilities: {{tools: {}{}}}\n",
                quoted(q.openness.iter().map(|o| OPENNESS[*o].to_owned())),
                quoted(q.locality.iter().map(|l| LOCALITY[*l].to_owned())),
                quoted(q.regions.iter().map(|r| REGIONS[*r].to_owned())),
                if q.no_retention { "false" } else { "null" },
                q.tools,
                q.min_window
                    .map(|w| format!(", min_context_window: {}", WINDOWS[w]))
                    .unwrap_or_default(),
            );
            s += &format!(
                "          license: {{commercial_use: {}{}{}{}{}}}\n",
                quoted(q.commercial.iter().map(|c| COMMERCIAL[*c].to_owned())),
                q.osi
                    .map(|o| format!(", osi_approved: {o}"))
                    .unwrap_or_default(),
                if q.no_restrictions {
                    ", use_restrictions: false"
                } else {
                    ""
                },
                q.mau
                    .map(|m| format!(", monthly_active_users: {m}"))
                    .unwrap_or_default(),
                if q.operator_eu {
                    ", operator_region: EU"
                } else {
                    ""
                },
            );
            s += &format!(
                "          max_price: {{{}{}}}\n",
                q.max_input
                    .map(|p| format!("input_per_million: {p}, "))
                    .unwrap_or_default(),
                q.per_request
                    .map(|p| format!("per_request: {p}"))
                    .unwrap_or_default(),
            );
        }
        s
    }

    fn config_yaml(&self) -> String {
        let mut s = String::from(
            "catalog: {builtin: false}\npolicies: {builtin: false, active: p}\ndeployments:\n",
        );
        for (i, d) in self.deployments.iter().enumerate() {
            s += &format!(
                "  - {{name: d{i}, kind: openai-compatible, base_url: 'http://127.0.0.1:{}/v1', model: m{}, locality: {}, data: {{retains_prompts: {}}}, {}price: {{input: {}, output: {}}}}}\n",
                1000 + i,
                d.model,
                LOCALITY[d.locality],
                d.retains,
                d.region
                    .map(|r| format!("region: {}, ", REGIONS[r]))
                    .unwrap_or_default(),
                d.price.0,
                d.price.1,
            );
        }
        s
    }

    fn requested(&self) -> String {
        let (nm, nd) = (self.models.len(), self.deployments.len());
        let t = self.request.target;
        if t < nm {
            format!("m{t}")
        } else if t < nm + nd {
            format!("d{}", t - nm)
        } else if t == nm + nd {
            "auto".into()
        } else {
            "unknown-model".into()
        }
    }
}

/// What the reference model expects.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Unknown,
    NoRule,
    Refused { rule: String },
    Allowed { rule: String, set: BTreeSet<String> },
}

/// The policy's meaning, computed directly from the generated facts.
fn reference(w: &World) -> Expected {
    let req = &w.request;
    let requested = w.requested();
    let candidates: Vec<usize> = if requested == "auto" {
        (0..w.deployments.len()).collect()
    } else if let Some(m) = requested.strip_prefix('m') {
        let m: usize = m.parse().unwrap_or(usize::MAX);
        (0..w.deployments.len())
            .filter(|d| w.deployments[*d].model == m)
            .collect()
    } else if let Some(d) = requested.strip_prefix('d') {
        vec![d.parse().unwrap()]
    } else {
        vec![]
    };
    if candidates.is_empty() {
        return Expected::Unknown;
    }
    let n_models = w.models.len();
    let fits = |r: &Rule, with_labels: bool| {
        (r.tenants.is_empty() || r.tenants.contains(&req.tenant))
            && (r.models.is_empty()
                || r.models.iter().any(|m| {
                    if *m == n_models {
                        requested == "auto"
                    } else {
                        requested == format!("m{m}")
                    }
                }))
            && match r.label {
                None => true,
                Some(l) => with_labels && req.continues.or(req.label) == Some(l),
            }
    };
    // Request labels only narrow: with no rule for the request without them, nothing is
    // allowed whatever they say.
    let Some(base_i) = w.rules.iter().position(|r| fits(r, false)) else {
        return Expected::NoRule;
    };
    let Some(rule_i) = w.rules.iter().position(|r| fits(r, true)) else {
        return Expected::NoRule;
    };
    let mut applied = vec![&w.rules[rule_i]];
    if base_i != rule_i {
        applied.push(&w.rules[base_i]);
    }
    let allows = |r: &Rule, di: usize| -> bool {
        let d = &w.deployments[di];
        let m = &w.models[d.model];
        let q = &r.require;
        let (osi, commercial, restricted, mau, excludes_eu) = if m.weights {
            let l = &w.licenses[m.license];
            (l.osi, l.commercial, l.restricted, l.mau, l.excludes_eu)
        } else {
            (false, 0, true, None, false)
        };
        let openness = if !m.weights {
            0
        } else if osi && m.full_code && m.data_released {
            2
        } else {
            1
        };
        let window = u64::from(WINDOWS[m.window]);
        let out = u64::from(req.max_output.unwrap_or(1));
        let tokens = (req.prompt as u64).div_ceil(4);
        let worst_out = req
            .max_output
            .map_or(window.saturating_sub(tokens), u64::from);
        let cost =
            (tokens as f64 * f64::from(d.price.0) + worst_out as f64 * f64::from(d.price.1)) / 1e6;
        (q.openness.is_empty() || q.openness.contains(&openness))
            && q.osi.is_none_or(|o| o == osi)
            && (q.commercial.is_empty() || q.commercial.contains(&commercial))
            && !(q.no_restrictions && restricted)
            && !matches!((q.mau, mau), (Some(users), Some(cap)) if users > cap)
            && !(q.operator_eu && excludes_eu)
            // A model without weights runs at its provider, whatever address fronts it.
            && (q.locality.is_empty()
                || q.locality.contains(&if m.weights { d.locality } else { 2 }))
            && !(q.no_retention && d.retains)
            && (q.regions.is_empty() || d.region.is_some_and(|r| q.regions.contains(&r)))
            && (!q.tools || m.tools)
            && q.min_window
                .is_none_or(|mw| WINDOWS[m.window] >= WINDOWS[mw])
            && q.max_input.is_none_or(|p| d.price.0 <= p)
            && (!req.tools || m.tools)
            && (!req.vision || m.vision)
            && (req.prompt as u64 + out <= window || tokens + out <= window)
            && q.per_request.is_none_or(|cap| cost <= cap)
    };
    let set: BTreeSet<String> = candidates
        .into_iter()
        .filter(|d| applied.iter().all(|r| allows(r, *d)))
        .map(|d| format!("d{d}"))
        .collect();
    let rule = format!("r{rule_i}");
    if set.is_empty() {
        Expected::Refused { rule }
    } else {
        Expected::Allowed { rule, set }
    }
}

struct Bytes(usize);

impl PromptSize for Bytes {
    fn bytes(&self) -> usize {
        self.0
    }
    fn tokens(&self, _: &crate::catalog::Model) -> u64 {
        (self.0 as u64).div_ceil(4)
    }
}

/// The failure a scripted deployment answers every attempt with: 0 connect error, 1 HTTP 500,
/// 2 HTTP 400, 3 HTTP 429 with `Retry-After: 1`. Kind 4 is a deployment a reload has disallowed
/// by the time its attempt would start (it must never be called).
fn fault(kind: u8) -> AttemptError {
    let status = |status, retry_after: Option<&'static str>| AttemptError::Status {
        fault: UpstreamFault {
            status,
            body: ErrorBody::new(ErrorType::ApiError, "scripted"),
        },
        retry_after: retry_after.map(http::HeaderValue::from_static),
    };
    match kind {
        0 => AttemptError::Connect,
        1 => status(StatusCode::INTERNAL_SERVER_ERROR, None),
        3 => status(StatusCode::TOO_MANY_REQUESTS, Some("1")),
        _ => status(StatusCode::BAD_REQUEST, None),
    }
}

/// How the cases fell: unknown, no rule, refused, allowed, allowed with a failed attempt.
static OUTCOMES: [AtomicUsize; 5] = [const { AtomicUsize::new(0) }; 5];

fn count(i: usize) {
    OUTCOMES[i].fetch_add(1, Ordering::Relaxed);
}

fn check(w: &World, rt: &tokio::runtime::Runtime) -> Result<(), TestCaseError> {
    let env: HashMap<String, String> = HashMap::new();
    let catalog = w.catalog_yaml();
    let policy = w.policy_yaml();
    let loaded = load_texts(
        &w.config_yaml(),
        &[("c.yaml", &catalog)],
        &[("p.yaml", &policy)],
        &env,
    )
    .map_err(|p| {
        TestCaseError::fail(format!(
            "generated configuration refused:\n{p}\n{catalog}\n{policy}"
        ))
    })?;
    let snapshot = Routing::at_rest(Snapshot::build(
        Arc::new(loaded.config),
        &Discovered::default(),
    ));
    let caller = Caller {
        tenant: Arc::from(format!("t{}", w.request.tenant)),
        ..Caller::anonymous()
    };
    let label = |l: Option<usize>| -> Vec<(String, String)> {
        l.map(|l| ("data".to_owned(), format!("v{l}")))
            .into_iter()
            .collect()
    };
    // A turn of a stored conversation carries the conversation's labels first.
    let labels = crate::policy::labels::inherit(label(w.request.continues), label(w.request.label));
    let requested = w.requested();
    let prompt = Bytes(w.request.prompt);
    let ask = Ask {
        model: &requested,
        endpoint: EndpointName::ChatCompletions,
        caller: &caller,
        labels: &labels,
        needs: Needs {
            tools: w.request.tools,
            vision: w.request.vision,
            choices: None,
            hosted_tool: None,
        },
        prompt: &prompt,
        max_output: w.request.max_output,
    };
    let expected = reference(w);
    let decision = match decide(&ask, &snapshot) {
        Err(PolicyError::UnknownModel(_)) => {
            count(0);
            prop_assert_eq!(expected, Expected::Unknown);
            return Ok(());
        }
        Err(PolicyError::NoRule { .. }) => {
            count(1);
            prop_assert_eq!(expected, Expected::NoRule);
            return Ok(());
        }
        Err(PolicyError::Refused { rule, .. }) => {
            count(2);
            prop_assert_eq!(
                expected,
                Expected::Refused {
                    rule: rule.to_string()
                }
            );
            return Ok(());
        }
        Err(e @ PolicyError::Withheld { .. }) => {
            return Err(TestCaseError::fail(format!("nothing is pinned here: {e}")));
        }
        Ok(d) => d,
    };
    let mut allowed: BTreeSet<String> = decision
        .candidates()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let held_back = decision.held_back;
    let Expected::Allowed { rule, set } = expected else {
        return Err(TestCaseError::fail(format!(
            "decide allowed {allowed:?}, the reference did not: {expected:?}"
        )));
    };
    prop_assert_eq!(&*decision.rule, rule.as_str());
    if held_back == 0 {
        prop_assert_eq!(&allowed, &set);
    } else {
        // fallback: false keeps only the first; it must be one the reference allows.
        prop_assert_eq!(allowed.len(), 1);
        prop_assert!(allowed.is_subset(&set));
        prop_assert_eq!(allowed.len() + held_back, set.len());
        allowed = set.clone();
    }

    // The upstream layer, with the failure schedule (retries, Retry-After waits, reload
    // re-checks): every attempt inside the allowed set.
    let failure = |name: &str| name[1..].parse::<usize>().ok().and_then(|i| w.failures[i]);
    let attempted = Mutex::new(Vec::new());
    let index = |name: &str| name[1..].parse::<usize>().ok();
    // Asked before every attempt: after the reload, only what it left.
    let still_allowed = |d: &crate::config::Deployment| {
        let made = attempted.lock().unwrap().len();
        match &w.reload {
            Some((after, keep)) if made >= *after => {
                index(&d.name).is_some_and(|i| keep.contains(&i)) && failure(&d.name) != Some(4)
            }
            _ => failure(&d.name) != Some(4),
        }
    };
    let plan = upstream::fallback::Plan {
        deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(600),
        allowed: &still_allowed,
        gate: None,
        health: &crate::upstream::health::Healths::fresh(&snapshot),
    };
    let served = rt.block_on(upstream::fallback::run(&decision, &plan, |d| {
        attempted.lock().unwrap().push(d.name.clone());
        let failure = failure(&d.name);
        async move {
            match failure {
                Some(kind) => Err(fault(kind)),
                None => Ok(()),
            }
        }
    }));
    let attempted = attempted.into_inner().unwrap();
    count(if attempted.len() > 1 { 4 } else { 3 });
    if let Some((after, keep)) = &w.reload {
        for a in attempted.iter().skip(*after) {
            prop_assert!(
                index(a).is_some_and(|i| keep.contains(&i)),
                "attempt to {a} after a reload that left only {keep:?}: {attempted:?}"
            );
        }
    }
    for a in &attempted {
        prop_assert!(allowed.contains(a), "attempt to {a} outside {allowed:?}");
        prop_assert!(decision.allows(snapshot.deployments.iter().find(|d| &d.name == a).unwrap()));
        prop_assert!(
            failure(a) != Some(4),
            "attempt to {a}, which a reload disallowed"
        );
    }
    // Retries stay on one deployment: a deployment's attempts are consecutive and bounded.
    let mut runs: Vec<(&String, u32)> = Vec::new();
    for a in &attempted {
        match runs.last_mut() {
            Some((last, n)) if *last == a => *n += 1,
            _ => runs.push((a, 1)),
        }
    }
    let distinct: BTreeSet<&String> = runs.iter().map(|(a, _)| *a).collect();
    prop_assert_eq!(distinct.len(), runs.len(), "a deployment was returned to");
    for (a, n) in &runs {
        let d = snapshot.deployments.iter().find(|d| &d.name == *a).unwrap();
        prop_assert!(*n <= 1 + d.endpoint.retry.attempts, "{a} tried {n} times");
    }
    match served {
        Ok(s) => prop_assert_eq!(attempted.last(), Some(&s.deployment.name)),
        Err(e) => {
            prop_assert_eq!(e.attempts.len(), attempted.len());
            prop_assert_eq!(e.retries.len() + runs.len(), attempted.len());
        }
    }
    Ok(())
}

/// A runtime with paused time (backoff and Retry-After waits pass instantly) and a runner of
/// `MODELGATE_PROPTEST_CASES` cases, `default` without it.
fn harness(
    default: u32,
) -> (
    tokio::runtime::Runtime,
    proptest::test_runner::TestRunner,
    u32,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let cases: u32 = std::env::var("MODELGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    (rt, runner, cases)
}

#[test]
fn every_attempt_stays_inside_the_allowed_set() {
    let (rt, mut runner, _) = harness(10_000);
    runner
        .run(&world(), |w| check(&w, &rt))
        .unwrap_or_else(|e| panic!("{e}"));
    let n: Vec<usize> = OUTCOMES.iter().map(|o| o.load(Ordering::Relaxed)).collect();
    // The generator must exercise every outcome, fallbacks included, not only the easy ones.
    let total = n.iter().sum::<usize>().max(1);
    for (i, what) in [
        "unknown model",
        "no rule",
        "refused",
        "allowed",
        "allowed after a failed attempt",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            n[i] * 50 >= total,
            "only {} of {total} cases were '{what}': {n:?}",
            n[i]
        );
    }
}

mod identity;
mod reload;
