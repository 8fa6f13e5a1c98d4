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
        trace: &None,
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
mod reference;
mod reload;
mod scan;
mod yaml;

use reference::{Expected, reference};
