//! Deciding by groups changes nothing: `decide`, which checks and ranks a group of alike
//! deployments once, against the scan it replaced, which checks and ranks every deployment of
//! the requested name one by one (kept here as it was). For generated worlds with copies of
//! each deployment (so groups have many members, interleaved), preference lists, weights,
//! `order` lists, aliases, two policies, observed latencies and built-in tools, both give the
//! same candidates in the same order, the same number held back, and the same refusals with
//! the same words in the same order, or the same error.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::super::*;
use super::{Rule, World, harness, rule_strategy, world};
use crate::config::Route;
use crate::config::load::load_texts;
use crate::config::{Discovered, Snapshot};

/// A decision as both make it, by names.
#[derive(Debug, PartialEq)]
struct Outcome {
    rule: String,
    base_rule: Option<String>,
    candidates: Vec<String>,
    held_back: usize,
    refused: Vec<(String, Refusal)>,
}

/// The deployment indices a requested name stands for, as the scan found them.
fn scan_candidates(
    policy: &compile::CompiledPolicy,
    snapshot: &Routing,
    model: &str,
    task: Task,
) -> Option<Vec<usize>> {
    if let Some(t) = policy.aliases.get(model) {
        return Some(t.members().to_vec());
    }
    match snapshot.route(model)? {
        Route::Deployment(i) => Some(vec![*i]),
        Route::Model(idx) => Some(idx.clone()),
        Route::Auto => Some(
            snapshot
                .deployments
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.model.test_only && d.model.task == task)
                .map(|(i, _)| i)
                .collect(),
        ),
    }
}

/// `decide` as it was: every deployment checked, then the allowed ones ranked, one by one.
fn scan(ask: &Ask, snapshot: &Routing) -> Result<Outcome, String> {
    let Some(policy) = snapshot.policies.for_caller(ask.caller.policy.as_deref()) else {
        return Err("no policy".into());
    };
    let Some(indices) = scan_candidates(policy, snapshot, ask.model, task_of(ask.endpoint)) else {
        return Err(format!("{:?}", PolicyError::UnknownModel(ask.model.into())));
    };
    if indices.is_empty() {
        return Err(format!("{:?}", PolicyError::UnknownModel(ask.model.into())));
    }
    let base = policy.rules.iter().find(|r| matches(r, ask, false));
    let rule = policy.rules.iter().find(|r| matches(r, ask, true));
    let (Some(base), Some(rule)) = (base, rule) else {
        return Err(format!(
            "{:?}",
            PolicyError::NoRule {
                policy: policy.name.clone()
            }
        ));
    };
    let base = Some(base).filter(|b| !std::ptr::eq(*b, rule));
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for i in indices {
        let d = &snapshot.deployments[i];
        let verdict = rule.static_refusal[i]
            .clone()
            .or_else(|| base.and_then(|b| b.static_refusal[i].clone()))
            .or_else(|| dynamic_check(rule, ask, d))
            .or_else(|| base.and_then(|b| dynamic_check(b, ask, d)));
        match verdict {
            Some(r) => refused.push((d.name.clone(), r)),
            None => allowed.push(i),
        }
    }
    if allowed.is_empty() {
        return Err(format!(
            "{:?}",
            PolicyError::Refused {
                policy: policy.name.clone(),
                rule: rule.name.clone(),
                model: ask.model.to_owned(),
                refused,
            }
        ));
    }
    let mut candidates: Vec<String> = rank::rank(rule, ask, snapshot, allowed)
        .into_iter()
        .map(|i| snapshot.deployments[i].name.clone())
        .collect();
    let mut held_back = 0;
    if !rule.fallback || base.is_some_and(|b| !b.fallback) {
        held_back = candidates.len().saturating_sub(1);
        candidates.truncate(1);
    }
    Ok(Outcome {
        rule: rule.name.to_string(),
        base_rule: base.map(|b| b.name.to_string()),
        candidates,
        held_back,
        refused,
    })
}

fn grouped(ask: &Ask, snapshot: &Routing) -> Result<Outcome, String> {
    let d = decide(ask, snapshot).map_err(|e| format!("{e:?}"))?;
    let candidates: Vec<String> = d.candidates().iter().map(|c| c.name.clone()).collect();
    // Read unordered (what a reservation reads) or ranked so far (what a trace lists), the
    // same deployments: all of them, or the first of them.
    let mut all = candidates.clone();
    let mut unordered: Vec<String> = d.candidates().unordered().map(|c| c.name.clone()).collect();
    all.sort();
    unordered.sort();
    let ranked: Vec<String> = d.candidates().ranked().map(|c| c.name.clone()).collect();
    if unordered != all
        || d.candidates().len() != all.len()
        || d.candidates().iter().len() != all.len()
        || !candidates.starts_with(&ranked)
        || ranked.is_empty()
    {
        return Err(format!(
            "candidates read three ways differ: {candidates:?}, unordered {unordered:?}, ranked {ranked:?}, len {}",
            d.candidates().len()
        ));
    }
    Ok(Outcome {
        rule: d.rule.to_string(),
        base_rule: d.base_rule.as_deref().map(str::to_owned),
        candidates,
        held_back: d.held_back,
        refused: d
            .refused()
            .into_iter()
            .map(|(c, r)| (c.name.clone(), r))
            .collect(),
    })
}

/// What the generated world adds for this property.
#[derive(Clone, Debug)]
struct Extra {
    /// Each deployment this many times (the copies interleaved after the originals).
    copies: usize,
    /// Prices from a few values only, so that different models tie on cost.
    few_prices: bool,
    /// By rule of `p`: how it ranks.
    ranking: Vec<Ranking>,
    /// The rules of policy `q`, which the second caller's key names.
    q: Vec<Rule>,
    /// Aliases of `p`: their models.
    aliases: Vec<Vec<usize>>,
    /// Latency observed of deployments (by index modulo the list), in ms; 0 is none.
    latency: Vec<u8>,
}

/// How a rule ranks: criteria (indices into `PREFER`) or weights, and `order` entries
/// (deployment indices, or model indices above them).
#[derive(Clone, Debug)]
struct Ranking {
    prefer: Vec<usize>,
    weights: Option<[u8; 4]>,
    order: Vec<usize>,
}

const PREFER: [&str; 4] = ["local", "cheapest", "fastest", "most_open"];

fn extra(n_models: usize) -> impl Strategy<Value = Extra> {
    let ranking = (
        proptest::collection::vec(0..4usize, 0..4),
        proptest::option::weighted(0.2, proptest::array::uniform4(0..3u8)),
        proptest::collection::vec(0..12usize, 0..3),
    )
        .prop_map(|(prefer, weights, order)| Ranking {
            prefer,
            weights,
            order,
        });
    (
        1..4usize,
        any::<bool>(),
        proptest::collection::vec(ranking, 5),
        proptest::collection::vec(rule_strategy(n_models), 1..4),
        proptest::collection::vec(proptest::collection::vec(0..n_models, 1..3), 0..3),
        proptest::collection::vec(0..4u8, 1..6),
    )
        .prop_map(|(copies, few_prices, ranking, q, aliases, latency)| Extra {
            copies,
            few_prices,
            ranking,
            q,
            aliases,
            latency,
        })
}

/// The name of copy `k` of deployment `i`.
fn copy_name(i: usize, k: usize) -> String {
    if k == 0 {
        format!("d{i}")
    } else {
        format!("c{k}d{i}")
    }
}

impl World {
    /// The configuration with every deployment `copies` times, every third copy OpenAI's own,
    /// and a key for the request's tenant that names policy `q`.
    fn copied_config(&self, x: &Extra) -> String {
        let mut s = String::from(
            "catalog: {builtin: false}\npolicies: {builtin: false, active: p}\ndeployments:\n",
        );
        for k in 0..x.copies {
            for (i, d) in self.deployments.iter().enumerate() {
                let (input, output) = if x.few_prices {
                    (d.price.0 % 2, d.price.1 % 3)
                } else {
                    d.price
                };
                let kind = if k == 2 {
                    "kind: openai, api_key_env: KEY"
                } else {
                    "kind: openai-compatible"
                };
                s += &format!(
                    "  - {{name: {}, {kind}, base_url: 'http://127.0.0.1:{}/v1', model: m{}, locality: {}, data: {{retains_prompts: {}}}, {}price: {{input: {input}, output: {output}}}}}\n",
                    copy_name(i, k),
                    1000 + i + 100 * k,
                    d.model,
                    super::LOCALITY[d.locality],
                    d.retains,
                    d.region
                        .map(|r| format!("region: {}, ", super::REGIONS[r]))
                        .unwrap_or_default(),
                );
            }
        }
        s += &format!(
            "keys:\n  - {{id: k, tenant: t{}, sha256: {}, policy: q}}\n",
            self.request.tenant,
            crate::config::keys::hash_hex("mg-scan-key"),
        );
        s
    }

    /// Policies `p` (the world's rules, ranked as `x` says, with `x`'s aliases) and `q`.
    fn ranked_policies(&self, x: &Extra) -> String {
        let n_models = self.models.len();
        let mut p = self.rules_yaml("p", &self.rules);
        for (
            i,
            Ranking {
                prefer,
                weights,
                order,
            },
        ) in x.ranking.iter().enumerate()
        {
            let mut lines = String::new();
            if let Some([cost, latency, openness, locality]) = weights {
                if cost + latency + openness + locality > 0 {
                    lines += &format!(
                        "        weights: {{cost: {cost}, latency: {latency}, openness: {openness}, locality: {locality}}}\n"
                    );
                }
            } else if !prefer.is_empty() {
                let names: Vec<&str> = prefer.iter().map(|p| PREFER[*p]).collect();
                lines += &format!("        prefer: [{}]\n", names.join(", "));
            }
            if !order.is_empty() {
                let names: Vec<String> = order
                    .iter()
                    .map(|o| match o.checked_sub(self.deployments.len()) {
                        None => copy_name(*o, o % x.copies),
                        Some(m) => format!("m{}", m % n_models),
                    })
                    .collect();
                lines += &format!("        order: [{}]\n", names.join(", "));
            }
            let at = format!("      - name: r{i}\n");
            if let Some(pos) = p.find(&at) {
                p.insert_str(pos + at.len(), &lines);
            }
        }
        let mut aliases = String::new();
        for (a, models) in x.aliases.iter().enumerate() {
            let names: Vec<String> = models.iter().map(|m| format!("m{m}")).collect();
            aliases += &format!("      alias{a}: [{}]\n", names.join(", "));
        }
        if !aliases.is_empty() {
            p = p.replacen(
                "  - name: p\n",
                &format!("  - name: p\n    aliases:\n{aliases}"),
                1,
            );
        }
        format!("policies:\n{p}{}", self.rules_yaml("q", &x.q))
    }
}

/// Latency as a test observed it.
#[derive(Debug)]
struct Latencies(Vec<u8>);

impl Observed for Latencies {
    fn latency_seconds(&self, d: &Deployment) -> Option<f64> {
        match self.0.get(d.index % self.0.len().max(1)) {
            Some(0) | None => None,
            Some(ms) => Some(f64::from(*ms) / 1000.0),
        }
    }
}

fn check(w: &World, x: &Extra) -> Result<(), TestCaseError> {
    let env: HashMap<String, String> = [("KEY".to_owned(), "k".to_owned())].into();
    let (config, catalog, policies) = (w.copied_config(x), w.catalog_yaml(), w.ranked_policies(x));
    let loaded = load_texts(
        &config,
        &[("c.yaml", &catalog)],
        &[("p.yaml", &policies)],
        &env,
    )
    .map_err(|p| {
        TestCaseError::fail(format!("configuration refused:\n{p}\n{config}\n{policies}"))
    })?;
    let snapshot = Routing::new(
        Snapshot::build(Arc::new(loaded.config), &Discovered::default()),
        Arc::new(Latencies(x.latency.clone())),
    );
    let mut names: Vec<String> = snapshot
        .deployments
        .iter()
        .map(|d| d.name.clone())
        .collect();
    names.extend((0..w.models.len()).map(|m| format!("m{m}")));
    names.extend((0..x.aliases.len()).map(|a| format!("alias{a}")));
    names.extend(["auto".to_owned(), "unknown-model".to_owned()]);
    let anonymous = Caller {
        tenant: Arc::from(format!("t{}", w.request.tenant)),
        ..Caller::anonymous()
    };
    let keyed = Caller {
        policy: Some(Arc::from("q")),
        ..anonymous.clone()
    };
    let labels: Vec<(String, String)> = w
        .request
        .label
        .map(|l| ("data".to_owned(), format!("v{l}")))
        .into_iter()
        .collect();
    let r = &w.request;
    for model in &names {
        // Several choices (`n`) multiply the worst case a price cap counts.
        for (caller, endpoint, hosted, choices) in [
            (&anonymous, EndpointName::ChatCompletions, None, None),
            (&keyed, EndpointName::ChatCompletions, None, Some(3)),
            (
                &anonymous,
                EndpointName::Responses,
                Some("web_search"),
                None,
            ),
            (&anonymous, EndpointName::Embeddings, None, None),
        ] {
            let ask = Ask {
                model,
                endpoint,
                caller,
                labels: &labels,
                needs: Needs {
                    tools: r.tools,
                    vision: r.vision,
                    choices,
                    hosted_tool: hosted,
                },
                prompt: &super::Bytes(r.prompt),
                max_output: r.max_output,
            };
            prop_assert_eq!(
                grouped(&ask, &snapshot),
                scan(&ask, &snapshot),
                "{} for {:?}",
                model,
                caller.policy
            );
        }
    }
    Ok(())
}

#[test]
fn deciding_by_groups_is_deciding_one_by_one() {
    let (_rt, mut runner, _) = harness(1_000);
    let worlds = world().prop_flat_map(|w| {
        let n = w.models.len();
        (Just(w), extra(n))
    });
    runner
        .run(&worlds, |(w, x)| check(&w, &x))
        .unwrap_or_else(|e| panic!("{e}"));
}
