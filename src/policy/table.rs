//! ④ A name with many groups of deployments (`auto`, a model served in many places), decided
//! without a scan of the rule's tables per request. What a rule decides of a group whatever the
//! request is worked out once per set and rule, on first use: its static refusal, and its key
//! but for the request's cost (listed position, place, openness, position). A request then
//! checks each model once (the checks read only the model and whether the deployment is
//! OpenAI's), prices each allowed group (against the rule's price cap, and for ranking) and
//! selects the first few (see [`super::rank::Ranked`]). Rules this cannot serve (weights or
//! observed latency, which rank deployments one by one; a base rule beside the labels' rule)
//! take the scan.

use std::sync::Arc;

use super::check::{model_check, over_cap};
use super::compile::{CompiledRule, RefusalKind};
use super::decision::Checked;
use super::rank::{self, GROUP_BITS, Ranked};
use super::sets::Target;
use super::{Ask, Refused, cost_at, worst_output};
use crate::catalog::Model;
use crate::config::Deployment;
use crate::config::policies::spec::Preference;
use crate::config::spec::Kind;

/// Sets with fewer groups are scanned: a table saves nothing there. Small in tests, so that
/// the property tests decide by tables against the scan they replace.
pub(super) const MIN_GROUPS: usize = if cfg!(test) { 2 } else { 32 };

/// What a rule decides of a set's groups whatever the request.
#[derive(Debug)]
pub(crate) struct Table {
    /// The groups the rule does not refuse outright, in the set's order.
    allowed: Vec<Group>,
    /// How many deployments the rule refuses outright, by kind.
    fixed: [usize; RefusalKind::ALL.len()],
    /// One deployment of each kind the checks of the request tell apart.
    checked: Vec<usize>,
    /// Where the request's cost goes in a key, if the rule ranks by it.
    cost_shift: Option<u32>,
}

#[derive(Debug)]
struct Group {
    /// The packed key (see `rank_packed`) without the cost.
    key: u128,
    /// Input and output price per million tokens.
    price: [f64; 2],
    /// Which of `Table::checked` decides for it.
    check: usize,
    /// Its class, which a listing of refusals finds the check's verdict by.
    class: usize,
    len: usize,
}

impl Table {
    /// The table of `rule` over `target`, or `None` if the rule needs the scan.
    pub(super) fn build(
        rule: &CompiledRule,
        deployments: &[Arc<Deployment>],
        class_of: impl Fn(usize) -> Option<usize>,
        target: &Target,
    ) -> Option<Table> {
        if !rank::by_group(rule) {
            return None;
        }
        let by_cost = rule.prefer.iter().filter(|p| **p == Preference::Cheapest);
        if !rank::packs(rule) || by_cost.count() > 1 || target.group_count() >= 1 << GROUP_BITS {
            return None;
        }
        let mut table = Table {
            allowed: Vec::new(),
            fixed: [0; RefusalKind::ALL.len()],
            checked: Vec::new(),
            cost_shift: None,
        };
        let mut kinds: Vec<(*const Model, bool)> = Vec::new();
        for (at, g) in target.groups().enumerate() {
            let first = *g.first()?;
            let d = deployments.get(first)?;
            if let Some(r) = rule.static_refusal.get(first)?.as_ref() {
                *table.fixed.get_mut(r.kind as usize)? += g.len();
                continue;
            }
            let order = match rule.order.get(first).copied().flatten() {
                None => u128::from(u16::MAX),
                Some(o) => u128::from(u16::try_from(o).ok().filter(|&o| o < u16::MAX)?),
            };
            let (mut k, mut after_cost) = (order, None::<u32>);
            for p in &rule.prefer {
                let value = match p {
                    Preference::Local => d.locality().map_or(2, rank::locality_rank),
                    Preference::MostOpen => rank::openness_rank(d),
                    Preference::Cheapest => {
                        after_cost = Some(0);
                        0
                    }
                    Preference::Fastest => return None,
                };
                let width = rank::width(*p);
                k = (k << width) | u128::from(value);
                if *p != Preference::Cheapest
                    && let Some(a) = after_cost.as_mut()
                {
                    *a += width;
                }
            }
            table.cost_shift = after_cost.map(|a| a + GROUP_BITS);
            let kind = (Arc::as_ptr(&d.model), d.endpoint.kind == Kind::Openai);
            let check = match kinds.iter().position(|k| *k == kind) {
                Some(c) => c,
                None => {
                    kinds.push(kind);
                    table.checked.push(first);
                    kinds.len() - 1
                }
            };
            table.allowed.push(Group {
                key: (k << GROUP_BITS) | at as u128,
                price: [d.price.input, d.price.output],
                check,
                class: class_of(first)?,
                len: g.len(),
            });
        }
        Some(table)
    }

    /// Decides `ask` under `rule` (the rule this table is of): the allowed deployments ranked
    /// (none if every one is refused), what was refused, and the checks that refused groups.
    pub(super) fn decide(
        &self,
        rule: &CompiledRule,
        ask: &Ask,
        deployments: &[Arc<Deployment>],
        target: &Target,
    ) -> (Option<Ranked>, Refused, Vec<(usize, Checked)>) {
        let cap = rule.per_request_cap;
        // By kind of model: its refusal, else the tokens its price cap counts.
        let verdicts: Vec<Option<Result<(u64, u64), Checked>>> = self
            .checked
            .iter()
            .map(|&i| deployments.get(i).map(|d| verdict(d, ask, cap)))
            .collect();
        let mut refused = Refused {
            by_kind: self.fixed,
            listing: None,
        };
        let mut checked = Vec::new();
        let (prompt, out) = rank::comparable_tokens(ask);
        let mut keyed: Vec<u128> = Vec::with_capacity(self.allowed.len());
        let mut total = 0;
        for g in &self.allowed {
            let refusal = match (verdicts.get(g.check), cap) {
                (Some(Some(Err(c))), _) => Some(c.clone()),
                (Some(Some(Ok((prompt, out)))), Some(cap)) => {
                    over_cap(cap, cost_at(g.price, *prompt, *out), *prompt, *out)
                }
                (Some(Some(Ok(_))), None) => None,
                // The table is of this snapshot's deployments: every kind is found, and a
                // group whose deployment is not is skipped, as the scan skips it.
                (Some(None) | None, _) => continue,
            };
            if let Some(c) = refusal {
                if let Some(n) = refused.by_kind.get_mut(c.kind() as usize) {
                    *n += g.len;
                }
                checked.push((g.class, c));
                continue;
            }
            let mut k = g.key;
            if let Some(shift) = self.cost_shift {
                let cost = cost_at(g.price, prompt, out);
                k |= u128::from(cost.max(0.0).to_bits()) << shift;
            }
            keyed.push(k);
            total += g.len;
        }
        let ranked = (!keyed.is_empty()).then(|| rank::select(keyed, target, total));
        (ranked, refused, checked)
    }
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
