//! ④ Shadow decisions: a request decided again under another policy, to see where that policy
//! would send it before it is put in force. Only a summary leaves this module, and nothing can
//! be routed by it: it names the deployment the shadow would have tried first, but only a
//! [`Decision`] names deployments to the upstream layer. Whatever the shadow policy makes of
//! the request (a model it does not know, no rule, every deployment refused) is an outcome to
//! count, never an error of the request.

use std::sync::Arc;

use super::decision::Undecided;
use super::routing::Policies;
use super::{Ask, Decision, PolicyError, RefusalKind, Routing, decide_under};

/// How the shadow policy's decision compares with the live one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agreement {
    /// Both would try the same deployment first, or both refuse.
    Same,
    /// Both allow the request, with different first deployments.
    OtherDeployment,
    /// The live policy allows the request; the shadow would refuse it.
    ShadowRefuses,
    /// The live policy refuses the request; the shadow would allow it.
    ShadowAllows,
}

impl Agreement {
    pub const ALL: [Agreement; 4] = [
        Agreement::Same,
        Agreement::OtherDeployment,
        Agreement::ShadowRefuses,
        Agreement::ShadowAllows,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Agreement::Same => "same",
            Agreement::OtherDeployment => "other_deployment",
            Agreement::ShadowRefuses => "shadow_refuses",
            Agreement::ShadowAllows => "shadow_allows",
        }
    }

    /// From the deployment each decision would try first (none: it refuses).
    fn of(live: Option<usize>, shadow: Option<usize>) -> Agreement {
        match (live, shadow) {
            (Some(l), Some(s)) if l == s => Agreement::Same,
            (Some(_), Some(_)) => Agreement::OtherDeployment,
            (Some(_), None) => Agreement::ShadowRefuses,
            (None, Some(_)) => Agreement::ShadowAllows,
            (None, None) => Agreement::Same,
        }
    }
}

/// What a request's shadow policy made of it, beside what its live policy did.
#[derive(Clone)]
pub struct Shadowed {
    /// The policy that decided the request.
    pub(crate) live: Arc<str>,
    /// The shadow policy.
    pub(crate) policy: Arc<str>,
    /// The shadow's rule that decided, if one matched.
    pub(crate) rule: Option<Arc<str>>,
    /// Why the shadow would refuse the request, if it would: the reason most of the refused
    /// deployments were refused for (as `modelgate_policy_refusals_total` names reasons), or
    /// `no_rule`, `model_not_found`, `deployment_withheld`.
    pub(crate) refused: Option<&'static str>,
    pub(crate) agreement: Agreement,
    /// The shadow's first deployment, as a position in the snapshot's deployments: read for
    /// its name only.
    first: Option<(Arc<Policies>, usize)>,
}

impl Shadowed {
    /// The name of the deployment the shadow would have tried first, if it allows the request.
    pub fn deployment(&self) -> Option<&str> {
        let (compiled, i) = self.first.as_ref()?;
        compiled.deployments.get(*i).map(|d| d.name.as_str())
    }

    pub fn agreement(&self) -> Agreement {
        self.agreement
    }
}

impl std::fmt::Debug for Shadowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadowed")
            .field("live", &self.live)
            .field("policy", &self.policy)
            .field("rule", &self.rule)
            .field("deployment", &self.deployment())
            .field("refused", &self.refused)
            .field("agreement", &self.agreement)
            .finish()
    }
}

/// Decides `ask` under its caller's shadow policy, if it has one, beside `live`, what the
/// caller's own policy decided. Without a shadow, nothing is done.
pub fn shadow(
    ask: &Ask,
    snapshot: &Routing,
    live: Result<&Decision, &PolicyError>,
) -> Option<Shadowed> {
    let p = ask.caller.shadow?;
    let compiled = &snapshot.policies;
    let policy = compiled.list.get(p)?.name.clone();
    let live_name = match live {
        Ok(d) => d.policy.clone(),
        Err(PolicyError::NoRule { policy } | PolicyError::Refused { policy, .. }) => policy.clone(),
        Err(PolicyError::UnknownModel(_) | PolicyError::Withheld { .. }) => compiled
            .for_caller(ask.caller.policy.as_deref())?
            .name
            .clone(),
    };
    let live_first = live.ok().and_then(|d| d.candidates.first());
    let (rule, refused, first) = match decide_under(ask, snapshot, p) {
        Ok(d) => {
            let first = d.candidates.first();
            (Some(d.rule), None, first.map(|i| (d.compiled, i)))
        }
        Err(Undecided::Refused(all)) => (Some(all.rule), Some(main_reason(&all.by_kind)), None),
        Err(Undecided::Error(e)) => (None, Some(reason(&e)), None),
    };
    Some(Shadowed {
        live: live_name,
        policy,
        rule,
        refused,
        agreement: Agreement::of(live_first, first.as_ref().map(|(_, i)| *i)),
        first,
    })
}

/// The reason most deployments were refused for (the first of [`RefusalKind::ALL`] on a tie).
fn main_reason(by_kind: &[usize; RefusalKind::ALL.len()]) -> &'static str {
    RefusalKind::ALL
        .into_iter()
        .zip(by_kind.iter().copied())
        .rev()
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| *n > 0)
        .map_or("refused", |(kind, _)| kind.as_str())
}

/// Why a policy that refused before checking any deployment refused.
fn reason(e: &PolicyError) -> &'static str {
    match e {
        PolicyError::UnknownModel(_) => "model_not_found",
        PolicyError::Withheld { .. } => "deployment_withheld",
        PolicyError::NoRule { .. } => "no_rule",
        // Not made before deployments are checked; counted by reason when it is.
        PolicyError::Refused { .. } => "refused",
    }
}

#[cfg(test)]
mod tests;
