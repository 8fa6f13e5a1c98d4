//! Policies checked against the catalog when they are loaded: unique names, aliases that name
//! catalog models, rules whose fields mean something. Every problem is collected, each with its
//! file, line and field.

use std::collections::HashSet;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::spec::{PolicySpec, RuleSpec};
use crate::catalog::Catalog;
use crate::yaml::problem::Problems;

/// Checks policies against the catalog, collecting every problem.
pub(crate) fn validate(
    file: &Arc<str>,
    policies: &[Spanned<PolicySpec>],
    catalog: &Catalog,
    seen: &mut HashSet<String>,
    problems: &mut Problems,
) {
    for (pi, p) in policies.iter().enumerate() {
        let loc = p.referenced;
        let p = &p.value;
        let at = |f: &str| format!("policies[{pi}].{f}");
        if p.name.is_empty() || !seen.insert(p.name.clone()) {
            problems.at(
                file,
                loc,
                at("name"),
                format!("policy names must be non-empty and unique ('{}')", p.name),
            );
        }
        for (alias, models) in &p.aliases {
            if alias == crate::config::AUTO || catalog.get(alias).is_some() {
                problems.at(
                    file,
                    loc,
                    at(&format!("aliases.{alias}")),
                    "an alias must not be 'auto' or a catalog model id",
                );
            }
            for m in models {
                if catalog.get(m).is_none() {
                    problems.at(
                        file,
                        loc,
                        at(&format!("aliases.{alias}")),
                        format!("unknown model '{m}'"),
                    );
                }
            }
        }
        if p.rules.is_empty() {
            problems.at(file, loc, at("rules"), "a policy needs at least one rule");
        }
        let mut rule_names = HashSet::new();
        for (ri, r) in p.rules.iter().enumerate() {
            validate_rule(file, (pi, ri), r, catalog, &mut rule_names, problems);
        }
    }
}

/// Checks rule `ri` of policy `pi`: a unique name, and requirements and weights that mean
/// something.
fn validate_rule(
    file: &Arc<str>,
    (pi, ri): (usize, usize),
    r: &Spanned<RuleSpec>,
    catalog: &Catalog,
    rule_names: &mut HashSet<String>,
    problems: &mut Problems,
) {
    let rloc = r.referenced;
    let r = &r.value;
    let at = |f: &str| format!("policies[{pi}].rules[{ri}].{f}");
    if r.name.is_empty() || !rule_names.insert(r.name.clone()) {
        problems.at(
            file,
            rloc,
            at("name"),
            format!(
                "rule names must be non-empty and unique in a policy ('{}')",
                r.name
            ),
        );
    }
    let req = &r.require;
    for m in req.models.iter().chain(&req.deny_models) {
        if catalog.get(m).is_none() {
            problems.at(
                file,
                rloc,
                at("require.models"),
                format!("unknown model '{m}'"),
            );
        }
    }
    for id in req.license.ids.iter().chain(&req.license.deny) {
        if catalog.license(id).is_none() {
            problems.at(
                file,
                rloc,
                at("require.license"),
                format!("unknown license '{id}'"),
            );
        }
    }
    let prices = [
        req.max_price.input_per_million,
        req.max_price.output_per_million,
        req.max_price.per_request,
    ];
    if prices.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
        problems.at(
            file,
            rloc,
            at("require.max_price"),
            "prices must be finite and not negative",
        );
    }
    if let Some(w) = &r.weights {
        let all = [w.cost, w.latency, w.openness, w.locality];
        if all.iter().any(|v| !v.is_finite() || *v < 0.0) || all.iter().all(|v| *v == 0.0) {
            problems.at(
                file,
                rloc,
                at("weights"),
                "weights must be finite, not negative, and not all 0",
            );
        }
        if !r.prefer.is_empty() {
            problems.at(
                file,
                rloc,
                at("weights"),
                "give either 'prefer' or 'weights', not both",
            );
        }
    }
    if r.when.labels.keys().any(String::is_empty) {
        problems.at(
            file,
            rloc,
            at("match.labels"),
            "label names must not be empty",
        );
    }
}
