//! ④ The outcome of deciding one request: the deployments it may use, in order, and what was
//! refused and why. It shares the snapshot's compiled tables (one `Arc`) instead of copying
//! from them: candidates are positions in the snapshot's deployments, and refusals are counted
//! when deciding and listed only when something asks (an explanation, a debug log), so a
//! decision over a thousand deployments copies none of them.

use std::sync::Arc;

use http::HeaderValue;

use super::compile::{CompiledRule, Refusal, RefusalKind};
use super::rank::{Ranked, Tail};
use super::routing::Policies;
use super::sets::Target;
use crate::config::Deployment;

/// The outcome of deciding one request.
pub struct Decision {
    /// The policy that decided.
    pub(crate) policy: Arc<str>,
    pub(crate) policy_header: HeaderValue,
    /// The policy puts license notices on its answers.
    pub(crate) notices: bool,
    /// The policy puts prompts and answers on traces (never of confidential requests).
    pub(crate) trace_content: bool,
    /// The rule that decided.
    pub(crate) rule: Arc<str>,
    /// `rule` as the answer's `x-modelgate-rule` value, made with the policy.
    pub(crate) rule_header: Option<HeaderValue>,
    /// The rule matched without the request's labels, when the labels chose another one: both
    /// applied.
    pub(crate) base_rule: Option<Arc<str>>,
    /// The compiled tables of the snapshot decided under, its deployments among them.
    pub(super) compiled: Arc<Policies>,
    /// The allowed deployments (positions in `compiled.deployments`), most preferred first.
    /// Private to the policy module: only `decide` fills it.
    pub(super) candidates: Ranked,
    /// Allowed but not tried, because the rule says `fallback: false`.
    pub(crate) held_back: usize,
    /// The deployments the request could have meant that were refused.
    pub(super) refused: Refused,
}

/// The rules a decision applied: where they are in the compiled policies.
#[derive(Clone, Copy, Debug)]
pub(super) struct Applied {
    pub(super) policy: usize,
    pub(super) rule: usize,
    /// The rule matched without request labels, when it is another one.
    pub(super) base: Option<usize>,
}

impl Applied {
    /// The rule, and the base rule if any.
    pub(super) fn rules<'a>(
        &self,
        compiled: &'a Policies,
    ) -> Option<(&'a CompiledRule, Option<&'a CompiledRule>)> {
        let rules = &compiled.list.get(self.policy)?.rules;
        let base = match self.base {
            Some(b) => Some(rules.get(b)?),
            None => None,
        };
        Some((rules.get(self.rule)?, base))
    }
}

/// Why a check of the request refuses a group of alike deployments: the same refusal for all,
/// or a built-in tool only OpenAI runs, which the refusal names with each deployment.
#[derive(Clone, Debug)]
pub(super) enum Checked {
    Same(Refusal),
    Hosted(&'static str),
}

impl Checked {
    pub(super) fn kind(&self) -> RefusalKind {
        match self {
            Checked::Same(r) => r.kind,
            Checked::Hosted(_) => RefusalKind::Capability,
        }
    }

    /// The refusal of deployment `d` of the group.
    pub(super) fn of(&self, d: &Deployment) -> Refusal {
        match self {
            Checked::Same(r) => r.clone(),
            Checked::Hosted(tool) => super::check::hosted_refusal(tool, d),
        }
    }
}

/// The refused deployments: how many of each kind, and what it takes to list them.
#[derive(Debug, Default)]
pub(super) struct Refused {
    /// By kind, in the order of [`RefusalKind::ALL`].
    pub(super) by_kind: [usize; RefusalKind::ALL.len()],
    /// What it takes to list them; none when nothing was refused.
    pub(super) listing: Option<Listing>,
}

/// What listing a decision's refusals takes: the rules, the requested name's deployments, and
/// what the checks of the request refused, with why.
#[derive(Debug)]
pub(super) struct Listing {
    pub(super) applied: Applied,
    pub(super) target: Target,
    pub(super) checked: Checks,
}

/// What the checks of a request refused, as a decision found it.
#[derive(Debug)]
pub(super) enum Checks {
    /// By the scan: the groups refused, by class, with why.
    ByClass(Vec<(usize, Checked)>),
    /// By a table: the verdict on each kind of model, which a deployment's refusal, if any,
    /// is worked out from when listed.
    ByKind(Box<KindChecks>),
}

/// A table's verdicts on the kinds of model a set holds.
#[derive(Debug)]
pub(super) struct KindChecks {
    /// One deployment of each kind (see `Table`).
    pub(super) kinds: Vec<usize>,
    /// By kind: its refusal, else the tokens the price cap counts.
    pub(super) verdicts: Vec<Option<Result<(u64, u64), Checked>>>,
    pub(super) cap: Option<f64>,
}

/// Why a policy sends a request nowhere, before anything is listed: deciding under a shadow
/// policy needs only the reasons, and `auto` may refuse a thousand deployments.
pub(super) enum Undecided {
    /// An unknown model, a withheld deployment, no rule: said whole.
    Error(super::PolicyError),
    /// Every deployment the request could mean refused, counted by reason.
    Refused(Box<AllRefused>),
}

/// A request whose policy refused every deployment it could mean.
pub(super) struct AllRefused {
    pub(super) policy: Arc<str>,
    pub(super) rule: Arc<str>,
    /// By kind, in the order of [`RefusalKind::ALL`].
    pub(super) by_kind: [usize; RefusalKind::ALL.len()],
    pub(super) listing: Listing,
}

impl From<super::PolicyError> for Undecided {
    fn from(e: super::PolicyError) -> Undecided {
        Undecided::Error(e)
    }
}

impl Undecided {
    /// The error a client is told, every refused deployment of `model` listed with why.
    pub(super) fn into_error(self, compiled: &Policies, model: &str) -> super::PolicyError {
        match self {
            Undecided::Error(e) => e,
            Undecided::Refused(all) => super::PolicyError::Refused {
                model: model.to_owned(),
                refused: list_refused(
                    compiled,
                    all.listing.applied,
                    &all.listing.target,
                    &all.listing.checked,
                )
                .into_iter()
                .map(|(d, r)| (d.name.clone(), r))
                .collect(),
                policy: all.policy,
                rule: all.rule,
            },
        }
    }
}

/// Every deployment of `target` the rules refuse, in configuration order, and why: the rule's
/// static refusal, else the base rule's, else the check of the request that refused its group.
pub(super) fn list_refused<'a>(
    compiled: &'a Policies,
    applied: Applied,
    target: &Target,
    checked: &Checks,
) -> Vec<(&'a Arc<Deployment>, Refusal)> {
    let Some((rule, base)) = applied.rules(compiled) else {
        return Vec::new();
    };
    let fixed = |r: &CompiledRule, i: usize| r.static_refusal.get(i).cloned().flatten();
    target
        .members()
        .iter()
        .filter_map(|&i| {
            let d = compiled.deployments.get(i)?;
            let why = fixed(rule, i)
                .or_else(|| base.and_then(|b| fixed(b, i)))
                .or_else(|| match checked {
                    Checks::ByClass(by_class) => {
                        let class = compiled.sets.class(i)?;
                        let (_, c) = by_class.iter().find(|(k, _)| *k == class)?;
                        Some(c.of(d))
                    }
                    Checks::ByKind(k) => super::table::refusal_of(k, &compiled.deployments, d),
                })?;
            Some((d, why))
        })
        .collect()
}

/// The allowed deployments of a decision, in the order to try them.
#[derive(Clone, Copy)]
pub struct Candidates<'a> {
    deployments: &'a [Arc<Deployment>],
    ranked: &'a Ranked,
}

impl<'a> Candidates<'a> {
    pub fn len(&self) -> usize {
        self.ranked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranked.len() == 0
    }

    /// The first to try.
    pub fn first(&self) -> Option<&'a Arc<Deployment>> {
        self.deployments.get(self.ranked.first()?)
    }

    /// In order: reading past the first few ranks the rest (once per decision).
    pub fn iter(&self) -> CandidateIter<'a> {
        CandidateIter {
            deployments: self.deployments,
            now: self.ranked.head().iter(),
            tail: self.ranked.tail(),
        }
    }

    /// Those ranked when deciding, in order: every one, or with many groups the first few
    /// (eight groups or more), without ranking the rest.
    pub fn ranked(&self) -> impl Iterator<Item = &'a Arc<Deployment>> + use<'a> {
        let deployments = self.deployments;
        self.ranked
            .head()
            .iter()
            .filter_map(move |&i| deployments.get(i))
    }

    /// Every one, in no particular order: for what holds whichever is tried (a budget's
    /// reservation, the longest timeout), without ranking them all.
    pub fn unordered(&self) -> impl Iterator<Item = &'a Arc<Deployment>> + use<'a> {
        let deployments = self.deployments;
        let tail = self.ranked.tail().into_iter().flat_map(Tail::unordered);
        self.ranked
            .head()
            .iter()
            .copied()
            .chain(tail)
            .filter_map(move |i| deployments.get(i))
    }

    pub fn to_vec(&self) -> Vec<Arc<Deployment>> {
        self.iter().cloned().collect()
    }
}

impl<'a> IntoIterator for Candidates<'a> {
    type Item = &'a Arc<Deployment>;
    type IntoIter = CandidateIter<'a>;

    fn into_iter(self) -> CandidateIter<'a> {
        self.iter()
    }
}

/// The allowed deployments, in order.
#[derive(Clone)]
pub struct CandidateIter<'a> {
    deployments: &'a [Arc<Deployment>],
    now: std::slice::Iter<'a, usize>,
    /// Still to be read after `now`.
    tail: Option<&'a Tail>,
}

impl<'a> Iterator for CandidateIter<'a> {
    type Item = &'a Arc<Deployment>;

    fn next(&mut self) -> Option<&'a Arc<Deployment>> {
        loop {
            // Positions come from the same snapshot's list: every one is in it.
            if let Some(d) = self.now.find_map(|&i| self.deployments.get(i)) {
                return Some(d);
            }
            self.now = self.tail.take()?.sorted().iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.now.len() + self.tail.map_or(0, Tail::len);
        (n, Some(n))
    }
}

impl ExactSizeIterator for CandidateIter<'_> {}

impl Decision {
    /// The deployments this request may use, in the order to try them.
    pub fn candidates(&self) -> Candidates<'_> {
        Candidates {
            deployments: &self.compiled.deployments,
            ranked: &self.candidates,
        }
    }

    /// How many deployments the request could have meant were refused.
    pub(crate) fn refused_count(&self) -> usize {
        self.refused.by_kind.iter().sum()
    }

    /// How many were refused for each reason (reasons with none left out).
    pub(crate) fn refusal_kinds(&self) -> impl Iterator<Item = (RefusalKind, usize)> + '_ {
        RefusalKind::ALL
            .into_iter()
            .zip(self.refused.by_kind)
            .filter(|(_, n)| *n > 0)
    }

    /// Every deployment the request could have meant that was refused, and why, in
    /// configuration order. Listed on each call: for explanations and logs, not every request.
    pub(crate) fn refused(&self) -> Vec<(&Arc<Deployment>, Refusal)> {
        match &self.refused.listing {
            Some(l) => list_refused(&self.compiled, l.applied, &l.target, &l.checked),
            None => Vec::new(),
        }
    }

    /// Whether `d` is one of the allowed deployments.
    #[cfg(test)]
    pub(crate) fn allows(&self, d: &Deployment) -> bool {
        self.candidates()
            .iter()
            .any(|c| std::ptr::eq(c.as_ref(), d))
    }

    /// A decision that allows exactly `candidates`, for tests of the layers after `decide`.
    #[cfg(test)]
    pub(crate) fn allowing(candidates: Vec<Arc<Deployment>>) -> Decision {
        let ranked = (0..candidates.len()).collect();
        Decision {
            policy: Arc::from("test"),
            policy_header: HeaderValue::from_static("test"),
            notices: false,
            trace_content: false,
            rule: Arc::from("test"),
            rule_header: Some(HeaderValue::from_static("test")),
            base_rule: None,
            compiled: Arc::new(Policies::over(candidates)),
            candidates: Ranked::all(ranked),
            held_back: 0,
            refused: Refused::default(),
        }
    }
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.candidates().iter().map(|d| d.name.as_str()).collect();
        f.debug_struct("Decision")
            .field("policy", &self.policy)
            .field("rule", &self.rule)
            .field("base_rule", &self.base_rule)
            .field("candidates", &names)
            .field("held_back", &self.held_back)
            .field("refused", &self.refused_count())
            .finish_non_exhaustive()
    }
}
