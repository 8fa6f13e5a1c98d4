//! ④ What a decision reads: a snapshot, its policies compiled against its deployments, and
//! what has been observed of them at run time (kept by their users, read here).

use std::sync::Arc;

use super::compile::{CompiledPolicy, CompiledRule};
use super::sets::Sets;
use crate::config::policies::spec::PolicySpec;
use crate::config::{Deployment, Snapshot};

/// What the runtime has observed of a snapshot's deployments, as ranking needs it.
pub trait Observed: std::fmt::Debug + Send + Sync {
    /// The average time to first byte, if any was observed.
    fn latency_seconds(&self, d: &Deployment) -> Option<f64>;
}

/// Nothing observed yet (a check, an explanation, a test).
#[derive(Debug)]
struct Nothing;

impl Observed for Nothing {
    fn latency_seconds(&self, _: &Deployment) -> Option<f64> {
        None
    }
}

/// A snapshot with its policies compiled against its deployments: built once per snapshot.
#[derive(Debug)]
pub struct Routing {
    pub(crate) snapshot: Snapshot,
    /// Shared with every decision made under it, which names deployments by position.
    pub(crate) policies: Arc<Policies>,
    pub(super) observed: Arc<dyn Observed>,
}

impl Routing {
    pub(crate) fn new(snapshot: Snapshot, observed: Arc<dyn Observed>) -> Routing {
        let config = &snapshot.config;
        let policies = Arc::new(Policies::compile(
            &config.policies,
            &config.active_policy,
            &snapshot,
        ));
        Routing {
            snapshot,
            policies,
            observed,
        }
    }

    /// Routing with nothing observed of any deployment.
    pub fn at_rest(snapshot: Snapshot) -> Routing {
        Routing::new(snapshot, Arc::new(Nothing))
    }
}

impl std::ops::Deref for Routing {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl AsRef<Routing> for Routing {
    fn as_ref(&self) -> &Routing {
        self
    }
}

/// Every policy of a snapshot, and the snapshot's deployments grouped for them.
#[derive(Debug, Default)]
pub(crate) struct Policies {
    /// In the configuration's order: a caller's shadow is a position in it, found at load.
    pub(crate) list: Vec<CompiledPolicy>,
    by_name: crate::base::FastMap<String, usize>,
    active: usize,
    /// The snapshot's deployments, which a decision names by their position.
    pub(crate) deployments: Vec<Arc<Deployment>>,
    /// What each requested name stands for, grouped.
    pub(crate) sets: Sets,
    /// By policy: the number of its first rule among every policy's rules.
    first_rule: Vec<usize>,
}

impl Policies {
    /// Compiles `specs` against the deployments of `snapshot`. Names were validated at load.
    pub(crate) fn compile(
        specs: &[Arc<PolicySpec>],
        active: &str,
        snapshot: &Snapshot,
    ) -> Policies {
        let deployments = &snapshot.deployments;
        let mut p = Policies::default();
        let mut aliases = Vec::with_capacity(specs.len());
        let mut rules = 0;
        for spec in specs {
            let (compiled, members) = CompiledPolicy::compile(spec, deployments);
            p.first_rule.push(rules);
            rules += compiled.rules.len();
            p.by_name.insert(spec.name.clone(), p.list.len());
            p.list.push(compiled);
            aliases.push(members);
        }
        p.active = p.by_name.get(active).copied().unwrap_or(0);
        // Grouped by what every rule sees, so the groups hold whichever rules decide.
        let rules: Vec<&CompiledRule> = p.list.iter().flat_map(|c| &c.rules).collect();
        p.sets = Sets::build(snapshot, &rules);
        for (policy, members) in p.list.iter_mut().zip(aliases) {
            policy.aliases = members
                .into_iter()
                .map(|(name, idx)| (name, p.sets.grouped(idx)))
                .collect();
        }
        p.deployments = deployments.clone();
        p
    }

    /// Policies over `deployments` alone, without rules: what a test's decision keeps.
    #[cfg(test)]
    pub(crate) fn over(deployments: Vec<Arc<Deployment>>) -> Policies {
        Policies {
            deployments,
            ..Policies::default()
        }
    }

    /// The number of rule `rule` of policy `policy` among every policy's rules.
    pub(crate) fn rule_number(&self, policy: usize, rule: usize) -> Option<usize> {
        Some(self.first_rule.get(policy)? + rule)
    }

    /// The policy a caller gets: its key's, else the active one.
    pub(crate) fn for_caller(&self, named: Option<&str>) -> Option<&CompiledPolicy> {
        self.list.get(self.index_for_caller(named))
    }

    /// Where in `list` the policy a caller gets is.
    pub(crate) fn index_for_caller(&self, named: Option<&str>) -> usize {
        named
            .and_then(|n| self.by_name.get(n))
            .copied()
            .unwrap_or(self.active)
    }

    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&CompiledPolicy> {
        self.by_name.get(name).and_then(|i| self.list.get(*i))
    }
}
