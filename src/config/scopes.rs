//! Rate limits and budgets as configured: the caps of a key, a tenant or a deployment, and the
//! scopes a request is counted against. The limiter keeps the counters.

use std::sync::Arc;

use super::spec::{DeploymentLimitsSpec, LimitSetSpec};

/// Micro-dollars: spend is counted in integers.
pub fn micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e6).ceil() as u64
    } else {
        0
    }
}

/// One set of caps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitSet {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub usd_micros_per_day: Option<u64>,
    pub usd_micros_per_month: Option<u64>,
}

impl LimitSet {
    pub(crate) fn from_spec(s: &LimitSetSpec) -> LimitSet {
        LimitSet {
            requests_per_minute: s.requests_per_minute,
            tokens_per_minute: s.tokens_per_minute,
            usd_micros_per_day: s.usd_per_day.map(micros),
            usd_micros_per_month: s.usd_per_month.map(micros),
        }
    }

    pub(crate) fn for_deployment(s: &DeploymentLimitsSpec) -> LimitSet {
        LimitSet {
            requests_per_minute: s.requests_per_minute,
            tokens_per_minute: s.tokens_per_minute,
            ..LimitSet::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        *self == LimitSet::default()
    }

    pub(crate) fn has_spend(&self) -> bool {
        self.usd_micros_per_day.is_some() || self.usd_micros_per_month.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Key,
    Tenant,
    Deployment,
}

impl ScopeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Key => "key",
            ScopeKind::Tenant => "tenant",
            ScopeKind::Deployment => "deployment",
        }
    }
}

/// Whose counters: a key, a tenant or a deployment, by its configured (non-secret) name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub kind: ScopeKind,
    pub(crate) name: Arc<str>,
    pub(crate) limits: LimitSet,
}

/// The scopes a request is counted against: its key's and its tenant's, where they have limits.
pub fn caller_scopes(key: Option<(&str, &LimitSet)>, tenant: (&str, &LimitSet)) -> Vec<Scope> {
    let mut v = Vec::new();
    if let Some((name, l)) = key
        && !l.is_empty()
    {
        v.push(Scope {
            kind: ScopeKind::Key,
            name: Arc::from(name),
            limits: *l,
        });
    }
    if !tenant.1.is_empty() {
        v.push(Scope {
            kind: ScopeKind::Tenant,
            name: Arc::from(tenant.0),
            limits: *tenant.1,
        });
    }
    v
}
