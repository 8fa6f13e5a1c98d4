//! ④ A name with many groups of deployments (`auto`, a model served in many places), decided
//! by a few lookups, not a scan of the rule's tables per request. What a rule decides of a
//! group whatever the request is worked out once per set and rule, on first use: its static
//! refusal, and its key but for the request's cost (listed position, place, openness,
//! position). The groups it does not refuse outright are kept in bands of groups whose keys
//! differ only in cost and below it, most preferred band first, each band's groups sorted by
//! input and by output price; and by kind of model, which is what the checks of a request
//! read.
//!
//! A request then checks each kind of model once and settles each kind whole: refused by the
//! checks, over the price cap (its cheapest corner is), under it (its dearest corner is), or
//! cut by it (only then are its groups priced against the cap one by one). Ranking reads the
//! bands in order until it holds the first few groups (see [`super::rank::Ranked`]), and in a
//! band priced apart finds its cheapest groups by walking its two price orders (see
//! [`Band::cheapest`]), not by pricing all of them. The rest are keyed only if something
//! reads past the first few. Rules this cannot serve (weights or observed latency, which rank
//! deployments one by one; a base rule beside the labels' rule) take the scan.

use std::sync::Arc;

use super::check::{model_check, over_cap};
use super::compile::{CompiledRule, RefusalKind};
use super::decision::{Checked, Checks, KindChecks};
use super::rank::{self, GROUP_BITS, HEAD, Ranked};
use super::sets::Target;
use super::{Ask, Refused, cost_at, worst_output};
use crate::catalog::Model;
use crate::config::Deployment;
use crate::config::policies::spec::Preference;
use crate::config::spec::Kind;

#[cfg(test)]
mod tests;

/// Sets with fewer groups are scanned. A table pays from two groups on: over the eight
/// deployments of one model that P1's company policy decides among, it took the decision from
/// 5,227 instructions to 3,248 (the scan checks each group through a memo, and keys each
/// group's deployment's facts again); 2,789 with runs of one group resolved without a copy.
pub(super) const MIN_GROUPS: usize = 2;

/// What a rule decides of a set's groups whatever the request.
#[derive(Debug)]
pub(crate) struct Table {
    /// The groups the rule does not refuse outright, in bands, most preferred first.
    bands: Vec<Band>,
    /// The kinds of model among them: what the checks of a request tell apart.
    kinds: Vec<KindOf>,
    /// How many deployments the rule refuses outright, by kind of refusal.
    fixed: [usize; RefusalKind::ALL.len()],
    /// Where the request's cost goes in a key, if the rule ranks by it.
    cost_shift: Option<u32>,
}

/// Groups whose keys differ only in cost and below it: the ranking orders them by price alone.
#[derive(Debug)]
struct Band {
    /// The key's bits above the cost, which every group of the band has.
    above: u128,
    /// In the set's order.
    groups: Vec<Group>,
    /// The groups by input price, and by output price (each then by the other price).
    by_input: Box<[u32]>,
    by_output: Box<[u32]>,
    /// The kinds of model among its groups, so that a band the checks refuse whole is skipped
    /// without walking it.
    kinds: Box<[usize]>,
}

#[derive(Debug)]
struct Group {
    /// The packed key (see `rank_packed`) without the cost.
    key: u128,
    /// Input and output price per million tokens.
    price: [f64; 2],
    /// Its kind of model, in `Table::kinds`.
    kind: usize,
    len: usize,
}

/// The groups of one kind of model (one model, OpenAI's endpoint or not).
#[derive(Debug)]
struct KindOf {
    /// One deployment of it, which the checks of a request are made on.
    first: usize,
    /// Its groups: band, and place in the band.
    groups: Vec<(u32, u32)>,
    deployments: usize,
    /// The least input and output prices of its groups, and the greatest.
    least: [f64; 2],
    most: [f64; 2],
}

/// What the checks of a request and the price cap leave of a kind of model.
#[derive(Clone, Copy, Debug)]
enum Left {
    None,
    All,
    /// The groups the cap, counting these tokens, does not refuse.
    UnderCap(u64, u64),
}

/// The allowed groups after the first few, keyed only when something reads them.
#[derive(Debug)]
pub(crate) struct Rest {
    /// The rule's number, which its table is found by.
    rule: usize,
    /// By kind of model.
    left: Vec<Left>,
    cap: f64,
    /// The tokens the ranking prices.
    tokens: (u64, u64),
    /// The first few end with this key (without the group's position).
    last: u128,
}

impl Rest {
    /// The packed keys of the groups after the first few, in no order.
    pub(crate) fn keys(&self, target: &Target) -> Vec<u128> {
        let mut keys = Vec::new();
        if let Some(table) = target.built(self.rule) {
            let ask = (self.left.as_slice(), self.cap, self.tokens);
            for band in &table.bands {
                band.keys(ask, table.cost_shift, |k| {
                    if k >> GROUP_BITS > self.last {
                        keys.push(k);
                    }
                });
            }
        }
        keys
    }
}

/// What a request makes of a table's groups: what is left of each kind of model, the price
/// cap, and the tokens the ranking prices.
type Priced<'a> = (&'a [Left], f64, (u64, u64));

impl Table {
    /// The table of `rule` over `target`, or `None` if the rule needs the scan.
    pub(super) fn build(
        rule: &CompiledRule,
        deployments: &[Arc<Deployment>],
        target: &Target,
    ) -> Option<Table> {
        if !rank::by_group(rule) {
            return None;
        }
        let by_cost = rule.prefer.iter().filter(|p| **p == Preference::Cheapest);
        if !rank::packs(rule) || by_cost.count() > 1 || target.group_count() >= 1 << GROUP_BITS {
            return None;
        }
        // The widths of the criteria after the cost, and the position, sit below it.
        let cost_shift = rule
            .prefer
            .iter()
            .position(|p| *p == Preference::Cheapest)
            .map(|at| {
                let after = rule.prefer.get(at + 1..).unwrap_or_default();
                after.iter().map(|p| rank::width(*p)).sum::<u32>() + GROUP_BITS
            });
        let mut fixed = [0; RefusalKind::ALL.len()];
        let mut kinds: Vec<KindOf> = Vec::new();
        let mut seen: Vec<(*const Model, bool)> = Vec::new();
        let mut keyed: Vec<(u128, Group)> = Vec::new();
        for (at, g) in target.groups().enumerate() {
            let first = *g.first()?;
            let d = deployments.get(first)?;
            if let Some(r) = rule.static_refusal.get(first)?.as_ref() {
                *fixed.get_mut(r.kind as usize)? += g.len();
                continue;
            }
            // The cost's bits are left zero: a request's cost is put in when it is decided.
            let key = (rank::packed_key(rule, first, d, || 0, None)? << GROUP_BITS) | at as u128;
            let this = (Arc::as_ptr(&d.model), d.endpoint.kind == Kind::Openai);
            let price = [d.price.input, d.price.output];
            let kind = match seen.iter().position(|k| *k == this) {
                Some(c) => c,
                None => {
                    seen.push(this);
                    kinds.push(KindOf {
                        first,
                        groups: Vec::new(),
                        deployments: 0,
                        least: price,
                        most: price,
                    });
                    kinds.len() - 1
                }
            };
            let above = match cost_shift {
                Some(s) => key >> (s + 64),
                None => key >> GROUP_BITS,
            };
            let len = g.len();
            keyed.push((
                above,
                Group {
                    key,
                    price,
                    kind,
                    len,
                },
            ));
        }
        // Stable: a band's groups stay in the set's order.
        keyed.sort_by_key(|(above, _)| *above);
        let mut bands: Vec<Band> = Vec::new();
        for (above, g) in keyed {
            match bands.last_mut() {
                Some(b) if b.above == above => b.groups.push(g),
                _ => bands.push(Band {
                    above,
                    groups: vec![g],
                    by_input: Box::default(),
                    by_output: Box::default(),
                    kinds: Box::default(),
                }),
            }
        }
        for (b, band) in bands.iter_mut().enumerate() {
            band.sort();
            for (at, g) in band.groups.iter().enumerate() {
                let k = kinds.get_mut(g.kind)?;
                k.groups
                    .push((u32::try_from(b).ok()?, u32::try_from(at).ok()?));
                k.deployments += g.len;
                for side in 0..2 {
                    k.least[side] = k.least[side].min(g.price[side]);
                    k.most[side] = k.most[side].max(g.price[side]);
                }
            }
        }
        Some(Table {
            bands,
            kinds,
            fixed,
            cost_shift,
        })
    }

    /// Decides `ask` under `rule` (the rule this table is of, number `number`): the allowed
    /// deployments ranked (none if every one is refused), what was refused, and what it takes
    /// to list the refusals.
    pub(super) fn decide(
        &self,
        rule: &CompiledRule,
        number: usize,
        ask: &Ask,
        deployments: &[Arc<Deployment>],
        target: &Target,
    ) -> (Option<Ranked>, Refused, Checks) {
        let cap = rule.per_request_cap;
        // By kind of model: its refusal, else the tokens its price cap counts.
        let verdicts: Vec<Option<Result<(u64, u64), Checked>>> = self
            .kinds
            .iter()
            .map(|k| deployments.get(k.first).map(|d| verdict(d, ask, cap)))
            .collect();
        let mut refused = Refused {
            by_kind: self.fixed,
            listing: None,
        };
        let (left, groups, total) = self.settle(&verdicts, cap, &mut refused);
        // Kept only to list refusals, which there must be some of.
        let checks = if refused.by_kind.iter().any(|n| *n > 0) {
            Checks::ByKind(Box::new(KindChecks {
                kinds: self.kinds.iter().map(|k| k.first).collect(),
                verdicts,
                cap,
            }))
        } else {
            Checks::ByClass(Vec::new())
        };
        if groups == 0 {
            return (None, refused, checks);
        }
        let tokens = rank::comparable_tokens(ask);
        let priced = (left.as_slice(), cap.unwrap_or(f64::INFINITY), tokens);
        let mut keys = Vec::with_capacity(4 * HEAD);
        if groups <= 2 * HEAD {
            for band in &self.bands {
                band.keys(priced, self.cost_shift, |k| keys.push(k));
            }
            return (Some(rank::select(keys, target, total)), refused, checks);
        }
        // Bands in order until they hold the first few groups: the next band's keys are all
        // greater.
        for band in &self.bands {
            if keys.len() >= HEAD {
                break;
            }
            if band
                .kinds
                .iter()
                .all(|&k| matches!(left.get(k), Some(Left::None) | None))
            {
                continue;
            }
            match self.cost_shift {
                Some(shift) => {
                    band.cheapest::<HEAD>(priced, shift, &mut keys);
                }
                None => band.keys(priced, None, |k| keys.push(k)),
            }
        }
        let ranked = rank::head_of(keys, target, total, |last| {
            Box::new(Rest {
                rule: number,
                cap: priced.1,
                left,
                tokens,
                last,
            })
        });
        (Some(ranked), refused, checks)
    }

    /// What the request's checks and price cap leave of each kind of model, counting what
    /// they refuse; and how many groups, and deployments, they leave.
    fn settle(
        &self,
        verdicts: &[Option<Result<(u64, u64), Checked>>],
        cap: Option<f64>,
        refused: &mut Refused,
    ) -> (Vec<Left>, usize, usize) {
        let mut count = |kind: RefusalKind, n: usize| {
            if let Some(c) = refused.by_kind.get_mut(kind as usize) {
                *c += n;
            }
        };
        let (mut groups, mut total) = (0, 0);
        let mut left = Vec::with_capacity(self.kinds.len());
        for (kind, verdict) in self.kinds.iter().zip(verdicts) {
            let (prompt, out) = match verdict {
                Some(Ok(tokens)) => *tokens,
                Some(Err(c)) => {
                    count(c.kind(), kind.deployments);
                    left.push(Left::None);
                    continue;
                }
                // The table is of this snapshot's deployments: every kind is found, and a
                // kind whose deployment is not is skipped, as the scan skips it.
                None => {
                    left.push(Left::None);
                    continue;
                }
            };
            // Costs only grow with either price, so the kind's corners bound its groups'.
            left.push(match cap {
                Some(cap) if cost_at(kind.least, prompt, out) > cap => {
                    count(RefusalKind::Price, kind.deployments);
                    Left::None
                }
                Some(cap) if cost_at(kind.most, prompt, out) > cap => {
                    for &(b, at) in &kind.groups {
                        let band = self.bands.get(b as usize);
                        let Some(g) = band.and_then(|b| b.groups.get(at as usize)) else {
                            continue;
                        };
                        if cost_at(g.price, prompt, out) > cap {
                            count(RefusalKind::Price, g.len);
                        } else {
                            groups += 1;
                            total += g.len;
                        }
                    }
                    Left::UnderCap(prompt, out)
                }
                _ => {
                    groups += kind.groups.len();
                    total += kind.deployments;
                    Left::All
                }
            });
        }
        (left, groups, total)
    }
}

impl Group {
    /// Whether a request leaves it.
    fn left(&self, (left, cap, _): Priced) -> bool {
        match left.get(self.kind) {
            Some(Left::All) => true,
            // As the check refuses: over the cap, not merely not under it.
            Some(Left::UnderCap(prompt, out)) => {
                let cost = cost_at(self.price, *prompt, *out);
                cost.partial_cmp(&cap) != Some(std::cmp::Ordering::Greater)
            }
            Some(Left::None) | None => false,
        }
    }
}

impl Band {
    /// Its price orders, once its groups are in.
    fn sort(&mut self) {
        let price = |i: &u32, side: usize| {
            self.groups
                .get(*i as usize)
                .map_or([0.0; 2], |g| [g.price[side], g.price[1 - side]])
        };
        let order = |side: usize| {
            let mut all: Vec<u32> = (0..self.groups.len() as u32).collect();
            all.sort_by(|a, b| {
                let (a, b) = (price(a, side), price(b, side));
                a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1]))
            });
            all.into_boxed_slice()
        };
        (self.by_input, self.by_output) = (order(0), order(1));
        let mut kinds: Vec<usize> = self.groups.iter().map(|g| g.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        self.kinds = kinds.into_boxed_slice();
    }

    /// Every group a request leaves of the band, each with its packed key.
    fn keys(&self, priced: Priced, cost_shift: Option<u32>, mut push: impl FnMut(u128)) {
        for g in self.groups.iter().filter(|g| g.left(priced)) {
            push(match cost_shift {
                Some(shift) => g.key | u128::from(cost_bits(g.price, priced.2)) << shift,
                None => g.key,
            });
        }
    }

    /// Pushes the key of every group of the band that costs no more than its `N`-th
    /// cheapest, and maybe a few more; without pricing every group. It walks the groups by
    /// input price and by output price at once (Fagin's threshold algorithm): a group neither
    /// walk has reached costs at least what the two prices they have reached would, since a
    /// cost only grows with either price, in floating point too. Once `N` groups seen cost
    /// less than that bound, no group unseen can be among them. How many groups it priced.
    fn cheapest<const N: usize>(&self, priced: Priced, shift: u32, keys: &mut Vec<u128>) -> usize {
        let tokens = priced.2;
        let price = |i: Option<&u32>, side: usize| {
            i.and_then(|&i| self.groups.get(i as usize))
                .map(|g| g.price[side])
        };
        let spread = |by: &[u32], side| {
            price(by.last(), side).unwrap_or(0.0) - price(by.first(), side).unwrap_or(0.0)
        };
        let rate = [
            tokens.0 as f64 * spread(&self.by_input, 0),
            tokens.1 as f64 * spread(&self.by_output, 1),
        ];
        // Which groups were priced, a bit each: on the stack up to 1,024 groups.
        let words = self.groups.len().div_ceil(64);
        let (mut stack, mut heap) = ([0u64; 16], Vec::new());
        let seen: &mut [u64] = match stack.get_mut(..words) {
            Some(s) => s,
            None => {
                heap.resize(words, 0);
                &mut heap
            }
        };
        // The costs of the N cheapest seen, ascending.
        let mut least = [u64::MAX; N];
        let mut found: Vec<(u64, u32)> = Vec::with_capacity(4 * N);
        let (mut a, mut b) = (0, 0);
        // Either walk at its end has seen every group.
        while let (Some(input), Some(output)) = (
            price(self.by_input.get(a), 0),
            price(self.by_output.get(b), 1),
        ) {
            if least[N - 1] < cost_bits([input, output], tokens) {
                break;
            }
            // Step each walk as often as its prices, weighted, raise the bound on average.
            let i = if rate[0] * (b + 1) as f64 > rate[1] * (a + 1) as f64 {
                a += 1;
                self.by_input.get(a - 1)
            } else {
                b += 1;
                self.by_output.get(b - 1)
            };
            let Some(&i) = i else {
                break;
            };
            let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
            match seen.get_mut(word) {
                Some(w) if *w & bit == 0 => *w |= bit,
                _ => continue,
            }
            let Some(g) = self.groups.get(i as usize).filter(|g| g.left(priced)) else {
                continue;
            };
            let cost = cost_bits(g.price, tokens);
            found.push((cost, i));
            if cost < least[N - 1] {
                let at = least.partition_point(|&l| l <= cost);
                least.copy_within(at..N - 1, at + 1);
                least[at] = cost;
            }
        }
        let (bar, priced) = (least[N - 1], found.len());
        for (cost, i) in found {
            if let Some(g) = self.groups.get(i as usize)
                && cost <= bar
            {
                keys.push(g.key | u128::from(cost) << shift);
            }
        }
        priced
    }
}

/// The bits a key holds for the cost of `tokens` at `price`.
fn cost_bits(price: [f64; 2], tokens: (u64, u64)) -> u64 {
    rank::cost_bits(cost_at(price, tokens.0, tokens.1))
}

/// What the checks say of a kind of model (`d` one of it): its refusal, else the prompt tokens
/// and the longest output its price cap counts (none without a cap).
fn verdict(d: &Deployment, ask: &Ask, cap: Option<f64>) -> Result<(u64, u64), Checked> {
    let tokens = model_check(ask, d)?;
    if cap.is_none() {
        return Ok((0, 0));
    }
    let prompt = tokens.unwrap_or_else(|| ask.prompt.tokens(&d.model));
    let choices = u64::from(ask.needs.choices.unwrap_or(1));
    Ok((prompt, worst_output(d, prompt, ask.max_output) * choices))
}

/// Whether the checks of a request refuse `d`, as a table's verdicts by kind of model say.
pub(super) fn refusal_of(
    checks: &KindChecks,
    deployments: &[Arc<Deployment>],
    d: &Deployment,
) -> Option<super::Refusal> {
    let openai = d.endpoint.kind == Kind::Openai;
    let at = checks.kinds.iter().position(|&k| {
        deployments.get(k).is_some_and(|e| {
            Arc::ptr_eq(&e.model, &d.model) && (e.endpoint.kind == Kind::Openai) == openai
        })
    })?;
    match checks.verdicts.get(at)?.as_ref()? {
        Err(c) => Some(c.of(d)),
        Ok((prompt, out)) => {
            let cost = super::worst_case_cost(d, *prompt, *out);
            over_cap(checks.cap?, cost, *prompt, *out).map(|c| c.of(d))
        }
    }
}
