//! ④ Ranking the allowed deployments by the rule's preferences.

use std::cmp::Ordering;
use std::sync::OnceLock;

use super::compile::CompiledRule;
use super::sets::Target;
use super::table::Rest;
use super::{Ask, Routing};
use crate::catalog::Openness;
use crate::config::Deployment;
use crate::config::policies::spec::Preference;
use crate::config::spec::Locality;

/// A cost as a key's bits: non-negative floats order like their bits (a negative cost, or
/// minus zero, counts as zero).
pub(super) fn cost_bits(cost: f64) -> u64 {
    if cost > 0.0 { cost.to_bits() } else { 0 }
}

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

pub(super) fn locality_rank(l: Locality) -> u8 {
    match l {
        Locality::Local => 0,
        Locality::Cluster => 1,
        Locality::Remote => 2,
    }
}

pub(super) fn openness_rank(d: &Deployment) -> u8 {
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
    let (prompt, out) = comparable_tokens(ask);
    super::worst_case_cost(d, prompt, out)
}

/// The prompt and output tokens [`comparable_cost`] assumes.
pub(super) fn comparable_tokens(ask: &Ask) -> (u64, u64) {
    let prompt = (ask.prompt.bytes() as u64).div_ceil(4);
    (
        prompt,
        ask.max_output.map_or(ASSUMED_OUTPUT_TOKENS, u64::from),
    )
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
            Preference::Cheapest => cost_bits(f.cost),
            Preference::Fastest => f.latency.max(0.0).to_bits(),
            Preference::MostOpen => u64::from(f.openness),
        };
    }
    key[5] = f.index as u64;
    key
}

/// Whether the rule ranks by what a group of alike deployments shares: not by observed latency,
/// which is each deployment's own, nor by weights, whose ranks count every deployment.
pub(super) fn by_group(rule: &CompiledRule) -> bool {
    rule.weights.is_none() && !rule.prefer.contains(&Preference::Fastest)
}

/// How many groups are ranked when a request is decided, when there are many: a request is
/// almost always served by its first choice or one of the next few, and the rest are ranked
/// only if a fallback gets that far. Small in tests, so that the property tests reach the rest.
pub(super) const HEAD: usize = if cfg!(test) { 2 } else { 8 };

/// The allowed deployments in the order to try them. With many groups of them, only the first
/// few groups are sorted when deciding; the rest keep their keys, unsorted, until something
/// reads past the first few (a fallback that far, an explanation), which sorts them once. So
/// `auto` over a thousand deployments that all differ in price costs a selection, not a sort;
/// decided by a table (see `table.rs`), the rest are not even keyed until then.
#[derive(Debug, Default)]
pub(crate) struct Ranked {
    /// Most preferred first: whole runs of tied groups, so the rest only follow them.
    head: Vec<usize>,
    tail: Option<Box<Tail>>,
}

/// The allowed groups after the head, not yet sorted.
#[derive(Debug)]
pub(crate) struct Tail {
    /// What keys them, when a table decided: they are keyed on first use.
    rest: Option<Box<Rest>>,
    /// Packed keys (see [`rank_packed`]); the low bits are a group's position in `target`.
    keys: OnceLock<Vec<u128>>,
    target: Target,
    /// How many deployments the groups hold.
    len: usize,
    sorted: OnceLock<Vec<usize>>,
}

impl Tail {
    fn keys(&self) -> &[u128] {
        self.keys.get_or_init(|| {
            self.rest
                .as_ref()
                .map_or_else(Vec::new, |r| r.keys(&self.target))
        })
    }

    /// The tail's deployments, in order (sorted on the first call).
    pub(crate) fn sorted(&self) -> &[usize] {
        self.sorted.get_or_init(|| {
            let mut keys = self.keys().to_vec();
            keys.sort_unstable();
            let mut out = Vec::with_capacity(self.len);
            resolve(&mut out, &keys, |g| self.target.group(g));
            out
        })
    }

    /// The tail's deployments, in no particular order, without sorting.
    pub(crate) fn unordered(&self) -> impl Iterator<Item = usize> + '_ {
        self.keys()
            .iter()
            .flat_map(|&k| self.target.group(group_of(k)).iter().copied())
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Ranked {
    /// Every deployment, already in order.
    pub(crate) fn all(ranked: Vec<usize>) -> Ranked {
        Ranked {
            head: ranked,
            tail: None,
        }
    }

    pub(crate) fn head(&self) -> &[usize] {
        &self.head
    }

    pub(crate) fn tail(&self) -> Option<&Tail> {
        self.tail.as_deref()
    }

    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, |t| t.len)
    }

    pub(crate) fn first(&self) -> Option<usize> {
        self.head.first().copied()
    }

    /// Keeps only the first; how many were dropped.
    pub(crate) fn keep_first(&mut self) -> usize {
        let dropped = self.len().saturating_sub(1);
        self.head.truncate(1);
        self.tail = None;
        dropped
    }
}

/// Sorts the allowed deployments, given as groups of alike ones (each ascending, with its
/// position among `target`'s groups), most preferred first: the same order as [`rank`] gives
/// them one by one. A group's members share every key but configuration order, so groups are
/// sorted by their first member's key and their members follow in configuration order (merged
/// where groups tie).
pub(crate) fn rank_groups(
    rule: &CompiledRule,
    ask: &Ask,
    snapshot: &Routing,
    target: &Target,
    groups: &[(usize, &[usize])],
) -> Ranked {
    let total = groups.iter().map(|(_, g)| g.len()).sum();
    if !by_group(rule) {
        let mut allowed: Vec<usize> = Vec::with_capacity(total);
        for (_, g) in groups {
            allowed.extend_from_slice(g);
        }
        allowed.sort_unstable();
        return Ranked::all(rank(rule, ask, snapshot, allowed));
    }
    if let Some(out) = rank_packed(rule, ask, snapshot, target, groups, total) {
        return out;
    }
    let mut keyed: Vec<([u64; 6], &[usize])> = groups
        .iter()
        .filter_map(|(_, g)| {
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
    Ranked::all(out)
}

/// Bits of a packed key below the criteria: the group's position.
pub(super) const GROUP_BITS: u32 = 20;

fn group_of(k: u128) -> usize {
    (k & ((1 << GROUP_BITS) - 1)) as usize
}

/// Bits a criterion takes in a packed key.
pub(super) fn width(p: Preference) -> u32 {
    match p {
        Preference::Local => 2,
        Preference::MostOpen => 3,
        Preference::Cheapest | Preference::Fastest => 64,
    }
}

/// Whether the rule's keys fit one integer: the listed position (16 bits), each criterion,
/// then the group's position.
pub(super) fn packs(rule: &CompiledRule) -> bool {
    rule.prefer.iter().map(|p| width(*p)).sum::<u32>() + 16 + GROUP_BITS <= 128
}

/// [`rank_groups`] with each group's key packed into one integer (listed position, then each
/// criterion in as few bits as it has values, then the group's position among the target's),
/// which compares several times faster than six-word keys; with more than a few groups only
/// the first few are sorted (see [`Ranked`]). `None` when a key does not fit: the caller sorts
/// the wide keys.
fn rank_packed(
    rule: &CompiledRule,
    ask: &Ask,
    snapshot: &Routing,
    target: &Target,
    groups: &[(usize, &[usize])],
    total: usize,
) -> Option<Ranked> {
    if !packs(rule) {
        return None;
    }
    // What every group's cost is computed from, read once.
    let (prompt, out_tokens) = comparable_tokens(ask);
    let mut keyed: Vec<u128> = Vec::with_capacity(groups.len());
    for &(at, g) in groups {
        let Some(&first) = g.first() else {
            continue;
        };
        if at >= 1 << GROUP_BITS {
            return None;
        }
        let d = snapshot.deployments.get(first)?;
        let cost = || cost_bits(super::worst_case_cost(d, prompt, out_tokens));
        let k = packed_key(rule, first, d, cost, Some(f64::INFINITY.to_bits()))?;
        keyed.push((k << GROUP_BITS) | at as u128);
    }
    Some(select(keyed, target, total))
}

/// Deployment `first`'s packed key but for its group's position: its listed position (16 bits),
/// then each criterion in as few bits as it has values, the cost's bits as `cost` gives them
/// and observed latency's as `latency` does. `None` if the position does not fit, or the rule
/// ranks by latency and `latency` is `None`.
pub(super) fn packed_key(
    rule: &CompiledRule,
    first: usize,
    d: &Deployment,
    cost: impl Fn() -> u64,
    latency: Option<u64>,
) -> Option<u128> {
    let mut k = match rule.order.get(first).copied().flatten() {
        None => u128::from(u16::MAX),
        Some(o) => u128::from(u16::try_from(o).ok().filter(|&o| o < u16::MAX)?),
    };
    for p in &rule.prefer {
        let value = match p {
            Preference::Local => u64::from(d.locality().map_or(2, locality_rank)),
            Preference::MostOpen => u64::from(openness_rank(d)),
            Preference::Cheapest => cost(),
            Preference::Fastest => latency?,
        };
        k = (k << width(*p)) | u128::from(value);
    }
    Some(k)
}

/// The deployments of the groups of packed `keys` (positions among `target`'s groups), `total`
/// in all, most preferred first: the first few groups sorted, the rest left for later.
pub(super) fn select(mut keyed: Vec<u128>, target: &Target, total: usize) -> Ranked {
    let group = |g: usize| target.group(g);
    if keyed.len() <= 2 * HEAD {
        keyed.sort_unstable();
        let mut out = Vec::with_capacity(total);
        resolve(&mut out, &keyed, group);
        return Ranked::all(out);
    }
    // The HEAD smallest keys, kept sorted in one pass (a key rarely beats the worst of them),
    // then every key tied with the last of them, since tied groups merge.
    let mut least = [u128::MAX; HEAD];
    for &k in &keyed {
        if k < least[HEAD - 1] {
            let at = least.partition_point(|&l| l < k);
            least.copy_within(at..HEAD - 1, at + 1);
            least[at] = k;
        }
    }
    let last = least[HEAD - 1] >> GROUP_BITS;
    let mut first: Vec<u128> = Vec::with_capacity(HEAD);
    keyed.retain(|&k| {
        let ahead = k >> GROUP_BITS <= last;
        if ahead {
            first.push(k);
        }
        !ahead
    });
    first.sort_unstable();
    let mut head = Vec::with_capacity(first.len() * 2);
    resolve(&mut head, &first, group);
    let len = total - head.len();
    Ranked {
        head,
        tail: Some(Box::new(Tail {
            rest: None,
            keys: OnceLock::from(keyed),
            target: target.clone(),
            len,
            sorted: OnceLock::new(),
        })),
    }
}

/// The deployments of the groups of packed `keys`, most preferred first, when `keys` hold at
/// least the first few of the allowed groups and every group tied with them (and maybe more):
/// those first few sorted, the rest (`total` deployments in all with them) keyed by `rest`,
/// given the last key of the first few, when something reads them.
pub(super) fn head_of(
    mut keys: Vec<u128>,
    target: &Target,
    total: usize,
    rest: impl FnOnce(u128) -> Box<Rest>,
) -> Ranked {
    keys.sort_unstable();
    let last = keys
        .get(HEAD - 1)
        .or(keys.last())
        .map_or(u128::MAX, |k| k >> GROUP_BITS);
    let ahead = keys.partition_point(|&k| k >> GROUP_BITS <= last);
    let mut head = Vec::with_capacity(ahead * 2);
    resolve(&mut head, keys.get(..ahead).unwrap_or_default(), |g| {
        target.group(g)
    });
    let len = total.saturating_sub(head.len());
    let tail = (len > 0).then(|| {
        Box::new(Tail {
            rest: Some(rest(last)),
            keys: OnceLock::new(),
            target: target.clone(),
            len,
            sorted: OnceLock::new(),
        })
    });
    Ranked { head, tail }
}

/// Appends the groups of sorted packed `keys`, each run of tied groups merged.
fn resolve<'a>(out: &mut Vec<usize>, keys: &[u128], group: impl Fn(usize) -> &'a [usize]) {
    let mut rest = keys;
    while let Some((&k, after)) = rest.split_first() {
        let rank = k >> GROUP_BITS;
        // Most runs are one group of one deployment: no merging, and no copy of a slice.
        if after.first().is_none_or(|&next| next >> GROUP_BITS != rank) {
            match group(group_of(k)) {
                &[one] => out.push(one),
                g => out.extend_from_slice(g),
            }
            rest = after;
            continue;
        }
        let tied = rest
            .iter()
            .take_while(|&&other| other >> GROUP_BITS == rank)
            .count();
        let (run, after) = rest.split_at(tied);
        merge_run(out, run.iter().map(|&k| group(group_of(k))));
        rest = after;
    }
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
