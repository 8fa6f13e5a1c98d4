//! The reference model: what the policy must allow, computed straight from the generated facts,
//! independently of `decide` and its compiled tables.

use super::*;

/// What the reference model expects.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Expected {
    Unknown,
    NoRule,
    Refused { rule: String },
    Allowed { rule: String, set: BTreeSet<String> },
}

/// The policy's meaning, computed directly from the generated facts.
pub(super) fn reference(w: &World) -> Expected {
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
