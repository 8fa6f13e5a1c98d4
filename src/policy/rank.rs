//! ④ Ranking the allowed deployments by the rule's preferences.

use std::cmp::Ordering;

use super::compile::CompiledRule;
use super::{Ask, Routing};
use crate::catalog::Openness;
use crate::config::Deployment;
use crate::config::policies::spec::Preference;
use crate::config::spec::Locality;

/// Output tokens assumed when the request sets no cap, to compare costs.
const ASSUMED_OUTPUT_TOKENS: u64 = 256;

struct Facts {
    index: usize,
    order: Option<usize>,
    local: u8,
    cost: f64,
    latency: f64,
    openness: u8,
}

fn locality_rank(l: Locality) -> u8 {
    match l {
        Locality::Local => 0,
        Locality::Cluster => 1,
        Locality::Remote => 2,
    }
}

fn openness_rank(d: &Deployment) -> u8 {
    let class = match d.model.openness {
        Openness::OpenSource => 0,
        Openness::OpenWeight => 2,
        Openness::Closed => 4,
        Openness::Unknown => 6,
    };
    class + u8::from(!d.model.license.osi_approved)
}

/// Estimated cost of this request on `d`, for comparison: prompt tokens approximated from its
/// bytes, output at the request's cap (or 256 tokens).
fn comparable_cost(d: &Deployment, ask: &Ask) -> f64 {
    let prompt = (ask.prompt.bytes() as u64).div_ceil(4);
    let out = ask.max_output.map_or(ASSUMED_OUTPUT_TOKENS, u64::from);
    super::worst_case_cost(d, prompt, out)
}

fn compare(p: Preference, a: &Facts, b: &Facts) -> Ordering {
    match p {
        Preference::Local => a.local.cmp(&b.local),
        Preference::Cheapest => a.cost.total_cmp(&b.cost),
        Preference::Fastest => a.latency.total_cmp(&b.latency),
        Preference::MostOpen => a.openness.cmp(&b.openness),
    }
}

/// What ranking knows of deployment `i`, its observed latency as given.
fn facts(rule: &CompiledRule, ask: &Ask, i: usize, d: &Deployment, latency: f64) -> Facts {
    Facts {
        index: i,
        order: rule.order.get(i).copied().flatten(),
        // Unknown ranks with remote: where an unidentified model runs is not known.
        local: d.locality().map_or(2, locality_rank),
        cost: comparable_cost(d, ask),
        latency,
        openness: openness_rank(d),
    }
}

/// One integer key per deployment, compared as a whole: listed position, each criterion in
/// turn (non-negative floats order like their bits), then configuration order.
fn key(rule: &CompiledRule, f: &Facts) -> [u64; 6] {
    let mut key = [u64::MAX; 6];
    key[0] = f.order.map_or(u64::MAX, |o| o as u64);
    for (slot, p) in key[1..5].iter_mut().zip(&rule.prefer) {
        *slot = match p {
            Preference::Local => u64::from(f.local),
            Preference::Cheapest => f.cost.max(0.0).to_bits(),
            Preference::Fastest => f.latency.max(0.0).to_bits(),
            Preference::MostOpen => u64::from(f.openness),
        };
    }
    key[5] = f.index as u64;
    key
}

/// Whether the rule ranks by what a group of alike deployments shares: not by observed latency,
/// which is each deployment's own, nor by weights, whose ranks count every deployment.
fn by_group(rule: &CompiledRule) -> bool {
    rule.weights.is_none() && !rule.prefer.contains(&Preference::Fastest)
}

/// Sorts the allowed deployments, given as groups of alike ones (each ascending), most preferred
/// first: the same order as [`rank`] gives them one by one. A group's members share every key
/// but configuration order, so groups are sorted by their first member's key and their members
/// follow in configuration order (merged where groups tie).
pub(crate) fn rank_groups(
    rule: &CompiledRule,
    ask: &Ask,
    snapshot: &Routing,
    groups: &[&[usize]],
) -> Vec<usize> {
    let total = groups.iter().map(|g| g.len()).sum();
    if !by_group(rule) {
        let mut allowed: Vec<usize> = Vec::with_capacity(total);
        for g in groups {
            allowed.extend_from_slice(g);
        }
        allowed.sort_unstable();
        return rank(rule, ask, snapshot, allowed);
    }
    if let Some(out) = rank_packed(rule, ask, snapshot, groups, total) {
        return out;
    }
    let mut keyed: Vec<([u64; 6], &[usize])> = groups
        .iter()
        .filter_map(|g| {
            let first = *g.first()?;
            let d = snapshot.deployments.get(first)?;
            let f = facts(rule, ask, first, d, f64::INFINITY);
            Some((key(rule, &f), *g))
        })
        .collect();
    keyed.sort_unstable_by_key(|(k, _)| *k);
    let mut out = Vec::with_capacity(total);
    let mut rest = keyed.as_slice();
    while let Some(((k, _), _)) = rest.split_first() {
        let tied = rest
            .iter()
            .take_while(|(other, _)| other[..5] == k[..5])
            .count();
        let (run, after) = rest.split_at(tied);
        merge_run(&mut out, run.iter().map(|(_, g)| *g));
        rest = after;
    }
    out
}

/// Bits of a packed key below the criteria: the group's position.
const GROUP_BITS: u32 = 20;

/// [`rank_groups`] with each group's key packed into one integer (listed position, then each
/// criterion in as few bits as it has values, then the group's position), which sorts several
/// times faster than six-word keys: with a thousand groups (deployments that all differ in
/// price) the sort was most of a decision. `None` when a key does not fit: the caller sorts
/// the wide keys.
fn rank_packed(
    rule: &CompiledRule,
    ask: &Ask,
    snapshot: &Routing,
    groups: &[&[usize]],
    total: usize,
) -> Option<Vec<usize>> {
    let widths: u32 = rule
        .prefer
        .iter()
        .map(|p| match p {
            Preference::Local => 2,
            Preference::MostOpen => 3,
            Preference::Cheapest | Preference::Fastest => 64,
        })
        .sum();
    if widths + 16 + GROUP_BITS > 128 || groups.len() >= 1 << GROUP_BITS {
        return None;
    }
    let mut keyed: Vec<u128> = Vec::with_capacity(groups.len());
    for (at, g) in groups.iter().enumerate() {
        let Some(&first) = g.first() else {
            continue;
        };
        let d = snapshot.deployments.get(first)?;
        let f = facts(rule, ask, first, d, f64::INFINITY);
        let order = match f.order {
            None => u128::from(u16::MAX),
            Some(o) => u128::from(u16::try_from(o).ok().filter(|&o| o < u16::MAX)?),
        };
        let mut k = order;
        for p in &rule.prefer {
            k = match p {
                Preference::Local => (k << 2) | u128::from(f.local),
                Preference::MostOpen => (k << 3) | u128::from(f.openness),
                Preference::Cheapest => (k << 64) | u128::from(f.cost.max(0.0).to_bits()),
                Preference::Fastest => (k << 64) | u128::from(f.latency.max(0.0).to_bits()),
            };
        }
        keyed.push((k << GROUP_BITS) | at as u128);
    }
    keyed.sort_unstable();
    let mut out = Vec::with_capacity(total);
    let group = |k: u128| groups[(k & ((1 << GROUP_BITS) - 1)) as usize];
    let mut rest = keyed.as_slice();
    while let Some((&k, _)) = rest.split_first() {
        let tied = rest
            .iter()
            .take_while(|&&other| other >> GROUP_BITS == k >> GROUP_BITS)
            .count();
        let (run, after) = rest.split_at(tied);
        merge_run(&mut out, run.iter().map(|&k| group(k)));
        rest = after;
    }
    Some(out)
}

/// Appends groups whose keys tie: their members in configuration order.
fn merge_run<'a>(out: &mut Vec<usize>, run: impl ExactSizeIterator<Item = &'a [usize]>) {
    let start = out.len();
    let several = run.len() > 1;
    for g in run {
        out.extend_from_slice(g);
    }
    if several {
        out[start..].sort_unstable();
    }
}

/// Sorts allowed deployment indices, most preferred first: explicitly ordered ones first, then
/// by the criteria (or the weighted ranks), then in configuration order.
pub(crate) fn rank(
    rule: &CompiledRule,
    ask: &Ask,
    snapshot: &Routing,
    allowed: Vec<usize>,
) -> Vec<usize> {
    if allowed.len() < 2 {
        return allowed;
    }
    let facts: Vec<Facts> = allowed
        .into_iter()
        .filter_map(|i| {
            let d = snapshot.deployments.get(i)?;
            let latency = snapshot
                .observed
                .latency_seconds(d)
                .unwrap_or(f64::INFINITY);
            Some(facts(rule, ask, i, d, latency))
        })
        .collect();
    let by_order = |a: &Facts, b: &Facts| match (a.order, b.order) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    if let Some(w) = &rule.weights {
        let n = facts.len();
        let mut score = vec![0.0f64; n];
        for (p, weight) in [
            (Preference::Cheapest, w.cost),
            (Preference::Fastest, w.latency),
            (Preference::MostOpen, w.openness),
            (Preference::Local, w.locality),
        ] {
            if weight == 0.0 {
                continue;
            }
            // Rank under this criterion; equal values share a rank.
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| compare(p, &facts[a], &facts[b]));
            let mut r = 0usize;
            for k in 0..n {
                if k > 0 && compare(p, &facts[idx[k - 1]], &facts[idx[k]]) != Ordering::Equal {
                    r = k;
                }
                score[idx[k]] += weight * r as f64;
            }
        }
        let mut keyed: Vec<(f64, Facts)> = score.into_iter().zip(facts).collect();
        keyed.sort_by(|(sa, a), (sb, b)| {
            by_order(a, b)
                .then(sa.total_cmp(sb))
                .then(a.index.cmp(&b.index))
        });
        return keyed.into_iter().map(|(_, f)| f.index).collect();
    }
    let mut keyed: Vec<([u64; 6], usize)> = facts.iter().map(|f| (key(rule, f), f.index)).collect();
    keyed.sort_unstable_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, i)| i).collect()
}
