//! The policy invariant across reloads: a reload (the key's policy changed, the key revoked,
//! its labels changed, the policy's rules changed) lands between a request's attempts, and
//! every attempt after it is inside what the reloaded configuration allows the caller, found
//! again in it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::super::*;
use super::{Bytes, Rule, World, fault, harness, rule_strategy, world};
use crate::config::load::load_texts;
use crate::config::{Discovered, Snapshot};
use crate::upstream;

/// A reload while a request's attempts run, after `after` attempts: the key's policy changes
/// (0), the key is revoked (1), the key's labels change (2), or the policy's rules change (3).
#[derive(Clone, Debug)]
struct RealReload {
    after: usize,
    change: u8,
    rules: Vec<Rule>,
}

const RELOAD_KEY: &str = "mg-property-key";

impl World {
    /// The configuration with one key (for the request's tenant), and the policy file with `p`
    /// and `q`.
    fn keyed(
        &self,
        key_policy: &str,
        key_labels: Option<usize>,
        revoked: bool,
        p: &[Rule],
        q: &[Rule],
    ) -> (String, String) {
        let sha = if revoked {
            crate::config::keys::hash_hex("another-key")
        } else {
            crate::config::keys::hash_hex(RELOAD_KEY)
        };
        let config = format!(
            "{}keys:\n  - {{id: k, tenant: t{}, sha256: {sha}, policy: {key_policy}{}}}\n",
            self.config_yaml(),
            self.request.tenant,
            key_labels
                .map(|l| format!(", labels: {{data: v{l}}}"))
                .unwrap_or_default(),
        );
        let policies = format!(
            "policies:\n{}{}",
            self.rules_yaml("p", p),
            self.rules_yaml("q", q)
        );
        (config, policies)
    }
}

fn snapshot_of(w: &World, config: &str, policies: &str) -> Result<Arc<Routing>, TestCaseError> {
    let env: HashMap<String, String> = HashMap::new();
    let catalog = w.catalog_yaml();
    let loaded = load_texts(
        config,
        &[("c.yaml", &catalog)],
        &[("p.yaml", policies)],
        &env,
    )
    .map_err(|p| {
        TestCaseError::fail(format!(
            "generated configuration refused:\n{p}\n{config}\n{policies}"
        ))
    })?;
    Ok(Arc::new(Routing::at_rest(Snapshot::build(
        Arc::new(loaded.config),
        &Discovered::default(),
    ))))
}

fn check_real_reload(
    w: &World,
    r: &RealReload,
    rt: &tokio::runtime::Runtime,
) -> Result<(), TestCaseError> {
    let (config_a, policies_a) = w.keyed("p", None, false, &w.rules, &r.rules);
    let (config_b, policies_b) = match r.change {
        0 => w.keyed("q", None, false, &w.rules, &r.rules),
        1 => w.keyed("p", None, true, &w.rules, &r.rules),
        2 => w.keyed("p", Some(r.after % 2), false, &w.rules, &r.rules),
        _ => w.keyed("p", None, false, &r.rules, &r.rules),
    };
    let a = snapshot_of(w, &config_a, &policies_a)?;
    let b = snapshot_of(w, &config_b, &policies_b)?;
    let caller = a
        .config
        .keys
        .authenticate(RELOAD_KEY.as_bytes())
        .cloned()
        .ok_or_else(|| TestCaseError::fail("the key does not authenticate"))?;
    let labels: Vec<(String, String)> = w
        .request
        .label
        .map(|l| ("data".to_owned(), format!("v{l}")))
        .into_iter()
        .collect();
    let requested = w.requested();
    let prompt = Bytes(w.request.prompt);
    let needs = Needs {
        tools: w.request.tools,
        vision: w.request.vision,
        choices: None,
        hosted_tool: None,
    };
    fn ask<'a>(
        model: &'a str,
        caller: &'a Caller,
        labels: &'a [(String, String)],
        needs: Needs,
        prompt: &'a Bytes,
        max_output: Option<u32>,
    ) -> Ask<'a> {
        Ask {
            model,
            endpoint: EndpointName::ChatCompletions,
            caller,
            labels,
            needs,
            prompt,
            max_output,
        }
    }
    let mo = w.request.max_output;
    let Ok(decision) = decide(&ask(&requested, &caller, &labels, needs, &prompt, mo), &a) else {
        return Ok(());
    };
    // What the new configuration allows this request, with its caller found again there.
    let after_reload: BTreeSet<String> = b
        .config
        .caller_again(&caller)
        .and_then(|c| decide(&ask(&requested, &c, &labels, needs, &prompt, mo), &b).ok())
        .map(|d| d.candidates().iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let live = Arc::new(arc_swap::ArcSwap::new(a.clone()));
    let recheck = super::recheck::Recheck::new(
        live.clone(),
        a.clone(),
        &caller,
        super::recheck::Asked {
            model: &requested,
            endpoint: EndpointName::ChatCompletions,
            labels: &labels,
            needs,
            bytes: w.request.prompt,
            max_output: w.request.max_output,
        },
    );
    let attempted = Mutex::new(Vec::new());
    let swapped_at = Mutex::new(None);
    let allowed = |d: &crate::config::Deployment| {
        let made = attempted.lock().unwrap().len();
        let mut at = swapped_at.lock().unwrap();
        if at.is_none() && made >= r.after {
            live.store(b.clone());
            *at = Some(made);
        }
        let ok = recheck.allows(d);
        if !ok {
            RELOADS[2].fetch_add(1, Ordering::Relaxed);
        }
        ok
    };
    let plan = upstream::fallback::Plan {
        deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(600),
        allowed: &allowed,
        gate: None,
        health: &crate::upstream::health::Healths::fresh(&a),
        trace: &None,
    };
    let failure = |name: &str| name[1..].parse::<usize>().ok().and_then(|i| w.failures[i]);
    let _ = rt.block_on(upstream::fallback::run(&decision, &plan, |d| {
        attempted.lock().unwrap().push(d.name.clone());
        let failure = failure(&d.name);
        async move {
            match failure {
                Some(kind) => Err(fault(kind % 4)),
                None => Ok(()),
            }
        }
    }));
    let attempted = attempted.into_inner().unwrap();
    if let Some(at) = *swapped_at.lock().unwrap() {
        count_reload(attempted.len() > at);
        for a in &attempted[at..] {
            prop_assert!(
                after_reload.contains(a),
                "change {}: attempt to {a} after the reload, which allows only {after_reload:?}; attempts {attempted:?}",
                r.change
            );
        }
    }
    Ok(())
}

/// Cases whose reload landed without and with attempts still to come, and attempts the
/// re-check refused.
static RELOADS: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

fn count_reload(attempts_after: bool) {
    RELOADS[usize::from(attempts_after)].fetch_add(1, Ordering::Relaxed);
}

#[test]
fn every_attempt_after_a_reload_stays_inside_what_the_reloaded_configuration_allows() {
    let (rt, mut runner, cases) = harness(3_000);
    let strategy = world().prop_flat_map(|w| {
        let n = w.models.len();
        (
            Just(w),
            (
                1..4usize,
                0..4u8,
                proptest::collection::vec(rule_strategy(n), 1..4),
            )
                .prop_map(|(after, change, rules)| RealReload {
                    after,
                    change,
                    rules,
                }),
        )
    });
    runner
        .run(&strategy, |(w, r)| check_real_reload(&w, &r, &rt))
        .unwrap_or_else(|e| panic!("{e}"));
    // Both sides must be exercised: attempts the reloaded configuration still allows, and
    // attempts it refuses.
    let with_attempts_after = RELOADS[1].load(Ordering::Relaxed);
    let refused = RELOADS[2].load(Ordering::Relaxed);
    assert!(
        with_attempts_after * 100 >= cases as usize && refused * 50 >= cases as usize,
        "of {cases} cases, {with_attempts_after} had attempts after the reload and {refused} attempts were refused by it"
    );
}
